"""The tiny depth checkpoint loads strictly into Stability's ldm and agrees with diffusers (environment b)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tests.references import reference  # noqa: E402

reference("ldm")
reference("open_clip")

from omegaconf import OmegaConf  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from depth2img.base.paths import cache_dir  # noqa: E402
from depth2img.export import ldm_export, tiny  # noqa: E402

pytestmark = pytest.mark.ldm


@pytest.fixture(scope="module")
def checkpoint():
    return tiny.build_tiny_depth_checkpoint(cache_dir() / "fixtures")


@pytest.fixture(scope="module")
def state_dict(checkpoint):
    return load_file(str(checkpoint))


@pytest.fixture(scope="module")
def ldm_model(checkpoint, state_dict):
    """LatentDepth2ImageDiffusion from the tiny YAML, MiDaS built without reading weights from disk."""
    from ldm.modules.midas import api
    from ldm.util import instantiate_from_config

    tiny.register_tiny_open_clip_arch()
    config = OmegaConf.load(checkpoint.with_suffix(".yaml"))
    saved = api.ISL_PATHS["dpt_hybrid"]
    api.ISL_PATHS["dpt_hybrid"] = None  # DPTDepthModel(path=None) loads nothing
    try:
        model = instantiate_from_config(config.model)
    finally:
        api.ISL_PATHS["dpt_hybrid"] = saved
    # what ldm registered itself, before the checkpoint overwrites it
    own_buffers = {name: getattr(model, name).clone() for name in ldm_export.schedule_buffers()}
    result = model.load_state_dict(state_dict, strict=True)
    model.eval()
    model.cond_stage_model.device = "cpu"  # FrozenOpenCLIPEmbedder defaults to "cuda" for its tokens
    return model, own_buffers, result


def test_strict_load_and_schedule_buffers_bit_identical(ldm_model, state_dict):
    model, own_buffers, result = ldm_model
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    assert set(model.state_dict()) == set(state_dict)
    for name, buffer in own_buffers.items():
        assert torch.equal(buffer, state_dict[name]), name
    assert model.depth_model.model.pretrained.model.blocks[0].attn.qkv.weight.abs().sum() > 0


def _diffusers_unet(state_dict, checkpoint):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_single_file(
        state_dict, original_config=str(checkpoint.with_suffix(".yaml")), local_files_only=True
    )
    return unet.eval()


def test_ldm_unet_matches_diffusers_unet(ldm_model, state_dict, checkpoint):
    model = ldm_model[0]
    unet = _diffusers_unet(state_dict, checkpoint)
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 4, 8, 8, generator=generator)
    depth = torch.rand(2, 1, 8, 8, generator=generator) * 2 - 1
    context = torch.randn(2, 77, tiny.TINY_TEXT_WIDTH, generator=generator)
    t = torch.tensor([3, 801])
    with torch.no_grad():
        # ldm's own hybrid path: c_concat joins the latent, c_crossattn is the context
        ldm_out = model.apply_model(latent, t, {"c_concat": [depth], "c_crossattn": [context]})
        hf_out = unet(torch.cat([latent, depth], dim=1), t, context).sample
        hf_flat_depth = unet(torch.cat([latent, torch.zeros_like(depth)], dim=1), t, context).sample
    assert ldm_out.shape == (2, 4, 8, 8)
    assert (ldm_out - hf_out).abs().max().item() <= 1e-5
    assert (hf_out - hf_flat_depth).abs().mean() > 1e-3  # the depth channel matters


def test_ldm_text_tower_matches_diffusers_text_encoder(ldm_model, state_dict):
    import open_clip
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    model = ldm_model[0]
    prompts = ["a photo of a cat on a chair", ""]
    with torch.no_grad():
        ldm_emb = model.get_learned_conditioning(prompts)
        # the no-op last block: layer="last" gives the same embeddings as "penultimate"
        model.cond_stage_model.layer_idx = 0
        try:
            ldm_last = model.get_learned_conditioning(prompts)
        finally:
            model.cond_stage_model.layer_idx = 1
    assert torch.equal(ldm_emb, ldm_last)

    text = CLIPTextModel(CLIPTextConfig(**tiny.tiny_text_config())).eval()
    converted = convert_open_clip_checkpoint(text, state_dict)
    if not hasattr(text, "text_model"):
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    keep = set(text.state_dict())
    text.load_state_dict({k: v for k, v in converted.items() if k in keep}, strict=False)
    with torch.no_grad():
        hf_emb = text(open_clip.tokenize(prompts)).last_hidden_state
    assert ldm_emb.shape == (2, 77, tiny.TINY_TEXT_WIDTH)
    assert (ldm_emb - hf_emb).abs().max().item() <= 1e-5


def test_ldm_vae_matches_diffusers_vae(ldm_model, state_dict, checkpoint):
    from diffusers import AutoencoderKL

    model = ldm_model[0]
    vae = AutoencoderKL.from_single_file(
        state_dict, original_config=str(checkpoint.with_suffix(".yaml")), local_files_only=True
    ).eval()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ldm_mean = model.first_stage_model.encode(image).mean
        hf_mean = vae.encode(image).latent_dist.mean
        ldm_image = model.decode_first_stage(ldm_mean * model.scale_factor)
        hf_image = vae.decode(ldm_mean).sample
    assert (ldm_mean - hf_mean).abs().max().item() <= 1e-5
    assert (ldm_image - hf_image).abs().max().item() <= 1e-5
