"""`sequence --ray`: the render pass on a local Ray instance (2 CPUs, a small object store) equals a local run.

Ray is an optional extra for users; requirements.txt installs it for the tests, and tools/test.sh sets
DEPTH2IMG_REQUIRE_RAY=1 in environment (a), where a missing Ray fails the run instead of skipping these tests.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from depth2img.pipeline.load import load_pipeline
from depth2img.pipeline.request import GenerationRequest
from depth2img.sequences.distribute import share_frames
from depth2img.sequences.passes import run_sequence
from depth2img.sequences.ray_render import (
    RAY_MISSING,
    RayUnavailable,
    actor_resources,
    import_ray,
    ray_workers,
    worker_runtime_env,
)
from depth2img.standalone.cli import main

REQUIRED = os.environ.get("DEPTH2IMG_REQUIRE_RAY") == "1"
SIZE = 64
# The same engine code on the same machine, but in other processes (Ray gives an actor OMP_NUM_THREADS=1, this
# process uses every core): float sums may be reduced in another order. Measured: at most 1 level of 255, on
# 0.02-0.07 % of the values; the bound leaves room for other CPUs.
MAX_LEVELS_APART = 2


def ray_or_skip():
    if REQUIRED:
        return import_ray()
    return pytest.importorskip("ray", reason="Ray is an optional extra (pip install ray); environment (a) has it")


@pytest.fixture(scope="module")
def ray_instance():
    ray = ray_or_skip()
    ray.init(num_cpus=2, object_store_memory=80 * 1024**2, include_dashboard=False, log_to_driver=False,
             runtime_env=worker_runtime_env())
    yield ray
    ray.shutdown()


def make_clip(folder, count=3):
    frames, depths = folder / "frames", folder / "depths"
    frames.mkdir()
    depths.mkdir()
    rng = np.random.default_rng(0)
    background = rng.integers(40, 120, (SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(count):
        pixels = background.copy()
        pixels[20:40, 8 + 8 * i : 24 + 8 * i] = 230
        Image.fromarray(pixels).save(frames / f"f{i + 1}.png")
        depth = np.full((SIZE, SIZE), 0.4, np.float32)
        depth[:8] = 0.1
        depth[20:40, 8 + 8 * i : 24 + 8 * i] = 0.55 + 0.1 * i
        np.save(depths / f"f{i + 1}.npy", depth)
    return frames, depths


def template() -> GenerationRequest:
    return GenerationRequest(prompt="a street", steps=2, strength=1.0, seed=5, width=SIZE, height=SIZE)


def test_ray_outputs_equal_a_local_run(ray_instance, tiny_checkpoint, tmp_path, capsys):
    frames, depths = make_clip(tmp_path)
    pipe = load_pipeline(tiny_checkpoint, announce=lambda message: None)  # as an actor loads it
    local = run_sequence(frames, tmp_path / "local", template(), lambda: pipe, depth_dir=depths, say=lambda m: None)
    # The CLI joins the instance this process started (--ray auto) and renders every frame there.
    code = main([str(a) for a in [
        "sequence", "--frames", frames, "--out", tmp_path / "ray", "--depth-dir", depths, "--prompt", "a street",
        "--steps", 2, "--strength", 1.0, "--seed", 5, "--width", SIZE, "--height", SIZE,
        "--checkpoint", tiny_checkpoint, "--ray", "auto", "--ray-actors", 2,
    ]])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "rendered 3, skipped 0 (done before), failed 0" in captured.out
    assert "ray: 2 actor(s), each 1 CPU and one pipeline" in captured.err
    assert sorted(local.rendered) == ["f1.png", "f2.png", "f3.png"]
    for name in local.rendered:
        here = np.asarray(Image.open(tmp_path / "local" / name), dtype=np.int16)
        there = np.asarray(Image.open(tmp_path / "ray" / name), dtype=np.int16)
        assert np.abs(here - there).max() <= MAX_LEVELS_APART, name
    # Not the same picture three times: the frames differ, so the comparison above means something.
    first, last = (np.asarray(Image.open(tmp_path / "ray" / n), dtype=np.int16) for n in ("f1.png", "f3.png"))
    assert np.abs(first - last).max() > 10


def test_actors_that_cannot_start_fail_their_frames_with_the_reason(ray_instance, tmp_path):
    frames, depths = make_clip(tmp_path, count=2)
    messages: list[str] = []
    workers = ray_workers(str(tmp_path / "missing.safetensors"), "pndm", 1, max_pixels=10**7, say=messages.append)
    report = run_sequence(frames, tmp_path / "out", template(), lambda: None, depth_dir=depths, say=messages.append,
                          render_pass=lambda t, jobs: share_frames(workers, t, jobs, messages.append))
    assert not report.rendered and sorted(report.failed) == ["f1.png", "f2.png"]
    assert all("every worker failed" in why and "missing.safetensors not found on Ray node" in why
               for why in report.failed.values())
    assert any(m.startswith("worker ray actor 1 failed:") for m in messages)


def test_without_ray_the_cli_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is not installed
    with pytest.raises(RayUnavailable, match="pip install ray"):
        import_ray()
    frames, _ = make_clip(tmp_path, count=1)
    code = main([str(a) for a in ["sequence", "--frames", frames, "--out", tmp_path / "out", "--prompt", "x",
                                  "--ray", "local"]])
    assert code == 2 and RAY_MISSING in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_one_actor_per_gpu_and_more_actors_share_them():
    """The choice of actors and their resources (no GPU cluster here: the arithmetic alone)."""
    assert actor_resources(4, None) == (4, {"num_gpus": 1.0})
    assert actor_resources(2, 4) == (4, {"num_gpus": 0.5})  # two pipelines per GPU
    assert actor_resources(4, 2) == (2, {"num_gpus": 1.0})
    assert actor_resources(0, None) == (1, {"num_cpus": 1})
    assert actor_resources(0, 3) == (3, {"num_cpus": 1})
