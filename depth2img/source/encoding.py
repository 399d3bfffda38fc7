"""Depth maps written back: 16-bit PNG (white = near), float32 TIFF / .npy, an output image in the host's format
(8-bit where the format cannot hold 16), and a colour view."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from depth2img.base.files import write_bytes_atomic
from depth2img.base.limits import DepthMapError


def depth_to_png16_image(depth: np.ndarray) -> Image.Image:
    """A 16-bit grayscale PIL image (mode I;16) of a depth map: PNG keeps all 16 bits."""
    return Image.fromarray(to_uint16(depth))  # uint16 arrays become mode I;16


def depth_output_image(depth: np.ndarray, file_format: str) -> Image.Image:
    """The depth map as a host's output image in `file_format` (the WebUI's samples_format).

    PNG keeps 16 bits; JPEG and WebP cannot hold 16-bit gray ("cannot write mode I;16 as JPEG"): they get
    an 8-bit map, viewable and saveable, while the 16-bit PNG travels separately (png16_base64).
    """
    if file_format.lower() == "png":
        return depth_to_png16_image(depth)
    return Image.fromarray((to_uint16(depth) >> 8).astype(np.uint8))


def to_uint16(depth: np.ndarray) -> np.ndarray:
    """Min-max scale to the full 16-bit range (a flat map becomes all zero)."""
    low, high = float(depth.min()), float(depth.max())
    if high - low <= 0:
        return np.zeros(depth.shape, dtype=np.uint16)
    return np.round((depth - low) / (high - low) * 65535.0).astype(np.uint16)


def encode_png16(depth: np.ndarray) -> bytes:
    """16-bit grayscale PNG bytes of a depth map (white = near)."""
    ok, data = cv2.imencode(".png", to_uint16(depth))
    if not ok:
        raise DepthMapError("could not encode the depth map as PNG")
    return data.tobytes()


# What save_depth writes, by suffix: PNG = 16-bit, min-max scaled (white = near); TIFF and .npy = float32 values.
DEPTH_OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".npy")


def encode_depth(depth: np.ndarray, suffix: str) -> bytes:
    suffix = suffix.lower()
    if suffix == ".png":
        return encode_png16(depth)
    if suffix in (".tif", ".tiff"):
        ok, data = cv2.imencode(".tiff", depth.astype(np.float32))
        if not ok:
            raise DepthMapError("could not encode the depth map as TIFF")
        return data.tobytes()
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, depth.astype(np.float32), allow_pickle=False)
        return buffer.getvalue()
    raise DepthMapError(f"cannot write a depth map as {suffix!r}; use one of {', '.join(DEPTH_OUTPUT_SUFFIXES)}")


def save_depth(depth: np.ndarray, path: str | Path) -> Path:
    """Write a depth map in the format its suffix names (see DEPTH_OUTPUT_SUFFIXES), atomically."""
    path = Path(path)
    return write_bytes_atomic(path, encode_depth(depth, path.suffix))


def colorize(depth: np.ndarray) -> np.ndarray:
    """RGB uint8 preview with a perceptual colour map (near = bright)."""
    gray8 = (to_uint16(depth) >> 8).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
