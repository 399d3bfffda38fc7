"""A stand-in for Forge's built-in ControlNet preprocessor registry (`modules_forge.shared.supported_preprocessors`
with the Preprocessor classes of modules_forge/supported_preprocessor.py, the LegacyPreprocessor of its built-in
forge_legacy_preprocessors and a model-patcher preprocessor like forge_preprocessor_marigold's), written from
Forge's code (commit dfdcbab6): the same attributes and call path, a trivial "network" whose output a test can
compute independently.

`installed(monkeypatch)` puts it where Forge's registry lives. Its depth "network" returns the image's red channel
at the requested resolution, as Forge's depth preprocessors do: resize so the short side is `resolution`, pad to a
multiple of 64 (edge), run, crop the pad, HWC3 (three equal channels, uint8).
"""

from __future__ import annotations

import numpy as np

from tests.webui_standins.controlnet import resize_image_with_pad

MODULE_NAME = "modules_forge.shared"


class PreprocessorParameter:
    def __init__(self, minimum=0.0, maximum=1.0, step=0.01, label="Parameter 1", value=0.5, visible=False, **kwargs):
        self.gradio_update_kwargs = dict(
            minimum=minimum, maximum=maximum, step=step, label=label, value=value, visible=visible, **kwargs
        )


class Preprocessor:
    def __init__(self):
        self.name = "PreprocessorBase"
        self.tags = []
        self.model_filename_filters = []
        self.slider_resolution = PreprocessorParameter(
            label="Resolution", minimum=128, maximum=2048, value=512, step=8, visible=True
        )
        self.slider_1 = PreprocessorParameter()
        self.slider_2 = PreprocessorParameter()
        self.slider_3 = PreprocessorParameter()
        self.model_patcher = None

    def __call__(self, input_image, resolution, slider_1=None, slider_2=None, slider_3=None, input_mask=None,
                 **kwargs):
        return input_image


def red_channel_depth(image: np.ndarray, resolution: int) -> np.ndarray:
    padded, remove_pad = resize_image_with_pad(image, resolution)
    return remove_pad(padded[..., 0])  # HxW, as a legacy annotator returns it before LegacyPreprocessor's HWC3


class LegacyAnnotator:
    """The call_function / unload_function pair of one legacy preprocessor (its annotator's module-level model):
    records each call; unload moves the model "to the CPU", as every legacy depth annotator's unload does."""

    def __init__(self):
        self.calls: list[dict] = []
        self.on_device = False
        self.unloads = 0

    def call_function(self, img, res=512, thr_a=None, thr_b=None, **kwargs):
        self.calls.append({"image": img.copy(), "resolution": res, "slider_1": thr_a, "slider_2": thr_b,
                           "kwargs": kwargs})
        self.on_device = True
        return red_channel_depth(img, res), True

    def unload_function(self):
        self.on_device = False
        self.unloads += 1


class LegacyPreprocessor(Preprocessor):
    """As forge_legacy_preprocessors' LegacyPreprocessor: its resolution slider is kept as `resolution`, so the
    `slider_resolution` Forge's UI reads stays the base one; it unloads after every call."""

    def __init__(self, name, tags=("Depth",), resolution=None, slider_1=None, slider_2=None):
        super().__init__()
        self.name = name
        self.tags = list(tags)
        self.annotator = LegacyAnnotator()
        self.call_function = self.annotator.call_function
        self.unload_function = self.annotator.unload_function
        self.resolution = PreprocessorParameter(**resolution, visible=True) if resolution else PreprocessorParameter()
        self.slider_1 = PreprocessorParameter(**slider_1, visible=True) if slider_1 else PreprocessorParameter()
        self.slider_2 = PreprocessorParameter(**slider_2, visible=True) if slider_2 else PreprocessorParameter()

    def __call__(self, input_image, resolution, slider_1=None, slider_2=None, slider_3=None, **kwargs):
        del slider_3
        result, is_image = self.call_function(img=input_image, res=resolution, thr_a=slider_1, thr_b=slider_2,
                                              **kwargs)
        if is_image:
            result = np.repeat(result[..., None], 3, axis=2) if result.ndim == 2 else result  # HWC3
        if self.unload_function is not None:
            self.unload_function()
        return result


class ModelPatcherDepth(Preprocessor):
    """A preprocessor of Forge's own kind (like depth_marigold): sets up a model patcher on its first call and
    leaves it to Forge's memory management (no unload of its own)."""

    def __init__(self, name="depth_marigold"):
        super().__init__()
        self.name = name
        self.tags = ["Depth"]
        self.slider_resolution = PreprocessorParameter(
            label="Resolution", minimum=128, maximum=2048, value=768, step=8, visible=True
        )
        self.calls: list[dict] = []

    def __call__(self, input_image, resolution, slider_1=None, slider_2=None, slider_3=None, **kwargs):
        self.calls.append({"resolution": resolution, "slider_1": slider_1, "slider_2": slider_2})
        if self.model_patcher is None:
            self.model_patcher = object()
        depth = red_channel_depth(input_image, resolution)
        return np.repeat(depth[..., None], 3, axis=2)


def build_registry():
    """A fresh `modules_forge.shared` as Forge has it once its built-in extensions loaded: depth preprocessors of
    both kinds, one depth-tagged one that is no scene depth, and non-depth ones."""
    from types import ModuleType

    resolution = {"label": "Resolution", "minimum": 64, "maximum": 2048, "value": 512}
    remove = {"label": "Remove Near %", "minimum": 0, "maximum": 100, "value": 0, "step": 0.1}
    background = {"label": "Remove Background %", "minimum": 0, "maximum": 100, "value": 0, "step": 0.1}
    canny = Preprocessor()
    canny.name, canny.tags = "canny", ["Canny"]
    none = Preprocessor()
    none.name = "None"
    module = ModuleType(MODULE_NAME)
    module.supported_preprocessors = {}
    for preprocessor in (
        none,
        canny,
        LegacyPreprocessor("depth_midas", resolution=resolution),
        LegacyPreprocessor("depth_leres", resolution=resolution, slider_1=remove, slider_2=background),
        LegacyPreprocessor("depth_hand_refiner", resolution=resolution),
        LegacyPreprocessor("normal_midas", tags=("NormalMap",), resolution=resolution),
        ModelPatcherDepth(),
    ):
        module.supported_preprocessors[preprocessor.name] = preprocessor
    return module


def installed(monkeypatch):
    """Load the stand-in where Forge's registry lives (and no sd-webui-controlnet: Forge cannot have it); returns
    its supported_preprocessors."""
    import sys

    from tests.webui_standins import controlnet

    module = build_registry()
    monkeypatch.delitem(sys.modules, controlnet.MODULE_NAME, raising=False)
    monkeypatch.setitem(sys.modules, MODULE_NAME, module)
    return module.supported_preprocessors
