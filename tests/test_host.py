"""The WebUI adapter's logic without the WebUI: DepthConditioner, the estimator over a host's module, the API."""

from __future__ import annotations

import base64
from io import BytesIO

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.base import limits
from depth2img.base.errors import Depth2ImgError
from depth2img.condition.conditioning import FLAT_CONDITIONING, depth_conditioning
from depth2img.estimate.cache import DepthCache
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.process import fitting, postprocessing
from depth2img.schema.args import Depth2ImgArgs
from depth2img.webui.job import DepthConditioner, JobGeometry, estimate_image


class MidasModule(torch.nn.Module):
    """Stands in for ldm's MiDaSInference: the same network (transformers' DPT), [B, 1, h, w] out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        from depth2img.estimate.midas import predict_depth

        return predict_depth(self.model, pixel_values)[:, None]


@pytest.fixture(scope="module")
def midas_module(tiny_checkpoint):
    from safetensors.torch import load_file

    from depth2img.estimate.midas import load_midas_from_state_dict

    state = load_file(str(tiny_checkpoint))
    return MidasModule(load_midas_from_state_dict({k: v for k, v in state.items() if k.startswith("depth_model.")}))


@pytest.fixture(scope="module")
def cheap_module():
    """A small random conv net in MiDaS's place ([B, 3, h, w] -> [B, 1, h, w]): for tests of which image is
    estimated and what happens to the map, where the real network adds only minutes on a CPU."""
    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1))


def ramp_resized(old: int, new: int) -> np.ndarray:
    """A 0..1 ramp of `old` samples resized to `new` with pixel centres aligned (OpenCV's convention)."""
    return np.clip(((np.arange(new) + 0.5) * old / new - 0.5) / (old - 1), 0, 1)


def b64_png(array) -> str:
    ok, data = cv2.imencode(".png", array)
    assert ok
    return base64.b64encode(data.tobytes()).decode()


RAMP = np.tile(np.linspace(0, 65535, 64), (48, 1)).astype(np.uint16)  # 64 wide, 48 high


def upload_args(array=RAMP, **extra):
    return Depth2ImgArgs(enabled=True, source="upload", depth_image=b64_png(array), **extra)


def test_uploaded_map_conditions_every_sample_in_the_latents_dtype():
    conditioner = DepthConditioner(upload_args(), JobGeometry(64, 48))
    latent = torch.zeros(3, 4, 6, 8, dtype=torch.float16)
    cond = conditioner.conditioning(latent)
    assert cond.shape == (3, 1, 6, 8) and cond.dtype == torch.float16
    expected = depth_conditioning(RAMP.astype(np.float32) / 65535, (6, 8), dtype=torch.float16)
    assert torch.equal(cond, expected.repeat(3, 1, 1, 1))
    assert conditioner.last_depth.shape == (48, 64)


def test_flat_upload_is_finite():
    flat = np.full((48, 64), 1000, np.uint16)
    cond = DepthConditioner(upload_args(flat), JobGeometry(64, 48)).conditioning(torch.zeros(1, 4, 6, 8))
    assert (cond == FLAT_CONDITIONING).all()


def test_crop_region_follows_the_webui_only_masked_crop():
    init = [Image.new("RGB", (64, 48))]
    conditioner = DepthConditioner(upload_args(), JobGeometry(32, 32), init_images=init)
    conditioner.geometry.crop_region = (16, 8, 48, 40)  # a 32x32 box of the 64x48 init
    cond = conditioner.conditioning(torch.zeros(1, 4, 4, 4))
    expected = depth_conditioning(RAMP[8:40, 16:48].astype(np.float32) / 65535, (4, 4))
    assert torch.equal(cond, expected)


def test_bad_upload_names_the_field():
    with pytest.raises(Depth2ImgError, match="depth_image") as error:
        DepthConditioner(Depth2ImgArgs(enabled=True, source="upload", depth_image="@@@"), JobGeometry(8, 8))
    assert error.value.status_code == 422
    not_an_image = base64.b64encode(b"no image").decode()
    with pytest.raises(Depth2ImgError, match="depth_image.*not a readable image"):
        DepthConditioner(Depth2ImgArgs(enabled=True, source="upload", depth_image=not_an_image), JobGeometry(8, 8))


def test_txt2img_estimate_without_image_says_what_to_do(midas_module):
    conditioner = DepthConditioner(
        Depth2ImgArgs(enabled=True),
        JobGeometry(64, 64),
        estimator=CheckpointMidasEstimator.from_module(midas_module, "t"),
    )
    with pytest.raises(Depth2ImgError, match="upload a depth map"):
        conditioner.conditioning(torch.zeros(1, 4, 8, 8))


def test_batch_estimates_once_and_equals_the_native_arithmetic(midas_module):
    from depth2img.estimate.midas import preprocess

    cache = DepthCache()
    estimator = CheckpointMidasEstimator.from_module(midas_module, "tiny")
    conditioner = DepthConditioner(Depth2ImgArgs(enabled=True), JobGeometry(64, 64), estimator=estimator, cache=cache)
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32))
    cond = conditioner.conditioning(torch.zeros(4, 4, 8, 8), image.repeat(4, 1, 1, 1))
    assert cache.estimator_calls == 1 and cond.shape == (4, 1, 8, 8)
    assert all(torch.equal(cond[0], cond[i]) for i in range(4))
    # The WebUI's native formula on the same network output, batch of one.
    with torch.no_grad():
        depth = midas_module(preprocess(image))
    resized = torch.nn.functional.interpolate(depth, size=(8, 8), mode="bicubic", align_corners=False)
    low, high = torch.aminmax(resized)
    assert torch.equal(cond[:1], 2.0 * (resized - low) / (high - low) - 1.0)
    conditioner.conditioning(torch.zeros(4, 4, 8, 8), image.repeat(4, 1, 1, 1))
    assert cache.estimator_calls == 1  # cached across jobs


def test_inpainting_depth_comes_from_the_whole_unfilled_image(cheap_module):
    cache = DepthCache()
    estimator = CheckpointMidasEstimator.from_module(cheap_module, "tiny")
    init = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    conditioner = DepthConditioner(
        Depth2ImgArgs(enabled=True), JobGeometry(64, 48), estimator=estimator, cache=cache, init_images=[init],
        inpainting=True,
    )
    filled = torch.zeros(2, 3, 48, 64)  # what the WebUI would hand over after "fill": ignored for depth
    cond = conditioner.conditioning(torch.zeros(2, 4, 6, 8), filled)
    assert cache.estimator_calls == 1
    # Reference: the depth of the init image itself (the network run directly, not through the conditioner).
    from depth2img.estimate.midas import images_to_tensor, preprocess

    with torch.no_grad():
        of_init = cheap_module(preprocess(images_to_tensor(init)))[:, 0]
        of_filled = cheap_module(preprocess(filled[:1]))[:, 0]
    expected = depth_conditioning(of_init, (6, 8))
    # Same network and arithmetic in another order of calls (cache, numpy round trip): float32 rounding only,
    # which after the per-sample normalization reaches 1e-4 when other tests left torch on other thread counts.
    assert torch.allclose(cond, expected.repeat(2, 1, 1, 1), atol=1e-3)
    assert not torch.allclose(cond[:1], depth_conditioning(of_filled, (6, 8)), atol=1e-2)  # it would tell


def test_transparent_init_images_are_flattened_on_the_webui_background(cheap_module):
    from depth2img.estimate.midas import images_to_tensor

    rgba = np.random.default_rng(2).integers(0, 255, (48, 64, 4), dtype=np.uint8)
    rgba[:, :32, 3] = 0  # left half transparent
    init = Image.fromarray(rgba, "RGBA")
    estimator = CheckpointMidasEstimator.from_module(cheap_module, "tiny")
    conditioner = DepthConditioner(
        Depth2ImgArgs(enabled=True), JobGeometry(64, 48), estimator=estimator, init_images=[init], inpainting=True,
        background="#ff0000",
    )
    cond = conditioner.conditioning(torch.zeros(1, 4, 6, 8))
    # Reference: the WebUI's rule written out (modules/images.py flatten): paste on the colour through alpha.
    canvas = Image.new("RGBA", init.size, "#ff0000")
    canvas.paste(init, mask=init)
    expected = depth_conditioning(estimator.estimate(images_to_tensor(canvas.convert("RGB"))), (6, 8))
    assert torch.allclose(cond, expected, atol=1e-5)
    on_black = Image.alpha_composite(Image.new("RGBA", init.size, "black"), init).convert("RGB")
    assert not torch.allclose(cond, depth_conditioning(estimator.estimate(images_to_tensor(on_black)), (6, 8)),
                              atol=1e-3)


def test_flatten_image_follows_the_webui_for_every_mode_with_alpha():
    from depth2img.webui.job import flatten_image

    la = Image.fromarray(np.stack([np.full((2, 2), 200, np.uint8), np.array([[0, 255], [255, 0]], np.uint8)], -1),
                         "LA")
    flat = np.asarray(flatten_image(la, "#0000ff"))
    assert flat[0, 0].tolist() == [0, 0, 255] and flat[0, 1].tolist() == [200, 200, 200]
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert np.asarray(flatten_image(rgb, "#0000ff")).tolist() == np.asarray(rgb).tolist()


def test_estimated_maps_are_post_processed(cheap_module):
    estimator = CheckpointMidasEstimator.from_module(cheap_module, "tiny")
    image = torch.from_numpy(np.random.default_rng(4).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32))
    plain = DepthConditioner(Depth2ImgArgs(enabled=True), JobGeometry(64, 64), estimator=estimator)
    inverted = DepthConditioner(Depth2ImgArgs(enabled=True, invert=True), JobGeometry(64, 64), estimator=estimator)
    a = plain.conditioning(torch.zeros(1, 4, 8, 8), image)
    b = inverted.conditioning(torch.zeros(1, 4, 8, 8), image)
    # Inverting (max + min - d) before a linear resize and min-max scaling negates the conditioning exactly,
    # up to float32 rounding of the two orders of arithmetic.
    assert torch.allclose(b, -a, atol=1e-5)
    blurred = DepthConditioner(Depth2ImgArgs(enabled=True, blur=4.0), JobGeometry(64, 64), estimator=estimator)
    c = blurred.conditioning(torch.zeros(1, 4, 8, 8), image)
    assert c.std() < a.std()  # a blur of sigma 4 px at 384 px smooths the 8x8 map: less spread


def test_postprocess_identity_is_decided_in_one_place():
    depth = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    assert postprocessing.is_identity(**Depth2ImgArgs().postprocess_kwargs())
    assert postprocessing.postprocess(depth, **Depth2ImgArgs().postprocess_kwargs()) is depth
    for change in ({"invert": True}, {"clip_near": 99.0}, {"clip_far": 1.0}, {"gamma": 2.0}, {"blur": 1.0}):
        kwargs = Depth2ImgArgs(**change).postprocess_kwargs()
        assert not postprocessing.is_identity(**kwargs)
        assert not np.array_equal(postprocessing.postprocess(depth, **kwargs), depth)


def test_depth_argument_in_every_form_and_errors_name_the_field():
    from depth2img.webui.job import decode_depth_argument

    png = cv2.imencode(".png", RAMP)[1].tobytes()
    expected = RAMP.astype(np.float32) / 65535
    for value in (png, bytearray(png), b64_png(RAMP), "data:image/png;base64," + b64_png(RAMP),
                  RAMP, Image.fromarray(RAMP)):
        assert np.allclose(decode_depth_argument(value).depth, expected, atol=1e-6), type(value)
    for value, problem in ((b"junk", "not a readable image"), ("@@", "base64"), (12, "unsupported type int"),
                           (np.full((4, 4), np.nan, np.float32), "NaN"), (np.zeros((2, 2, 2, 2)), "shape")):
        with pytest.raises(Depth2ImgError, match="'depth_image'.*" + problem) as error:
            decode_depth_argument(value)
        assert error.value.status_code == 422


def test_depth_maps_above_the_size_limit_are_refused_before_decoding():
    with pytest.raises(Depth2ImgError, match="depth_image.*limit"):
        DepthConditioner(upload_args(), JobGeometry(64, 48), max_pixels=1000)


def test_job_errors_keep_the_cores_messages_and_mark_faults():
    from depth2img.schema.args import ArgsError
    from depth2img.webui.job import job_error

    for error in (limits.DepthMapError("bad map"), ArgsError("bad arg"), Depth2ImgError("bad job")):
        assert job_error(error).status_code == 422 and str(job_error(error)) == str(error)
    fault = job_error(KeyError("x"))
    assert fault.status_code == 500 and "KeyError" in str(fault) and "console" in str(fault)


def test_a_batch_that_does_not_match_its_depth_maps_says_what_to_send(cheap_module):
    init = [Image.new("RGB", (64, 48), (k, k, k)) for k in (10, 200)]
    conditioner = DepthConditioner(
        Depth2ImgArgs(enabled=True),
        JobGeometry(64, 48),
        estimator=CheckpointMidasEstimator.from_module(cheap_module, "t"),
        init_images=init, inpainting=True,
    )
    with pytest.raises(Depth2ImgError, match="2 depth maps for a batch of 3.*one per batch item"):
        conditioner.conditioning(torch.zeros(3, 4, 6, 8))


def test_output_depth_is_at_the_size_of_the_image_it_conditioned():
    conditioner = DepthConditioner(upload_args(), JobGeometry(128, 96))
    assert conditioner.output_depth() is None
    conditioner.conditioning(torch.zeros(1, 4, 12, 16))
    assert conditioner.output_depth().shape == (96, 128)
    conditioner.conditioning(torch.zeros(1, 4, 24, 32))  # hires fix: the second pass is the generated image
    out = conditioner.output_depth()
    assert out.shape == (192, 256)
    # The uploaded ramp, resized: OpenCV's cubic kernel (a = -0.75) misses a linear ramp by up to 0.05 of a
    # source step (7.4e-4 of the range here) away from the borders, where it overshoots by 1.7e-3.
    inner = slice(9, -9)
    assert np.allclose(out[10, inner], ramp_resized(64, 256)[inner], atol=1e-3)
    assert np.allclose(out[10], ramp_resized(64, 256), atol=2e-3)


def test_depth_output_images():
    from depth2img.source.encoding import depth_output_image, depth_to_png16_image
    from depth2img.source.transport import png16_base64

    depth = np.linspace(-3, 5, 48 * 64, dtype=np.float32).reshape(48, 64)
    image = depth_to_png16_image(depth)
    assert image.mode == "I;16" and image.size == (64, 48)
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    decoded = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    # Independent reference: min-max to 16 bits written out.
    expected = np.round((depth - depth.min()) / (depth.max() - depth.min()) * 65535).astype(np.uint16)
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, expected)
    sent = cv2.imdecode(np.frombuffer(base64.b64decode(png16_base64(depth)), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(sent, expected)
    for file_format, pil_format in (("jpg", "JPEG"), ("webp", "WEBP")):
        shown = depth_output_image(depth, file_format)
        assert shown.mode == "L" and np.array_equal(np.asarray(shown), (expected >> 8).astype(np.uint8))
        shown.save(BytesIO(), format=pil_format)
    assert depth_output_image(depth, "PNG").mode == "I;16"


def test_float32_fallback_runs_a_copy_and_leaves_the_hosts_module_alone():
    from depth2img.estimate.interface import PrecisionCaps

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)
            self.seen = []

        def forward(self, x):
            self.seen.append(x.dtype)
            return self.conv(x)

    torch.manual_seed(0)
    net = Net().to(torch.bfloat16)  # bfloat16 runs natively on the CPU of both torch 2.1 and 2.13: only caps say no
    estimator = CheckpointMidasEstimator.from_module(net, "n", caps=PrecisionCaps(float16=False, bfloat16=False))
    images = torch.rand(1, 3, 64, 64, dtype=torch.bfloat16) * 2 - 1
    depth = estimator.estimate(images)
    assert depth.dtype == torch.float32 and net.conv.weight.dtype == torch.bfloat16  # the host's weights untouched
    assert net.seen == []  # the bfloat16 module never ran: a float32 copy did
    from depth2img.estimate.midas import preprocess

    with torch.no_grad():
        reference = torch.nn.functional.conv2d(preprocess(images), net.conv.weight.float(), net.conv.bias.float(),
                                               padding=1)[:, 0]
    # The same float32 weights and input through one conv: float32 summation order only.
    assert torch.allclose(depth, reference, atol=1e-5)
    copy_that_ran = estimator._runtime.resolve()[0]
    assert copy_that_ran is not net
    estimator.estimate(images)
    assert estimator._runtime.resolve()[0] is copy_that_ran  # built once, reused
    estimator.release()  # frees the copy only: the module is the checkpoint's
    assert estimator._runtime.resolve()[0] is not copy_that_ran and net.conv.weight.dtype == torch.bfloat16


def test_float32_copy_is_made_once_per_module_and_weights_not_per_job():
    # The WebUI makes a CheckpointMidasEstimator per job (loaded_model_estimator): the float32 copy (~0.5 GB for
    # MiDaS) must not be rebuilt each time (issue 15.8); new weights in the same module object make a new one.
    import gc

    from depth2img.estimate.interface import _FLOAT32_COPIES, PrecisionCaps

    no_half = PrecisionCaps(float16=False, bfloat16=False)
    net = torch.nn.Conv2d(3, 1, 3, padding=1).to(torch.bfloat16)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    first_job = CheckpointMidasEstimator.from_module(net, "hash-a", caps=no_half)
    first_job.estimate(images)
    copy_that_ran = first_job._runtime.resolve()[0]
    second_job = CheckpointMidasEstimator.from_module(net, "hash-a", caps=no_half)
    second_job.estimate(images)
    assert second_job._runtime.resolve()[0] is copy_that_ran
    # the WebUI loaded another checkpoint in:
    other_weights = CheckpointMidasEstimator.from_module(net, "hash-b", caps=no_half)
    assert other_weights._runtime.resolve()[0] is not copy_that_ran
    del first_job, second_job, other_weights, copy_that_ran
    count = len(_FLOAT32_COPIES)
    del net  # the host drops its model: the copy goes with it
    gc.collect()
    assert len(_FLOAT32_COPIES) == count - 1


def test_lowvram_execution_device_gets_the_inputs():
    class Recorder(torch.nn.Module):
        """Weights on the CPU; the host moves it to the execution device on call (lowvram): record the input."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = []

        def forward(self, x):
            self.seen.append((x.device.type, x.dtype))
            return torch.ones(x.shape[0], 1, 4, 4)

    module = Recorder()
    estimator = CheckpointMidasEstimator.from_module(module, "r", execution_device=torch.device("meta"))
    depth = estimator.estimate(torch.zeros(2, 3, 32, 32))
    assert module.seen == [("meta", torch.float32)]
    assert depth.shape == (2, 4, 4) and depth.device.type == "cpu"  # back on the caller's device


class CountingEstimator:
    cache_key = "counting"

    def __init__(self, delay=0.0):
        self.calls = 0
        self.delay = delay

    def estimate(self, images):
        import time

        self.calls += 1
        time.sleep(self.delay)
        return images[:, 0] * 2


def test_cache_evicts_the_least_recently_used():
    cache = DepthCache(max_entries=2)
    estimator = CountingEstimator()
    a, b, c = (torch.full((1, 3, 4, 4), v) for v in (0.1, 0.2, 0.3))
    for images in (a, b, a, c):  # a is used again before c arrives: b is the least recently used
        cache.estimate(estimator, images)
    assert estimator.calls == 3 and len(cache) == 2
    cache.estimate(estimator, a)
    assert estimator.calls == 3  # a kept
    cache.estimate(estimator, b)
    assert estimator.calls == 4  # b was evicted


def test_cache_counts_calls_per_request():
    cache = DepthCache()
    estimator = CountingEstimator()
    mine = []
    cache.estimate(estimator, torch.zeros(3, 3, 4, 4), on_call=lambda: mine.append(1))
    cache.estimate(estimator, torch.ones(1, 3, 4, 4))  # someone else's request
    cache.estimate(estimator, torch.zeros(1, 3, 4, 4), on_call=lambda: mine.append(1))  # cached
    assert len(mine) == 1 and cache.estimator_calls == 2


def test_cache_is_safe_across_threads():
    from collections import OrderedDict
    from concurrent.futures import ThreadPoolExecutor

    class SlowEntries(OrderedDict):
        # Widens the window between a membership test and the read that follows it, where an unlocked cache
        # lets another thread evict the entry (measured: 268 KeyErrors in 600 calls).
        def __contains__(self, key):
            found = super().__contains__(key)
            import time

            time.sleep(0.0005)
            return found

    cache = DepthCache(max_entries=1)
    cache._entries = SlowEntries()
    estimator = CountingEstimator()
    images = [torch.full((1, 3, 4, 4), float(k % 3)) for k in range(60)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda x: cache.estimate(estimator, x), images))
    assert all(torch.equal(r, x[:, 0] * 2) for r, x in zip(results, images, strict=True))


def test_two_threads_asking_for_one_new_image_estimate_it_once():
    from concurrent.futures import ThreadPoolExecutor

    cache = DepthCache()
    estimator = CountingEstimator(delay=0.05)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: cache.estimate(estimator, torch.zeros(1, 3, 4, 4)), range(4)))
    assert estimator.calls == 1


def _rounding_bound(net: torch.nn.Sequential, pixel_values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-pixel first-order bound of the rounding error of `net` (conv, tanh, conv) run in `dtype`.

    Each of the four roundings (input, first conv's output, tanh's output, second conv's output) is at most
    eps/2 relative to what flows there, and no value can exceed the same network with absolute weights on the
    absolute input (tanh is 1-Lipschitz): 4 x eps/2 of that (the CPU's convolutions accumulate in float32).
    Measured here: the error reaches 4 % of this bound.
    """
    eps = torch.finfo(dtype).eps
    with torch.no_grad():
        first = torch.nn.functional.conv2d(pixel_values.abs(), net[0].weight.abs().float(), net[0].bias.abs().float(),
                                           padding=2)
        magnitude = torch.nn.functional.conv2d(first, net[2].weight.abs().float(), net[2].bias.abs().float(),
                                               padding=1)
    return 2 * eps * magnitude[:, 0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_run_natively_or_fall_back(cheap_module, dtype):
    """The precision policy, exactly: a dtype this CPU runs runs natively, else a float32 copy does (the host's
    module untouched); numerics on a small network, where a rounding bound means something (a random full-size
    MiDaS amplifies rounding by how its weights happen to fall, differently on each processor)."""
    import copy

    from depth2img.estimate.interface import probe_precision_caps
    from depth2img.estimate.midas import preprocess

    half = copy.deepcopy(cheap_module).to(dtype)
    seen = []
    half.register_forward_pre_hook(lambda _module, args: seen.append(args[0].dtype))
    estimator = CheckpointMidasEstimator.from_module(half, "half")
    ramp = torch.linspace(-1, 1, 64)
    images = torch.stack([ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64), -ramp[None, :].expand(64, 64)])
    images = images[None].to(dtype)  # half input: OpenCV must still get float32
    depth = estimator.estimate(images)
    assert depth.dtype == torch.float32 and torch.isfinite(depth).all()
    assert {p.dtype for p in half.parameters()} == {dtype}

    pixel_values = preprocess(images)  # float32, what the estimator hands the network
    with torch.no_grad():
        reference = copy.deepcopy(cheap_module).to(dtype).float()(pixel_values)[:, 0]  # same rounded weights
    if probe_precision_caps("cpu").supports(dtype):
        assert seen == [dtype]  # native
        assert ((depth - reference).abs() <= _rounding_bound(half, pixel_values, dtype)).all()
    else:
        assert seen == [torch.float32]  # a float32 copy ran (the hook came along with the copy), not the module
        # The very same float32 kernels on the very same tensors: equal bit for bit.
        assert torch.equal(depth, reference)


def test_batch_depth_maps_are_found_by_input_file_name(tmp_path):
    from depth2img.source.batch_folder import find_depth_for

    (tmp_path / "photo_001.png").write_bytes(b"x")
    (tmp_path / "photo_002.TIFF").write_bytes(b"x")
    assert find_depth_for(tmp_path, "/inputs/photo_001.jpg") == tmp_path / "photo_001.png"
    assert find_depth_for(tmp_path, "photo_002.png") == tmp_path / "photo_002.TIFF"
    assert find_depth_for(tmp_path, "photo_003.png") is None


def test_a_batch_depth_map_that_cannot_be_read_is_an_error_naming_it(tmp_path):
    from depth2img.source.batch_folder import load_batch_depth

    cv2.imwrite(str(tmp_path / "good.png"), RAMP)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n cut short")
    path, depth = load_batch_depth(tmp_path, "/in/good.jpg")
    assert path == tmp_path / "good.png" and np.allclose(depth.depth, RAMP / 65535, atol=1e-6)
    assert load_batch_depth(tmp_path, "/in/none.jpg") is None
    with pytest.raises(Depth2ImgError, match="bad.png.*bad.jpg"):
        load_batch_depth(tmp_path, "/in/bad.jpg")


# ---- masks from a depth band, one scale for a batch folder (issue 9) -----------------------------------------


def test_inpaint_mask_is_the_band_of_the_whole_init_image_at_its_size():
    """Upload a left-to-right ramp (white = near) for a 128x96 init image: the band 50-100 is its right half."""
    image = Image.new("RGB", (128, 96))
    args = upload_args(mask_from_depth=True, mask_low=50.0)
    conditioner = DepthConditioner(args, JobGeometry(64, 64, resize_mode=1), init_images=[image])
    mask, note = conditioner.inpaint_mask()
    assert mask.mode == "L" and mask.size == (128, 96)  # the init image's, not the job's 64x64
    array = np.asarray(mask)
    assert (array[:, :60] == 0).all() and (array[:, 68:] == 255).all()
    assert "50-100" in note


def test_inpaint_mask_combines_with_the_painted_mask_and_follows_the_range(cheap_module):
    image = Image.new("RGB", (64, 48))
    painted = np.zeros((48, 64), np.uint8)
    painted[:24] = 255  # the top half
    args = upload_args(mask_from_depth=True, mask_low=50.0, mask_combine="intersect")
    mask, _ = DepthConditioner(args, JobGeometry(64, 48), init_images=[image]).inpaint_mask(Image.fromarray(painted))
    array = np.asarray(mask)
    assert (array[24:] == 0).all() and (array[:24, 40:] == 255).all() and (array[:24, :28] == 0).all()
    # On a given range 0..2 the ramp (0..1) is the lower half: 60-100 percent of it selects nothing.
    args = upload_args(mask_from_depth=True, mask_low=60.0, depth_range=(0.0, 2.0))
    with pytest.raises(Depth2ImgError, match="no pixel lies in the depth band"):
        DepthConditioner(args, JobGeometry(64, 48), init_images=[image]).inpaint_mask()


def test_inpaint_mask_auto_band_from_painted_strokes_and_a_painted_mask_of_another_size():
    image = Image.new("RGB", (64, 48))
    strokes = np.zeros((24, 32), np.uint8)  # half the image's size: stretched to it, as the WebUI fits masks
    strokes[10:14, 20:23] = 255  # strokes at about two thirds of the way to the near (right) end
    args = upload_args(mask_from_depth=True, mask_auto=True, mask_combine="replace")
    mask, note = DepthConditioner(args, JobGeometry(64, 48), init_images=[image]).inpaint_mask(Image.fromarray(strokes))
    array = np.asarray(mask)
    # The band around the strokes' depth (not Otsu's near half): neither end of the ramp.
    assert "(auto)" in note and (array[:, 40:46] == 255).all()
    assert (array[:, :32] == 0).all() and (array[:, -8:] == 0).all()


def test_inpaint_mask_needs_an_init_image_and_an_estimate_flattens_it(cheap_module):
    args = upload_args(mask_from_depth=True)
    with pytest.raises(Depth2ImgError, match="needs an init image"):
        DepthConditioner(args, JobGeometry(64, 48)).inpaint_mask()
    # Estimated: the depth of the whole init image (the band 0-100 keeps every pixel).
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    estimated = Depth2ImgArgs(enabled=True, mask_from_depth=True, mask_low=0.0, mask_high=100.0)
    estimator = CheckpointMidasEstimator.from_module(cheap_module, cache_key="cheap")
    conditioner = DepthConditioner(estimated, JobGeometry(64, 48), estimator=estimator, init_images=[image])
    mask, _ = conditioner.inpaint_mask()
    assert mask.size == (64, 48) and (np.asarray(mask) == 255).all() and conditioner.estimator_calls == 1


def test_folder_depth_scale_is_one_scale_over_every_readable_input(tmp_path):
    # Issue 15.5: the folder's post-processing scale (clip percentiles, min and max of every map) and its depth
    # range (the 0.5/99.5 percentiles of every map processed on that scale), computed here by hand.
    from depth2img.process.scale import folder_depth_scale

    maps = {"a": np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10),
            "b": np.linspace(2, 4, 100, dtype=np.float32).reshape(10, 10), "bad": None}  # fmt: skip
    pooled = np.concatenate([maps["a"].ravel(), maps["b"].ravel()]).astype(np.float64)
    inputs = [tmp_path / f"{name}.png" for name in maps]
    seen = []

    def progress(done, total, path):
        seen.append((done, total, path.stem))

    scale, (low, high) = folder_depth_scale(inputs, lambda path: maps[path.stem], {"gamma": 1.0}, progress=progress)
    assert (low, high) == pytest.approx(tuple(np.percentile(pooled, [0.5, 99.5])), rel=1e-6)
    assert 0.0 < low < 0.05 and 3.95 < high < 4.0
    assert scale.bounds == (0.0, 4.0) and scale.clip is None
    assert seen == [(0, 3, "a"), (1, 3, "b"), (2, 3, "bad")]
    # Inverted within the folder's bounds 0..4 (not each map's own: a would stay 0..1, b 2..4, the same range).
    _, inverted = folder_depth_scale(inputs[:2], lambda path: maps[path.stem], {"invert_depth": True})
    assert inverted == pytest.approx(tuple(np.percentile(4.0 - pooled, [0.5, 99.5])), rel=1e-6)
    assert inverted[1] > 3.95 and inverted[0] < 0.05
    # Clipped at the folder's 10th/90th percentiles: a's lowest values and b's highest are cut at the same values.
    clipped_scale, _ = folder_depth_scale(inputs[:2], lambda path: maps[path.stem], {"clip_near": 90.0,
                                                                                     "clip_far": 10.0})
    assert clipped_scale.clip == pytest.approx(tuple(np.percentile(pooled, [10, 90])), rel=1e-6)
    with pytest.raises(Depth2ImgError, match="no input"):
        folder_depth_scale(inputs[2:], lambda path: None, {})
    with pytest.raises(Depth2ImgError, match="flat.*'per-image'"):
        folder_depth_scale(inputs[:1], lambda path: np.ones((4, 4), np.float32), {})


@pytest.mark.parametrize(
    "geometry",
    [JobGeometry(64, 64, resize_mode=1), JobGeometry(64, 64, resize_mode=2),
     JobGeometry(64, 64, resize_mode=1, crop_region=(30, 0, 94, 64))],  # the last: inpaint "only masked"
    ids=["crop", "fill", "only-masked"],
)
def test_inpainting_estimated_depth_lines_up_as_the_same_map_uploaded(cheap_module, geometry):
    # A 150x64 init image: the estimator's map has its sides rounded to multiples of 32, another aspect. Fitted
    # by its own aspect (and the only-masked crop box scaled per axis, then filled by the crop's aspect), the depth
    # moved against the picture and its mask; it must condition as the same map at the picture's size (15.2).
    from depth2img.source.depth_kinds import DecodedDepth

    init = Image.fromarray(np.random.default_rng(5).integers(0, 255, (64, 150, 3), dtype=np.uint8))
    estimator = CheckpointMidasEstimator.from_module(cheap_module, "tiny")
    estimated_map = estimate_image(estimator, DepthCache(), init, "#ffffff")
    assert estimated_map.shape[1] * 64 != estimated_map.shape[0] * 150  # the case: another aspect
    uploaded_map = fitting.resize(estimated_map, 150, 64)
    conditionings = []
    for depth in (None, DecodedDepth(uploaded_map, "inverse")):
        conditioner = DepthConditioner(Depth2ImgArgs(enabled=True), geometry, estimator=estimator,
                                       init_images=[init], inpainting=True, depth=depth)
        conditionings.append(conditioner.conditioning(torch.zeros(1, 4, 8, 8)))
    assert torch.allclose(conditionings[0], conditionings[1], atol=1e-4)
