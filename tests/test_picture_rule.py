"""One picture, one depth map, in every host (issue 15 #3, #4): a phone photo's EXIF orientation is applied and
transparency is flattened on one background colour (white unless the host's setting or --background says
otherwise) before anything reads the picture: the CLI, the engine, the app, a sequence, the routes.

The photo here is stored 40x24 with EXIF orientation 6 (shown 24x40, portrait) and a transparent band; the
reference is that picture turned and flattened by hand (Pillow's exif_transpose, the WebUI's flatten)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from depth2img.pipeline.generate import generate
from depth2img.pipeline.load import load_pipeline
from depth2img.pipeline.request import GenerationRequest
from depth2img.sequences.passes import run_depth_pass
from depth2img.source import decoding
from depth2img.webui import routes as api

from .test_cli import run_cli


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)


def phone_photo() -> bytes:
    rng = np.random.default_rng(3)
    rgba = np.concatenate([rng.integers(0, 255, (24, 40, 3), dtype=np.uint8), np.full((24, 40, 1), 255, np.uint8)], 2)
    rgba[:, :12, 3] = 0  # a transparent band: what is under it must not matter, the background does
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", exif=exif)
    return buffer.getvalue()


def by_hand(data: bytes, background: str = "#ffffff") -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return decoding.flatten(ImageOps.exif_transpose(image), background)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(phone_photo())
    prepared = tmp_path / "prepared.png"
    by_hand(path.read_bytes()).save(prepared)
    return path, prepared


def luminance(images):
    return [np.asarray(image.convert("L"), np.float32) for image in images]


def test_the_opener_turns_and_flattens_as_the_webui(photo):
    path, prepared = photo
    opened = decoding.open_image(path, "image", background="#ffffff")
    assert opened.size == (24, 40) and opened.mode == "RGB"
    assert np.array_equal(np.asarray(opened), np.asarray(Image.open(prepared)))


def test_the_cli_depth_command_sees_the_photo_as_displayed(photo, tmp_path, tiny_checkpoint):
    path, prepared = photo
    outputs = {}
    runs = [("photo", path, []), ("prepared", prepared, []), ("black", path, ["--background", "black"])]
    for name, image, extra in runs:
        done = run_cli("depth", "--image", image, "--out", tmp_path / f"{name}.npy", "--checkpoint", tiny_checkpoint,
                       *extra)  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs[name] = np.load(tmp_path / f"{name}.npy")
    assert outputs["photo"].shape == (40, 24)  # portrait, as the phone showed it
    np.testing.assert_allclose(outputs["photo"], outputs["prepared"], atol=1e-5)
    assert not np.allclose(outputs["black"], outputs["photo"], atol=1e-3)  # the band is on black now


def test_the_cli_refuses_a_colour_it_cannot_read(photo, tmp_path):
    done = run_cli("depth", "--image", photo[0], "--out", tmp_path / "d.npy", "--background", "ultraviolet")
    assert done.returncode == 2 and "--background" in done.stderr and "not a colour" in done.stderr


def test_the_engine_flattens_a_transparent_picture_on_the_requests_background(pipe):
    rgba = Image.open(io.BytesIO(phone_photo()))  # a PIL image given in code: no file, so no EXIF turn
    settings = dict(prompt="x", steps=2, strength=1.0, width=64, height=64, seed=1)
    for background in ("#ffffff", "#203040"):
        given = generate(pipe, GenerationRequest(image=rgba, background=background, **settings))
        flat = generate(pipe, GenerationRequest(image=decoding.flatten(rgba, background), **settings))
        np.testing.assert_allclose(given.depth, flat.depth, atol=1e-5)
        np.testing.assert_allclose(np.asarray(given.images[0], np.float32), np.asarray(flat.images[0], np.float32),
                                   atol=2)  # fmt: skip
    dropped = generate(pipe, GenerationRequest(image=rgba.convert("RGB"), **settings))  # the old rule: alpha dropped
    assert not np.allclose(dropped.depth, given.depth, atol=1e-3)


def test_the_app_estimates_the_photo_as_displayed(pipe, photo, tmp_path):
    from depth2img.standalone.app import DepthApp

    path, prepared = photo
    app = DepthApp(pipe, tmp_path / "out")
    depth = app.estimate(str(path), "checkpoint-midas")
    np.testing.assert_allclose(depth, app.estimate(Image.open(prepared), "checkpoint-midas"), atol=1e-5)


def test_a_sequence_reads_its_frames_as_displayed(photo, tmp_path):
    path, prepared = photo
    result = run_depth_pass([path], tmp_path / "out", luminance)
    saved = np.load(result.depth_files[path.name])
    np.testing.assert_array_equal(saved, luminance([Image.open(prepared)])[0])
    black = run_depth_pass([path], tmp_path / "out-black", luminance, background="black")
    assert not np.array_equal(np.load(black.depth_files[path.name]), saved)


def test_the_routes_image_is_the_photo_as_displayed(photo):
    request = api.parse_estimate_request({"image": base64.b64encode(photo[0].read_bytes()).decode()})
    assert request.image.size == (24, 40)
