"""The depth checkpoint's own MiDaS DPT-Hybrid as an estimator: one class for the network as the standalone
engine loads it (transformers' DPT, depth2img.estimate.midas) and as the WebUI has it loaded (ldm's MiDaSInference)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from depth2img.estimate import midas
from depth2img.estimate.interface import DepthEstimator, NetworkRuntime, PrecisionCaps, caller_device, to_network


def _call_module(module: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return module(pixel_values)


class CheckpointMidasEstimator(DepthEstimator):
    """The MiDaS DPT-Hybrid embedded in an SD 2 depth checkpoint, as the WebUI runs it. Two constructors:

    - `CheckpointMidasEstimator(model)` / `from_checkpoint_state_dict(state)`: transformers' DPT as the engine
      loads it (depth2img.estimate.midas), keyed by a fingerprint of its weights;
    - `from_module(module, cache_key)`: the loaded checkpoint's own MiDaS module (ldm's MiDaSInference in the
      WebUI), no second copy in memory; `module(pixel_values)` must return inverse depth [B, 1, h, w] or [B, h, w].

    Either runs under the runtime policy every estimator shares (interface.NetworkRuntime): inputs on the weights'
    device and dtype, a float32 copy where the backend lacks the dtype (one per module and weights, though the
    WebUI makes this estimator per job), autocast off.
    `execution_device`: where the network computes when that differs from where its weights rest (the
    WebUI's --lowvram/--medvram hooks move it to the GPU on call).
    """

    name = "checkpoint-midas"
    label = "MiDaS DPT-Hybrid (from the depth checkpoint)"

    def __init__(
        self,
        model,
        caps: PrecisionCaps | None = None,
        execution_device: torch.device | str | None = None,
        *,
        cache_key: str | None = None,
        forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] = midas.predict_depth,
    ):
        """model: DPTForDepthEstimation with dpt_hybrid_config() (see midas.load_midas_from_state_dict), run by
        `forward` (midas.predict_depth); cache_key None: a fingerprint of its weights.

        caps: which dtypes the compute device runs (None: probed on first use; injectable for tests).
        """
        self.model = model
        self._forward = forward
        self._cache_key = f"{self.name}:{midas.weights_fingerprint(model) if cache_key is None else cache_key}"
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
        cache_key: str | None = None,
    ) -> CheckpointMidasEstimator:
        """cache_key: the checkpoint's short hash where the host knows it; None: a fingerprint of the weights."""
        model = midas.load_midas_from_state_dict(checkpoint_state_dict, dtype=dtype, device=device)
        return cls(model, caps, cache_key=cache_key)

    @classmethod
    def from_module(
        cls,
        module: torch.nn.Module,
        cache_key: str,
        execution_device: torch.device | None = None,
        caps: PrecisionCaps | None = None,
    ) -> CheckpointMidasEstimator:
        """The loaded checkpoint's MiDaS module (the WebUI's), keyed by `cache_key` (the checkpoint's hash)."""
        return cls(module, caps, execution_device, cache_key=cache_key, forward=_call_module)

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
            depth = self._forward(model, to_network(pixel_values, device, dtype))
        if depth.ndim == 4:
            depth = depth[:, 0]
        return depth.to(torch.float32).to(caller)

    def release(self) -> None:
        self._runtime.release()  # only the float32 copy: the network is the checkpoint's (or the WebUI's)
