"""What the WebUI script does with the WebUI's objects, without importing the WebUI (`modules.*`).

The script passes in what it has (the processing object `p`, the `images` module, lookup functions) and
keeps only the wiring: registering the script, settings, axes and routes. Tests drive these functions
with small stand-ins of the WebUI's objects.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from . import paths
from .args import Depth2ImgArgs
from .checkpoints import find_checkpoints, inspect_checkpoint_cached
from .depthmap import DEFAULT_MAX_PIXELS
from .host import Depth2ImgError, DepthConditioner, depth_output_image, load_batch_depth, png16_base64

# The init image components of the img2img sub-tabs, in the order of the WebUI's mode index (5 = batch).
INIT_IMAGE_ELEM_IDS = ("img2img_image", "img2img_sketch", "img2maskimg", "inpaint_sketch", "img_inpaint_base")
BATCH_TAB_INDEX = len(INIT_IMAGE_ELEM_IDS)

# The img2img batch tab reads each input with images.read(path) (WebUI v1.9+) and hands the script only the
# image. The recorder puts the path in the image's info so the depth map of the same name can be found;
# the script pops it again before anything could save it. v1.8 opens batch inputs with PIL directly.
BATCH_PATH_KEY = "depth2img_batch_source_path"
BATCH_DEPTH_DIR_NOTE = (
    "a batch-tab folder of depth maps needs WebUI v1.9 or newer (older ones do not tell extensions which "
    "file a batch input came from): update the WebUI, or upload one depth map for all inputs"
)


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
            image.info[BATCH_PATH_KEY] = str(fp)
        return image

    read._depth2img = True
    images_module.read = read
    return True


def pop_batch_sources(p) -> list[str | None]:
    """The recorded source path of each init image (None where unknown), removed from the images' info."""
    return [image.info.pop(BATCH_PATH_KEY, None) for image in getattr(p, "init_images", None) or []]


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


# ---- XYZ grid axes --------------------------------------------------------------------------------

XYZ_OVERRIDES_ATTR = "_depth2img_xyz"


def _as_bool(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def xyz_setter(field: str, convert: Callable):
    """An XYZ axis' apply(p, value, values): records the cell's setting on p (read by the script's args)."""

    def apply(p, value, _values):
        overrides = dict(getattr(p, XYZ_OVERRIDES_ATTR, None) or {})
        overrides[field] = convert(value)
        overrides.setdefault("enabled", True)  # a Depth2Img axis means Depth2Img is on for that cell
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
    ]


# ---- the batch tab, outputs, checkpoints, settings ------------------------------------------------


def batch_depth(settings: Depth2ImgArgs, sources: list, supported: bool, max_pixels: int):
    """(settings, decoded map or None) for a batch-tab input: the map of the same file name in settings.depth_dir.

    Without a map of that name the job estimates, and the log says so.
    """
    if not (settings.enabled and settings.depth_dir):
        return settings, None
    if not supported:
        print(f"[Depth2Img] the depth map folder is not used: {BATCH_DEPTH_DIR_NOTE}")
        return settings, None
    if not (sources and sources[0]):
        return settings, None
    found = load_batch_depth(settings.depth_dir, sources[0], max_pixels)
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
            shutil.copyfile(paths.SHIPPED_DEPTH_CONFIG, path.with_suffix(".yaml"))
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
        "depth2img_max_megapixels",
        DEFAULT_MAX_PIXELS / 1e6,
        "Largest depth map or estimate-API image accepted, in megapixels (larger ones are refused before decoding)",
        {"minimum": 1, "maximum": 1024, "step": 1},
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
        from .tiny import register_tiny_open_clip_arch

        register_tiny_open_clip_arch()
    except Exception as error:
        print(f"[Depth2Img] demo text encoder not registered: {error}")
