"""Engine overhead vs the plain diffusers pipeline, and estimator calls with the depth cache.

Run: .venv/bin/python bench/bench_engine.py [--checkpoint C] [--steps K] [--repeats N] [--size S]
Both pipelines share the same weights; runs are interleaved so drift hits both alike. Ratios, not seconds,
are the result (goal: time per denoising step <= 1.02 x plain diffusers; estimator calls 1 for a batch of 4
copies of one image, 0 for a repeated run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from depth2img.engine import GenerationRequest, generate, load_pipeline  # noqa: E402
from depth2img.paths import cache_dir  # noqa: E402
from depth2img.tiny import build_tiny_depth_checkpoint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None, help="default: the tiny test checkpoint")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    checkpoint = args.checkpoint or build_tiny_depth_checkpoint(cache_dir() / "fixtures")
    pipe = load_pipeline(checkpoint, device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    from diffusers import StableDiffusionDepth2ImgPipeline

    plain = StableDiffusionDepth2ImgPipeline(**pipe.components)
    plain.set_progress_bar_config(disable=True)

    size = args.size
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    depth = np.tile(np.linspace(0, 1, size, dtype=np.float32), (size, 1))

    def ours(steps):
        request = GenerationRequest(prompt="a room", image=image, depth=depth, steps=steps, strength=1.0, seed=1)
        return generate(pipe, request, progress=False)

    def reference(steps):
        return plain(
            prompt="a room", image=image, depth_map=torch.from_numpy(depth)[None], strength=1.0,
            num_inference_steps=steps, generator=torch.Generator("cpu").manual_seed(1),
        )

    ours(2), reference(2)  # warm-up
    # Per-step time = (T(steps) - T(2)) / (steps - 2): the fixed per-call work (text, VAE, depth) cancels out.
    times = {(name, steps): [] for name in ("engine", "diffusers") for steps in (2, args.steps)}
    for _ in range(args.repeats):
        for steps in (2, args.steps):
            for name, fn in (("engine", ours), ("diffusers", reference)):
                start = time.perf_counter()
                fn(steps)
                times[name, steps].append(time.perf_counter() - start)
    median = {key: statistics.median(value) for key, value in times.items()}
    per_step = {
        name: (median[name, args.steps] - median[name, 2]) / (args.steps - 2) for name in ("engine", "diffusers")
    }
    print(f"time per call at {args.steps} steps: engine {median['engine', args.steps]:.3f} s, "
          f"diffusers {median['diffusers', args.steps]:.3f} s")
    print(f"checkpoint: {checkpoint}  size {size}x{size}  steps {args.steps}  repeats {args.repeats}")
    print(f"time per denoising step: engine {per_step['engine'] * 1000:.1f} ms, "
          f"diffusers {per_step['diffusers'] * 1000:.1f} ms, ratio {per_step['engine'] / per_step['diffusers']:.3f}"
          " (goal <= 1.02)")

    pipe.depth_cache.clear()
    before = pipe.depth_cache.estimator_calls
    pipe(prompt=["a room"] * 4, image=[image] * 4, num_inference_steps=2, strength=1.0)
    first = pipe.depth_cache.estimator_calls - before
    pipe(prompt=["a room"] * 4, image=[image] * 4, num_inference_steps=2, strength=1.0)
    second = pipe.depth_cache.estimator_calls - before - first
    print(f"estimator calls, batch of 4 copies of one image: {first} (goal 1); repeated run: {second} (goal 0)")


if __name__ == "__main__":
    main()
