"""One scale shared by many depth maps (a sequence's frames, a batch folder): the range of their values between two
percentiles, taken over a grid sample of each map, and the post-processing scale of a whole folder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from depth2img.base.errors import Depth2ImgError, SequenceError
from depth2img.process import postprocessing

DEFAULT_PERCENTILES = (0.5, 99.5)  # (far, near): a few outlier pixels must not set the scale for every frame
# ranges come from a grid of each map (postprocessing.grid_sample)
RANGE_SAMPLE_PIXELS = postprocessing.GRID_SAMPLE_PIXELS


def range_sample(depth: np.ndarray, max_pixels: int = RANGE_SAMPLE_PIXELS) -> np.ndarray:
    """The map's values on a regular grid of at most max_pixels pixels, flattened."""
    return postprocessing.grid_sample(depth, max_pixels)[0].ravel()


def range_of(samples: Sequence[np.ndarray], far_percentile: float, near_percentile: float) -> tuple[float, float]:
    """(lo, hi): the far and near percentiles over all the samples' values; refused when flat between them."""
    low, high = (float(v) for v in np.percentile(np.concatenate(samples), [far_percentile, near_percentile]))
    if not high > low:
        raise SequenceError(
            f"the depth maps are flat between the {far_percentile} and {near_percentile} percentiles: no depth "
            "range to share; use --scale per-frame or other percentiles"
        )
    return low, high


def folder_depth_scale(
    inputs: list[Path],
    depth_of: Callable[[Path], np.ndarray | None],
    postprocess: dict,
    progress: Callable[[int, int, Path], None] | None = None,
) -> tuple[postprocessing.PostprocessScale, tuple[float, float]]:
    """One depth scale for a whole batch folder: pass 1 of the batch tab's "one depth scale for the whole
    folder". (the post-processing scale, the depth range): the clip percentiles, min and max over every map, so that
    every job post-processes its map alike; then the range a sequence's `global` scale takes (near/far percentiles
    over every processed map), in the processed maps' units.

    depth_of(path): the input's unprocessed depth map (its file in the depth folder, or estimated), or None to leave
    the input out (the WebUI skips unreadable inputs too). progress(done, total, path) before each input.
    The range is taken over each map's grid sample (postprocessing.MapStatistics) processed on the folder's scale, a
    blur at the grid's spacing: the maps are not held, and a folder's maps are estimated once.
    """
    grids, statistics = [], []
    for done, path in enumerate(inputs):
        if progress is not None:
            progress(done, len(inputs), path)
        depth = depth_of(path)
        if depth is not None:
            statistics.append(postprocessing.MapStatistics.of(depth))
            grids.append(postprocessing.grid_sample(depth))
    if not statistics:
        raise Depth2ImgError("one depth scale for the whole folder: no input of the batch folder could be read")
    scale = postprocessing.set_scale(statistics, postprocess.get("clip_near", 100.0), postprocess.get("clip_far", 0.0))
    processed = []
    for grid, step in grids:
        on_grid = dict(postprocess, scale=scale, blur_radius=postprocess.get("blur_radius", 0.0) / step)
        processed.append(postprocessing.postprocess(grid, **on_grid).ravel())
    try:
        return scale, range_of(processed, *DEFAULT_PERCENTILES)
    except SequenceError as error:  # its advice is the CLI's
        raise Depth2ImgError(
            "one depth scale for the whole folder: the folder's depth maps are flat, no depth range to share; "
            "choose 'per-image' (depth2img arg 'batch_depth_scale')"
        ) from error
