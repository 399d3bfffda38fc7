"""A stand-in for the sd-webui-controlnet extension's preprocessor registry (its scripts/supported_preprocessor.py
and the legacy preprocessors it registers), written from its code (v1.1.455): the same names and call path, a
trivial "network" whose output a test can compute independently.

The real registry module is `scripts.supported_preprocessor` in the WebUI; `installed(monkeypatch)` puts this
one there. Its depth "network" returns the image's red channel at the requested resolution, as ControlNet's legacy
preprocessors do: resize so the short side is `resolution`, pad to a multiple of 64 (edge), run, crop the pad,
HWC3 (three equal channels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import cv2
import numpy as np

MODULE_NAME = "scripts.supported_preprocessor"


@dataclass
class PreprocessorParameter:
    label: str = "EMPTY_LABEL"
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.01
    value: float = 0.5
    visible: bool = True


@dataclass
class Preprocessor:
    name: str
    _label: str | None = None
    tags: list[str] = field(default_factory=list)
    slider_resolution = PreprocessorParameter(label="Resolution", minimum=64, maximum=2048, value=512, step=8)
    slider_1 = PreprocessorParameter(visible=False)
    slider_2 = PreprocessorParameter(visible=False)
    returns_image: bool = True
    requires_mask: bool = False
    device = "cpu"

    all_processors: ClassVar[dict[str, Preprocessor]] = {}
    all_processors_by_name: ClassVar[dict[str, Preprocessor]] = {}

    @property
    def label(self) -> str:
        return self._label if self._label is not None else self.name

    @classmethod
    def add_supported_preprocessor(cls, p: Preprocessor) -> None:
        cls.all_processors[p.label] = p
        cls.all_processors_by_name[p.name] = p

    @classmethod
    def get_preprocessor(cls, name: str) -> Preprocessor | None:
        return cls.all_processors.get(name, cls.all_processors_by_name.get(name))

    class Result(NamedTuple):
        value: Any
        display_images: list

    def cached_call(self, input_image, *args, **kwargs) -> Preprocessor.Result:
        result = self(input_image, *args, **kwargs)
        return Preprocessor.Result(value=result, display_images=[result])

    def __hash__(self):
        return hash(self.name)


def resize_image_with_pad(image: np.ndarray, resolution: int):
    height, width = image.shape[:2]
    k = resolution / min(height, width)
    target = (int(np.round(height * k)), int(np.round(width * k)))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    image = cv2.resize(image, (target[1], target[0]), interpolation=interpolation)
    pad = [(-s) % 64 for s in target]
    padded = np.pad(image, [[0, pad[0]], [0, pad[1]], [0, 0]], mode="edge")
    return padded, lambda x: np.ascontiguousarray(x[: target[0], : target[1]])


class StandinDepthPreprocessor(Preprocessor):
    """Like ControlNet's LegacyPreprocessor around midas/leres: records each call, holds a "model" once run."""

    def __init__(self, name: str, label: str, tags=("Depth",), slider_1=None, slider_2=None):
        super().__init__(name, label, list(tags))
        self.slider_1 = slider_1 or PreprocessorParameter(visible=False)
        self.slider_2 = slider_2 or PreprocessorParameter(visible=False)
        self.calls: list[dict] = []
        self.loaded = False
        self.unloads = 0

    def __call__(self, input_image, resolution=512, slider_1=None, slider_2=None, **kwargs):
        self.calls.append({"image": input_image.copy(), "resolution": resolution, "slider_1": slider_1,
                           "slider_2": slider_2})
        self.loaded = True
        padded, remove_pad = resize_image_with_pad(input_image, resolution)
        red = padded[..., 0]
        return np.repeat(remove_pad(red)[..., None], 3, axis=2)  # HWC3

    def unload(self) -> bool:
        was_loaded, self.loaded = self.loaded, False
        self.unloads += 1
        return was_loaded


def build_registry():
    """A fresh registry module (as ControlNet's is after its scripts load) with its depth preprocessors, one
    depth-tagged one that is no scene depth, and a non-depth one."""
    from types import ModuleType

    class Registry(Preprocessor):
        all_processors: ClassVar[dict[str, Preprocessor]] = {}
        all_processors_by_name: ClassVar[dict[str, Preprocessor]] = {}

    remove = PreprocessorParameter(label="Remove Near %", minimum=0, maximum=100, value=0, step=0.1)
    background = PreprocessorParameter(label="Remove Background %", minimum=0, maximum=100, value=0, step=0.1)
    for preprocessor in (
        StandinDepthPreprocessor("depth", "depth_midas"),
        StandinDepthPreprocessor("depth_leres", "depth_leres", slider_1=remove, slider_2=background),
        StandinDepthPreprocessor("depth_hand_refiner", "depth_hand_refiner"),
        StandinDepthPreprocessor("canny", "canny", tags=("Canny",)),
    ):
        Registry.add_supported_preprocessor(preprocessor)
    module = ModuleType(MODULE_NAME)
    module.Preprocessor = Registry
    module.PreprocessorParameter = PreprocessorParameter
    return module


def installed(monkeypatch):
    """Load the stand-in where ControlNet's registry lives in the WebUI; returns its Preprocessor class."""
    import sys

    module = build_registry()
    monkeypatch.setitem(sys.modules, MODULE_NAME, module)
    return module.Preprocessor

