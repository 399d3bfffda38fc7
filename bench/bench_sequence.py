"""Frame sequences: flicker of the background's depth conditioning, the batched depth pass, per-frame render cost.

Run: .venv/bin/python bench/bench_sequence.py [--checkpoint C] [--frames N] [--size S] [--steps K] [--batch B]
                                             [--repeats R] [--threads T]

On a synthetic shot rendered here (a static room: back wall, floor; a box coming nearer and moving right):
1. flicker: the mean absolute frame-to-frame change of the background's depth conditioning (pixels that are
   background in both frames, at the latent size), per-frame min-max vs the sequence's global range, from the
   shot's true depth maps, through the sequence's own depth pass (`run_depth_pass` reading them from a depth folder),
   plain and with invert + gamma + clip on (the set's one post-processing scale). Goal: global <= 1/10 of
   per-frame in both cases.
2. depth pass: `sequence.run_depth_pass` over N frames, estimated in batches of B vs one by one (the same
   function, batch_size B vs 1; each run into a fresh folder, the depth cache cleared). Ratio = batched time /
   one-by-one time (< 1: batching pays). The estimator is the checkpoint's MiDaS.
3. render: one sequence frame (`sequence.render_frame`: reads the frame and its depth map, renders, writes the
   PNG atomically) vs a single `pipeline.generate.generate` of the same frame, depth, range and seed held in memory.
   Ratio = frame time / generate time, median over repeats, the order alternating. Goal: <= 1.05.
Times are wall and this process's CPU time (the latter is disturbed less by other processes on a shared CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench.same_work import require_same_work  # noqa: E402
from depth2img.base.paths import cache_dir  # noqa: E402
from depth2img.condition.conditioning import depth_conditioning  # noqa: E402
from depth2img.export.tiny import build_tiny_depth_checkpoint  # noqa: E402
from depth2img.pipeline.generate import generate  # noqa: E402
from depth2img.pipeline.load import load_pipeline  # noqa: E402
from depth2img.pipeline.request import GenerationRequest  # noqa: E402
from depth2img.process.scale import range_sample
from depth2img.sequences.passes import FrameJob, ScaleSettings, render_frame, run_depth_pass, shared_ranges


def synthetic_shot(count: int, size: int) -> tuple[list[Image.Image], list[np.ndarray], list[np.ndarray]]:
    """(frames, true depth maps (larger = nearer), background masks): a back wall (0.25) over a floor that comes
    nearer towards the bottom (0.3 .. 0.7), and a box growing nearer (0.75 .. 1.0) as it moves right."""
    rows = np.arange(size, dtype=np.float32)[:, None].repeat(size, 1)
    horizon = size // 3
    base = np.where(rows < horizon, 0.25, 0.3 + 0.4 * (rows - horizon) / max(1, size - horizon)).astype(np.float32)
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 40, (size, size, 1)).astype(np.float32)
    wall = np.array([150, 140, 120], np.float32)
    floor = np.array([90, 70, 50], np.float32)
    colour = np.where(rows[..., None] < horizon, wall, floor) + texture
    frames, depths, backgrounds = [], [], []
    for i in range(count):
        t = i / max(1, count - 1)
        half = int(size * (0.08 + 0.07 * t))
        cx, cy = int(size * (0.25 + 0.5 * t)), int(size * 0.6)
        box = np.zeros((size, size), bool)
        box[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] = True
        depth = np.where(box, 0.75 + 0.25 * t, base).astype(np.float32)
        pixels = np.where(box[..., None], np.array([200, 40, 40], np.float32), colour)
        frames.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
        depths.append(depth)
        backgrounds.append(~box)
    return frames, depths, backgrounds


# The post-processing cases of the flicker measure: none, and every step that takes values from the maps.
FLICKER_CASES = {
    "no post-processing": {},
    "invert + gamma 1.8 + clip 2-98": {"invert_depth": True, "gamma": 1.8, "clip_near": 98.0, "clip_far": 2.0},
}


def flicker(depths: list[np.ndarray], backgrounds: list[np.ndarray], latent: int, postprocess: dict,
            scratch: Path) -> tuple[float, float]:
    """Mean |frame-to-frame change| of the background's conditioning: (per-frame, global), each as a sequence of
    the true maps (a depth folder) with these post-processing settings makes it: its depth pass, then conditioning
    on each frame's range."""
    depth_dir = scratch / "true-depth"
    depth_dir.mkdir(exist_ok=True)
    frames = [scratch / f"frame{i:04d}.png" for i in range(len(depths))]  # named only: the maps come from depth_dir
    for frame, depth in zip(frames, depths, strict=True):
        np.save(depth_dir / f"{frame.stem}.npy", depth)

    def conditioning(scale: str) -> np.ndarray:
        found = run_depth_pass(frames, scratch / f"flicker-{scale}-{len(os.listdir(scratch))}", None,
                               depth_dir=depth_dir, postprocess=postprocess, scale=ScaleSettings(scale))
        return np.concatenate([
            depth_conditioning(np.load(found.depth_files[f.name])[None], (latent, latent),
                               depth_range=found.ranges[f.name])[:, 0].numpy()
            for f in frames
        ])

    # Background at the latent size: a latent pixel counts if its whole footprint is background.
    factor = depths[0].shape[-1] // latent
    masks = [bg.reshape(latent, factor, latent, factor).all(axis=(1, 3)) for bg in backgrounds]

    def change(cond: np.ndarray) -> float:
        steps = [np.abs(cond[i + 1] - cond[i])[masks[i] & masks[i + 1]].mean() for i in range(len(cond) - 1)]
        return float(np.mean(steps))

    return change(conditioning("per-frame")), change(conditioning("global"))


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="depth checkpoint (default: the tiny test checkpoint)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="frames per estimator forward in the batched pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frames, depths, backgrounds = synthetic_shot(args.frames, args.size)
    for case, postprocess in FLICKER_CASES.items():
        with tempfile.TemporaryDirectory() as scratch:
            per_frame, shared = flicker(depths, backgrounds, args.size // 8, postprocess, Path(scratch))
        print(f"flicker of the background's conditioning, {args.frames} frames {args.size}², {case}: per-frame "
              f"{per_frame:.4f}, global {shared:.6f}, ratio {shared / per_frame:.4f} (goal <= 0.1)")

    checkpoint = args.checkpoint or build_tiny_depth_checkpoint(cache_dir() / "fixtures")
    pipe = load_pipeline(checkpoint, device="cpu", dtype=torch.float32, announce=lambda *_: None)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "frames"
        folder.mkdir()
        paths = []
        for i, frame in enumerate(frames):
            paths.append(folder / f"frame{i:04d}.png")
            frame.save(paths[-1])

        def depth_pass(batch_size: int, run: list[int]) -> None:
            run[0] += 1
            pipe.depth_cache.clear()
            out = scratch / f"pass-{batch_size}-{run[0]}"
            found = run_depth_pass(paths, out, lambda images: [d.numpy() for d in pipe.estimate_depth(images)],
                                   batch_size=batch_size)
            return [np.load(found.depth_files[path.name]) for path in paths]

        counter = [0]
        # Warm-up, and the check that batching changed no depth (float rounding only): else no ratio.
        require_same_work("depth pass, batched against one by one", depth_pass(args.batch, counter),
                          depth_pass(1, counter), largest=1e-3)
        batched, single = [], []
        for repeat in range(args.repeats):
            order = [(args.batch, batched), (1, single)]
            for batch_size, times in order if repeat % 2 == 0 else order[::-1]:
                times.append(timed(lambda b=batch_size: depth_pass(b, counter)))
        for kind, index in (("wall", 0), ("CPU", 1)):
            ratio = statistics.median(b[index] for b in batched) / statistics.median(s[index] for s in single)
            print(f"depth pass, {args.frames} frames: batched ({args.batch}/forward) / one by one, {kind} time: "
                  f"{ratio:.3f} ({statistics.median(b[index] for b in batched):.2f} s vs "
                  f"{statistics.median(s[index] for s in single):.2f} s)")

        # Render: one frame of a sequence vs a single generate of the same inputs.
        np.save(scratch / "depth.npy", depths[0])
        (global_range,) = set(shared_ranges([range_sample(d) for d in depths], ScaleSettings()))
        template = GenerationRequest(prompt="a room with a red box", steps=args.steps, strength=1.0, seed=3,
                                     width=args.size, height=args.size)
        job = FrameJob(paths[0].name, paths[0], scratch / "depth.npy", global_range, scratch / "render" / "out.png")
        alone = GenerationRequest(prompt=template.prompt, image=frames[0], depth=depths[0], depth_range=global_range,
                                  steps=args.steps, strength=1.0, seed=3, width=args.size, height=args.size)
        # Warm-up, and the check that the frame is the single generate's picture (same inputs): else no ratio.
        framed_picture = Image.open(render_frame(pipe, template, job)).convert("RGB")
        require_same_work("render, sequence frame against single generate", framed_picture,
                          generate(pipe, alone, progress=False).images[0], largest=2.0)
        framed, single = [], []
        for repeat in range(args.repeats):
            order = [(lambda: render_frame(pipe, template, job), framed),
                     (lambda: generate(pipe, alone, progress=False), single)]
            for fn, times in order if repeat % 2 == 0 else order[::-1]:
                times.append(timed(fn))
        for kind, index in (("wall", 0), ("CPU", 1)):
            ratios = [f[index] / s[index] for f, s in zip(framed, single, strict=True)]
            print(f"render, {args.size}², {args.steps} steps: sequence frame / single generate, {kind} time: "
                  f"{statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}] (goal <= 1.05)")


if __name__ == "__main__":
    main()
