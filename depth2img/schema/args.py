"""The one args schema: every user-facing setting, shared by the WebUI UI, its API, infotext, XYZ axes and the CLI.

Plain dataclass + explicit checks (the core does not depend on pydantic, whose major version differs
between the WebUI and current releases). Unknown keys and out-of-range values are rejected with a message
naming the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, fields
from typing import Any

from depth2img.base.limits import DepthMapError
from depth2img.process.masks import MaskSettings
from depth2img.process.postprocessing import PostprocessScale
from depth2img.source.depth_kinds import DEPTH_KINDS, check_distance_range

SOURCES = ("estimate", "upload")
# The same choices as depth2img.process.masks (written out here: the schema names them to callers).
MASK_BAND_MODES = ("range", "percentile")
MASK_COMBINE_MODES = ("replace", "intersect", "union")
BATCH_DEPTH_SCALES = ("per-image", "global")
INFOTEXT_PREFIX = "Depth2Img"
# The batch tab's depth folder in the infotext: its name only, a fact about the run (never a pasted setting).
DEPTH_FOLDER_FACT = "depth folder"


class ArgsError(ValueError):
    """A bad setting; the message names the key."""


def _range(low: float, high: float) -> dict:
    return {"range": (low, high)}


@dataclass
class Depth2ImgArgs:
    enabled: bool = False
    source: str = "estimate"  # "estimate" from the init image | "upload" a depth map
    depth_image: str | bytes | None = None  # base64 PNG/TIFF/npy (data URL ok) or the UI's bytes, for "upload"
    estimator: str = "checkpoint-midas"
    invert: bool = False
    clip_near: float = 100.0  # percentile; depth above it is clamped
    clip_far: float = 0.0  # percentile; depth below it is clamped
    gamma: float = 1.0
    blur: float = 0.0  # Gaussian sigma, pixels
    return_depth: bool = False  # append the depth map to the outputs
    checkpoint: str = ""  # "" = use the loaded model; else a depth checkpoint's name
    depth_dir: str = ""  # img2img batch tab: folder of depth maps matched to the inputs by file name
    # What an uploaded map holds (depth2img.source.decoding): "auto" = EXR files (and maps given a distance_range) are
    # distance, others inverse |
    # "inverse" (white = near) | "distance" (larger = farther: a renderer's Z, a Z-pass PNG where black = near)
    depth_kind: str = "auto"
    distance_range: tuple[float, float] | None = None  # [near, far] in scene units of a normalized distance map
    exr_channel: str = ""  # the EXR channel holding depth; "" = found by Blender's names
    # (lo, hi) in the processed map's units: lo -> -1, hi -> +1 (clamped) instead of the map's own min-max.
    depth_range: tuple[float, float] | None = None
    # An inpainting mask from a depth band (depth2img.process.masks); off by default, so the rest changes nothing.
    mask_from_depth: bool = False
    mask_low: float = 0.0  # band, percent: 0 = farthest, 100 = nearest
    mask_high: float = 100.0
    mask_band_mode: str = "range"  # "range": percent of the map's range | "percentile": percent of its pixels
    mask_feather: float = 0.0  # px of Gaussian edge
    mask_grow: int = 0  # px; negative shrinks
    mask_invert: bool = False
    mask_combine: str = "replace"  # with a painted mask: "replace" | "intersect" | "union"
    mask_auto: bool = False  # band from the painted strokes' depth, or Otsu when nothing is painted
    # WebUI img2img batch tab: "global" = one depth range for the whole folder (a depth pass over every input
    # first, as a sequence's), "per-image" = each map's own min-max.
    batch_depth_scale: str = "per-image"

    def __post_init__(self) -> None:
        validate(self)

    # ---- construction from the hosts' shapes ----
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Depth2ImgArgs:
        if not isinstance(data, dict):
            raise ArgsError(f"depth2img args must be an object of named settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ArgsError(f"unknown depth2img arg(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**{k: _coerce(k, v) for k, v in data.items()})

    @classmethod
    def from_positional(cls, values: list | tuple) -> Depth2ImgArgs:
        names = [f.name for f in fields(cls)]
        if len(values) > len(names):
            raise ArgsError(f"depth2img takes at most {len(names)} positional args ({', '.join(names)})")
        return cls.from_dict(dict(zip(names, values, strict=False)))

    @classmethod
    def from_request(cls, args: list | tuple | dict | None) -> Depth2ImgArgs:
        """The API sends either [ {named args} ] or the UI's positional list."""
        if args is None or args == [] or args == ():
            return cls()
        if isinstance(args, dict):
            return cls.from_dict(args)
        if not isinstance(args, (list, tuple)):
            raise ArgsError(
                f"depth2img args must be a list ([{{named settings}}] or positional) or an object, "
                f"got {type(args).__name__}"
            )
        if isinstance(args[0], dict):
            # The WebUI API puts the request's args first and fills the other positions with UI defaults.
            return cls.from_dict(args[0])
        return cls.from_positional(args)

    # ---- outputs ----
    def postprocess_kwargs(self, scale=None) -> dict:
        """Keyword arguments of depthmap.postprocess. scale: a set's PostprocessScale (a batch folder's); else,
        with a depth_range, gamma and invert work within that range for every map (one range, one scale); else
        each map's own (PostprocessScale.for_job)."""
        return dict(
            invert_depth=self.invert,
            clip_near=self.clip_near,
            clip_far=self.clip_far,
            gamma=self.gamma,
            blur_radius=self.blur,
            scale=PostprocessScale.for_job(scale, self.depth_range),
        )

    def decode_kwargs(self) -> dict:
        """Keyword arguments of depthmap.decode_depth / load_depth for the uploaded map."""
        return dict(kind=self.depth_kind, distance_range=self.distance_range, exr_channel=self.exr_channel)

    def mask_settings(self):
        """depth2img.process.masks.MaskSettings, or None when the mask from a depth band is off."""
        if not self.mask_from_depth:
            return None
        return MaskSettings(
            low=self.mask_low,
            high=self.mask_high,
            mode=self.mask_band_mode,
            feather=self.mask_feather,
            grow=self.mask_grow,
            invert=self.mask_invert,
            combine=self.mask_combine,
            auto=self.mask_auto,
        )

    def to_infotext(self) -> dict[str, str]:
        """Settings that differ from the defaults, for the PNG info (never the depth image bytes)."""
        defaults = Depth2ImgArgs()
        out = {}
        for f in fields(self):
            # depth_dir is a server path: a shared PNG carries only the folder's name, as a fact (not pasted back).
            if f.name in ("depth_image", "return_depth", "depth_dir"):
                continue
            value = getattr(self, f.name)
            if f.name == "estimator" and ("/" in value or "\\" in value):
                value = value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]  # a model folder: its name only
            if f.name == "enabled" or value != getattr(defaults, f.name):
                out[f"{INFOTEXT_PREFIX} {f.name}"] = _infotext_value(value)
        if self.depth_dir:
            out[f"{INFOTEXT_PREFIX} {DEPTH_FOLDER_FACT}"] = _infotext_value(
                self.depth_dir.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
            )
        return out

    @classmethod
    def from_infotext(cls, params: dict[str, str]) -> Depth2ImgArgs | None:
        prefix = INFOTEXT_PREFIX + " "
        known = {f.name for f in fields(cls)}
        # Other "Depth2Img ..." entries are facts about the run (e.g. estimator calls), not settings.
        values = {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix) and k[len(prefix) :] in known}
        if not values:
            return None
        # An upload job's map is never in the infotext (as the WebUI's init image is not): its settings come back
        # with source "upload" and no map, for the user to give the map again; a job run so still asks for it.
        source = values.pop("source", None)
        args = cls.from_dict(values)
        if source is not None:
            args.source = _coerce("source", source)
            if args.source not in SOURCES:
                raise ArgsError(f"depth2img arg 'source' must be one of {', '.join(SOURCES)}, got {args.source!r}")
        return args


_CHECKS: dict[str, dict] = {
    "clip_near": _range(0.0, 100.0),
    "clip_far": _range(0.0, 100.0),
    "gamma": _range(0.05, 20.0),
    "blur": _range(0.0, 128.0),
    "mask_low": _range(0.0, 100.0),
    "mask_high": _range(0.0, 100.0),
    "mask_feather": _range(0.0, 256.0),
    "mask_grow": _range(-256, 256),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "source": SOURCES,
    "depth_kind": DEPTH_KINDS,
    "mask_band_mode": MASK_BAND_MODES,
    "mask_combine": MASK_COMBINE_MODES,
    "batch_depth_scale": BATCH_DEPTH_SCALES,
}


def choices_of(name: str) -> tuple[str, ...] | None:
    """The values a setting takes where it is a choice (the CLI's choices), else None."""
    return _CHOICES.get(name)


def is_pair(name: str) -> bool:
    """Whether a setting holds two numbers (or None)."""
    return name in _PAIR_NAMES


def _infotext_value(value: Any) -> str:
    if isinstance(value, tuple):  # "lo hi": no comma, so infotext needs no quoting; repr keeps every digit
        return " ".join(repr(float(v)) for v in value)
    return str(value)


# Settings that hold two numbers, with what the numbers are (for messages).
_PAIR_NAMES = {"depth_range": "[lo, hi]", "distance_range": "[near, far]"}


def _coerce_range(key: str, value: Any) -> tuple[float, float] | None:
    """Two numbers from the API's list or infotext's string ("0.1 0.9", "0.1,0.9", "(0.1, 0.9)");
    None, "" and "None" mean no range."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    parts = re.split(r"[\s,]+", value.strip().strip("()[]").strip()) if isinstance(value, str) else value
    try:
        if isinstance(parts, (str, bytes, dict)) or len(parts) != 2 or any(isinstance(v, bool) for v in parts):
            raise ValueError(value)
        low, high = float(parts[0]), float(parts[1])
    except (TypeError, ValueError) as error:
        raise ArgsError(f"depth2img arg {key!r} must be two numbers {_PAIR_NAMES[key]}, got {value!r}") from error
    return low, high


def _coerce(key: str, value: Any) -> Any:
    """Accept the string forms infotext and forms produce; type errors name the key."""
    if key in _PAIR_NAMES:
        return _coerce_range(key, value)
    field = next(f for f in fields(Depth2ImgArgs) if f.name == key)
    default = field.default if field.default is not MISSING else None
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            if not isinstance(value, (bool, int)):
                raise ValueError(value)
            return bool(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if isinstance(default, int):  # whole pixels; "3" and 3.0 are fine, 2.5 is not
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError(value)
            return int(float(value))
        if value is None:
            return None if key == "depth_image" else default
        if key == "depth_image" and isinstance(value, (bytes, bytearray)):
            return bytes(value)  # the UI's file upload
        return str(value)
    except (TypeError, ValueError, OverflowError) as error:
        kind = type(default).__name__ if default is not None else "string"
        raise ArgsError(f"depth2img arg {key!r} must be a {kind}, got {value!r}") from error


def validate(args: Depth2ImgArgs) -> None:
    for key, choices in _CHOICES.items():
        if getattr(args, key) not in choices:
            raise ArgsError(f"depth2img arg {key!r} must be one of {', '.join(choices)}, got {getattr(args, key)!r}")
    if args.distance_range is not None:
        try:
            args.distance_range = check_distance_range(args.distance_range)
        except DepthMapError as error:
            raise ArgsError(f"depth2img arg 'distance_range': {error}") from error
        if args.depth_kind == "inverse":
            raise ArgsError("depth2img arg 'distance_range' applies to distance maps: set 'depth_kind' to 'distance'")
    for key, check in _CHECKS.items():
        value = getattr(args, key)
        low, high = check["range"]
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ArgsError(f"depth2img arg {key!r} must be between {low} and {high}, got {value!r}")
    if args.clip_far >= args.clip_near:
        raise ArgsError(f"depth2img args 'clip_far' ({args.clip_far}) must be below 'clip_near' ({args.clip_near})")
    # The band relates two settings of the mask feature: checked only where that feature is on.
    if args.mask_from_depth and args.mask_low >= args.mask_high:
        raise ArgsError(
            f"depth2img args 'mask_low' ({args.mask_low}) must be below 'mask_high' ({args.mask_high}): the band is "
            "in percent, 0 = farthest, 100 = nearest"
        )
    if args.depth_range is not None:
        low, high = _coerce_range("depth_range", args.depth_range)
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ArgsError(
                f"depth2img arg 'depth_range' needs finite lo < hi (in the processed map's units), got [{low}, {high}]"
            )
        args.depth_range = (low, high)
    if args.enabled and args.source == "upload" and not args.depth_image:
        raise ArgsError("depth2img arg 'depth_image' is required when 'source' is 'upload'")


def requested_enabled(args: list | tuple | dict | None) -> bool:
    """Whether a request (either shape of from_request) turns Depth2Img on, read before anything else: with the
    panel off a job is the WebUI's own, whatever the other widgets hold (a stale estimator name, crossed
    sliders). Only a value of 'enabled' itself that is no boolean is an error."""
    if isinstance(args, dict):
        value = args.get("enabled", False)
    elif isinstance(args, (list, tuple)) and args:
        value = args[0].get("enabled", False) if isinstance(args[0], dict) else args[0]
    else:
        return False
    return _coerce("enabled", value)


def json_schema(names: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """JSON Schema of the named settings (type, default, range, choices), read from this schema: API docs."""
    properties: dict[str, Any] = {}
    for f in fields(Depth2ImgArgs):
        if f.name not in names:
            continue
        if isinstance(f.default, bool):
            prop: dict[str, Any] = {"type": "boolean"}
        elif isinstance(f.default, float):
            prop = {"type": "number"}
        elif isinstance(f.default, int):
            prop = {"type": "integer"}
        elif f.name in _PAIR_NAMES:
            prop = {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
        else:
            prop = {"type": "string"}
        if f.default is not None:
            prop["default"] = f.default
        if f.name in _CHECKS:
            prop["minimum"], prop["maximum"] = _CHECKS[f.name]["range"]
        if f.name in _CHOICES:
            prop["enum"] = list(_CHOICES[f.name])
        properties[f.name] = prop
    return {"type": "object", "properties": properties, "additionalProperties": False}
