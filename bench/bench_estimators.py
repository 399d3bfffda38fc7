"""Speed and memory of each folder estimator at full size vs the checkpoint's MiDaS, on this machine, one run.

    .venv/bin/python bench/bench_estimators.py [--size 512] [--repeats 5] [--only NAME ...]

The architectures at the sizes of their public checkpoints (Intel/dpt-large, Depth Anything V2 Small and Large,
GLPN-KITTI, ZoeDepth-NYU), seeded random weights (speed does not depend on their values), saved once as model
folders under .cache/bench-estimators/ and loaded by the real folder estimator: nothing is downloaded.

Per estimator, in its own process (so memory figures do not mix):
- time: estimate() of one 512x512 image end to end (the image processor, the network, post-processing back to
  512x512, metric -> inverse), after one warm-up call, `repeats` times, interleaved pair by pair with the
  checkpoint MiDaS (CheckpointMidasEstimator) in the same process, so machine load hits both alike. Reported:
  median and min-max of each, and the ratio estimator / MiDaS as the median of the per-pair ratios.
- memory: the weights (MB, float32), and the peak resident memory a warm estimate() call adds over the
  resident memory before it (Linux VmHWM, reset through /proc/self/clear_refs, after glibc's malloc_trim has
  returned memory freed by earlier calls): activations and buffers.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def _dinov2(hidden: int, layers: int, heads: int, out_indices: list[int]):
    import transformers

    return transformers.Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        image_size=518,
        patch_size=14,
        out_indices=out_indices,
        reshape_hidden_states=False,
    )


def specs() -> dict:
    """name: (config factory, image processor factory), at the public checkpoints' sizes."""
    import transformers as T

    def da_processor():
        return T.DPTImageProcessor(
            size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3
        )

    return {
        "dpt-large": (
            lambda: T.DPTConfig(
                hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                backbone_out_indices=[5, 11, 17, 23], neck_hidden_sizes=[256, 512, 1024, 1024],
                fusion_hidden_size=256, image_size=384,
            ),
            lambda: T.DPTImageProcessor(size={"height": 384, "width": 384}),
        ),
        "depth-anything-v2-small": (
            lambda: T.DepthAnythingConfig(
                backbone_config=_dinov2(384, 12, 6, [9, 10, 11, 12]), reassemble_hidden_size=384,
                neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, depth_estimation_type="relative",
            ),
            da_processor,
        ),
        "depth-anything-v2-large": (
            lambda: T.DepthAnythingConfig(
                backbone_config=_dinov2(1024, 24, 16, [5, 12, 18, 24]), reassemble_hidden_size=1024,
                neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, depth_estimation_type="relative",
            ),
            da_processor,
        ),
        "glpn-kitti": (
            lambda: T.GLPNConfig(
                depths=[3, 8, 27, 3], hidden_sizes=[64, 128, 320, 512], num_attention_heads=[1, 2, 5, 8],
                decoder_hidden_size=64, max_depth=80,
            ),
            lambda: T.GLPNImageProcessor(size_divisor=32),
        ),
        "zoedepth-nyu": (
            lambda: T.ZoeDepthConfig(),  # its defaults are ZoeDepth-NYU's (BEiT-L/16 384)
            lambda: T.ZoeDepthImageProcessor(
                size={"height": 384, "width": 512}, keep_aspect_ratio=True, ensure_multiple_of=32
            ),
        ),
    }


def build_folder(name: str) -> Path:
    import transformers

    from depth2img.base.paths import cache_dir
    from depth2img.estimate.folders import installed_architectures

    make_config, make_processor = specs()[name]
    config = make_config()
    if config.model_type not in installed_architectures():
        raise SystemExit(f"{name}: transformers {transformers.__version__} has no {config.model_type}")
    folder = cache_dir() / "bench-estimators" / name
    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        model = transformers.AutoModelForDepthEstimation.from_config(config)
        model.save_pretrained(folder, safe_serialization=True)
        make_processor().save_pretrained(folder)
    return folder


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_added_mb(fn) -> float:
    """The peak resident memory fn() adds over the resident memory before it, in MB (Linux, glibc)."""
    # Heap that earlier calls freed stays resident and would be reused unseen: give it back to the OS first
    # (measured: without this, the warm call of the large estimators showed 0 MB added).
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - before) / 1024


def midas_estimator():
    import transformers

    from depth2img.estimate import midas
    from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator

    model = midas.randomize_for_fixture(transformers.DPTForDepthEstimation(midas.dpt_hybrid_config()), seed=0)
    return CheckpointMidasEstimator(model.eval().requires_grad_(False))


def weights_mb(model) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6


def measure_one(name: str, size: int, repeats: int) -> dict:
    """Run in a child process: the candidate and the MiDaS anchor, interleaved."""
    from depth2img.estimate.registry import create_estimator

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    anchor = midas_estimator()
    if name == "checkpoint-midas":
        candidate, model = anchor, anchor.model
    else:
        candidate = create_estimator(str(build_folder(name)))
        candidate.load()
        model = candidate.model
    anchor.estimate(image)
    candidate.estimate(image)  # warm-up: also pages in weights that from_pretrained mapped from the file
    memory = peak_added_mb(lambda: candidate.estimate(image))
    times, anchor_times = [], []
    for i in range(repeats):
        pair = [(times, candidate), (anchor_times, anchor)]
        for bucket, estimator in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            estimator.estimate(image)
            bucket.append(time.perf_counter() - start)
    return {
        "name": name,
        "kind": candidate.kind,
        "weights_mb": weights_mb(model),
        "peak_added_mb": memory,
        "times": times,
        "anchor_times": anchor_times,
        "ratio": statistics.median(t / a for t, a in zip(times, anchor_times, strict=True)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="estimator names (default: all the installed transformers has)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_one(args.child, args.size, args.repeats)))
        return 0

    from depth2img.estimate.folders import installed_architectures

    have = installed_architectures()
    names = ["checkpoint-midas"] + [n for n, (cfg, _) in specs().items() if cfg().model_type in have]
    if args.only:
        names = [n for n in names if n in args.only]
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, image {args.size}x{args.size}, {args.repeats} repeats, warm"
    )
    print(f"{'estimator':26s} {'kind':8s} {'weights':>9s} {'peak added':>11s} {'median':>9s} {'min-max':>17s} "
          f"{'MiDaS median':>13s} {'ratio':>6s}")
    for name in names:
        child = subprocess.run(
            [sys.executable, __file__, "--child", name, "--size", str(args.size), "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            print(f"{name:26s} failed: {child.stderr.strip().splitlines()[-1] if child.stderr else child.returncode}")
            continue
        r = json.loads(child.stdout.strip().splitlines()[-1])
        t, a = r["times"], r["anchor_times"]
        note = "  (MiDaS against itself: the noise floor)" if name == "checkpoint-midas" else ""
        print(
            f"{name:26s} {r['kind']:8s} {r['weights_mb']:7.0f}MB {r['peak_added_mb']:9.0f}MB "
            f"{statistics.median(t):8.2f}s {min(t):7.2f}-{max(t):<7.2f}s  {statistics.median(a):11.2f}s "
            f"{r['ratio']:6.2f}{note}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
