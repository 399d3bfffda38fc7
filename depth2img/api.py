"""The HTTP API's logic, host-agnostic: validate a request body, run the estimator, shape the answer.

The WebUI script mounts these as FastAPI routes under /depth2img/v1/; errors are Depth2ImgError with
status 422 and a message naming the field.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from . import depthmap
from .args import ArgsError, Depth2ImgArgs
from .checkpoints import CheckpointError, inspect_checkpoint_cached
from .host import Depth2ImgError

ESTIMATE_FIELDS = ("image", "estimator", "invert", "clip_near", "clip_far", "gamma", "blur")


def _decode_image(value: Any):
    from PIL import Image, UnidentifiedImageError

    if not isinstance(value, str) or not value:
        raise Depth2ImgError("field 'image' is required: a base64-encoded image")
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as error:
        raise Depth2ImgError("field 'image' is not valid base64") from error
    import io

    try:
        image = Image.open(io.BytesIO(raw))
        image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise Depth2ImgError(f"field 'image' is not a readable image ({error})") from error
    return image


def parse_estimate_request(body: Any) -> tuple[Any, Depth2ImgArgs]:
    """The image and the post-processing settings of a POST /depth2img/v1/estimate body."""
    if not isinstance(body, dict):
        raise Depth2ImgError("the request body must be a JSON object")
    unknown = sorted(set(body) - set(ESTIMATE_FIELDS))
    if unknown:
        raise Depth2ImgError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(ESTIMATE_FIELDS)}")
    image = _decode_image(body.get("image"))
    settings = {k: v for k, v in body.items() if k != "image" and v is not None}
    try:
        args = Depth2ImgArgs.from_dict(settings)
    except ArgsError as error:
        raise Depth2ImgError(str(error).replace("depth2img arg", "field")) from error
    return image, args


def estimate_response(depth: np.ndarray) -> dict[str, Any]:
    """A processed depth map as the API returns it: a 16-bit PNG (white = near) and its value range."""
    return {
        "depth": base64.b64encode(depthmap.encode_png16(depth)).decode("ascii"),
        "width": int(depth.shape[1]),
        "height": int(depth.shape[0]),
        "min": float(depth.min()),
        "max": float(depth.max()),
        "bit_depth": 16,
    }


def estimators_response(has_depth_checkpoint: bool | None) -> list[dict[str, Any]]:
    from .estimators import list_estimators

    return [
        {"name": e.name, "label": e.label, "available": e.available, "reason": e.reason}
        for e in list_estimators(has_depth_checkpoint)
    ]


def checkpoints_response(entries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """entries: (title, path) of the host's checkpoints -> the depth ones, with what they are."""
    out = []
    for title, path in entries:
        try:
            info = inspect_checkpoint_cached(path)
        except (CheckpointError, OSError):
            continue
        if info.is_depth_model:
            out.append({"title": title, "path": str(path), "format": info.format, "dtype": info.dtype})
    return out
