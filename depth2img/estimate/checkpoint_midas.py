"""The depth checkpoint's own MiDaS DPT-Hybrid as an estimator: one module for the network as the standalone
engine loads it (transformers' DPT, depth2img.estimate.midas) and as the WebUI has it loaded (ldm's MiDaSInference)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from depth2img.estimate import midas
from depth2img.estimate.interface import DepthEstimator, NetworkRuntime, PrecisionCaps, caller_device, to_network


class CheckpointMidasEstimator(DepthEstimator):
    """The MiDaS DPT-Hybrid embedded in an SD 2 depth checkpoint (depth2img.estimate.midas), as the WebUI runs it."""

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


class ModuleMidasEstimator(DepthEstimator):
    """The loaded checkpoint's own MiDaS module (ldm's MiDaSInference in the WebUI): no second copy in memory.

    `module(pixel_values)` must return inverse depth [B, 1, h, w] or [B, h, w]. It runs under the runtime policy
    every estimator shares (interface.NetworkRuntime): inputs on the weights' device and dtype, a float32 copy
    where the backend lacks the dtype, autocast off.
    `execution_device`: where the module computes when that differs from where its weights rest (the
    WebUI's --lowvram/--medvram hooks move it to the GPU on call).
    """

    name = "checkpoint-midas"
    label = "MiDaS DPT-Hybrid (from the depth checkpoint)"

    def __init__(
        self,
        module: torch.nn.Module,
        cache_key: str,
        execution_device: torch.device | None = None,
        caps: PrecisionCaps | None = None,
    ):
        """caps: which dtypes the compute device runs (None: probed on first use; injectable for tests)."""
        self.module = module
        self._cache_key = f"{self.name}:{cache_key}"
        # One float32 copy per module and weights, though the WebUI makes this estimator per job.
        self._runtime = NetworkRuntime(
            module, caps=caps, execution_device=execution_device, weights_key=self._cache_key
        )

    @property
    def cache_key(self) -> str:
        return self._cache_key

    def estimate(self, images) -> torch.Tensor:
        caller = caller_device(images)
        pixel_values = midas.preprocess(images)  # OpenCV on the CPU, float32, as the reference does
        with self._runtime.session() as (module, device, dtype):
            depth = module(to_network(pixel_values, device, dtype))
        if depth.ndim == 4:
            depth = depth[:, 0]
        return depth.to(torch.float32).to(caller)

    def release(self) -> None:
        self._runtime.release()  # only the float32 copy: the module is the checkpoint's
