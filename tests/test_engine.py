"""The diffusers engine on the tiny depth checkpoint: parity with diffusers' own pipeline, every mode."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.pipeline.depth_pipeline import DepthPipeline
from depth2img.pipeline.generate import generate
from depth2img.pipeline.load import load_pipeline
from depth2img.pipeline.request import GenerationRequest
from depth2img.process import fitting

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
    values = dict(
        prompt="a room", image=scene(), steps=STEPS, seed=7, strength=0.9, output_type="np", width=SIZE, height=SIZE
    )
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
    # Two code paths (our conditioning vs diffusers' prepare_depth_map) of the same float32 arithmetic: a few
    # ulps of difference in the depth channel, amplified by 3 UNet steps, stay orders of magnitude below 1e-4
    # (images in [0, 1]); a wrong normalization or a swapped axis changes pixels by > 1e-2.
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
    assert pipe.depth_cache.estimator_calls == calls + 1
    # The reference: diffusers' own pipeline given the estimator's map of the same image as its depth_map.
    from diffusers import StableDiffusionDepth2ImgPipeline

    estimated = pipe.estimator.estimate(scene())
    assert result.depth.shape == tuple(estimated.shape[1:])
    plain = StableDiffusionDepth2ImgPipeline(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    reference = plain(
        prompt="a room", image=scene(), depth_map=estimated, strength=1.0, num_inference_steps=STEPS,
        guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(7), output_type="np",
    ).images
    assert np.abs(result.images - reference).max() <= 1e-4  # see test_user_depth_map_matches_plain_diffusers
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
    from diffusers import StableDiffusionDepth2ImgPipeline

    from depth2img.condition.conditioning import FLAT_CONDITIONING

    flat = np.full((SIZE, SIZE), 0.5, np.float32)
    out = generate(pipe, request(depth=flat), progress=False).images
    assert np.isfinite(out).all()
    args = ([scene()], torch.from_numpy(flat)[None], 1, False, torch.float32, torch.device("cpu"))
    ours = pipe.prepare_depth_map(*args)
    assert torch.equal(ours, torch.full_like(ours, FLAT_CONDITIONING))
    # The reference: diffusers' own pipeline divides by max - min = 0 on the same map.
    native = StableDiffusionDepth2ImgPipeline.prepare_depth_map(pipe, *args)
    assert torch.isnan(native).all()


def unet_inputs(pipe, req):
    """Every UNet call of one generate(): (the 4 latent channels of the conditional half, the timestep)."""
    seen = []

    def record(module, args):
        seen.append((args[0][:1, :4].clone(), float(args[1])))

    handle = pipe.unet.register_forward_pre_hook(record)
    try:
        result = generate(pipe, req, progress=False)
    finally:
        handle.remove()
    return result, seen


def full_schedule(steps=STEPS) -> list[float]:
    """The timesteps of a whole run of `steps`, from diffusers' own scheduler built from the checkpoint's
    schedule as Stability's diffusers release of SD 2 depth ships it (PNDM, PLMS only)."""
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler.from_config(SD2_DEPTH_SCHEDULER)
    scheduler.set_timesteps(steps)
    return [float(t) for t in scheduler.timesteps]


# stabilityai/stable-diffusion-2-depth's scheduler/scheduler_config.json, written out.
SD2_DEPTH_SCHEDULER = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
    "steps_offset": 1, "trained_betas": None,
}  # fmt: skip


def test_txt2img_from_a_depth_map(pipe):
    a, seen = unet_inputs(pipe, request(image=None, depth=ramp_depth(), width=64, height=48, strength=0.5))
    b = generate(pipe, request(image=None, depth=ramp_depth(vertical=True), width=64, height=48), progress=False)
    assert a.mode == "txt2img" and a.images.shape == (1, 48, 64, 3)
    assert np.isfinite(a.images).all() and np.abs(a.images - b.images).max() > 1e-3  # the depth steers it
    # Pure noise: the first UNet input is the seed's normal draw times the scheduler's initial sigma (1 for PNDM,
    # whose scale_model_input is the identity), not a noised picture (at the first timestep an img2img latent
    # keeps sqrt(alpha_bar) = 0.07 of the encoded image; the gray placeholder would show).
    expected = torch.randn((1, 4, 6, 8), generator=torch.Generator("cpu").manual_seed(7))
    assert pipe.scheduler.init_noise_sigma == 1.0
    torch.testing.assert_close(seen[0][0], expected * 1.0, rtol=0, atol=1e-6)
    # Strength is 1 whatever the request says (0.5 here): the whole schedule runs, from its noisiest step.
    assert [t for _, t in seen] == full_schedule()
    _, half = unet_inputs(pipe, request(depth=ramp_depth(), strength=0.5, steps=4))
    assert len(half) < len(full_schedule(4))  # the contrast: img2img at 0.5 skips the noisiest steps


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


def expected_channel(fitted: np.ndarray, size=SIZE) -> torch.Tensor:
    """The documented conditioning of a fitted map, written out: bicubic to the latent size, then min-max."""
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(fitted, np.float32))[None, None], size=(size // 8, size // 8),
        mode="bicubic", align_corners=False,
    )  # fmt: skip
    return 2.0 * (resized - resized.min()) / (resized.max() - resized.min()) - 1.0


def test_user_depth_aspect_is_fitted(pipe):
    wide = np.random.default_rng(2).random((48, 96), dtype=np.float32)
    # The fits of a 2:1 map to a square output, by hand: stretch (the map as it is, bicubic squashes it), the
    # centre 48x48, or 24 rows of the top edge above and of the bottom edge below (OpenCV's replicate border).
    by_hand = {
        fitting.ResizeMode.JUST_RESIZE: wide,
        fitting.ResizeMode.CROP_AND_RESIZE: wide[:, 24:72],
        fitting.ResizeMode.RESIZE_AND_FILL: cv2.copyMakeBorder(wide, 24, 24, 0, 0, cv2.BORDER_REPLICATE),
    }
    assert np.array_equal(by_hand[fitting.ResizeMode.RESIZE_AND_FILL], np.pad(wide, ((24, 24), (0, 0)), "edge"))
    expected = {mode: expected_channel(fitted) for mode, fitted in by_hand.items()}
    # The three fits condition differently: the check below can tell a wrong fit from the right one.
    modes = list(expected)
    assert min((expected[a] - expected[b]).abs().max() for a in modes for b in modes if a != b) > 0.1
    # txt2img (the map is the picture) and img2img with a square image (an uploaded map is fitted by its own
    # aspect, README: depth maps): the UNet's depth channel is the map fitted as the mode says.
    for image in (None, scene()):
        for mode in fitting.ResizeMode:
            req = request(image=image, depth=wide, resize_mode=mode, steps=2, strength=1.0)
            channel = captured_depth_channel(pipe, req)
            torch.testing.assert_close(channel, expected[mode], rtol=0, atol=1e-5, msg=f"{mode!r}, image {image}")
            result = generate(pipe, req, progress=False)
            assert np.array_equal(result.depth, by_hand[mode])  # what the result reports is what was used


def test_bad_requests(pipe):
    with pytest.raises(ValueError, match="give an init image .* or a depth map"):
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
    assert np.abs(a - b).max() <= 1e-4  # the same weights loaded two ways may take other kernels (ulps)


def test_default_size_is_the_sources_aspect_at_about_512_squared():
    from depth2img.pipeline.size import default_size, output_size

    assert default_size(1920, 1080) == (704, 384)  # 16:9 at ~512^2: 270k pixels, not 2 megapixels
    assert default_size(64, 64) == (512, 512)
    assert default_size(1080, 1920) == (384, 704)
    width, height, note = output_size(GenerationRequest(prompt="x"), 1920, 1080)
    assert (width, height) == (704, 384) and "512x512" in note
    assert output_size(GenerationRequest(prompt="x", width=640), 1920, 1080)[:2] == (640, 360)
    assert output_size(GenerationRequest(prompt="x", width=100, height=60), 1920, 1080) == (96, 56, "")


def test_image_mask_and_depth_get_the_same_fit(pipe):
    """crop-and-resize on a square image for a 2:1 output equals the user cropping all three by hand."""
    image, depth = scene(9), ramp_depth(vertical=True)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, 20:44] = 255
    fitted = generate(
        pipe,
        request(image=image, depth=depth, mask=Image.fromarray(mask), width=SIZE, height=SIZE // 2,
                resize_mode=fitting.ResizeMode.CROP_AND_RESIZE),
        progress=False,
    ).images
    rows = slice(SIZE // 4, SIZE // 4 + SIZE // 2)  # the centre band a 2:1 crop keeps
    by_hand = generate(
        pipe,
        request(image=Image.fromarray(np.asarray(image)[rows]), depth=depth[rows].copy(),
                mask=Image.fromarray(mask[rows]), width=SIZE, height=SIZE // 2),
        progress=False,
    ).images
    assert fitted.shape == by_hand.shape == (1, SIZE // 2, SIZE, 3)
    # Same inputs through the same code path: only the crop's location could differ.
    assert np.abs(fitted - by_hand).max() <= 1e-5
    squashed = generate(pipe, request(image=image, depth=depth, width=SIZE, height=SIZE // 2), progress=False)
    assert np.abs(squashed.images - by_hand).max() > 1e-2  # stretching is another picture


def test_steps_and_strength_that_give_no_step_are_refused(pipe):
    with pytest.raises(ValueError, match="steps must be at least 1"):
        generate(pipe, request(steps=0))
    with pytest.raises(ValueError, match="steps x strength"):
        generate(pipe, request(steps=1, strength=0.8))
    with pytest.raises(ValueError, match="strength"):
        generate(pipe, request(strength=0.0))


def test_one_depth_map_conditions_every_image_of_a_batch(pipe):
    result = generate(pipe, request(depth=ramp_depth(), batch_size=2), progress=False)
    assert result.images.shape == (2, SIZE, SIZE, 3)
    single = generate(pipe, request(depth=ramp_depth()), progress=False).images
    # diffusers draws one noise tensor for the batch, so image 0 of the batch is the single run's picture, up to
    # the UNet's batch-size-dependent kernels (1.04e-5 seen with ATEN_CPU_CAPABILITY=avx2 on one thread).
    assert np.abs(result.images[:1] - single).max() <= 1e-4
    assert np.abs(result.images[0] - result.images[1]).max() > 1e-3


@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_other_schedulers_generate(pipe, tiny_checkpoint, name):
    """Each scheduler as diffusers' own pipeline runs it: diffusers' scheduler class built the documented way,
    from_config of the model's released scheduler config (not make_scheduler), on the same weights."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, StableDiffusionDepth2ImgPipeline

    other = load_pipeline(tiny_checkpoint, device="cpu", dtype=torch.float32, scheduler=name)
    reference_class = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[name]
    assert type(other.scheduler) is reference_class
    depth = ramp_depth() * 3.0 + 1.0
    ours = generate(other, request(depth=depth), progress=False).images
    plain = StableDiffusionDepth2ImgPipeline(
        **{**other.components, "scheduler": reference_class.from_config(SD2_DEPTH_SCHEDULER)}
    )
    plain.set_progress_bar_config(disable=True)
    reference = plain(
        prompt="a room", image=scene(), depth_map=torch.from_numpy(depth)[None], strength=0.9,
        num_inference_steps=STEPS, guidance_scale=7.5, generator=torch.Generator("cpu").manual_seed(7),
        output_type="np",
    ).images  # fmt: skip
    assert ours.shape == reference.shape == (1, SIZE, SIZE, 3)
    # As test_user_depth_map_matches_plain_diffusers_pipeline: two float32 code paths, a few ulps apart.
    assert np.abs(ours - reference).max() <= 1e-4
    # The scheduler matters at this tolerance: the default (PNDM) on the same request is another picture.
    assert np.abs(ours - generate(pipe, request(depth=depth), progress=False).images).max() > 1e-3


def test_txt2img_and_img2img_at_once_on_one_pipeline(pipe):
    """The mode is per call: two threads in different modes each get what they get alone."""
    from concurrent.futures import ThreadPoolExecutor

    txt = request(image=None, depth=ramp_depth(), steps=2)
    img = request(depth=ramp_depth(vertical=True), steps=2)
    alone = [generate(pipe, r, progress=False).images for r in (txt, img)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda r: generate(pipe, r, progress=False).images, [txt, img, txt, img]))
    for i, images in enumerate(together):
        assert np.abs(images - alone[i % 2]).max() <= 1e-5


# ---- a fixed depth range (issue 9 §1) ----


def captured_depth_channel(pipe, req):
    """The fifth UNet input channel of the first step, as the UNet receives it."""
    seen = []
    handle = pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, 4:].clone()))
    try:
        generate(pipe, req, progress=False)
    finally:
        handle.remove()
    return seen[0][:1]


def test_depth_range_reaches_the_unet(pipe):
    depth = ramp_depth() * 0.5 + 0.25  # values 0.25..0.75, on a scale 0..1
    channel = captured_depth_channel(pipe, request(depth=depth, depth_range=(0.0, 1.0)))
    # Independent reference: the documented arithmetic, written out (bicubic to the latent size, then linear).
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(depth)[None, None], size=(SIZE // 8, SIZE // 8), mode="bicubic", align_corners=False
    )
    expected = (2.0 * resized - 1.0).clamp(-1, 1)
    # One float32 subtraction/division order vs another: a few ulps.
    torch.testing.assert_close(channel, expected, rtol=0, atol=1e-6)
    assert channel.min() > -0.6 and channel.max() < 0.6  # not stretched to [-1, 1]
    # The range belongs to that call only: the next call without one is per-sample min-max again.
    again = captured_depth_channel(pipe, request(depth=depth))
    assert again.min() == -1.0 and again.max() == 1.0


def test_depth_range_holds_the_scale_across_frames(pipe):
    near = ramp_depth() * 0.5 + 0.5
    far = near * 0.5  # the same scene, farther away
    per_frame = [generate(pipe, request(depth=d), progress=False).images for d in (near, far)]
    shared = [generate(pipe, request(depth=d, depth_range=(0.0, 1.0)), progress=False).images for d in (near, far)]
    # Per-frame min-max stretches both maps to the same conditioning, so the same picture (same code path, same
    # seed; ~1e-7 differences of the normalized maps stay far below 1e-4); one scale tells them apart.
    assert np.abs(per_frame[0] - per_frame[1]).max() <= 1e-4
    assert np.abs(shared[0] - shared[1]).max() > 1e-3


def test_bad_depth_range_is_refused_before_work(pipe):
    with pytest.raises(ValueError, match="depth range"):
        generate(pipe, request(depth=ramp_depth(), depth_range=(1.0, 0.0)))


# ---- masks from a depth band (issue 9 §2) ----


def step_depth(size=SIZE) -> np.ndarray:
    """Far (0.2) on the left half, near (0.8) on the right half."""
    depth = np.full((size, size), 0.2, np.float32)
    depth[:, size // 2 :] = 0.8
    return depth


def test_depth_band_mask_keeps_everything_outside_it(pipe):
    from depth2img.process.masks import MaskSettings

    image = scene(11)
    settings = MaskSettings(low=50, high=100, feather=3)
    result = generate(
        pipe, request(image=image, depth=step_depth(), depth_mask=settings, output_type="pil", strength=1.0),
        progress=False,
    )
    assert result.mode == "inpaint" and "50-100 (percent of range" in result.mask_note
    out, original = np.asarray(result.images[0]).astype(int), np.asarray(image).astype(int)
    # The hard band is the near half (x >= 32); the feather reaches 3 px: beyond it, the input pixels exactly.
    untouched = np.arange(SIZE)[None, :].repeat(SIZE, 0) < SIZE // 2 - 3
    assert np.array_equal(out[untouched], original[untouched])
    assert np.abs(out[:, SIZE // 2 + 3 :] - original[:, SIZE // 2 + 3 :]).mean() > 1.0
    mask = np.asarray(result.mask)
    assert mask.shape == (SIZE, SIZE) and (mask[untouched] == 0).all() and (mask[:, SIZE // 2 + 3 :] == 255).all()


def test_depth_band_mask_on_a_shared_scale_and_combined(pipe):
    from depth2img.process.masks import MaskSettings

    # On the scale 0..1 the band 70-100 holds only the near half (0.8); the map's own range would say the same,
    # so shift the map: 0.5/0.6 on the shared scale are both below 70 percent, so the band is empty there.
    with pytest.raises(ValueError, match="no pixel lies in the depth band 70-100"):
        generate(pipe, request(depth=step_depth() * 0.5 + 0.2, depth_range=(0.0, 1.0),
                               depth_mask=MaskSettings(low=70, high=100)), progress=False)
    painted = np.zeros((SIZE, SIZE), np.uint8)
    painted[: SIZE // 2] = 255  # the top half
    result = generate(pipe, request(depth=step_depth(), mask=Image.fromarray(painted), steps=2,
                                    depth_mask=MaskSettings(low=50, high=100, combine="intersect")), progress=False)
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[: SIZE // 2, SIZE // 2 :] = 255  # near AND painted: the top-right quarter
    assert np.array_equal(np.asarray(result.mask), expected)


def test_depth_band_mask_needs_an_image(pipe):
    from depth2img.process.masks import MaskSettings

    with pytest.raises(ValueError, match="needs an init image"):
        generate(pipe, request(image=None, depth=step_depth(), depth_mask=MaskSettings(low=50)))


@pytest.mark.parametrize("mode", list(fitting.ResizeMode))
def test_estimated_depth_lines_up_as_the_same_map_uploaded(pipe, mode):
    # A 150x64 picture: the estimator's map has its sides rounded to multiples of 32 (another aspect). It must
    # be fitted by the picture's aspect, as the same map uploaded at the picture's size is (issue 15.2).
    image = Image.fromarray(np.asarray(scene(seed=3, size=150))[:64])
    estimated_map = pipe.estimate_depth(image)[0].numpy()
    assert estimated_map.shape[1] * 64 != estimated_map.shape[0] * 150  # the case: another aspect
    uploaded_map = fitting.resize(estimated_map, 150, 64)  # what `depth` saves and a user uploads
    results = [
        generate(pipe, request(image=image, depth=depth, resize_mode=mode, steps=2, strength=1.0), progress=False)
        for depth in (None, uploaded_map)
    ]
    estimated, uploaded = (result.depth for result in results)
    if mode is fitting.ResizeMode.JUST_RESIZE:
        # Both stretched to the output: the same geometry, another resampling path (bicubic: the outer pixels
        # differ most on this tiny model's noisy map), so compared inside the border.
        estimated, uploaded = (fitting.resize(d, SIZE, SIZE)[2:-2, 2:-2] for d in (estimated, uploaded))
        np.testing.assert_allclose(estimated, uploaded, atol=0.03 * float(np.ptp(uploaded)))
    else:  # the same map cropped or padded alike
        assert estimated.shape == uploaded.shape
        np.testing.assert_allclose(estimated, uploaded, atol=1e-5)
