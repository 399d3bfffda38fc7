"""Render a sequence's frames on a Ray cluster: Ray actors, one pipeline each, each frame an independent task.

Ray is optional (`pip install ray`): only `sequence --ray` imports it. The run's machine reads every frame and
its depth map (pass 1 wrote them) and sends them with the range through Ray's object store; an actor renders
with the same engine code and the same seed as a local run and sends the image back, which is written here.
So the nodes need only depth2img importable (this checkout on the same path, or installed) and the checkpoint
at the path given; a local instance (`--ray local`) has both.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from depth2img.base import limits
from depth2img.base.paths import REPO_ROOT
from depth2img.sequences.distribute import WorkerFailed
from depth2img.sequences.passes import FrameJob, load_frame, request_for_frame

RAY_MISSING = "--ray needs Ray, an optional extra: pip install ray (or pip install 'sd-webui-depth2img[ray]')"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached; the message says what to do."""


def import_ray():
    try:
        import ray
    except ImportError as error:
        raise RayUnavailable(f"{RAY_MISSING} ({error})") from error
    return ray


class FrameRenderer:
    """The actor: loads the pipeline once, then renders frames (made a Ray actor class by ray_workers)."""

    def __init__(self, checkpoint: str | None, scheduler: str):
        if checkpoint is not None and not os.path.exists(checkpoint):  # said before the engine's heavy imports
            raise FileNotFoundError(f"checkpoint {checkpoint} not found on Ray node {socket.gethostname()}: every "
                                    "node needs it at the same path")
        from depth2img.pipeline.load import load_pipeline  # on the Ray node, after the check above: heavy

        self.pipe = load_pipeline(checkpoint, scheduler=scheduler, announce=lambda message: None)

    def render(self, template, image, depth, depth_range):
        from depth2img.pipeline.generate import generate  # on the Ray node (torch, diffusers)

        result = generate(self.pipe, request_for_frame(template, image, depth, depth_range), progress=False)
        return result.images[0]


@dataclass
class RayWorker:
    """One actor; render() sends one frame and waits for its image."""

    name: str
    actor: object
    max_pixels: int

    def render(self, template, job: FrameJob):
        ray = import_ray()
        image, depth = load_frame(job, self.max_pixels)  # a frame that cannot be read fails alone
        try:
            return ray.get(self.actor.render.remote(template, image, depth, job.depth_range))
        except ray.exceptions.RayTaskError as error:
            cause = error.cause if isinstance(error.cause, Exception) else None
            if isinstance(cause, (limits.DepthMapError, ValueError)):
                raise ValueError(str(cause)) from error  # the frame's request was refused: the frame fails
            raise WorkerFailed(_first_line(error)) from error
        except ray.exceptions.RayError as error:  # the actor died, or could not start (import, checkpoint)
            raise WorkerFailed(_first_line(error)) from error


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:500]


def worker_runtime_env() -> dict:
    """Ray's runtime_env for this job: its workers import depth2img from this checkout where the path exists on
    their node (a local instance, a shared file system), else from their own installation."""
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


def connect(address: str) -> None:
    """Join the cluster at address ("auto": the one this machine belongs to; "local": start one here), unless
    this process is connected already."""
    ray = import_ray()
    if ray.is_initialized():
        return
    try:
        ray.init(address=None if address == "local" else address, runtime_env=worker_runtime_env(),
                 log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r} ({error}); start one (ray start --head) "
                             "or give its address, or --ray local to start one here") from error


def actor_resources(gpus: int, actors: int | None) -> tuple[int, dict]:
    """(how many actors, what each asks Ray for): one per GPU by default; more actors than GPUs share them
    (Ray's fractional GPUs); without GPUs, one actor (or `actors`) of one CPU each."""
    count = actors or max(1, gpus)
    if gpus:
        return count, {"num_gpus": min(1.0, gpus / count)}
    return count, {"num_cpus": 1}


def ray_workers(checkpoint: str | None, scheduler: str, actors: int | None, max_pixels: int,
                say=print) -> list[RayWorker]:
    """Start the actors (see actor_resources)."""
    ray = import_ray()
    count, resources = actor_resources(int(ray.cluster_resources().get("GPU", 0)), actors)
    remote = ray.remote(**resources)(FrameRenderer)
    each = f"{resources['num_gpus']:g} GPU" if "num_gpus" in resources else "1 CPU"
    say(f"ray: {count} actor(s), each {each} and one pipeline")
    return [RayWorker(f"ray actor {i + 1}", remote.remote(checkpoint, scheduler), max_pixels)
            for i in range(count)]
