"""The job's depth checkpoint: which files are depth models, loading the panel's checkpoint for one job, and
why a job has none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from depth2img.base import paths
from depth2img.base.files import copy_file_atomic
from depth2img.checkpoint.load import find_checkpoints, inspect_checkpoint_cached
from depth2img.schema.args import Depth2ImgArgs


def no_depth_model_message(checkpoint: str, find_checkpoint: Callable, is_depth_checkpoint: Callable) -> str:
    """Why a Depth2Img job has no depth model, naming the chosen checkpoint when there is one.

    find_checkpoint(name) -> the WebUI's CheckpointInfo or None; is_depth_checkpoint(filename) -> bool.
    """
    if not checkpoint:
        return (
            "Depth2Img is enabled but the loaded model is not an SD 2 depth model: load one "
            "(512-depth-ema) or choose a depth checkpoint in the Depth2Img panel"
        )
    info = find_checkpoint(checkpoint)
    if info is None:
        return (
            f"the depth checkpoint '{checkpoint}' chosen in the Depth2Img panel was not found among the WebUI's "
            "models: choose one from the list (refresh it after adding files to models/Stable-diffusion)"
        )
    if not is_depth_checkpoint(info.filename):
        return (
            f"the checkpoint '{info.title}' chosen in the Depth2Img panel is not an SD 2 depth model: choose a "
            "depth checkpoint (512-depth-ema)"
        )
    return (
        f"the depth checkpoint '{info.title}' chosen in the Depth2Img panel did not load for this job: see the "
        "console for the WebUI's error"
    )


def checkpoints_to_register(known_filenames, is_depth_checkpoint: Callable) -> list[Path]:
    """Depth checkpoints in this extension's models/Stable-diffusion the WebUI does not list yet.

    Only that folder: the CLI's embedded demo checkpoint (models/demo, random weights) is no user's model.
    Each gets the shipped config beside it where it has none (the WebUI reads <checkpoint>.yaml).
    """
    known = {Path(name) for name in known_filenames}
    found = []
    for path in find_checkpoints(paths.USER_CHECKPOINT_DIR):
        if path in known or not is_depth_checkpoint(path):
            continue
        if not path.with_suffix(".yaml").exists():
            copy_file_atomic(paths.SHIPPED_DEPTH_CONFIG, path.with_suffix(".yaml"))
        found.append(path)
    return found


def is_depth_checkpoint(path) -> bool:
    """Whether the file is an SD 2 depth checkpoint; a bad file is logged and counts as not one."""
    try:
        return inspect_checkpoint_cached(path).is_depth_model
    except Exception as error:  # a bad file must not break the WebUI's model list
        print(f"[Depth2Img] skipped {path}: {error}")
        return False


def register_demo_text_arch() -> None:
    """Teach open_clip the tiny arch the embedded demo/test checkpoint names; never blocks the WebUI."""
    try:
        # Inside the try: whatever the import meets (open_clip's registry) must not stop the WebUI from starting.
        from depth2img.export.tiny import register_tiny_open_clip_arch

        register_tiny_open_clip_arch()
    except Exception as error:
        print(f"[Depth2Img] demo text encoder not registered: {error}")


def checkpoint_for_job(p, settings: Depth2ImgArgs, has_depth_model: bool, find_checkpoint: Callable) -> None:
    """Without a depth model loaded, the panel's depth checkpoint is loaded for this job only: the WebUI loads
    it from p.override_settings and restores the user's model afterwards. Anything wrong is left for
    process() to say (the WebUI only logs exceptions from before_process)."""
    if not (settings.enabled and settings.checkpoint) or has_depth_model:
        return
    info = find_checkpoint(settings.checkpoint)
    if info is not None and is_depth_checkpoint(info.filename):
        p.override_settings["sd_model_checkpoint"] = info.title
        p.override_settings_restore_afterwards = True
