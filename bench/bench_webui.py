"""Extension vs the WebUI's native depth path, over HTTP, same WebUI, interleaved runs.

Needs a running WebUI (--api) with this extension and the model to test loaded-able:
    .venv/bin/python bench/bench_webui.py --url http://127.0.0.1:7860 --model tiny-depth --size 64 --batch 4
Native runs use the WebUI's own conditioning (setting depth2img_takeover off, panel off); extension runs
enable the panel. Each repetition uses a new init image (the same one for both paths), so the extension's
cache across jobs does not flatter it. Peak memory: the WebUI process's resident set, sampled every 20 ms
during each request (pass --pid, else found by its command line).
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image


def find_webui_pid() -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"launch.py" in cmdline and b"--api" in cmdline:
                return int(proc.name)
    return None


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakSampler:
    def __init__(self, pid: int | None):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self):
        if self.pid:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        if self.pid:
            self._thread.join()


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--model", default="tiny-depth")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pid", type=int, default=None)
    parser.add_argument("--no-upload", action="store_true", help="skip the batch-1 uploaded-depth case")
    args = parser.parse_args()
    http = requests.Session()
    pid = args.pid or find_webui_pid()

    http.post(f"{args.url}/sdapi/v1/refresh-checkpoints").raise_for_status()
    models = http.get(f"{args.url}/sdapi/v1/sd-models").json()
    title = next(m["title"] for m in models if m["model_name"] == args.model)
    http.post(f"{args.url}/sdapi/v1/options", json={"sd_model_checkpoint": title}).raise_for_status()

    rng = np.random.default_rng(0)
    depth = np.tile(np.linspace(0, 65535, args.size), (args.size, 1)).astype(np.uint16)
    depth_b64 = base64.b64encode(cv2_png16(depth)).decode()

    def run(image, batch, mode):
        body = {
            "prompt": "a room", "steps": args.steps, "width": args.size, "height": args.size, "seed": 1,
            "sampler_name": "Euler", "batch_size": batch, "denoising_strength": 0.9, "init_images": [b64_png(image)],
        }
        if mode == "extension":
            body["alwayson_scripts"] = {"depth2img": {"args": [{"enabled": True}]}}
        elif mode == "extension-upload":
            body["alwayson_scripts"] = {
                "depth2img": {"args": [{"enabled": True, "source": "upload", "depth_image": depth_b64}]}
            }
        http.post(f"{args.url}/sdapi/v1/options", json={"depth2img_takeover": mode != "native"}).raise_for_status()
        with PeakSampler(pid) as sampler:
            start = time.perf_counter()
            response = http.post(f"{args.url}/sdapi/v1/img2img", json=body, timeout=3600)
            elapsed = time.perf_counter() - start
        response.raise_for_status()
        return elapsed, sampler.peak

    def image():
        return Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8))

    cases = [("native", args.batch), ("extension", args.batch)]
    if not args.no_upload:
        cases += [("native", 1), ("extension-upload", 1)] if args.batch != 1 else [("extension-upload", 1)]
    run(image(), 1, "native"), run(image(), 1, "extension")  # warm-up
    results: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for _ in range(args.repeats):
        pair = image()
        for key in dict.fromkeys(cases):
            results.setdefault(key, []).append(run(pair, key[1], key[0]))
    http.post(f"{args.url}/sdapi/v1/options", json={"depth2img_takeover": True})

    def median_time(key):
        return statistics.median(t for t, _ in results[key])

    def peak(key):
        return max(p for _, p in results[key])

    print(f"model {args.model}, {args.size}x{args.size}, {args.steps} steps, {args.repeats} repeats, CPU")
    for key in results:
        print(f"  {key[0]:>17} batch {key[1]}: {median_time(key):7.2f} s  peak RSS {peak(key) / 2**30:.2f} GiB")
    print(f"batch {args.batch}, estimated depth: extension / native = "
          f"{median_time(('extension', args.batch)) / median_time(('native', args.batch)):.3f}")
    if ("extension-upload", 1) in results:
        print(f"batch 1, uploaded depth vs native estimate: extension / native = "
              f"{median_time(('extension-upload', 1)) / median_time(('native', 1)):.3f}")
    if pid:
        ratio = peak(("extension", args.batch)) / peak(("native", args.batch))
        print(f"peak memory, batch {args.batch}: extension / native = {ratio:.3f}")


def cv2_png16(depth):
    import cv2

    ok, data = cv2.imencode(".png", depth)
    assert ok
    return data.tobytes()


if __name__ == "__main__":
    main()
