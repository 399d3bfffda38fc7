"""AUTOMATIC1111 WebUI adapter (v1.8-v1.10): wiring only; the logic lives in the `depth2img` package.

One AlwaysVisible script (title "Depth2Img", API key `depth2img`) in txt2img and img2img; API routes under
/depth2img/v1/; settings; infotext; XYZ-grid axes. All of it exists from v1.8.0 except `images.read` (v1.9),
which the batch tab's depth folder needs: feature-detected, and said in the panel and the log.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
from fastapi import Body, FastAPI, HTTPException, Response
from modules import call_queue, devices, images, processing, script_callbacks, scripts, sd_models, shared
from modules.ui_components import InputAccordion
from PIL import ImageOps

from depth2img.base import limits
from depth2img.base.errors import Depth2ImgError
from depth2img.estimate import registry
from depth2img.estimate.cache import DepthCache
from depth2img.estimate.folders import add_estimator_dir
from depth2img.estimate.registry import list_estimators
from depth2img.panel.builder import build_depth_panel, infotext_key, js_kwargs
from depth2img.schema.args import Depth2ImgArgs, requested_enabled
from depth2img.webui import batch as webui_batch
from depth2img.webui import estimators as webui_estimators
from depth2img.webui import host as webui_host
from depth2img.webui import init_image as webui_init_image
from depth2img.webui import job, route_auth
from depth2img.webui import job_checkpoint as webui_job_checkpoint
from depth2img.webui import job_hooks as webui_job_hooks
from depth2img.webui import options as webui_options
from depth2img.webui import outputs as webui_outputs
from depth2img.webui import routes as api
from depth2img.webui.job import job_error
from depth2img.webui.panel_rows import build_webui_rows

USE_LOADED_MODEL = "Use the loaded model"
CACHE = DepthCache()


def _opt(name: str, default):
    # getattr: the WebUI's opts fall back to an option's registered default when config.json lacks it.
    return getattr(shared.opts, name, default)


def max_pixels() -> int:
    return int(float(_opt("depth2img_max_megapixels", limits.DEFAULT_MAX_PIXELS / 1e6)) * 1_000_000)


def dirs_hidden() -> bool:  # --hide-ui-dir-config: no server folders named from the UI or the API
    return bool(getattr(shared.cmd_opts, "hide_ui_dir_config", False))


def background_color() -> str:
    return _opt("img2img_background_color", "#ffffff")


# ---- model facts ---------------------------------------------------------------------------------

def selected_checkpoint():
    """The CheckpointInfo of the sd_model_checkpoint option; None when none is chosen (the WebUI's lookup would
    take an empty name for the first model)."""
    name = getattr(shared.opts, "sd_model_checkpoint", None)
    return sd_models.get_closet_checkpoint_match(name) if name else None


# AUTOMATIC1111 or Forge: where the depth model and its MiDaS are (depth2img.webui.host).
HOST = webui_host.current_host(
    sd_model=lambda: shared.sd_model,
    selected_checkpoint=selected_checkpoint,
    device=lambda: devices.device,
    dtype=lambda: devices.dtype,
)


def has_depth_model() -> bool:  # the model jobs run (now, or on Forge at the next job's start) is a depth model
    return HOST.has_depth_model()


def loaded_estimator():
    return HOST.depth_estimator()


def estimator_named(name: str):
    """The estimator a job or request runs (the loaded model's MiDaS for checkpoint-midas, never a copy)."""
    return webui_estimators.job_estimator(name, loaded_estimator, devices.device, devices.dtype)


def release_estimators() -> None:
    webui_estimators.release_estimators(keep=bool(_opt(webui_options.KEEP_ESTIMATOR_SETTING, False)))


def estimate_holding_the_lock(image, estimator: str):
    """Depth of one PIL image (preview, API) through the shared cache; the caller holds the WebUI's queue_lock:
    no network runs beside a generation or a model reload (--lowvram/--medvram move modules on call)."""
    try:
        return job.estimate_image(estimator_named(estimator), CACHE, image, background_color())
    finally:
        release_estimators()


def estimate_outside_a_job(image, estimator: str):
    with call_queue.queue_lock:
        return estimate_holding_the_lock(image, estimator)


def register_extension_checkpoints() -> None:
    """Depth checkpoints in this extension's models/Stable-diffusion join the WebUI's model list."""
    known = [info.filename for info in sd_models.checkpoints_list.values()]
    for path in webui_job_checkpoint.checkpoints_to_register(known, webui_job_checkpoint.is_depth_checkpoint):
        sd_models.CheckpointInfo(str(path)).register()


def depth_checkpoint_entries() -> list[dict]:
    register_extension_checkpoints()  # again: the WebUI's "refresh" rebuilds its list without them
    return api.checkpoints_response([(info.title, info.filename) for info in sd_models.checkpoints_list.values()])


webui_job_checkpoint.register_demo_text_arch()
# An estimator is a registered name, or a model folder inside the model folders: API callers are strangers.
registry.restrict_to_model_folders()
# Estimator folders in the WebUI's models/depth too (besides the extension's own models/depth).
add_estimator_dir(Path(shared.models_path) / "depth")
# Batch inputs' paths (v1.9+'s images.read), to match each input with its depth map by file name.
BATCH_DEPTH_DIR_SUPPORTED = webui_batch.install_batch_path_recorder(images)
if not BATCH_DEPTH_DIR_SUPPORTED:
    print(f"[Depth2Img] {webui_batch.BATCH_DEPTH_DIR_NOTE}")


def install_batch_inputs_recorder():
    """What the batch tab will process, recorded before its first image (one depth scale for the folder).
    From before_ui: modules.img2img imports the WebUI's UI module, too early for a script's import."""
    if BATCH_DEPTH_DIR_SUPPORTED:
        import modules.img2img

        webui_batch.install_batch_inputs_recorder(modules.img2img)


# ---- the script ----------------------------------------------------------------------------------


def estimate_for_preview(image, estimator: str):
    """The panel's estimate callback, with the panel's estimator."""
    api.check_estimator(estimator, has_depth_checkpoint=has_depth_model())
    return estimate_outside_a_job(image, estimator)


class Depth2ImgScript(scripts.Script):
    def __init__(self):
        super().__init__()
        self.init_images = webui_host.InitImageComponents()

    def title(self):
        return "Depth2Img"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_component(self, component, **kwargs):
        self.init_images.saw(component, kwargs.get("elem_id"), kwargs.get("elem_classes"))

    def ui(self, is_img2img):
        tab = "img2img" if is_img2img else "txt2img"
        with InputAccordion(False, label="Depth2Img", elem_id=f"depth2img_{tab}") as enabled:
            # The panel both hosts show (depth2img.panel.builder); below it what only the WebUI has.
            # img2img also makes inpainting masks from a depth band; txt2img has no image to mask.
            extras = ("depth_range", "mask") if is_img2img else ("depth_range",)
            panel = build_depth_panel(
                f"depth2img_{tab}", has_init_image=is_img2img, max_pixels=max_pixels, extras=extras,
                mask_over_image=True,
            )  # fmt: skip
            rows = build_webui_rows(
                f"depth2img_{tab}", is_img2img, [USE_LOADED_MODEL, *(c["title"] for c in depth_checkpoint_entries())],
                BATCH_DEPTH_DIR_SUPPORTED, webui_batch.BATCH_DEPTH_DIR_NOTE,
                dirs_hidden=dirs_hidden(),
            )  # fmt: skip
            preview_tab = rows.pop("preview_tab")
        if is_img2img:
            found, strokes = self.init_images.by_id, self.init_images.strokes_by_id
            image_ids = [i for i in webui_init_image.INIT_IMAGE_ELEM_IDS if i in found]
            stroke_ids = [i for i in image_ids if i in strokes]  # Forge's sketch canvases
            image_inputs = {
                "tab_index": preview_tab, **{i: found[i] for i in image_ids},
                **{f"{i}_strokes": strokes[i] for i in stroke_ids},
            }  # fmt: skip

            def pick(tab_index, *values):
                pictures, drawn = values[: len(image_ids)], values[len(image_ids) :]
                return webui_init_image.pick_init_image(
                    tab_index, dict(zip(image_ids, pictures, strict=True)), dict(zip(stroke_ids, drawn, strict=True))
                )

            panel.wire_preview(
                estimate_for_preview, image_inputs=image_inputs, pick_image=pick, **js_kwargs("depth2img_preview_args")
            )
        else:
            panel.wire_preview(estimate_for_preview)
        self.infotext_fields = [(enabled, infotext_key("enabled")), *panel.infotext_fields]
        self.paste_field_names = [name for _, name in self.infotext_fields]
        # Depth2ImgArgs' field order: the positional API list and the UI agree.
        if is_img2img:  # after the mask settings: txt2img's list ends before them
            self.infotext_fields.append((rows["batch_depth_scale"], infotext_key("batch_depth_scale")))
            self.paste_field_names.append(infotext_key("batch_depth_scale"))
        return panel.in_schema_order({"enabled": enabled, **rows})

    # -- generation --
    def _args(self, p, args) -> Depth2ImgArgs:
        values = list(args)
        if len(values) > 10 and values[10] == USE_LOADED_MODEL:
            values[10] = ""
        parsed = Depth2ImgArgs.from_request(values)
        overrides = getattr(p, webui_options.XYZ_OVERRIDES_ATTR, None)
        return dataclasses.replace(parsed, **overrides) if overrides else parsed

    def before_process(self, p, *args):
        try:
            find = sd_models.get_closet_checkpoint_match
            webui_job_checkpoint.checkpoint_for_job(p, self._args(p, args), has_depth_model(), find)
        except Exception:
            return  # the WebUI only logs exceptions from here: process() checks the same and stops the job

    def process(self, p, *args):
        p._depth2img_conditioner = None  # p is reused by the batch tab and XYZ: nothing from the last run
        try:
            self._prepare(p, args)
        except Exception as error:
            webui_job_hooks.stop_job_for(p, error)

    def _enabled(self, p, args) -> bool:
        """Whether this job turns Depth2Img on (its args, or an XYZ cell's), before the rest is parsed."""
        overrides = getattr(p, webui_options.XYZ_OVERRIDES_ATTR, None) or {}
        return bool(overrides.get("enabled", requested_enabled(list(args))))

    def _prepare(self, p, args) -> None:
        painted = webui_job_hooks.users_mask(p)  # first: a mask of ours from this p's last image is no user's
        sources = webui_batch.pop_batch_sources(p)  # always: the key never stays in an image's info
        is_depth_model = has_depth_model()
        if not self._enabled(p, args):
            # Panel off: the WebUI's own job, whatever the other widgets hold; with a depth model, the takeover
            # runs the native estimate with our fixes, on the defaults (always on Forge: it has no depth path).
            if is_depth_model and (_opt("depth2img_takeover", True) or not HOST.has_native_depth):
                self._start(p, Depth2ImgArgs(), painted, depth=None)
            return
        settings = self._args(p, args)
        webui_job_hooks.check_estimator_name(settings.estimator)
        webui_job_hooks.check_depth_dir_allowed(
            settings, is_api=bool(getattr(p, "is_api", False)),
            api_folders=bool(_opt(webui_options.API_FOLDERS_SETTING, False)), dirs_hidden=dirs_hidden(),
        )  # fmt: skip
        settings, folder_scale = self._batch_depth_scale(p, settings)
        settings, batch_depth = webui_batch.batch_depth(settings, sources, BATCH_DEPTH_DIR_SUPPORTED, max_pixels())
        if not is_depth_model:
            find = sd_models.get_closet_checkpoint_match
            is_depth = webui_job_checkpoint.is_depth_checkpoint
            raise Depth2ImgError(webui_job_checkpoint.no_depth_model_message(settings.checkpoint, find, is_depth))
        self._start(p, settings, painted, depth=batch_depth, postprocess_scale=folder_scale)

    def _start(self, p, settings: Depth2ImgArgs, painted, depth, postprocess_scale=None) -> None:
        CACHE.max_entries = int(_opt("depth2img_cache_size", 8))
        round_mask = getattr(p, "mask_round", True)
        webui_job_hooks.start_job(
            p, settings, painted, depth=depth, cache=CACHE, background=background_color(),
            postprocess_scale=postprocess_scale,
            max_pixels=max_pixels(), binary_mask=lambda mask: processing.create_binary_mask(mask, round=round_mask),
            estimator=None if settings.source == "upload" else estimator_named(settings.estimator),
        )  # fmt: skip

    def _batch_depth_scale(self, p, settings: Depth2ImgArgs):
        def estimate(image):  # inside the job: the WebUI holds its queue lock
            return job.estimate_image(estimator_named(settings.estimator), CACHE, image, background_color())

        return webui_batch.folder_scale_for_job(
            settings, p, supported=BATCH_DEPTH_DIR_SUPPORTED, max_pixels=max_pixels(), estimate=estimate,
            read_image=lambda path: ImageOps.exif_transpose(images.read(path)),  # as the batch tab reads its inputs
            walk_files=shared.walk_files, state=shared.state,
        )  # fmt: skip

    def postprocess(self, p, processed, *args):
        webui_outputs.append_depth_output(p, processed, _opt("samples_format", "png"), webui_outputs.DEPTH_INFO_KEY)
        webui_outputs.add_api_notices(p, processed, webui_outputs.NOTICE_INFO_KEY)
        release_estimators()


# ---- settings, XYZ axes, API ------------------------------------------------------------------------


def on_ui_settings():
    webui_options.add_settings(shared.opts, shared.OptionInfo, gr.Slider)


def add_xyz_axes():
    xyz = next((d.module for d in scripts.scripts_data if d.script_class.__module__ == "xyz_grid.py"), None)
    if xyz is not None:
        webui_options.add_xyz_axes(xyz, lambda: [e.name for e in list_estimators()])


RAW_JSON_BODY = Body(...)


def _http_errors(answer):
    """A route from answer(body): the core's ValueErrors are 422 with their message, anything else 500."""

    def route(body: dict = RAW_JSON_BODY):  # raw JSON: our validation names the bad field
        try:
            return answer(body)
        except Exception as error:
            failure = job_error(error)
            if failure.status_code >= 500:
                traceback.print_exc()
            raise HTTPException(status_code=failure.status_code, detail=failure.detail) from error

    return route


# An upload's whole life is under the queue lock: decoding, estimating, and the answer serialized to its JSON
# bytes. One request's pixels at a time, then, so N concurrent maximal uploads hold N request bodies and N answers'
# bytes but one decode (README, "On a shared server"; bench/bench_hostile.py measures it). Each answer is built
# in a function called under the lock, so its decoded arrays are freed before the lock is released.
# That work runs on one thread of its own: glibc's malloc keeps freed memory in the arena of the thread that used
# it, so uploads served by FastAPI's many pool threads one after another would each leave a decode's worth behind
# (measured: 8 serialized 64 MP estimates grew the WebUI by 6.5 GB; on one thread by 3.1 GB, one alone 2.5 GB).
ROUTE_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="depth2img-upload")


def _json_response(answer: dict) -> Response:
    # FastAPI would serialize a returned dict outside the lock, holding its base64 text, the JSON text and the bytes.
    return Response(content=json.dumps(answer).encode(), media_type="application/json")


def _estimate_answer(body: dict) -> Response:
    request = api.parse_estimate_request(body, max_pixels())
    if request.image is not None:
        api.check_estimator(request.settings.estimator, has_depth_checkpoint=has_depth_model())
    return _json_response(api.answer_estimate_request(request, estimate_holding_the_lock))  # at the image's size


def _mask_answer(body: dict) -> Response:
    request = api.parse_mask_request(body, max_pixels())
    depth = request.depth
    if depth is None:
        api.check_estimator(request.args.estimator, has_depth_checkpoint=has_depth_model())
        depth = estimate_holding_the_lock(request.image, request.args.estimator)
    return _json_response(api.mask_response(request, depth))


@_http_errors
def estimate_route(body: dict):
    with call_queue.queue_lock:
        return ROUTE_WORKER.submit(_estimate_answer, body).result()


@_http_errors
def mask_route(body: dict):
    with call_queue.queue_lock:
        return ROUTE_WORKER.submit(_mask_answer, body).result()


def _body_schema(schema: dict) -> dict:
    return {"requestBody": {"content": {"application/json": {"schema": schema}}}}


def mount_api(_demo, app: FastAPI):
    schema = _body_schema(api.estimate_request_schema())
    routes = [
        ("estimate", estimate_route, "POST", "Estimate a depth map: 16-bit PNG (base64, white = near) at the image's size, and its value range", schema),  # noqa: E501
        ("mask", mask_route, "POST", "An inpainting mask from a depth band: 8-bit PNG (base64, white = repaint) at the image's size", _body_schema(api.mask_request_schema())),  # noqa: E501
        ("estimators", lambda: api.estimators_response(has_depth_model()), "GET", "Depth estimators and whether each can run now", None),  # noqa: E501
        ("checkpoints", depth_checkpoint_entries, "GET", "Depth checkpoints the WebUI knows", None),
    ]  # fmt: skip
    # --api-auth: the WebUI's own check on each route (its Api is built before app_started callbacks run).
    auth = route_auth.auth_dependencies(app.routes, getattr(shared.cmd_opts, "api_auth", None))
    for name, endpoint, method, summary, extra in routes:
        path = f"/depth2img/v1/{name}"
        app.add_api_route(
            path, endpoint, methods=[method], tags=["depth2img"], summary=summary, openapi_extra=extra,
            dependencies=auth,
        )  # fmt: skip


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_before_ui(add_xyz_axes)
script_callbacks.on_before_ui(register_extension_checkpoints)
script_callbacks.on_before_ui(install_batch_inputs_recorder)
script_callbacks.on_app_started(mount_api)
