"""The batch tab's (and a sequence's --depth-dir) folder of depth maps: the map for an input, by its file name."""

from __future__ import annotations

from pathlib import Path

from depth2img.base import limits
from depth2img.base.errors import Depth2ImgError
from depth2img.source import decoding, depth_kinds

DEPTH_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".exr", ".jpg", ".jpeg", ".webp")


def find_depth_for(depth_dir: str | Path, input_path: str | Path) -> Path | None:
    """The depth map in `depth_dir` with the input image's file name (any supported suffix), if any."""
    folder = Path(depth_dir)
    stem = Path(input_path).stem
    for suffix in DEPTH_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def load_batch_depth(
    depth_dir: str | Path, input_path: str | Path, max_pixels: int = limits.DEFAULT_MAX_PIXELS, **decode_kwargs
) -> tuple[Path, depth_kinds.DecodedDepth] | None:
    """The batch tab's depth map for one input (path and decoded map), or None when the folder has none.

    decode_kwargs: how to read it (Depth2ImgArgs.decode_kwargs(): depth kind, distance range, EXR channel).
    A map that exists but cannot be read is an error naming the file: it must never be skipped silently.
    """
    path = find_depth_for(depth_dir, input_path)
    if path is None:
        return None
    try:
        return path, decoding.decode_depth(path, max_pixels=max_pixels, **decode_kwargs)
    except (OSError, limits.DepthMapError) as error:
        raise Depth2ImgError(f"the depth map {path} for {Path(input_path).name} cannot be used: {error}") from error
