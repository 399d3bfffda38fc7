"""Hostile inputs: decompression bombs per format, formats outside the allow-list, and property-based fuzzing
of everything an HTTP caller can hand the core (the args schema, the depth decoder, the routes' parsers)."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from depth2img.base import limits
from depth2img.schema.args import Depth2ImgArgs
from depth2img.source import decoding
from depth2img.source import gate as image_gate
from depth2img.webui import routes as api
from tests.hostile_inputs import BOMBS

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
MB = 1 << 20


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_every_bomb_is_refused_from_its_header(name):
    build, is_picture = BOMBS[name]
    data = build()
    with pytest.raises(limits.DepthMapError) as refused:
        decoding.decode_depth(data)
    assert isinstance(refused.value, (limits.ImageTooLargeError, image_gate.UnsupportedFormatError))
    with pytest.raises(limits.DepthMapError):
        decoding.open_image(data, "field 'image'")


# The CLI command that decodes each bomb: pictures as the init image of `depth`, depth formats as `--depth`.
# The peak is VmHWM (this process' own memory since exec; ru_maxrss would include the forking pytest's).
_MEASURE = (
    "import re, sys; from depth2img.standalone import cli; code = cli.main(sys.argv[1:]); "
    "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
    "print('peak_kb', peak, file=sys.stderr); sys.exit(code)"
)


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_cli_refuses_every_bomb_with_exit_2_and_little_memory(name, tmp_path):
    build, is_picture = BOMBS[name]
    bomb = tmp_path / f"bomb.{name}"
    bomb.write_bytes(build())
    out = tmp_path / "out.png"
    command = ["depth", "--image", str(bomb)] if is_picture else ["generate", "--prompt", "x", "--depth", str(bomb)]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command, "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[0].startswith("error: ") and str(bomb) in lines[0] and len(lines) == 2, done.stderr
    peak_mb = int(lines[1].split()[1]) / 1024
    assert peak_mb < 300, f"{name}: peak RSS {peak_mb:.0f} MB"
    # bench/bench_hostile.py measures the time; here only a bound that no decoder of 10 gigapixels could meet.
    assert elapsed < 30
    assert not out.exists()


def _encoded(array: np.ndarray, suffix: str) -> bytes:
    ok, buffer = cv2.imencode(suffix, array)
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize(
    "data, fmt",
    [
        (_encoded(np.zeros((6, 10, 3), np.uint8), ".png"), "PNG"),
        (_encoded(np.zeros((6, 10), np.uint16), ".png"), "PNG"),
        (_encoded(np.zeros((6, 10, 3), np.uint8), ".jpg"), "JPEG"),
        (_encoded(np.zeros((6, 10, 3), np.uint8), ".bmp"), "BMP"),
        (_encoded(np.zeros((6, 10, 3), np.uint8), ".webp"), "WebP"),
        (_encoded(np.zeros((6, 10, 3), np.uint16), ".tiff"), "TIFF"),
        (_encoded(np.zeros((6, 10, 3), np.float32), ".tiff"), "TIFF"),  # Pillow cannot read this header
        (_encoded(np.zeros((6, 10), np.float32), ".tiff"), "TIFF"),
    ],
)
def test_accepted_formats_pass_with_their_size(data, fmt):
    admitted = image_gate.admit(data, "x")
    assert (admitted.format, admitted.width, admitted.height) == (fmt, 10, 6)
    assert decoding.decode_depth(data).depth.shape == (6, 10)


def test_npy_and_exr_pass_with_their_size(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((6, 10), np.float32))
    assert image_gate.admit(buffer.getvalue(), "x") == image_gate.Admitted("NPY", 10, 6)
    import OpenEXR

    OpenEXR.File({"type": OpenEXR.scanlineimage}, {"Z": np.ones((6, 10), np.float32)}).write(str(tmp_path / "z.exr"))
    assert image_gate.admit((tmp_path / "z.exr").read_bytes(), "x") == image_gate.Admitted("EXR", 10, 6)


def _pil_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data, name",
    [
        (_pil_bytes(Image.new("RGB", (8, 8)), "GIF"), "GIF"),
        (_pil_bytes(Image.new("RGB", (8, 8)), "PPM"), "PNM"),
        (_pil_bytes(Image.new("RGB", (16, 16)), "ICO"), "ICO"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 8 +X 8\n" + b"\0" * 64, "Radiance HDR"),
        (b"8BPS\x00\x01" + b"\0" * 64, "Photoshop PSD"),
        (b"PF\n8 8\n-1\n" + b"\0" * 64, "PFM"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 64, "JPEG 2000"),
        (b"\x00\x00\x00\x18ftypheic" + b"\0" * 64, "HEIC"),
        (b"\x00\x00\x00\x18ftypavif" + b"\0" * 64, "AVIF"),
    ],
)
def test_known_formats_outside_the_allow_list_are_refused_by_name(data, name):
    with pytest.raises(image_gate.UnsupportedFormatError, match=f"is a {name} file; accepted: PNG, JPEG"):
        decoding.decode_depth(data)


def test_pictures_do_not_accept_depth_only_formats():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((6, 10), np.float32))
    with pytest.raises(image_gate.UnsupportedFormatError, match="is a NPY file; accepted: PNG, JPEG, WebP, TIFF, BMP:"):
        decoding.open_image(buffer.getvalue(), "field 'image'")


def test_more_bytes_than_any_image_within_the_limit_are_refused_unread():
    data = _encoded(np.zeros((4, 4), np.uint8), ".png") + b"\0" * (image_gate.HEADER_ALLOWANCE + 1000)
    with pytest.raises(limits.ImageTooLargeError, match="MB"):
        image_gate.admit(data, "x", max_pixels=16)


# ---- property-based fuzzing: a result or a ValueError subclass, never another exception ----

_VALID = [
    _encoded(np.arange(48, dtype=np.uint8).reshape(6, 8), ".png"),
    _encoded(np.zeros((6, 8, 3), np.uint16), ".tiff"),
    _encoded(np.zeros((6, 8, 3), np.uint8), ".jpg"),
    _encoded(np.zeros((6, 8, 3), np.uint8), ".bmp"),
]
_buffer = io.BytesIO()
np.save(_buffer, np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8))
_VALID.append(_buffer.getvalue())


@st.composite
def _mangled(draw):
    """A valid file cut short, with bytes overwritten, or a known magic number followed by noise."""
    base = draw(st.sampled_from(_VALID))
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return base[: draw(st.integers(0, len(base)))]
    if choice == 1:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    magic = draw(st.sampled_from([m for m, _ in image_gate._MAGIC]))
    return magic + draw(st.binary(max_size=256))


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.one_of(st.binary(max_size=512), _mangled()))
def test_fuzz_depth_decoder(data):
    try:
        decoded = decoding.decode_depth(data, max_pixels=1_000_000)
    except ValueError:
        return
    assert decoded.depth.dtype == np.float32 and np.isfinite(decoded.depth).all()


@_FUZZ
@given(st.one_of(st.binary(max_size=512), _mangled()))
@example(b"II+\x00" + bytes(11) + b"\x80")  # found by it: a BigTIFF IFD offset past ssize_t (OverflowError)
def test_fuzz_picture_opener(data):
    try:
        image = decoding.open_image(data, "field 'image'", max_pixels=1_000_000)
    except ValueError:
        return
    assert image.width * image.height <= 1_000_000


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
_FIELDS = [field.name for field in __import__("dataclasses").fields(Depth2ImgArgs)]


@_FUZZ
@given(st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=10), _json, max_size=8) | _json)
def test_fuzz_args_schema(request_args):
    try:
        Depth2ImgArgs.from_request(request_args)
    except ValueError:
        pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_image_value = st.one_of(st.text(max_size=40), st.binary(max_size=256).map(_b64), _mangled().map(_b64), _json)


@_FUZZ
@given(st.dictionaries(st.sampled_from(["image", "depth_image", "mask", "estimator", "width", "height",
                                        "depth_kind", "distance_range", "exr_channel", "mask_depth_low",
                                        "mask_depth_high", "mask_auto", "invert_depth", "x"]),
                       _image_value, max_size=6) | _json)
@example({"estimator": "x" * 300})  # found by it: a name too long for the file system (OSError from is_dir)
def test_fuzz_route_parsers(body):
    for parse in (api.parse_estimate_request, api.parse_mask_request):
        try:
            parse(body, max_pixels=1_000_000)
        except ValueError:
            pass
