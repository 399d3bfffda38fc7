"""The job's depth estimator: the loaded model's own MiDaS or the registry's, and freeing them after a job.
"""

from __future__ import annotations

from collections.abc import Callable

from depth2img.base.errors import Depth2ImgError
from depth2img.estimate import registry
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.estimate.interface import DepthEstimator

NO_DEPTH_MODEL_TO_ESTIMATE = "estimating with checkpoint-midas needs a loaded SD 2 depth model (or upload a depth map)"


def job_estimator(name: str, loaded_midas: Callable, device, dtype) -> DepthEstimator:
    """The estimator called `name` for a job, the preview or the API: for checkpoint-midas the loaded model's own
    MiDaS module (loaded_midas(), never a second copy), otherwise the registry's (a model folder, loaded once on
    `device` in `dtype`; a ControlNet preprocessor, where ControlNet runs it). ValueError saying why when it
    cannot run."""
    if name == CheckpointMidasEstimator.name:
        estimator = loaded_midas()
        if estimator is None:
            raise Depth2ImgError(NO_DEPTH_MODEL_TO_ESTIMATE)
        return estimator
    return registry.create_estimator(name, device=device, dtype=dtype)


def release_estimators(keep: bool) -> None:
    """After a job or request: free the model folders' and ControlNet's estimator weights unless the user keeps
    them (the "keep estimator in memory" setting; VRAM is short in the WebUI). The checkpoint's MiDaS is the
    model's and stays."""
    if not keep:
        registry.release_estimators()


def loaded_model_estimator(sd_model, device) -> CheckpointMidasEstimator | None:
    """The loaded model's own MiDaS as an estimator (never a copy), or None when it is not a depth model."""
    depth_model = getattr(sd_model, "depth_model", None)
    if depth_model is None:
        return None
    info = getattr(sd_model, "sd_checkpoint_info", None)
    key = getattr(info, "shorthash", None) or getattr(info, "filename", "loaded")
    # --lowvram/--medvram keep weights on the CPU and move the module on call: compute where it will run.
    execution_device = device if getattr(sd_model, "lowvram", False) else None
    return CheckpointMidasEstimator.from_module(depth_model, cache_key=str(key), execution_device=execution_device)
