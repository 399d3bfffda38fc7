"""The CLI flags that mirror a schema setting one to one: --invert is `invert`, --clip-near is `clip_near`, ...

Each flag's default, type and choices come from the schema (Depth2ImgArgs' field defaults, its choices), so the
CLI cannot drift from the WebUI's panel and API; only the flags' help lives here. Flags that do not mirror a
setting (--mask-depth LOW:HIGH, --image, --steps, ...) are written by hand in depth2img.standalone.cli.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from depth2img.schema.args import Depth2ImgArgs, choices_of, is_pair

# Setting -> the flag's help (and metavar where argparse's own would not do).
MIRRORED: dict[str, dict] = {
    "invert": {"help": "swap near and far in the depth map"},
    "clip_near": {"help": "clamp depth above this percentile"},
    "clip_far": {"help": "clamp depth below this percentile"},
    "gamma": {},
    "blur": {"help": "Gaussian blur sigma in pixels"},
    "depth_range": {
        "metavar": ("LO", "HI"),
        "help": "condition on this fixed range of the processed map (LO -> far, HI -> near, clamped) instead of "
        "the map's own min-max",
    },
    "depth_kind": {
        "help": "what --depth holds: inverse (white = near), distance (larger = farther: a renderer's Z, a Z-pass PNG "
        "where black = near; converted to 1/distance); auto (default): EXR files and maps given --distance-range "
        "are distance, other files inverse",
    },
    "distance_range": {
        "metavar": ("NEAR", "FAR"),
        "help": "scene distances of a normalized distance map's 0 and 1 (8/16-bit PNG, EXR Mist); without it the "
        "conversion is approximate (near 1, far 10)",
    },
    "exr_channel": {
        "help": "EXR channel holding depth, part.channel in a multi-part file (default: ViewLayer.Depth.Z, Z, *.V, "
        "Mist, R=G=B)",
    },
    "mask_band_mode": {"help": "the band in percent of the depth range (default) or in percentiles of the pixels"},
    "mask_feather": {"metavar": "PX", "help": "soft edge, px"},
    "mask_grow": {"metavar": "PX", "help": "grow the mask (negative shrinks)"},
    "mask_invert": {"help": "select everything outside the band"},
    "mask_auto": {
        "help": "pick the band: the depth under the white strokes of --mask, or Otsu's split (the nearer part)",
    },
    "estimator": {
        "help": "checkpoint-midas (the depth checkpoint's own MiDaS, default), the name of a model folder in "
        "models/depth/, or the path of a transformers depth model folder (config.json, safetensors, "
        "preprocessor_config.json: DPT, GLPN, Depth Anything, ZoeDepth, ... as the installed transformers has)",
    },
}

_DEFAULTS = {f.name: f.default for f in fields(Depth2ImgArgs)}


def flag_name(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def flag_arguments(setting: str) -> dict:
    """add_argument's keywords for a mirrored setting: its kind, default and choices from the schema."""
    default = _DEFAULTS[setting]
    if isinstance(default, bool):
        kind = {"action": "store_true", "default": default}
    elif is_pair(setting):
        kind = {"nargs": 2, "type": float, "default": default}
    elif isinstance(default, (float, int)):
        kind = {"type": type(default), "default": default}
    else:
        kind = {"default": default}
        if choices_of(setting) is not None:
            kind["choices"] = choices_of(setting)
    return {**kind, **MIRRORED[setting]}


def add_mirrored(parser: argparse.ArgumentParser, *settings: str, **overrides) -> None:
    """The flags of these settings, in this order; overrides replace a keyword (e.g. help) for all of them."""
    for setting in settings:
        parser.add_argument(flag_name(setting), **{**flag_arguments(setting), **overrides})
