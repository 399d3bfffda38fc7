"""Benches print a speed ratio only when both sides did the same work (bench/same_work.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bench.same_work import NotSameWork, require_same_work


def test_same_outputs_pass_and_report_their_difference():
    a = np.zeros((2, 8, 8, 3))
    b = a.copy()
    b[0, 0, 0, 0] = 1.0
    assert require_same_work("x", a, b, largest=1.0) == (1.0, pytest.approx(1 / a.size))
    image = Image.new("RGB", (8, 4), (10, 20, 30))
    assert require_same_work("pictures", [image], [image], largest=0.0) == (0.0, 0.0)


def test_other_sizes_are_refused_even_without_a_tolerance():
    with pytest.raises(NotSameWork, match=r"shape \(512, 512, 3\) against the reference's \(256, 256, 3\)"):
        require_same_work("engine against diffusers", Image.new("RGB", (512, 512)), Image.new("RGB", (256, 256)))


def test_differences_past_the_tolerance_are_refused():
    ours, reference = torch.zeros(4, 4), torch.zeros(4, 4)
    ours[0, 0] = 3.0
    with pytest.raises(NotSameWork, match="largest difference is 3"):
        require_same_work("depth", ours, reference, largest=2.0)
    with pytest.raises(NotSameWork, match="mean difference is 0.1875"):
        require_same_work("depth", ours, reference, mean=0.1)
    with pytest.raises(NotSameWork, match="not finite"):
        require_same_work("depth", ours * float("nan"), reference)


def test_the_refusal_ends_a_bench_with_a_message_and_no_ratio():
    with pytest.raises(SystemExit) as stopped:
        require_same_work("app against engine", np.zeros(3), np.zeros(4))
    assert "no ratio printed" in str(stopped.value.code)


def test_bench_engine_renders_the_same_size_on_both_sides(tiny_checkpoint):
    # The engine's default size is about 512x512 whatever the image: a request without the bench's size compared
    # a 512x512 render with diffusers' 256x256 (issue 15.10). engine_vs_diffusers must check and pass.
    from bench import bench_engine
    from depth2img.pipeline.load import load_pipeline

    pipe = load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image, depth = bench_engine.bench_inputs(64)
    result = bench_engine.engine_vs_diffusers(pipe, image, depth, steps=2, repeats=1)
    assert len(result.ratios) == 1
    if bench_engine.reference_estimates_here(torch.device("cpu"), torch.float32):
        result = bench_engine.engine_vs_diffusers(pipe, image, None, steps=2, repeats=1)
        assert len(result.ratios) == 1
    else:
        # torch 2.1 (environment b): the reference itself cannot estimate on the CPU; the bench says so, no ratio.
        with pytest.raises(bench_engine.ReferenceCannotRun, match="cannot estimate depth on cpu"):
            bench_engine.engine_vs_diffusers(pipe, image, None, steps=2, repeats=1)


def test_the_probe_of_the_reference_tells_the_truth(tiny_checkpoint):
    # reference_estimates_here decides whether the estimated-depth bench runs: it must agree with diffusers itself.
    from diffusers import StableDiffusionDepth2ImgPipeline

    from bench import bench_engine
    from depth2img.pipeline.load import load_pipeline

    pipe = load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)
    components = dict(pipe.components, feature_extractor=bench_engine.dpt_image_processor())
    plain = StableDiffusionDepth2ImgPipeline(**components)
    plain.set_progress_bar_config(disable=True)
    image, _ = bench_engine.bench_inputs(64)

    def estimate():
        return plain(prompt="a room", image=image, strength=1.0, num_inference_steps=1).images

    if bench_engine.reference_estimates_here(torch.device("cpu"), torch.float32):
        assert estimate()[0].size == image.size
    else:
        with pytest.raises(RuntimeError, match="(?i)autocast"):
            estimate()
