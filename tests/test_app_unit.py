"""The app's and the panel's logic without a server or a browser: masks, settings text, panel errors,
the engine's step hook (progress and Stop)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.base import limits
from depth2img.panel import builder
from depth2img.pipeline.generate import generate
from depth2img.pipeline.load import load_pipeline
from depth2img.pipeline.request import GenerationRequest
from depth2img.schema.args import ArgsError, Depth2ImgArgs
from depth2img.source import encoding


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)


def ramp_png16() -> bytes:
    return encoding.encode_png16(np.tile(np.linspace(0, 1, 48, dtype=np.float32), (32, 1)))


def no_estimate(image, name):
    raise AssertionError("an uploaded map must not be estimated")


# ---- the panel's callbacks -------------------------------------------------------------------------------


def panel_values(**changes) -> list:
    """The panel's values as gradio hands them over (an empty file box is None, empty text boxes "")."""
    values = dict(
        source="estimate", depth_image=None, estimator="checkpoint-midas", invert=False, clip_near=100.0,
        clip_far=0.0, gamma=1.0, blur=0.0, depth_kind="auto", distance_range="", exr_channel="",
    )  # fmt: skip
    values.update(changes)
    return [values[name] for name in builder.PANEL_SETTINGS]


def test_panel_values_follow_the_schema_and_name_bad_keys():
    args = builder.settings_from_values(
        panel_values(source="upload", depth_image=b"png", invert=True, gamma=2.0, blur=1.5, distance_range="2, 8")
    )
    assert (args.source, args.depth_image, args.invert, args.gamma, args.blur) == ("upload", b"png", True, 2.0, 1.5)
    assert args.distance_range == (2.0, 8.0) and args.depth_kind == "auto"
    assert builder.settings_from_values(panel_values()).distance_range is None
    with pytest.raises(ArgsError, match="'gamma'"):
        builder.settings_from_values(panel_values(gamma=0.0))
    with pytest.raises(ArgsError, match="'source'"):
        builder.settings_from_values(panel_values(source="guess"))
    with pytest.raises(ArgsError, match="'distance_range'"):
        builder.settings_from_values(panel_values(distance_range="near"))


def test_panel_settings_and_host_settings_in_the_schema_order():
    from dataclasses import fields

    names = [f.name for f in fields(Depth2ImgArgs)]
    everything = (*builder.PANEL_SETTINGS, *(name for extra in builder.EXTRAS.values() for name in extra))
    assert list(everything) == [n for n in names if n in everything]
    panel = builder.DepthPanel({name: f"<{name}>" for name in everything}, None, None, None, None)
    host = {name: f"<{name}>" for name in ("enabled", "return_depth", "checkpoint", "depth_dir", "batch_depth_scale")}
    assert panel.in_schema_order(host) == [f"<{name}>" for name in names]  # every field, the schema's order


def test_sliders_show_the_schema_default_and_stay_inside_its_checks():
    from depth2img.schema.args import _CHECKS

    defaults = Depth2ImgArgs()
    for name, slider in {**builder.SLIDERS, **builder.MASK_SLIDERS}.items():
        low, high = _CHECKS[name]["range"]
        assert slider["minimum"] <= getattr(defaults, name) <= slider["maximum"], name
        assert low <= slider["minimum"] and slider["maximum"] <= high, name


def test_panel_depth_uploaded_16_bit_kept_and_post_processed():
    args = Depth2ImgArgs(source="upload", depth_image=ramp_png16(), invert=True)
    depth = builder.panel_depth(args, None, no_estimate)
    assert depth.shape == (32, 48) and len(np.unique(depth)) == 48
    assert depth[0, 0] > depth[0, -1]  # inverted: the left edge is now near


def test_panel_depth_reads_a_distance_map_as_the_settings_say():
    distance = np.tile(np.linspace(1, 0, 48, dtype=np.float32), (32, 1))  # 16-bit Z pass: black = near
    png = encoding.encode_png16(distance)
    as_inverse = builder.panel_depth(Depth2ImgArgs(source="upload", depth_image=png), None, no_estimate)
    as_distance = builder.panel_depth(
        Depth2ImgArgs(source="upload", depth_image=png, depth_kind="distance", distance_range=(1.0, 4.0)),
        None,
        no_estimate,
    )
    assert as_inverse[0, 0] > as_inverse[0, -1]  # read as stored: white (left) = near
    assert as_distance[0, 0] < as_distance[0, -1]  # read as distance: the black right end is near
    decoded = builder.uploaded_depth(Depth2ImgArgs(source="upload", depth_image=png, depth_kind="distance"))
    assert decoded.approximate and decoded.notice  # no range given: the app shows this notice
    assert builder.thumbnail(png, "distance", "1, 4", "").size == (48, 32)


def test_preview_mask_is_the_engines_band_mask_at_the_image_size():
    from depth2img.pipeline.generate import depth_band_mask

    depth = np.tile(np.linspace(0, 1, 48, dtype=np.float32), (32, 1))
    args = Depth2ImgArgs(mask_from_depth=True, mask_low=50.0, mask_high=100.0, mask_grow=1)
    image = Image.new("RGB", (96, 64))
    shown = builder.preview_mask(args, depth, image)
    engine_mask, _ = depth_band_mask(depth, args.mask_settings(), None, 96, 64)
    assert shown.size == (96, 64) and np.array_equal(np.asarray(shown), np.asarray(engine_mask))
    assert np.asarray(shown)[:, -1].min() == 255 and np.asarray(shown)[:, 0].max() == 0  # near (right) half
    assert builder.preview_mask(Depth2ImgArgs(), depth, image) is None  # band off: no mask


def test_a_host_without_an_extra_keeps_the_positional_order():
    base = builder.DepthPanel({name: name for name in builder.PANEL_SETTINGS}, None, None, None, None)
    host = {name: name for name in ("enabled", "return_depth", "checkpoint", "depth_dir")}
    assert len(base.in_schema_order(host)) == 15  # the extras are the schema's tail
    settings = {name: name for name in (*builder.PANEL_SETTINGS, "mask_from_depth")}
    gap = builder.DepthPanel(settings, None, None, None, None)
    with pytest.raises(ValueError, match="depth_range"):
        gap.in_schema_order(host)


def test_panel_depth_errors_say_what_to_do():
    with pytest.raises(limits.DepthMapError, match="no depth map uploaded"):
        builder.panel_depth(Depth2ImgArgs(source="upload"), None, no_estimate)
    with pytest.raises(limits.DepthMapError, match="not a readable image"):
        builder.panel_depth(Depth2ImgArgs(source="upload", depth_image=b"not an image"), None, no_estimate)
    with pytest.raises(limits.DepthMapError, match="no init image"):
        builder.panel_depth(Depth2ImgArgs(source="estimate"), None, no_estimate)


def test_preview_is_gray_and_colour_of_the_processed_map():
    seen = []

    def estimate(image, name):
        seen.append(name)
        return np.tile(np.linspace(0, 5, 40, dtype=np.float32), (20, 1))

    gray, colour = builder.preview_images(Depth2ImgArgs(), Image.new("RGB", (40, 20)), estimate)
    assert seen == ["checkpoint-midas"]
    assert gray.mode == "L" and gray.size == (40, 20) and colour.mode == "RGB"
    assert np.asarray(gray)[0, 0] == 0 and np.asarray(gray)[0, -1] == 255


# ---- the app's helpers ----------------------------------------------------------------------------------


def test_painted_mask_is_the_union_of_the_layers():
    from depth2img.standalone.app import painted_mask

    first, second = np.zeros((16, 24, 4), np.uint8), np.zeros((16, 24, 4), np.uint8)
    first[2:5, 3:6, 3] = 255
    second[10:12, 20:22, 3] = 40  # a faint stroke still counts
    mask = painted_mask({"background": None, "layers": [Image.fromarray(first), Image.fromarray(second)]})
    expected = np.zeros((16, 24), np.uint8)
    expected[2:5, 3:6] = expected[10:12, 20:22] = 255
    assert mask.mode == "L" and np.array_equal(np.asarray(mask), expected)
    assert painted_mask({"layers": [Image.new("RGBA", (24, 16))]}) is None  # nothing painted: no inpainting
    assert painted_mask(None) is None


def test_settings_text_reads_back_into_the_schema():
    from depth2img.standalone.app import infotext

    args = Depth2ImgArgs(enabled=True, invert=True, gamma=2.0, blur=1.5, depth_kind="distance", distance_range=(1, 9))
    text = infotext("a room", "blurry", {"Steps": 2, "Seed": 7, **args.to_infotext()})
    prompt, negative, params = text.split("\n")
    assert (prompt, negative) == ("a room", "Negative prompt: blurry")
    pairs = parse_webui_params(params)
    assert pairs["Seed"] == "7"
    restored = Depth2ImgArgs.from_infotext(pairs)
    assert (restored.enabled, restored.invert, restored.gamma, restored.blur) == (True, True, 2.0, 1.5)
    assert (restored.depth_kind, restored.distance_range) == ("distance", (1.0, 9.0))


def parse_webui_params(line: str) -> dict:
    """The WebUI's infotext parameter parser (modules/infotext_utils.py re_param and unquote, v1.10)."""
    import json
    import re

    re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
    out = {}
    for key, value in re_param.findall(line):
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        out[key] = value
    return out


# ---- the engine's step hook: progress and Stop ----------------------------------------------------------


def test_on_step_reports_every_step_and_an_exception_stops_between_steps(pipe):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    request = GenerationRequest(
        prompt="x", image=image, depth=np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1)), steps=4, strength=1,
        width=64, height=64,
    )
    seen = []
    generate(pipe, request, progress=False, on_step=lambda done, total: seen.append((done, total)))
    total = seen[-1][1]
    assert seen == [(done, total) for done in range(1, total + 1)]

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    unet_calls = []
    hook = pipe.unet.register_forward_hook(lambda *args: unet_calls.append(1))
    try:
        with pytest.raises(Stop):
            generate(pipe, request, progress=False, on_step=stop_after_two)
    finally:
        hook.remove()
    assert len(unet_calls) == 2


def test_on_step_runs_beside_the_inpaint_blend(pipe):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    request = GenerationRequest(
        prompt="x", image=image, mask=mask, steps=3, strength=1, width=64, height=64, output_type="np"
    )
    seen = []
    result = generate(pipe, request, progress=False, on_step=lambda done, total: seen.append(done))
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 3
    outside = np.asarray(mask) == 0
    assert np.allclose(result.images[0][outside], np.asarray(image, np.float32)[outside] / 255.0)


def test_stop_ends_the_running_job_of_that_page_only_and_says_where(pipe, tmp_path):
    import threading
    import time
    from types import SimpleNamespace

    from depth2img.standalone.app import DepthApp, StopRequested

    app = DepthApp(pipe, tmp_path / "out")
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    job = dict(zip(builder.PANEL_SETTINGS, panel_values(), strict=True))
    job.update(
        init_image=str(image), inpaint_mask=None, prompt="x", negative_prompt="", steps=150, guidance=7.5,
        strength=1.0, seed=3, scheduler="ddim", width=64, height=64, resize_mode="just resize", batch_size=1,
    )  # fmt: skip
    page, other = SimpleNamespace(session_hash="page"), SimpleNamespace(session_hash="other")
    assert app.stop(page).startswith("Nothing of this page was running")
    outcome = []

    def run():
        try:
            outcome.append(app.generate(job, request=page))
        except Exception as error:  # StopRequested expected; anything else is reported by the asserts
            outcome.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while "page" not in app._running:  # the job has started
        assert worker.is_alive() and time.monotonic() < deadline, f"the job did not start: {outcome}"
        time.sleep(0.01)
    assert app.stop(other).startswith("Nothing of this page was running")  # another page's Stop
    message = app.stop(page)
    worker.join(60)
    assert message.startswith("Stopped after step ") and message.endswith("of 150; no image was made.")
    assert isinstance(outcome[0], StopRequested) and not list((tmp_path / "out").glob("*.png"))
