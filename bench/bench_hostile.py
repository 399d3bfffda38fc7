"""Hostile callers: what a decompression bomb, and many maximal uploads at once, cost the CLI and a WebUI.

    .venv/bin/python bench/bench_hostile.py [--repeats 3]                       # part 1: the CLI
    .venv/bin/python bench/bench_hostile.py --url http://127.0.0.1:7860 [--auth u:p] [--concurrent 8]  # + part 2

Part 1, per bomb of tests/hostile_inputs.py (PNG, JPEG with a huge SOF, TIFF, BMP, npy with a huge shape, EXR
with a huge data window, a Radiance HDR of 10000x10000 = 100 MP, RLE): the CLI given the file (`depth --image`
for picture formats, `generate --depth` for depth formats) in a new process; its exit status (must be 2), its
wall time from exec to exit, median [min-max] over the repeats (goal < 1 s), and its peak RSS (VmHWM; goal
< 300 MB). The same bombs over HTTP: part 2's server answers each with a 422 (its time printed).

Part 2 (a running WebUI with this extension, --api): N concurrent uploads of a maximal picture (the size limit's
megapixels, a smooth gradient PNG: a small body that decodes to the full size) to POST /depth2img/v1/estimate,
started together. The figure is the peak memory they add to the WebUI process above its resident set before
them (VmHWM reset through /proc/PID/clear_refs, else RSS sampled every 20 ms), against one such request alone:
uploads are decoded one at a time under the WebUI's queue lock, so N of them may add their request bodies but
not N decodes. The budget printed is one request's peak plus N times what a waiting request holds outside the
lock: its body (base64 in the JSON, and the bytes decoded from it) and its answer's JSON bytes (made under the
lock); above it, the run says FAIL.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_webui import Spread, WebUIProcess, find_webui_pid  # noqa: E402

from tests.hostile_inputs import BOMBS  # noqa: E402

MAX_SECONDS = 1.0
MAX_PEAK_MB = 300
MB = 1 << 20

# The CLI in a new process; it prints its own peak RSS (VmHWM: since exec, this process alone) to stderr.
_MEASURE = (
    "import re, sys; from depth2img.standalone import cli; code = cli.main(sys.argv[1:]); "
    "peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
    "print('peak_kb', peak, file=sys.stderr); sys.exit(code)"
)


def cli_refusal(bomb: Path, is_picture: bool, out: Path) -> tuple[int, float, float, str]:
    """(exit status, seconds, peak MB, first stderr line) of the CLI given one bomb."""
    command = ["depth", "--image", str(bomb)] if is_picture else ["generate", "--prompt", "x", "--depth", str(bomb)]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *command, "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    seconds = time.perf_counter() - started
    peak = re.search(r"peak_kb (\d+)", done.stderr)
    first = done.stderr.strip().splitlines()[0] if done.stderr.strip() else ""
    return done.returncode, seconds, int(peak.group(1)) / 1024 if peak else float("nan"), first


def bench_cli(repeats: int) -> bool:
    print(f"Part 1: the CLI refusing each bomb (new process each; median [min-max] of {repeats}; "
          f"goal exit 2, < {MAX_SECONDS:.0f} s, < {MAX_PEAK_MB} MB peak RSS)")  # fmt: skip
    print(f"{'bomb':6} {'file':>9} {'exit':>4} {'seconds':>20} {'peak MB':>20}  message")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, (build, is_picture) in sorted(BOMBS.items()):
            data = build()
            bomb = Path(tmp) / f"bomb.{name}"
            bomb.write_bytes(data)
            runs = [cli_refusal(bomb, is_picture, Path(tmp) / "out.png") for _ in range(repeats)]
            codes = {code for code, *_ in runs}
            seconds, peaks = Spread.of([r[1] for r in runs]), Spread.of([r[2] for r in runs])
            passed = codes == {2} and seconds.median < MAX_SECONDS and peaks.high < MAX_PEAK_MB
            ok &= passed
            message = runs[0][3].replace(str(bomb), f"bomb.{name}")[:90]
            print(f"{name:6} {len(data) / MB:7.2f}MB {','.join(map(str, sorted(codes))):>4} "
                  f"{seconds.describe('.2f', ' s'):>20} {peaks.describe('.0f', ' MB'):>20}  "
                  f"{'ok' if passed else 'FAIL'}: {message}")  # fmt: skip
    return ok


def gradient_png(megapixels: float) -> tuple[bytes, int, int]:
    """A smooth RGB gradient of about `megapixels` (4:3): compresses to little, decodes to the full size."""
    import numpy as np
    from PIL import Image

    height = int((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = int(megapixels * 1e6 // height)
    row = np.linspace(0, 255, width, dtype=np.float32)
    column = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = row
    rgb[..., 1] = column
    rgb[..., 2] = 128
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue(), width, height


def bench_server(url: str, auth: tuple[str, str] | None, pid: int, concurrent: int) -> bool:
    import requests

    http = requests.Session()
    http.auth = auth
    limit_mp = float(http.get(f"{url}/sdapi/v1/options", timeout=60).json().get("depth2img_max_megapixels", 64))
    webui = WebUIProcess(pid)
    ok = True

    print(f"\nPart 2a: each bomb as an upload to {url}/depth2img/v1/estimate (goal: 422 naming the field)")
    for name, (build, is_picture) in sorted(BOMBS.items()):
        field = "image" if is_picture else "depth_image"
        body = {field: base64.b64encode(build()).decode()}
        answers: list = []

        def refuse(body=body, answers=answers):
            answers.append(http.post(f"{url}/depth2img/v1/estimate", json=body, timeout=600))

        measured = webui.measure(refuse)
        answer = answers[0]
        passed = answer.status_code == 422 and f"'{field}'" in answer.text
        ok &= passed
        print(f"{name:6} HTTP {answer.status_code} in {measured.wall_s:.2f} s, the WebUI's memory "
              f"+{measured.added_peak_bytes / MB:.0f} MB at its peak  {'ok' if passed else 'FAIL'}: "
              f"{answer.text[:100]}")  # fmt: skip

    png, width, height = gradient_png(limit_mp * 0.999)
    body = {"image": base64.b64encode(png).decode()}
    body_bytes = len(body["image"]) + len(png)  # the JSON's base64 text and the bytes decoded from it
    print(f"\nPart 2b: {concurrent} concurrent uploads of a {width}x{height} picture ({width * height / 1e6:.1f} MP, "
          f"the limit {limit_mp:g} MP; PNG {len(png) / MB:.1f} MB) to /depth2img/v1/estimate; peak memory added "
          f"to the WebUI process ({webui.peak_method})")  # fmt: skip

    answer_bytes = [0]

    def post(answers: list):
        response = http.post(f"{url}/depth2img/v1/estimate", json=body, timeout=1800)
        answer_bytes[0] = max(answer_bytes[0], len(response.content))
        answers.append(response.status_code)

    warm: list = []
    post(warm)  # the estimator loaded, the process' allocator at its working size
    alone_codes: list = []
    alone = webui.measure(lambda: post(alone_codes))

    def together(codes: list):
        threads = [threading.Thread(target=post, args=(codes,)) for _ in range(concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    codes: list = []
    many = webui.measure(lambda: together(codes))
    per_request = body_bytes + answer_bytes[0]  # what each waiting request holds outside the lock
    budget = alone.added_peak_bytes + concurrent * per_request
    passed = set(warm + alone_codes + codes) == {200} and many.added_peak_bytes <= budget
    ok &= passed
    print(f"one alone:        +{alone.added_peak_bytes / MB:6.0f} MB in {alone.wall_s:.1f} s")
    print(f"{concurrent} concurrent:     +{many.added_peak_bytes / MB:6.0f} MB in {many.wall_s:.1f} s "
          f"(statuses {sorted(set(codes))})")  # fmt: skip
    print(f"budget (one alone + {concurrent} x (request body + answer) of {per_request / MB:.1f} MB): "
          f"{budget / MB:.0f} MB  "
          f"{'ok' if passed else 'FAIL'}; {concurrent} decodes side by side would add about "
          f"{concurrent * alone.added_peak_bytes / MB:.0f} MB")  # fmt: skip
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--url", help="a running WebUI with this extension (--api): also part 2")
    parser.add_argument("--auth", help="user:password, for a WebUI started with --api-auth")
    parser.add_argument("--pid", type=int, help="the WebUI's process (default: the launch.py serving --url)")
    parser.add_argument("--concurrent", type=int, default=8)
    args = parser.parse_args()
    ok = bench_cli(args.repeats)
    if args.url:
        url = args.url.rstrip("/")
        auth = tuple(args.auth.split(":", 1)) if args.auth else None
        ok &= bench_server(url, auth, args.pid or find_webui_pid(url), args.concurrent)
    print(f"\nload average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{'all within the goals' if ok else 'SOME ABOVE THE GOALS'}")  # fmt: skip
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
