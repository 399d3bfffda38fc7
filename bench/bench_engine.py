"""Engine vs the plain diffusers pipeline, per whole call; estimator calls with the depth cache.

Run: .venv/bin/python bench/bench_engine.py [--checkpoint C] [--steps K] [--repeats N] [--size S] [--threads T]
                                           [--device D] [--dtype float32|float16|bfloat16] [--depth user|estimated|both]

What is timed is one whole call — `generate(pipe, request)` against `StableDiffusionDepth2ImgPipeline(...)` with
the same weights (one set of modules), the same depth, the same seed and steps. A per-step figure
(T(N) - T(2)) / (N - 2) would cancel exactly the per-call work the engine changes (depth preparation, cache,
request handling) and be ~1 by construction, so it is not reported.

Each repeat runs both back to back, the order alternating, after one warm-up call of each; the figure is the
median of the per-repeat speed ratios (diffusers time / engine time: >= 1 means the engine is as fast or faster),
with their min-max; on the CPU also the same from this process's CPU time, which other processes on a shared
machine disturb less than the wall time (not nothing: torch's waiting threads spin; --threads 1 steadies it
further). Depth sources:
- user: one depth map, handed to both (the engine as an array, diffusers as the same values in a tensor);
- estimated: both estimate from the image every call (the engine's depth cache is cleared before each call;
  diffusers gets a DPT image processor at MiDaS's 384x384 input, the engine's own input size for a square image).
Goals: speed ratio >= 1.00; estimator calls 1 for a batch of 4 copies of one image, 0 for a repeated run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.same_work import require_same_work  # noqa: E402
from depth2img.base.paths import cache_dir  # noqa: E402
from depth2img.export.tiny import build_tiny_depth_checkpoint  # noqa: E402
from depth2img.pipeline.generate import generate  # noqa: E402
from depth2img.pipeline.load import load_pipeline  # noqa: E402
from depth2img.pipeline.request import GenerationRequest  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of fn(). On CUDA the queued kernels are waited for on both
    sides, or the wall time would be launch time only. The CPU time counts what this process used, so on a
    shared CPU it moves less than the wall time when other processes take the cores."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _ratio_line(name: str, engine: list[float], plain: list[float], steps: int) -> str:
    ratios = [p / e for e, p in zip(engine, plain, strict=True)]
    engine_s, plain_s = statistics.median(engine), statistics.median(plain)
    return (
        f"{name}: engine {engine_s:.3f} s/call ({steps / engine_s:.2f} it/s over the whole call), diffusers "
        f"{plain_s:.3f} s/call ({steps / plain_s:.2f} it/s); speed ratio {statistics.median(ratios):.3f} "
        f"[min-max {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} repeats]"
    )


@dataclass
class Comparison:
    """Seconds per call, one entry per repeat; the ratios are per repeat: diffusers time / engine time."""

    engine: list[float]
    diffusers: list[float]
    engine_cpu: list[float]
    diffusers_cpu: list[float]

    @property
    def ratios(self) -> list[float]:
        return [p / e for e, p in zip(self.engine, self.diffusers, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def describe(self, steps: int, cpu_time: bool = False) -> str:
        text = _ratio_line("wall time", self.engine, self.diffusers, steps)
        if cpu_time:
            text += "\n    " + _ratio_line("CPU time", self.engine_cpu, self.diffusers_cpu, steps)
        return text


def compare(engine_call, diffusers_call, repeats: int, device: torch.device, tolerance: dict) -> Comparison:
    """Warm up each once and check the two did the same work (same output size, pixels within tolerance: same
    weights, seed and depth), then `repeats` back-to-back pairs, alternating which runs first."""
    require_same_work("engine against diffusers", engine_call(), diffusers_call(), **tolerance)
    times: dict[str, list[tuple[float, float]]] = {"engine": [], "diffusers": []}
    for i in range(repeats):
        pair = [("engine", engine_call), ("diffusers", diffusers_call)]
        for name, fn in pair if i % 2 == 0 else pair[::-1]:
            times[name].append(timed(fn, device))
    engine, plain = times["engine"], times["diffusers"]
    return Comparison([t[0] for t in engine], [t[0] for t in plain], [t[1] for t in engine], [t[1] for t in plain])


def dpt_image_processor():
    """MiDaS preprocessing for diffusers' own estimate: 384x384, mean = std = 0.5 (as SD 2 depth's release)."""
    import importlib.util

    import transformers

    processor_class = transformers.DPTImageProcessor
    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "DPTImageProcessorPil"):
        # What transformers 5 falls back to without torchvision, minus the warning it prints when doing so.
        processor_class = transformers.DPTImageProcessorPil
    return processor_class(
        do_resize=True, size={"height": 384, "width": 384}, keep_aspect_ratio=False,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )


# Pixel differences (0-255) allowed between the engine's picture and diffusers' with the same weights and seed.
# Given depth: the same depth, so float rounding only (measured here: 0). Estimated depth: diffusers' DPT image
# processor resizes the image with PIL, the engine's estimator with torch, so the depths differ a little and a
# few pixels a lot (measured here on the bench's noise image: mean 2.1-4.1, largest 23-48): the mean is checked.
TOLERANCE = {"user": {"largest": 2.0}, "estimated": {"mean": 8.0}}


class ReferenceCannotRun(SystemExit):
    """The reference itself fails on this stack: no ratio, and the message says where the bench can run."""


def reference_estimates_here(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether diffusers' depth pipeline can estimate depth here: it estimates under torch.autocast(device, dtype).
    Current torch warns and disables an autocast it cannot do; torch 2.1 (the WebUI's pin) raises on the CPU for
    anything but bfloat16 ("AutocastCPU only support Bfloat16"), so there the reference cannot estimate at all."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.autocast(device.type, dtype=dtype):
                pass
    except RuntimeError:
        return False
    return True


def engine_vs_diffusers(pipe, image: Image.Image, depth: np.ndarray | None, steps: int, repeats: int) -> Comparison:
    """Time generate() against plain diffusers on pipe's modules, at the image's size on both sides (the engine's
    own default size is about 512x512); depth None: both estimate it every call."""
    from diffusers import StableDiffusionDepth2ImgPipeline

    device = pipe._execution_device
    if depth is None and not reference_estimates_here(device, pipe.dtype):
        raise ReferenceCannotRun(
            f"bench refused: diffusers' depth pipeline cannot estimate depth on {device.type} in {pipe.dtype} with "
            f"torch {torch.__version__} (its torch.autocast raises); bench estimated depth with current releases "
            "(.venv) or on a GPU; no ratio printed"
        )
    components = dict(pipe.components)
    if depth is None:
        components["feature_extractor"] = dpt_image_processor()
    plain = StableDiffusionDepth2ImgPipeline(**components)
    plain.set_progress_bar_config(disable=True)

    def engine_call():
        if depth is None:
            pipe.depth_cache.clear()  # else every call after the first would skip the estimate
        request = GenerationRequest(
            prompt="a room", image=image, depth=depth, steps=steps, strength=1.0, seed=1,
            width=image.width, height=image.height,
        )
        return generate(pipe, request, progress=False).images

    def diffusers_call():
        depth_map = None if depth is None else torch.from_numpy(depth)[None]
        with warnings.catch_warnings():
            # diffusers estimates under autocast(device, dtype); on the CPU in float32 torch warns and disables it.
            warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
            return plain(
                prompt="a room", image=image, depth_map=depth_map, strength=1.0, num_inference_steps=steps,
                generator=torch.Generator("cpu").manual_seed(1),
            ).images

    tolerance = TOLERANCE["user" if depth is not None else "estimated"]
    return compare(engine_call, diffusers_call, repeats, device, tolerance)


def bench_inputs(size: int) -> tuple[Image.Image, np.ndarray]:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    depth = np.tile(np.linspace(0, 1, size, dtype=np.float32), (size, 1))
    return image, depth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the tiny test checkpoint")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--depth", choices=("user", "estimated", "both"), default="both")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    checkpoint = args.checkpoint or build_tiny_depth_checkpoint(cache_dir() / "fixtures")
    pipe = load_pipeline(checkpoint, device=args.device, dtype=DTYPES[args.dtype], announce=lambda _: None)
    pipe.set_progress_bar_config(disable=True)
    image, depth = bench_inputs(args.size)

    print(
        f"checkpoint: {checkpoint}\n{args.device} {args.dtype}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {args.size}x{args.size}, {args.steps} steps, strength 1.0, "
        f"{args.repeats} repeats (+1 warm-up), order alternating"
    )
    sources = ("user", "estimated") if args.depth == "both" else (args.depth,)
    for source in sources:
        try:
            result = engine_vs_diffusers(pipe, image, depth if source == "user" else None, args.steps, args.repeats)
        except ReferenceCannotRun as refused:
            print(refused.code)
            continue
        print(f"per call, {source} depth (goal: speed ratio >= 1.00)\n    "
              f"{result.describe(args.steps, cpu_time=pipe.device.type == 'cpu')}")

    pipe.depth_cache.clear()
    before = pipe.depth_cache.estimator_calls
    pipe(prompt=["a room"] * 4, image=[image] * 4, num_inference_steps=2, strength=1.0)
    first = pipe.depth_cache.estimator_calls - before
    pipe(prompt=["a room"] * 4, image=[image] * 4, num_inference_steps=2, strength=1.0)
    second = pipe.depth_cache.estimator_calls - before - first
    print(f"estimator calls, batch of 4 copies of one image: {first} (goal 1); repeated run: {second} (goal 0)")


if __name__ == "__main__":
    main()
