"""Post-processing of a depth map (clip near/far percentiles, gamma, blur, invert), on the map's own values or on
a scale shared by many maps (PostprocessScale: a sequence's frames, a batch folder)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from depth2img.base.limits import DepthMapError


@dataclass(frozen=True)
class PostprocessScale:
    """The values post-processing takes from maps: the clip's (low, high) and the bounds that gamma and invert
    work within. None: this map's own (its clip percentiles; its min and max after the clip).

    Of one map by default (each map its own scale: what a single job does); of a whole set, so that every map of a
    sequence or a batch folder is processed alike and one depth range means one scale (set_scale); or a user's
    depth_range, within which gamma and invert work for every map (within_range). The settings decide which steps
    run; the scale only gives their values.
    """

    clip: tuple[float, float] | None = None
    bounds: tuple[float, float] | None = None

    def as_json(self) -> dict:
        return {"clip": None if self.clip is None else list(self.clip),
                "bounds": None if self.bounds is None else list(self.bounds)}

    @classmethod
    def within_range(cls, depth_range: tuple[float, float]) -> PostprocessScale:
        return cls(bounds=(float(depth_range[0]), float(depth_range[1])))

    @classmethod
    def for_job(
        cls, scale: PostprocessScale | None, depth_range: tuple[float, float] | None
    ) -> PostprocessScale | None:
        """The scale a job post-processes on: a set's (scale) if given; else, with a depth_range, gamma and invert
        work within that range (one range, one scale); else None, each map its own."""
        if scale is None and depth_range is not None:
            return cls.within_range(depth_range)
        return scale


@dataclass(frozen=True)
class MapStatistics:
    """What a set's scale needs of one map: its exact min and max and its values on a grid (for percentiles)."""

    minimum: float
    maximum: float
    sample: np.ndarray

    @classmethod
    def of(cls, depth: np.ndarray) -> MapStatistics:
        return cls(float(depth.min()), float(depth.max()), grid_sample(depth)[0].ravel())


# Statistics of a set come from a regular grid of at most this many pixels per map (actual values, no
# interpolation): exact enough for percentiles, and a thousand maps stay in memory.
GRID_SAMPLE_PIXELS = 65536


def grid_sample(depth: np.ndarray, max_pixels: int = GRID_SAMPLE_PIXELS) -> tuple[np.ndarray, int]:
    """(the map's values on a regular grid of at most max_pixels pixels, the grid's spacing in pixels)."""
    step = max(1, int(np.ceil(np.sqrt(depth.size / max_pixels))))
    return np.ascontiguousarray(depth[::step, ::step]), step


def set_scale(statistics: list[MapStatistics], clip_near: float = 100.0, clip_far: float = 0.0) -> PostprocessScale:
    """One scale for a set of unprocessed maps: the clip percentiles over all their pixels (their grid samples)
    and the bounds over all of them (the set's min and max, within the clip), the same for every map."""
    if not statistics:
        raise DepthMapError("no depth maps to take a shared post-processing scale from")
    low, high = min(s.minimum for s in statistics), max(s.maximum for s in statistics)
    if not _clip_on(clip_near, clip_far):
        return PostprocessScale(bounds=(low, high))
    _check_clip(clip_near, clip_far)
    clip_low, clip_high = (float(v) for v in np.percentile(np.concatenate([s.sample for s in statistics]),
                                                           [clip_far, clip_near]))
    return PostprocessScale(clip=(clip_low, clip_high), bounds=(max(low, clip_low), min(high, clip_high)))


def _clip_on(clip_near: float, clip_far: float) -> bool:
    return clip_near < 100.0 or clip_far > 0.0


def _check_clip(near: float, far: float) -> None:
    if not 0.0 <= far < near <= 100.0:
        raise DepthMapError(f"clip percentiles need 0 <= far < near <= 100, got far={far}, near={near}")


def _own_bounds(depth: np.ndarray, bounds: tuple[float, float] | None) -> tuple[float, float]:
    return bounds if bounds is not None else (float(depth.min()), float(depth.max()))


def invert(depth: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Swap near and far within the bounds (default: the map's own min and max), keeping the value range."""
    low, high = _own_bounds(depth, bounds)
    return (low + high - depth).astype(np.float32)


def clip_percentiles(
    depth: np.ndarray, near: float = 100.0, far: float = 0.0, values: tuple[float, float] | None = None
) -> np.ndarray:
    """Clamp to the [far, near] percentiles (0-100; values: the set's, else the map's own): flattens outliers."""
    _check_clip(near, far)
    low, high = values if values is not None else np.percentile(depth, [far, near])
    return np.clip(depth, low, high).astype(np.float32)


def apply_gamma(depth: np.ndarray, gamma: float, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Gamma within the bounds (default: the map's own min and max), in the map's units: each value's place
    between low and high is raised to gamma; gamma > 1 pushes detail towards the near end."""
    if gamma <= 0:
        raise DepthMapError(f"gamma must be > 0, got {gamma}")
    low, high = _own_bounds(depth, bounds)
    if high - low <= 0:
        return np.full_like(depth, low, dtype=np.float32)
    place = np.clip((depth - low) / (high - low), 0.0, 1.0)
    return (low + (high - low) * place**gamma).astype(np.float32)


def blur(depth: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur with sigma = radius pixels; smooths estimator noise and hard edges."""
    if radius < 0:
        raise DepthMapError(f"blur radius must be >= 0, got {radius}")
    if radius == 0:
        return depth
    return cv2.GaussianBlur(depth.astype(np.float32), (0, 0), sigmaX=float(radius))


def postprocess(
    depth: np.ndarray,
    *,
    invert_depth: bool = False,
    clip_near: float = 100.0,
    clip_far: float = 0.0,
    gamma: float = 1.0,
    blur_radius: float = 0.0,
    scale: PostprocessScale | None = None,
) -> np.ndarray:
    """Apply the optional steps in a fixed order: clip, gamma, blur, invert. Defaults change nothing.

    scale: the values the steps take (PostprocessScale); None: this map's own. Gamma and invert work within one
    pair of bounds, taken after the clip and before the blur (the blur keeps values inside them).
    """
    if is_identity(invert_depth=invert_depth, clip_near=clip_near, clip_far=clip_far, gamma=gamma,
                   blur_radius=blur_radius):
        return depth
    scale = scale or PostprocessScale()
    if _clip_on(clip_near, clip_far):
        depth = clip_percentiles(depth, clip_near, clip_far, scale.clip)
    bounds = _own_bounds(depth, scale.bounds) if (gamma != 1.0 or invert_depth) else None
    if gamma != 1.0:
        depth = apply_gamma(depth, gamma, bounds)
    if blur_radius > 0:
        depth = blur(depth, blur_radius)
    if invert_depth:
        depth = invert(depth, bounds)
    return depth


def is_identity(
    *,
    invert_depth: bool = False,
    clip_near: float = 100.0,
    clip_far: float = 0.0,
    gamma: float = 1.0,
    blur_radius: float = 0.0,
    scale: PostprocessScale | None = None,
) -> bool:
    """True when postprocess() with these settings returns the map untouched (the very same array)."""
    return not (_clip_on(clip_near, clip_far) or gamma != 1.0 or blur_radius > 0 or invert_depth)
