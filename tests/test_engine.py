"""The diffusers engine on the tiny depth checkpoint: parity with diffusers' own pipeline, every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from depth2img import depthmap
from depth2img.engine import DepthPipeline, GenerationRequest, generate, load_pipeline

SIZE = 64
STEPS = 3


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32)


def scene(seed=0, size=SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size, dtype=np.float32)[None, :, None].repeat(size, 0).repeat(3, 2)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def ramp_depth(size=SIZE, vertical=False) -> np.ndarray:
    ramp = np.tile(np.linspace(0.0, 1.0, size, dtype=np.float32), (size, 1))
    return ramp.T.copy() if vertical else ramp


def request(**overrides) -> GenerationRequest:
    values = dict(prompt="a room", image=scene(), steps=STEPS, seed=7, strength=0.9, output_type="np")
    values.update(overrides)
    return GenerationRequest(**values)


def test_is_a_real_diffusers_depth2img_pipeline(pipe):
    from diffusers import StableDiffusionDepth2ImgPipeline

    assert isinstance(pipe, StableDiffusionDepth2ImgPipeline)
    assert pipe.unet.config.in_channels == 5
    assert pipe.vae_scale_factor == 8


def test_user_depth_map_matches_plain_diffusers_pipeline(pipe):
    from diffusers import StableDiffusionDepth2ImgPipeline

    depth = ramp_depth() * 3.0 + 1.0
    ours = generate(pipe, request(depth=depth), progress=False).images
    plain = StableDiffusionDepth2ImgPipeline(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    reference = plain(
        prompt="a room",
        image=scene(),
        depth_map=torch.from_numpy(depth)[None],
        strength=0.9,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(7),
        output_type="np",
    ).images
    assert ours.shape == reference.shape == (1, SIZE, SIZE, 3)
    assert np.abs(ours - reference).max() <= 1e-4


def test_depth_changes_the_image_and_seed_reproduces_it(pipe):
    a = generate(pipe, request(depth=ramp_depth()), progress=False).images
    a_again = generate(pipe, request(depth=ramp_depth()), progress=False).images
    b = generate(pipe, request(depth=ramp_depth(vertical=True)), progress=False).images
    other_seed = generate(pipe, request(depth=ramp_depth(), seed=8), progress=False).images
    assert np.array_equal(a, a_again)
    assert np.abs(a - b).max() > 1e-3
    assert np.abs(a - other_seed).max() > 1e-3


def test_estimated_depth_img2img_and_depth_cache(pipe):
    pipe.depth_cache.clear()
    calls = pipe.depth_cache.estimator_calls
    result = generate(pipe, request(strength=1.0), progress=False)
    assert result.mode == "img2img" and np.isfinite(result.images).all()
    assert result.depth.shape[0] > 0 and result.depth.std() > 0
    assert pipe.depth_cache.estimator_calls == calls + 1
    generate(pipe, request(strength=1.0), progress=False)  # same image: cached
    assert pipe.depth_cache.estimator_calls == calls + 1


def test_batch_of_identical_images_estimates_once(pipe):
    pipe.depth_cache.clear()
    calls = pipe.depth_cache.estimator_calls
    images = [scene(3)] * 4
    out = pipe(
        prompt=["a room"] * 4, image=images, num_inference_steps=2, strength=0.5, output_type="np",
        generator=torch.Generator("cpu").manual_seed(0),
    ).images
    assert out.shape[0] == 4
    assert pipe.depth_cache.estimator_calls == calls + 1


def test_flat_depth_map_gives_a_finite_image(pipe):
    out = generate(pipe, request(depth=np.full((SIZE, SIZE), 0.5, np.float32)), progress=False).images
    assert np.isfinite(out).all()
    native_would_nan = torch.tensor(0.0) / torch.tensor(0.0)
    assert torch.isnan(native_would_nan)  # what 2*(d-min)/(max-min)-1 gives the hosts on a flat map


def test_txt2img_from_a_depth_map(pipe):
    a = generate(pipe, request(image=None, depth=ramp_depth(), width=64, height=48), progress=False)
    b = generate(pipe, request(image=None, depth=ramp_depth(vertical=True), width=64, height=48), progress=False)
    assert a.mode == "txt2img" and a.images.shape == (1, 48, 64, 3)
    assert np.isfinite(a.images).all() and np.abs(a.images - b.images).max() > 1e-3


def test_inpaint_changes_only_the_masked_area(pipe):
    image = scene(5)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    result = generate(
        pipe, request(image=image, mask=Image.fromarray(mask), output_type="pil", strength=1.0), progress=False
    )
    out = np.asarray(result.images[0])
    original = np.asarray(image)
    assert result.mode == "inpaint"
    assert np.array_equal(out[mask == 0], original[mask == 0])
    assert np.abs(out[mask == 255].astype(int) - original[mask == 255]).mean() > 1.0


def test_user_depth_aspect_is_fitted(pipe):
    wide = np.tile(np.linspace(0, 1, 96, dtype=np.float32), (48, 1))
    for mode in depthmap.ResizeMode:
        result = generate(pipe, request(depth=wide, resize_mode=mode), progress=False)
        assert np.isfinite(result.images).all()
        expected_w = {0: 96, 1: 48, 2: 96}[int(mode)]
        assert result.depth.shape[1] == expected_w


def test_bad_requests(pipe):
    with pytest.raises(ValueError, match="txt2img needs a depth map"):
        generate(pipe, request(image=None))
    with pytest.raises(ValueError, match="mask size"):
        generate(pipe, request(mask=Image.new("L", (32, 32))))
    bad = ramp_depth()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        generate(pipe, request(depth=bad))


def test_numpy_init_images_are_refused_not_swapped(pipe):
    with pytest.raises(TypeError, match="PIL"):
        pipe.prepare_depth_map([np.zeros((64, 32, 3))], None, 1, False, torch.float32, torch.device("cpu"))


def test_pipeline_is_offline_and_reusable_from_a_saved_diffusers_folder(pipe, tmp_path):
    folder = tmp_path / "finetune"
    pipe.save_pretrained(folder)
    again = load_pipeline(folder, device="cpu", dtype=torch.float32)
    assert isinstance(again, DepthPipeline)
    a = generate(pipe, request(depth=ramp_depth()), progress=False).images
    b = generate(again, request(depth=ramp_depth()), progress=False).images
    assert np.abs(a - b).max() <= 1e-5
