"""What the WebUI script does with the WebUI's objects, without importing the WebUI (`modules.*`).

The script passes in what it has (the processing object `p`, the `images` module, lookup functions) and
keeps only the wiring: registering the script, settings, axes and routes. Tests drive these functions
with small stand-ins of the WebUI's objects.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import secrets
import traceback
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from depth2img.base import paths
from depth2img.base.errors import Depth2ImgError
from depth2img.base.files import copy_file_atomic
from depth2img.base.limits import DEFAULT_MAX_PIXELS
from depth2img.checkpoint.load import find_checkpoints, inspect_checkpoint_cached
from depth2img.estimate import registry
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.estimate.interface import DepthEstimator
from depth2img.process.postprocessing import PostprocessScale
from depth2img.process.scale import folder_depth_scale
from depth2img.schema.args import Depth2ImgArgs
from depth2img.source.batch_folder import load_batch_depth
from depth2img.source.encoding import depth_output_image
from depth2img.source.transport import png16_base64
from depth2img.webui.job import DepthConditioner, JobGeometry, decode_depth_argument, job_error

# API responses carry the 16-bit depth PNG (base64) here in info's extra_generation_params (with return_depth),
# whatever the WebUI's samples_format: JPEG/WebP cannot hold it.
DEPTH_INFO_KEY = "Depth2Img depth map"
# ... and what the UI shows as the job's comments (e.g. an uploaded distance map read without its range).
NOTICE_INFO_KEY = "Depth2Img notice"
# The init image components of the img2img sub-tabs, in the order of the WebUI's mode index (5 = batch).
INIT_IMAGE_ELEM_IDS = ("img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base")
BATCH_TAB_INDEX = len(INIT_IMAGE_ELEM_IDS)

# The img2img batch tab reads each input with images.read(path) (WebUI v1.9+) and hands the script only the
# image. The recorder keeps the path on the server, under a random token it puts in the image's info (the
# batch tab copies the image, e.g. by exif_transpose, and a copy keeps its info but not its identity); the
# script pops the token before anything could save it. An uploaded image may carry this key too (a PNG text
# chunk): its value names no recorded token, so no path ever comes from an image's own metadata.
# v1.8 opens batch inputs with PIL directly.
BATCH_PATH_KEY = "depth2img_batch_source_path"
BATCH_PATHS_KEPT = 4096  # tokens of images read but never processed (a batch interrupted) expire oldest first
_BATCH_PATHS: OrderedDict[str, str] = OrderedDict()
BATCH_DEPTH_DIR_NOTE = (
    "a batch-tab folder of depth maps, and one depth scale for the whole folder, need WebUI v1.9 or newer (older "
    "ones do not tell extensions which files the batch tab processes): update the WebUI, or upload one depth map "
    "for all inputs"
)


def record_batch_path(image: Image.Image, path) -> None:
    """Remember the file `image` was read from, under a token in its info that only this process knows."""
    token = secrets.token_hex(16)
    _BATCH_PATHS[token] = str(path)
    while len(_BATCH_PATHS) > BATCH_PATHS_KEPT:
        _BATCH_PATHS.popitem(last=False)
    image.info[BATCH_PATH_KEY] = token


def install_batch_path_recorder(images_module) -> bool:
    """Wrap the WebUI's `images.read` to record each batch input's path; False where the WebUI lacks it (v1.8)."""
    if not hasattr(images_module, "read"):
        return False
    if getattr(images_module.read, "_depth2img", False):
        return True
    original_read = images_module.read

    def read(fp, **kwargs):
        image = original_read(fp, **kwargs)
        if isinstance(fp, (str, Path)) and image is not None:
            record_batch_path(image, fp)
        return image

    read._depth2img = True
    images_module.read = read
    return True


def pop_batch_sources(p) -> list[str | None]:
    """The recorded source path of each init image (None where unknown), the key removed from every image's info.

    A token is looked up, not consumed: the batch tab hands the same image to each of batch_count jobs."""
    tokens = [image.info.pop(BATCH_PATH_KEY, None) for image in getattr(p, "init_images", None) or []]
    return [_BATCH_PATHS.get(token) if isinstance(token, str) else None for token in tokens]


def as_pil(value) -> Image.Image | None:
    """A gradio image value (PIL, numpy, gradio 3's sketch/inpaint dict) as PIL, or None."""
    if isinstance(value, dict):  # gradio 3 sketch/inpaint editors
        value = value.get("image")
    if value is None or isinstance(value, Image.Image):
        return value
    try:
        return Image.fromarray(np.asarray(value))
    except (TypeError, ValueError):
        return None


def pick_init_image(tab_index, images_by_id: dict) -> Image.Image | None:
    """The init image of the img2img sub-tab the user is in (the WebUI's mode index), as PIL or None."""
    index = int(tab_index or 0)
    if index >= BATCH_TAB_INDEX:
        raise Depth2ImgError(
            "the batch tab has no single init image to preview: preview in another img2img tab, or upload a depth map"
        )
    return as_pil(images_by_id.get(INIT_IMAGE_ELEM_IDS[index]))


# ---- estimators --------------------------------------------------------------------------------------

KEEP_ESTIMATOR_SETTING = "depth2img_keep_estimator"
API_FOLDERS_SETTING = "depth2img_api_folders"
NO_DEPTH_MODEL_TO_ESTIMATE = "estimating with checkpoint-midas needs a loaded SD 2 depth model (or upload a depth map)"


def job_estimator(name: str, loaded_midas: Callable, device, dtype) -> DepthEstimator:
    """The estimator called `name` for a job, the preview or the API: for checkpoint-midas the loaded model's own
    MiDaS module (loaded_midas(), never a second copy), otherwise the registry's (a model folder, loaded once on
    `device` in `dtype`; a ControlNet preprocessor, where ControlNet runs it). ValueError saying why when it
    cannot run."""
    if name == CheckpointMidasEstimator.name:
        estimator = loaded_midas()
        if estimator is None:
            raise Depth2ImgError(NO_DEPTH_MODEL_TO_ESTIMATE)
        return estimator
    return registry.create_estimator(name, device=device, dtype=dtype)


def release_estimators(keep: bool) -> None:
    """After a job or request: free the model folders' and ControlNet's estimator weights unless the user keeps
    them (the "keep estimator in memory" setting; VRAM is short in the WebUI). The checkpoint's MiDaS is the
    model's and stays."""
    if not keep:
        registry.release_estimators()


# ---- the job's hooks ------------------------------------------------------------------------------


def attach_conditioning(p, conditioner: DepthConditioner, calls_key: str = "Depth2Img estimator calls") -> None:
    """Make the WebUI call `conditioner` wherever it computes its own depth conditioning for `p`.

    The WebUI calls p.img2img_image_conditioning (img2img, inpaint) and p.txt2img_image_conditioning
    (txt2img, hires fix); with "only masked" inpainting, p.paste_to is the crop the job generates.
    """

    def record(result):
        p.extra_generation_params[calls_key] = conditioner.estimator_calls
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
    for notice in conditioner.notices:  # shown under the result in the UI (the WebUI's job comments)
        p.comment(f"Depth2Img: {notice}")


def stop_job(p, message: str, status_code: int = 422) -> None:
    """Stop the job with a message: the WebUI catches exceptions from process(), not from these hooks."""

    def fail(*_args, **_kwargs):
        raise Depth2ImgError(message, status_code)

    p.img2img_image_conditioning = fail
    p.txt2img_image_conditioning = fail


def no_depth_model_message(checkpoint: str, find_checkpoint: Callable, is_depth_checkpoint: Callable) -> str:
    """Why a Depth2Img job has no depth model, naming the chosen checkpoint when there is one.

    find_checkpoint(name) -> the WebUI's CheckpointInfo or None; is_depth_checkpoint(filename) -> bool.
    """
    if not checkpoint:
        return (
            "Depth2Img is enabled but the loaded model is not an SD 2 depth model: load one "
            "(512-depth-ema) or choose a depth checkpoint in the Depth2Img panel"
        )
    info = find_checkpoint(checkpoint)
    if info is None:
        return (
            f"the depth checkpoint '{checkpoint}' chosen in the Depth2Img panel was not found among the WebUI's "
            "models: choose one from the list (refresh it after adding files to models/Stable-diffusion)"
        )
    if not is_depth_checkpoint(info.filename):
        return (
            f"the checkpoint '{info.title}' chosen in the Depth2Img panel is not an SD 2 depth model: choose a "
            "depth checkpoint (512-depth-ema)"
        )
    return (
        f"the depth checkpoint '{info.title}' chosen in the Depth2Img panel did not load for this job: see the "
        "console for the WebUI's error"
    )


# ---- a mask from a depth band ---------------------------------------------------------------------

# On p: the mask this extension set, and the user's own it replaced (p is reused by the batch tab and XYZ runs).
OWN_MASK_ATTR = "_depth2img_mask"
USERS_MASK_ATTR = "_depth2img_users_mask"
MASK_NOTE_KEY = "Depth2Img mask band"


def users_mask(p):
    """The mask the user (or the batch tab's mask folder) gave this job, never one this extension set on the
    same p for an earlier image; p.image_mask is put back to it. None for plain img2img and txt2img."""
    mask = getattr(p, "image_mask", None)
    if mask is not None and mask is getattr(p, OWN_MASK_ATTR, None):
        mask = getattr(p, USERS_MASK_ATTR, None)
        p.image_mask = mask
    setattr(p, OWN_MASK_ATTR, None)
    return mask


def apply_depth_band_mask(p, conditioner: DepthConditioner, painted, as_webui_reads: Callable) -> None:
    """Give the job the inpainting mask of its depth band as the WebUI's own mask (p.image_mask, at the init
    image's size), before the WebUI's p.init() processes it: the WebUI then blurs it (mask blur), crops to it
    ("only masked"), inverts it ("inpaint not masked": the final mask, as any mask), fills and pastes back as
    for a painted mask, and plain img2img becomes an inpaint job with the tab's inpaint settings.

    painted: the user's mask or None; as_webui_reads(mask) -> L image: the WebUI's create_binary_mask, so the
    strokes (mask_auto) and the combination see the mask the WebUI would.
    """
    if not hasattr(p, "init_images"):
        raise Depth2ImgError(
            "depth2img arg 'mask_from_depth': a mask from a depth band needs an init image; use img2img or inpaint "
            "(txt2img has none)"
        )
    painted_l = as_webui_reads(painted) if painted is not None else None
    mask, note = conditioner.inpaint_mask(painted_l)
    setattr(p, USERS_MASK_ATTR, painted)
    setattr(p, OWN_MASK_ATTR, mask)
    p.image_mask = mask
    p.extra_generation_params[MASK_NOTE_KEY] = note


# ---- the batch tab's one depth scale for the whole folder -----------------------------------------

BATCH_INPUTS_ATTR = "_depth2img_batch_inputs"
BATCH_RANGE_ATTR = "_depth2img_batch_range"
BATCH_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")  # the WebUI's batch tab's (modules/img2img.py)


def install_batch_inputs_recorder(img2img_module) -> None:
    """Wrap the WebUI's img2img.process_batch(p, input, ...) to record on p what the batch tab will process (a
    folder, or v1.10's uploaded files) before its first image: pass 1 of one scale for the whole folder."""
    if getattr(img2img_module.process_batch, "_depth2img", False):
        return
    original = img2img_module.process_batch

    def process_batch(p, inputs, *args, **kwargs):
        setattr(p, BATCH_INPUTS_ATTR, inputs)
        setattr(p, BATCH_RANGE_ATTR, None)
        return original(p, inputs, *args, **kwargs)

    process_batch._depth2img = True
    img2img_module.process_batch = process_batch


def batch_input_paths(p, walk_files: Callable) -> list[Path] | None:
    """The batch tab's inputs for this job as the WebUI lists them, or None outside the batch tab.

    walk_files(folder, allowed_extensions=...): the WebUI's shared.walk_files (what its batch tab lists).
    """
    inputs = getattr(p, BATCH_INPUTS_ATTR, None)
    if inputs is None:
        return None
    if isinstance(inputs, str):
        return [Path(path) for path in walk_files(inputs, allowed_extensions=BATCH_SUFFIXES)]
    return [Path(getattr(item, "name", item)).absolute() for item in inputs]  # v1.10's uploads (temp files)


def batch_depth_scale(
    settings: Depth2ImgArgs, p, walk_files: Callable, depth_of: Callable, progress: Callable | None = None
) -> tuple[Depth2ImgArgs, PostprocessScale | None]:
    """(settings with the whole folder's depth range, the folder's post-processing scale) for batch_depth_scale
    "global" in the batch tab; computed by the first image's job, kept on p for the others. A depth_range the user
    gave wins (post-processing then within it); outside the batch tab there is one image, whose own scale it is:
    (settings, None).

    depth_of(path) -> the input's unprocessed depth map (its depth-folder map, else estimated) or None to leave
    it out; progress(done, total, path).
    """
    if not (settings.enabled and settings.batch_depth_scale == "global") or settings.depth_range is not None:
        return settings, None
    inputs = batch_input_paths(p, walk_files)
    if not inputs:
        return settings, None
    key = (tuple(inputs), tuple(sorted(settings.postprocess_kwargs().items())), settings.depth_dir,
           settings.source, settings.estimator)  # fmt: skip
    cached = getattr(p, BATCH_RANGE_ATTR, None)
    if cached is None or cached[0] != key:
        cached = (key, *folder_depth_scale(inputs, depth_of, settings.postprocess_kwargs(), progress))
        setattr(p, BATCH_RANGE_ATTR, cached)
    _, scale, depth_range = cached
    return dataclasses.replace(settings, depth_range=depth_range), scale


def batch_input_depth(
    path: Path, settings: Depth2ImgArgs, read_image: Callable, estimate: Callable, max_pixels: int,
    uploaded: Callable,
):  # fmt: skip
    """One batch input's unprocessed depth map for the folder's scale, as its job will take it: its map in
    settings.depth_dir, else the uploaded map (one for all; uploaded() -> it decoded, once for the whole pass),
    else estimate(read_image(path)); None (said in the log) when the input cannot be read."""
    if settings.depth_dir:
        found = load_batch_depth(settings.depth_dir, path, max_pixels, **settings.decode_kwargs())
        if found is not None:
            return found[1].depth
    if settings.source == "upload":
        return uploaded().depth
    try:
        image = read_image(path)
    except OSError as error:  # the WebUI's batch skips it too
        print(f"[Depth2Img] batch input {path} left out of the folder's depth scale: {error}")
        return None
    return estimate(image)


def folder_scale_for_job(
    settings: Depth2ImgArgs, p, *, supported: bool, read_image: Callable, estimate: Callable, walk_files: Callable,
    state, max_pixels: int,
) -> tuple[Depth2ImgArgs, PostprocessScale | None]:
    """The batch tab's "one depth scale for the whole folder" for this job (batch_depth_scale: batch_depth_scale()'s
    settings and post-processing scale), its pass 1's
    progress in the WebUI's status text (state.textinfo), which is the WebUI's own again afterwards.

    read_image(path) -> PIL as the batch tab reads its inputs; estimate(image) -> depth with the job's estimator.
    """
    if settings.batch_depth_scale == "global" and not supported:
        print(f"[Depth2Img] one depth scale for the whole folder is not used: {BATCH_DEPTH_DIR_NOTE}")
        return settings, None

    @functools.cache
    def uploaded():  # one map for all inputs: decoded once for the whole pass
        return decode_depth_argument(settings.depth_image, max_pixels, **settings.decode_kwargs())

    def depth_of(path):
        return batch_input_depth(path, settings, read_image, estimate, max_pixels, uploaded)

    def progress(done, total, path):
        state.textinfo = f"Depth2Img: depth scale of the folder, input {done + 1} of {total}"

    try:
        return batch_depth_scale(settings, p, walk_files, depth_of, progress)
    finally:
        if (state.textinfo or "").startswith("Depth2Img:"):
            state.textinfo = None  # pass 1 is over: the WebUI's own status again


# ---- XYZ grid axes --------------------------------------------------------------------------------

XYZ_OVERRIDES_ATTR = "_depth2img_xyz"


def _as_bool(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def xyz_setter(field: str, convert: Callable, *, turns_on: tuple[str, ...] = ()):
    """An XYZ axis' apply(p, value, values): records the cell's setting on p (read by the script's args).
    turns_on: settings the axis implies (a band axis means the mask from a depth band is on)."""

    def apply(p, value, _values):
        overrides = dict(getattr(p, XYZ_OVERRIDES_ATTR, None) or {})
        overrides[field] = convert(value)
        for implied in ("enabled", *turns_on):  # a Depth2Img axis means Depth2Img is on for that cell
            overrides.setdefault(implied, True)
        setattr(p, XYZ_OVERRIDES_ATTR, overrides)

    return apply


def xyz_axes(estimator_names: Callable[[], list[str]]) -> list[tuple]:
    """(label, type, apply, choices or None) of each axis, for the WebUI's xyz_grid.AxisOption."""
    return [
        ("[Depth2Img] Estimator", str, xyz_setter("estimator", str), estimator_names),
        ("[Depth2Img] Invert", str, xyz_setter("invert", _as_bool), lambda: ["False", "True"]),
        ("[Depth2Img] Near clip", float, xyz_setter("clip_near", float), None),
        ("[Depth2Img] Far clip", float, xyz_setter("clip_far", float), None),
        ("[Depth2Img] Gamma", float, xyz_setter("gamma", float), None),
        ("[Depth2Img] Blur", float, xyz_setter("blur", float), None),
        # "lo hi" per cell (space-separated: the grid splits cells at commas); checked by the args schema.
        ("[Depth2Img] Depth range", str, xyz_setter("depth_range", str), None),
        ("[Depth2Img] Mask band low", float, xyz_setter("mask_low", float, turns_on=("mask_from_depth",)), None),
        ("[Depth2Img] Mask band high", float, xyz_setter("mask_high", float, turns_on=("mask_from_depth",)), None),
    ]


# ---- the batch tab, outputs, checkpoints, settings ------------------------------------------------


def batch_depth(settings: Depth2ImgArgs, sources: list, supported: bool, max_pixels: int):
    """(settings, decoded map or None) for a batch-tab input: the map of the same file name in settings.depth_dir,
    read as the panel says (depth kind, distance range, EXR channel).

    Without a map of that name the job estimates, and the log says so.
    """
    if not (settings.enabled and settings.depth_dir):
        return settings, None
    if not supported:
        print(f"[Depth2Img] the depth map folder is not used: {BATCH_DEPTH_DIR_NOTE}")
        return settings, None
    if not (sources and sources[0]):
        return settings, None
    found = load_batch_depth(settings.depth_dir, sources[0], max_pixels, **settings.decode_kwargs())
    if found is None:
        print(f"[Depth2Img] no depth map for {sources[0]} in {settings.depth_dir}: estimating")
        return settings, None
    depth_path, depth = found
    # The decoded map goes in as depth=; depth_image names the file (infotext skips it).
    return dataclasses.replace(settings, source="upload", depth_image=str(depth_path)), depth


def append_depth_output(p, processed, samples_format: str, info_key: str) -> None:
    """With return_depth: the depth map used, as the last image (16-bit for PNG, 8-bit for JPEG/WebP).

    API callers also get all 16 bits as base64 under info_key in the info's extra_generation_params.
    """
    conditioner = getattr(p, "_depth2img_conditioner", None)
    if conditioner is None or not conditioner.args.return_depth:
        return
    depth = conditioner.output_depth()
    if depth is None:
        return
    processed.images.append(depth_output_image(depth, samples_format))
    processed.infotexts.append("Depth2Img depth map (white = near)")
    if getattr(p, "is_api", False):
        # A new dict: p's is reused by the batch tab and XYZ runs, and this must never reach an image's PNG info.
        processed.extra_generation_params = {**processed.extra_generation_params, info_key: png16_base64(depth)}


def add_api_notices(p, processed, info_key: str) -> None:
    """API jobs: the notices the UI shows as comments (which the API's info lacks), under info_key in the info's
    extra_generation_params (a new dict: never in an image's PNG info)."""
    conditioner = getattr(p, "_depth2img_conditioner", None)
    if conditioner is None or not conditioner.notices or not getattr(p, "is_api", False):
        return
    processed.extra_generation_params = {**processed.extra_generation_params, info_key: " ".join(conditioner.notices)}


def checkpoints_to_register(known_filenames, is_depth_checkpoint: Callable) -> list[Path]:
    """Depth checkpoints in this extension's models/Stable-diffusion the WebUI does not list yet.

    Only that folder: the CLI's embedded demo checkpoint (models/demo, random weights) is no user's model.
    Each gets the shipped config beside it where it has none (the WebUI reads <checkpoint>.yaml).
    """
    known = {Path(name) for name in known_filenames}
    found = []
    for path in find_checkpoints(paths.USER_CHECKPOINT_DIR):
        if path in known or not is_depth_checkpoint(path):
            continue
        if not path.with_suffix(".yaml").exists():
            copy_file_atomic(paths.SHIPPED_DEPTH_CONFIG, path.with_suffix(".yaml"))
        found.append(path)
    return found


# (name, default, label, slider range or None): the WebUI's settings, in its "Depth2Img" section.
SETTINGS = (
    (
        "depth2img_takeover",
        True,
        "With a depth model loaded, use Depth2Img's conditioning even when its panel is off "
        "(fp16/OpenCV, device, batch and flat-map fixes)",
        None,
    ),
    ("depth2img_cache_size", 8, "Depth maps kept in memory across jobs", {"minimum": 0, "maximum": 64, "step": 1}),
    (
        KEEP_ESTIMATOR_SETTING,
        False,
        "Keep the estimator in memory between jobs (model folders, ControlNet's preprocessors; off: loaded for "
        "each job and freed after it. The depth checkpoint's own MiDaS is part of the model and always stays)",
        None,
    ),
    (
        "depth2img_max_megapixels",
        DEFAULT_MAX_PIXELS / 1e6,
        "Largest depth map or estimate-API image accepted, in megapixels (larger ones are refused before decoding)",
        {"minimum": 1, "maximum": 1024, "step": 1},
    ),
    (
        API_FOLDERS_SETTING,
        False,
        "Let API requests name a depth map folder on this server (depth_dir; never with --hide-ui-dir-config). "
        "Off: only the img2img batch tab reads one",
        None,
    ),
)


def is_depth_checkpoint(path) -> bool:
    """Whether the file is an SD 2 depth checkpoint; a bad file is logged and counts as not one."""
    try:
        return inspect_checkpoint_cached(path).is_depth_model
    except Exception as error:  # a bad file must not break the WebUI's model list
        print(f"[Depth2Img] skipped {path}: {error}")
        return False


def register_demo_text_arch() -> None:
    """Teach open_clip the tiny arch the embedded demo/test checkpoint names; never blocks the WebUI."""
    try:
        # Inside the try: whatever the import meets (open_clip's registry) must not stop the WebUI from starting.
        from depth2img.export.tiny import register_tiny_open_clip_arch

        register_tiny_open_clip_arch()
    except Exception as error:
        print(f"[Depth2Img] demo text encoder not registered: {error}")


# ---- one job, from the script's process() ------------------------------------------------------------


def check_depth_dir_allowed(settings: Depth2ImgArgs, *, is_api: bool, api_folders: bool, dirs_hidden: bool) -> None:
    """A depth folder is a server path: honoured for the batch tab's own jobs; over the API only where the owner's
    setting allows it; never with --hide-ui-dir-config (the WebUI's switch for "no server folders from the UI")."""
    if not (settings.enabled and settings.depth_dir):
        return
    if dirs_hidden:
        raise Depth2ImgError(
            "depth2img arg 'depth_dir': this WebUI does not take server folders (--hide-ui-dir-config): "
            "upload a depth map (depth_image) instead"
        )
    if is_api and not api_folders:
        raise Depth2ImgError(
            "depth2img arg 'depth_dir': API requests may not name server folders (off in the server's Settings, "
            "Depth2Img, 'Let API requests name a depth map folder'): upload a depth map (depth_image) instead"
        )


def check_estimator_name(name: str) -> None:
    try:
        registry.get_estimator_info(name)
    except ValueError as error:
        raise Depth2ImgError(f"depth2img arg 'estimator': {error}") from error


def checkpoint_for_job(p, settings: Depth2ImgArgs, has_depth_model: bool, find_checkpoint: Callable) -> None:
    """Without a depth model loaded, the panel's depth checkpoint is loaded for this job only: the WebUI loads
    it from p.override_settings and restores the user's model afterwards. Anything wrong is left for
    process() to say (the WebUI only logs exceptions from before_process)."""
    if not (settings.enabled and settings.checkpoint) or has_depth_model:
        return
    info = find_checkpoint(settings.checkpoint)
    if info is not None and is_depth_checkpoint(info.filename):
        p.override_settings["sd_model_checkpoint"] = info.title
        p.override_settings_restore_afterwards = True


def start_job(p, settings: Depth2ImgArgs, painted, *, depth, binary_mask: Callable, **conditioner_kwargs) -> None:
    """The job's depth conditioning (and mask from a depth band) in place of the WebUI's; its infotext.

    painted: the user's own mask (users_mask), binary_mask(mask) -> the mask as the WebUI reads painted ones;
    conditioner_kwargs: DepthConditioner's estimator, cache, background, max_pixels.
    """
    is_img2img = hasattr(p, "init_images")
    conditioner = DepthConditioner(
        settings,
        JobGeometry(p.width, p.height, getattr(p, "resize_mode", 0)),
        init_images=list(p.init_images) if is_img2img and p.init_images else None,
        depth=depth,
        **conditioner_kwargs,
    )
    if settings.mask_from_depth:
        apply_depth_band_mask(p, conditioner, painted, binary_mask)
    attach_conditioning(p, conditioner)
    if settings.enabled:
        p.extra_generation_params.update(settings.to_infotext())


def stop_job_for(p, error: Exception) -> None:
    """Stop the job over an error from process(): anything escaping it is only logged by the WebUI, which then
    generates without our hooks (the user's depth map ignored; txt2img fails on 5 vs 9 channels)."""
    stop = job_error(error)
    if stop.status_code >= 500:
        traceback.print_exc()
    stop_job(p, str(stop), stop.status_code)


# ---- the WebUI's model, settings and X/Y/Z grid -----------------------------------------------------


def loaded_model_estimator(sd_model, device) -> CheckpointMidasEstimator | None:
    """The loaded model's own MiDaS as an estimator (never a copy), or None when it is not a depth model."""
    depth_model = getattr(sd_model, "depth_model", None)
    if depth_model is None:
        return None
    info = getattr(sd_model, "sd_checkpoint_info", None)
    key = getattr(info, "shorthash", None) or getattr(info, "filename", "loaded")
    # --lowvram/--medvram keep weights on the CPU and move the module on call: compute where it will run.
    execution_device = device if getattr(sd_model, "lowvram", False) else None
    return CheckpointMidasEstimator.from_module(depth_model, cache_key=str(key), execution_device=execution_device)


def add_settings(opts, option_info, slider) -> None:
    """SETTINGS in the WebUI's Settings, section "Depth2Img" (category "Stable Diffusion" where it has them)."""
    kwargs = {"section": ("depth2img", "Depth2Img")}
    if "category_id" in inspect.signature(option_info.__init__).parameters:
        kwargs["category_id"] = "sd"  # settings categories (v1.8+)
    for name, default, label, slider_range in SETTINGS:
        opts.add_option(name, option_info(default, label, slider if slider_range else None, slider_range, **kwargs))


def add_xyz_axes(xyz, estimator_names: Callable[[], list[str]]) -> None:
    """Our axes in the X/Y/Z grid script's list (once: the WebUI may build its UI again)."""
    axes = [
        xyz.AxisOption(label, kind, apply, choices=choices) if choices else xyz.AxisOption(label, kind, apply)
        for label, kind, apply, choices in xyz_axes(estimator_names)
    ]
    known = {axis.label for axis in xyz.axis_options}
    xyz.axis_options.extend(axis for axis in axes if axis.label not in known)
