"""Inpainting masks from a depth band: select what lies between two depths (the subject, or the background).

A band is two numbers in percent, 0 = farthest, 100 = nearest (depth maps here are larger = nearer):
- "range": percent of the map's value range (or of a given range, e.g. a sequence's shared one);
- "percentile": percent of the map's pixels (40-60 = the middle fifth of the pixels by depth).
Steps, each optional, in a fixed order: band (hard 0/255) -> invert -> grow/shrink (px) -> feather (a
Gaussian edge that stays within `feather` px of the hard edge) -> combine with a painted mask. Grow and feather
belong to the depth mask; a painted mask is combined as painted. Masks are uint8 HxW, 255 = repaint.

`auto_band` picks the band for users who do not know which numbers to type: from the depth under their
painted strokes, or by Otsu's threshold on the depth histogram (OpenCV's) when nothing is painted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from depth2img.process import fitting

BAND_MODES = ("range", "percentile")
COMBINE_MODES = ("replace", "intersect", "union")
# Strokes spill over an object's edge; the band spans these percentiles of the depth under them, so a few
# stray pixels on the background do not pull the band to include it...
AUTO_STROKE_PERCENTILES = (2.0, 98.0)
# ...widened on each side by this fraction of its width (at least AUTO_MIN_MARGIN percent), since an object's
# depth reaches a little beyond the depths a few strokes touch (and the percentiles cut the tails).
AUTO_MARGIN = 0.5
AUTO_MIN_MARGIN = 1.0
PAINTED_THRESHOLD = 127  # a painted (possibly blurred) mask pixel above this counts as a stroke


class MaskError(ValueError):
    """A depth-band mask that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class MaskSettings:
    """How to make a mask from a depth band (see the module docstring); defaults select everything."""

    low: float = 0.0
    high: float = 100.0
    mode: str = "range"  # "range" | "percentile"
    feather: float = 0.0  # px of Gaussian edge
    grow: int = 0  # px; negative shrinks
    invert: bool = False
    combine: str = "replace"  # with a painted mask: "replace" | "intersect" | "union"
    auto: bool = False  # pick low/high from the painted strokes' depth, or by Otsu when nothing is painted

    def __post_init__(self) -> None:
        check_band(self.low, self.high)
        if self.mode not in BAND_MODES:
            raise MaskError(f"band mode must be one of {', '.join(BAND_MODES)}, got {self.mode!r}")
        if self.combine not in COMBINE_MODES:
            raise MaskError(f"mask combine must be one of {', '.join(COMBINE_MODES)}, got {self.combine!r}")
        if not (math.isfinite(self.feather) and self.feather >= 0):
            raise MaskError(f"mask feather must be >= 0 px, got {self.feather}")
        if int(self.grow) != self.grow:
            raise MaskError(f"mask grow must be a whole number of px, got {self.grow}")


def check_band(low: float, high: float) -> None:
    if not (0.0 <= low <= 100.0 and 0.0 <= high <= 100.0):
        raise MaskError(f"depth band {low:g}-{high:g} is outside 0-100 (0 = farthest, 100 = nearest)")
    if low >= high:
        raise MaskError(f"depth band low ({low:g}) must be below high ({high:g})")


def describe_band(low: float, high: float, mode: str) -> str:
    unit = "percent of range" if mode == "range" else "percentile"
    return f"{low:.4g}-{high:.4g} ({unit}; 0 = farthest, 100 = nearest)"


def _value_range(depth: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    low, high = (float(depth.min()), float(depth.max())) if value_range is None else map(float, value_range)
    if not high > low:
        raise MaskError(
            "the depth map is flat (every pixel at one depth): a depth band cannot separate anything; "
            "paint a mask instead"
        )
    return low, high


def band_values(
    depth: np.ndarray, low: float, high: float, mode: str = "range", value_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The band's limits in the depth map's own units."""
    check_band(low, high)
    if mode == "percentile":
        _value_range(depth, None)  # refuses a flat map
        low_value, high_value = np.percentile(depth, [low, high])
        return float(low_value), float(high_value)
    if mode != "range":
        raise MaskError(f"band mode must be one of {', '.join(BAND_MODES)}, got {mode!r}")
    vmin, vmax = _value_range(depth, value_range)
    return vmin + low / 100.0 * (vmax - vmin), vmin + high / 100.0 * (vmax - vmin)


def band_mask(
    depth: np.ndarray, low: float, high: float, mode: str = "range", value_range: tuple[float, float] | None = None
) -> np.ndarray:
    """Boolean HxW: pixels whose depth lies in the band (both ends included).

    0 and 100 are open-ended, so with a given value range the pixels beyond it (clamped to 0 or 100 percent)
    belong to the band's end.
    """
    low_value, high_value = band_values(depth, low, high, mode, value_range)
    selected = np.ones(depth.shape, dtype=bool)
    if low > 0.0:
        selected &= depth >= low_value
    if high < 100.0:
        selected &= depth <= high_value
    return selected


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate (pixels > 0) or erode (pixels < 0) a uint8 mask by a disc of that radius."""
    pixels = int(pixels)
    if pixels == 0:
        return mask
    radius = abs(pixels)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, disc) if pixels > 0 else cv2.erode(mask, disc)


def feather_mask(mask: np.ndarray, pixels: float) -> np.ndarray:
    """A Gaussian edge of `pixels` px: the kernel reaches ceil(pixels) px (sigma = pixels / 3, so the cut-off
    tail is below half an 8-bit level), hence pixels farther than that from the hard mask stay exactly 0."""
    if pixels <= 0:
        return mask
    radius = math.ceil(pixels)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (2 * radius + 1, 2 * radius + 1), sigmaX=pixels / 3.0)
    return np.clip(np.round(soft), 0, 255).astype(np.uint8)


def mask_from_depth(
    depth: np.ndarray,
    low: float,
    high: float,
    mode: str = "range",
    feather: float = 0.0,
    grow: int = 0,
    invert: bool = False,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """uint8 HxW mask (255 = repaint) of the depth band, inverted, grown and feathered as asked.

    Raises MaskError when a step leaves no pixel (an empty mask would run a job that changes nothing).
    """
    band = band_mask(depth, low, high, mode, value_range)
    if not band.any():
        raise MaskError(f"no pixel lies in the depth band {describe_band(low, high, mode)}: widen the band")
    if invert:
        band = ~band
        if not band.any():
            raise MaskError(
                f"the depth band {describe_band(low, high, mode)} covers every pixel, so its inverse is empty"
            )
    mask = grow_mask(band.astype(np.uint8) * 255, grow)
    if not mask.any():
        raise MaskError(f"shrinking the mask by {-int(grow)} px leaves no pixel: shrink less")
    return feather_mask(mask, feather)


def combine(depth_mask: np.ndarray, painted: np.ndarray | None, how: str) -> np.ndarray:
    """The depth mask with a painted one (same size, uint8): replace (depth mask alone), intersect, union."""
    if how not in COMBINE_MODES:
        raise MaskError(f"mask combine must be one of {', '.join(COMBINE_MODES)}, got {how!r}")
    if painted is None or how == "replace":
        return depth_mask
    if painted.shape != depth_mask.shape:
        raise MaskError(
            f"painted mask is {painted.shape[1]}x{painted.shape[0]}, the depth mask {depth_mask.shape[1]}x"
            f"{depth_mask.shape[0]}: give a painted mask of the image's size"
        )
    result = np.minimum(depth_mask, painted) if how == "intersect" else np.maximum(depth_mask, painted)
    if not result.any():
        raise MaskError("the depth band and the painted mask do not overlap: the combined mask is empty")
    return result


def auto_band(
    depth: np.ndarray, painted: np.ndarray | None = None, value_range: tuple[float, float] | None = None
) -> tuple[float, float]:
    """A band in percent of range: the depth under the painted strokes (AUTO_STROKE_PERCENTILES, widened by
    AUTO_MARGIN), else Otsu's split of the depth histogram (the nearer side)."""
    vmin, vmax = _value_range(depth, value_range)
    percent = np.clip((depth - vmin) / (vmax - vmin) * 100.0, 0.0, 100.0)
    strokes = painted > PAINTED_THRESHOLD if painted is not None else None
    if strokes is not None and strokes.any():
        if strokes.shape != depth.shape:
            raise MaskError(
                f"painted mask is {strokes.shape[1]}x{strokes.shape[0]}, the depth map {depth.shape[1]}x"
                f"{depth.shape[0]}: give a painted mask of the image's size"
            )
        low, high = (float(v) for v in np.percentile(percent[strokes], AUTO_STROKE_PERCENTILES))
        margin = max(AUTO_MIN_MARGIN, AUTO_MARGIN * (high - low))
        return max(0.0, low - margin), min(100.0, high + margin)
    # OpenCV's Otsu takes 8/16-bit images: 16 bits keep 65536 depth levels.
    levels = np.round(percent / 100.0 * 65535.0).astype(np.uint16)
    threshold, _ = cv2.threshold(levels, 0, 65535, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu's foreground is level > threshold; halfway to the next level keeps exactly those pixels.
    low = min(100.0, (threshold + 0.5) / 65535.0 * 100.0)
    if low >= 100.0:
        raise MaskError("Otsu's threshold found no nearer part in this depth map: give the band or paint strokes")
    return low, 100.0


def depth_band_mask(
    depth: np.ndarray,
    settings: MaskSettings,
    painted: np.ndarray | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, tuple[float, float], str]:
    """The whole recipe: (uint8 mask, the band used, its mode). `depth` and `painted` have the output's size.

    With settings.auto the band is chosen by auto_band (in percent of range, whatever settings.mode says).
    """
    low, high, mode = settings.low, settings.high, settings.mode
    if settings.auto:
        low, high = auto_band(depth, painted, value_range)
        mode = "range"
    mask = mask_from_depth(
        depth, low, high, mode, settings.feather, settings.grow, settings.invert, value_range=value_range
    )
    return combine(mask, painted, settings.combine), (low, high), mode


def image_band_mask(
    depth: np.ndarray,
    settings: MaskSettings,
    painted,
    width: int,
    height: int,
    depth_range: tuple[float, float] | None = None,
):
    """The inpainting mask (PIL L, width x height) of a picture from its processed depth map (any resolution of
    the picture's aspect), combined with a painted mask (PIL, that size, or None); and a note naming the band.

    Percent of range is of the map's own min-max, or of depth_range when given (a sequence's or a batch's
    shared scale), so the band means the same depths in every picture. Every host makes its masks here.
    """
    from PIL import Image

    full = fitting.resize(depth, width, height)
    # The range of the map itself, not of its bicubic resize (which overshoots a little at edges).
    value_range = depth_range if depth_range is not None else (float(depth.min()), float(depth.max()))
    painted_array = np.asarray(painted.convert("L")) if painted is not None else None
    array, (low, high), mode = depth_band_mask(full, settings, painted_array, value_range)
    note = f"mask from the depth band {describe_band(low, high, mode)}" + (" (auto)" if settings.auto else "")
    return Image.fromarray(array), note
