"""User depth maps: decode, post-process, fit to a target size, encode.

A depth map here is a float32 numpy array HxW, finite, larger = nearer (white = near, as MiDaS
outputs). Integer images are scaled to [0, 1] by their bit depth so an 8-bit and a 16-bit export
of the same map agree; float data keeps its values (conditioning normalizes per sample anyway).
"""

from __future__ import annotations

import io
import warnings
from enum import Enum
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DepthSource = str | Path | bytes | Image.Image | np.ndarray

_NPY_MAGIC = b"\x93NUMPY"

# Largest image (depth map or init image) decoded, in pixels: far above any real depth map or photo that
# SD 2 can use, far below what takes a machine down (OpenCV decodes up to 2^30 pixels: 4 GB as float32).
# The WebUI has a setting for it, the CLI --max-megapixels.
DEFAULT_MAX_PIXELS = 64_000_000


class DepthMapError(ValueError):
    """A depth map that cannot be used; the message says what is wrong and what to do."""


class ImageTooLargeError(DepthMapError):
    """An image whose header declares more pixels than the limit; nothing was decoded."""

    def __init__(self, what: str, size: str, max_pixels: int):
        self.max_pixels = max_pixels
        super().__init__(
            f"{what} is {size}, above the limit of {max_pixels / 1e6:g} megapixels; "
            "use a smaller image or raise the limit"
        )


def _npy_shape(data: bytes) -> tuple[int, ...]:
    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return reader(stream)[0]


def _header_size(data: bytes) -> tuple[int, int] | str | None:
    """(width, height) from an encoded image's header without decoding its pixels; None if PIL cannot tell.

    Pillow refuses to open images above twice its own limit, before anyone sees their size: then a text
    saying at least how large it is.
    """
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
        try:
            with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
                return image.size
        except Image.DecompressionBombError:
            return f"over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels"
        except (UnidentifiedImageError, OSError, ValueError):
            return None


def check_pixels(what: str, width: int, height: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(what, f"{width}x{height} ({width * height / 1e6:.1f} megapixels)", max_pixels)


def check_encoded_size(data: bytes, what: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse an encoded image or .npy whose header declares more than max_pixels, before decoding it."""
    if data[: len(_NPY_MAGIC)] == _NPY_MAGIC:
        try:
            shape = _npy_shape(data)
        except ValueError:  # a malformed header: the decoder names the problem
            return
        size = (shape[1], shape[0]) if len(shape) >= 2 else None
    else:
        size = _header_size(data)
    if isinstance(size, str):
        raise ImageTooLargeError(what, size, max_pixels)
    if size is not None:
        check_pixels(what, size[0], size[1], max_pixels)


def open_image(source: str | Path | bytes, what: str, max_pixels: int = DEFAULT_MAX_PIXELS):
    """A fully loaded PIL image from a path or bytes, refused before decoding when larger than max_pixels."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise DepthMapError(f"{what} not found: {path}")
        data, name = path.read_bytes(), f"{what} {path}"
    else:
        data, name = bytes(source), what
    check_encoded_size(data, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit was applied above
            image = Image.open(io.BytesIO(data))
            image.load()
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DepthMapError(f"{name} is not a readable image ({error})") from error
    return image


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
    return check_finite(depth)


def _from_pil(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return _from_array(np.array(image, dtype=np.uint16))
    if image.mode == "I":
        # 32-bit integer mode; PIL opens 16-bit PNGs this way, so scale by 16 bits when values fit.
        data = np.array(image, dtype=np.int64)
        bits = 16 if data.max(initial=0) <= 65535 and data.min(initial=0) >= 0 else 32
        return check_finite((data / float(2**bits - 1)).astype(np.float32))
    if image.mode == "F":
        return _from_array(np.array(image, dtype=np.float32))
    if image.mode in ("L", "LA"):
        return _from_array(np.array(image.getchannel(0)))
    return _from_array(np.array(image.convert("RGB")))


def _from_encoded(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    check_encoded_size(data, name, max_pixels)
    if data[: len(_NPY_MAGIC)] == _NPY_MAGIC:
        return _from_array(np.load(io.BytesIO(data), allow_pickle=False))
    # OpenCV keeps 16-bit PNG/TIFF and float32 TIFF data that PIL would reduce.
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise DepthMapError(
            f"{name} is not a readable image: use a PNG (8/16-bit), TIFF (16-bit or float) or .npy file"
        )
    return _from_array(decoded, channel_order="BGR")


def load_depth(source: DepthSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a user depth map into float32 HxW (larger = nearer).

    Encoded data (bytes, files) larger than max_pixels is refused from its header, before decoding.
    """
    if isinstance(source, Image.Image):
        check_pixels("the depth map", source.width, source.height, max_pixels)
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            check_pixels("the depth map", source.shape[1], source.shape[0], max_pixels)
        return _from_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_encoded(bytes(source), "the depth map", max_pixels)
    path = Path(source)
    if not path.is_file():
        raise DepthMapError(f"depth map file not found: {path}")
    return _from_encoded(path.read_bytes(), f"depth map {path}", max_pixels)


def check_finite(depth: np.ndarray) -> np.ndarray:
    if not np.isfinite(depth).all():
        bad = int((~np.isfinite(depth)).sum())
        raise DepthMapError(
            f"depth map contains {bad} NaN or infinite values; fill or remove them before using the map"
        )
    return depth


# ---- post-processing: pure functions, each optional ------------------------------------------


def invert(depth: np.ndarray) -> np.ndarray:
    """Swap near and far, keeping the value range."""
    return (depth.max() + depth.min() - depth).astype(np.float32)


def clip_percentiles(depth: np.ndarray, near: float = 100.0, far: float = 0.0) -> np.ndarray:
    """Clamp to the [far, near] percentiles (0-100): flattens outliers at either end."""
    if not 0.0 <= far < near <= 100.0:
        raise DepthMapError(f"clip percentiles need 0 <= far < near <= 100, got far={far}, near={near}")
    low, high = np.percentile(depth, [far, near])
    return np.clip(depth, low, high).astype(np.float32)


def apply_gamma(depth: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on the map normalized to [0, 1]; gamma > 1 pushes detail towards the near end."""
    if gamma <= 0:
        raise DepthMapError(f"gamma must be > 0, got {gamma}")
    low, high = float(depth.min()), float(depth.max())
    if high - low <= 0:
        return np.zeros_like(depth, dtype=np.float32)
    return (((depth - low) / (high - low)) ** gamma).astype(np.float32)


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
) -> np.ndarray:
    """Apply the optional steps in a fixed order: clip, gamma, blur, invert. Defaults change nothing."""
    for step in _postprocess_steps(invert_depth, clip_near, clip_far, gamma, blur_radius):
        depth = step(depth)
    return depth


def is_identity(
    *,
    invert_depth: bool = False,
    clip_near: float = 100.0,
    clip_far: float = 0.0,
    gamma: float = 1.0,
    blur_radius: float = 0.0,
) -> bool:
    """True when postprocess() with these settings returns the map untouched (the very same array)."""
    return not _postprocess_steps(invert_depth, clip_near, clip_far, gamma, blur_radius)


def _postprocess_steps(invert_depth, clip_near, clip_far, gamma, blur_radius) -> list:
    # The one place that decides which steps run: postprocess() and is_identity() both read it.
    steps = []
    if clip_near < 100.0 or clip_far > 0.0:
        steps.append(lambda d: clip_percentiles(d, clip_near, clip_far))
    if gamma != 1.0:
        steps.append(lambda d: apply_gamma(d, gamma))
    if blur_radius > 0:
        steps.append(lambda d: blur(d, blur_radius))
    if invert_depth:
        steps.append(invert)
    return steps


# ---- fitting a map to the target's aspect ratio ----------------------------------------------


class ResizeMode(int, Enum):
    """The WebUI's img2img resize modes, applied to a depth map whose aspect differs from the target."""

    JUST_RESIZE = 0  # stretch to the target
    CROP_AND_RESIZE = 1  # scale to cover the target, crop the centre
    RESIZE_AND_FILL = 2  # scale to fit inside, fill the borders with the edge values


def fit_aspect(depth: np.ndarray, width: int, height: int, mode: ResizeMode | int) -> np.ndarray:
    """Crop or pad the map (HxW, or HxWxC for images; in its own resolution, no resampling) to the target's aspect.

    The one resampling happens later, when the conditioning is resized bicubically to the latent size,
    so a map is never interpolated twice. JUST_RESIZE returns the map unchanged (the stretch happens there).
    """
    mode = ResizeMode(mode)
    h, w = depth.shape[:2]
    if mode is ResizeMode.JUST_RESIZE or w * height == h * width:
        return depth
    target_ratio = width / height
    if mode is ResizeMode.CROP_AND_RESIZE:
        if w / h > target_ratio:  # too wide: crop the sides
            new_w = max(1, round(h * target_ratio))
            left = (w - new_w) // 2
            return depth[:, left : left + new_w]
        new_h = max(1, round(w / target_ratio))
        top = (h - new_h) // 2
        return depth[top : top + new_h, :]
    # RESIZE_AND_FILL: pad with replicated edges (a depth map has no "background colour").
    if w / h > target_ratio:
        pad = max(0, round(w / target_ratio) - h)
        top, bottom, left, right = pad // 2, pad - pad // 2, 0, 0
    else:
        pad = max(0, round(h * target_ratio) - w)
        top, bottom, left, right = 0, 0, pad // 2, pad - pad // 2
    return cv2.copyMakeBorder(depth, top, bottom, left, right, cv2.BORDER_REPLICATE)


def fit_image(image: Image.Image, width: int, height: int, mode: ResizeMode | int, resample: int) -> Image.Image:
    """An init image or mask fitted exactly as its depth map is (fit_aspect), then resized to width x height.

    Padding replicates the edge pixels, as the WebUI's "resize and fill" stretches the edge rows into the gap.
    """
    fitted = fit_aspect(np.asarray(image), width, height, mode)
    result = Image.fromarray(np.ascontiguousarray(fitted))
    return result if result.size == (width, height) else result.resize((width, height), resample)


def resize(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize to width x height, in float32 (for saving a map at its image's size)."""
    if depth.shape == (height, width):
        return depth
    return cv2.resize(depth.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


# ---- output ----------------------------------------------------------------------------------


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
    from .files import write_bytes_atomic

    path = Path(path)
    return write_bytes_atomic(path, encode_depth(depth, path.suffix))


def colorize(depth: np.ndarray) -> np.ndarray:
    """RGB uint8 preview with a perceptual colour map (near = bright)."""
    gray8 = (to_uint16(depth) >> 8).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
