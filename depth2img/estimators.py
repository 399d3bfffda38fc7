"""Depth estimators: one interface, a registry, and the first member — the depth checkpoint's own MiDaS.

Contract of `DepthEstimator.estimate(images)`:
- images: [B, 3, H, W] in [-1, 1] (the WebUI's convention), any dtype, any device; or PIL image(s);
- returns [B, h, w] float32, larger = nearer (MiDaS inverse depth), at the network's resolution (the caller
  resizes), on the caller's device (the images' device; the CPU for PIL input).
- the network runs where its weights are, in their dtype: inputs are moved there (the real-user error
  "Input type (MPSFloatType) and weight type (torch.FloatTensor) should be the same" came from the opposite).
  Where a backend lacks an op for that dtype (torch 2.1 has no float16 bilinear upsampling on the CPU), the
  estimator runs a float32 copy of the network instead. Which dtypes a backend can run is plain data
  (PrecisionCaps), probed once per device, injectable so each branch is testable on a CPU.
"""

from __future__ import annotations

import contextlib
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import midas
from .devices import module_placement

# ---------------------------------------------------------------------------------------------------------
# What a backend can run
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionCaps:
    """Reduced-precision dtypes in which every op of the DPT-Hybrid exists on one backend (float32 always does)."""

    float16: bool = True
    bfloat16: bool = True

    def supports(self, dtype: torch.dtype) -> bool:
        if dtype == torch.float16:
            return self.float16
        if dtype == torch.bfloat16:
            return self.bfloat16
        return True


def _ops_run_in(device: torch.device, dtype: torch.dtype) -> bool:
    """Run, tiny, each kind of op DPT-Hybrid uses, in `dtype` on `device`: does every kernel exist?"""
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


# ---------------------------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------------------------


class DepthEstimator(ABC):
    """An image -> depth network. See the module docstring for the contract of estimate()."""

    name: str = ""
    label: str = ""

    @property
    def cache_key(self) -> str:
        """Identifies the estimator and its weights (depth caches key on it)."""
        return self.name

    @abstractmethod
    def estimate(self, images) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] (or PIL image(s)) -> [B, h, w] float32, larger = nearer."""


class CheckpointMidasEstimator(DepthEstimator):
    """The MiDaS DPT-Hybrid embedded in an SD 2 depth checkpoint (depth2img.midas), as the WebUI runs it."""

    name = "checkpoint-midas"
    label = "MiDaS DPT-Hybrid (from the depth checkpoint)"

    def __init__(self, model, caps: PrecisionCaps | None = None):
        """model: DPTForDepthEstimation with dpt_hybrid_config() (see midas.load_midas_from_state_dict).

        caps: what the model's backend runs; None probes it on first use.
        """
        self.model = model
        self.caps = caps
        self._cache_key = f"{self.name}:{midas.weights_fingerprint(model)}"
        self._float32_copy = None  # (device, model): built only where the backend lacks an op for the dtype

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
        """The network that will run, with its device and dtype (read now: the caller may have moved it)."""
        device, dtype = module_placement(self.model)
        caps = self.caps if self.caps is not None else probe_precision_caps(device)
        if caps.supports(dtype):
            return self.model, device, dtype
        return self._float32_model(device), device, torch.float32

    def _float32_model(self, device: torch.device):
        if self._float32_copy is None or self._float32_copy[0] != device:
            # Same class and config, built without init, taking float32 copies of the weights.
            with torch.device("meta"):
                copy = type(self.model)(self.model.config)
            state = {k: v.to(torch.float32) for k, v in self.model.state_dict().items()}
            copy.load_state_dict(state, strict=True, assign=True)
            self._float32_copy = (device, copy.eval().requires_grad_(False))
        return self._float32_copy[1]

    @torch.no_grad()
    def estimate(self, images) -> torch.Tensor:
        caller = caller_device(images)
        pixel_values = midas.preprocess(images)  # OpenCV on the CPU, float32, as the reference does
        model, device, dtype = self.runtime()
        with autocast_off(device):
            depth = midas.predict_depth(model, pixel_values.to(device=device, dtype=dtype))
        return depth.to(torch.float32).to(caller)


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EstimatorInfo:
    name: str
    label: str
    available: bool
    reason: str = ""  # why it is unavailable ("" when available)


def _checkpoint_midas_missing() -> str:
    """Empty if this environment can run the checkpoint's MiDaS, else the reason it cannot."""
    try:
        from transformers import DPTConfig, DPTForDepthEstimation  # noqa: F401
    except ImportError as exc:
        return f"needs transformers with DPTForDepthEstimation ({exc})"
    if not hasattr(DPTConfig(), "is_hybrid"):
        return "needs a transformers release with DPT-Hybrid (DPTConfig.is_hybrid)"
    return ""


@dataclass(frozen=True)
class _Entry:
    label: str
    missing: Callable[[], str]  # "" when the environment can run it, else the reason
    needs_depth_checkpoint: bool


ESTIMATORS: dict[str, _Entry] = {
    CheckpointMidasEstimator.name: _Entry(
        label=CheckpointMidasEstimator.label,
        missing=_checkpoint_midas_missing,
        needs_depth_checkpoint=True,
    ),
}

NO_DEPTH_CHECKPOINT = (
    "needs a Stable Diffusion 2 depth checkpoint (512-depth-ema): the loaded model has no "
    f"'{midas.MIDAS_PREFIX}*' MiDaS weights"
)


def _info(name: str, entry: _Entry, has_depth_checkpoint: bool | None) -> EstimatorInfo:
    reason = entry.missing()
    if not reason and entry.needs_depth_checkpoint and has_depth_checkpoint is False:
        reason = NO_DEPTH_CHECKPOINT
    return EstimatorInfo(name=name, label=entry.label, available=not reason, reason=reason)


def list_estimators(has_depth_checkpoint: bool | None = None) -> list[EstimatorInfo]:
    """Every estimator, with whether it can run here. has_depth_checkpoint None: not known, not judged."""
    return [_info(name, entry, has_depth_checkpoint) for name, entry in ESTIMATORS.items()]


def get_estimator_info(name: str, has_depth_checkpoint: bool | None = None) -> EstimatorInfo:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choices: {', '.join(ESTIMATORS)}")
    return _info(name, ESTIMATORS[name], has_depth_checkpoint)


def create_estimator(
    name: str,
    checkpoint_state_dict: Mapping[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> DepthEstimator:
    """Build an estimator by name; raises ValueError saying why when it is unavailable."""
    has_depth_checkpoint = checkpoint_state_dict is not None and midas.has_midas(checkpoint_state_dict)
    info = get_estimator_info(name, has_depth_checkpoint=has_depth_checkpoint)
    if not info.available:
        raise ValueError(f"estimator {name!r} is unavailable: {info.reason}")
    return CheckpointMidasEstimator.from_checkpoint_state_dict(checkpoint_state_dict, dtype=dtype, device=device)
