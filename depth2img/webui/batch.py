"""The img2img batch tab: which file each input was read from, its map in a depth folder, and the one depth
scale for the whole folder (pass 1 over every input before the first job).
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from depth2img.process.postprocessing import PostprocessScale
from depth2img.process.scale import folder_depth_scale
from depth2img.schema.args import Depth2ImgArgs
from depth2img.source.batch_folder import load_batch_depth
from depth2img.webui.job import decode_depth_argument

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
