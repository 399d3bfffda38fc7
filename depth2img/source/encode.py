"""A depth map as a host's output image: 16-bit PNG where the format holds it, 8-bit otherwise."""

from __future__ import annotations

import numpy as np
from PIL import Image

from depth2img.source import depthmap


def depth_to_png16_image(depth: np.ndarray) -> Image.Image:
    """A 16-bit grayscale PIL image (mode I;16) of a depth map: PNG keeps all 16 bits."""
    return Image.fromarray(depthmap.to_uint16(depth))  # uint16 arrays become mode I;16


def depth_output_image(depth: np.ndarray, file_format: str) -> Image.Image:
    """The depth map as a host's output image in `file_format` (the WebUI's samples_format).

    PNG keeps 16 bits; JPEG and WebP cannot hold 16-bit gray ("cannot write mode I;16 as JPEG"): they get
    an 8-bit map, viewable and saveable, while the 16-bit PNG travels separately (png16_base64).
    """
    if file_format.lower() == "png":
        return depth_to_png16_image(depth)
    return Image.fromarray((depthmap.to_uint16(depth) >> 8).astype(np.uint8))
