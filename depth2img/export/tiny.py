"""A tiny SD 2 depth checkpoint: the real architecture and LDM key layout, tiny sizes, random weights.

Tests use it, and so does the CLI's embedded demo. The parts are built as diffusers/transformers models
with seeded random weights and written through depth2img.export.ldm_export, so every build exercises the export.
MiDaS is full size: ldm's MiDaSInference architecture is fixed (DPT-Hybrid, ~123M parameters).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from depth2img.base.paths import cache_dir
from depth2img.estimate import midas
from depth2img.export import ldm_export

# UNet (ldm names): two levels, attention on both, 8 channels per head, linear projections as SD 2.
TINY_MODEL_CHANNELS = 32
TINY_CHANNEL_MULT = (1, 2)
TINY_NUM_RES_BLOCKS = 1
TINY_NUM_HEAD_CHANNELS = 8
TINY_SAMPLE_SIZE = 8  # latent side; 64 px images by default
# VAE: four levels like the real one, so the latent is H/8.
TINY_VAE_CH = 32
TINY_VAE_CH_MULT = (1, 1, 1, 1)
TINY_VAE_NUM_RES_BLOCKS = 1
TINY_LATENT_CHANNELS = 4
TINY_SCALE_FACTOR = 0.18215
# Text tower: OpenCLIP counts 3 blocks; diffusers' CLIPTextModel keeps 2 (SD 2 uses the penultimate).
TINY_TEXT_WIDTH = 64
TINY_TEXT_HEADS = TINY_TEXT_WIDTH // 64  # ViT-H-14's convention: 64 channels per head
TINY_TEXT_LAYERS = 3
TINY_TEXT_MLP = 4 * TINY_TEXT_WIDTH
TINY_VOCAB_SIZE = 49408
TINY_CONTEXT_LENGTH = 77
# The OpenCLIP arch named in the tiny YAML; register_tiny_open_clip_arch() teaches open_clip its sizes.
TINY_OPEN_CLIP_ARCH = "depth2img-tiny"
TINY_CHECKPOINT_NAME = "tiny-depth.safetensors"
# Bump when the builder changes what it writes: cached fixtures of another version are rebuilt.
FIXTURE_VERSION = "2"
_METADATA_KEY = "depth2img_tiny_fixture"


def tiny_unet_config() -> dict:
    """UNet2DConditionModel kwargs."""
    return {
        "sample_size": TINY_SAMPLE_SIZE,
        "in_channels": 5,  # 4 latent + 1 depth
        "out_channels": TINY_LATENT_CHANNELS,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": tuple(TINY_MODEL_CHANNELS * m for m in TINY_CHANNEL_MULT),
        "layers_per_block": TINY_NUM_RES_BLOCKS,
        "cross_attention_dim": TINY_TEXT_WIDTH,
        # diffusers' legacy name for heads per level (as in SD 2's own config)
        "attention_head_dim": tuple(
            TINY_MODEL_CHANNELS * m // TINY_NUM_HEAD_CHANNELS for m in TINY_CHANNEL_MULT
        ),
        "use_linear_projection": True,
        "norm_num_groups": 32,
    }


def tiny_vae_config() -> dict:
    """AutoencoderKL kwargs."""
    levels = len(TINY_VAE_CH_MULT)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(TINY_VAE_CH * m for m in TINY_VAE_CH_MULT),
        "layers_per_block": TINY_VAE_NUM_RES_BLOCKS,
        "latent_channels": TINY_LATENT_CHANNELS,
        "norm_num_groups": 32,
        "sample_size": TINY_SAMPLE_SIZE * 8,
        "scaling_factor": TINY_SCALE_FACTOR,
    }


def tiny_text_config() -> dict:
    """CLIPTextConfig kwargs (token ids as in SD 2's text_encoder/config.json)."""
    return {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": TINY_TEXT_WIDTH,
        "intermediate_size": TINY_TEXT_MLP,
        "num_attention_heads": TINY_TEXT_HEADS,
        "num_hidden_layers": TINY_TEXT_LAYERS - 1,
        "max_position_embeddings": TINY_CONTEXT_LENGTH,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": TINY_TEXT_WIDTH,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


def tiny_open_clip_config() -> dict:
    """open_clip's model config for TINY_OPEN_CLIP_ARCH (its vision tower is built, then deleted by ldm)."""
    return {
        "embed_dim": TINY_TEXT_WIDTH,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "head_width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": TINY_CONTEXT_LENGTH,
            "vocab_size": TINY_VOCAB_SIZE,
            "width": TINY_TEXT_WIDTH,
            "heads": TINY_TEXT_HEADS,
            "layers": TINY_TEXT_LAYERS,
        },
    }


def register_tiny_open_clip_arch() -> str:
    """Make open_clip know TINY_OPEN_CLIP_ARCH (call in any process where ldm/the WebUI loads the tiny YAML).

    Uses open_clip's public add_model_config with a JSON file in the cache folder. Idempotent.
    """
    import open_clip  # lazily: it imports torchvision

    if open_clip.get_model_config(TINY_OPEN_CLIP_ARCH) is None:
        folder = cache_dir() / "open_clip_configs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{TINY_OPEN_CLIP_ARCH}.json"
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(tiny_open_clip_config(), indent=2), encoding="utf-8")
        os.replace(tmp, path)
        open_clip.add_model_config(path)
    return TINY_OPEN_CLIP_ARCH


def randomize(model, generator: torch.Generator):
    """Seeded random weights for every parameter, in sorted name order; in place.

    The libraries' own inits differ between versions (diffusers 0.36/0.42, transformers 4.30/5.x), so the
    fixture would differ per environment; this draws the same values everywhere (a common name prefix, such
    as transformers 4's "text_model.", does not change the order). Scales keep activations O(1): weights
    N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), biases N(0, 0.02^2). It also gives random values to the
    layers SD initialises at zero (ldm's zero_module: the UNet's conv_out, the transformers' proj_out, the
    res blocks' second conv): at zero the output would ignore the input, and depth could not change it.
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            param = params[name]
            noise = torch.randn(tuple(param.shape), generator=generator, dtype=torch.float32)
            if param.ndim >= 2:
                value = noise / math.sqrt(math.prod(param.shape[1:]))
            elif name.endswith(".weight"):  # 1-D weights are group/layer norm scales
                value = 1.0 + 0.1 * noise
            else:
                value = 0.02 * noise
            param.copy_(value.to(param.dtype))
    return model


def build_tiny_models(seed: int = 0, depth_estimator: bool = True) -> dict:
    """Tiny diffusers/transformers components with seeded random weights (global RNG state untouched).

    Returns {"unet", "vae", "text_encoder"[, "depth_estimator"]}, all in eval mode.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.random.fork_rng(devices=[]):
        models = {
            "unet": UNet2DConditionModel(**tiny_unet_config()),
            "vae": AutoencoderKL(**tiny_vae_config()),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**tiny_text_config())),
        }
        generator = torch.Generator().manual_seed(seed)
        for name in ("unet", "vae", "text_encoder"):
            randomize(models[name], generator)
        if depth_estimator:
            from transformers import DPTForDepthEstimation

            models["depth_estimator"] = DPTForDepthEstimation(midas.dpt_hybrid_config())
            midas.randomize_for_fixture(models["depth_estimator"], seed)
    return {name: model.eval() for name, model in models.items()}


def _fixture_tag(seed: int) -> str:
    return f"{FIXTURE_VERSION}:{seed}"


def _is_current(path: Path, seed: int) -> bool:
    from safetensors import safe_open

    if not (path.is_file() and path.with_suffix(".yaml").is_file()):
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(_METADATA_KEY) == _fixture_tag(seed)
    except Exception:  # a truncated or foreign file: rebuild it
        return False


def build_tiny_depth_checkpoint(out_dir: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Write `<out_dir>/tiny-depth.safetensors` and `<out_dir>/tiny-depth.yaml`; return the checkpoint path.

    Cached: rebuilt only when missing or built by another seed or builder version. Written through temp
    files and renames, so parallel test processes never see a half-written file. `out_dir` defaults to the
    cache folder.
    """
    out_dir = Path(out_dir) if out_dir is not None else cache_dir()
    path = out_dir / TINY_CHECKPOINT_NAME
    if _is_current(path, seed):
        return path
    models = build_tiny_models(seed)
    state_dict, config = ldm_export.models_to_ldm(
        models["unet"],
        models["vae"],
        models["text_encoder"],
        models["depth_estimator"],
        scheduler_config=None,
        open_clip_arch=TINY_OPEN_CLIP_ARCH,
        open_clip_version=None,  # open_clip loads no pretrained weights
        open_clip_layers=TINY_TEXT_LAYERS,
    )
    return ldm_export.write_ldm_checkpoint(
        state_dict, config, path, overwrite=True, metadata={_METADATA_KEY: _fixture_tag(seed)}
    )
