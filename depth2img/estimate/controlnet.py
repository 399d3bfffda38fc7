"""ControlNet's depth preprocessors as estimators (`controlnet:<preprocessor>`), in the WebUI.

Most WebUI users who want depth already have ControlNet and its annotator weights: in AUTOMATIC1111 the
sd-webui-controlnet extension, in Forge its built-in ControlNet (that extension cannot be installed there). Each
keeps a registry of preprocessors, filled when its code loads; this module reads the one that is in sys.modules
and never imports ControlNet's or Forge's code itself (so nothing here runs without them, and the core never
imports the WebUI). Neither loaded -> no entries. One small adapter per registry kind says how to list, call and
release its preprocessors:

- sd-webui-controlnet: the class `Preprocessor` in its `scripts/supported_preprocessor.py`, called as its
  `/controlnet/detect` route calls it, `preprocessor.cached_call(rgb_uint8, resolution=..., slider_1=...,
  slider_2=...)`.
- Forge: the dict `supported_preprocessors` (name -> Preprocessor) in `modules_forge.shared`, called as its
  ControlNet calls a unit's preprocessor, `preprocessor(rgb_uint8, resolution=..., slider_1=..., slider_2=...)`.

Either way the sliders are at the preprocessor's defaults and the resolution is the job's: the image's short side
(ControlNet's "pixel perfect"), kept within the preprocessor's resolution slider. The output is an 8-bit map,
HxW or HxWx3 with equal channels, white = near (every ControlNet depth preprocessor normalizes to that
convention), read as relative inverse depth in [0, 1].
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from depth2img.estimate.interface import DepthEstimator, autocast_off, caller_device, uint8_images

PREFIX = "controlnet:"
DEPTH_TAG = "Depth"
# Depth-tagged preprocessors that do not make a depth map of the whole scene (the same name in both registries).
NOT_SCENE_DEPTH = {"depth_hand_refiner"}  # repaints hands only (a mesh of detected hands on black)
# ControlNet's resolution slider range, for preprocessors that lack one.
RESOLUTION_RANGE = (64, 2048)

UNAVAILABLE = (
    "needs the sd-webui-controlnet extension, which is not loaded in this WebUI: install it from the Extensions "
    "tab and restart, or choose another estimator"
)


class ExtensionRegistry:
    """sd-webui-controlnet's registry (AUTOMATIC1111)."""

    # Where the registry lives once its scripts have loaded (the WebUI puts each extension's folder on sys.path
    # while loading it, so its modules are named `scripts.*`).
    module_name = "scripts.supported_preprocessor"
    owner = "ControlNet"
    none_hint = ""

    def preprocessors(self) -> list | None:
        """Every preprocessor it has; None when it is not loaded."""
        registry = getattr(sys.modules.get(self.module_name), "Preprocessor", None)
        found = getattr(registry, "all_processors", None)
        return list(found.values()) if isinstance(found, dict) else None

    def label(self, preprocessor) -> str:
        return preprocessor.label

    def names(self, preprocessor) -> tuple:
        """The names it answers to (ControlNet keeps a label and an older internal name, e.g. depth for
        depth_midas)."""
        return preprocessor.label, getattr(preprocessor, "name", None)

    def is_depth(self, preprocessor) -> bool:
        return (
            DEPTH_TAG in (getattr(preprocessor, "tags", None) or [])
            and preprocessor.label not in NOT_SCENE_DEPTH
            and getattr(preprocessor, "returns_image", True)
            and not getattr(preprocessor, "requires_mask", False)
        )

    def resolution_range(self, preprocessor) -> tuple[int, int]:
        slider = getattr(preprocessor, "slider_resolution", None)
        return (int(getattr(slider, "minimum", RESOLUTION_RANGE[0])),
                int(getattr(slider, "maximum", RESOLUTION_RANGE[1])))

    def slider_default(self, preprocessor, slider: str):
        return getattr(getattr(preprocessor, slider, None), "value", None)

    def call(self, preprocessor, image: np.ndarray, resolution: int):
        device = torch.device(getattr(preprocessor, "device", None) or "cpu")
        # Outside a job ControlNet runs its preprocessors without autocast, in its own dtypes.
        with torch.no_grad(), autocast_off(device):
            result = preprocessor.cached_call(
                image,
                resolution=resolution,
                slider_1=self.slider_default(preprocessor, "slider_1"),
                slider_2=self.slider_default(preprocessor, "slider_2"),
            )
        return getattr(result, "value", result)  # its Result(value, display_images)

    def model(self, preprocessor):
        """The model object it keeps, where it keeps one (as `model`)."""
        return getattr(preprocessor, "model", None)

    def release(self, preprocessor) -> bool:
        """Free its weights; whether it loads them again on its next call (then maybe others: a new file)."""
        preprocessor.unload()  # drops its model
        return True


class ForgeRegistry:
    """Forge's built-in ControlNet's registry: `modules_forge.shared.supported_preprocessors`, filled by its
    built-in extensions (forge_legacy_preprocessors: depth_midas, depth_leres, depth_leres++, depth_zoe,
    depth_anything, depth_anything_v2, depth_hand_refiner; forge_preprocessor_marigold: depth_marigold)."""

    module_name = "modules_forge.shared"
    owner = "Forge's built-in ControlNet"
    none_hint = (
        " (Forge registers them from its built-in extensions forge_legacy_preprocessors and "
        "forge_preprocessor_marigold: enable them in the Extensions tab and restart)"
    )

    def preprocessors(self) -> list | None:
        found = getattr(sys.modules.get(self.module_name), "supported_preprocessors", None)
        return list(found.values()) if isinstance(found, dict) else None

    def label(self, preprocessor) -> str:
        return preprocessor.name  # its registry's key

    def names(self, preprocessor) -> tuple:
        return (preprocessor.name,)

    def is_depth(self, preprocessor) -> bool:
        # Forge's preprocessors all return an image and take no mask unless given one: the tag says it all.
        return DEPTH_TAG in (getattr(preprocessor, "tags", None) or []) and preprocessor.name not in NOT_SCENE_DEPTH

    def resolution_range(self, preprocessor) -> tuple[int, int]:
        # The slider Forge's ControlNet shows (its legacy preprocessors keep theirs at the base 128..2048).
        kwargs = getattr(getattr(preprocessor, "slider_resolution", None), "gradio_update_kwargs", None) or {}
        return int(kwargs.get("minimum", RESOLUTION_RANGE[0])), int(kwargs.get("maximum", RESOLUTION_RANGE[1]))

    def slider_default(self, preprocessor, slider: str):
        # The value Forge's ControlNet gives a unit that leaves the slider alone (its detect route instead sends
        # 64 unless told: no default of any depth preprocessor).
        kwargs = getattr(getattr(preprocessor, slider, None), "gradio_update_kwargs", None) or {}
        return kwargs.get("value")

    def call(self, preprocessor, image: np.ndarray, resolution: int):
        # Forge runs without autocast (its devices.autocast is a null context): nothing to turn off.
        with torch.no_grad():
            return preprocessor(
                image,
                resolution=resolution,
                slider_1=self.slider_default(preprocessor, "slider_1"),
                slider_2=self.slider_default(preprocessor, "slider_2"),
            )

    def model(self, preprocessor):
        # Forge's Preprocessor keeps its model as a ModelPatcher (set up when it loads one). Its legacy ones keep
        # theirs in their annotator's module, out of reach: loaded once, then kept (their unload only moves it).
        return getattr(preprocessor, "model_patcher", None)

    def release(self, preprocessor) -> bool:
        # A legacy preprocessor has an unload_function: it moves the annotator's model to the CPU (freeing GPU
        # memory; nothing on a CPU-only Forge) and keeps it, and Forge itself calls it after every call, so this
        # only repeats it. The others leave their model to Forge's memory management, which frees it when it
        # needs the memory and offers no call to free one preprocessor's: nothing to do for those. Either way
        # the same model comes back on the next call: False.
        unload = getattr(preprocessor, "unload_function", None)
        if unload is not None:
            unload()
        return False


# Read in this order; the first one loaded is the WebUI's (Forge cannot install sd-webui-controlnet).
REGISTRIES = (ExtensionRegistry(), ForgeRegistry())


def loaded_registry():
    """(adapter, its preprocessors) of the registry this WebUI has; (None, []) when there is none."""
    for adapter in REGISTRIES:
        found = adapter.preprocessors()
        if found is not None:
            return adapter, found
    return None, []


def registry_of(preprocessor):
    """The adapter of the loaded registry that holds `preprocessor`."""
    for adapter in REGISTRIES:
        if any(p is preprocessor for p in adapter.preprocessors() or []):
            return adapter
    raise ValueError(f"{preprocessor!r} is in no loaded ControlNet registry")


def is_controlnet_name(name: str) -> bool:
    return name.startswith(PREFIX)


def depth_preprocessors() -> list:
    """The loaded registry's scene-depth preprocessors, by label; [] when no ControlNet is loaded."""
    adapter, found = loaded_registry()
    if adapter is None:
        return []
    return sorted((p for p in found if adapter.is_depth(p)), key=adapter.label)


def estimator_names() -> list[str]:
    adapter, _ = loaded_registry()
    return [PREFIX + adapter.label(p) for p in depth_preprocessors()]


def find_preprocessor(name: str):
    """The preprocessor behind `controlnet:<label>`; ValueError saying why there is none."""
    label = name[len(PREFIX) :]
    adapter, _ = loaded_registry()
    if adapter is None:
        raise ValueError(f"estimator {name!r} {UNAVAILABLE}")
    for preprocessor in depth_preprocessors():
        if label in adapter.names(preprocessor):
            return preprocessor
    choices = ", ".join(estimator_names()) or ("none" + adapter.none_hint)
    raise ValueError(f"{adapter.owner} has no depth preprocessor {label!r}; its depth preprocessors: {choices}")


def job_resolution(resolution_range: tuple[int, int], height: int, width: int) -> int:
    """The image's short side within a preprocessor's resolution slider (ControlNet's pixel-perfect size)."""
    low, high = resolution_range
    return max(low, min(high, min(height, width)))


def map_to_inverse_depth(value, owner: str, label: str) -> np.ndarray:
    """A preprocessor's 8-bit output (HxW, or HxWx3 with equal channels after ControlNet's HWC3) -> [0, 1]."""
    array = np.asarray(value)
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim != 2 or array.dtype != np.uint8:
        raise RuntimeError(
            f"the {label} preprocessor of {owner} returned {array.dtype} data of shape {array.shape}, not an 8-bit "
            "depth map: choose another estimator"
        )
    return array.astype(np.float32) / 255.0


class ControlNetEstimator(DepthEstimator):
    """One of ControlNet's depth preprocessors (see the module docstring). Its weights are ControlNet's: it loads
    them on first use, where it keeps them, on its own device; release() asks it to free them where it can."""

    source = "controlnet"
    kind = "inverse"

    def __init__(self, preprocessor, registry=None):
        self.preprocessor = preprocessor
        self.registry = registry or registry_of(preprocessor)
        label = self.registry.label(preprocessor)
        self.name = PREFIX + label
        self.label = f"ControlNet {label}"
        self._unloads = 0  # releases after which ControlNet loads the weights again on the next call

    @property
    def cache_key(self) -> str:
        # Changes when ControlNet reloads its model: a new preprocessor object (its scripts reloaded), a model
        # object of its own that changed (where it keeps one), or a release after which it loads them again.
        model = self.registry.model(self.preprocessor)
        return f"{self.name}:{id(self.preprocessor):x}:{id(model) if model is not None else 0:x}:{self._unloads}"

    def job_resolution(self, height: int, width: int) -> int:
        return job_resolution(self.registry.resolution_range(self.preprocessor), height, width)

    def _call(self, image: np.ndarray) -> np.ndarray:
        resolution = self.job_resolution(*image.shape[:2])
        result = self.registry.call(self.preprocessor, image, resolution)
        return map_to_inverse_depth(result, self.registry.owner, self.registry.label(self.preprocessor))

    def estimate(self, images) -> torch.Tensor:
        caller = caller_device(images)
        maps = [self._call(image) for image in uint8_images(images)]
        if any(m.shape != maps[0].shape for m in maps):
            raise ValueError("images in one batch must have the same size")
        return torch.from_numpy(np.stack(maps)).to(caller)

    def release(self) -> None:
        if self.registry.release(self.preprocessor):
            self._unloads += 1


def create(name: str) -> ControlNetEstimator:
    return ControlNetEstimator(find_preprocessor(name))
