"""The one decoding gate for pictures and user depth maps: bytes, files, PIL images and arrays in (each byte string
checked by depth2img.source.gate first), a depth map out, converted to inverse depth by its kind (depth_kinds).

A depth map here is a float32 numpy array HxW, finite, larger = nearer (white = near, as MiDaS
outputs). Integer images are scaled to [0, 1] by their bit depth so an 8-bit and a 16-bit export
of the same map agree; float data keeps its values (conditioning normalizes per sample anyway).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from depth2img.base.limits import DEFAULT_MAX_PIXELS, DepthMapError, check_pixels
from depth2img.source import exr
from depth2img.source import gate as image_gate
from depth2img.source.depth_kinds import DEPTH_KINDS, DecodedDepth, check_distance_range, distance_to_inverse

DepthSource = str | Path | bytes | Image.Image | np.ndarray






def _read_source(source: str | Path | bytes, what: str) -> tuple[bytes, str]:
    """The bytes of a file or buffer and the name messages use ("init image /path/x.png" or "init image")."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DepthMapError(f"{what} not found: {path}")
        return path.read_bytes(), f"{what} {path}"
    return bytes(source), what


def open_image(
    source: str | Path | bytes,
    what: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    background: str | None = None,
) -> Image.Image:
    """A picture (path or bytes) as every host shows it: through the decoding gate, fully loaded, turned by
    its EXIF orientation (as the WebUI and phones display a photo); with `background`, RGB with any
    transparency flattened on that colour (the WebUI's rule, see flatten)."""
    from PIL import ImageOps, UnidentifiedImageError

    data, name = _read_source(source, what)
    admitted = image_gate.admit(data, name, image_gate.PICTURE_FORMATS, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the gate applied our limit
            image = Image.open(io.BytesIO(data), formats=[admitted.format])
            image.load()
            image = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise DepthMapError(f"{name} is not a readable image ({error})") from error
    return image if background is None else flatten(image, background)


# The colour transparent parts of a picture are flattened on, in every host (the WebUI: its own setting).
DEFAULT_BACKGROUND = "#ffffff"


def flatten(image: Image.Image, background: str = DEFAULT_BACKGROUND) -> Image.Image:
    """RGB with transparent parts on `background`: the WebUI's rule (modules.images.flatten with its setting
    img2img_background_color), so every host estimates depth from the picture the WebUI generates from.

    The WebUI applies it to RGBA; other modes with alpha (LA, PA, palette/RGB transparency) get the same.
    """
    if image.mode in ("LA", "PA") or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGBA", image.size, background)
        canvas.paste(image, mask=image)  # the WebUI's paste: same rounding as its own init image
        image = canvas
    return image.convert("RGB")


def _luminance(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601 weights, the same PIL uses for convert("L"); keeps 16-bit and float precision.
    rgb = rgb.astype(np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _from_array(array: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] in (2, 3, 4):
        if array.shape[2] == 2:  # gray + alpha: alpha ignored
            gray = array[..., 0]
        else:
            rgb = array[..., :3]
            if channel_order == "BGR":
                rgb = rgb[..., ::-1]
            gray = _luminance(rgb)
        scale_dtype = array.dtype
    elif array.ndim == 2:
        gray, scale_dtype = array, array.dtype
    else:
        raise DepthMapError(
            f"depth map has shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4"
        )
    if np.issubdtype(scale_dtype, np.integer):
        depth = gray.astype(np.float32) / float(np.iinfo(scale_dtype).max)
    elif np.issubdtype(scale_dtype, np.floating) or scale_dtype == np.bool_:
        depth = gray.astype(np.float32)
    else:
        raise DepthMapError(f"depth map has unsupported data type {scale_dtype}")
    return depth


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return _from_array(np.array(image, dtype=np.uint16))
    if image.mode == "I":
        # 32-bit integer mode; PIL opens 16-bit PNGs this way, so scale by 16 bits when values fit.
        data = np.array(image, dtype=np.int64)
        bits = 16 if data.max(initial=0) <= 65535 and data.min(initial=0) >= 0 else 32
        return (data / float(2**bits - 1)).astype(np.float32)
    if image.mode == "F":
        return _from_array(np.array(image, dtype=np.float32))
    if image.mode in ("L", "LA"):
        return _from_array(np.array(image.getchannel(0)))
    return _from_array(np.array(image.convert("RGB")))


@dataclass
class _Decoded:
    """Values as stored (float32 HxW, not yet checked), and what they are."""

    values: np.ndarray
    name: str  # for messages: "depth map /path/to/file.exr"
    normalized: bool  # integer image (scaled by its bit depth) or EXR Mist: 0..1, not scene units
    exr_channel: str = ""  # the channel read, for EXR files


def _decode_encoded(data: bytes, name: str, max_pixels: int, exr_channel: str) -> _Decoded:
    fmt = image_gate.admit(data, name, image_gate.DEPTH_FORMATS, max_pixels).format
    if fmt == "EXR":
        found = exr.read_exr_depth(data, name, max_pixels, exr_channel)
        return _Decoded(found.values, name, normalized=found.normalized, exr_channel=found.channel)
    if fmt == "NPY":
        array = np.load(io.BytesIO(data), allow_pickle=False)
        return _Decoded(_from_array(array), name, normalized=np.issubdtype(array.dtype, np.integer))
    # OpenCV keeps 16-bit PNG/TIFF and float32 TIFF data that PIL would reduce; it ignores EXIF orientation,
    # which is applied after (as for pictures).
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise DepthMapError(
            f"{name} is not a readable image: use a PNG (8/16-bit), TIFF (16-bit or float), EXR or .npy file"
        )
    normalized = np.issubdtype(decoded.dtype, np.integer)
    values = _exif_oriented(_from_array(decoded, channel_order="BGR"), data, fmt)
    return _Decoded(values, name, normalized=normalized)


def _exif_oriented(values: np.ndarray, data: bytes, fmt: str) -> np.ndarray:
    """The map turned by the file's EXIF orientation (1-8), as Pillow's exif_transpose turns a picture."""
    if fmt not in ("JPEG", "PNG", "TIFF", "WebP"):
        return values
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):
        return values
    # orientation -> (rotations by 90 degrees counter-clockwise, flip left-right first); the EXIF spec's table
    turns = {2: (0, True), 3: (2, False), 4: (2, True), 5: (1, True), 6: (3, False), 7: (3, True), 8: (1, False)}
    if orientation not in turns:
        return values
    rotations, mirror = turns[orientation]
    if mirror:
        values = values[:, ::-1]
    return np.ascontiguousarray(np.rot90(values, rotations))


def _decode(source: DepthSource, max_pixels: int, exr_channel: str) -> _Decoded:
    if isinstance(source, Image.Image):
        check_pixels("the depth map", source.width, source.height, max_pixels)
        return _Decoded(_from_pil(source), "the depth map", normalized=source.mode != "F")
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            check_pixels("the depth map", source.shape[1], source.shape[0], max_pixels)
        normalized = np.issubdtype(source.dtype, np.integer)
        return _Decoded(_from_array(source), "the depth map", normalized=normalized)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode_encoded(bytes(source), "the depth map", max_pixels, exr_channel)
    path = Path(source)
    if not path.is_file():
        raise DepthMapError(f"depth map file not found: {path}")
    return _decode_encoded(path.read_bytes(), f"depth map {path}", max_pixels, exr_channel)




def decode_depth(
    source: DepthSource,
    *,
    kind: str = "auto",
    distance_range: tuple[float, float] | None = None,
    exr_channel: str = "",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedDepth:
    """Decode a user depth map and bring it to inverse depth (larger = nearer); see the module docstring.

    Encoded data (bytes, files) larger than max_pixels is refused from its header, before decoding.
    """
    if kind not in DEPTH_KINDS:
        raise DepthMapError(f"depth kind must be one of {', '.join(DEPTH_KINDS)}, got {kind!r}")
    if distance_range is not None:
        distance_range = check_distance_range(distance_range)
    decoded = _decode(source, max_pixels, exr_channel)
    if kind == "auto":
        kind = "distance" if decoded.exr_channel or distance_range is not None else "inverse"
    if kind == "inverse":
        if distance_range is not None:
            raise DepthMapError(
                "a distance range applies to distance maps only: set the depth kind to 'distance' "
                "(larger = farther) or leave the range out"
            )
        return DecodedDepth(check_finite(decoded.values, decoded.name), "inverse", exr_channel=decoded.exr_channel)
    result = distance_to_inverse(
        decoded.values, normalized=decoded.normalized, distance_range=distance_range, name=decoded.name
    )
    result.exr_channel = decoded.exr_channel
    return result


def load_depth(
    source: DepthSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    kind: str = "auto",
    distance_range: tuple[float, float] | None = None,
    exr_channel: str = "",
) -> np.ndarray:
    """decode_depth(...).depth: a user depth map as float32 HxW inverse depth (larger = nearer)."""
    return decode_depth(
        source, kind=kind, distance_range=distance_range, exr_channel=exr_channel, max_pixels=max_pixels
    ).depth






def check_finite(depth: np.ndarray, name: str = "depth map") -> np.ndarray:
    if not np.isfinite(depth).all():
        bad = int((~np.isfinite(depth)).sum())
        raise DepthMapError(
            f"{name} contains {bad} NaN or infinite values; fill or remove them before using the map "
            "(a renderer's distance pass with an infinite background: depth kind 'distance')"
        )
    return depth


# ---- post-processing: pure functions, each optional ------------------------------------------






























# ---- fitting a map to the target's aspect ratio ----------------------------------------------










# ---- output ----------------------------------------------------------------------------------












