"""Extension vs the WebUI's native depth path: img2img over HTTP, one WebUI, the same jobs, paired runs.

Needs a running WebUI (--api) on this machine with this extension and the model to test:
    .venv/bin/python bench/bench_webui.py --url http://127.0.0.1:7860 --model tiny-depth --size 64 --batch 4

- native: the WebUI's own depth conditioning (the panel off, and the setting depth2img_takeover off for the
  whole run); extension: the panel enabled. Each extension response must carry the extension's infotext, each
  native one must not, or the bench stops: a run that silently fell back would measure nothing.
- Warm-up: one run of each mode at every measured batch size before anything is timed.
- Repeats: per repeat and batch size, one native and one extension run on the same new init image (so the
  extension's depth cache across jobs does not flatter it), the order alternating between repeats.
- Figures: per mode the median [min-max] of wall seconds, of the WebUI process's CPU seconds (less disturbed by
  other work on a shared machine) and of the peak memory the request added above the process's resident set
  just before it (VmHWM after resetting it through /proc/PID/clear_refs, or RSS sampled every 20 ms where that
  reset is refused); and the per-repeat ratios extension / native, median [min-max]. The machine's load average
  is printed with them.
- The WebUI options the bench changes (the loaded checkpoint, depth2img_takeover) are set back at the end, also
  when a run fails or is interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: the repo's bench package

import numpy as np  # noqa: E402
import requests  # noqa: E402
from PIL import Image  # noqa: E402

from bench.same_work import require_same_work  # noqa: E402

MODES = ("native", "extension")
EXTENSION_MARKER = "Depth2Img estimator calls"  # infotext key every job conditioned by the extension carries
SAMPLE_INTERVAL_S = 0.02


# --- what runs when (pure) ---


@dataclass(frozen=True)
class Run:
    repeat: int | None  # None: warm-up, not measured
    batch: int
    mode: str


def schedule(batches: list[int], repeats: int) -> list[Run]:
    """Warm-ups first (both modes at every measured batch size), then per repeat and batch size a native and an
    extension run, native first on even repeats and the extension first on odd ones."""
    runs = [Run(None, batch, mode) for batch in batches for mode in MODES]
    for repeat in range(repeats):
        order = MODES if repeat % 2 == 0 else MODES[::-1]
        runs += [Run(repeat, batch, mode) for batch in batches for mode in order]
    return runs


# --- statistics (pure) ---


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        return cls(statistics.median(values), min(values), max(values))

    def describe(self, fmt: str = ".3f", unit: str = "") -> str:
        return f"{self.median:{fmt}} [{self.low:{fmt}}-{self.high:{fmt}}]{unit}"


def paired_ratios(extension: list[float], native: list[float]) -> list[float]:
    """extension / native per repeat (the two runs of a repeat ran back to back on the same image)."""
    return [e / n for e, n in zip(extension, native, strict=True)]


# --- the WebUI process: CPU time and peak memory of one request ---


def status_field_bytes(status_text: str, field: str) -> int:
    """A `kB` field (VmRSS, VmHWM) of /proc/PID/status, in bytes."""
    for line in status_text.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"/proc status has no {field} line")


def added_peak(baseline: int, peak: int) -> int:
    """Memory a request added at its peak over the resident set just before it; never negative (the process
    may return memory during the request, leaving the peak at the baseline)."""
    return max(0, peak - baseline)


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    cpu_s: float
    added_peak_bytes: int


class WebUIProcess:
    """Measures requests against one WebUI process (psutil for its RSS and CPU times)."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.status_path = Path(f"/proc/{pid}/status")
        self.clear_refs = Path(f"/proc/{pid}/clear_refs")
        self.uses_hwm = self._reset_hwm()
        sampled = f"RSS sampled every {SAMPLE_INTERVAL_S * 1000:.0f} ms"
        self.peak_method = "VmHWM reset before each request" if self.uses_hwm else sampled

    def _reset_hwm(self) -> bool:
        """Writing 5 to clear_refs sets VmHWM (peak RSS) to the current RSS (Linux >= 4.0, same user or root)."""
        try:
            self.clear_refs.write_text("5")
            return True
        except OSError:
            return False

    def _cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    def measure(self, request) -> Measurement:
        baseline = self.process.memory_info().rss
        if self.uses_hwm:
            self._reset_hwm()
        sampled_peak, stop = [baseline], threading.Event()

        def sample():
            while not stop.wait(SAMPLE_INTERVAL_S):
                sampled_peak[0] = max(sampled_peak[0], self.process.memory_info().rss)

        sampler = None if self.uses_hwm else threading.Thread(target=sample, daemon=True)
        if sampler:
            sampler.start()
        cpu, wall = self._cpu_seconds(), time.perf_counter()
        try:
            request()
        finally:
            wall, cpu = time.perf_counter() - wall, self._cpu_seconds() - cpu
            stop.set()
            if sampler:
                sampler.join()
        peak = status_field_bytes(self.status_path.read_text(), "VmHWM") if self.uses_hwm else sampled_peak[0]
        return Measurement(wall, cpu, added_peak(baseline, peak))


def find_webui_pid(url: str) -> int:
    """The pid of the `launch.py` process serving url's port (7860 when started without --port)."""
    import psutil

    port = urlparse(url).port or 7860
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if not any(part.endswith("launch.py") for part in cmdline):
            continue
        given = cmdline[cmdline.index("--port") + 1] if "--port" in cmdline[:-1] else "7860"
        if given == str(port):
            return process.info["pid"]
    raise SystemExit(f"no WebUI process (launch.py) serving port {port} found on this machine: pass --pid")


# --- the WebUI's options ---


@contextmanager
def options_set(http: requests.Session, url: str, changes: dict) -> Iterator[dict]:
    """Set WebUI options for the block, then put back the values found before it, also when the block fails."""
    response = http.get(f"{url}/sdapi/v1/options")
    response.raise_for_status()
    current = response.json()
    missing = [key for key in changes if key not in current]
    if missing:
        raise SystemExit(f"the WebUI at {url} has no option {', '.join(missing)}: is this extension installed there?")
    before = {key: current[key] for key in changes}
    try:
        http.post(f"{url}/sdapi/v1/options", json=changes).raise_for_status()
        yield before
    finally:
        http.post(f"{url}/sdapi/v1/options", json=before).raise_for_status()


@contextmanager
def interrupt_on_abort(http: requests.Session, url: str) -> Iterator[None]:
    """Stop the WebUI's current job when the block fails or is interrupted: else the WebUI would finish the
    abandoned job first, and the options restore after it would wait for that."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(requests.RequestException):
            http.post(f"{url}/sdapi/v1/interrupt", timeout=30)
        raise


def checkpoint_title(http: requests.Session, url: str, model: str) -> str:
    http.post(f"{url}/sdapi/v1/refresh-checkpoints").raise_for_status()
    models = http.get(f"{url}/sdapi/v1/sd-models").json()
    for entry in models:
        if model in (entry["model_name"], entry["title"]):
            return entry["title"]
    names = ", ".join(entry["model_name"] for entry in models)
    raise SystemExit(f"no checkpoint '{model}' in the WebUI (it has: {names}): put it in models/Stable-diffusion")


# --- the jobs ---


def b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def img2img_body(image_b64: str, size: int, steps: int, batch: int, mode: str) -> dict:
    body = {
        "prompt": "a room", "steps": steps, "width": size, "height": size, "seed": 1, "sampler_name": "Euler",
        "batch_size": batch, "denoising_strength": 0.9, "init_images": [image_b64], "send_images": False,
    }
    if mode == "extension":
        body["alwayson_scripts"] = {"depth2img": {"args": [{"enabled": True}]}}
    return body


def post_img2img(http: requests.Session, url: str, body: dict, mode: str) -> dict:
    """One job (its JSON answer); stops if it did not take the path it is counted for (the extension's hooks
    failing, or takeover on in a native run)."""
    response = http.post(f"{url}/sdapi/v1/img2img", json=body, timeout=3600)
    response.raise_for_status()
    extra = json.loads(response.json()["info"]).get("extra_generation_params", {})
    if (EXTENSION_MARKER in extra) != (mode == "extension"):
        raise SystemExit(f"a {mode} run {'lacks' if mode == 'extension' else 'carries'} the extension's infotext "
                         f"('{EXTENSION_MARKER}'): see the WebUI's log")
    return response.json()


# The extension's default (the checkpoint's MiDaS) against the WebUI's own depth path, same init image and seed:
# the same picture up to float rounding (measured here on the CPU: 0).
SAME_PICTURE_TOLERANCE = 2.0


def require_same_pictures(http: requests.Session, url: str, args) -> float:
    """One native and one extension job on the same init image and seed must give the same picture, or the bench
    stops before timing anything (a ratio of unequal work would mean nothing). Returns the largest difference."""
    image = b64_png(Image.fromarray(np.random.default_rng(1).integers(0, 255, (args.size, args.size, 3), np.uint8)))
    pictures = []
    # A WebUI's first job after its start differs from the next one with the same seed (measured here: native
    # against native, up to 8 of 255): that first job is not compared.
    for mode in ("native", "native", "extension"):
        body = {**img2img_body(image, args.size, args.steps, 1, mode), "send_images": True}
        answer = post_img2img(http, url, body, mode)
        pictures.append(Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).convert("RGB"))
    largest, _ = require_same_work("extension against native", pictures[2], pictures[1],
                                   largest=SAME_PICTURE_TOLERANCE)
    return largest


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def stop_on_signal(signum, frame):
    raise SystemExit(f"stopped by signal {signal.Signals(signum).name}")


def measure_all(http: requests.Session, url: str, webui: WebUIProcess, args) -> tuple[dict, list[float]]:
    """Every run of the schedule: {(batch, mode): [Measurement per repeat]}, and the 1-min load before each run."""
    rng = np.random.default_rng(0)
    results: dict[tuple[int, str], list[Measurement]] = {}
    loads: list[float] = []
    image_b64, image_key = "", None
    for run in schedule(args.batch, args.repeats):
        if image_key != (run.repeat, run.batch):  # a new init image for each pair of runs
            image = Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8))
            image_b64, image_key = b64_png(image), (run.repeat, run.batch)
        body = img2img_body(image_b64, args.size, args.steps, run.batch, run.mode)
        loads.append(os.getloadavg()[0])
        measurement = webui.measure(functools.partial(post_img2img, http, url, body, run.mode))
        label = "warm-up" if run.repeat is None else f"repeat {run.repeat + 1}"
        print(f"  {label:>9} batch {run.batch} {run.mode:>9}: {measurement.wall_s:8.2f} s wall "
              f"{measurement.cpu_s:8.1f} s CPU, +{measurement.added_peak_bytes / 2**20:7.0f} MiB", flush=True)
        if run.repeat is not None:
            results.setdefault((run.batch, run.mode), []).append(measurement)
    return results, loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--model", default="tiny-depth", help="checkpoint name or title in the WebUI")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, nargs="+", default=[4], help="one or more batch sizes")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pid", type=int, default=None, help="the WebUI's process (default: found by its port)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    url = args.url.rstrip("/")
    http = requests.Session()
    webui = WebUIProcess(args.pid or find_webui_pid(url))

    print(f"{args.model}, {args.size}x{args.size}, img2img, {args.steps} steps Euler, batch {args.batch}, "
          f"{args.repeats} repeats (+1 warm-up per mode and batch size), order alternating; peak memory: "
          f"{webui.peak_method}\nat start: {load_line()}")
    title = checkpoint_title(http, url, args.model)
    # A bench started in the background has SIGINT ignored and `kill` sends SIGTERM: both must still reach the
    # clean-up below (stop the WebUI's job, put the options back).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop_on_signal)
    with options_set(http, url, {"sd_model_checkpoint": title, "depth2img_takeover": False}):
        with interrupt_on_abort(http, url):
            largest = require_same_pictures(http, url, args)
            print(f"same picture from both paths (largest difference {largest:.0f} of 255)", flush=True)
            results, loads = measure_all(http, url, webui, args)
    print(f"at end: {load_line()}; 1-min load at the start of each run {min(loads):.2f}-{max(loads):.2f}")
    for batch in args.batch:
        native, extension = results[(batch, "native")], results[(batch, "extension")]
        print(f"batch {batch}, median [min-max] of {args.repeats}:")
        for name, runs in (("native", native), ("extension", extension)):
            print(f"  {name:>9}: wall {Spread.of([m.wall_s for m in runs]).describe('.2f', ' s')}, "
                  f"CPU {Spread.of([m.cpu_s for m in runs]).describe('.1f', ' s')}, peak memory above the baseline "
                  f"{Spread.of([m.added_peak_bytes / 2**20 for m in runs]).describe('.0f', ' MiB')}")
        for name, field in (("wall time", "wall_s"), ("CPU time", "cpu_s"), ("peak memory added", "added_peak_bytes")):
            ext, nat = [getattr(m, field) for m in extension], [getattr(m, field) for m in native]
            if min(nat) > 0:
                print(f"  extension / native, {name}: {Spread.of(paired_ratios(ext, nat)).describe()}")
            else:
                print(f"  extension / native, {name}: not defined (a native run added nothing)")


if __name__ == "__main__":
    main()
