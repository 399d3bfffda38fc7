"""User depth maps: decode, convert distance to inverse depth, post-process, fit to a target size, encode.

A depth map here is a float32 numpy array HxW, finite, larger = nearer (white = near, as MiDaS
outputs). Integer images are scaled to [0, 1] by their bit depth so an 8-bit and a 16-bit export
of the same map agree; float data keeps its values (conditioning normalizes per sample anyway).

What a file holds (`kind`, the args' `depth_kind`):
- "inverse": larger = nearer (MiDaS, Depth Anything, the DepthMap extension): used as is.
- "distance": larger = farther (a renderer's Z pass, a metric depth map, a normalized Z-pass PNG where black
  = near). It becomes inverse depth 1/d (distance_to_inverse), which is what SD 2's depth model was trained
  on (MiDaS' relative inverse depth), not a flipped copy (1 - d bends every slope).
- "auto" (the default): EXR files are "distance" (they carry a renderer's Z), and so is any map given a
  distance_range; every other map is "inverse".
A normalized distance map (8/16-bit images, EXR Mist, any map given a distance_range) holds 0 = near .. 1 = far:
its distances are near + v * (far - near), exact only with the scene's [near, far]; without one
DEFAULT_DISTANCE_RANGE is used and the result says it is approximate. Float maps (EXR Z, float TIFF, .npy)
hold distances in scene units: exact as they are.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from depth2img.base.limits import DEFAULT_MAX_PIXELS, DepthMapError, ImageTooLargeError, check_pixels
from depth2img.source import exr
from depth2img.source import gate as image_gate

__all__ = ["DEFAULT_MAX_PIXELS", "DepthMapError", "ImageTooLargeError", "check_pixels"]  # re-exported

DepthSource = str | Path | bytes | Image.Image | np.ndarray

DEPTH_KINDS = ("auto", "inverse", "distance")

# A normalized distance map without a given range is read as if its near end were at 1 and its far end at 10
# (scene units do not matter: inverse depth is normalized per sample later). A far/near ratio of 10 is a room,
# a street or a landscape's foreground; exact for no particular scene, so such results are marked approximate.
DEFAULT_DISTANCE_RANGE = (1.0, 10.0)

# Distances at or above this (Blender writes 1e10 where no geometry is; half-float files hold inf) are background:
# they become the far plane (the farthest real distance) and are left out of the range, which they would
# otherwise stretch so far that the whole scene became one gray.
BACKGROUND_DISTANCE = 1e9

# The floor of 1/d for distances in scene units: a distance below farthest / MAX_DISTANCE_RATIO counts as that
# (zero or negative values from a broken pass included), so one stray pixel cannot squash the rest of the map.
MAX_DISTANCE_RATIO = 1000.0


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


@dataclass
class DecodedDepth:
    """A user depth map as the pipeline uses it, and how it was read."""

    depth: np.ndarray  # float32 HxW, finite, larger = nearer
    kind: str  # "inverse" or "distance": how the file was read ("auto" resolved)
    approximate: bool = False  # a normalized distance map converted without its distance range
    notice: str = ""  # what the user should know about the conversion ("" when nothing); the CLI prints it
    exr_channel: str = ""  # the EXR channel read ("" for other formats)


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


def check_distance_range(distance_range) -> tuple[float, float]:
    try:
        near, far = (float(v) for v in distance_range)
    except (TypeError, ValueError) as error:
        raise DepthMapError(f"a distance range is two numbers [near, far], got {distance_range!r}") from error
    if not (np.isfinite(near) and np.isfinite(far) and 0.0 < near < far):
        raise DepthMapError(
            f"a distance range needs 0 < near < far (in scene units; near is the camera's clip start or the "
            f"nearest surface, never 0: inverse depth 1/d is infinite there), got [{near:g}, {far:g}]"
        )
    return near, far


def distance_to_inverse(
    distance: np.ndarray,
    *,
    normalized: bool,
    distance_range: tuple[float, float] | None = None,
    name: str = "the depth map",
) -> DecodedDepth:
    """Distance (larger = farther) -> inverse depth 1/d (larger = nearer).

    - Background (>= BACKGROUND_DISTANCE or +inf) takes the far plane's inverse depth and stays out of the range.
    - normalized maps, or any map given distance_range: values 0..1 are near + v * (far - near); without a
      range DEFAULT_DISTANCE_RANGE, and the result is marked approximate.
    - otherwise distances in scene units: 1 / max(d, farthest / MAX_DISTANCE_RATIO).
    """
    distance = np.asarray(distance, dtype=np.float32)
    if np.isnan(distance).any() or np.isneginf(distance).any():
        bad = int((np.isnan(distance) | np.isneginf(distance)).sum())
        raise DepthMapError(f"{name} has {bad} NaN or -inf distances; fill or remove them before using the map")
    background = np.isposinf(distance) | (distance >= BACKGROUND_DISTANCE)
    scene = distance[~background]
    if scene.size == 0:
        raise DepthMapError(
            f"{name} is all background (distances >= {BACKGROUND_DISTANCE:g} or inf): nothing was rendered; "
            "check that the depth pass is the one you meant"
        )
    notes, approximate = [], False
    if normalized or distance_range is not None:
        low, high = float(scene.min()), float(scene.max())
        if low < -1e-6 or high > 1.0 + 1e-6:
            raise DepthMapError(
                f"{name} holds values from {low:g} to {high:g}, not normalized distances 0..1: a map in scene "
                "units needs no distance range (leave it out); a normalized one must stay within 0..1"
            )
        if distance_range is None:
            approximate = True
            distance_range = DEFAULT_DISTANCE_RANGE
            notes.append(
                f"{name} holds normalized distances (0 = near, 1 = far) and no distance range was given: "
                f"converted as if near = {DEFAULT_DISTANCE_RANGE[0]:g} and far = {DEFAULT_DISTANCE_RANGE[1]:g}, "
                "so the result is approximate; give the scene's range (CLI --distance-range NEAR FAR, "
                "API distance_range) for exact inverse depth"
            )
        near, far = distance_range
        inverse = 1.0 / (near + np.clip(distance, 0.0, 1.0) * (far - near))
        far_plane = 1.0 / far
    else:
        farthest = float(scene.max())
        if farthest <= 0.0:
            raise DepthMapError(f"{name} has no positive distances (the farthest is {farthest:g}); is it inverted?")
        floor = farthest / MAX_DISTANCE_RATIO
        clamped = int((scene < floor).sum())
        if clamped:
            notes.append(
                f"{name}: {clamped} pixels are nearer than 1/{MAX_DISTANCE_RATIO:g} of the farthest distance "
                f"(e.g. 0) and were set to {floor:g}; if the map is normalized 0..1, give a distance range"
            )
        inverse = 1.0 / np.maximum(distance, floor)
        far_plane = 1.0 / farthest
    inverse = np.where(background, far_plane, inverse).astype(np.float32)
    return DecodedDepth(inverse, "distance", approximate=approximate, notice=" ".join(notes))


def check_finite(depth: np.ndarray, name: str = "depth map") -> np.ndarray:
    if not np.isfinite(depth).all():
        bad = int((~np.isfinite(depth)).sum())
        raise DepthMapError(
            f"{name} contains {bad} NaN or infinite values; fill or remove them before using the map "
            "(a renderer's distance pass with an infinite background: depth kind 'distance')"
        )
    return depth


# ---- post-processing: pure functions, each optional ------------------------------------------


@dataclass(frozen=True)
class PostprocessScale:
    """The values post-processing takes from maps: the clip's (low, high) and the bounds that gamma and invert
    work within. None: this map's own (its clip percentiles; its min and max after the clip).

    Of one map by default (each map its own scale: what a single job does); of a whole set, so that every map of a
    sequence or a batch folder is processed alike and one depth range means one scale (set_scale); or a user's
    depth_range, within which gamma and invert work for every map (within_range). The settings decide which steps
    run; the scale only gives their values.
    """

    clip: tuple[float, float] | None = None
    bounds: tuple[float, float] | None = None

    def as_json(self) -> dict:
        return {"clip": None if self.clip is None else list(self.clip),
                "bounds": None if self.bounds is None else list(self.bounds)}

    @classmethod
    def within_range(cls, depth_range: tuple[float, float]) -> PostprocessScale:
        return cls(bounds=(float(depth_range[0]), float(depth_range[1])))


@dataclass(frozen=True)
class MapStatistics:
    """What a set's scale needs of one map: its exact min and max and its values on a grid (for percentiles)."""

    minimum: float
    maximum: float
    sample: np.ndarray

    @classmethod
    def of(cls, depth: np.ndarray) -> MapStatistics:
        return cls(float(depth.min()), float(depth.max()), grid_sample(depth)[0].ravel())


# Statistics of a set come from a regular grid of at most this many pixels per map (actual values, no
# interpolation): exact enough for percentiles, and a thousand maps stay in memory.
GRID_SAMPLE_PIXELS = 65536


def grid_sample(depth: np.ndarray, max_pixels: int = GRID_SAMPLE_PIXELS) -> tuple[np.ndarray, int]:
    """(the map's values on a regular grid of at most max_pixels pixels, the grid's spacing in pixels)."""
    step = max(1, int(np.ceil(np.sqrt(depth.size / max_pixels))))
    return np.ascontiguousarray(depth[::step, ::step]), step


def set_scale(statistics: list[MapStatistics], clip_near: float = 100.0, clip_far: float = 0.0) -> PostprocessScale:
    """One scale for a set of unprocessed maps: the clip percentiles over all their pixels (their grid samples)
    and the bounds over all of them (the set's min and max, within the clip), the same for every map."""
    if not statistics:
        raise DepthMapError("no depth maps to take a shared post-processing scale from")
    low, high = min(s.minimum for s in statistics), max(s.maximum for s in statistics)
    if not _clip_on(clip_near, clip_far):
        return PostprocessScale(bounds=(low, high))
    _check_clip(clip_near, clip_far)
    clip_low, clip_high = (float(v) for v in np.percentile(np.concatenate([s.sample for s in statistics]),
                                                           [clip_far, clip_near]))
    return PostprocessScale(clip=(clip_low, clip_high), bounds=(max(low, clip_low), min(high, clip_high)))


def _clip_on(clip_near: float, clip_far: float) -> bool:
    return clip_near < 100.0 or clip_far > 0.0


def _check_clip(near: float, far: float) -> None:
    if not 0.0 <= far < near <= 100.0:
        raise DepthMapError(f"clip percentiles need 0 <= far < near <= 100, got far={far}, near={near}")


def _own_bounds(depth: np.ndarray, bounds: tuple[float, float] | None) -> tuple[float, float]:
    return bounds if bounds is not None else (float(depth.min()), float(depth.max()))


def invert(depth: np.ndarray, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Swap near and far within the bounds (default: the map's own min and max), keeping the value range."""
    low, high = _own_bounds(depth, bounds)
    return (low + high - depth).astype(np.float32)


def clip_percentiles(
    depth: np.ndarray, near: float = 100.0, far: float = 0.0, values: tuple[float, float] | None = None
) -> np.ndarray:
    """Clamp to the [far, near] percentiles (0-100; values: the set's, else the map's own): flattens outliers."""
    _check_clip(near, far)
    low, high = values if values is not None else np.percentile(depth, [far, near])
    return np.clip(depth, low, high).astype(np.float32)


def apply_gamma(depth: np.ndarray, gamma: float, bounds: tuple[float, float] | None = None) -> np.ndarray:
    """Gamma within the bounds (default: the map's own min and max), in the map's units: each value's place
    between low and high is raised to gamma; gamma > 1 pushes detail towards the near end."""
    if gamma <= 0:
        raise DepthMapError(f"gamma must be > 0, got {gamma}")
    low, high = _own_bounds(depth, bounds)
    if high - low <= 0:
        return np.full_like(depth, low, dtype=np.float32)
    place = np.clip((depth - low) / (high - low), 0.0, 1.0)
    return (low + (high - low) * place**gamma).astype(np.float32)


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
    scale: PostprocessScale | None = None,
) -> np.ndarray:
    """Apply the optional steps in a fixed order: clip, gamma, blur, invert. Defaults change nothing.

    scale: the values the steps take (PostprocessScale); None: this map's own. Gamma and invert work within one
    pair of bounds, taken after the clip and before the blur (the blur keeps values inside them).
    """
    if is_identity(invert_depth=invert_depth, clip_near=clip_near, clip_far=clip_far, gamma=gamma,
                   blur_radius=blur_radius):
        return depth
    scale = scale or PostprocessScale()
    if _clip_on(clip_near, clip_far):
        depth = clip_percentiles(depth, clip_near, clip_far, scale.clip)
    bounds = _own_bounds(depth, scale.bounds) if (gamma != 1.0 or invert_depth) else None
    if gamma != 1.0:
        depth = apply_gamma(depth, gamma, bounds)
    if blur_radius > 0:
        depth = blur(depth, blur_radius)
    if invert_depth:
        depth = invert(depth, bounds)
    return depth


def is_identity(
    *,
    invert_depth: bool = False,
    clip_near: float = 100.0,
    clip_far: float = 0.0,
    gamma: float = 1.0,
    blur_radius: float = 0.0,
    scale: PostprocessScale | None = None,
) -> bool:
    """True when postprocess() with these settings returns the map untouched (the very same array)."""
    return not (_clip_on(clip_near, clip_far) or gamma != 1.0 or blur_radius > 0 or invert_depth)


# ---- fitting a map to the target's aspect ratio ----------------------------------------------


class ResizeMode(int, Enum):
    """The WebUI's img2img resize modes, applied to a depth map whose aspect differs from the target."""

    JUST_RESIZE = 0  # stretch to the target
    CROP_AND_RESIZE = 1  # scale to cover the target, crop the centre
    RESIZE_AND_FILL = 2  # scale to fit inside, fill the borders with the edge values


def fit_aspect(
    depth: np.ndarray, width: int, height: int, mode: ResizeMode | int, source_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Crop or pad the map (HxW, or HxWxC for images; in its own resolution, no resampling) to the target's aspect.

    The one resampling happens later, when the conditioning is resized bicubically to the latent size,
    so a map is never interpolated twice. JUST_RESIZE returns the map unchanged (the stretch happens there).
    source_size: (width, height) of the picture the map covers. A map of another aspect (an estimator rounds its
    map's sides to its multiples: 912x512 -> 672x384; an uploaded map is taken as its picture's) is first brought
    to that size, so the crop or pad is the picture's and the depth lines up with it.
    """
    mode = ResizeMode(mode)
    if mode is ResizeMode.JUST_RESIZE:
        return depth
    if source_size is not None and depth.shape[1] * source_size[1] != depth.shape[0] * source_size[0]:
        depth = resize(depth, *source_size)
    h, w = depth.shape[:2]
    if w * height == h * width:
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
    from depth2img.base.files import write_bytes_atomic

    path = Path(path)
    return write_bytes_atomic(path, encode_depth(depth, path.suffix))


def colorize(depth: np.ndarray) -> np.ndarray:
    """RGB uint8 preview with a perceptual colour map (near = bright)."""
    gray8 = (to_uint16(depth) >> 8).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray8, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
