"""diffusers -> LDM export, checked against diffusers' own LDM -> diffusers converters (both environments)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from depth2img.base.paths import SHIPPED_DEPTH_CONFIG
from depth2img.export import ldm_export, tiny


@pytest.fixture(scope="module")
def models():
    return tiny.build_tiny_models(seed=0, depth_estimator=False)


@pytest.fixture(scope="module")
def tiny_config(models):
    return ldm_export.ldm_config_for(
        models["unet"].config,
        models["vae"].config,
        models["text_encoder"].config,
        open_clip_arch=tiny.TINY_OPEN_CLIP_ARCH,
    )


def _sd2_text_config():
    """SD 2's text_encoder/config.json sizes (OpenCLIP ViT-H-14 minus its last block)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=23,
        max_position_embeddings=77,
        hidden_act="gelu",
        projection_dim=512,
    )


def test_unet_round_trip_through_diffusers_from_single_file(models, tiny_config, tmp_path):
    from diffusers import UNet2DConditionModel

    unet = models["unet"]
    ldm_sd = ldm_export.unet_to_ldm(unet.state_dict())
    assert len(ldm_sd) == len(unet.state_dict())
    assert all(k.startswith("model.diffusion_model.") for k in ldm_sd)
    # ldm's flat numbering: level 1's attention, the Upsample after an attention block, the middle block
    for key in (
        "input_blocks.1.1.proj_in.weight",
        "input_blocks.2.0.op.weight",
        "input_blocks.3.0.skip_connection.weight",
        "output_blocks.1.2.conv.weight",
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "out.2.weight",
        "time_embed.2.bias",
    ):
        assert "model.diffusion_model." + key in ldm_sd, key

    yaml_path = tmp_path / "tiny.yaml"
    yaml_path.write_text(OmegaConf.to_yaml(OmegaConf.create(tiny_config)))
    back = UNet2DConditionModel.from_single_file(
        ldm_sd, original_config=str(yaml_path), local_files_only=True
    )
    back.eval()
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 5, 8, 8, generator=generator)
    context = torch.randn(2, 77, tiny.TINY_TEXT_WIDTH, generator=generator)
    timesteps = torch.tensor([10, 700])
    with torch.no_grad():
        expected = unet(sample, timesteps, context).sample
        got = back(sample, timesteps, context).sample
    assert expected.abs().mean() > 1e-2
    assert (expected - got).abs().max().item() <= 1e-6


def test_tiny_unet_depth_channel_changes_output(models):
    """The fixture's point: the 5th (depth) input channel must matter."""
    unet = models["unet"]
    generator = torch.Generator().manual_seed(2)
    sample = torch.randn(1, 5, 8, 8, generator=generator)
    context = torch.randn(1, 77, tiny.TINY_TEXT_WIDTH, generator=generator)
    other_depth = sample.clone()
    other_depth[:, 4] = -other_depth[:, 4]
    with torch.no_grad():
        a = unet(sample, torch.tensor([500]), context).sample
        b = unet(other_depth, torch.tensor([500]), context).sample
    assert (a - b).abs().mean() > 1e-3
    assert models["unet"].conv_out.weight.abs().sum() > 0


def test_vae_round_trip_through_diffusers_from_single_file(models, tiny_config):
    from diffusers import AutoencoderKL

    vae = models["vae"]
    ldm_sd = ldm_export.vae_to_ldm(vae.state_dict())
    assert len(ldm_sd) == len(vae.state_dict())
    # ldm's mid-block attention is a 1x1 conv; the decoder's levels count from the bottom
    assert ldm_sd["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert ldm_sd["first_stage_model.decoder.mid.attn_1.proj_out.weight"].ndim == 4
    assert torch.equal(
        ldm_sd["first_stage_model.decoder.up.3.block.0.conv1.weight"],
        vae.state_dict()["decoder.up_blocks.0.resnets.0.conv1.weight"],
    )
    back = AutoencoderKL.from_single_file(ldm_sd, original_config=tiny_config, local_files_only=True).eval()
    assert back.config.scaling_factor == tiny.TINY_SCALE_FACTOR
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(image).latent_dist.mean
        latent_back = back.encode(image).latent_dist.mean
        decoded = vae.decode(latent).sample
        decoded_back = back.decode(latent).sample
    assert latent.shape == (1, 4, 8, 8)  # H/8 like the real VAE
    assert (latent - latent_back).abs().max().item() <= 1e-6
    assert (decoded - decoded_back).abs().max().item() <= 1e-6


def test_text_encoder_round_trip_through_convert_open_clip_checkpoint(models):
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModel

    text = models["text_encoder"]
    ldm_sd = ldm_export.text_encoder_to_ldm(text.state_dict(), open_clip_layers=tiny.TINY_TEXT_LAYERS)
    prefix = "cond_stage_model.model."
    width = tiny.TINY_TEXT_WIDTH
    assert ldm_sd[prefix + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * width, width)
    assert ldm_sd[prefix + "positional_embedding"].shape == (77, width)
    assert ldm_sd[prefix + "text_projection"].shape == (width, width)
    assert ldm_sd[prefix + "logit_scale"].ndim == 0
    # the block diffusers dropped (SD 2 reads the penultimate layer) is written as a residual no-op
    last = f"{prefix}transformer.resblocks.{tiny.TINY_TEXT_LAYERS - 1}."
    assert not ldm_sd[last + "attn.out_proj.weight"].any() and not ldm_sd[last + "mlp.c_proj.weight"].any()
    assert torch.equal(ldm_sd[last + "ln_1.weight"], torch.ones(width))
    assert not any(f"resblocks.{tiny.TINY_TEXT_LAYERS}." in k for k in ldm_sd)

    back = CLIPTextModel(text.config).eval()
    converted = convert_open_clip_checkpoint(back, ldm_sd, prefix=prefix)
    if not hasattr(back, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    expected_keys = set(back.state_dict())
    # what diffusers maps but CLIPTextModel lacks: the no-op block and OpenCLIP's projection
    extra = set(converted) - expected_keys
    assert all(f"layers.{tiny.TINY_TEXT_LAYERS - 1}." in k or k == "text_projection.weight" for k in extra)
    missing = back.load_state_dict({k: v for k, v in converted.items() if k in expected_keys}, strict=False)
    assert [k for k in missing.missing_keys if "position_ids" not in k] == []

    ids = torch.randint(0, tiny.TINY_VOCAB_SIZE, (2, 77), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = text(ids, output_hidden_states=True)
        got = back(ids, output_hidden_states=True)
    assert (expected.last_hidden_state - got.last_hidden_state).abs().max().item() <= 1e-6
    for a, b in zip(expected.hidden_states, got.hidden_states, strict=True):
        assert (a - b).abs().max().item() <= 1e-6


def test_schedule_buffers_match_diffusers_scaled_linear():
    from diffusers import DDPMScheduler

    buffers = ldm_export.schedule_buffers()
    assert set(buffers) == {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
    }
    assert all(b.dtype == torch.float32 and b.shape == (1000,) for b in buffers.values())
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    assert torch.allclose(buffers["betas"], scheduler.betas, rtol=1e-6, atol=0)
    assert torch.allclose(buffers["alphas_cumprod"], scheduler.alphas_cumprod, rtol=1e-5, atol=0)
    assert buffers["alphas_cumprod_prev"][0] == 1.0
    assert torch.isfinite(buffers["posterior_log_variance_clipped"]).all()


UNET_FIELDS = (
    "in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types", "layers_per_block",
    "cross_attention_dim", "attention_head_dim", "use_linear_projection", "transformer_layers_per_block",
)


def _per_level(value, levels: int) -> list:
    """diffusers writes some fields as one value or as a list per level: compare them as lists."""
    return list(value) if isinstance(value, (list, tuple)) else [value] * levels


def assert_converts_back(ldm_config: dict, unet_config, vae_config) -> None:
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    levels = len(unet_config["block_out_channels"])
    unet_back = create_unet_diffusers_config_from_ldm(ldm_config, {})
    for name in UNET_FIELDS:
        assert _per_level(unet_back[name], levels) == _per_level(unet_config[name], levels), name
    vae_back = create_vae_diffusers_config_from_ldm(ldm_config, {})
    for name in ("block_out_channels", "latent_channels", "layers_per_block", "in_channels", "out_channels"):
        assert _per_level(vae_back[name], 1) == _per_level(vae_config[name], 1), name


@pytest.mark.parametrize(
    "levels, heads",
    [
        (("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), [2, 4, 8]),  # no attention at level 0
        (("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"), [4, 4, 4]),  # ldm's num_heads branch
    ],
)
def test_unet_levels_without_attention_and_head_counts_convert_back(models, levels, heads):
    """Configs the tiny fixture does not have: diffusers' LDM converter must read our YAML back as the same UNet."""
    up = tuple(t.replace("Down", "Up") for t in reversed(levels))
    unet = {
        **models["unet"].config,
        "block_out_channels": (32, 64, 128),
        "down_block_types": levels,
        "up_block_types": up,
        "attention_head_dim": heads,
        "use_linear_projection": True,
    }
    config = ldm_export.ldm_config_for(unet, models["vae"].config, models["text_encoder"].config, open_clip_arch="x")
    params = config["model"]["params"]["unet_config"]["params"]
    assert ("num_heads" in params) == (len({c // h for c, h in zip((32, 64, 128), heads, strict=True)}) > 1)
    assert_converts_back(config, unet, models["vae"].config)


def test_ldm_config_for_sd2_depth_sizes_equals_shipped_yaml():
    """diffusers' own LDM -> diffusers conversion of the shipped YAML's configs, exported back, gives it."""
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    shipped = OmegaConf.to_container(OmegaConf.load(SHIPPED_DEPTH_CONFIG))
    unet_config = create_unet_diffusers_config_from_ldm(shipped, {})
    vae_config = create_vae_diffusers_config_from_ldm(shipped, {})
    assert unet_config["in_channels"] == 5 and unet_config["attention_head_dim"] == [5, 10, 20, 20]
    scheduler_config = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
    }
    exported = ldm_export.ldm_config_for(unet_config, vae_config, _sd2_text_config(), scheduler_config)
    assert exported == shipped


def test_ldm_config_for_tiny_names_the_arch_and_no_weights(tiny_config):
    params = tiny_config["model"]["params"]
    assert params["cond_stage_config"]["params"] == {
        "arch": tiny.TINY_OPEN_CLIP_ARCH,
        "version": None,
        "freeze": True,
        "layer": "penultimate",
    }
    unet = params["unet_config"]["params"]
    assert unet["attention_resolutions"] == [2, 1]
    assert unet["num_head_channels"] == tiny.TINY_NUM_HEAD_CHANNELS
    assert unet["context_dim"] == tiny.TINY_TEXT_WIDTH and unet["in_channels"] == 5
    assert params["first_stage_config"]["params"]["ddconfig"]["ch_mult"] == [1, 1, 1, 1]


def test_ldm_config_for_refuses_what_ldm_cannot_express(models):
    unet, vae, text = models["unet"].config, models["vae"].config, models["text_encoder"].config
    with pytest.raises(ValueError, match="open_clip_arch"):
        ldm_export.ldm_config_for(unet, vae, text)
    with pytest.raises(ValueError, match="class_embed_type"):
        ldm_export.ldm_config_for({**unet, "class_embed_type": "timestep"}, vae, text, open_clip_arch="x")
    with pytest.raises(ValueError, match="v_prediction"):
        ldm_export.ldm_config_for(unet, vae, text, {"prediction_type": "v_prediction"}, open_clip_arch="x")


def test_unknown_unet_key_is_an_error(models):
    state = dict(models["unet"].state_dict())
    state["class_embedding.linear_1.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="class_embedding"):
        ldm_export.unet_to_ldm(state)


# ---------------------------------------------------------------------------------------------------------
# A diffusers folder as StableDiffusionDepth2ImgPipeline saves it
# ---------------------------------------------------------------------------------------------------------


def _save_pipeline_folder(folder, models, depth_estimator):
    from diffusers import DDIMScheduler, StableDiffusionDepth2ImgPipeline
    from transformers import DPTImageProcessor

    from depth2img.checkpoint.tokenizer import load_clip_tokenizer

    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=models["vae"],
        text_encoder=models["text_encoder"],
        tokenizer=load_clip_tokenizer(),
        unet=models["unet"],
        scheduler=scheduler,
        depth_estimator=depth_estimator,
        feature_extractor=DPTImageProcessor(),
    )
    pipe.save_pretrained(str(folder))
    return folder


def test_export_diffusers_folder(models, tmp_path):
    from transformers import DPTForDepthEstimation

    from depth2img.estimate import midas

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        depth_estimator = DPTForDepthEstimation(midas.dpt_hybrid_config()).eval()
    folder = _save_pipeline_folder(tmp_path / "tiny-depth-diffusers", models, depth_estimator)
    for part in (
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
        "depth_estimator",
        "feature_extractor",
    ):
        assert (folder / part).is_dir(), part

    out = tmp_path / "out" / "exported.safetensors"
    written = ldm_export.export_diffusers_folder(folder, out, open_clip_arch=tiny.TINY_OPEN_CLIP_ARCH)
    assert written == out
    yaml_path = out.with_suffix(".yaml")
    assert yaml_path.is_file()
    # The reference: diffusers' own LDM -> diffusers config conversion of the written YAML gives the models back.
    written_config = OmegaConf.to_container(OmegaConf.load(yaml_path))
    assert_converts_back(written_config, models["unet"].config, models["vae"].config)
    cond = written_config["model"]["params"]["cond_stage_config"]["params"]
    assert cond["arch"] == tiny.TINY_OPEN_CLIP_ARCH and cond["layer"] == "penultimate"

    with safe_open(str(out), framework="pt") as f:
        keys = set(f.keys())
        unet_key = "model.diffusion_model.input_blocks.0.0.weight"
        assert f.get_tensor(unet_key).shape[1] == 5
        assert torch.equal(f.get_tensor(unet_key), models["unet"].conv_in.weight)
        assert torch.equal(f.get_tensor("alphas_cumprod"), ldm_export.schedule_buffers()["alphas_cumprod"])
    groups = {
        "model.diffusion_model.": len(models["unet"].state_dict()),
        "first_stage_model.": len(models["vae"].state_dict()),
        midas.MIDAS_PREFIX: len(midas.hf_to_ldm_state_dict(depth_estimator.state_dict())),
    }
    for prefix, count in groups.items():
        assert sum(k.startswith(prefix) for k in keys) == count, prefix
    # 2 diffusers layers + the no-op block (12 tensors each), embeddings and ln_final (4), projection, scale
    assert sum(k.startswith("cond_stage_model.model.") for k in keys) == 12 * tiny.TINY_TEXT_LAYERS + 6
    assert sum(k.startswith(midas.MIDAS_PREFIX) for k in keys) == 368
    assert {k for k in keys if "." not in k} == set(ldm_export.schedule_buffers())

    # never overwrite: neither the checkpoint nor its YAML
    before = out.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="exported.safetensors"):
        ldm_export.export_diffusers_folder(folder, out, open_clip_arch=tiny.TINY_OPEN_CLIP_ARCH)
    assert out.stat().st_mtime_ns == before
    out.unlink()
    with pytest.raises(FileExistsError, match="exported.yaml"):
        ldm_export.export_diffusers_folder(folder, out, open_clip_arch=tiny.TINY_OPEN_CLIP_ARCH)


def test_export_refuses_a_folder_that_is_not_a_depth_model(models, tmp_path):
    from diffusers import UNet2DConditionModel

    folder = tmp_path / "sd2"
    models["vae"].save_pretrained(str(folder / "vae"))
    models["text_encoder"].save_pretrained(str(folder / "text_encoder"))
    models["unet"].save_pretrained(str(folder / "unet"))
    out = tmp_path / "x.safetensors"
    with pytest.raises(ValueError, match="depth_estimator"):
        ldm_export.export_diffusers_folder(folder, out)

    plain = UNet2DConditionModel(**{**tiny.tiny_unet_config(), "in_channels": 4})
    plain.save_pretrained(str(folder / "unet"))
    with pytest.raises(ValueError, match="in_channels=4"):
        ldm_export.export_diffusers_folder(folder, out)
    with pytest.raises(ValueError, match="not a folder"):
        ldm_export.export_diffusers_folder(tmp_path / "missing", out)
    assert not out.exists()
