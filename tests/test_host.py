"""The WebUI adapter's logic without the WebUI: DepthConditioner, the estimator over a host's module, the API."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from depth2img.api import estimate_response, parse_estimate_request
from depth2img.args import Depth2ImgArgs
from depth2img.conditioning import FLAT_CONDITIONING, depth_conditioning
from depth2img.depth_cache import DepthCache
from depth2img.host import Depth2ImgError, DepthConditioner, JobGeometry, ModuleMidasEstimator


class MidasModule(torch.nn.Module):
    """Stands in for ldm's MiDaSInference: the same network (transformers' DPT), [B, 1, h, w] out."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        from depth2img.midas import predict_depth

        return predict_depth(self.model, pixel_values)[:, None]


@pytest.fixture(scope="module")
def midas_module(tiny_checkpoint):
    from safetensors.torch import load_file

    from depth2img.midas import load_midas_from_state_dict

    state = load_file(str(tiny_checkpoint))
    return MidasModule(load_midas_from_state_dict({k: v for k, v in state.items() if k.startswith("depth_model.")}))


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
        Depth2ImgArgs(enabled=True), JobGeometry(64, 64), estimator=ModuleMidasEstimator(midas_module, "t")
    )
    with pytest.raises(Depth2ImgError, match="upload a depth map"):
        conditioner.conditioning(torch.zeros(1, 4, 8, 8))


def test_batch_estimates_once_and_equals_the_native_arithmetic(midas_module):
    from depth2img.midas import preprocess

    cache = DepthCache()
    estimator = ModuleMidasEstimator(midas_module, "tiny")
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


def test_inpainting_depth_comes_from_the_whole_unfilled_image(midas_module):
    cache = DepthCache()
    estimator = ModuleMidasEstimator(midas_module, "tiny")
    init = Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    conditioner = DepthConditioner(
        Depth2ImgArgs(enabled=True), JobGeometry(64, 48), estimator=estimator, cache=cache, init_images=[init],
        inpainting=True,
    )
    filled = torch.zeros(2, 3, 48, 64)  # what the WebUI would hand over after "fill": ignored for depth
    cond = conditioner.conditioning(torch.zeros(2, 4, 6, 8), filled)
    assert cond.shape == (2, 1, 6, 8) and cond.std() > 0 and cache.estimator_calls == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_midas_weights_run_or_fall_back(midas_module, dtype):
    import copy

    half = copy.deepcopy(midas_module).to(dtype)
    estimator = ModuleMidasEstimator(half, "half")
    images = torch.zeros(1, 3, 64, 64, dtype=dtype)  # half input: OpenCV must still get float32
    depth = estimator.estimate(images)
    assert depth.dtype == torch.float32 and depth.shape[0] == 1 and torch.isfinite(depth).all()
    # Reference: the same rounded weights in float32 (what the fallback runs, bit for bit).
    reference = ModuleMidasEstimator(copy.deepcopy(half).float(), "full").estimate(images.float())
    from depth2img.estimators import probe_precision_caps

    if not probe_precision_caps("cpu").supports(dtype):
        assert torch.equal(depth, reference)
    else:  # native reduced precision through a random 123M-parameter network: the same map, not the same bits
        # (measured here: float16 on torch 2.13 gives 0.92)
        correlation = torch.corrcoef(torch.stack([depth.flatten(), reference.flatten()]))[0, 1]
        assert correlation > 0.8


def test_estimate_api_validation_and_response():
    from io import BytesIO

    buffer = BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    image_b64 = base64.b64encode(buffer.getvalue()).decode()
    image, settings = parse_estimate_request({"image": image_b64, "invert": True, "gamma": 2})
    assert image.size == (8, 8) and settings.invert and settings.gamma == 2.0
    for body, field in [({"image": "%%"}, "image"), ({}, "image"), ({"image": image_b64, "size": 1}, "size"),
                        ({"image": image_b64, "blur": -1}, "blur"), ([], "object")]:
        with pytest.raises(Depth2ImgError, match=field):
            parse_estimate_request(body)
    response = estimate_response(np.linspace(0, 2, 64, dtype=np.float32).reshape(8, 8))
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(response["depth"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16 and response["max"] == 2.0 and response["bit_depth"] == 16


def test_batch_depth_maps_are_found_by_input_file_name(tmp_path):
    from depth2img.host import find_depth_for

    (tmp_path / "photo_001.png").write_bytes(b"x")
    (tmp_path / "photo_002.TIFF").write_bytes(b"x")
    assert find_depth_for(tmp_path, "/inputs/photo_001.jpg") == tmp_path / "photo_001.png"
    assert find_depth_for(tmp_path, "photo_002.png") == tmp_path / "photo_002.TIFF"
    assert find_depth_for(tmp_path, "photo_003.png") is None
