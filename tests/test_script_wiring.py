"""The WebUI script's wiring, imported against stand-ins for the WebUI's modules (tests/webui_standins).

What the live suite checks against a real WebUI, at the level of the script's own calls: process() never lets
an exception escape (the WebUI would log it and generate without our hooks), the panel, preview, routes,
settings, infotext and XYZ axes, on each supported WebUI version.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.base import limits
from depth2img.base.errors import Depth2ImgError
from depth2img.process import fitting
from depth2img.schema.args import Depth2ImgArgs
from depth2img.source import decoding
from depth2img.webui import batch as webui_batch
from depth2img.webui import job_hooks as webui_job_hooks
from depth2img.webui import options as webui_options
from depth2img.webui import outputs as webui_outputs
from depth2img.webui.batch import BATCH_PATH_KEY
from depth2img.webui.init_image import INIT_IMAGE_ELEM_IDS

from .webui_standins import VERSIONS, webui

FIELDS = [
    "enabled", "source", "depth_image", "estimator", "invert", "clip_near", "clip_far", "gamma", "blur",
    "return_depth", "checkpoint", "depth_dir", "depth_kind", "distance_range", "exr_channel", "depth_range",
]


class FakeMidas(torch.nn.Module):
    """Stands in for the loaded model's MiDaS module: brightness as inverse depth, [B, 1, h, w]; records calls."""

    def __init__(self, lock):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.lock = lock
        self.calls = 0
        self.lock_held = []

    def forward(self, pixel_values):
        self.calls += 1
        self.lock_held.append(self.lock.locked())
        return pixel_values.mean(1, keepdim=True) * self.scale + 2.0


def ramp16(width=64, height=48, vertical=False) -> np.ndarray:
    if vertical:
        return np.tile(np.linspace(0, 65535, height)[:, None], (1, width)).astype(np.uint16)
    return np.tile(np.linspace(0, 65535, width), (height, 1)).astype(np.uint16)


def png_bytes(array) -> bytes:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def picture(seed=0, size=(64, 48), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = 4 if mode == "RGBA" else 3
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8), mode)


def ui_args(**named) -> list:
    """The positional list the UI sends (Depth2ImgArgs' field order), with the UI's defaults."""
    values = {**{f: getattr(Depth2ImgArgs(), f) for f in FIELDS}, "checkpoint": "Use the loaded model", **named}
    return [values[f] for f in FIELDS]


@pytest.fixture(params=["1.10.1"])
def env(request):
    with webui(request.param) as env:
        env.script = env.load_script()
        env.midas = FakeMidas(env.call_queue.queue_lock)
        env.shared.sd_model = SimpleNamespace(
            depth_model=env.midas, sd_checkpoint_info=SimpleNamespace(shorthash="fake", filename="x"), lowvram=False
        )
        env.script.CACHE.clear()
        yield env


def run_job(env, p, args):
    """One job as the WebUI v1.10.1 runs it (the stand-in's process_images: scripts' before_process and process,
    p.init, the sampling with its conditioning, scripts' postprocess); returns the script and the runner: its
    logged errors (exceptions the WebUI only logs) and job_error (what ended the job, as the API reports it)."""
    script = env.script.Depth2ImgScript()
    runner = env.scripts.ScriptRunner(script, args)
    p.scripts = runner
    runner.job_error = None
    try:
        runner.processed = env.processing.process_images(p)
    except Exception as error:
        runner.job_error = error
    return script, runner


def img2img_p(env, image=None, **kwargs):
    return env.processing.StableDiffusionProcessingImg2Img([image or picture()], **kwargs)


def conditioning_of(p, batch=1, size=(6, 8)):
    latent = torch.zeros(batch, 4, *size)
    source = torch.zeros(batch, 3, size[0] * 8, size[1] * 8)
    return p.img2img_image_conditioning(source, latent)


# ---- loading on each WebUI version (issue 6) ---------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_the_script_loads_and_builds_its_panel_on_each_supported_webui(version):
    with webui(version) as env:
        module = env.load_script()  # v1.8.0 failed here: no images.read
        assert module.BATCH_DEPTH_DIR_SUPPORTED == (version != "1.8.0")
        assert len(env.script_callbacks.callbacks["app_started"]) == 1
        script = module.Depth2ImgScript()
        components = script.ui(is_img2img=True)
        depth_dir = components[FIELDS.index("depth_dir")]
        if version == "1.8.0":
            assert not depth_dir.visible  # the panel says why instead
            assert not hasattr(env.images, "read")
        else:
            assert depth_dir.visible
            assert getattr(env.images.read, "_depth2img", False)  # inputs' paths are recorded


def test_v18_says_in_the_panel_and_the_log_that_batch_depth_folders_need_v19(capsys):
    with webui("1.8.0") as env:
        markdowns = []
        real_markdown = env.gradio.Markdown

        class RecordingMarkdown(real_markdown):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                markdowns.append(args[0] if args else kwargs.get("value"))

        env.gradio.Markdown = RecordingMarkdown
        module = env.load_script()
        assert "need WebUI v1.9" in capsys.readouterr().out
        module.Depth2ImgScript().ui(is_img2img=True)
        assert any("v1.9" in text for text in markdowns)
        # A job with a folder set still runs (estimated), and the log says the folder was not used.
        env.shared.sd_model = SimpleNamespace(depth_model=FakeMidas(env.call_queue.queue_lock), lowvram=False,
                                              sd_checkpoint_info=SimpleNamespace(shorthash="f", filename="f"))
        p = img2img_p(env)
        _, runner = run_job(env, p, ui_args(enabled=True, depth_dir="/some/folder"))
        assert runner.errors == []
        assert conditioning_of(p).shape == (1, 1, 6, 8)
        assert "not used" in capsys.readouterr().out


def test_settings_have_a_section_and_a_category_where_the_webui_has_categories(env):
    [register] = env.script_callbacks.callbacks["ui_settings"]
    register()
    labels = env.shared.opts.data_labels
    for key in ("depth2img_takeover", "depth2img_cache_size", "depth2img_max_megapixels"):
        assert labels[key].section == ("depth2img", "Depth2Img") and labels[key].category_id == "sd"
    assert labels["depth2img_max_megapixels"].default == limits.DEFAULT_MAX_PIXELS / 1e6

    class OptionInfoWithoutCategories:  # a WebUI before settings categories
        def __init__(self, default=None, label="", component=None, component_args=None, section=None):
            self.default, self.section = default, section

    env.shared.OptionInfo = OptionInfoWithoutCategories
    register()
    assert env.shared.opts.data_labels["depth2img_takeover"].section == ("depth2img", "Depth2Img")


# ---- every failure in process() stops the job with our message (issue 7 #1) --------------------------------


def assert_stopped(p, runner, match, status=422):
    assert runner.errors == [], f"an exception escaped process(): {runner.errors}"
    # The job itself ended with our message (the WebUI's API answers with it), not with another error.
    assert isinstance(runner.job_error, Depth2ImgError), repr(runner.job_error)
    assert re.search(match, str(runner.job_error)) and runner.job_error.status_code == status, runner.job_error
    for hook in (lambda: conditioning_of(p), lambda: p.txt2img_image_conditioning(torch.zeros(1, 4, 6, 8))):
        with pytest.raises(Depth2ImgError, match=match) as error:
            hook()
        assert error.value.status_code == status


@pytest.mark.parametrize("txt2img", [False, True])
def test_a_depth_map_from_the_panel_that_fails_to_decode_stops_the_job(env, txt2img):
    p = env.processing.StableDiffusionProcessingTxt2Img() if txt2img else img2img_p(env)
    # The UI's gr.File(type="binary") hands bytes: decoding them raised DepthMapError, which escaped.
    _, runner = run_job(env, p, ui_args(enabled=True, source="upload", depth_image=b"not an image"))
    assert_stopped(p, runner, "depth_image.*not a readable image")


def test_a_batch_folder_map_that_cannot_be_read_stops_the_job_naming_the_file(env, tmp_path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG truncated")
    image = picture()
    webui_batch.record_batch_path(image, str(tmp_path / "inputs" / "photo.jpg"))
    p = img2img_p(env, image)
    _, runner = run_job(env, p, ui_args(enabled=True, depth_dir=str(tmp_path)))
    assert_stopped(p, runner, "photo.png")


def test_an_unexpected_failure_stops_the_job_with_status_500(env, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(webui_job_hooks, "DepthConditioner", broken)
    p = img2img_p(env)
    _, runner = run_job(env, p, ui_args(enabled=True))
    assert_stopped(p, runner, "KeyError.*surprise", status=500)
    assert "Traceback" in capsys.readouterr().err  # the details stay in the console


def test_bad_args_stop_the_job_naming_the_field(env):
    p = img2img_p(env)
    _, runner = run_job(env, p, [{"enabled": True, "gamma": -1}])
    assert_stopped(p, runner, "gamma")
    p = img2img_p(env)
    _, runner = run_job(env, p, [{"enabled": True, "estimator": "nope"}])
    assert_stopped(p, runner, "'estimator'.*nope")


# ---- the depth checkpoint choice (issue 7 #6) ----------------------------------------------------------------


@pytest.fixture
def plain_model(env):
    env.shared.sd_model = SimpleNamespace(sd_checkpoint_info=SimpleNamespace(shorthash="p", filename="p"))


def test_a_depth_checkpoint_that_is_not_found_stops_the_job_naming_it(env, plain_model):
    p = img2img_p(env)
    _, runner = run_job(env, p, ui_args(enabled=True, checkpoint="my-depth-v2"))
    assert "sd_model_checkpoint" not in p.override_settings
    assert_stopped(p, runner, "'my-depth-v2'.*not found")


def test_a_chosen_checkpoint_that_is_not_a_depth_model_is_named(env, plain_model, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain-sd2.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)}, str(path))
    env.sd_models.CheckpointInfo(str(path)).register()
    p = img2img_p(env)
    _, runner = run_job(env, p, ui_args(enabled=True, checkpoint="plain-sd2"))
    assert "sd_model_checkpoint" not in p.override_settings
    assert_stopped(p, runner, "'plain-sd2.safetensors' .*not an SD 2 depth model")


def test_a_found_depth_checkpoint_is_loaded_for_this_job_only(env, plain_model, tiny_checkpoint):
    env.sd_models.CheckpointInfo(str(tiny_checkpoint)).register()
    # The WebUI's process_images loads the override's checkpoint after before_process: here, a depth model.
    env.sd_models.loadable[str(tiny_checkpoint)] = SimpleNamespace(
        depth_model=env.midas, sd_checkpoint_info=SimpleNamespace(shorthash="tiny", filename=str(tiny_checkpoint)),
        lowvram=False,
    )  # fmt: skip
    p = img2img_p(env)
    _, runner = run_job(env, p, ui_args(enabled=True, checkpoint=tiny_checkpoint.stem))
    assert p.override_settings["sd_model_checkpoint"] == tiny_checkpoint.name
    assert p.override_settings_restore_afterwards is True
    # process() then found the depth model loaded, and the job was conditioned by its estimate.
    assert runner.errors == [] and runner.job_error is None and env.midas.calls == 1
    assert p.extra_generation_params["Depth2Img enabled"] == "True"


# ---- outputs (issue 7 #3, #4) --------------------------------------------------------------------------------


def finish(env, p, script, images=1):
    processed = env.processing.Processed(p, [Image.new("RGB", (p.width, p.height))] * images)
    env.scripts.ScriptRunner(script, []).postprocess(p, processed)
    return processed


@pytest.mark.parametrize("samples_format", ["png", "jpg", "webp"])
def test_return_depth_comes_at_the_generated_size_in_any_samples_format(env, samples_format):
    env.shared.opts.data["samples_format"] = samples_format
    p = img2img_p(env, picture(size=(128, 96)), width=128, height=96, is_api=True)
    depth_map = ramp16(64, 48)
    args = ui_args(enabled=True, source="upload", depth_image=base64.b64encode(png_bytes(depth_map)).decode(),
                   return_depth=True)
    script, runner = run_job(env, p, args)
    conditioning_of(p, size=(12, 16))  # the latent of a 128x96 image
    processed = finish(env, p, script)
    shown = processed.images[-1]
    assert shown.size == (128, 96)
    # The WebUI encodes every output in samples_format (modules/api/api.py encode_pil_to_base64): it must work.
    shown.save(io.BytesIO(), format={"jpg": "JPEG", "webp": "WEBP", "png": "PNG"}[samples_format])
    assert shown.mode == ("I;16" if samples_format == "png" else "L")
    # All 16 bits reach API users in info, at the generated size: the uploaded ramp, resized (OpenCV's cubic
    # kernel misses a linear ramp by up to 0.05 of a source step; the 16-bit min-max scaling stretches its
    # +-0.2 % border overshoot: 5e-3 of the range covers both).
    key = webui_outputs.DEPTH_INFO_KEY
    sent = cv2.imdecode(np.frombuffer(base64.b64decode(processed.extra_generation_params[key]), np.uint8),
                        cv2.IMREAD_UNCHANGED)
    assert sent.dtype == np.uint16 and sent.shape == (96, 128)
    ideal = np.clip(((np.arange(128) + 0.5) / 2 - 0.5) / 63, 0, 1)
    assert np.allclose(sent[40] / 65535.0, ideal, atol=5e-3)
    assert (sent % 257 != 0).mean() > 0.9  # 16-bit levels, not an 8-bit map scaled up (multiples of 257)
    assert key not in p.extra_generation_params  # never into an image's PNG info (p is reused by batch/XYZ)


def test_return_depth_of_an_estimated_map_comes_at_the_image_size(env):
    p = img2img_p(env, picture(size=(128, 96)), width=128, height=96)
    script, _ = run_job(env, p, ui_args(enabled=True, return_depth=True))
    conditioning_of(p, size=(12, 16))
    processed = finish(env, p, script)
    assert processed.images[-1].size == (128, 96)  # MiDaS worked at 384x288
    assert webui_outputs.DEPTH_INFO_KEY not in processed.extra_generation_params  # not an API request


# ---- preview (issue 7 #5, #8) ----------------------------------------------------------------------------------


def panel(env, is_img2img=True):
    script = env.script.Depth2ImgScript()
    components = {}
    if is_img2img:
        for elem_id in INIT_IMAGE_ELEM_IDS:
            components[elem_id] = env.gradio.Image(elem_id=elem_id)
            script.after_component(components[elem_id], elem_id=elem_id)
    script.ui(is_img2img=is_img2img)
    return script


def preview_event(env):
    button = next(c for c in env.created if c.elem_id and c.elem_id.endswith("_preview") and c.events)
    return button.events[0]


@pytest.fixture
def recorded(env):
    created = []
    original_init = env.gradio.Block.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        created.append(self)

    env.gradio.Block.__init__ = init
    env.created = created
    yield env
    env.gradio.Block.__init__ = original_init


# The panel's values (depth2img.panel.builder.PANEL_SETTINGS order) as the UI sends them.
PREVIEW_SETTINGS = ["estimate", None, "checkpoint-midas", False, 100.0, 0.0, 1.0, 0.0, "auto", "", ""]
# What the WebUI's panel sends: those, then its extras (the depth range box, empty).
PANEL_VALUES = [*PREVIEW_SETTINGS, ""]
# img2img's panel has the mask settings too (depth2img.panel.builder.EXTRAS["mask"]), the band off.
MASK_DEFAULTS = {"mask_from_depth": False, "mask_low": 0.0, "mask_high": 100.0, "mask_band_mode": "range",
                 "mask_feather": 0.0, "mask_grow": 0, "mask_invert": False, "mask_combine": "replace",
                 "mask_auto": False}  # fmt: skip
IMG2IMG_PANEL_VALUES = [*PANEL_VALUES, *MASK_DEFAULTS.values()]


def preview_of(env, image, settings=PREVIEW_SETTINGS):
    """The preview the panel shows for one init image, with the script's estimate callback."""
    from depth2img.panel import builder

    return builder.preview_images(builder.settings_from_values(settings), image, env.script.estimate_for_preview)


def test_preview_reads_the_init_image_of_the_sub_tab_in_use(recorded):
    env = recorded
    panel(env)
    event = preview_event(env)
    assert event["_js"] == "depth2img_preview_args"  # javascript/depth2img.js fills in the tab index
    assert event["inputs"][0].visible is False  # the sub-tab index, first: the js sees inputs, then outputs
    assert [c.elem_id for c in event["inputs"][1:6]] == list(INIT_IMAGE_ELEM_IDS)
    # A different picture in each tab; the inpaint tab's editor hands a dict.
    pictures = [picture(seed=10 + k) for k in range(5)]
    values = [pictures[0], pictures[1], {"image": pictures[2], "mask": None}, pictures[3], pictures[4]]
    grays = []
    for tab in range(5):
        gray, _, no_mask = event["fn"](tab, *values, *IMG2IMG_PANEL_VALUES)
        assert no_mask is None  # the band is off
        alone, _ = preview_of(env, pictures[tab])
        assert np.array_equal(np.asarray(gray), np.asarray(alone)), f"tab {tab} previewed another tab's image"
        grays.append(np.asarray(gray))
    assert all(not np.array_equal(grays[0], other) for other in grays[1:])  # the pictures are told apart
    assert all(env.midas.lock_held)  # the WebUI's queue_lock around the loaded model
    with pytest.raises(env.gradio.Error, match="batch tab"):
        event["fn"](5, *values, *IMG2IMG_PANEL_VALUES)


def test_preview_flattens_transparency_on_the_webui_background_colour(recorded):
    env = recorded
    env.shared.opts.data["img2img_background_color"] = "#ff0000"
    rgba = picture(3, mode="RGBA")
    gray, _ = preview_of(env, rgba)
    # Reference: the WebUI's own flatten (copied into the stand-in from modules/images.py).
    flattened = env.images.flatten(rgba, "#ff0000")
    reference, _ = preview_of(env, flattened)
    assert np.array_equal(np.asarray(gray), np.asarray(reference))
    on_black, _ = preview_of(env, env.images.flatten(rgba, "#000000"))
    assert not np.array_equal(np.asarray(gray), np.asarray(on_black))


def test_preview_errors_are_shown_in_the_ui(recorded):
    env = recorded
    panel(env, is_img2img=False)
    preview = preview_event(env)["fn"]
    with pytest.raises(env.gradio.Error, match="not a readable image"):
        preview("upload", b"junk", *PANEL_VALUES[2:])
    with pytest.raises(env.gradio.Error, match="no init image"):
        preview(*PANEL_VALUES)


# ---- per-job estimator calls (issue 7 #8) -------------------------------------------------------------------


def test_a_jobs_estimator_call_count_ignores_other_requests(recorded):
    env = recorded
    p = img2img_p(env, batch_size=2)
    job_init = p.init

    def init(*args):  # another request (a preview) estimates a different image while the job is running
        preview_of(env, picture(7))
        job_init(*args)

    p.init = init
    _, runner = run_job(env, p, ui_args(enabled=True))
    assert runner.job_error is None and env.midas.calls == 2  # the preview's and the job's (one batched call)
    assert p.extra_generation_params["Depth2Img estimator calls"] == 1
    again = img2img_p(env, batch_size=2)
    run_job(env, again, ui_args(enabled=True))
    assert again.extra_generation_params["Depth2Img estimator calls"] == 0  # cached


# ---- batch tab (v1.9+) ------------------------------------------------------------------------------------


def test_batch_tab_uses_the_map_with_the_inputs_file_name(env, tmp_path):
    folder = tmp_path / "depth"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), ramp16(vertical=True))
    image = env.images.read(io.BytesIO(png_bytes(np.zeros((48, 64, 3), np.uint8))))
    webui_batch.record_batch_path(image, "/inputs/a.jpg")
    p = img2img_p(env, image)
    _, runner = run_job(env, p, ui_args(enabled=True, depth_dir=str(folder)))
    assert runner.errors == [] and BATCH_PATH_KEY not in image.info
    cond = conditioning_of(p)
    expected = torch.from_numpy(np.linspace(-1, 1, 6, dtype=np.float32))[:, None].expand(6, 8)
    # Bicubic 48 -> 6 rows of a linear ramp, min-max normalised: linear again up to the kernel's edge effect.
    assert torch.allclose(cond[0, 0], expected, atol=0.05)
    assert env.midas.calls == 0
    assert p.extra_generation_params["Depth2Img source"] == "upload"


def test_batch_tab_maps_are_read_as_the_panel_says(env, tmp_path):
    folder = tmp_path / "depth"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), ramp16())  # a Z pass: larger = farther, the left edge is near
    image = env.images.read(io.BytesIO(png_bytes(np.zeros((48, 64, 3), np.uint8))))
    webui_batch.record_batch_path(image, "/inputs/a.jpg")
    p = img2img_p(env, image)
    _, runner = run_job(env, p, ui_args(enabled=True, depth_dir=str(folder), depth_kind="distance"))
    assert runner.errors == [] and any("approximate" in comment for comment in p.comments)
    cond = conditioning_of(p)
    assert cond[0, 0, :, 0].mean() > cond[0, 0, :, -1].mean()  # near (left) is high


# ---- infotext, XYZ, takeover ---------------------------------------------------------------------------------


def test_infotext_fields_name_args_fields_and_read_back(env):
    script = panel(env, is_img2img=False)
    prefix = "Depth2Img "
    assert all(label[len(prefix):] in FIELDS for _, label in script.infotext_fields)
    p = img2img_p(env)
    run_job(env, p, ui_args(enabled=True, invert=True, gamma=2.0))
    params = {k: str(v) for k, v in p.extra_generation_params.items()}
    back = Depth2ImgArgs.from_infotext(params)
    assert back.enabled and back.invert and back.gamma == 2.0


def xyz_grid_with_our_axes(env):
    """A stand-in for the WebUI's xyz_grid script module, registered as the WebUI lists it, with our axes added."""

    class AxisOption:
        def __init__(self, label, type, apply, choices=None, **kwargs):
            self.label, self.apply, self.choices = label, apply, choices

    xyz = SimpleNamespace(AxisOption=AxisOption, axis_options=[])
    env.scripts.scripts_data.append(
        env.scripts.ScriptClassData(SimpleNamespace(__module__="xyz_grid.py"), "xyz_grid.py", ".", xyz)
    )
    env.script.add_xyz_axes()
    return xyz


def test_xyz_axes_set_depth_settings_for_their_cell(env):
    xyz = xyz_grid_with_our_axes(env)
    env.script.add_xyz_axes()  # the WebUI may call before_ui twice (UI reload): no duplicate axes
    labels = [axis.label for axis in xyz.axis_options]
    assert len(labels) == len(set(labels)) == 9
    axes = {axis.label: axis for axis in xyz.axis_options}
    p = img2img_p(env)
    axes["[Depth2Img] Gamma"].apply(p, "2.5", None)
    axes["[Depth2Img] Invert"].apply(p, "True", None)
    run_job(env, p, ui_args())  # the panel is off: the axis turns it on for its cell
    assert p.extra_generation_params["Depth2Img gamma"] == "2.5"
    assert p.extra_generation_params["Depth2Img invert"] == "True"
    assert axes["[Depth2Img] Estimator"].choices() == ["checkpoint-midas"]


def test_takeover_replaces_the_native_conditioning_only_when_enabled_in_settings(env):
    p = img2img_p(env)
    run_job(env, p, ui_args())
    assert not (conditioning_of(p) == 7.0).all()  # ours
    env.shared.opts.data["depth2img_takeover"] = False
    p = img2img_p(env)
    run_job(env, p, ui_args())
    assert (conditioning_of(p) == 7.0).all()  # the WebUI's own


# ---- routes (issue 7 #3, #8, #12; issue 6 size limit) -------------------------------------------------------


def mounted(env, app=None) -> dict:
    """Our routes by path, as dicts of what add_api_route was given (dependencies, ...); "endpoint" answers what
    a client reads (a Response's JSON body decoded), "raw" is the route itself."""
    app = app or env.fastapi.FastAPI()
    [mount] = env.script_callbacks.callbacks["app_started"]
    mount(None, app)
    routes = {}
    for route in app.routes:
        if route.path.startswith("/depth2img/"):
            routes[route.path] = {**vars(route), "raw": route.endpoint, "endpoint": _as_client_reads(route.endpoint)}
    return routes


def _as_client_reads(endpoint):
    def call(*args):
        answer = endpoint(*args)
        if hasattr(answer, "body"):
            assert answer.media_type == "application/json"
            return json.loads(answer.body)
        return answer

    return call


def rgb_b64(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_estimate_route_answers_at_the_images_size_under_the_queue_lock(env):
    routes = mounted(env)
    estimate = routes["/depth2img/v1/estimate"]["endpoint"]
    answer = estimate({"image": rgb_b64(picture(size=(128, 96))), "blur": 1.0})
    assert (answer["width"], answer["height"]) == (128, 96)  # MiDaS worked at 384x288
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(answer["depth"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (96, 128) and decoded.dtype == np.uint16
    assert env.midas.lock_held == [True]
    schema = routes["/depth2img/v1/estimate"]["openapi_extra"]["requestBody"]["content"]["application/json"]
    assert schema["schema"]["properties"]["gamma"]["default"] == Depth2ImgArgs().gamma


@pytest.mark.parametrize(
    "body, field",
    [({"image": "%%"}, "image"), ({"image": "", "gamma": 2}, "image"), ({"image": None}, "image"),
     ({"image": base64.b64encode(b"no image").decode()}, "image"), ({"size": 1}, "size"), ({"blur": -1}, "blur"),
     ({"estimator": "nope"}, "estimator")],
)
def test_estimate_route_rejects_bad_fields_with_422(env, body, field):
    estimate = mounted(env)["/depth2img/v1/estimate"]["endpoint"]
    body = {k: v for k, v in {"image": rgb_b64(picture()), **body}.items() if v is not None}
    with pytest.raises(env.fastapi.HTTPException) as error:
        estimate(body)
    assert error.value.status_code == 422 and field in error.value.detail


def test_size_limit_setting_applies_to_the_estimate_route_and_depth_maps(env):
    env.shared.opts.data["depth2img_max_megapixels"] = 0.001  # 1000 pixels
    estimate = mounted(env)["/depth2img/v1/estimate"]["endpoint"]
    with pytest.raises(env.fastapi.HTTPException) as error:
        estimate({"image": rgb_b64(picture(size=(64, 48)))})
    assert error.value.status_code == 422 and "'image'" in error.value.detail and "limit" in error.value.detail
    p = img2img_p(env)
    args = ui_args(enabled=True, source="upload", depth_image=base64.b64encode(png_bytes(ramp16())).decode())
    _, runner = run_job(env, p, args)
    assert_stopped(p, runner, "depth_image.*limit")


def test_listing_routes(env, tiny_checkpoint, tmp_path, caplog):
    env.sd_models.CheckpointInfo(str(tiny_checkpoint)).register()
    junk = tmp_path / "interrupted-download.ckpt"
    junk.write_bytes(b"PK\x03\x04 truncated")
    env.sd_models.CheckpointInfo(str(junk)).register()
    routes = mounted(env)
    listed = routes["/depth2img/v1/checkpoints"]["endpoint"]()
    assert [entry["title"] for entry in listed] == [tiny_checkpoint.name]
    assert sum(str(junk) in record.getMessage() for record in caplog.records) == 1
    [midas] = routes["/depth2img/v1/estimators"]["endpoint"]()
    assert midas["name"] == "checkpoint-midas" and midas["available"]


def test_demo_checkpoint_is_not_registered_but_the_extension_folder_is(tmp_path, tiny_checkpoint, monkeypatch):
    import depth2img.base.paths as paths

    user, demo = tmp_path / "user", tmp_path / "demo"
    for folder in (user, demo):
        folder.mkdir()
    (user / "mine.safetensors").symlink_to(tiny_checkpoint)
    (demo / "tiny-depth.safetensors").symlink_to(tiny_checkpoint)
    monkeypatch.setattr(paths, "USER_CHECKPOINT_DIR", user)
    monkeypatch.setattr(paths, "DEMO_DIR", demo)
    with webui() as env:
        module = env.load_script()
        module.register_extension_checkpoints()
        assert [info.name for info in env.sd_models.checkpoints_list.values()] == ["mine.safetensors"]
        assert (user / "mine.yaml").is_file()


def test_panel_shows_only_what_applies(recorded):
    """The upload box only for "upload"; in txt2img (no init image) neither the source nor the estimator."""
    env = recorded
    panel(env, is_img2img=True)
    panel(env, is_img2img=False)
    by_id = {c.elem_id: c for c in env.created if c.elem_id}
    img2img = {name: by_id[f"depth2img_img2img_{name}"] for name in ("source", "estimator", "depth_file")}
    assert img2img["source"].visible and img2img["estimator"].visible and not img2img["depth_file"].visible
    assert not by_id["depth2img_txt2img_source"].visible and not by_id["depth2img_txt2img_estimator"].visible
    assert by_id["depth2img_txt2img_depth_file"].visible
    change = img2img["source"].events[0]
    shown = [update["visible"] for update in change["fn"]("upload")]
    assert dict(zip([c.elem_id for c in change["outputs"]], shown, strict=True)) == {
        "depth2img_img2img_depth_file": True,
        "depth2img_img2img_depth_thumbnail": True,
        "depth2img_img2img_depth_kind": True,
        "depth2img_img2img_distance_range": True,
        "depth2img_img2img_exr_channel": True,
        "depth2img_img2img_estimator": False,
    }


def test_an_uploaded_distance_map_is_read_as_the_panel_says(env):
    distance = ramp16()  # a Z pass: larger = farther, so the left edge is near
    p = env.processing.StableDiffusionProcessingTxt2Img()
    args = ui_args(enabled=True, source="upload", depth_image=png_bytes(distance), depth_kind="distance",
                   distance_range="1, 4")  # fmt: skip
    _, runner = run_job(env, p, args)
    assert runner.errors == []
    cond = p.txt2img_image_conditioning(torch.zeros(1, 4, 6, 8))
    assert cond[0, 0, :, 0].mean() > cond[0, 0, :, -1].mean()  # near (left) is high in the conditioning


# ---- estimators other than the loaded model's MiDaS (issue 8) ------------------------------------------------


@pytest.fixture
def dpt_folder(tmp_path, monkeypatch):
    """A tiny transformers DPT folder in a models/depth folder: the estimator "dpt"."""
    from depth2img.estimate import folders as folder_estimators
    from depth2img.estimate import registry as registry_module

    from .estimator_fixtures import build_folder

    root = tmp_path / "models" / "depth"
    build_folder("dpt", root)
    monkeypatch.setattr(folder_estimators, "ESTIMATOR_DIRS", [root])
    monkeypatch.setattr(registry_module, "_LOADED", {})
    return root / "dpt"


def photo_tensor(height=48, width=64, seed=0) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("api_args", [False, True])
def test_a_job_with_a_folder_estimator_estimates_with_that_folders_network(env, dpt_folder, api_args):
    from depth2img.condition.conditioning import depth_conditioning
    from depth2img.estimate import registry as registry_module

    p = img2img_p(env, is_api=api_args)
    # The API's alwayson args (named, first) or the UI's positional list.
    args = [{"enabled": True, "estimator": "dpt"}] if api_args else ui_args(enabled=True, estimator="dpt")
    script, runner = run_job(env, p, args)
    assert runner.errors == []
    source, latent = photo_tensor(), torch.zeros(1, 4, 6, 8)
    conditioning = p.img2img_image_conditioning(source, latent)
    assert env.midas.calls == 0  # not the loaded model's MiDaS
    folder_estimator = registry_module.create_estimator("dpt")
    expected = depth_conditioning(folder_estimator.estimate(source), (6, 8))
    assert torch.allclose(conditioning, expected, atol=1e-6)
    assert p.extra_generation_params["Depth2Img estimator"] == "dpt"
    assert folder_estimator.model is not None
    finish(env, p, script)
    assert folder_estimator.model is None  # freed after the job ("keep estimator in memory" is off by default)


def test_keep_estimator_in_memory_keeps_a_folders_weights_after_the_job(env, dpt_folder):
    from depth2img.estimate import registry as registry_module

    env.shared.opts.data["depth2img_keep_estimator"] = True
    p = img2img_p(env)
    script, _ = run_job(env, p, ui_args(enabled=True, estimator="dpt"))
    p.img2img_image_conditioning(photo_tensor(), torch.zeros(1, 4, 6, 8))
    finish(env, p, script)
    assert registry_module.create_estimator("dpt").model is not None


def test_the_estimate_route_and_the_preview_run_the_chosen_estimator(env, dpt_folder):
    from depth2img.estimate import registry as registry_module
    from depth2img.panel import builder

    image = picture(size=(64, 48))
    answer = mounted(env)["/depth2img/v1/estimate"]["endpoint"]({"image": rgb_b64(image), "estimator": "dpt"})
    assert env.midas.calls == 0 and (answer["width"], answer["height"]) == (64, 48)
    expected = registry_module.create_estimator("dpt").estimate(image)[0].numpy()  # weights load again: freed after
    assert answer["min"] == pytest.approx(float(expected.min()), rel=1e-4)
    assert answer["max"] == pytest.approx(float(expected.max()), rel=1e-4)
    settings = builder.settings_from_values(["estimate", None, "dpt", False, 100.0, 0.0, 1.0, 0.0, "auto", "", ""])
    builder.preview_images(settings, image, env.script.estimate_for_preview)
    assert env.midas.calls == 0


def test_a_job_with_a_controlnet_preprocessor_runs_it_at_the_jobs_size_and_unloads_it(env, monkeypatch):
    from depth2img.condition.conditioning import depth_conditioning
    from depth2img.estimate import registry as registry_module

    from .webui_standins import controlnet

    p = img2img_p(env, picture(size=(128, 96)), width=128, height=96)
    _, runner = run_job(env, p, ui_args(enabled=True, estimator="controlnet:depth_midas"))
    assert_stopped(p, runner, "needs the sd-webui-controlnet extension")  # not loaded: said, nothing runs

    monkeypatch.setattr(registry_module, "_LOADED", {})
    registry = controlnet.installed(monkeypatch)
    p = img2img_p(env, picture(size=(128, 96)), width=128, height=96)
    _, runner = run_job(env, p, ui_args(enabled=True, estimator="controlnet:depth_midas"))
    assert runner.job_error is None
    [(_, conditioning)] = p.sampled_with  # what the job's sampler got: its init() computed it once
    preprocessor = registry.get_preprocessor("depth_midas")
    assert [call["resolution"] for call in preprocessor.calls] == [96] and env.midas.calls == 0
    # The stand-in's network: the red channel of the init image (128x96: the job's size, not resized).
    red = torch.from_numpy(np.asarray(picture(size=(128, 96)))[..., 0].astype(np.float32) / 255)
    assert torch.allclose(conditioning, depth_conditioning(red[None], (12, 16)), atol=1e-6)
    assert preprocessor.unloads == 1 and not preprocessor.loaded  # by the job's postprocess


def test_an_approximate_upload_is_said_under_the_result_and_to_api_callers(env):
    distance = png_bytes(ramp16())  # a normalized Z pass without its distance range: approximate
    for is_api in (False, True):
        p = img2img_p(env, is_api=is_api)
        args = ui_args(enabled=True, source="upload", depth_image=distance, depth_kind="distance")
        script, runner = run_job(env, p, args)
        assert runner.errors == []
        [comment] = p.comments
        assert comment.startswith("Depth2Img: ") and "approximate" in comment
        processed = finish(env, p, script)
        key = webui_outputs.NOTICE_INFO_KEY
        assert ("approximate" in processed.extra_generation_params.get(key, "")) == is_api
        assert key not in p.extra_generation_params  # never in an image's PNG info


# ---- a fixed depth range (issue 9 #1) -----------------------------------------------------------------------


def test_a_fixed_depth_range_conditions_every_job_on_that_scale(env):
    """An uploaded ramp (0..1 after decoding) on the range (0, 2): its far end at -1, its near end at 0, not +1."""
    depth_image = base64.b64encode(png_bytes(ramp16())).decode()
    own, fixed = (env.processing.StableDiffusionProcessingTxt2Img() for _ in range(2))
    run_job(env, own, ui_args(enabled=True, source="upload", depth_image=depth_image))
    _, runner = run_job(env, fixed, [{"enabled": True, "source": "upload", "depth_image": depth_image,
                                      "depth_range": [0, 2]}])  # fmt: skip
    assert runner.errors == []
    own_cond = own.txt2img_image_conditioning(torch.zeros(1, 4, 6, 8))[0, 0]
    fixed_cond = fixed.txt2img_image_conditioning(torch.zeros(1, 4, 6, 8))[0, 0]
    assert own_cond.max() == pytest.approx(1.0) and own_cond.min() == pytest.approx(-1.0)
    # The same map (min-max stretched: the map's own scale)...
    stretched = (fixed_cond - fixed_cond.min()) / (fixed_cond.max() - fixed_cond.min()) * 2 - 1
    assert torch.allclose(stretched, own_cond, atol=1e-5)
    # ...on the given scale: x -> 2 * x / 2 - 1, so the ramp's resized values (inside 0..1) less one, never +1.
    assert -1.0 < fixed_cond.min() < -0.9 and -0.1 < fixed_cond.max() < 0.0
    assert fixed.extra_generation_params["Depth2Img depth_range"] == "0.0 2.0"


def test_a_fixed_depth_range_applies_to_estimated_img2img_batches_and_comes_from_the_panel(env):
    p = img2img_p(env, batch_size=2)
    # The panel's textbox: "lo, hi". FakeMidas gives brightness + 2 (about 2..3): 10..20 puts all of it below lo.
    _, runner = run_job(env, p, ui_args(enabled=True, depth_range="10, 20"))
    assert runner.errors == []
    source = torch.linspace(-1, 1, 64).expand(2, 3, 48, 64)  # the init image as the WebUI hands it: not flat
    cond = p.img2img_image_conditioning(source, torch.zeros(2, 4, 6, 8))
    assert cond.shape == (2, 1, 6, 8) and (cond == -1.0).all()
    assert Depth2ImgArgs.from_infotext(p.extra_generation_params).depth_range == (10.0, 20.0)


def test_a_bad_depth_range_stops_the_job_naming_the_field(env):
    p = img2img_p(env)
    _, runner = run_job(env, p, ui_args(enabled=True, depth_range="0.9, 0.1"))
    assert_stopped(p, runner, "'depth_range'")


def test_the_depth_range_xyz_axis_sets_the_cells_range(env):
    xyz = xyz_grid_with_our_axes(env)
    axis = next(a for a in xyz.axis_options if a.label == "[Depth2Img] Depth range")
    p = img2img_p(env)
    axis.apply(p, "10 20", None)
    run_job(env, p, ui_args())
    assert p.extra_generation_params["Depth2Img depth_range"] == "10.0 20.0"
    cond = p.img2img_image_conditioning(torch.linspace(-1, 1, 64).expand(1, 3, 48, 64), torch.zeros(1, 4, 6, 8))
    assert (cond == -1.0).all()


# ---- masks from a depth band (issue 9 #2) -------------------------------------------------------------------


def ramp_upload(top=65535, width=64, height=48) -> str:
    return base64.b64encode(png_bytes(ramp16(width, height) // (65535 // top))).decode()


def band_args(**named) -> list:
    """The API's named args: a left-to-right ramp (white = near, so the right is near) for a 64x48 picture."""
    return [{"enabled": True, "source": "upload", "depth_image": ramp_upload(), "mask_from_depth": True, **named}]


def test_a_depth_band_turns_img2img_into_an_inpaint_job_with_the_webuis_own_mask(env):
    p = img2img_p(env, picture(size=(64, 48)), width=128, height=96)
    _, runner = run_job(env, p, band_args(mask_low=50, mask_feather=2))
    assert runner.errors == []
    # The WebUI's own mask, at the init image's size: its init() blurs, crops ("only masked") and resizes it.
    mask = np.asarray(p.image_mask)
    assert p.image_mask.mode == "L" and mask.shape == (48, 64)
    assert (mask[:, :28] == 0).all() and (mask[:, 36:] == 255).all() and 0 < mask[:, 32].min() < 255  # feathered
    assert p.extra_generation_params["Depth2Img mask_low"] == "50.0"
    assert "50-100" in p.extra_generation_params["Depth2Img mask band"]
    # The WebUI then conditions as for inpainting: the whole init image's depth, cropped for "only masked".
    p.inpaint_full_res, p.paste_to = True, (32, 0, 32, 48)  # the right half of the init image
    cond = p.img2img_image_conditioning(torch.zeros(1, 3, 96, 128), torch.zeros(1, 4, 12, 16), p.image_mask)
    assert cond.shape == (1, 1, 12, 16) and cond[0, 0, :, 0].mean() < cond[0, 0, :, -1].mean()


# (top left, top right, bottom right) of the mask: painted = the top half, band = the right (near) half.
@pytest.mark.parametrize("combine, expected", [("intersect", (0, 255, 0)), ("union", (255, 255, 255)),
                                               ("replace", (0, 255, 255))])  # fmt: skip
def test_a_painted_mask_is_read_as_the_webui_reads_it_and_combined(env, combine, expected):
    # An RGBA mask (the API's, the sketch editor's): the WebUI reads its alpha, not its colour (black strokes).
    painted = Image.new("RGBA", (64, 48), (255, 255, 255, 0))
    painted.paste((0, 0, 0, 255), (0, 0, 64, 24))  # the top half painted
    p = img2img_p(env, picture(size=(64, 48)), mask=painted)
    _, runner = run_job(env, p, band_args(mask_low=50, mask_combine=combine))
    assert runner.errors == []
    mask = np.asarray(p.image_mask)
    corners = (mask[:24, :28], mask[:24, 36:], mask[24:, 36:])
    assert all((corner == value).all() for corner, value in zip(corners, expected, strict=True))
    assert (mask[24:, :28] == 0).all()


def test_auto_band_takes_the_depth_under_the_strokes(env):
    strokes = Image.new("L", (64, 48))
    strokes.paste(255, (40, 10, 46, 14))  # about two thirds of the way to the near end
    p = img2img_p(env, picture(size=(64, 48)), mask=strokes)
    _, runner = run_job(env, p, band_args(mask_auto=True))  # replace: the band alone, not the strokes
    assert runner.errors == []
    mask = np.asarray(p.image_mask)
    assert (mask[:, 40:46] == 255).all() and (mask[:, :32] == 0).all() and (mask[:, -8:] == 0).all()
    assert "(auto)" in p.extra_generation_params["Depth2Img mask band"]


def test_an_empty_band_stops_the_job_with_a_message(env):
    p = img2img_p(env, picture(size=(64, 48)))
    _, runner = run_job(env, p, band_args(mask_low=60, depth_range=[0, 2]))  # the ramp is 0..50 % of 0..2
    assert_stopped(p, runner, "no pixel lies in the depth band")
    p = env.processing.StableDiffusionProcessingTxt2Img()
    _, runner = run_job(env, p, band_args())
    assert_stopped(p, runner, "'mask_from_depth'.*needs an init image")


def test_a_reused_p_never_takes_the_last_images_mask_for_the_users(env):
    """The batch tab (and XYZ) run one p per image: our mask of image 1 is no painted mask of image 2."""
    p = img2img_p(env, picture(size=(64, 48)))
    run_job(env, p, band_args(mask_low=50))
    first = p.image_mask
    run_job(env, p, band_args(mask_high=50, mask_combine="union"))  # a union with a "painted" mask would keep it
    assert p.image_mask is not first and (np.asarray(p.image_mask)[:, 36:] == 0).all()
    run_job(env, p, ui_args(enabled=True))  # the band off: the user's own mask (none) comes back
    assert p.image_mask is None
    painted = Image.new("L", (64, 48), 255)
    p = img2img_p(env, picture(size=(64, 48)), mask=painted)
    run_job(env, p, band_args(mask_low=50))
    run_job(env, p, ui_args(enabled=True))
    assert p.image_mask is painted


def test_img2img_panel_has_the_mask_settings_in_the_positional_order(recorded):
    env = recorded
    img2img = panel(env).ui(is_img2img=True)
    txt2img = panel(env, is_img2img=False).ui(is_img2img=False)
    names = [f.name for f in __import__("dataclasses").fields(Depth2ImgArgs)]
    assert len(img2img) == len(names)  # every setting, the schema's order: the UI's list is the API's
    assert [c.elem_id for c in img2img[names.index("mask_from_depth"):names.index("mask_auto") + 1]] == [
        f"depth2img_img2img_{n}" for n in names[names.index("mask_from_depth"):names.index("mask_auto") + 1]
    ]
    assert len(txt2img) == names.index("depth_range") + 1  # no init image: no mask
    preview = next(c for c in env.created if c.elem_id == "depth2img_img2img_preview").events[0]
    assert [c.elem_id for c in preview["outputs"]][-1] == "depth2img_img2img_preview_mask"


def test_preview_shows_the_mask_of_the_band(recorded):
    env = recorded
    panel(env)
    event = preview_event(env)
    settings = {"source": "upload", "depth_image": png_bytes(ramp16()), "mask_from_depth": True, "mask_low": 50.0}
    values = list(IMG2IMG_PANEL_VALUES)
    panel_settings = __import__("depth2img.panel.builder", fromlist=["PANEL_SETTINGS"]).PANEL_SETTINGS
    names = [*panel_settings, "depth_range", *MASK_DEFAULTS]
    for name, value in settings.items():
        values[names.index(name)] = value
    image = picture(size=(64, 48))
    _, _, shown = event["fn"](0, image, None, None, None, None, *values)
    # Over the image: the kept half as it is, the repainted half tinted red.
    shown, original = np.asarray(shown).astype(int), np.asarray(image).astype(int)
    assert shown.shape == (48, 64, 3) and np.array_equal(shown[:, :28], original[:, :28])
    assert np.abs(shown[:, 36:] - (original[:, 36:] + [255, 0, 0]) / 2).max() <= 1


def test_the_band_xyz_axes_turn_the_mask_on_for_their_cell(env):
    axes = {axis.label: axis for axis in xyz_grid_with_our_axes(env).axis_options}
    p = img2img_p(env, picture(size=(64, 48)))
    axes["[Depth2Img] Mask band low"].apply(p, "50", None)
    axes["[Depth2Img] Mask band high"].apply(p, "75", None)
    run_job(env, p, ui_args(source="upload", depth_image=ramp_upload()))
    assert p.extra_generation_params["Depth2Img mask_from_depth"] == "True"
    mask = np.asarray(p.image_mask)
    assert (mask[:, 36:44] == 255).all() and (mask[:, :28] == 0).all() and (mask[:, 52:] == 0).all()


# ---- POST /depth2img/v1/mask (issue 9 #3) --------------------------------------------------------------------


def test_mask_route_estimates_under_the_queue_lock_or_takes_a_depth_map(env):
    route = mounted(env)["/depth2img/v1/mask"]
    schema = route["openapi_extra"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["mask_low"]["maximum"] == 100
    answer = route["endpoint"]({"image": rgb_b64(picture(size=(128, 96))), "mask_low": 0, "mask_high": 100})
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask"]))))
    assert mask.shape == (96, 128) and (mask == 255).all() and env.midas.lock_held == [True]
    answer = route["endpoint"]({"image": rgb_b64(picture(size=(64, 48))), "depth_image": ramp_upload(),
                                "mask_low": 50})  # fmt: skip
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask"]))))
    assert (mask[:, :28] == 0).all() and (mask[:, 36:] == 255).all() and env.midas.calls == 1


@pytest.mark.parametrize(
    "body, field",
    [({"mask_low": 101}, "mask_low"), ({"mask_low": 50, "mask_high": 50}, "mask_low"), ({"image": "%%"}, "image"),
     ({"mask_low": 60, "depth_range": [0, 2]}, "mask_low"), ({"depth_image": "%%"}, "depth_image")],
)  # fmt: skip
def test_mask_route_rejects_bad_input_with_422_naming_the_field(env, body, field):
    route = mounted(env)["/depth2img/v1/mask"]["endpoint"]
    with pytest.raises(env.fastapi.HTTPException) as error:
        route({"image": rgb_b64(picture(size=(64, 48))), "depth_image": ramp_upload(), **body})
    assert error.value.status_code == 422 and field in error.value.detail


# ---- the batch tab's one depth scale for the whole folder (issue 9 #4) ---------------------------------------


def batch_folder(tmp_path, tops=(65535, 32767)):
    """Inputs a.png, b.png and their depth maps: ramps to 1.0 and to 0.5 (decoded)."""
    inputs, depths = tmp_path / "in", tmp_path / "depth"
    for folder in (inputs, depths):
        folder.mkdir()
    for seed, (name, top) in enumerate(zip("ab", tops, strict=True)):
        picture(seed, size=(64, 48)).save(inputs / f"{name}.png")
        cv2.imwrite(str(depths / f"{name}.png"), (ramp16() // (65535 // top)).astype(np.uint16))
    return inputs, depths


def run_batch(env, inputs, args):
    """The WebUI's batch tab over `inputs` with one p; returns p's infotext params and conditioning per image."""
    env.script.install_batch_inputs_recorder()
    script = env.script.Depth2ImgScript()
    p = img2img_p(env)
    p.scripts = env.scripts.ScriptRunner(script, args)
    seen = []
    real_process = p.scripts.process

    def process(p):
        real_process(p)
        assert p.scripts.errors == []
        cond = conditioning_of(p)
        seen.append((dict(p.extra_generation_params), cond[0, 0]))

    p.scripts.process = process
    env.img2img.process_batch(p, str(inputs), "", "", args)
    return seen


def test_one_depth_scale_for_the_whole_folder(env, tmp_path, monkeypatch):
    from depth2img.process import scale
    from depth2img.sequences import passes as passes_module

    inputs, depths = batch_folder(tmp_path)
    passes = []
    real_scale = webui_batch.folder_depth_scale

    def counted(*args, **kwargs):
        passes.append(args[0])
        return real_scale(*args, **kwargs)

    monkeypatch.setattr(webui_batch, "folder_depth_scale", counted)
    texts = []
    shown = property(lambda s: texts[-1] if texts else None, lambda s, v: texts.append(v))
    monkeypatch.setattr(type(env.shared.state), "textinfo", shown)
    seen = run_batch(env, inputs, ui_args(enabled=True, depth_dir=str(depths)) + [*MASK_DEFAULTS.values(), "global"])
    assert [[path.name for path in inputs] for inputs in passes] == [["a.png", "b.png"]]  # pass 1 once, every input
    # The WebUI's status text counts pass 1, then is the WebUI's own again.
    assert texts == ["Depth2Img: depth scale of the folder, input 1 of 2", "Depth2Img: depth scale of the folder, "
                     "input 2 of 2", None]  # fmt: skip
    maps = [decoding.load_depth(depths / name) for name in ("a.png", "b.png")]
    samples = [scale.range_sample(m) for m in maps]
    shared = passes_module.shared_ranges(samples, passes_module.ScaleSettings("global"))[0]
    [(params_a, cond_a), (params_b, cond_b)] = seen
    assert params_a["Depth2Img depth_range"] == params_b["Depth2Img depth_range"] == " ".join(map(repr, shared))
    assert params_a["Depth2Img batch_depth_scale"] == "global"
    # One scale: a's ramp spans it, b's (half as deep) only its lower half; per image both would span -1..1.
    assert cond_a.max() > 0.8 and cond_b.max() < 0.05 and cond_b.min() < -0.8
    per_image = run_batch(env, inputs, ui_args(enabled=True, depth_dir=str(depths)))
    assert all("Depth2Img depth_range" not in params for params, _ in per_image)
    assert per_image[1][1].max() > 0.99


def test_one_depth_scale_for_the_folder_post_processes_every_map_alike(env, tmp_path):
    # Issue 15.5: clip, gamma and invert took each map's own percentiles, min and max. b is a's ramp flattened at
    # 0.5 from the middle on: its left half is a's. On one scale a raw depth gives one conditioning value in every
    # image, so the left halves condition alike; on each map's own scale b's clip (its 80th percentile, 0.5: the
    # folder's is 0.6) and its bounds would differ from a's.
    inputs, depths = batch_folder(tmp_path)
    cv2.imwrite(str(depths / "b.png"), np.minimum(ramp16(), 32767).astype(np.uint16))
    post = {"invert": True, "gamma": 2.0, "clip_near": 80.0}
    seen = run_batch(env, inputs, ui_args(enabled=True, depth_dir=str(depths), **post) + [*MASK_DEFAULTS.values(),
                                                                                         "global"])
    [(_, cond_a), (_, cond_b)] = seen
    assert cond_a[:, 0].mean() > 0.9 and cond_a[:, -1].mean() < -0.9  # inverted on the folder's range
    left = cond_a.shape[1] // 2 - 1  # latent columns whose pixels all lie in the left half (and the resize's reach)
    assert torch.allclose(cond_a[:, :left], cond_b[:, :left], atol=0.02)
    assert not torch.allclose(cond_a[:, -1], cond_b[:, -1], atol=0.2)  # b's flat right half is not a's


def test_one_depth_scale_for_the_folder_estimates_inputs_without_maps(env, tmp_path, monkeypatch):
    from depth2img.webui import job

    inputs, _ = batch_folder(tmp_path)
    calls = []
    real_estimate = job.estimate_image

    def estimate_image(estimator, cache, image, background):
        calls.append(image.size)
        return real_estimate(estimator, cache, image, background)

    monkeypatch.setattr(job, "estimate_image", estimate_image)
    seen = run_batch(env, inputs, [{"enabled": True, "batch_depth_scale": "global"}])
    assert calls == [(64, 48), (64, 48)]  # pass 1 estimated each input
    ranges = {params["Depth2Img depth_range"] for params, _ in seen}
    [shared] = ranges  # the same for both
    low, high = (float(v) for v in shared.split())
    assert 1.0 <= low < high <= 3.0  # FakeMidas' units: brightness (-1..1 after MiDaS' preprocessing) + 2


def test_one_depth_scale_for_the_folder_needs_v19_and_says_so(tmp_path, capsys):
    with webui("1.8.0") as env:
        env.load_script()
        env.shared.sd_model = SimpleNamespace(depth_model=FakeMidas(env.call_queue.queue_lock), lowvram=False,
                                              sd_checkpoint_info=SimpleNamespace(shorthash="f", filename="f"))
        p = img2img_p(env)
        _, runner = run_job(env, p, [{"enabled": True, "batch_depth_scale": "global"}])
        assert runner.errors == [] and "Depth2Img depth_range" not in p.extra_generation_params
        assert "one depth scale for the whole folder is not used" in capsys.readouterr().out


# ---- a shared server: paths, folders, auth (issue 14) ----------------------------------------------------------


def test_an_images_own_metadata_never_names_a_batch_source(env, tmp_path):
    """An uploaded PNG may carry the recorder's key (a text chunk) naming any file: no server file is read."""
    folder = tmp_path / "private"
    folder.mkdir()
    cv2.imwrite(str(folder / "secret.png"), ramp16(vertical=True))
    forged = picture()
    forged.info[BATCH_PATH_KEY] = str(tmp_path / "x" / "secret.jpg")
    env.shared.opts.data[webui_options.API_FOLDERS_SETTING] = True  # even where the owner lets API calls name folders
    p = img2img_p(env, forged, is_api=True)
    _, runner = run_job(env, p, [{"enabled": True, "depth_dir": str(folder)}])
    assert runner.errors == [] and BATCH_PATH_KEY not in forged.info and runner.job_error is None
    assert env.midas.calls == 1  # the job estimated its depth: the private map was not used
    assert p.extra_generation_params.get("Depth2Img source", "estimate") == "estimate"


def test_a_recorded_batch_path_survives_the_batch_tabs_copy_of_the_image(env):
    image = picture()
    webui_batch.record_batch_path(image, "/inputs/a.jpg")
    copy = image.copy()  # the batch tab's exif_transpose hands on a copy
    assert webui_batch.pop_batch_sources(SimpleNamespace(init_images=[copy])) == ["/inputs/a.jpg"]
    assert BATCH_PATH_KEY not in copy.info


@pytest.mark.parametrize("allowed", [False, True])
def test_depth_dir_over_the_api_is_refused_unless_the_owner_allows_it(env, tmp_path, allowed):
    env.shared.opts.data[webui_options.API_FOLDERS_SETTING] = allowed
    p = img2img_p(env, is_api=True)
    _, runner = run_job(env, p, [{"enabled": True, "depth_dir": str(tmp_path)}])
    if allowed:
        assert runner.errors == [] and conditioning_of(p).shape == (1, 1, 6, 8)
    else:
        assert_stopped(p, runner, "'depth_dir'.*API requests may not name server folders.*depth_image")


@pytest.mark.parametrize("is_api", [False, True])
def test_hide_ui_dir_config_refuses_depth_dir_from_anyone(env, tmp_path, is_api):
    env.shared.cmd_opts.hide_ui_dir_config = True
    env.shared.opts.data[webui_options.API_FOLDERS_SETTING] = True
    try:
        p = img2img_p(env, is_api=is_api)
        args = [{"enabled": True, "depth_dir": str(tmp_path)}] if is_api else ui_args(enabled=True, depth_dir="x")
        _, runner = run_job(env, p, args)
        assert_stopped(p, runner, "'depth_dir'.*--hide-ui-dir-config")
    finally:
        env.shared.cmd_opts.hide_ui_dir_config = False


@pytest.mark.parametrize("hidden", [False, True])
def test_hide_ui_dir_config_hides_and_locks_the_panels_folder_box(recorded, hidden):
    env = recorded
    env.shared.cmd_opts.hide_ui_dir_config = hidden
    try:
        panel(env, is_img2img=True)
    finally:
        env.shared.cmd_opts.hide_ui_dir_config = False
    [box] = [c for c in env.created if c.elem_id == "depth2img_img2img_depth_dir"]
    assert (box.visible, box.kwargs["interactive"]) == (not hidden, not hidden)


def test_an_estimator_path_outside_the_model_folders_is_refused_without_looking_at_it(env, dpt_folder, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    for name in (str(outside), "../" + dpt_folder.name, "/etc"):
        p = img2img_p(env, is_api=True)
        _, runner = run_job(env, p, [{"enabled": True, "estimator": name}])
        assert_stopped(p, runner, "'estimator'.*a path is accepted only for a folder inside the model folders")
    p = img2img_p(env, is_api=True)  # the path of a folder inside models/depth is that folder's estimator
    _, runner = run_job(env, p, [{"enabled": True, "estimator": str(dpt_folder)}])
    assert runner.errors == [] and conditioning_of(p).shape == (1, 1, 6, 8)


def test_routes_answer_to_the_webuis_api_auth(env):
    webui_check = env.fastapi.Depends(lambda: True)  # the WebUI's Api.add_api_route gives its routes this
    app = env.fastapi.FastAPI()
    app.add_api_route("/sdapi/v1/txt2img", lambda: None, dependencies=[webui_check])
    assert all(route["dependencies"] == [] for route in mounted(env, app).values())  # no --api-auth: none
    env.shared.cmd_opts.api_auth = "u:p"
    try:
        app = env.fastapi.FastAPI()
        app.add_api_route("/sdapi/v1/txt2img", lambda: None, dependencies=[webui_check])
        routes = mounted(env, app)
        assert len(routes) == 4 and all(route["dependencies"] == [webui_check] for route in routes.values())
    finally:
        env.shared.cmd_opts.api_auth = None


def _bomb_cases():
    from .hostile_inputs import BOMBS

    for name, (build, is_picture) in sorted(BOMBS.items()):
        yield pytest.param(build, is_picture, id=name)


@pytest.mark.parametrize("build, is_picture", list(_bomb_cases()))
def test_every_route_and_job_refuses_each_bomb_naming_the_field(env, build, is_picture):
    bomb = base64.b64encode(build()).decode()
    estimate = mounted(env)["/depth2img/v1/estimate"]["endpoint"]
    mask = mounted(env)["/depth2img/v1/mask"]["endpoint"]
    small = rgb_b64(picture(size=(64, 48)))
    calls = [(estimate, {"depth_image": bomb}, "depth_image"),
             (mask, {"image": small, "depth_image": bomb}, "depth_image")]  # fmt: skip
    if is_picture:
        calls += [(estimate, {"image": bomb}, "image"), (mask, {"image": bomb}, "image")]
    for route, body, field in calls:
        with pytest.raises(env.fastapi.HTTPException) as error:
            route(body)
        assert error.value.status_code == 422 and f"'{field}'" in error.value.detail, error.value.detail
    p = img2img_p(env, is_api=True)
    _, runner = run_job(env, p, [{"enabled": True, "source": "upload", "depth_image": bomb}])
    assert_stopped(p, runner, "depth_image")
    assert env.midas.calls == 0


def test_uploads_to_the_routes_are_decoded_holding_the_queue_lock(env, monkeypatch):
    held, threads = [], set()
    real_open = decoding.open_image

    def open_image(*args, **kwargs):
        held.append(env.call_queue.queue_lock.locked())
        threads.add(threading.current_thread().name)
        return real_open(*args, **kwargs)

    def dumps(answer):  # the answer's JSON bytes are made under the lock too: outside it, only those bytes
        held.append(env.call_queue.queue_lock.locked())
        return json.dumps(answer)

    monkeypatch.setattr(decoding, "open_image", open_image)
    monkeypatch.setattr(env.script, "json", SimpleNamespace(dumps=dumps))
    routes = mounted(env)
    answers = [routes["/depth2img/v1/estimate"]["raw"]({"image": rgb_b64(picture())}),
               routes["/depth2img/v1/mask"]["raw"]({"image": rgb_b64(picture()), "mask_low": 50})]  # fmt: skip
    assert len(held) == 4 and all(held), held
    assert all(isinstance(answer.body, bytes) for answer in answers)
    # one thread for every upload, whichever pool thread serves the request (malloc keeps memory per thread)
    assert len(threads) == 1 and threads.pop().startswith("depth2img-upload")


# ---- an off panel changes nothing (issue 15 #1) ---------------------------------------------------------------

STALE_OR_CROSSED = [
    {"clip_near": 10, "clip_far": 20},
    {"mask_from_depth": True, "mask_low": 80, "mask_high": 20},
    {"estimator": "controlnet:depth_removed"},
    {"estimator": "a-deleted-folder"},
    {"source": "upload", "depth_image": b"not an image"},
    {"gamma": -3},
]


# The UI's positional list of these tests has the fields up to depth_range (FIELDS); the mask's are API-only here.
@pytest.mark.parametrize(
    "values, api", [(v, api) for v in STALE_OR_CROSSED for api in (False, True) if api or set(v) <= set(FIELDS)]
)
def test_an_off_panel_never_stops_a_job_whatever_its_widgets_hold(env, values, api):
    args = [{"enabled": False, **values}] if api else ui_args(enabled=False, **values)
    p = img2img_p(env, is_api=api)
    _, runner = run_job(env, p, args)
    assert runner.errors == []
    assert not (conditioning_of(p) == 7.0).all()  # the takeover's defaults, not an error
    assert "Depth2Img enabled" not in p.extra_generation_params
    env.shared.opts.data["depth2img_takeover"] = False
    p = img2img_p(env, is_api=api)
    _, runner = run_job(env, p, args)
    assert runner.errors == [] and (conditioning_of(p) == 7.0).all()  # the WebUI's own


def test_an_off_panel_on_a_plain_model_leaves_the_job_alone(env, plain_model):
    p = env.processing.StableDiffusionProcessingTxt2Img()
    _, runner = run_job(env, p, ui_args(enabled=False, clip_near=10, clip_far=20, estimator="gone"))
    assert runner.errors == [] and getattr(p, "_depth2img_conditioner", None) is None
    assert runner.job_error is None and p.sampled_with[0][1].shape == (1, 5, 1, 1)  # the plain model's own


def test_a_band_that_crosses_matters_only_with_the_mask_on(env):
    p = img2img_p(env, is_api=True)
    _, runner = run_job(env, p, [{"enabled": True, "mask_low": 80, "mask_high": 20}])
    assert runner.errors == [] and conditioning_of(p).shape == (1, 1, 6, 8)
    p = img2img_p(env, is_api=True)
    _, runner = run_job(env, p, [{"enabled": True, "mask_from_depth": True, "mask_low": 80, "mask_high": 20}])
    assert_stopped(p, runner, "'mask_low'.*below 'mask_high'")


def test_an_xyz_cell_that_turns_depth2img_on_is_checked(env):
    p = img2img_p(env)
    setattr(p, webui_options.XYZ_OVERRIDES_ATTR, {"enabled": True, "gamma": 2.0})
    _, runner = run_job(env, p, ui_args(enabled=False, clip_near=10, clip_far=20))
    assert_stopped(p, runner, "'clip_far'.*below 'clip_near'")


@pytest.mark.parametrize(
    "lower, upper, moved, expected",
    [(20, 80, "lower", (20, 80)), (90, 80, "lower", (90, 90.5)), (100, 80, "lower", (99.5, 100)),
     (20, 10, "upper", (9.5, 10)), (20, 0, "upper", (0, 0.5)), (50, 50, "upper", (49.5, 50))],
)  # fmt: skip
def test_coupled_sliders_never_cross(lower, upper, moved, expected):
    from depth2img.panel.builder import keep_apart

    assert keep_apart(lower, upper, moved, step=0.5) == expected


def test_the_panels_near_far_and_band_sliders_are_coupled(recorded):
    env = recorded
    panel(env, is_img2img=True)
    by_id = {c.elem_id: c for c in env.created if c.elem_id}
    for lower, upper in (("clip_far", "clip_near"), ("mask_low", "mask_high")):
        low, high = by_id[f"depth2img_img2img_{lower}"], by_id[f"depth2img_img2img_{upper}"]
        [moved_low] = [e for e in low.events if e["outputs"] == [low, high]]
        assert moved_low["inputs"] == [low, high]
        same, to = {"__type__": "generic_update"}, lambda value: {"__type__": "generic_update", "value": value}
        assert moved_low["fn"](90, 80) == [same, to(90.5)]
        [moved_high] = [e for e in high.events if e["outputs"] == [low, high]]
        assert moved_high["fn"](20, 10) == [to(9.5), same]
        settings = dict(zip((lower, upper), (90, 90.5), strict=True))
        Depth2ImgArgs(enabled=True, mask_from_depth=True, **settings)  # what the coupled sliders send is valid


def test_only_masked_inpainting_conditions_on_the_crop_the_webuis_init_takes_from_our_band_mask(env):
    """The WebUI's order: our band mask (process) -> its init() blurs it and takes its crop ("only masked"),
    setting paste_to -> its img2img_image_conditioning call: the depth the sampler gets is the crop's."""
    p = img2img_p(env, picture(size=(64, 48)), width=32, height=48)
    p.inpaint_full_res = True
    _, runner = run_job(env, p, band_args(mask_low=50, depth_range=[0, 1]))  # the ramp 0..1 on the scale 0..1
    assert runner.errors == [] and runner.job_error is None
    x, y, w, h = p.paste_to
    assert (y, h) == (0, 48) and 16 < x < 32 and x + w == 64  # the near (right) half, grown by the mask blur
    [(_, conditioning)] = p.sampled_with
    assert conditioning.shape == (1, 1, 6, 4)
    # On the fixed scale, the crop's ramp starts at x / 63 (not at 0, the whole picture's far edge) and ends at 1.
    expected = depth_conditioning_of_ramp(x, w)
    torch.testing.assert_close(conditioning, expected, rtol=0, atol=0.02)


def depth_conditioning_of_ramp(x, w):
    from depth2img.condition.conditioning import depth_conditioning

    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (48, 1))  # the uploaded map, decoded
    crop = fitting.resize(ramp[:, x : x + w], 32, 48)
    return depth_conditioning(crop, (6, 4), depth_range=(0.0, 1.0))
