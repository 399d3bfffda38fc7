"""Fitting a depth map (or a picture) to a target size by the WebUI's resize modes: stretch, crop the centre, or pad
with the edges; the one bicubic resize of a map."""

from __future__ import annotations

from enum import Enum

import cv2
import numpy as np
from PIL import Image


class ResizeMode(int, Enum):
    """The WebUI's img2img resize modes, applied to a depth map whose aspect differs from the target."""

    JUST_RESIZE = 0  # stretch to the target
    CROP_AND_RESIZE = 1  # scale to cover the target, crop the centre
    RESIZE_AND_FILL = 2  # scale to fit inside, fill the borders with the edge values


def fit_aspect(
    depth: np.ndarray, width: int, height: int, mode: ResizeMode | int, source_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Crop or pad the map (HxW, or HxWxC for images; in its own resolution, no resampling) to the target's aspect.

    The one resampling happens later, when the conditioning is resized bicubically to the latent size,
    so a map is never interpolated twice. JUST_RESIZE returns the map unchanged (the stretch happens there).
    source_size: (width, height) of the picture the map covers. A map of another aspect (an estimator rounds its
    map's sides to its multiples: 912x512 -> 672x384; an uploaded map is taken as its picture's) is first brought
    to that size, so the crop or pad is the picture's and the depth lines up with it.
    """
    mode = ResizeMode(mode)
    if mode is ResizeMode.JUST_RESIZE:
        return depth
    if source_size is not None and depth.shape[1] * source_size[1] != depth.shape[0] * source_size[0]:
        depth = resize(depth, *source_size)
    h, w = depth.shape[:2]
    if w * height == h * width:
        return depth
    target_ratio = width / height
    if mode is ResizeMode.CROP_AND_RESIZE:
        if w / h > target_ratio:  # too wide: crop the sides
            new_w = max(1, round(h * target_ratio))
            left = (w - new_w) // 2
            return depth[:, left : left + new_w]
        new_h = max(1, round(w / target_ratio))
        top = (h - new_h) // 2
        return depth[top : top + new_h, :]
    # RESIZE_AND_FILL: pad with replicated edges (a depth map has no "background colour").
    if w / h > target_ratio:
        pad = max(0, round(w / target_ratio) - h)
        top, bottom, left, right = pad // 2, pad - pad // 2, 0, 0
    else:
        pad = max(0, round(h * target_ratio) - w)
        top, bottom, left, right = 0, 0, pad // 2, pad - pad // 2
    return cv2.copyMakeBorder(depth, top, bottom, left, right, cv2.BORDER_REPLICATE)


def fit_image(image: Image.Image, width: int, height: int, mode: ResizeMode | int, resample: int) -> Image.Image:
    """An init image or mask fitted exactly as its depth map is (fit_aspect), then resized to width x height.

    Padding replicates the edge pixels, as the WebUI's "resize and fill" stretches the edge rows into the gap.
    """
    fitted = fit_aspect(np.asarray(image), width, height, mode)
    result = Image.fromarray(np.ascontiguousarray(fitted))
    return result if result.size == (width, height) else result.resize((width, height), resample)


def resize(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize to width x height, in float32 (for saving a map at its image's size)."""
    if depth.shape == (height, width):
        return depth
    return cv2.resize(depth.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
