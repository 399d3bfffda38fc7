"""The WebUI's Settings of this extension and its X/Y/Z grid axes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from depth2img.base.limits import DEFAULT_MAX_PIXELS

KEEP_ESTIMATOR_SETTING = "depth2img_keep_estimator"
API_FOLDERS_SETTING = "depth2img_api_folders"


XYZ_OVERRIDES_ATTR = "_depth2img_xyz"


def _as_bool(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def xyz_setter(field: str, convert: Callable, *, turns_on: tuple[str, ...] = ()):
    """An XYZ axis' apply(p, value, values): records the cell's setting on p (read by the script's args).
    turns_on: settings the axis implies (a band axis means the mask from a depth band is on)."""

    def apply(p, value, _values):
        overrides = dict(getattr(p, XYZ_OVERRIDES_ATTR, None) or {})
        overrides[field] = convert(value)
        for implied in ("enabled", *turns_on):  # a Depth2Img axis means Depth2Img is on for that cell
            overrides.setdefault(implied, True)
        setattr(p, XYZ_OVERRIDES_ATTR, overrides)

    return apply


def xyz_axes(estimator_names: Callable[[], list[str]]) -> list[tuple]:
    """(label, type, apply, choices or None) of each axis, for the WebUI's xyz_grid.AxisOption."""
    return [
        ("[Depth2Img] Estimator", str, xyz_setter("estimator", str), estimator_names),
        ("[Depth2Img] Invert", str, xyz_setter("invert", _as_bool), lambda: ["False", "True"]),
        ("[Depth2Img] Near clip", float, xyz_setter("clip_near", float), None),
        ("[Depth2Img] Far clip", float, xyz_setter("clip_far", float), None),
        ("[Depth2Img] Gamma", float, xyz_setter("gamma", float), None),
        ("[Depth2Img] Blur", float, xyz_setter("blur", float), None),
        # "lo hi" per cell (space-separated: the grid splits cells at commas); checked by the args schema.
        ("[Depth2Img] Depth range", str, xyz_setter("depth_range", str), None),
        ("[Depth2Img] Mask band low", float, xyz_setter("mask_low", float, turns_on=("mask_from_depth",)), None),
        ("[Depth2Img] Mask band high", float, xyz_setter("mask_high", float, turns_on=("mask_from_depth",)), None),
    ]


# (name, default, label, slider range or None): the WebUI's settings, in its "Depth2Img" section.
SETTINGS = (
    (
        "depth2img_takeover",
        True,
        "With a depth model loaded, use Depth2Img's conditioning even when its panel is off "
        "(fp16/OpenCV, device, batch and flat-map fixes)",
        None,
    ),
    ("depth2img_cache_size", 8, "Depth maps kept in memory across jobs", {"minimum": 0, "maximum": 64, "step": 1}),
    (
        KEEP_ESTIMATOR_SETTING,
        False,
        "Keep the estimator in memory between jobs (model folders, ControlNet's preprocessors; off: loaded for "
        "each job and freed after it. The depth checkpoint's own MiDaS is part of the model and always stays)",
        None,
    ),
    (
        "depth2img_max_megapixels",
        DEFAULT_MAX_PIXELS / 1e6,
        "Largest depth map or estimate-API image accepted, in megapixels (larger ones are refused before decoding)",
        {"minimum": 1, "maximum": 1024, "step": 1},
    ),
    (
        API_FOLDERS_SETTING,
        False,
        "Let API requests name a depth map folder on this server (depth_dir; never with --hide-ui-dir-config). "
        "Off: only the img2img batch tab reads one",
        None,
    ),
)


def add_settings(opts, option_info, slider) -> None:
    """SETTINGS in the WebUI's Settings, section "Depth2Img" (category "Stable Diffusion" where it has them)."""
    kwargs = {"section": ("depth2img", "Depth2Img")}
    if "category_id" in inspect.signature(option_info.__init__).parameters:
        kwargs["category_id"] = "sd"  # settings categories (v1.8+)
    for name, default, label, slider_range in SETTINGS:
        opts.add_option(name, option_info(default, label, slider if slider_range else None, slider_range, **kwargs))


def add_xyz_axes(xyz, estimator_names: Callable[[], list[str]]) -> None:
    """Our axes in the X/Y/Z grid script's list (once: the WebUI may build its UI again)."""
    axes = [
        xyz.AxisOption(label, kind, apply, choices=choices) if choices else xyz.AxisOption(label, kind, apply)
        for label, kind, apply, choices in xyz_axes(estimator_names)
    ]
    known = {axis.label for axis in xyz.axis_options}
    xyz.axis_options.extend(axis for axis in axes if axis.label not in known)
