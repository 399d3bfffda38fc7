"""The HTTP API's logic, host-agnostic: validate a request body, shape the answers.

The WebUI script mounts these as FastAPI routes under /depth2img/v1/ and runs the estimator itself (under its
own lock); errors are Depth2ImgError with status 422 and a message naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from depth2img.base import limits
from depth2img.base.errors import Depth2ImgError
from depth2img.checkpoint.load import inspect_checkpoint_cached
from depth2img.estimate.registry import get_estimator_info, list_estimators
from depth2img.process import fitting, masks, postprocessing
from depth2img.schema.args import ArgsError, Depth2ImgArgs, json_schema
from depth2img.source import decoding, depth_kinds
from depth2img.source.transport import decode_base64, png16_base64, png_base64
from depth2img.webui.job import decode_depth_argument

logger = logging.getLogger(__name__)

# The estimate route's settings: the args schema's estimator, upload-reading and post-processing fields; with the
# picture to estimate from (`image`) or an uploaded depth map to read (`depth_image`: EXR, distance maps, ...).
ESTIMATE_SETTINGS = (
    "estimator", "depth_kind", "distance_range", "exr_channel", "invert", "clip_near", "clip_far", "gamma", "blur",
)  # fmt: skip
ESTIMATE_FIELDS = ("image", "depth_image", *ESTIMATE_SETTINGS)


@dataclass
class EstimateRequest:
    """A POST /depth2img/v1/estimate body, validated: one of image / depth, and the settings."""

    settings: Depth2ImgArgs
    image: Any = None  # PIL image to estimate from (settings.estimator), fully decoded
    depth: depth_kinds.DecodedDepth | None = None  # or the uploaded depth map, read with the settings' depth kind

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) the answer has: the picture's, or the uploaded map's."""
        if self.image is not None:
            return self.image.size
        return self.depth.depth.shape[1], self.depth.depth.shape[0]


def estimate_request_schema() -> dict[str, Any]:
    """JSON Schema of POST /depth2img/v1/estimate's body, from the one args schema (for the OpenAPI page)."""
    schema = json_schema(("depth_image", *ESTIMATE_SETTINGS))
    schema["properties"] = {
        "image": {"type": "string", "description": "base64 image to estimate depth from (data URL accepted)"},
        **schema["properties"],
    }
    schema["properties"]["depth_image"]["description"] = (
        "instead of image: a base64 depth map (PNG, TIFF, .npy, EXR) to read as depth_kind says"
    )
    schema["properties"]["estimator"]["enum"] = [entry.name for entry in list_estimators()]
    schema["oneOf"] = [{"required": ["image"]}, {"required": ["depth_image"]}]
    return schema


def parse_estimate_request(body: Any, max_pixels: int = limits.DEFAULT_MAX_PIXELS) -> EstimateRequest:
    """A POST /depth2img/v1/estimate body, validated and decoded; Depth2ImgError (422) naming the bad field."""
    if not isinstance(body, dict):
        raise Depth2ImgError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(ESTIMATE_FIELDS))
    if unknown:
        raise Depth2ImgError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(ESTIMATE_FIELDS)}")
    settings = {k: v for k, v in body.items() if k not in ("image", "depth_image") and v is not None}
    try:
        args = Depth2ImgArgs.from_dict(settings)
    except ArgsError as error:
        raise Depth2ImgError(str(error).replace("depth2img arg", "field")) from error
    given = [field for field in ("image", "depth_image") if body.get(field) is not None]
    if len(given) != 1:
        raise Depth2ImgError(
            "field 'image' is required: a base64-encoded image to estimate depth from (or instead 'depth_image', "
            "a depth map to read)" if not given else "send either field 'image' or field 'depth_image', not both"
        )
    if given == ["depth_image"]:
        value = body["depth_image"]
        if not isinstance(value, str) or not value:
            raise Depth2ImgError("field 'depth_image' must be a base64-encoded depth map")
        depth = decode_depth_argument(value, max_pixels, **args.decode_kwargs())
        return EstimateRequest(args, depth=depth)
    value = body["image"]
    if not isinstance(value, str) or not value:
        raise Depth2ImgError("field 'image' is required: a base64-encoded image")
    try:
        image = decoding.open_image(decode_base64(value, "field 'image'"), "field 'image'", max_pixels=max_pixels)
    except limits.DepthMapError as error:
        raise Depth2ImgError(str(error)) from error
    try:
        get_estimator_info(args.estimator)
    except ValueError as error:
        raise Depth2ImgError(f"field 'estimator': {error}") from error
    return EstimateRequest(args, image=image)


def answer_estimate_request(request: EstimateRequest, estimate: Callable[[Any, str], np.ndarray]) -> dict[str, Any]:
    """The route's answer: estimate(image, estimator name) or the uploaded map, post-processed, at its size."""
    if request.image is not None:
        depth = estimate(request.image, request.settings.estimator)
        notice = ""
    else:
        depth, notice = request.depth.depth, request.depth.notice
    depth = postprocessing.postprocess(np.asarray(depth, dtype=np.float32), **request.settings.postprocess_kwargs())
    return {**estimate_response(depth, size=request.size), "notice": notice}


# The mask route's settings: how depth is made (as the estimate route), read (an uploaded map) and scaled, and
# the band's; the route always makes a mask (no mask_from_depth).
MASK_SETTINGS = (
    *ESTIMATE_SETTINGS, "depth_kind", "distance_range", "exr_channel", "depth_range",
    "mask_low", "mask_high", "mask_band_mode", "mask_feather", "mask_grow", "mask_invert", "mask_combine", "mask_auto",
)  # fmt: skip
MASK_IMAGES = {
    "image": "base64 image (data URL accepted): the picture the mask is for",
    "depth_image": "optional base64 depth map of the image (PNG/TIFF/EXR/.npy, read as depth_kind says); "
    "else estimated with 'estimator'",
    "mask": "optional base64 painted mask (white = repaint), combined by mask_combine; its strokes pick the "
    "band with mask_auto",
}


def mask_request_schema() -> dict[str, Any]:
    """JSON Schema of POST /depth2img/v1/mask's body, from the one args schema."""
    schema = json_schema(MASK_SETTINGS)
    images = {name: {"type": "string", "description": text} for name, text in MASK_IMAGES.items()}
    schema["properties"] = {**images, **schema["properties"]}
    schema["properties"]["estimator"]["enum"] = [entry.name for entry in list_estimators()]
    schema["required"] = ["image"]
    return schema


@dataclass
class MaskRequest:
    image: Any  # PIL
    depth: np.ndarray | None  # the uploaded map, unprocessed; None: estimate from the image
    painted: Any  # PIL or None
    args: Depth2ImgArgs  # with mask_from_depth on
    notice: str = ""  # how the uploaded map was read, when the user should know (e.g. approximate)


def parse_mask_request(body: Any, max_pixels: int = limits.DEFAULT_MAX_PIXELS) -> MaskRequest:
    """A POST /depth2img/v1/mask body, decoded and checked; every error names its field."""
    if not isinstance(body, dict):
        raise Depth2ImgError("the request body must be a JSON object")
    known = (*MASK_IMAGES, *MASK_SETTINGS)
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise Depth2ImgError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")
    settings = {k: v for k, v in body.items() if k in MASK_SETTINGS and v is not None}
    try:
        args = Depth2ImgArgs.from_dict({**settings, "mask_from_depth": True})
    except ArgsError as error:
        raise Depth2ImgError(str(error).replace("depth2img arg", "field")) from error
    try:
        get_estimator_info(args.estimator)
    except ValueError as error:
        raise Depth2ImgError(f"field 'estimator': {error}") from error
    image = _image_field(body, "image", max_pixels, required=True)
    painted = _image_field(body, "mask", max_pixels)
    if painted is not None and painted.size != image.size:
        raise Depth2ImgError(
            f"field 'mask' is {painted.width}x{painted.height}, field 'image' {image.width}x{image.height}: send a "
            "mask of the image's size"
        )
    if body.get("depth_image") is None:
        return MaskRequest(image, None, painted, args)
    try:
        decoded = decode_depth_argument(body["depth_image"], max_pixels, **args.decode_kwargs())
    except Depth2ImgError as error:
        raise Depth2ImgError(str(error).replace("depth2img arg", "field")) from error
    return MaskRequest(image, decoded.depth, painted, args, decoded.notice)


def _image_field(body: dict, field: str, max_pixels: int, required: bool = False):
    value = body.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise Depth2ImgError(f"field '{field}' {'is required: ' if required else 'must be '}a base64-encoded image")
    try:
        return decoding.open_image(decode_base64(value, f"field '{field}'"), f"field '{field}'", max_pixels=max_pixels)
    except limits.DepthMapError as error:
        raise Depth2ImgError(str(error)) from error


def mask_response(request: MaskRequest, depth: np.ndarray) -> dict[str, Any]:
    """The mask (8-bit PNG, base64, white = repaint, at the image's size) from `depth`: the request's map or the
    estimate of its image, not yet post-processed. An empty band is a 422 naming the band's fields."""
    args = request.args
    depth = postprocessing.postprocess(depth, **args.postprocess_kwargs())
    try:
        mask, note = masks.image_band_mask(
            depth, args.mask_settings(), request.painted, *request.image.size, args.depth_range
        )
    except masks.MaskError as error:
        raise Depth2ImgError(f"fields 'mask_low', 'mask_high' (the depth band): {error}") from error
    return {
        "mask": png_base64(mask),
        "width": mask.width,
        "height": mask.height,
        "note": note,
        "notice": request.notice,
    }


def check_estimator(name: str, has_depth_checkpoint: bool) -> None:
    info = get_estimator_info(name, has_depth_checkpoint=has_depth_checkpoint)
    if not info.available:
        raise Depth2ImgError(f"field 'estimator': {info.name} is unavailable: {info.reason}")


def estimate_response(depth: np.ndarray, size: tuple[int, int] | None = None) -> dict[str, Any]:
    """A processed depth map as the API returns it: a 16-bit PNG (white = near) and its value range (the route
    adds "notice": what to know about how an uploaded map was read, e.g. approximate; "" when nothing).

    size: (width, height) of the request's image; the map is resized to it (bicubic) so it lines up with
    the picture it came from, whatever resolution the estimator worked at.
    """
    if size is not None:
        depth = fitting.resize(depth, *size)
    return {
        "depth": png16_base64(depth),
        "width": int(depth.shape[1]),
        "height": int(depth.shape[0]),
        "min": float(depth.min()),
        "max": float(depth.max()),
        "bit_depth": 16,
    }


def estimators_response(has_depth_checkpoint: bool | None) -> list[dict[str, Any]]:
    """GET /depth2img/v1/estimators: each estimator, what its network outputs (kind: inverse, metric or distance),
    where it comes from (source: checkpoint, folder or controlnet), whether it can run now and if not, why."""
    fields = ("name", "label", "kind", "source", "available", "reason")
    return [{field: getattr(e, field) for field in fields} for e in list_estimators(has_depth_checkpoint)]


def checkpoints_response(entries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """entries: (title, path) of the host's checkpoints -> the depth ones, with what they are: title, the
    file's name, format and dtype (never the server path: callers may be strangers).

    A file that cannot be read (truncated download, junk) is skipped with one log line naming it: one bad
    file must not take the listing down.
    """
    out = []
    for title, path in entries:
        try:
            info = inspect_checkpoint_cached(path)
        except Exception as error:  # any reader's failure on any file: skip it, say which
            logger.warning("[Depth2Img] skipped %s in the depth checkpoint list: %s", path, error)  # server log only
            continue
        if info.is_depth_model:
            out.append({"title": title, "name": Path(path).name, "format": info.format, "dtype": info.dtype})
    return out
