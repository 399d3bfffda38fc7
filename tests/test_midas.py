"""The checkpoint's MiDaS on transformers' DPT: key map, strict load, forward, preprocessing, estimator.

Runs in both environments (transformers 4.30.2 / 5.x). Parity with Stability's ldm code is in
test_midas_ldm_parity.py (environment b).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402

from depth2img.estimate import (
    interface,  # noqa: E402
    midas,
    registry,  # noqa: E402
)
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator
from depth2img.estimate.interface import PrecisionCaps  # noqa: E402


def tiny_hybrid_config():
    """A DPT-Hybrid of the same structure, tiny (fast): for the forward and estimator tests."""
    return transformers.DPTConfig(
        is_hybrid=True,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        layer_norm_eps=1e-6,
        image_size=384,
        patch_size=16,
        backbone_out_indices=[0, 0, 0, 1],
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[16, 32, 32, 32],
        fusion_hidden_size=16,
        use_auxiliary_head=False,
        backbone_featmap_shape=[1, 64, 24, 24],
        neck_ignore_stages=[0, 1],
        backbone_config={
            "global_padding": "same",
            "layer_type": "bottleneck",
            "depths": [1, 1, 1],
            "hidden_sizes": [16, 32, 64, 128],
            "embedding_size": 8,
            "num_groups": 4,
            "out_features": ["stage1", "stage2", "stage3"],
            "embedding_dynamic_padding": True,
        },
    )


def make_tiny(seed: int = 0, dtype: torch.dtype = torch.float32):
    model = transformers.DPTForDepthEstimation(tiny_hybrid_config()).eval()
    return midas.randomize_for_fixture(model, seed).to(dtype)


def scene(height: int, width: int, batch: int = 1) -> torch.Tensor:
    """A structured image in [-1, 1] (gradients, two boxes), [B, 3, H, W]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    img = torch.stack([xx, yy, torch.sin(6 * xx) * torch.cos(4 * yy)])
    img[:, height // 4 : height // 2, width // 8 : width // 2] = 0.8
    img[:, 2 * height // 3 :, 3 * width // 5 :] = -0.7
    return img.unsqueeze(0).repeat(batch, 1, 1, 1)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()


@pytest.fixture(scope="module")
def full_hf():
    """Full-size DPT-Hybrid (the key map is tied to it), seeded random weights."""
    model = transformers.DPTForDepthEstimation(midas.dpt_hybrid_config()).eval()
    return midas.randomize_for_fixture(model, seed=0)


@pytest.fixture(scope="module")
def full_sd(full_hf):
    return full_hf.state_dict()


@pytest.fixture(scope="module")
def tiny():
    return make_tiny()


# ---- key map ---------------------------------------------------------------------------------------------


def test_hf_to_ldm_gives_ldm_key_set(full_sd):
    ldm = midas.hf_to_ldm_state_dict(full_sd)
    # ldm's DPTDepthModel(vitb_rn50_384) has 368 tensors; transformers' model has 414 (qkv split, no ViT head).
    assert len(full_sd) == 414
    assert len(ldm) == 368
    for key in (
        "pretrained.model.patch_embed.backbone.stem.conv.weight",
        "pretrained.model.blocks.11.attn.qkv.weight",
        "pretrained.act_postprocess4.4.weight",
        "scratch.refinenet1.resConfUnit2.conv1.bias",
        "scratch.output_conv.4.weight",
        *midas.LDM_ONLY_KEYS,
    ):
        assert key in ldm, key
    assert ldm["pretrained.model.blocks.0.attn.qkv.weight"].shape == (2304, 768)
    assert ldm["pretrained.model.head.weight"].shape == (1000, 768)
    assert not ldm["pretrained.model.head.weight"].any()  # no originals given: zeros (never used by MiDaS)
    # refinenet4 is transformers' first fusion layer
    assert torch.equal(
        ldm["scratch.refinenet4.out_conv.weight"], full_sd["neck.fusion_stage.layers.0.projection.weight"]
    )


def test_round_trip_hf_ldm_hf_is_identity(full_sd):
    back = midas.ldm_to_hf_state_dict(midas.hf_to_ldm_state_dict(full_sd))
    assert set(back) == set(full_sd)
    for key, value in full_sd.items():
        assert torch.equal(back[key], value), key


def test_round_trip_ldm_hf_ldm_is_identity(full_sd):
    gen = torch.Generator().manual_seed(1)
    head = {
        "pretrained.model.head.weight": torch.randn(1000, 768, generator=gen),
        "pretrained.model.head.bias": torch.randn(1000, generator=gen),
    }
    ldm = midas.hf_to_ldm_state_dict(full_sd, ldm_only=head)
    back = midas.hf_to_ldm_state_dict(midas.ldm_to_hf_state_dict(ldm), ldm_only=ldm)
    assert set(back) == set(ldm)
    for key, value in ldm.items():
        assert torch.equal(back[key], value), key


def test_qkv_split_order(full_sd):
    ldm = midas.hf_to_ldm_state_dict(full_sd)
    qkv = ldm["pretrained.model.blocks.3.attn.qkv.weight"]
    hf = midas.ldm_to_hf_state_dict(ldm)
    for i, part in enumerate(("query", "key", "value")):
        expected = qkv[i * 768 : (i + 1) * 768]
        assert torch.equal(hf[f"dpt.encoder.layer.3.attention.attention.{part}.weight"], expected)


def test_unknown_or_incomplete_keys_are_errors(full_sd):
    with pytest.raises(ValueError, match="pretrained.model.bogus.weight"):
        midas.ldm_to_hf_state_dict({"pretrained.model.bogus.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="neck.bogus"):
        midas.hf_to_ldm_state_dict({"neck.bogus": torch.zeros(1)})
    partial = {k: v for k, v in full_sd.items() if not k.endswith("layer.5.attention.attention.key.bias")}
    with pytest.raises(ValueError, match="blocks.5.attn.qkv.bias"):
        midas.hf_to_ldm_state_dict(partial)


# ---- strict load ----------------------------------------------------------------------------------------


def _checkpoint(full_sd) -> dict:
    ckpt = {midas.MIDAS_PREFIX + k: v for k, v in midas.hf_to_ldm_state_dict(full_sd).items()}
    ckpt["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(1)  # the rest of a depth checkpoint
    return ckpt


def test_load_from_checkpoint_state_dict(full_hf, full_sd):
    model = midas.load_midas_from_state_dict(_checkpoint(full_sd))
    assert isinstance(model, transformers.DPTForDepthEstimation)
    assert not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(full_sd)
    assert all(torch.equal(loaded[k], v) for k, v in full_sd.items())
    assert all(not p.requires_grad for p in model.parameters())
    x = scene(64, 96)  # small input: the loaded network runs, like the original
    assert torch.equal(midas.predict_depth(model, x), midas.predict_depth(full_hf, x))


def test_load_dtype_and_errors(full_sd):
    model = midas.load_midas_from_state_dict(_checkpoint(full_sd), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ckpt = _checkpoint(full_sd)
    del ckpt[midas.MIDAS_PREFIX + "scratch.layer2_rn.weight"]
    with pytest.raises(RuntimeError, match=r"neck\.convs\.1\.weight"):
        midas.load_midas_from_state_dict(ckpt)
    with pytest.raises(ValueError, match="not a Stable Diffusion 2 depth checkpoint"):
        midas.load_midas_from_state_dict({"model.diffusion_model.x": torch.zeros(1)})


# ---- forward --------------------------------------------------------------------------------------------


def test_predict_depth_equals_transformers_forward_at_square_size(tiny):
    x = scene(384, 384, batch=2)
    with torch.no_grad():
        reference = tiny(x).predicted_depth
    ours = midas.predict_depth(tiny, x)
    assert ours.shape == (2, 384, 384)
    # same computation; ours fuses qkv and attention as timm does, so only float rounding differs
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


@pytest.mark.parametrize("size", [(384, 512), (320, 448), (512, 384)])
def test_predict_depth_non_square(tiny, size):
    depth = midas.predict_depth(tiny, scene(*size))
    assert depth.shape == (1, *size)
    assert torch.isfinite(depth).all() and depth.std() > 0


def test_non_square_agrees_with_square_crop(tiny):
    """Sanity check of the token grid: the depth of a 384x512 image, on its left 384x384, resembles the depth of
    that crop (attention is global, so not equal) far more than the crop shifted by 64 px does. Measured: 0.91
    vs 0.27; with the token grid reshaped as (width, height) and transposed (a garbled grid), 0.71."""
    img = scene(384, 512)
    full = midas.predict_depth(tiny, img)[0, 32:-32, 32:352]
    crop = midas.predict_depth(tiny, img[..., :384])[0, 32:-32, 32:-32]
    shifted = midas.predict_depth(tiny, torch.roll(img[..., :384], 64, dims=-1))[0, 32:-32, 32:-32]
    assert corr(full, crop) > 0.85
    assert corr(full, crop) > corr(full, shifted) + 0.4


def test_predict_depth_rejects_sizes_not_multiple_of_32(tiny):
    with pytest.raises(ValueError, match="multiples of 32"):
        midas.predict_depth(tiny, scene(384, 500))


def test_randomize_for_fixture_is_seeded_and_output_varies():
    a, b, c = make_tiny(0), make_tiny(0), make_tiny(1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    depth = midas.predict_depth(a, scene(128, 160))
    assert depth.min() >= 0.5 - 1e-4  # positive head bias and weights: never clipped by the final ReLU
    assert depth.std() > 0.05


# ---- preprocessing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, expected",
    [
        ((512, 512), (384, 384)),
        ((512, 768), (384, 576)),
        ((768, 512), (576, 384)),
        ((300, 500), (224, 384)),  # width's scale (0.768) is closer to 1 than height's (1.28)
        ((300, 600), (384, 768)),
        ((200, 800), (96, 384)),
        ((384, 384), (384, 384)),
        ((10, 4000), (32, 384)),  # ldm would ask OpenCV for height 0 and crash
    ],
)
def test_midas_input_size(size, expected):
    assert midas.midas_input_size(*size) == expected


def test_preprocess_at_network_size_is_identity():
    x = scene(384, 384, batch=2)
    out = midas.preprocess(x)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 384, 384)
    assert torch.allclose(out, x, atol=1e-6)


def test_preprocess_resizes_with_bicubic():
    x = scene(512, 768)
    out = midas.preprocess(x)
    assert out.shape == (1, 3, 384, 576)
    # Bicubic of the [0, 1] image, normalised back to [-1, 1]: close to an area average, slight overshoot only.
    ref = torch.nn.functional.interpolate(x, size=(384, 576), mode="bicubic", align_corners=False)
    assert (out - ref).abs().mean() < 0.01


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_preprocess_accepts_any_float_dtype(dtype):
    x = scene(300, 500).to(dtype)  # float16 went to OpenCV as-is once: "src data type = 23 is not supported"
    out = midas.preprocess(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, midas.preprocess(x.to(torch.float32)))


def test_preprocess_pil_and_3d_tensor():
    x = scene(96, 160)
    arr = ((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    pil = Image.fromarray(arr)
    from_pil = midas.preprocess([pil, pil])
    from_tensor = midas.preprocess(torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1)
    assert from_pil.shape == (2, 3, 224, 384)  # width 160 -> 384 is the smaller change
    assert torch.allclose(from_pil[0], from_tensor[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        midas.preprocess(torch.zeros(1, 4, 64, 64))


# ---- estimator: device and dtype ------------------------------------------------------------------------


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_estimator_float32_weights_any_input_dtype(tiny, input_dtype):
    est = CheckpointMidasEstimator(tiny, caps=PrecisionCaps())
    x = scene(256, 320, batch=2).to(input_dtype)
    depth = est.estimate(x)
    assert depth.dtype == torch.float32 and depth.device == x.device
    assert depth.shape == (2, 320, 384)  # network resolution (see midas_input_size), the caller resizes
    # The reference: transformers' own forward, at the network's square size where preprocessing is the identity
    # on [-1, 1] images (mean = std = 0.5), on the same (rounded) input values.
    square = scene(384, 384).to(input_dtype)
    with torch.no_grad():
        reference = tiny(square.float()).predicted_depth
    ours = est.estimate(square)
    assert ours.dtype == torch.float32
    # float32 throughout; only the fused attention differs from transformers' (float rounding, ~1e-6 relative)
    assert (ours - reference).abs().max() <= 1e-5 * reference.abs().max()


def test_estimator_runs_in_bfloat16_where_supported():
    model = make_tiny(dtype=torch.bfloat16)
    est = CheckpointMidasEstimator(model, caps=PrecisionCaps(float16=False, bfloat16=True))
    net, _, dtype = est.runtime()
    assert net is model and dtype == torch.bfloat16
    depth = est.estimate(scene(128, 128))
    assert depth.dtype == torch.float32
    reference = midas.predict_depth(make_tiny(), midas.preprocess(scene(128, 128)))
    assert (depth - reference).abs().max() < 0.05 * reference.abs().max()


def test_estimator_falls_back_to_float32_where_float16_is_missing():
    model = make_tiny(dtype=torch.float16)
    est = CheckpointMidasEstimator(model, caps=PrecisionCaps(float16=False, bfloat16=True))
    x = scene(128, 192).to(torch.float16)
    depth = est.estimate(x)
    net, _, dtype = est.runtime()
    assert dtype == torch.float32 and net is not model
    assert {p.dtype for p in model.parameters()} == {torch.float16}  # the caller's model is left as it was
    assert est.runtime()[0] is net  # the float32 copy is made once
    # the float32 network with the float16 weights (loaded another way: float32 rounding may differ slightly)
    same_weights = make_tiny(dtype=torch.float16).float()
    expected = midas.predict_depth(same_weights, midas.preprocess(x))
    assert (depth - expected).abs().max() <= 1e-5 * expected.abs().max()
    assert depth.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_probed_caps_agree_with_the_real_network(dtype):
    """The probe says 'runs' exactly when the network runs in that dtype on this CPU (torch 2.1 has no
    float16 bilinear upsampling on the CPU; later releases do)."""
    supported = interface.probe_precision_caps("cpu").supports(dtype)
    model = make_tiny(dtype=dtype)
    try:
        depth = midas.predict_depth(model, scene(64, 64).to(dtype))
        ran = bool(torch.isfinite(depth).all())
    except RuntimeError:
        ran = False
    assert supported == ran


def test_estimator_ignores_autocast(tiny):
    est = CheckpointMidasEstimator(tiny, caps=PrecisionCaps())
    x = scene(128, 128)
    plain = est.estimate(x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = est.estimate(x)
    # Equal bit for bit: with autocast off inside, the very same float32 kernels run on the very same tensors.
    assert torch.equal(plain, under_autocast)


def test_estimator_pil_input_and_cache_key(tiny):
    est = CheckpointMidasEstimator(tiny)
    img = Image.new("RGB", (200, 120), (30, 140, 220))
    depth = est.estimate(img)
    assert depth.shape == (1, 224, 384) and depth.device.type == "cpu" and depth.dtype == torch.float32
    assert est.cache_key.startswith("checkpoint-midas:")
    assert CheckpointMidasEstimator(make_tiny(0)).cache_key == est.cache_key
    assert CheckpointMidasEstimator(make_tiny(1)).cache_key != est.cache_key
    # a fine-tune that changed one deep layer only is another estimator for the depth cache
    tuned = make_tiny(0)
    with torch.no_grad():
        tuned.dpt.encoder.layer[-1].output.dense.bias[0] += 1e-3
    assert CheckpointMidasEstimator(tuned).cache_key != est.cache_key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_estimator_result_on_callers_device(tiny):
    est = CheckpointMidasEstimator(tiny)  # weights on the CPU
    x = scene(128, 128).cuda()
    assert est.estimate(x).device == x.device
    gpu_est = CheckpointMidasEstimator(make_tiny().cuda())
    out = gpu_est.estimate(x.cpu().half())
    assert out.device.type == "cpu" and out.dtype == torch.float32


# ---- registry -------------------------------------------------------------------------------------------


def test_registry_lists_checkpoint_midas():
    infos = registry.list_estimators()
    assert [i.name for i in infos] == ["checkpoint-midas"]
    assert infos[0].available and infos[0].reason == ""
    assert infos[0].kind == "inverse" and infos[0].source == "checkpoint"
    info = registry.get_estimator_info("checkpoint-midas", has_depth_checkpoint=False)
    assert not info.available and "depth checkpoint" in info.reason


def test_registry_unknown_name_names_the_choices():
    with pytest.raises(ValueError, match="choices: checkpoint-midas"):
        registry.get_estimator_info("zoedepth")


def test_create_estimator(full_sd):
    est = registry.create_estimator("checkpoint-midas", _checkpoint(full_sd))
    assert isinstance(est, interface.DepthEstimator) and est.name == "checkpoint-midas"
    assert torch.equal(est.model.head.head[4].weight, full_sd["head.head.4.weight"])
    with pytest.raises(ValueError, match="unavailable: needs a Stable Diffusion 2 depth checkpoint"):
        registry.create_estimator("checkpoint-midas", {"model.diffusion_model.x": torch.zeros(1)})
