"""Speed of our MiDaS estimator vs Stability's ldm MiDaS, same weights, same input, one run.

Needs environment b (the `ldm` package):  /tmp/envs/b/bin/python bench/bench_estimator.py

Two figures, each ours / ldm (goal <= 1.05): the median over repeats of the ratio within a back-to-back pair,
so drift in machine load hits both sides alike:
- network: midas.predict_depth(DPTForDepthEstimation) vs ldm DPTDepthModel.forward on the same midas_in;
- end to end: CheckpointMidasEstimator.estimate(image) vs the WebUI's AddMiDaS + sd_model.depth_model.
Weights are seeded random (midas.randomize_for_fixture); speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from bench.same_work import require_same_work  # noqa: E402


def build(device: torch.device, dtype: torch.dtype = torch.float32):
    """ldm's MiDaSInference and our DPTForDepthEstimation with the same seeded random weights, on device in dtype."""
    import transformers
    from ldm.modules.midas import api

    from depth2img.estimate import midas

    api.ISL_PATHS["dpt_hybrid"] = None  # DPTDepthModel(path=None): nothing is loaded
    torch.manual_seed(0)
    depth_model = api.MiDaSInference(model_type="dpt_hybrid").eval()
    hf = midas.randomize_for_fixture(transformers.DPTForDepthEstimation(midas.dpt_hybrid_config()), seed=0)
    depth_model.model.load_state_dict(midas.hf_to_ldm_state_dict(hf.state_dict()), strict=True)
    checkpoint = {f"depth_model.{k}": v for k, v in depth_model.state_dict().items()}
    ours = midas.load_midas_from_state_dict(checkpoint, device=device, dtype=dtype)
    return depth_model.to(device=device, dtype=dtype), ours


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@dataclass
class Comparison:
    ours: list[float]  # seconds per call
    ldm: list[float]

    @property
    def ratio(self) -> float:
        """ours / ldm: the median of per-pair ratios (each pair runs back to back, so both see the same load)."""
        return statistics.median(o / r for o, r in zip(self.ours, self.ldm, strict=True))

    def describe(self) -> str:
        pairs = [o / r for o, r in zip(self.ours, self.ldm, strict=True)]
        return (
            f"ours median {statistics.median(self.ours) * 1000:.1f} ms (min {min(self.ours) * 1000:.1f}), "
            f"ldm median {statistics.median(self.ldm) * 1000:.1f} ms (min {min(self.ldm) * 1000:.1f}), "
            f"ratio {self.ratio:.3f} [min-max {min(pairs):.3f}-{max(pairs):.3f}, {len(pairs)} pairs]"
        )


# Same weights, same input: the depths agree up to float rounding (measured here on the CPU at float32: 0, both
# figures); the tolerance leaves room for other kernels (GPU, another processor). The ratio is printed only if so.
TOLERANCE = 2e-3


def compare(name: str, ours_fn, ldm_fn, repeats: int, device: torch.device) -> Comparison:
    """Time ours against ldm: one warm-up each, which must give the same depth (TOLERANCE, relative to the depth's
    peak), then `repeats` back-to-back pairs; the result is printed."""
    ours, reference = ours_fn().float(), ldm_fn().float()  # also the warm-up
    peak = reference.abs().max().clamp_min(1e-12)
    largest, _ = require_same_work(f"{name}: ours against ldm", ours / peak, reference / peak, largest=TOLERANCE)
    ours_t, ldm_t = [], []
    for i in range(repeats):
        # alternate which goes first, so neither always runs on a warmer cache
        pair = [(ours_t, ours_fn), (ldm_t, ldm_fn)]
        for times, fn in pair if i % 2 == 0 else pair[::-1]:
            times.append(timed(fn, device))
    result = Comparison(ours_t, ldm_t)
    print(f"{name:11s} {result.describe()}; same depth (largest difference {largest:.1e} of its peak)")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=512, help="init image height (WebUI pixels)")
    parser.add_argument("--width", type=int, default=768, help="init image width")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from ldm.data.util import AddMiDaS

    from depth2img.estimate import midas
    from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator

    device = torch.device(args.device)
    depth_model, ours = build(device)
    estimator = CheckpointMidasEstimator(ours)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, args.height, args.width, generator=gen) * 2 - 1
    midas_in = midas.preprocess(image).to(device)

    def webui_flow():
        sample = AddMiDaS(model_type="dpt_hybrid")({"jpg": image[0].permute(1, 2, 0)})
        # MiDaSInference returns [B, 1, h, w]; ours [B, h, w]
        return depth_model(torch.from_numpy(sample["midas_in"][None]).to(device))[:, 0]

    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"image {args.height}x{args.width} -> midas_in {tuple(midas_in.shape[2:])}, repeats {args.repeats}"
    )
    with torch.no_grad():
        net = compare(
            "network",
            lambda: midas.predict_depth(ours, midas_in),
            lambda: depth_model.model(midas_in),
            args.repeats,
            device,
        )
        e2e = compare("end to end", lambda: estimator.estimate(image.to(device)), webui_flow, args.repeats, device)
    verdict = {True: "met", False: "NOT met"}
    print(f"goal <= 1.05: network {verdict[net.ratio <= 1.05]}, end to end {verdict[e2e.ratio <= 1.05]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
