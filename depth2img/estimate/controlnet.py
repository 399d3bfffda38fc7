"""The ControlNet extension's depth preprocessors as estimators (`controlnet:<preprocessor>`), in the WebUI.

Most WebUI users who want depth already have sd-webui-controlnet and its annotator weights. When it is loaded,
its preprocessor registry (the class `Preprocessor` in its `scripts/supported_preprocessor.py`, filled when its
scripts load) is in sys.modules; this module reads it from there and never imports ControlNet's code itself (so
nothing here runs without ControlNet, and the core never imports the WebUI). Not loaded -> no entries.

Each preprocessor is called in-process the way ControlNet's own `/controlnet/detect` route calls it:
`preprocessor.cached_call(rgb_uint8, resolution=..., slider_1=..., slider_2=...)` with the sliders at the
preprocessor's defaults. The resolution is the job's: the image's short side (ControlNet's "pixel perfect"),
kept within the preprocessor's resolution slider. Its output is an 8-bit map, white = near (every ControlNet
depth preprocessor normalizes to that convention), read as relative inverse depth in [0, 1].
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from depth2img.estimate.interface import DepthEstimator, autocast_off, caller_device, uint8_images

PREFIX = "controlnet:"
# Where ControlNet's registry lives once its scripts have loaded (the WebUI puts each extension's folder on
# sys.path while loading it, so its modules are named `scripts.*`).
REGISTRY_MODULE = "scripts.supported_preprocessor"
DEPTH_TAG = "Depth"
# Depth-tagged preprocessors that do not make a depth map of the whole scene.
NOT_SCENE_DEPTH = {"depth_hand_refiner"}  # repaints hands only (a mesh of detected hands on black)
# ControlNet's resolution slider range, for preprocessors that lack one.
RESOLUTION_RANGE = (64, 2048)

UNAVAILABLE = (
    "needs the sd-webui-controlnet extension, which is not loaded in this WebUI: install it from the Extensions "
    "tab and restart, or choose another estimator"
)


def registry():
    """ControlNet's Preprocessor class (its registry), or None when ControlNet is not loaded."""
    module = sys.modules.get(REGISTRY_MODULE)
    registry = getattr(module, "Preprocessor", None)
    return registry if isinstance(getattr(registry, "all_processors", None), dict) else None


def is_controlnet_name(name: str) -> bool:
    return name.startswith(PREFIX)


def _is_depth_preprocessor(preprocessor) -> bool:
    return (
        DEPTH_TAG in (getattr(preprocessor, "tags", None) or [])
        and preprocessor.label not in NOT_SCENE_DEPTH
        and getattr(preprocessor, "returns_image", True)
        and not getattr(preprocessor, "requires_mask", False)
    )


def depth_preprocessors() -> list:
    """ControlNet's depth preprocessors, by label; [] when ControlNet is not loaded."""
    found = registry()
    if found is None:
        return []
    return sorted((p for p in found.all_processors.values() if _is_depth_preprocessor(p)), key=lambda p: p.label)


def estimator_names() -> list[str]:
    return [PREFIX + p.label for p in depth_preprocessors()]


def find_preprocessor(name: str):
    """The preprocessor behind `controlnet:<label>`; ValueError saying why there is none."""
    label = name[len(PREFIX) :]
    found = registry()
    if found is None:
        raise ValueError(f"estimator {name!r} {UNAVAILABLE}")
    for preprocessor in depth_preprocessors():
        if label in (preprocessor.label, getattr(preprocessor, "name", None)):
            return preprocessor
    choices = ", ".join(estimator_names()) or "none"
    raise ValueError(f"ControlNet has no depth preprocessor {label!r}; its depth preprocessors: {choices}")


def _slider_value(preprocessor, slider: str):
    parameter = getattr(preprocessor, slider, None)
    return getattr(parameter, "value", None)


def job_resolution(preprocessor, height: int, width: int) -> int:
    """The image's short side, within the preprocessor's resolution slider (ControlNet's pixel-perfect size)."""
    slider = getattr(preprocessor, "slider_resolution", None)
    low = int(getattr(slider, "minimum", RESOLUTION_RANGE[0]))
    high = int(getattr(slider, "maximum", RESOLUTION_RANGE[1]))
    return max(low, min(high, min(height, width)))


def map_to_inverse_depth(value, label: str) -> np.ndarray:
    """A preprocessor's 8-bit output (HxW, or HxWx3 with equal channels after ControlNet's HWC3) -> [0, 1]."""
    array = np.asarray(value)
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2 or array.dtype != np.uint8:
        raise RuntimeError(
            f"ControlNet's {label} returned {array.dtype} data of shape {array.shape}, not an 8-bit depth map: "
            "choose another estimator"
        )
    return array.astype(np.float32) / 255.0


class ControlNetEstimator(DepthEstimator):
    """One of ControlNet's depth preprocessors (see the module docstring). Its weights are ControlNet's: it loads
    them on first use, where it keeps them, on its own device; release() asks it to unload them."""

    source = "controlnet"
    kind = "inverse"

    def __init__(self, preprocessor):
        self.preprocessor = preprocessor
        self.name = PREFIX + preprocessor.label
        self.label = f"ControlNet {preprocessor.label}"
        self._unloads = 0  # release() makes ControlNet load the weights again on the next call

    @property
    def cache_key(self) -> str:
        # Changes when ControlNet reloads its model: a new preprocessor object (its scripts reloaded), a model
        # object of its own that changed (where it keeps one as `model`), or an unload we asked for.
        model = getattr(self.preprocessor, "model", None)
        return f"{self.name}:{id(self.preprocessor):x}:{id(model) if model is not None else 0:x}:{self._unloads}"

    def _call(self, image: np.ndarray) -> np.ndarray:
        preprocessor = self.preprocessor
        height, width = image.shape[:2]
        device = torch.device(getattr(preprocessor, "device", None) or "cpu")
        # Outside a job ControlNet runs its preprocessors without autocast, in its own dtypes.
        with torch.no_grad(), autocast_off(device):
            result = preprocessor.cached_call(
                image,
                resolution=job_resolution(preprocessor, height, width),
                slider_1=_slider_value(preprocessor, "slider_1"),
                slider_2=_slider_value(preprocessor, "slider_2"),
            )
        return map_to_inverse_depth(getattr(result, "value", result), preprocessor.label)

    def estimate(self, images) -> torch.Tensor:
        caller = caller_device(images)
        maps = [self._call(image) for image in uint8_images(images)]
        if any(m.shape != maps[0].shape for m in maps):
            raise ValueError("images in one batch must have the same size")
        return torch.from_numpy(np.stack(maps)).to(caller)

    def release(self) -> None:
        self.preprocessor.unload()
        self._unloads += 1


def create(name: str) -> ControlNetEstimator:
    return ControlNetEstimator(find_preprocessor(name))
