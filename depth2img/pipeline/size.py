"""The output size policy: the requested size (multiples of 8), or the source's aspect at about 512x512."""

from __future__ import annotations

from depth2img.pipeline.request import GenerationRequest

# SD 2's depth model was trained at 512x512: without a requested size, outputs keep the source's aspect at
# about this many pixels, in multiples of SIZE_MULTIPLE (a 1920x1080 photo becomes 704x384, not 1920x1080).
DEFAULT_PIXELS = 512 * 512
SIZE_MULTIPLE = 64


def default_size(source_width: int, source_height: int) -> tuple[int, int]:
    """The source's aspect ratio at about DEFAULT_PIXELS, both sides multiples of SIZE_MULTIPLE."""
    scale = (DEFAULT_PIXELS / (source_width * source_height)) ** 0.5
    width = max(SIZE_MULTIPLE, round(source_width * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    height = max(SIZE_MULTIPLE, round(source_height * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return width, height


def _snap(value: int) -> int:
    return max(8, value - value % 8)


def output_size(request: GenerationRequest, source_width: int, source_height: int) -> tuple[int, int, str]:
    """(width, height, note): the requested size (multiples of 8), the other side from the source's aspect
    when only one is given, else default_size(); the note says which rule chose it."""
    if request.width and request.height:
        return _snap(request.width), _snap(request.height), ""
    if request.width or request.height:
        aspect = source_width / source_height
        width = request.width or round(request.height * aspect)
        height = request.height or round(request.width / aspect)
        return _snap(width), _snap(height), f"size {_snap(width)}x{_snap(height)} (the other side from the aspect)"
    width, height = default_size(source_width, source_height)
    return width, height, (
        f"size {width}x{height}: the source's aspect at about 512x512, the size SD 2's depth model works at "
        "(--width/--height to override)"
    )
