"""The WebUI this extension runs in, AUTOMATIC1111 or Forge, and every place where the two differ for it.

The script asks `current_host(...)` once and goes through the host it returns; nothing else in the extension
knows how Forge (lllyasviel/stable-diffusion-webui-forge; the README names the commit tested) differs as a host
(estimate/controlnet.py reads its built-in ControlNet's registry, as it reads sd-webui-controlnet's). Forge loads
512-depth-ema through its own backend: it keeps the UNet, VAE and text encoder, drops the checkpoint's MiDaS
(`depth_model.*`), and has no depth conditioning of its own (it takes the 5-channel UNet for an inpainting one,
and fails on 9 channels against 5). So on Forge:

- the checkpoint's MiDaS is read from the checkpoint file (only those tensors) and run by our estimator runtime,
  in float32 on the CPU (its fp16 weights took 912 s for one estimate there, against 12 s in float32: timed once
  by hand while investigating, not a bench figure);
- the depth reaches the UNet as on AUTOMATIC1111, through p.img2img_image_conditioning and
  p.txt2img_image_conditioning, which Forge's sampler passes on as `c_concat`: no file of Forge is patched.
  Forge has no native depth path, so a depth model always runs through this extension (the takeover);
- Forge loads a model inside the job, after the scripts' before_process: the depth model a job or a request
  will run is the selected checkpoint (`sd_model_checkpoint`, which a job's override settings also set);
- img2img's canvases (ForgeCanvas) give their elem_id to an HTML block: the picture is the hidden component
  created after it with the class `logical_image_background`, and the strokes are on another one before it
  (`logical_image_foreground`), which Forge lays over the picture in the sketch tabs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import torch

from depth2img.checkpoint.load import MIDAS_PREFIX, load_tensors_under
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.webui.estimators import loaded_model_estimator
from depth2img.webui.init_image import INIT_IMAGE_ELEM_IDS
from depth2img.webui.job_checkpoint import is_depth_checkpoint

FORGE_CANVAS_PICTURE_CLASS = "logical_image_background"
FORGE_CANVAS_STROKES_CLASS = "logical_image_foreground"
# The canvases whose strokes are part of the init image (Forge's img2img lays them over the picture); in the
# inpaint canvas they are the mask.
SKETCH_IDS = ("img2img_sketch", "inpaint_sketch")


def is_forge() -> bool:
    """Forge's own package beside the WebUI's `modules` (found, not imported)."""
    return importlib.util.find_spec("modules_forge") is not None


class InitImageComponents:
    """The img2img sub-tabs' picture components, by the elem_ids of init_image.INIT_IMAGE_ELEM_IDS, as the
    script's after_component sees the components created (AUTOMATIC1111: the component with the id; Forge: for
    an id on an HTML block, the next canvas picture)."""

    def __init__(self):
        self.by_id: dict = {}
        self.strokes_by_id: dict = {}  # Forge's sketch canvases: the strokes laid over the picture
        self._canvas_id: str | None = None  # Forge: an id whose picture component comes next

    def saw(self, component, elem_id: str | None, elem_classes) -> None:
        classes = [elem_classes] if isinstance(elem_classes, str) else list(elem_classes or ())
        if self._canvas_id is not None and FORGE_CANVAS_STROKES_CLASS in classes:
            if self._canvas_id in SKETCH_IDS:
                self.strokes_by_id[self._canvas_id] = component
        elif self._canvas_id is not None and FORGE_CANVAS_PICTURE_CLASS in classes:
            self.by_id[self._canvas_id] = component
            self._canvas_id = None
        elif elem_id in INIT_IMAGE_ELEM_IDS:
            if type(component).__name__ == "HTML":  # ForgeCanvas: the id names the drawing area
                self._canvas_id = elem_id
            else:
                self.by_id[elem_id] = component


class AutomaticHost:
    """AUTOMATIC1111 v1.8-v1.10: the loaded model carries its MiDaS (sd_model.depth_model); the WebUI has its own
    depth path, which the takeover replaces only when the setting says so."""

    name = "AUTOMATIC1111"
    has_native_depth = True

    def __init__(self, sd_model: Callable, device: Callable):
        self._sd_model = sd_model
        self._device = device

    def has_depth_model(self) -> bool:
        return getattr(self._sd_model(), "depth_model", None) is not None

    def depth_estimator(self) -> CheckpointMidasEstimator | None:
        return loaded_model_estimator(self._sd_model(), self._device())


class ForgeHost:
    """Forge: the depth model is the selected checkpoint; its MiDaS is read from the file, one at a time."""

    name = "Forge"
    has_native_depth = False

    def __init__(self, selected_checkpoint: Callable, device: Callable, dtype: Callable):
        """selected_checkpoint() -> the WebUI's CheckpointInfo of sd_model_checkpoint, or None."""
        self._selected = selected_checkpoint
        self._device = device
        self._dtype = dtype
        self._midas: tuple[tuple, CheckpointMidasEstimator] | None = None  # (its file and runtime, estimator)

    def _depth_checkpoint(self):
        info = self._selected()
        filename = getattr(info, "filename", None)
        return info if filename and is_depth_checkpoint(filename) else None

    def has_depth_model(self) -> bool:
        return self._depth_checkpoint() is not None

    def depth_estimator(self) -> CheckpointMidasEstimator | None:
        info = self._depth_checkpoint()
        if info is None:
            self._midas = None  # another kind of model: free the last depth model's MiDaS
            return None
        device = torch.device(self._device())
        dtype = torch.float32 if device.type == "cpu" else self._dtype()
        path = Path(info.filename)
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size, str(device), dtype)
        if self._midas is None or self._midas[0] != key:
            self._midas = None  # the last one is freed before the next is read
            self._midas = (key, _midas_from_file(path, device, dtype, getattr(info, "shorthash", None)))
        return self._midas[1]


def _midas_from_file(path: Path, device: torch.device, dtype: torch.dtype, shorthash: str | None):
    # Keyed as AUTOMATIC1111 keys the loaded model's (its short hash); the weights' fingerprint where none is known.
    return CheckpointMidasEstimator.from_checkpoint_state_dict(
        load_tensors_under(path, MIDAS_PREFIX), dtype=dtype, device=device, cache_key=shorthash
    )


def current_host(*, sd_model: Callable, selected_checkpoint: Callable, device: Callable, dtype: Callable):
    """The host adapter for the WebUI running this extension; its callables read the WebUI's state when asked."""
    if is_forge():
        return ForgeHost(selected_checkpoint, device, dtype)
    return AutomaticHost(sd_model, device)
