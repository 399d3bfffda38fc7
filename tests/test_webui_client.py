"""`sequence --workers`: frames rendered on WebUIs through their API, here against small fake WebUIs (stdlib
http.server in a thread) that record every request and answer with the init image's colours inverted."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from PIL import Image

from depth2img.pipeline.request import GenerationRequest
from depth2img.sequences.distribute import share_frames
from depth2img.sequences.passes import run_sequence
from depth2img.sequences.webui_workers import WorkerSettings, depth_png_and_range, img2img_payload, webui_workers
from depth2img.standalone.cli import main

SIZE = 32
DEPTH_TITLE = "tiny-depth.safetensors [0123abcd]"


class FakeWebUI:
    """A WebUI's API as the client uses it. fail_with: an HTTP status for every img2img request; refuse: frame
    sizes (by init image width) to answer 422; delay: seconds per img2img request."""

    def __init__(self, fail_with=None, loaded=DEPTH_TITLE, delay=0.0, refuse_width=None, like_forge=False,
                 keeps_connections_open=False):
        """like_forge: keep-alive connections (HTTP/1.1), and after an error answer the connection is reset at the
        next request on it, as Forge's server does (its API middleware lets the exception escape).
        keeps_connections_open: a keep-alive connection stays open whatever the client's Connection header says,
        as a proxy may do (it also stands for a server that closes too late for the client to see)."""
        self.requests: list[dict] = []
        self.connections = 0
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if like_forge else "HTTP/1.0"
            answered_an_error = False

            def log_message(self, *args):
                pass

            def setup(self):
                with fake.lock:
                    fake.connections += 1
                super().setup()

            def handle_one_request(self):
                if self.answered_an_error:  # Forge: the next request on an error answer's connection is reset
                    self.rfile.readline()  # (an idle connection stays open: the client cannot tell it is dead)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                super().handle_one_request()

            def reply(self, status, body):
                self.answered_an_error = like_forge and status >= 400
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if keeps_connections_open:
                    self.close_connection = False

            def do_GET(self):
                if self.path == "/depth2img/v1/checkpoints":
                    self.reply(200, [{"title": DEPTH_TITLE, "path": "/m/tiny-depth.safetensors"}])
                elif self.path == "/sdapi/v1/options":
                    self.reply(200, {"sd_model_checkpoint": loaded})
                else:
                    self.reply(404, {"detail": "Not Found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    fake.in_flight += 1
                    fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
                try:
                    time.sleep(delay)
                    if fail_with:
                        return self.reply(fail_with, {"error": "RuntimeError", "detail": "CUDA out of memory"})
                    image = Image.open(io.BytesIO(base64.b64decode(body["init_images"][0])))
                    if refuse_width == image.width:
                        return self.reply(422, {"detail": "depth2img arg 'mask_low': the band is empty"})
                    inverted = Image.fromarray(255 - np.asarray(image.convert("RGB")))
                    buffer = io.BytesIO()
                    inverted.save(buffer, format="PNG")
                    self.reply(200, {"images": [base64.b64encode(buffer.getvalue()).decode()], "info": "{}"})
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fakes():
    started = []

    def start(**kwargs):
        started.append(FakeWebUI(**kwargs))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def unreachable_url() -> str:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def make_clip(folder, count=4, widths=None):
    frames, depths = folder / "frames", folder / "depths"
    frames.mkdir()
    depths.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        width = (widths or {}).get(i, SIZE)
        Image.fromarray(rng.integers(0, 255, (SIZE, width, 3), dtype=np.uint8)).save(frames / f"f{i + 1}.png")
        depth = np.full((SIZE, width), 0.3, np.float32)
        depth[8:20, 4 + 4 * i : 14 + 4 * i] = 0.5 + 0.1 * i  # a square, nearer every frame
        np.save(depths / f"f{i + 1}.npy", depth)
    return frames, depths


def template(**overrides) -> GenerationRequest:
    values = dict(prompt="a street", negative_prompt="blur", steps=7, strength=0.6, guidance=5.5, seed=42,
                  width=SIZE, height=SIZE)
    values.update(overrides)
    return GenerationRequest(**values)


def no_local_model():
    raise AssertionError("the frames render on the workers: no local model may be loaded")


def run_on(urls, frames, depths, out, messages, settings=None):
    workers = webui_workers(urls, settings or WorkerSettings(), max_pixels=10**7)
    return run_sequence(frames, out, template(), no_local_model, depth_dir=depths, say=messages.append,
                        render_pass=lambda t, jobs: share_frames(workers, t, jobs, messages.append))


def inverted(path) -> np.ndarray:
    return 255 - np.asarray(Image.open(path).convert("RGB"))


# ---- the request ----------------------------------------------------------------------------------------------


def test_depth_png_and_range_keep_the_frame_on_the_shared_scale():
    depth = np.linspace(0.2, 0.7, 64 * 64, dtype=np.float32).reshape(64, 64)
    shared = (0.1, 0.9)
    encoded, png_range = depth_png_and_range(depth, shared)
    png = cv2.imdecode(np.frombuffer(base64.b64decode(encoded), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == depth.shape
    # What the WebUI conditions on (PNG / 65535 on the sent range) is the local map on the shared range,
    # up to the PNG's 1/65535 steps of this frame's own span (0.5 here).
    on_webui = (png / 65535.0 - png_range[0]) / (png_range[1] - png_range[0])
    local = (depth - shared[0]) / (shared[1] - shared[0])
    assert np.abs(on_webui - local).max() < 1e-5
    # A flat frame is all zeros in the PNG: the range is shifted so that it keeps its place on the scale.
    flat = np.full((8, 8), 0.5, np.float32)
    encoded, png_range = depth_png_and_range(flat, shared)
    zero_on_webui = (0.0 - png_range[0]) / (png_range[1] - png_range[0])
    assert zero_on_webui == pytest.approx((0.5 - 0.1) / 0.8)
    assert depth_png_and_range(depth, None)[1] is None  # per-frame scale: the WebUI's own min-max


def test_the_payload_carries_the_jobs_settings():
    from depth2img.process.masks import MaskSettings

    image = Image.new("RGB", (SIZE, SIZE), (10, 20, 30))
    depth = np.random.default_rng(1).random((SIZE, SIZE)).astype(np.float32)
    job = template(depth_mask=MaskSettings(low=40, high=90, feather=2))
    payload = img2img_payload(job, image, depth, (0.1, 0.8), WorkerSettings(sampler="DDIM"), DEPTH_TITLE)
    expected = {"prompt": "a street", "negative_prompt": "blur", "seed": 42, "sampler_name": "DDIM", "steps": 7,
                "cfg_scale": 5.5, "denoising_strength": 0.6, "width": SIZE, "height": SIZE, "resize_mode": 0,
                "batch_size": 1, "n_iter": 1, "override_settings": {"sd_model_checkpoint": DEPTH_TITLE},
                "override_settings_restore_afterwards": False}
    assert {key: payload[key] for key in expected} == expected
    [args] = payload["alwayson_scripts"]["depth2img"]["args"]
    assert args["enabled"] is True and args["source"] == "upload" and args["depth_kind"] == "inverse"
    assert len(args["depth_range"]) == 2 and args["depth_range"] != [0.1, 0.8]  # in the PNG's units
    assert (args["mask_from_depth"], args["mask_low"], args["mask_high"], args["mask_feather"]) == (True, 40, 90, 2)
    from depth2img.schema.args import Depth2ImgArgs

    Depth2ImgArgs.from_request([args])  # the extension's schema accepts every key
    sent = Image.open(io.BytesIO(base64.b64decode(payload["init_images"][0])))
    assert np.array_equal(np.asarray(sent), np.asarray(image))  # lossless
    assert "override_settings" not in img2img_payload(template(), image, depth, None, WorkerSettings(), "")


# ---- sharing frames -------------------------------------------------------------------------------------------


def test_frames_are_shared_and_an_unreachable_worker_is_named(fakes, tmp_path):
    first, second = fakes(delay=0.2), fakes(delay=0.2)
    frames, depths = make_clip(tmp_path, count=6)
    dead = unreachable_url()
    messages: list[str] = []
    report = run_on([dead, first.url, second.url], frames, depths, tmp_path / "out", messages)
    assert sorted(report.rendered) == [f"f{i}.png" for i in range(1, 7)] and not report.failed
    for i in range(1, 7):  # each output is what its worker returned for that frame
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / f"f{i}.png")), inverted(frames / f"f{i}.png"))
    failures = [m for m in messages if dead in m]
    assert len(failures) == 1 and "unreachable" in failures[0] and "go to the 2 other worker(s)" in failures[0]
    assert len(first.requests) + len(second.requests) == 6 and first.requests and second.requests
    assert first.most_in_flight == 1 and second.most_in_flight == 1  # one request at a time per worker
    # Every frame carries the shared range and the same seed.
    ranges = json.loads((tmp_path / "out" / "sequence.json").read_text())["frames"]
    assert len({tuple(entry["range"]) for entry in ranges}) == 1
    for body in first.requests + second.requests:
        assert body["seed"] == 42 and body["alwayson_scripts"]["depth2img"]["args"][0]["depth_range"] is not None


def test_a_failing_workers_frame_goes_to_the_others(fakes, tmp_path):
    good, broken = fakes(), fakes(fail_with=500)
    frames, depths = make_clip(tmp_path, count=3)
    messages: list[str] = []
    report = run_on([broken.url, good.url], frames, depths, tmp_path / "out", messages)
    assert sorted(report.rendered) == ["f1.png", "f2.png", "f3.png"]
    assert len(broken.requests) == 1 and len(good.requests) == 3  # its one frame was sent again
    assert any(broken.url in m and "HTTP 500" in m and "CUDA out of memory" in m for m in messages)


def test_a_refused_frame_fails_alone(fakes, tmp_path):
    fake = fakes(refuse_width=SIZE + 8)
    frames, depths = make_clip(tmp_path, count=3, widths={1: SIZE + 8})
    messages: list[str] = []
    report = run_on([fake.url], frames, depths, tmp_path / "out", messages)
    assert sorted(report.rendered) == ["f1.png", "f3.png"]
    assert "HTTP 422" in report.failed["f2.png"] and "mask_low" in report.failed["f2.png"]


@pytest.mark.parametrize("keeps_connections_open", [False, True], ids=["closes-when-asked", "keeps-open"])
def test_a_refused_frame_fails_alone_on_a_server_that_resets_after_an_error(fakes, tmp_path, keeps_connections_open):
    # Forge resets a connection after an error answer: the worker's next frame must not meet it, whether or not
    # the server closes the connection when asked (asking alone raced on a loaded machine: the client could reuse
    # the connection before the server had closed it).
    fake = fakes(refuse_width=SIZE + 8, like_forge=True, keeps_connections_open=keeps_connections_open)
    frames, depths = make_clip(tmp_path, count=3, widths={1: SIZE + 8})
    messages: list[str] = []
    report = run_on([fake.url], frames, depths, tmp_path / "out", messages)
    assert sorted(report.rendered) == ["f1.png", "f3.png"], (report.failed, messages)
    assert "HTTP 422" in report.failed["f2.png"]
    assert fake.connections == len(fake.requests) + 2  # one connection per request: the two checks, three frames


def test_a_webui_without_a_depth_model_or_the_extension_takes_no_frames(fakes, tmp_path):
    plain, good = fakes(loaded="v1-5-pruned.safetensors [ffff]"), fakes()
    frames, depths = make_clip(tmp_path, count=2)
    messages: list[str] = []
    report = run_on([plain.url, good.url], frames, depths, tmp_path / "out", messages)
    assert sorted(report.rendered) == ["f1.png", "f2.png"] and not plain.requests
    assert any(plain.url in m and "not a depth checkpoint" in m and "--worker-checkpoint" in m for m in messages)
    # A named checkpoint the WebUI lacks; an address that is not this extension's WebUI.
    messages.clear()
    report = run_on([good.url], frames, depths, tmp_path / "out2", messages, WorkerSettings(checkpoint="other"))
    assert not report.rendered and "has no depth checkpoint 'other'" in report.failed["f1.png"]
    report = run_on([good.url + "/elsewhere"], frames, depths, tmp_path / "out3", messages)
    assert "not found" in report.failed["f1.png"] and "--api" in report.failed["f1.png"]


def test_cli_when_every_worker_fails_reports_the_frames_and_exits_1(fakes, tmp_path, capsys):
    broken = fakes(fail_with=503)
    frames, depths = make_clip(tmp_path, count=2)
    dead = unreachable_url()
    code = main([str(a) for a in [
        "sequence", "--frames", frames, "--out", tmp_path / "out", "--depth-dir", depths, "--prompt", "x",
        "--steps", "2", "--width", SIZE, "--height", SIZE, "--workers", f"{dead},{broken.url}",
    ]])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "rendered 0, skipped 0 (done before), failed 2" in captured.out
    assert f"worker {dead} failed: unreachable: check that a WebUI runs at that URL, started with --api" in captured.err
    assert f"worker {broken.url} failed: HTTP 503" in captured.err
    assert "failed: f1.png: not rendered: every worker failed" in captured.err
    assert not list((tmp_path / "out").glob("*.png"))


def test_cli_workers_render_with_the_named_checkpoint_and_sampler(fakes, tmp_path, capsys):
    fake = fakes(loaded="v1-5-pruned.safetensors [ffff]")
    frames, depths = make_clip(tmp_path, count=2)
    code = main([str(a) for a in [
        "sequence", "--frames", frames, "--out", tmp_path / "out", "--depth-dir", depths, "--prompt", "x",
        "--steps", "2", "--width", SIZE, "--height", SIZE, "--workers", f"{fake.url},{fake.url}",
        "--worker-checkpoint", "tiny-depth", "--sampler", "euler",
    ]])
    assert code == 0, capsys.readouterr().err
    assert len(fake.requests) == 2
    for body in fake.requests:
        assert body["override_settings"] == {"sd_model_checkpoint": DEPTH_TITLE} and body["sampler_name"] == "Euler"
    settings = json.loads((tmp_path / "out" / "sequence.json").read_text())["settings"]
    assert settings["engine"] == "webui" and settings["checkpoint"] == "tiny-depth"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "gpu1:7860"], "--workers takes WebUI addresses"),
        (["--workers", "http://a:1", "--ray", "auto"], "choose one"),
        (["--worker-checkpoint", "x"], "give --workers"),
        (["--ray-actors", "2"], "--ray-actors needs --ray"),
    ],
)
def test_cli_refuses_bad_worker_flags(tmp_path, capsys, extra, message):
    frames, depths = make_clip(tmp_path, count=1)
    code = main([str(a) for a in ["sequence", "--frames", frames, "--out", tmp_path / "out", "--prompt", "x",
                                  *extra]])
    assert code == 2 and message in capsys.readouterr().err
