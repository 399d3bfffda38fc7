"""The pure parts of bench/bench_webui.py: the run schedule, the statistics, the memory arithmetic, and the WebUI
options put back after a failing run (against a small stand-in for the WebUI's options API over real HTTP)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bench.bench_webui import (
    Run,
    Spread,
    added_peak,
    interrupt_on_abort,
    options_set,
    paired_ratios,
    schedule,
    status_field_bytes,
)


def test_schedule_warms_up_every_measured_batch_size_in_both_modes_before_timing_it():
    runs = schedule([1, 4], repeats=3)
    warm_ups = [run for run in runs if run.repeat is None]
    assert {(run.batch, run.mode) for run in warm_ups} == {(1, "native"), (1, "extension"), (4, "native"),
                                                             (4, "extension")}
    first_measured = next(i for i, run in enumerate(runs) if run.repeat is not None)
    assert all(run.repeat is None for run in runs[:first_measured]) and len(runs[:first_measured]) == 4


def test_schedule_pairs_each_repeat_and_alternates_which_mode_runs_first():
    runs = schedule([4], repeats=4)
    measured = [run for run in runs if run.repeat is not None]
    assert measured == [
        Run(0, 4, "native"), Run(0, 4, "extension"),
        Run(1, 4, "extension"), Run(1, 4, "native"),
        Run(2, 4, "native"), Run(2, 4, "extension"),
        Run(3, 4, "extension"), Run(3, 4, "native"),
    ]


def test_spread_is_median_min_max():
    spread = Spread.of([3.0, 1.0, 10.0, 2.0])
    assert (spread.median, spread.low, spread.high) == (2.5, 1.0, 10.0)
    assert spread.describe(".1f", " s") == "2.5 [1.0-10.0] s"


def test_paired_ratios_divide_within_each_repeat_and_refuse_unpaired_runs():
    assert paired_ratios([2.0, 9.0], [4.0, 3.0]) == [0.5, 3.0]
    with pytest.raises(ValueError):
        paired_ratios([1.0, 2.0], [1.0])


def test_peak_memory_is_counted_above_the_pre_request_baseline():
    gib = 2**30
    assert added_peak(baseline=8 * gib, peak=8 * gib + 300 * 2**20) == 300 * 2**20
    assert added_peak(baseline=8 * gib, peak=8 * gib) == 0
    assert added_peak(baseline=8 * gib, peak=7 * gib) == 0  # memory returned during the request: nothing added


def test_status_fields_are_read_in_bytes():
    status = "Name:\tpython\nVmPeak:\t 9000000 kB\nVmHWM:\t 8388612 kB\nVmRSS:\t 8388608 kB\n"
    assert status_field_bytes(status, "VmHWM") == 8388612 * 1024
    assert status_field_bytes(status, "VmRSS") == 8388608 * 1024
    with pytest.raises(ValueError, match="VmSwap"):
        status_field_bytes(status, "VmSwap")


class OptionsStandIn(BaseHTTPRequestHandler):
    """GET/POST /sdapi/v1/options as the WebUI answers them: a JSON dict, POST merges the given keys."""

    options: dict = {}
    posts: list = []
    interrupts: int = 0

    def do_GET(self):
        self._answer(self.options)

    def do_POST(self):
        if self.path == "/sdapi/v1/interrupt":
            type(self).interrupts += 1
            return self._answer({})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posts.append(body)
        self.options.update(body)
        self._answer(None)

    def _answer(self, payload):
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def options_server():
    OptionsStandIn.options = {"sd_model_checkpoint": "mine.safetensors", "depth2img_takeover": True, "other": 1}
    OptionsStandIn.posts = []
    OptionsStandIn.interrupts = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), OptionsStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_options_are_set_for_the_run_and_put_back_when_it_fails(options_server):
    changes = {"sd_model_checkpoint": "full-depth.safetensors", "depth2img_takeover": False}
    with pytest.raises(RuntimeError, match="run failed"):
        with options_set(requests.Session(), options_server, changes):
            assert OptionsStandIn.options == {**changes, "other": 1}
            raise RuntimeError("run failed")
    assert OptionsStandIn.options == {"sd_model_checkpoint": "mine.safetensors", "depth2img_takeover": True,
                                      "other": 1}
    assert OptionsStandIn.posts[-1] == {"sd_model_checkpoint": "mine.safetensors", "depth2img_takeover": True}


def test_an_aborted_run_stops_the_webui_job_before_the_options_are_put_back(options_server):
    with interrupt_on_abort(requests.Session(), options_server):
        pass
    assert OptionsStandIn.interrupts == 0
    with pytest.raises(KeyboardInterrupt):
        with options_set(requests.Session(), options_server, {"depth2img_takeover": False}):
            with interrupt_on_abort(requests.Session(), options_server):
                assert OptionsStandIn.interrupts == 0
                raise KeyboardInterrupt
    assert OptionsStandIn.interrupts == 1
    assert OptionsStandIn.options["depth2img_takeover"] is True


def test_options_missing_in_the_webui_name_the_option(options_server):
    with pytest.raises(SystemExit, match="no option depth2img_cache_size"):
        with options_set(requests.Session(), options_server, {"depth2img_cache_size": 1}):
            pass
    assert OptionsStandIn.posts == []


# A process standing in for the WebUI's: an earlier, larger peak (640 MiB, freed), 128 MiB held before the
# request, and a request that touches 192 MiB and frees it. A child of its own, not the test run's process:
# there, what earlier tests left in the heap (freed memory, threads) decides what RSS an allocation adds.
_STAND_IN = """
import sys, time
import numpy as np
earlier = np.ones(640 * 2**20, dtype=np.uint8); del earlier
held = np.ones(128 * 2**20, dtype=np.uint8)
print("ready", flush=True)
for line in sys.stdin:
    added = np.ones(192 * 2**20, dtype=np.uint8)
    time.sleep(0.2)  # long enough for the 20 ms sampler
    del added
    print("done", flush=True)
"""


@pytest.mark.parametrize("use_hwm", [True, False], ids=["VmHWM reset", "RSS sampled"])
def test_request_peak_memory_is_what_it_added_over_the_process_before_it(use_hwm):
    pytest.importorskip("psutil", reason="psutil is the bench's requirement (environment a), not the WebUI's pins")
    import subprocess
    import sys

    from bench.bench_webui import WebUIProcess

    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = subprocess.Popen([sys.executable, "-c", _STAND_IN], **pipes)
    try:
        assert child.stdout.readline().strip() == "ready"
        process = WebUIProcess(child.pid)
        if use_hwm and not process.uses_hwm:
            pytest.fail("writing 5 to /proc/PID/clear_refs was refused: the VmHWM method cannot be checked here")
        process.uses_hwm = use_hwm

        def request():
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "done"

        added_mib = process.measure(request).added_peak_bytes / 2**20
    finally:
        child.kill()
        child.wait()
    assert 180 <= added_mib <= 192 + 64, added_mib  # not the earlier peak, the memory held before, the whole RSS
