"""AUTOMATIC1111 WebUI adapter (v1.8-v1.10): wiring only; the logic lives in the `depth2img` package.

One AlwaysVisible script (title "Depth2Img", API key `depth2img`) in txt2img and img2img; API routes under
/depth2img/v1/; settings; infotext; XYZ-grid axes. All of it exists from v1.8.0 except `images.read` (v1.9),
which the batch tab's depth folder needs: feature-detected, and said in the panel and the log.
"""

from __future__ import annotations

import dataclasses
import inspect
import traceback

import gradio as gr
from fastapi import Body, FastAPI, HTTPException
from modules import call_queue, devices, images, script_callbacks, scripts, sd_models, shared
from modules.ui_components import InputAccordion

from depth2img import api, depthmap, host
from depth2img import webui_hooks as hooks
from depth2img.args import Depth2ImgArgs
from depth2img.depth_cache import DepthCache
from depth2img.estimators import get_estimator_info, list_estimators
from depth2img.host import Depth2ImgError, DepthConditioner, JobGeometry, ModuleMidasEstimator, job_error
from depth2img.ui import build_depth_panel, infotext_key, js_kwargs

USE_LOADED_MODEL = "Use the loaded model"
CACHE = DepthCache()
# API responses carry the 16-bit depth PNG (base64) here in info's extra_generation_params (with return_depth),
# whatever the WebUI's samples_format: JPEG/WebP cannot hold it.
DEPTH_INFO_KEY = "Depth2Img depth map"


def _opt(name: str, default):
    # getattr: the WebUI's opts fall back to an option's registered default when config.json lacks it.
    return getattr(shared.opts, name, default)


def max_pixels() -> int:
    return int(float(_opt("depth2img_max_megapixels", depthmap.DEFAULT_MAX_PIXELS / 1e6)) * 1_000_000)


def background_color() -> str:
    return _opt("img2img_background_color", "#ffffff")


# ---- model facts ---------------------------------------------------------------------------------


def loaded_depth_model():
    """The loaded model's MiDaS module, or None when the loaded model is not a depth model."""
    return getattr(shared.sd_model, "depth_model", None)


def loaded_estimator() -> ModuleMidasEstimator | None:
    depth_model = loaded_depth_model()
    if depth_model is None:
        return None
    info = getattr(shared.sd_model, "sd_checkpoint_info", None)
    key = getattr(info, "shorthash", None) or getattr(info, "filename", "loaded")
    # --lowvram/--medvram keep weights on the CPU and move the module on call: compute where it will run.
    lowvram = getattr(shared.sd_model, "lowvram", False)
    return ModuleMidasEstimator(depth_model, cache_key=str(key), execution_device=devices.device if lowvram else None)


def estimate_with_loaded_model(image):
    """Depth of one PIL image with the loaded checkpoint's MiDaS, through the shared cache.

    Callers outside a generation (preview, API) hold the WebUI's queue_lock: the module must not run beside
    a generation or a model reload (--lowvram/--medvram move modules on call).
    """
    estimator = loaded_estimator()
    if estimator is None:
        raise Depth2ImgError("estimating needs a loaded SD 2 depth model (or upload a depth map)")
    return host.estimate_image(estimator, CACHE, image, background_color())


def register_extension_checkpoints() -> None:
    """Depth checkpoints in this extension's models/Stable-diffusion join the WebUI's model list."""
    known = [info.filename for info in sd_models.checkpoints_list.values()]
    for path in hooks.checkpoints_to_register(known, hooks.is_depth_checkpoint):
        sd_models.CheckpointInfo(str(path)).register()


def depth_checkpoint_entries() -> list[dict]:
    register_extension_checkpoints()  # again: the WebUI's "refresh" rebuilds its list without them
    return api.checkpoints_response([(info.title, info.filename) for info in sd_models.checkpoints_list.values()])


def depth_checkpoint_titles() -> list[str]:
    return [entry["title"] for entry in depth_checkpoint_entries()]


hooks.register_demo_text_arch()
# Batch inputs' paths (v1.9+'s images.read), to match each input with its depth map by file name.
BATCH_DEPTH_DIR_SUPPORTED = hooks.install_batch_path_recorder(images)
if not BATCH_DEPTH_DIR_SUPPORTED:
    print(f"[Depth2Img] {hooks.BATCH_DEPTH_DIR_NOTE}")


# ---- the script ----------------------------------------------------------------------------------


def estimate_for_preview(image, estimator: str):
    """The panel's estimate callback: the loaded model's MiDaS, never beside a generation or a model reload."""
    api.check_estimator(estimator, has_depth_checkpoint=loaded_depth_model() is not None)
    with call_queue.queue_lock:
        return estimate_with_loaded_model(image)


class Depth2ImgScript(scripts.Script):
    def __init__(self):
        super().__init__()
        self.init_image_components: dict = {}

    def title(self):
        return "Depth2Img"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") in hooks.INIT_IMAGE_ELEM_IDS:
            self.init_image_components[kwargs["elem_id"]] = component

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        with InputAccordion(False, label="Depth2Img", elem_id=f"depth2img_{tab}") as enabled:
            # The panel both hosts show (depth2img.ui); below it what only the WebUI has.
            panel = build_depth_panel(
                f"depth2img_{tab}", has_init_image=is_img2img, max_pixels=max_pixels, extras=("depth_range",)
            )
            with gr.Row(elem_classes=["depth2img-row"]):
                return_depth = gr.Checkbox(
                    False, label="Add the depth map to the outputs", elem_id=f"depth2img_{tab}_return"
                )
                checkpoint = gr.Dropdown(
                    choices=[USE_LOADED_MODEL] + depth_checkpoint_titles(),
                    value=USE_LOADED_MODEL,
                    label="Depth checkpoint (used for this job when the loaded model is not a depth model)",
                    elem_id=f"depth2img_{tab}_checkpoint",
                )
            depth_dir = gr.Textbox(
                label="Batch tab: folder of depth maps, matched to the inputs by file name",
                visible=is_img2img and BATCH_DEPTH_DIR_SUPPORTED,
                elem_id=f"depth2img_{tab}_depth_dir",
            )
            if is_img2img and not BATCH_DEPTH_DIR_SUPPORTED:
                gr.Markdown(f"Batch tab: {hooks.BATCH_DEPTH_DIR_NOTE}.", elem_id=f"depth2img_{tab}_depth_dir_note")
            # Filled in the browser with the img2img sub-tab in use (javascript/depth2img.js).
            preview_tab = gr.Number(value=0, visible=False, elem_id=f"depth2img_{tab}_preview_tab")

        if is_img2img:
            image_ids = [i for i in hooks.INIT_IMAGE_ELEM_IDS if i in self.init_image_components]
            image_inputs = {"tab_index": preview_tab, **{i: self.init_image_components[i] for i in image_ids}}

            def pick(tab_index, *images):
                return hooks.pick_init_image(tab_index, dict(zip(image_ids, images, strict=True)))

            panel.wire_preview(
                estimate_for_preview, image_inputs=image_inputs, pick_image=pick, **js_kwargs("depth2img_preview_args")
            )
        else:
            panel.wire_preview(estimate_for_preview)
        self.infotext_fields = [(enabled, infotext_key("enabled")), *panel.infotext_fields]
        self.paste_field_names = [name for _, name in self.infotext_fields]
        # Depth2ImgArgs' field order: the positional API list and the UI agree.
        host = {"enabled": enabled, "return_depth": return_depth, "checkpoint": checkpoint, "depth_dir": depth_dir}
        return panel.in_schema_order(host)

    # -- generation --
    def _args(self, p, args) -> Depth2ImgArgs:
        values = list(args)
        if len(values) > 10 and values[10] == USE_LOADED_MODEL:
            values[10] = ""
        parsed = Depth2ImgArgs.from_request(values)
        overrides = getattr(p, hooks.XYZ_OVERRIDES_ATTR, None)
        return dataclasses.replace(parsed, **overrides) if overrides else parsed

    def before_process(self, p, *args):
        try:
            settings = self._args(p, args)
            if not (settings.enabled and settings.checkpoint and loaded_depth_model() is None):
                return
            info = sd_models.get_closet_checkpoint_match(settings.checkpoint)
            if info is not None and hooks.is_depth_checkpoint(info.filename):
                # The WebUI loads it for this job and restores the user's model afterwards.
                p.override_settings["sd_model_checkpoint"] = info.title
                p.override_settings_restore_afterwards = True
        except Exception:
            return  # the WebUI only logs exceptions from here: process() checks the same and stops the job

    def process(self, p, *args):
        p._depth2img_conditioner = None  # p is reused by the batch tab and XYZ: nothing from the last run
        try:
            self._prepare(p, args)
        except Exception as error:
            # Anything escaping process() is only logged by the WebUI, which then generates without our hooks
            # (the user's depth map ignored; txt2img fails on 5 vs 9 channels): stop the job instead.
            stop = job_error(error)
            if stop.status_code >= 500:
                traceback.print_exc()
            hooks.stop_job(p, str(stop), stop.status_code)

    def _prepare(self, p, args) -> None:
        settings = self._args(p, args)
        try:
            get_estimator_info(settings.estimator)
        except ValueError as error:
            raise Depth2ImgError(f"depth2img arg 'estimator': {error}") from error
        settings, batch_depth = hooks.batch_depth(
            settings, hooks.pop_batch_sources(p), BATCH_DEPTH_DIR_SUPPORTED, max_pixels()
        )
        is_depth_model = loaded_depth_model() is not None
        if not settings.enabled:
            if not (is_depth_model and _opt("depth2img_takeover", True)):
                return  # the WebUI's own behaviour
            settings = Depth2ImgArgs()  # takeover: the native estimate, with our fixes
        elif not is_depth_model:
            find = sd_models.get_closet_checkpoint_match
            raise Depth2ImgError(hooks.no_depth_model_message(settings.checkpoint, find, hooks.is_depth_checkpoint))
        is_img2img = hasattr(p, "init_images")
        conditioner = DepthConditioner(
            settings,
            JobGeometry(p.width, p.height, getattr(p, "resize_mode", 0)),
            estimator=loaded_estimator(),
            cache=CACHE,
            init_images=list(p.init_images) if is_img2img and p.init_images else None,
            background=background_color(),
            max_pixels=max_pixels(),
            depth=batch_depth,
        )
        CACHE.max_entries = int(_opt("depth2img_cache_size", 8))
        hooks.attach_conditioning(p, conditioner)
        if settings.enabled:
            p.extra_generation_params.update(settings.to_infotext())

    def postprocess(self, p, processed, *args):
        hooks.append_depth_output(p, processed, _opt("samples_format", "png"), DEPTH_INFO_KEY)


# ---- settings, XYZ axes, API ------------------------------------------------------------------------


def on_ui_settings():
    kwargs = {"section": ("depth2img", "Depth2Img")}
    if "category_id" in inspect.signature(shared.OptionInfo.__init__).parameters:
        kwargs["category_id"] = "sd"  # settings categories (v1.8+): listed under "Stable Diffusion"
    for name, default, label, slider in hooks.SETTINGS:
        shared.opts.add_option(name, shared.OptionInfo(default, label, gr.Slider if slider else None, slider, **kwargs))


def add_xyz_axes():
    xyz = next((d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is None:
        return

    axes = [
        xyz.AxisOption(label, kind, apply, choices=choices) if choices else xyz.AxisOption(label, kind, apply)
        for label, kind, apply, choices in hooks.xyz_axes(lambda: [e.name for e in list_estimators()])
    ]
    known = {axis.label for axis in xyz.axis_options}
    xyz.axis_options.extend(axis for axis in axes if axis.label not in known)


RAW_JSON_BODY = Body(...)


def estimate_route(body: dict = RAW_JSON_BODY):  # raw JSON: our validation names the bad field
    try:
        image, settings = api.parse_estimate_request(body, max_pixels())
        api.check_estimator(settings.estimator, has_depth_checkpoint=loaded_depth_model() is not None)
        with call_queue.queue_lock:  # the loaded model: never beside a generation or a model reload
            depth = estimate_with_loaded_model(image)
        depth = depthmap.postprocess(depth, **settings.postprocess_kwargs())
        return api.estimate_response(depth, size=image.size)  # at the input image's size
    except Depth2ImgError as error:
        raise HTTPException(status_code=error.status_code, detail=error.detail) from error


def mount_api(_demo, app: FastAPI):
    schema = {"requestBody": {"content": {"application/json": {"schema": api.estimate_request_schema()}}}}
    routes = [
        ("estimate", estimate_route, "POST", "Estimate a depth map: 16-bit PNG (base64, white = near) at the image's size, and its value range", schema),  # noqa: E501
        ("estimators", lambda: api.estimators_response(loaded_depth_model() is not None), "GET", "Depth estimators and whether each can run now", None),  # noqa: E501
        ("checkpoints", depth_checkpoint_entries, "GET", "Depth checkpoints the WebUI knows", None),
    ]  # fmt: skip
    for name, endpoint, method, summary, extra in routes:
        path = f"/depth2img/v1/{name}"
        app.add_api_route(path, endpoint, methods=[method], tags=["depth2img"], summary=summary, openapi_extra=extra)


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_before_ui(add_xyz_axes)
script_callbacks.on_before_ui(register_extension_checkpoints)
script_callbacks.on_app_started(mount_api)
