"""The errors every image decoder raises and the size limits they enforce (shared by the gate, EXR, depth maps)."""

from __future__ import annotations

# Largest image (depth map or init image) decoded, in pixels: far above any real depth map or photo that
# SD 2 can use, far below what takes a machine down (OpenCV decodes up to 2^30 pixels: 4 GB as float32).
# The WebUI has a setting for it, the CLI --max-megapixels.
DEFAULT_MAX_PIXELS = 64_000_000


class DepthMapError(ValueError):
    """An image or depth map that cannot be used; the message says what is wrong and what to do."""


class ImageTooLargeError(DepthMapError):
    """An image whose header (or size) is above the limit; nothing was decoded."""

    def __init__(self, what: str, size: str, max_pixels: int):
        self.max_pixels = max_pixels
        super().__init__(
            f"{what} is {size}, above the limit of {max_pixels / 1e6:g} megapixels; "
            "use a smaller image or raise the limit"
        )


def check_pixels(what: str, width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(what, f"{width}x{height} ({width * height / 1e6:.1f} megapixels)", max_pixels)
