"""AUTOMATIC1111 WebUI adapter: wiring only. The logic lives in the `depth2img` package.

One AlwaysVisible script (title "Depth2Img", API key `depth2img`) in txt2img and img2img; API routes
under /depth2img/v1/; settings; infotext; XYZ-grid axes.

WebUI v1.8.x-v1.10.x. Everything used here exists from v1.8.0 (InputAccordion, settings categories,
override_settings_restore_afterwards, call_queue.queue_lock, get_tab_index in the page) except `images.read`
(v1.9), which the batch tab's depth folder needs: feature-detected, and said in the panel and the log.
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import traceback
from pathlib import Path

import gradio as gr
from fastapi import Body, FastAPI, HTTPException
from modules import call_queue, devices, images, script_callbacks, scripts, sd_models, shared
from modules.ui_components import InputAccordion

from depth2img import depthmap
from depth2img.api import (
    check_estimator,
    checkpoints_response,
    estimate_request_schema,
    estimate_response,
    estimators_response,
    parse_estimate_request,
)
from depth2img.args import Depth2ImgArgs
from depth2img.checkpoints import find_checkpoints, inspect_checkpoint_cached
from depth2img.depth_cache import DepthCache
from depth2img.estimators import get_estimator_info, list_estimators
from depth2img.host import (
    Depth2ImgError,
    DepthConditioner,
    JobGeometry,
    ModuleMidasEstimator,
    depth_output_image,
    estimate_image,
    job_error,
    load_batch_depth,
    png16_base64,
)
from depth2img.paths import SHIPPED_DEPTH_CONFIG, USER_CHECKPOINT_DIR
from depth2img.ui import build_depth_panel, infotext_key, js_kwargs

USE_LOADED_MODEL = "Use the loaded model"
CACHE = DepthCache()
# API responses carry the 16-bit depth PNG (base64) here in info's extra_generation_params (with return_depth),
# whatever the WebUI's samples_format: JPEG/WebP cannot hold it.
DEPTH_INFO_KEY = "Depth2Img depth map"
# The init image components of the img2img sub-tabs, in the order of the WebUI's mode index (5 = batch).
INIT_IMAGE_ELEM_IDS = ("img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base")


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
    return estimate_image(estimator, CACHE, image, background_color())


def _is_depth_checkpoint(path) -> bool:
    try:
        return inspect_checkpoint_cached(path).is_depth_model
    except Exception as error:  # a bad file must not break the model list
        print(f"[Depth2Img] skipped {path}: {error}")
        return False


def register_extension_checkpoints() -> None:
    """Depth checkpoints dropped into this extension's models/Stable-diffusion appear in the WebUI's model list.

    Only that folder: the CLI's embedded demo checkpoint (models/demo, random weights) is no user's model.
    """
    for path in find_checkpoints(USER_CHECKPOINT_DIR):
        if any(Path(info.filename) == path for info in sd_models.checkpoints_list.values()):
            continue
        if not _is_depth_checkpoint(path):
            continue
        if not path.with_suffix(".yaml").exists():
            # The WebUI reads <checkpoint>.yaml beside a checkpoint: give ours the shipped config.
            shutil.copyfile(SHIPPED_DEPTH_CONFIG, path.with_suffix(".yaml"))
        sd_models.CheckpointInfo(str(path)).register()


def depth_checkpoint_entries() -> list[dict]:
    register_extension_checkpoints()  # again: the WebUI's "refresh" rebuilds its list without them
    return checkpoints_response([(info.title, info.filename) for info in sd_models.checkpoints_list.values()])


def depth_checkpoint_titles() -> list[str]:
    return [entry["title"] for entry in depth_checkpoint_entries()]


def _register_demo_text_arch() -> None:
    # The embedded demo/test checkpoint names a tiny OpenCLIP arch; teach open_clip its sizes.
    try:
        from depth2img.tiny import register_tiny_open_clip_arch

        register_tiny_open_clip_arch()
    except Exception as error:  # never block the WebUI over the demo checkpoint
        print(f"[Depth2Img] demo text encoder not registered: {error}")


_register_demo_text_arch()

# The img2img batch tab reads each input with images.read(path) (WebUI v1.9+) and hands the script only the
# image. Record the path in the image's info so the depth map of the same name can be found; process() pops
# it again before anything could save it. v1.8 opens batch inputs with PIL directly: no path to match by.
BATCH_PATH_KEY = "depth2img_batch_source_path"
BATCH_DEPTH_DIR_SUPPORTED = hasattr(images, "read")
BATCH_DEPTH_DIR_NOTE = (
    "a batch-tab folder of depth maps needs WebUI v1.9 or newer (older ones do not tell extensions which "
    "file a batch input came from): update the WebUI, or upload one depth map for all inputs"
)


def _install_batch_path_recorder() -> None:
    if not BATCH_DEPTH_DIR_SUPPORTED:
        print(f"[Depth2Img] {BATCH_DEPTH_DIR_NOTE}")
        return
    if getattr(images.read, "_depth2img", False):
        return
    original_read = images.read

    def read(fp, **kwargs):
        image = original_read(fp, **kwargs)
        if isinstance(fp, (str, Path)) and image is not None:
            image.info[BATCH_PATH_KEY] = str(fp)
        return image

    read._depth2img = True
    images.read = read


_install_batch_path_recorder()


# ---- the script ----------------------------------------------------------------------------------


def _raising(message: str, status_code: int):
    def fail(*_args, **_kwargs):
        raise Depth2ImgError(message, status_code)

    return fail


def estimate_for_preview(image, estimator: str):
    """The panel's estimate callback: the loaded model's MiDaS, never beside a generation or a model reload."""
    check_estimator(estimator, has_depth_checkpoint=loaded_depth_model() is not None)
    with call_queue.queue_lock:
        return estimate_with_loaded_model(image)


def pick_init_image(tab_index, images_by_id: dict):
    """The init image of the img2img sub-tab the user is in (the WebUI's mode index), as PIL or None."""
    index = int(tab_index or 0)
    if index >= len(INIT_IMAGE_ELEM_IDS):
        raise Depth2ImgError(
            "the batch tab has no single init image to preview: preview in another img2img tab, or upload a depth map"
        )
    return _as_pil(images_by_id.get(INIT_IMAGE_ELEM_IDS[index]))


class Depth2ImgScript(scripts.Script):
    def __init__(self):
        super().__init__()
        self.init_image_components: dict = {}

    def title(self):
        return "Depth2Img"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs):
        if kwargs.get("elem_id") in INIT_IMAGE_ELEM_IDS:
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
                gr.Markdown(f"Batch tab: {BATCH_DEPTH_DIR_NOTE}.", elem_id=f"depth2img_{tab}_depth_dir_note")
            # Filled in the browser with the img2img sub-tab in use (javascript/depth2img.js).
            preview_tab = gr.Number(value=0, visible=False, elem_id=f"depth2img_{tab}_preview_tab")

        if is_img2img:
            image_ids = [i for i in INIT_IMAGE_ELEM_IDS if i in self.init_image_components]
            image_inputs = {"tab_index": preview_tab, **{i: self.init_image_components[i] for i in image_ids}}

            def pick(tab_index, *images):
                return pick_init_image(tab_index, dict(zip(image_ids, images, strict=True)))

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
        overrides = getattr(p, "_depth2img_xyz", None)
        return dataclasses.replace(parsed, **overrides) if overrides else parsed

    def before_process(self, p, *args):
        try:
            settings = self._args(p, args)
            if not (settings.enabled and settings.checkpoint and loaded_depth_model() is None):
                return
            info = sd_models.get_closet_checkpoint_match(settings.checkpoint)
            if info is not None and _is_depth_checkpoint(info.filename):
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
            self._stop(p, str(stop), stop.status_code)

    def _prepare(self, p, args) -> None:
        settings = self._args(p, args)
        try:
            get_estimator_info(settings.estimator)
        except ValueError as error:
            raise Depth2ImgError(f"depth2img arg 'estimator': {error}") from error
        batch_sources = [img.info.pop(BATCH_PATH_KEY, None) for img in getattr(p, "init_images", None) or []]
        batch_depth = None
        if settings.enabled and settings.depth_dir:
            if not BATCH_DEPTH_DIR_SUPPORTED:
                print(f"[Depth2Img] the depth map folder is not used: {BATCH_DEPTH_DIR_NOTE}")
            elif batch_sources and batch_sources[0]:
                found = load_batch_depth(settings.depth_dir, batch_sources[0], max_pixels())
                if found is None:
                    print(f"[Depth2Img] no depth map for {batch_sources[0]} in {settings.depth_dir}: estimating")
                else:
                    depth_path, batch_depth = found
                    # The decoded map goes in as depth=; depth_image names the file (infotext skips it).
                    settings = dataclasses.replace(settings, source="upload", depth_image=str(depth_path))
        is_depth_model = loaded_depth_model() is not None
        if not settings.enabled:
            if not (is_depth_model and _opt("depth2img_takeover", True)):
                return  # the WebUI's own behaviour
            settings = Depth2ImgArgs()  # takeover: the native estimate, with our fixes
        elif not is_depth_model:
            raise Depth2ImgError(no_depth_model_message(settings.checkpoint))
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

        def record(result):
            p.extra_generation_params["Depth2Img estimator calls"] = conditioner.estimator_calls
            return result

        def img2img_conditioning(source_image, latent_image, image_mask=None, round_image_mask=True):
            conditioner.inpainting = image_mask is not None
            paste_to = getattr(p, "paste_to", None)
            if image_mask is not None and getattr(p, "inpaint_full_res", False) and paste_to:
                x, y, w, h = paste_to
                conditioner.geometry.crop_region = (x, y, x + w, y + h)
            return record(conditioner.conditioning(latent_image, source_image))

        def txt2img_conditioning(x, width=None, height=None):
            return record(conditioner.conditioning(x, None))

        p.img2img_image_conditioning = img2img_conditioning
        p.txt2img_image_conditioning = txt2img_conditioning
        p._depth2img_conditioner = conditioner
        if settings.enabled:
            p.extra_generation_params.update(settings.to_infotext())

    def _stop(self, p, message: str, status_code: int = 422) -> None:
        """Stop the job with a message (the WebUI catches exceptions from process(), not from these)."""
        p.img2img_image_conditioning = _raising(message, status_code)
        p.txt2img_image_conditioning = _raising(message, status_code)

    def postprocess(self, p, processed, *args):
        conditioner = getattr(p, "_depth2img_conditioner", None)
        if conditioner is None or not conditioner.args.return_depth:
            return
        depth = conditioner.output_depth()
        if depth is None:
            return
        # Documented position: the depth map is the last image (16-bit for PNG, 8-bit for JPEG/WebP).
        processed.images.append(depth_output_image(depth, _opt("samples_format", "png")))
        processed.infotexts.append("Depth2Img depth map (white = near)")
        if getattr(p, "is_api", False):
            # All 16 bits for API users whatever samples_format is. A new dict: p's is reused by the batch tab
            # and XYZ runs, and this must never reach an image's PNG info.
            extra = {**processed.extra_generation_params, DEPTH_INFO_KEY: png16_base64(depth)}
            processed.extra_generation_params = extra


def no_depth_model_message(checkpoint: str) -> str:
    """Why a Depth2Img job has no depth model, naming the chosen checkpoint when there is one."""
    if not checkpoint:
        return (
            "Depth2Img is enabled but the loaded model is not an SD 2 depth model: load one "
            "(512-depth-ema) or choose a depth checkpoint in the Depth2Img panel"
        )
    info = sd_models.get_closet_checkpoint_match(checkpoint)
    if info is None:
        return (
            f"the depth checkpoint '{checkpoint}' chosen in the Depth2Img panel was not found among the WebUI's "
            "models: choose one from the list (refresh it after adding files to models/Stable-diffusion)"
        )
    if not _is_depth_checkpoint(info.filename):
        return (
            f"the checkpoint '{info.title}' chosen in the Depth2Img panel is not an SD 2 depth model: choose a "
            "depth checkpoint (512-depth-ema)"
        )
    return (
        f"the depth checkpoint '{info.title}' chosen in the Depth2Img panel did not load for this job: see the "
        "console for the WebUI's error"
    )


def _as_pil(value):
    from PIL import Image

    if value is None:
        return None
    if isinstance(value, dict):  # gradio 3 sketch/inpaint editors
        value = value.get("image")
    if value is None or isinstance(value, Image.Image):
        return value
    try:
        import numpy as np

        return Image.fromarray(np.asarray(value))
    except Exception:
        return None


# ---- settings, XYZ axes, API ------------------------------------------------------------------------


def _option(default, label, component=None, component_args=None):
    kwargs = {"section": ("depth2img", "Depth2Img")}
    if "category_id" in inspect.signature(shared.OptionInfo.__init__).parameters:
        kwargs["category_id"] = "sd"  # settings categories (v1.8+): listed under "Stable Diffusion"
    return shared.OptionInfo(default, label, component, component_args, **kwargs)


def on_ui_settings():
    shared.opts.add_option(
        "depth2img_takeover",
        _option(
            True,
            "With a depth model loaded, use Depth2Img's conditioning even when its panel is off "
            "(fp16/OpenCV, device, batch and flat-map fixes)",
        ),
    )
    shared.opts.add_option(
        "depth2img_cache_size",
        _option(8, "Depth maps kept in memory across jobs", gr.Slider, {"minimum": 0, "maximum": 64, "step": 1}),
    )
    shared.opts.add_option(
        "depth2img_max_megapixels",
        _option(
            depthmap.DEFAULT_MAX_PIXELS / 1e6,
            "Largest depth map or estimate-API image accepted, in megapixels (larger ones are refused before "
            "decoding)",
            gr.Slider,
            {"minimum": 1, "maximum": 1024, "step": 1},
        ),
    )


def add_xyz_axes():
    xyz = next((d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is None:
        return

    def setter(field, convert):
        def apply(p, value, _values):
            overrides = dict(getattr(p, "_depth2img_xyz", None) or {})
            overrides[field] = convert(value)
            overrides.setdefault("enabled", True)
            p._depth2img_xyz = overrides

        return apply

    def as_bool(value):
        return str(value).strip().lower() in ("true", "1", "yes", "on")

    axes = [
        xyz.AxisOption(
            "[Depth2Img] Estimator", str, setter("estimator", str), choices=lambda: [e.name for e in list_estimators()]
        ),
        xyz.AxisOption("[Depth2Img] Invert", str, setter("invert", as_bool), choices=lambda: ["False", "True"]),
        xyz.AxisOption("[Depth2Img] Near clip", float, setter("clip_near", float)),
        xyz.AxisOption("[Depth2Img] Far clip", float, setter("clip_far", float)),
        xyz.AxisOption("[Depth2Img] Gamma", float, setter("gamma", float)),
        xyz.AxisOption("[Depth2Img] Blur", float, setter("blur", float)),
        # "lo hi" per cell (space-separated: the grid splits cells at commas); checked by the args schema.
        xyz.AxisOption("[Depth2Img] Depth range", str, setter("depth_range", str)),
    ]
    known = {axis.label for axis in xyz.axis_options}
    xyz.axis_options.extend(axis for axis in axes if axis.label not in known)


RAW_JSON_BODY = Body(...)


def estimate_route(body: dict = RAW_JSON_BODY):  # raw JSON: our validation names the bad field
    try:
        image, settings = parse_estimate_request(body, max_pixels())
        check_estimator(settings.estimator, has_depth_checkpoint=loaded_depth_model() is not None)
        with call_queue.queue_lock:  # the loaded model: never beside a generation or a model reload
            depth = estimate_with_loaded_model(image)
        depth = depthmap.postprocess(depth, **settings.postprocess_kwargs())
        return estimate_response(depth, size=image.size)  # at the input image's size
    except Depth2ImgError as error:
        raise HTTPException(status_code=error.status_code, detail=error.detail) from error


def mount_api(_demo, app: FastAPI):
    app.add_api_route(
        "/depth2img/v1/estimate",
        estimate_route,
        methods=["POST"],
        tags=["depth2img"],
        summary="Estimate a depth map: 16-bit PNG (base64, white = near) at the image's size, and its value range",
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": estimate_request_schema()}}}},
    )
    app.add_api_route(
        "/depth2img/v1/estimators",
        lambda: estimators_response(loaded_depth_model() is not None),
        methods=["GET"],
        tags=["depth2img"],
        summary="Depth estimators and whether each can run now",
    )
    app.add_api_route(
        "/depth2img/v1/checkpoints",
        depth_checkpoint_entries,
        methods=["GET"],
        tags=["depth2img"],
        summary="Depth checkpoints the WebUI knows",
    )


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_before_ui(add_xyz_axes)
script_callbacks.on_before_ui(register_extension_checkpoints)
script_callbacks.on_app_started(mount_api)
