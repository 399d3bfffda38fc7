"""Pass 2 of a sequence shared among workers (WebUIs, Ray actors): a queue of frames, one frame per worker at a time.

A worker that fails (unreachable, crashed, answers with an error) is dropped and the frame it held goes back to
the queue for the others; the run says which worker failed and why. When no worker is left, the frames still
queued are reported as failed with the last reason. A frame that cannot be read here fails alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Protocol

from depth2img.base import limits
from depth2img.sequences.passes import FrameJob, save_output


class WorkerFailed(Exception):
    """The worker cannot render (unreachable, crashed, refused the job): its frames go to the other workers."""


class Worker(Protocol):
    name: str  # for messages: a URL, "ray actor 2"

    def render(self, template, job: FrameJob):
        """The frame's output image (PIL); WorkerFailed when the worker is at fault, DepthMapError/OSError/
        ValueError when the frame is."""


# What a frame (not its worker) fails on: unreadable frame or depth file, a request the engine refuses.
FRAME_ERRORS = (limits.DepthMapError, OSError, ValueError)


def share_frames(
    workers: Sequence[Worker], template, jobs: Sequence[FrameJob], say: Callable[[str], None] = print
) -> Iterator[tuple[FrameJob, str | None]]:
    """Render jobs on the workers (a render pass for sequence.run_sequence): yields (job, None) once job.out is
    written, (job, why) when the frame failed."""
    queue = deque(jobs)
    idle = list(workers)
    running: dict = {}  # future -> (worker, job)
    last_failure = "no workers given"
    # Threads, not processes: each one only waits on its worker (HTTP, Ray); the rendering happens there.
    with ThreadPoolExecutor(max_workers=max(1, len(workers)), thread_name_prefix="depth2img-worker") as pool:
        while queue or running:
            while idle and queue:
                worker, job = idle.pop(0), queue.popleft()
                running[pool.submit(worker.render, template, job)] = (worker, job)
            if not running:  # every worker failed
                for job in queue:
                    yield job, f"not rendered: every worker failed (last: {last_failure})"
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                worker, job = running.pop(future)
                try:
                    image = future.result()
                    save_output(image, job)
                except WorkerFailed as error:
                    last_failure = f"{worker.name}: {error}"
                    left = len(idle) + len(running)
                    say(f"worker {worker.name} failed: {error}; its frames go to the "
                        f"{left} other worker(s)" if left else f"worker {worker.name} failed: {error}")
                    queue.appendleft(job)
                    continue
                except FRAME_ERRORS as error:
                    yield job, str(error)
                else:
                    yield job, None
                idle.append(worker)
