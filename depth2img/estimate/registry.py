"""The estimator registry: which estimators exist here (and why one is unavailable), by name, and the loaded
ones kept for reuse.

Members: the depth checkpoint's own MiDaS (depth2img.estimate.checkpoint_midas), transformers / Marigold model
folders (depth2img.estimate.folders) and, in a WebUI with the ControlNet extension, its depth preprocessors
(depth2img.estimate.controlnet). The interface they share: depth2img.estimate.interface.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from depth2img.estimate import controlnet as controlnet_bridge
from depth2img.estimate import folders as folder_estimators
from depth2img.estimate import midas
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.estimate.interface import DepthEstimator


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
    # A folder called checkpoint-midas is skipped: names are unique, and the built-in one wins.
    return [f for f in folder_estimators.list_folders() if f.name != CheckpointMidasEstimator.name]


def _controlnet_entry(preprocessor) -> EstimatorInfo:
    estimator = controlnet_bridge.ControlNetEstimator(preprocessor)  # only named here: nothing loads
    return EstimatorInfo(estimator.name, estimator.label, True, kind=estimator.kind, source=estimator.source)


def _controlnet_entries() -> list[EstimatorInfo]:
    return [_controlnet_entry(p) for p in controlnet_bridge.depth_preprocessors()]


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
    folders = _folders()
    for folder in folders:
        if folder.name == name:
            return folder
    if not ANY_FOLDER_PATH:
        if not _is_path(name):
            return None
        normal = os.path.normpath(name)
        for folder in folders:
            if any(normal == os.path.normpath(root / folder.name) for root in folder_estimators.ESTIMATOR_DIRS):
                return folder
        raise ValueError(
            "a path is accepted only for a folder inside the model folders (models/depth); "
            "give the estimator's name instead (GET /depth2img/v1/estimators lists them)"
        )
    if _is_path(name) or _is_dir(Path(name)):
        path = Path(name).expanduser()
        if not _is_dir(path):
            raise ValueError(f"estimator folder not found: {path}")
        return folder_estimators.inspect_folder(path.resolve())
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
    fingerprint = folder_estimators.folder_fingerprint(folder.path)
    key = (str(folder.path), fingerprint, str(torch.device(device or "cpu")), dtype or torch.float32)
    if key not in _LOADED:
        for stale in [k for k in _LOADED if k[0] == key[0] and k[1] != fingerprint]:
            _LOADED.pop(stale).release()  # the replaced model's weights
        marigold = folder.model_type == "marigold"
        kind = folder_estimators.MarigoldFolderEstimator if marigold else folder_estimators.TransformersFolderEstimator
        _LOADED[key] = kind(folder, device=device, dtype=dtype)
    return _LOADED[key]


def release_estimators() -> None:
    """Free the weights of every folder or ControlNet estimator built so far (they load again when next used):
    the core of the WebUI's "keep estimator in memory" setting, called after each job when it is off."""
    for estimator in _LOADED.values():
        estimator.release()
