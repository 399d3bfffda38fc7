"""Depth estimators: one interface, one runtime policy, a registry.

Members: the depth checkpoint's own MiDaS (CheckpointMidasEstimator), transformers model folders
(depth2img.folder_estimators: DPT, GLPN, Depth Anything, ZoeDepth, ... whatever the installed transformers has),
and, in a WebUI with the ControlNet extension, its depth preprocessors (depth2img.controlnet_bridge).

Contract of `DepthEstimator.estimate(images)`:
- images: [B, 3, H, W] in [-1, 1] (the WebUI's convention), any dtype, any device; or PIL image(s);
- returns [B, h, w] float32, larger = nearer (inverse depth: estimators whose network outputs metric depth
  convert it), at a resolution of the estimator's choosing (the caller resizes), on the caller's device (the
  images' device; the CPU for PIL input).

The runtime policy every estimator runs its network under (NetworkRuntime):
- the network runs where its weights are (or on an execution device: the WebUI's --lowvram moves weights to
  the GPU on call), in their dtype: inputs are moved there (the real-user error "Input type (MPSFloatType) and
  weight type (torch.FloatTensor) should be the same" came from the opposite);
- where a backend lacks an op for that dtype (torch 2.1 has no float16 bilinear upsampling on the CPU), a
  float32 copy of the network runs instead. Which dtypes a backend can run is plain data (PrecisionCaps),
  probed once per device, injectable so each branch is testable on a CPU;
- autocast is off inside (the WebUI may call us under autocast), and no gradients are kept.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import midas
from .devices import module_placement

# ---------------------------------------------------------------------------------------------------------
# What a backend can run
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionCaps:
    """Reduced-precision dtypes in which the ops of the estimators' networks (DPT-Hybrid, ViT/DINOv2 backbones)
    exist on one backend (float32 always does)."""

    float16: bool = True
    bfloat16: bool = True

    def supports(self, dtype: torch.dtype) -> bool:
        if dtype == torch.float16:
            return self.float16
        if dtype == torch.bfloat16:
            return self.bfloat16
        return True


def _ops_run_in(device: torch.device, dtype: torch.dtype) -> bool:
    """Run, tiny, each kind of op the estimators use, in `dtype` on `device`: does every kernel exist?"""
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 8, 9, 9, generator=g).to(device=device, dtype=dtype)
        w = torch.randn(8, 8, 3, 3, generator=g).to(device=device, dtype=dtype)
        # BiT: weight standardisation (batch_norm in training mode), "same" padding, group norm, max pool.
        w_std = F.batch_norm(w.reshape(1, 8, -1), None, None, training=True, momentum=0.0, eps=1e-8)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), w_std.reshape_as(w), stride=2)
        y = F.max_pool2d(F.pad(F.relu(F.group_norm(y, 4)), (0, 1, 0, 1)), 3, 2)
        # ViT: linear, layer norm, GELU, attention (fused where torch has it), on tokens.
        t = y.flatten(2).transpose(1, 2)
        t = F.gelu(F.linear(F.layer_norm(t, (8,)), torch.ones(8, 8, device=device, dtype=dtype)))
        q = t.reshape(1, -1, 2, 4).transpose(1, 2)
        torch.softmax(q @ q.transpose(-1, -2), dim=-1) @ q
        if hasattr(F, "scaled_dot_product_attention"):
            F.scaled_dot_product_attention(q, q, q)
        # Position-embedding resize runs on a channels-last view; fusion/head upsample with align_corners.
        grid = torch.randn(1, 3, 3, 8, generator=g).to(device=device, dtype=dtype).permute(0, 3, 1, 2)
        F.interpolate(grid, size=(4, 5), mode="bilinear")
        F.interpolate(grid, size=(4, 5), mode="bicubic", align_corners=False)  # DINOv2/ViT position embeddings
        z = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        F.conv2d(z, w, padding=1, stride=2)
        return True
    except (RuntimeError, NotImplementedError, TypeError):
        return False


@functools.cache
def _probe(device_str: str) -> PrecisionCaps:
    device = torch.device(device_str)
    return PrecisionCaps(float16=_ops_run_in(device, torch.float16), bfloat16=_ops_run_in(device, torch.bfloat16))


def probe_precision_caps(device: torch.device | str) -> PrecisionCaps:
    """PrecisionCaps of a device, found by running each op kind once (cached per device)."""
    return _probe(str(torch.device(device)))


def autocast_off(device: torch.device):
    # The WebUI may call us inside autocast; the network must run in its weights' dtype, not autocast's.
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def caller_device(images) -> torch.device:
    return images.device if isinstance(images, torch.Tensor) else torch.device("cpu")


class NetworkRuntime:
    """The runtime policy (module docstring) for one network; every estimator runs its network through one.

    module: the network, left as the caller made it (never cast or moved here).
    caps: what the backend runs; None probes the execution device on first use.
    execution_device: where the network computes when that differs from where its weights rest (the WebUI's
        --lowvram/--medvram hooks move the module to the GPU when it is called).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        caps: PrecisionCaps | None = None,
        execution_device: torch.device | str | None = None,
        weights_key: str = "",
    ):
        """weights_key: names the module's current weights (a host may load other weights into the same module
        object, as the WebUI does when it switches between checkpoints of one architecture)."""
        self.module = module
        self.caps = caps
        self.execution_device = torch.device(execution_device) if execution_device is not None else None
        self.weights_key = weights_key

    def resolve(self) -> tuple[torch.nn.Module, torch.device, torch.dtype]:
        """The network that will run, with its device and dtype (read now: the caller may have moved it)."""
        weights_device, dtype = module_placement(self.module)
        device = self.execution_device or weights_device
        caps = self.caps if self.caps is not None else probe_precision_caps(device)
        if caps.supports(dtype):
            return self.module, device, dtype
        return self._float32(device), device, torch.float32

    @contextlib.contextmanager
    def session(self):
        """(network, device, dtype) to call now, with autocast off and no gradients."""
        module, device, dtype = self.resolve()
        with torch.no_grad(), autocast_off(device):
            yield module, device, dtype

    def release(self) -> None:
        """Drop the float32 copy, if one was made."""
        _FLOAT32_COPIES.pop(self.module, None)

    def _float32(self, device: torch.device) -> torch.nn.Module:
        # The backend lacks a kernel for the weights' dtype (e.g. float16 on the CPU in torch 2.1): a float32
        # copy (~0.5 GB for MiDaS), made once per module, device and weights, whichever runtime asks (the WebUI
        # makes an estimator per job); the caller's module stays as it was.
        made = _FLOAT32_COPIES.get(self.module)
        if made is None or made[:2] != (device, self.weights_key):
            network = copy.deepcopy(self.module).to(device=device, dtype=torch.float32)
            made = (device, self.weights_key, network.eval().requires_grad_(False))
            _FLOAT32_COPIES[self.module] = made
        return made[2]


# The float32 copies by the module they copy: held weakly, so a copy goes when its host drops the module (the
# copy holds no reference back to it). One per module: a copy for other weights or another device replaces it.
_FLOAT32_COPIES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[torch.device, str, torch.nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def to_network(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """An input moved to the network: floating tensors also take its dtype, others (ids, masks) keep theirs."""
    if tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def uint8_images(images) -> list[np.ndarray]:
    """HxWx3 uint8 RGB arrays of [B, 3, H, W] images in [-1, 1] (rounded back to the 8 bits the WebUI made them
    from) or of PIL image(s): what depth-estimation pipelines and ControlNet's preprocessors take."""
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, (list, tuple)):
        return [np.asarray(image.convert("RGB")) for image in images]
    x = images if images.ndim == 4 else images.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got shape {tuple(images.shape)}")
    x255 = ((x.detach().to("cpu", torch.float32) + 1.0) * 127.5).round().clamp(0, 255)
    return list(x255.to(torch.uint8).permute(0, 2, 3, 1).numpy())


# ---------------------------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------------------------


class DepthEstimator(ABC):
    """An image -> depth network. See the module docstring for the contract of estimate()."""

    name: str = ""
    label: str = ""
    kind: str = "inverse"  # what the network outputs (EstimatorInfo.kind); estimate() always returns inverse depth
    source: str = "checkpoint"  # "checkpoint" (the depth model's MiDaS) | "folder" | "controlnet" (its preprocessor)

    @property
    def cache_key(self) -> str:
        """Identifies the estimator and its weights (depth caches key on it)."""
        return self.name

    @abstractmethod
    def estimate(self, images) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] (or PIL image(s)) -> [B, h, w] float32, larger = nearer."""

    def release(self) -> None:
        """Free the weights this estimator loaded itself (they load again on the next estimate). The checkpoint's
        MiDaS belongs to the checkpoint: only its float32 copy, if any, is freed."""
        return None


class CheckpointMidasEstimator(DepthEstimator):
    """The MiDaS DPT-Hybrid embedded in an SD 2 depth checkpoint (depth2img.midas), as the WebUI runs it."""

    name = "checkpoint-midas"
    label = "MiDaS DPT-Hybrid (from the depth checkpoint)"

    def __init__(self, model, caps: PrecisionCaps | None = None, execution_device: torch.device | str | None = None):
        """model: DPTForDepthEstimation with dpt_hybrid_config() (see midas.load_midas_from_state_dict).

        caps: what the model's backend runs; None probes it on first use.
        """
        self.model = model
        self._cache_key = f"{self.name}:{midas.weights_fingerprint(model)}"
        self._runtime = NetworkRuntime(
            model, caps=caps, execution_device=execution_device, weights_key=self._cache_key
        )

    @classmethod
    def from_checkpoint_state_dict(
        cls,
        checkpoint_state_dict: Mapping[str, torch.Tensor],
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        caps: PrecisionCaps | None = None,
    ) -> CheckpointMidasEstimator:
        return cls(midas.load_midas_from_state_dict(checkpoint_state_dict, dtype=dtype, device=device), caps)

    @property
    def cache_key(self) -> str:
        return self._cache_key

    def runtime(self) -> tuple[torch.nn.Module, torch.device, torch.dtype]:
        """The network that will run, with its device and dtype (NetworkRuntime.resolve)."""
        return self._runtime.resolve()

    def estimate(self, images) -> torch.Tensor:
        caller = caller_device(images)
        pixel_values = midas.preprocess(images)  # OpenCV on the CPU, float32, as the reference does
        with self._runtime.session() as (model, device, dtype):
            depth = midas.predict_depth(model, to_network(pixel_values, device, dtype))
        return depth.to(torch.float32).to(caller)

    def release(self) -> None:
        self._runtime.release()


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorInfo:
    name: str
    label: str
    available: bool
    reason: str = ""  # why it is unavailable ("" when available)
    # what the network outputs (estimate() always returns inverse depth): "inverse" (relative inverse depth),
    # "metric" (meters) or "distance" (relative, 0 = near .. 1 = far: Marigold)
    kind: str = "inverse"
    # "checkpoint" (the depth model's MiDaS) | "folder" (a transformers/diffusers folder) | "controlnet" (a
    # preprocessor of the ControlNet extension)
    source: str = "checkpoint"


def _checkpoint_midas_missing() -> str:
    """Empty if this environment can run the checkpoint's MiDaS, else the reason it cannot."""
    try:
        from transformers import DPTConfig, DPTForDepthEstimation  # noqa: F401
    except ImportError as exc:
        return f"needs transformers with DPTForDepthEstimation ({exc})"
    if not hasattr(DPTConfig(), "is_hybrid"):
        return "needs a transformers release with DPT-Hybrid (DPTConfig.is_hybrid)"
    return ""


NO_DEPTH_CHECKPOINT = (
    "needs a Stable Diffusion 2 depth checkpoint (512-depth-ema): the loaded model has no "
    f"'{midas.MIDAS_PREFIX}*' MiDaS weights"
)


def _checkpoint_midas_info(has_depth_checkpoint: bool | None) -> EstimatorInfo:
    reason = _checkpoint_midas_missing()
    if not reason and has_depth_checkpoint is False:
        reason = NO_DEPTH_CHECKPOINT
    name, label = CheckpointMidasEstimator.name, CheckpointMidasEstimator.label
    return EstimatorInfo(name=name, label=label, available=not reason, reason=reason)


def _folder_entry(folder) -> EstimatorInfo:
    return EstimatorInfo(
        name=folder.name,
        label=folder.label,
        available=folder.available,
        reason=folder.reason,
        kind=folder.kind,
        source="folder",
    )


def _folders() -> list:
    from .folder_estimators import list_folders

    # A folder called checkpoint-midas is skipped: names are unique, and the built-in one wins.
    return [f for f in list_folders() if f.name != CheckpointMidasEstimator.name]


def _controlnet_entry(preprocessor) -> EstimatorInfo:
    from .controlnet_bridge import ControlNetEstimator

    estimator = ControlNetEstimator(preprocessor)  # only named here: nothing loads
    return EstimatorInfo(estimator.name, estimator.label, True, kind=estimator.kind, source=estimator.source)


def _controlnet_entries() -> list[EstimatorInfo]:
    from .controlnet_bridge import depth_preprocessors

    return [_controlnet_entry(p) for p in depth_preprocessors()]


def list_estimators(has_depth_checkpoint: bool | None = None) -> list[EstimatorInfo]:
    """Every estimator, with whether it can run here. has_depth_checkpoint None: not known, not judged.

    The checkpoint's MiDaS first, then the model folders (folder_estimators.ESTIMATOR_DIRS), read again on
    every call so a folder dropped in appears without a restart, then ControlNet's depth preprocessors (only
    where the ControlNet extension is loaded).
    """
    folders = [_folder_entry(f) for f in _folders()]
    return [_checkpoint_midas_info(has_depth_checkpoint), *folders, *_controlnet_entries()]


# Whether an estimator may be named by a folder path anywhere (the CLI and the app: the caller is the machine's
# user) or only by a registered name / a path inside ESTIMATOR_DIRS (the WebUI, whose API callers are strangers).
# The WebUI script calls restrict_to_model_folders() at import.
ANY_FOLDER_PATH = True


def restrict_to_model_folders() -> None:
    global ANY_FOLDER_PATH
    ANY_FOLDER_PATH = False


def _is_path(name: str) -> bool:
    return any(sep in name for sep in ("/", "\\")) or name in (".", "..") or name.startswith("~")


def _find_folder(name: str):
    """The folder estimator called `name`, or the folder at path `name` (the CLI's --estimator PATH; in the
    WebUI only a path inside the model folders, judged on the string alone: no other path is looked at)."""
    from pathlib import Path

    from .folder_estimators import ESTIMATOR_DIRS, inspect_folder

    folders = _folders()
    for folder in folders:
        if folder.name == name:
            return folder
    if not ANY_FOLDER_PATH:
        if not _is_path(name):
            return None
        normal = os.path.normpath(name)
        for folder in folders:
            if any(normal == os.path.normpath(root / folder.name) for root in ESTIMATOR_DIRS):
                return folder
        raise ValueError(
            "a path is accepted only for a folder inside the model folders (models/depth); "
            "give the estimator's name instead (GET /depth2img/v1/estimators lists them)"
        )
    if _is_path(name) or _is_dir(Path(name)):
        path = Path(name).expanduser()
        if not _is_dir(path):
            raise ValueError(f"estimator folder not found: {path}")
        return inspect_folder(path.resolve())
    return None


def _is_dir(path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name the file system refuses (too long, ...): no folder by that name
        return False


def get_estimator_info(name: str, has_depth_checkpoint: bool | None = None) -> EstimatorInfo:
    """The registry entry of `name`, or of the model folder at path `name`; ValueError naming the choices."""
    if name == CheckpointMidasEstimator.name:
        return _checkpoint_midas_info(has_depth_checkpoint)
    from . import controlnet_bridge

    if controlnet_bridge.is_controlnet_name(name):
        return _controlnet_entry(controlnet_bridge.find_preprocessor(name))  # raises, saying why, if there is none
    folder = _find_folder(name)
    if folder is None:
        choices = ", ".join(info.name for info in list_estimators())
        where = " (or the path of a model folder)" if ANY_FOLDER_PATH else ""
        raise ValueError(f"unknown estimator {name!r}; choices: {choices}{where}")
    return _folder_entry(folder)


# Folder estimators built so far, by (path, contents, device, dtype), and ControlNet's, by name: weights load once
# and are shared by every caller.
_LOADED: dict[tuple, DepthEstimator] = {}


def create_estimator(
    name: str,
    checkpoint_state_dict: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DepthEstimator:
    """Build an estimator by name (or model folder path); raises ValueError saying why when it is unavailable.

    checkpoint-midas is built from checkpoint_state_dict each call (it shares the checkpoint's tensors); a folder
    estimator is built once per folder, device and dtype, and its weights load on its first estimate; a ControlNet
    preprocessor runs where ControlNet puts it (device and dtype do not apply).
    """
    if name == CheckpointMidasEstimator.name:
        has_depth_checkpoint = checkpoint_state_dict is not None and midas.has_midas(checkpoint_state_dict)
        info = _checkpoint_midas_info(has_depth_checkpoint)
        if not info.available:
            raise ValueError(f"estimator {name!r} is unavailable: {info.reason}")
        return CheckpointMidasEstimator.from_checkpoint_state_dict(checkpoint_state_dict, dtype=dtype, device=device)
    from . import controlnet_bridge
    from .folder_estimators import MarigoldFolderEstimator, TransformersFolderEstimator, folder_fingerprint

    if controlnet_bridge.is_controlnet_name(name):
        preprocessor = controlnet_bridge.find_preprocessor(name)  # raises, saying why, when there is none
        key = ("controlnet", name)
        if key not in _LOADED or _LOADED[key].preprocessor is not preprocessor:
            _LOADED[key] = controlnet_bridge.ControlNetEstimator(preprocessor)
        return _LOADED[key]
    folder = _find_folder(name)
    if folder is None:
        get_estimator_info(name)  # raises, naming the choices
    if not folder.available:
        raise ValueError(f"estimator {folder.name!r} is unavailable: {folder.reason}")
    # Keyed by the folder's contents too (its configs, its weights' sizes and times): a folder replaced in place
    # is a new model, maybe of another kind (metric vs inverse), with new depth-cache entries.
    fingerprint = folder_fingerprint(folder.path)
    key = (str(folder.path), fingerprint, str(torch.device(device or "cpu")), dtype or torch.float32)
    if key not in _LOADED:
        for stale in [k for k in _LOADED if k[0] == key[0] and k[1] != fingerprint]:
            _LOADED.pop(stale).release()  # the replaced model's weights
        kind = MarigoldFolderEstimator if folder.model_type == "marigold" else TransformersFolderEstimator
        _LOADED[key] = kind(folder, device=device, dtype=dtype)
    return _LOADED[key]


def release_estimators() -> None:
    """Free the weights of every folder or ControlNet estimator built so far (they load again when next used):
    the core of the WebUI's "keep estimator in memory" setting, called after each job when it is off."""
    for estimator in _LOADED.values():
        estimator.release()
