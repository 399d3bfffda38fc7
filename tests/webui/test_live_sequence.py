"""`sequence --workers` against a real WebUI: each frame equals what that WebUI returns for the same frame, depth,
range and seed sent alone (built here by hand, not by depth2img.sequences.webui_workers), and the shared range is
honoured.

Two workers on one WebUI (the same URL twice: it queues them), plus an address nothing listens on, which the
run names while the others render its frames.
"""

from __future__ import annotations

import base64
import json
import socket

import numpy as np
from PIL import Image

from .conftest import WEBUI_URL, decode, png_b64, rgb_b64

SIZE = 64
FRAMES = 3
SETTINGS = {"prompt": "a street", "seed": 77, "steps": 4, "cfg_scale": 6.0, "denoising_strength": 0.8}


def make_clip(folder):
    frames, depths = folder / "frames", folder / "depths"
    frames.mkdir()
    depths.mkdir()
    rng = np.random.default_rng(3)
    background = rng.integers(40, 160, (SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(FRAMES):
        pixels = background.copy()
        pixels[20:40, 8 + 10 * i : 28 + 10 * i] = 230
        Image.fromarray(pixels).save(frames / f"f{i + 1}.png")
        depth = np.tile(np.linspace(0.1, 0.4, SIZE, dtype=np.float32), (SIZE, 1))  # a floor, far to near
        depth[20:40, 8 + 10 * i : 28 + 10 * i] = 0.5 + 0.2 * i  # a box coming nearer: each frame's max moves
        np.save(depths / f"f{i + 1}.npy", depth)
    return frames, depths


def unreachable_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def alone(webui, frame: Image.Image, depth: np.ndarray, depth_range) -> np.ndarray:
    """The frame sent alone: its depth as a min-max 16-bit PNG, the range in that PNG's 0..1 units."""
    low, high = float(depth.min()), float(depth.max())
    png = np.round((depth - low) / (high - low) * 65535).astype(np.uint16)
    args = {"enabled": True, "source": "upload", "depth_image": png_b64(png)}
    if depth_range is not None:
        args["depth_range"] = [(depth_range[0] - low) / (high - low), (depth_range[1] - low) / (high - low)]
    body = {**SETTINGS, "init_images": [rgb_b64(frame)], "negative_prompt": "", "sampler_name": "Euler",
            "width": SIZE, "height": SIZE, "batch_size": 1, "resize_mode": 0,
            "alwayson_scripts": {"depth2img": {"args": [args]}}}
    response = webui.post("/sdapi/v1/img2img", body)
    assert response.status_code == 200, response.text[:2000]
    return decode(response.json()["images"][0])[..., ::-1]  # cv2's BGR -> RGB


def test_sequence_on_workers_equals_each_frame_sent_alone(webui, tmp_path, capsys):
    from depth2img.standalone.cli import main

    frames, depths = make_clip(tmp_path)
    # Measured on v1.8.0: the first img2img job after the WebUI starts differs from the same request sent again
    # (up to 8 levels of 255), later ones are equal. A job first, so that no frame is a fresh WebUI's first.
    alone(webui, Image.open(frames / "f1.png").convert("RGB"), np.load(depths / "f1.npy"), None)
    dead = unreachable_url()
    out = tmp_path / "out"
    code = main([str(a) for a in [
        "sequence", "--frames", frames, "--out", out, "--depth-dir", depths, "--prompt", SETTINGS["prompt"],
        "--seed", SETTINGS["seed"], "--steps", SETTINGS["steps"], "--guidance", SETTINGS["cfg_scale"],
        "--strength", SETTINGS["denoising_strength"], "--width", SIZE, "--height", SIZE, "--sampler", "euler",
        "--workers", f"{dead},{WEBUI_URL},{WEBUI_URL}", "--worker-checkpoint", webui.depth_model,
    ]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"rendered {FRAMES}, skipped 0 (done before), failed 0" in captured.out
    assert f"worker {dead} failed: unreachable" in captured.err

    entries = {e["name"]: e for e in json.loads((out / "sequence.json").read_text())["frames"]}
    shared = tuple(entries["f1.png"]["range"])
    assert all(tuple(e["range"]) == shared for e in entries.values())  # one scale for every frame
    for i in range(1, FRAMES + 1):
        name = f"f{i}.png"
        frame = Image.open(frames / name).convert("RGB")
        depth = np.load(out / entries[name]["depth"])
        output = np.asarray(Image.open(out / name).convert("RGB"), dtype=np.int16)
        single = alone(webui, frame, depth, shared).astype(np.int16)
        # The same WebUI, request and seed: equal up to a level of rounding.
        assert np.abs(output - single).max() <= 2, name
        if i == 1:
            # The range is honoured: f1's own min-max (0.1..0.5) is not the shared range (0.1..0.9), and on it
            # the same frame is another picture.
            own_scale = alone(webui, frame, depth, None).astype(np.int16)
            assert np.abs(output - own_scale).mean() > 1.0


def test_the_worker_settings_are_what_the_webui_received(webui, tmp_path):
    """The run's images carry the job's settings in their infotext (the WebUI writes what it used)."""
    from depth2img.sequences.webui_workers import WorkerSettings, webui_workers

    frames, depths = make_clip(tmp_path)
    [worker] = webui_workers([WEBUI_URL], WorkerSettings(sampler="Euler", checkpoint=webui.depth_model), 10**7)
    worker.check()
    assert worker.checkpoint_title.startswith(webui.depth_model)
    [on_loaded] = webui_workers([WEBUI_URL], WorkerSettings(), 10**7)
    on_loaded.check()  # the loaded model (the fixture's depth model) is found among the depth checkpoints
    assert on_loaded.checkpoint_title == ""
    # One request through the client, read back through the WebUI's PNG info route.
    from depth2img.pipeline.request import GenerationRequest
    from depth2img.sequences.webui_workers import img2img_payload

    frame = Image.open(frames / "f1.png").convert("RGB")
    depth = np.load(depths / "f1.npy")
    job = GenerationRequest(prompt="a street", seed=77, steps=4, guidance=6.0, strength=0.8, width=SIZE, height=SIZE)
    payload = img2img_payload(job, frame, depth, (0.1, 0.9), worker.settings, worker.checkpoint_title)
    response = webui.post("/sdapi/v1/img2img", payload)
    assert response.status_code == 200, response.text[:2000]
    info = json.loads(response.json()["info"])["infotexts"][0]
    for expected in ("Steps: 4", "Sampler: Euler", "CFG scale: 6.0", "Seed: 77", "Size: 64x64",
                     "Denoising strength: 0.8", "Depth2Img depth_range"):
        assert expected in info, info
    assert base64.b64decode(response.json()["images"][0])[:4] == b"\x89PNG"


def test_a_refused_frame_leaves_its_worker_serving(webui, tmp_path):
    """A frame the WebUI refuses (HTTP 4xx) fails alone and the same worker renders the next one. Forge closes the
    connection after an error answer: a worker reusing it would take the reset for a dead WebUI."""
    import pytest

    from depth2img.pipeline.request import GenerationRequest
    from depth2img.sequences.passes import FrameJob
    from depth2img.sequences.webui_workers import WorkerSettings, webui_workers

    frames, depths = make_clip(tmp_path)
    [worker] = webui_workers([WEBUI_URL], WorkerSettings(sampler="Euler", checkpoint=webui.depth_model), 10**7)
    template = GenerationRequest(prompt="a street", seed=77, steps=2, guidance=6.0, strength=0.8, width=SIZE,
                                 height=SIZE)  # fmt: skip

    def frame(depth_range):
        return FrameJob("f1.png", frames / "f1.png", depths / "f1.npy", depth_range, tmp_path / "f1-out.png")

    with pytest.raises(ValueError, match="refused the frame"):
        worker.render(template, frame((0.9, 0.1)))  # a crossed range: the extension answers 422
    assert worker.render(template, frame((0.1, 0.9))).size == (SIZE, SIZE)
