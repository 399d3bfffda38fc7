"""App overhead: one generation through the app's HTTP API (gradio_client) vs the engine's `generate` called directly.

Run: .venv/bin/python bench/bench_app.py [--checkpoint C] [--size S] [--steps K] [--repeats N]
                                        [--depth estimated|upload]

Both sides use one pipeline object (the app is served from this process, on a free port), the same image, seed,
steps, size and scheduler. The app's side is everything a user of its API pays: the upload of the init image,
the queue, decoding, the generation, writing the PNGs and the 16-bit depth map under --out, gradio's cache and
the download of the results. After one warm-up call of each, each repeat runs both back to back, the order
alternating; the figure is the median of the per-repeat ratios app time / engine time (goal <= 1.05), with their
min-max, and the median absolute overhead per call (which does not grow with the model or the steps). The same
from this process's CPU time (server, client and engine all run here), which other processes on a shared machine
disturb less than the wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.same_work import require_same_work  # noqa: E402
from depth2img.base.paths import REPO_ROOT, cache_dir  # noqa: E402
from depth2img.export.tiny import build_tiny_depth_checkpoint  # noqa: E402
from depth2img.pipeline.generate import generate  # noqa: E402
from depth2img.pipeline.load import load_pipeline  # noqa: E402
from depth2img.pipeline.request import GenerationRequest  # noqa: E402
from depth2img.source import (
    decoding,  # noqa: E402
    encoding,  # noqa: E402
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="default: the tiny depth checkpoint (random weights)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--depth", choices=["estimated", "upload"], default="estimated")
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    out = work / "out"
    # Before gradio is imported: its cache goes under --out, as the app's launch() arranges.
    os.environ["GRADIO_TEMP_DIR"] = str(out / ".gradio-cache")
    from gradio_client import Client, handle_file

    from depth2img.standalone.app import DepthApp

    checkpoint = options.checkpoint or build_tiny_depth_checkpoint(cache_dir() / "fixtures")
    pipe = load_pipeline(checkpoint)
    image_path = work / "scene.png"
    Image.open(REPO_ROOT / "examples" / "scene.png").convert("RGB").save(image_path)
    depth_path = work / "depth16.png"
    ramp = np.tile(np.linspace(0, 1, options.size, dtype=np.float32), (options.size, 1))
    depth_path.write_bytes(encoding.encode_png16(ramp))

    app = DepthApp(pipe, out)
    blocks = app.build()
    blocks.queue(default_concurrency_limit=1)
    port = free_port()
    blocks.launch(server_port=port, prevent_thread_lock=True, quiet=True, allowed_paths=[str(out)])
    client = Client(f"http://127.0.0.1:{port}", verbose=False, download_files=str(work / "downloads"))

    settings = dict(steps=options.steps, width=options.size, height=options.size, seed=1, strength=0.8)
    upload = options.depth == "upload"

    def through_app():
        depth = dict(source="upload", depth_image=handle_file(str(depth_path))) if upload else {}
        gallery = client.predict(handle_file(str(image_path)), prompt="a room", api_name="/generate", **settings,
                                 **depth)[0]
        return [Image.open(item["image"]).convert("RGB") for item in gallery]

    def direct():
        request = GenerationRequest(
            prompt="a room",
            image=decoding.open_image(image_path, "the init image"),
            depth=depth_path if upload else None,
            steps=options.steps,
            width=options.size,
            height=options.size,
            seed=1,
            strength=0.8,
        )
        return generate(pipe, request, progress=False).images

    def timed(fn) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu

    # Warm-up (estimator cache, first-call allocations, the HTTP connection), and the check that both sides
    # made the same picture (same weights, seed and settings; the app's PNG is lossless): else no ratio.
    require_same_work("app against engine.generate", through_app(), direct(), largest=2.0)
    app_s, engine_s = [], []
    for repeat in range(options.repeats):
        pair = (through_app, direct) if repeat % 2 == 0 else (direct, through_app)
        times = {fn: timed(fn) for fn in pair}
        app_s.append(times[through_app])
        engine_s.append(times[direct])
    blocks.close()
    shutil.rmtree(work)

    print(
        f"checkpoint {Path(checkpoint).name}, {options.size}x{options.size}, {options.steps} steps, depth "
        f"{options.depth}, {options.repeats} repeats"
    )
    for index, clock in enumerate(("wall", "CPU")):
        app_t, engine_t = [t[index] for t in app_s], [t[index] for t in engine_s]
        ratios = [a / e for a, e in zip(app_t, engine_t, strict=True)]
        overhead_ms = [1000 * (a - e) for a, e in zip(app_t, engine_t, strict=True)]
        print(
            f"{clock} time: engine.generate {statistics.median(engine_t):.3f} s/call, app HTTP API "
            f"{statistics.median(app_t):.3f} s/call; app / engine {statistics.median(ratios):.3f} "
            f"[min-max {min(ratios):.3f}-{max(ratios):.3f}]; overhead {statistics.median(overhead_ms):.0f} ms/call "
            f"[min-max {min(overhead_ms):.0f}-{max(overhead_ms):.0f}] (goal: ratio <= 1.05)"
        )


if __name__ == "__main__":
    main()
