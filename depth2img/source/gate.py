"""The one gate every encoded image passes before any decoder sees it.

An HTTP caller, a batch folder or a frame sequence can hand us any bytes. Decoders (Pillow, OpenCV, numpy,
OpenEXR) allocate what a file's header declares, and some of them (OpenCV's Radiance HDR, for one) before
any size check of ours could run. So before decoding, `admit` does three things and refuses otherwise:
1. identifies the format by its magic number, against an allow-list (pictures: PNG, JPEG, WebP, TIFF, BMP;
   depth maps also .npy and EXR); known formats outside it are refused by name (HDR, GIF, PSD, ...);
2. bounds the encoded size (a file larger than any image within the pixel limit is refused unread);
3. reads width and height from that format's own header (Pillow's lazy open, numpy's header reader,
   OpenEXR's header-only read) and refuses more than the pixel limit.
Only then may the caller decode, with the decoder of the format found here.
"""

from __future__ import annotations

import io
import struct
import tokenize
import warnings
from dataclasses import dataclass

import numpy as np

from depth2img.base.limits import DEFAULT_MAX_PIXELS, DepthMapError, ImageTooLargeError, check_pixels
from depth2img.source import exr

PICTURE_FORMATS = ("PNG", "JPEG", "WebP", "TIFF", "BMP")
DEPTH_FORMATS = (*PICTURE_FORMATS, "NPY", "EXR")

# An encoded image is never larger than its pixels stored raw at 4 channels of float32 (uncompressed TIFF,
# .npy), plus its headers: anything larger is refused before it is looked at.
MAX_BYTES_PER_PIXEL = 16
HEADER_ALLOWANCE = 1 << 20

_NPY_MAGIC = b"\x93NUMPY"

# (magic at offset 0, format name); the first match wins. Refused formats are listed so the message can name them.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
    (_NPY_MAGIC, "NPY"),
    (exr.EXR_MAGIC, "EXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"8BPS", "Photoshop PSD"),
    (b"PF\n", "PFM"),
    (b"Pf\n", "PFM"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
)
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


class UnsupportedFormatError(DepthMapError):
    """Bytes that are not one of the accepted formats; nothing was decoded."""


@dataclass(frozen=True)
class Admitted:
    format: str  # one of DEPTH_FORMATS
    width: int
    height: int


def identify(data: bytes) -> str | None:
    """The format's name from its magic number (accepted or not), None when unknown."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return _HEIF_BRANDS[data[8:12]]
    if len(data) > 2 and data[:1] == b"P" and data[1:2] in b"1234567" and data[2:3].isspace():
        return "PNM"
    return None


def admit(
    data: bytes, what: str, accepted: tuple[str, ...] = DEPTH_FORMATS, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Admitted:
    """The format and size of `data`, or a DepthMapError naming `what` and the rule; decodes no pixel."""
    fmt = identify(data)
    if fmt not in accepted:
        found = f"a {fmt} file" if fmt else "not a readable image (its first bytes match no known format)"
        raise UnsupportedFormatError(
            f"{what} is {found}; accepted: {', '.join(_describe(accepted))}: convert it to one of them"
        )
    limit = max_pixels * MAX_BYTES_PER_PIXEL + HEADER_ALLOWANCE
    if len(data) > limit:
        raise ImageTooLargeError(what, f"{len(data) / 1e6:.0f} MB (more than any image within the limit)", max_pixels)
    size = _header_size(data, fmt, what, max_pixels)
    if isinstance(size, str):
        raise ImageTooLargeError(what, size, max_pixels)
    check_pixels(what, size[0], size[1], max_pixels)
    return Admitted(fmt, size[0], size[1])


def _describe(accepted: tuple[str, ...]) -> list[str]:
    return [".npy" if fmt == "NPY" else fmt for fmt in accepted]


def _header_size(data: bytes, fmt: str, what: str, max_pixels: int) -> tuple[int, int] | str:
    if fmt == "EXR":
        exr.check_header(data, what, max_pixels)  # every part's window and all channels' decoded bytes
        return exr.largest_window(data, what)
    if fmt == "NPY":
        return _npy_size(data, what)
    size = _pil_size(data, fmt)
    if size is None and fmt == "TIFF":
        size = _tiff_size(data)
    if size is None:
        raise DepthMapError(f"{what} is not a readable {fmt} file (its header is damaged): export it again")
    return size


def _pil_size(data: bytes, fmt: str) -> tuple[int, int] | str | None:
    """(width, height) from Pillow's lazy open (header only) with that format's plugin; a text when Pillow
    itself refuses the size (twice its own limit) before telling it; None when it cannot read the header."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        try:
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                return image.size
        except Image.DecompressionBombError:
            return f"over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels"
        except (UnidentifiedImageError, OSError, ValueError, struct.error, SyntaxError, OverflowError, EOFError):
            return None  # OverflowError: an offset past what a seek takes (Pillow 9.5's TIFF reader)


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth/ImageLength of a TIFF's first page, read by hand: Pillow cannot open the header of float RGB
    TIFFs, which OpenCV (our depth decoder) reads, and no other installed library reads TIFF headers."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        big = struct.unpack_from(order + "H", data, 2)[0] == 43
        if big:
            ifd = struct.unpack_from(order + "Q", data, 8)[0]
            count = struct.unpack_from(order + "Q", data, ifd)[0]
            entry, first, field = 20, ifd + 8, order + "HHQ8s"
        else:
            ifd = struct.unpack_from(order + "I", data, 4)[0]
            count = struct.unpack_from(order + "H", data, ifd)[0]
            entry, first, field = 12, ifd + 2, order + "HHI4s"
        found = {}
        for index in range(min(count, 4096)):
            tag, kind, _, value = struct.unpack_from(field, data, first + index * entry)
            if tag in (256, 257):
                code = {3: "H", 4: "I", 16: "Q"}.get(kind)
                if code is None:
                    return None
                found[tag] = struct.unpack_from(order + code, value)[0]
    except (struct.error, OverflowError):  # short data; an offset past what an index can hold (BigTIFF's 64 bits)
        return None
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _npy_size(data: bytes, what: str) -> tuple[int, int]:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(stream)
    except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as error:  # numpy parses the header as Python
        raise DepthMapError(f"{what} is not a readable .npy file (its header: {error})") from error
    if dtype.hasobject:
        raise DepthMapError(f"{what} holds Python objects, not numbers: save a numeric array")
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] > 4):
        raise DepthMapError(f"{what} has shape {shape}; expected HxW, HxWx1, HxWx3 or HxWx4")
    return int(shape[1]), int(shape[0])
