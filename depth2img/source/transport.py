"""Pictures and depth maps as the HTTP API carries them: base64 (or a data URL) in, base64 PNG out."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image

from depth2img.base.errors import Depth2ImgError
from depth2img.source import encoding


def decode_base64(value: str, field: str) -> bytes:
    """The bytes of a base64 string or data URL (the API's form for images); errors name the field."""
    text = value.split(",", 1)[1] if value.startswith("data:") else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise Depth2ImgError(f"{field} is not valid base64 (nor a data URL)") from error


def png16_base64(depth: np.ndarray) -> str:
    """A depth map as base64 of a 16-bit grayscale PNG (white = near), as the API returns it."""
    return base64.b64encode(encoding.encode_png16(depth)).decode("ascii")


def png_base64(image: Image.Image) -> str:
    """A PIL image as base64 of a PNG, as the WebUI's API takes and returns pictures."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
