"""Export a diffusers-format SD 2 depth model as an LDM single file (what the WebUI and Stability's ldm load).

diffusers ships only the LDM -> diffusers direction (`diffusers.loaders.single_file_utils`). The reverse is
written here by hand, in this one module, after the reference script in the diffusers repository
(`scripts/convert_diffusers_to_original_stable_diffusion.py`). That script hard-codes SD's four levels and
two res blocks per level; here the key maps are derived from the state dict itself, so the same code
exports the real model and the tiny test fixture.

The single file holds, under ldm's attribute names:
  model.diffusion_model.*    UNet (5 input channels: 4 latent + 1 depth)
  first_stage_model.*        VAE
  cond_stage_model.model.*   OpenCLIP text tower (FrozenOpenCLIPEmbedder)
  depth_model.model.*        MiDaS DPT-Hybrid (via depth2img.estimate.midas)
  betas, alphas_cumprod, ... LatentDiffusion's schedule buffers (ldm loads with strict=True)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depth2img.base.files import FILE_MODE
from depth2img.checkpoint.load import TEXT_PREFIX, yaml_beside
from depth2img.estimate import midas

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

# Stability's SD 2 schedule (v2-midas-inference.yaml); diffusers calls it "scaled_linear".
DEFAULT_LINEAR_START = 0.00085
DEFAULT_LINEAR_END = 0.0120
DEFAULT_TIMESTEPS = 1000

# OpenCLIP ViT-H-14's text tower: what FrozenOpenCLIPEmbedder builds when the YAML names no arch.
VIT_H_14_TEXT = {"width": 1024, "heads": 16, "layers": 24, "vocab_size": 49408, "context_length": 77}


# ---------------------------------------------------------------------------------------------------------
# Key renaming
# ---------------------------------------------------------------------------------------------------------


def _rename(state_dict: dict, prefix_pairs: list[tuple[str, str]], suffix_fn, what: str) -> dict:
    """Rename each key by its (diffusers prefix -> ldm prefix) pair; suffix_fn(kind, suffix) fixes the rest.

    prefix_pairs holds (diffusers_prefix, ldm_prefix, kind). Every key must match exactly one prefix: an
    unknown key means a model ldm cannot express, so it is an error, not something to drop silently.
    """
    out = {}
    for key, value in state_dict.items():
        matches = [(hf, ldm, kind) for hf, ldm, kind in prefix_pairs if key.startswith(hf)]
        if len(matches) != 1:
            raise ValueError(f"{what}: no ldm equivalent for diffusers key '{key}'")
        hf, ldm, kind = matches[0]
        out[ldm + suffix_fn(kind, key[len(hf) :])] = value
    return out


def _count(keys, prefix: str) -> int:
    """How many numbered children `prefix.N.` the keys mention (e.g. down_blocks.0.resnets.)."""
    found = {k[len(prefix) :].split(".", 1)[0] for k in keys if k.startswith(prefix)}
    return len(found)


_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _unet_suffix(kind: str, suffix: str) -> str:
    if kind == "resnet":
        module, rest = suffix.split(".", 1)
        return f"{_UNET_RESNET[module]}.{rest}"
    # Transformer2DModel and ldm's SpatialTransformer use the same inner names (norm, proj_in,
    # transformer_blocks.N.attn1.to_q, ff.net.0.proj, ...), so attention keys keep their suffix.
    return suffix


def unet_to_ldm(unet_state_dict: dict) -> dict:
    """diffusers UNet2DConditionModel state dict -> ldm UNetModel keys under `model.diffusion_model.`.

    ldm numbers its blocks flat: input_blocks[0] is conv_in, then per level `layers` x (ResBlock
    [, SpatialTransformer]) and a Downsample (not after the last level); output_blocks hold per level
    `layers + 1` x (ResBlock [, SpatialTransformer]) with the Upsample appended to the level's last one.
    """
    keys = list(unet_state_dict)
    n_down = _count(keys, "down_blocks.")
    n_up = _count(keys, "up_blocks.")
    layers = _count(keys, "down_blocks.0.resnets.")
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0.", "plain"),
        ("time_embedding.linear_2.", "time_embed.2.", "plain"),
        ("conv_in.", "input_blocks.0.0.", "plain"),
        ("conv_norm_out.", "out.0.", "plain"),
        ("conv_out.", "out.2.", "plain"),
        ("mid_block.resnets.0.", "middle_block.0.", "resnet"),
        ("mid_block.attentions.0.", "middle_block.1.", "plain"),
        ("mid_block.resnets.1.", "middle_block.2.", "resnet"),
    ]
    for i in range(n_down):
        for j in range(layers):
            index = 1 + i * (layers + 1) + j
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{index}.0.", "resnet"))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{index}.1.", "plain"))
        pairs.append(
            (f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (layers + 1)}.0.op.", "plain")
        )
    for i in range(n_up):
        has_attention = any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys)
        for j in range(layers + 1):
            index = i * (layers + 1) + j
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{index}.0.", "resnet"))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{index}.1.", "plain"))
        # The Upsample sits after the ResBlock, and after the SpatialTransformer when the level has one.
        last = i * (layers + 1) + layers
        pairs.append(
            (f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{last}.{2 if has_attention else 1}.", "plain")
        )
    converted = _rename(unet_state_dict, pairs, _unet_suffix, "UNet")
    return {UNET_PREFIX + k: v for k, v in converted.items()}


_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
    # names of diffusers < 0.14, still found in old saved folders
    "query": "q",
    "key": "k",
    "value": "v",
    "proj_attn": "proj_out",
}


def _vae_suffix(kind: str, suffix: str) -> str:
    if kind == "resnet":
        return suffix.replace("conv_shortcut.", "nin_shortcut.")
    if kind == "attention":
        module, param = suffix.rsplit(".", 1)
        return f"{_VAE_ATTENTION[module]}.{param}"
    return suffix


def vae_to_ldm(vae_state_dict: dict) -> dict:
    """diffusers AutoencoderKL state dict -> ldm AutoencoderKL keys under `first_stage_model.`.

    ldm numbers the decoder's levels from the bottom (up.{n-1} runs first), diffusers from the top. The
    mid-block attention is Linear in diffusers and a 1x1 Conv2d in ldm: weights get two trailing 1-dims.
    """
    keys = list(vae_state_dict)
    n_down = _count(keys, "encoder.down_blocks.")
    n_up = _count(keys, "decoder.up_blocks.")
    pairs = [(f"{name}.", f"{name}.", "plain") for name in ("quant_conv", "post_quant_conv")]
    for part in ("encoder", "decoder"):
        pairs += [
            (f"{part}.conv_in.", f"{part}.conv_in.", "plain"),
            (f"{part}.conv_out.", f"{part}.conv_out.", "plain"),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", "plain"),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", "resnet"),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", "resnet"),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", "attention"),
        ]
    for i in range(n_down):
        for j in range(_count(keys, f"encoder.down_blocks.{i}.resnets.")):
            pairs.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", "resnet"))
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", "plain"))
    for i in range(n_up):
        level = n_up - 1 - i
        for j in range(_count(keys, f"decoder.up_blocks.{i}.resnets.")):
            pairs.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{level}.block.{j}.", "resnet"))
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{level}.upsample.", "plain"))
    converted = _rename(vae_state_dict, pairs, _vae_suffix, "VAE")
    for key, value in converted.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            converted[key] = value.reshape(*value.shape, 1, 1)
    return {VAE_PREFIX + k: v for k, v in converted.items()}


_TEXT_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def text_encoder_to_ldm(
    clip_text_state_dict: dict,
    open_clip_layers: int | None = None,
    text_projection: torch.Tensor | None = None,
) -> dict:
    """transformers CLIPTextModel state dict -> OpenCLIP text tower keys under `cond_stage_model.model.`.

    SD 2 conditions on OpenCLIP's penultimate layer, so diffusers' CLIPTextModel keeps one block fewer
    than the OpenCLIP tower (23 of ViT-H-14's 24); `open_clip_layers` defaults to that +1. ldm needs the
    missing block's weights to load strictly but never runs it (layer="penultimate"). We write it as a
    residual no-op: LayerNorms at identity (weight 1, bias 0) and every projection zero, so the block returns
    its input unchanged. A config switched to layer="last" then still gives the same embeddings, instead of
    whatever a copied or random block would add.

    `text_projection` (OpenCLIP's [width, embed_dim] matrix, unused for SD 2 conditioning) defaults to the
    transposed `text_projection.weight` of a CLIPTextModelWithProjection, else the identity; `logit_scale`
    gets OpenCLIP's initial value. Both exist only so the keys match.
    """
    # transformers >= 5.6 dropped the "text_model." level from CLIPTextModel's keys; older ones have it.
    sd = {k.removeprefix("text_model."): v for k, v in clip_text_state_dict.items()}
    sd.pop("embeddings.position_ids", None)  # a buffer in transformers 4.x, not a weight
    if text_projection is None and "text_projection.weight" in sd:
        text_projection = sd["text_projection.weight"].T.contiguous()
    sd.pop("text_projection.weight", None)

    width = sd["embeddings.token_embedding.weight"].shape[1]
    hf_layers = _count(sd, "encoder.layers.")
    open_clip_layers = hf_layers + 1 if open_clip_layers is None else open_clip_layers
    if open_clip_layers < hf_layers:
        raise ValueError(
            f"open_clip_layers={open_clip_layers} is fewer than the text encoder's {hf_layers} layers"
        )

    out = {
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"),
        "ln_final.bias": sd.pop("final_layer_norm.bias"),
    }
    for i in range(hf_layers):
        hf, oc = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for param in ("weight", "bias"):
            # OpenCLIP's nn.MultiheadAttention keeps q, k, v stacked in one in_proj (q first).
            qkv = [sd.pop(f"{hf}self_attn.{name}_proj.{param}") for name in ("q", "k", "v")]
            out[f"{oc}attn.in_proj_{param}"] = torch.cat(qkv, dim=0)
            for hf_name, oc_name in _TEXT_LAYER.items():
                out[f"{oc}{oc_name}.{param}"] = sd.pop(f"{hf}{hf_name}.{param}")
    if sd:
        raise ValueError(f"text encoder: no OpenCLIP equivalent for keys {sorted(sd)[:5]}")

    mlp_width = out["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    dtype = out["token_embedding.weight"].dtype
    for i in range(hf_layers, open_clip_layers):
        out.update(
            {f"transformer.resblocks.{i}.{k}": v for k, v in _noop_resblock(width, mlp_width, dtype).items()}
        )

    if text_projection is None:
        text_projection = torch.eye(width, dtype=dtype)
    out["text_projection"] = text_projection
    out["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=dtype)
    return {TEXT_PREFIX + k: v for k, v in out.items()}


def _noop_resblock(width: int, mlp_width: int, dtype: torch.dtype) -> dict:
    """An OpenCLIP ResidualAttentionBlock that returns its input (see text_encoder_to_ldm)."""
    return {
        "ln_1.weight": torch.ones(width, dtype=dtype),
        "ln_1.bias": torch.zeros(width, dtype=dtype),
        "attn.in_proj_weight": torch.zeros(3 * width, width, dtype=dtype),
        "attn.in_proj_bias": torch.zeros(3 * width, dtype=dtype),
        "attn.out_proj.weight": torch.zeros(width, width, dtype=dtype),
        "attn.out_proj.bias": torch.zeros(width, dtype=dtype),
        "ln_2.weight": torch.ones(width, dtype=dtype),
        "ln_2.bias": torch.zeros(width, dtype=dtype),
        "mlp.c_fc.weight": torch.zeros(mlp_width, width, dtype=dtype),
        "mlp.c_fc.bias": torch.zeros(mlp_width, dtype=dtype),
        "mlp.c_proj.weight": torch.zeros(width, mlp_width, dtype=dtype),
        "mlp.c_proj.bias": torch.zeros(width, dtype=dtype),
    }


def depth_estimator_to_ldm(dpt_state_dict: dict) -> dict:
    """transformers DPTForDepthEstimation (DPT-Hybrid) state dict -> ldm MiDaS under `depth_model.model.`."""
    return {midas.MIDAS_PREFIX + k: v for k, v in midas.hf_to_ldm_state_dict(dpt_state_dict).items()}


def schedule_buffers(
    linear_start: float = DEFAULT_LINEAR_START,
    linear_end: float = DEFAULT_LINEAR_END,
    timesteps: int = DEFAULT_TIMESTEPS,
    v_posterior: float = 0.0,
) -> dict:
    """The persistent buffers of ldm's DDPM.register_schedule (beta_schedule="linear"), computed the same way.

    ldm builds them in float64 (torch.linspace of sqrt-betas, squared, then numpy) and stores float32; we
    repeat those steps so the values are bit-identical to what ldm would register itself.
    """
    betas = (torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2).numpy()
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = (1 - v_posterior) * betas * (1.0 - alphas_cumprod_prev) / (
        1.0 - alphas_cumprod
    ) + v_posterior * betas
    arrays = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in arrays.items()}


# ---------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------


def _get(config: Any, name: str, default: Any = None) -> Any:
    """Read a field from a diffusers FrozenDict, a transformers PretrainedConfig or a plain dict."""
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def _require(what: str, config: Any, expected: dict) -> None:
    """ldm hard-codes these choices; a model that differs cannot be expressed as an ldm YAML."""
    wrong = {k: _get(config, k) for k, v in expected.items() if _get(config, k, v) != v}
    if wrong:
        raise ValueError(f"{what} config differs from what ldm supports: {wrong} (ldm needs {expected})")


def ldm_config_for(
    unet_config: Any,
    vae_config: Any,
    text_config: Any,
    scheduler_config: Any = None,
    open_clip_arch: str | None = None,
    open_clip_version: str | None = None,
) -> dict:
    """An ldm YAML (as a nested dict) equivalent to diffusers/transformers configs of a depth model.

    Mirrors models/configs/v2-midas-inference.yaml field by field; for SD 2 depth's sizes it equals it.
    `open_clip_arch` names the OpenCLIP architecture of the text tower; it may be omitted only for
    ViT-H-14's sizes (FrozenOpenCLIPEmbedder's default, as in the shipped YAML). `open_clip_version` is
    written when an arch is given (None: open_clip loads no pretrained weights).
    """
    sched = scheduler_config or {}
    _check_expressible(unet_config, vae_config, text_config, sched)
    return {
        "model": {
            "base_learning_rate": 5.0e-07,
            "target": "ldm.models.diffusion.ddpm.LatentDepth2ImageDiffusion",
            "params": {
                "linear_start": _get(sched, "beta_start", DEFAULT_LINEAR_START),
                "linear_end": _get(sched, "beta_end", DEFAULT_LINEAR_END),
                "num_timesteps_cond": 1,
                "log_every_t": 200,
                "timesteps": _get(sched, "num_train_timesteps", DEFAULT_TIMESTEPS),
                "first_stage_key": "jpg",
                "cond_stage_key": "txt",
                "image_size": _get(unet_config, "sample_size"),
                "channels": _get(vae_config, "latent_channels"),
                "cond_stage_trainable": False,
                "conditioning_key": "hybrid",
                "scale_factor": _get(vae_config, "scaling_factor"),
                "monitor": "val/loss_simple_ema",
                "finetune_keys": None,
                "use_ema": False,
                "depth_stage_config": {
                    "target": "ldm.modules.midas.api.MiDaSInference",
                    "params": {"model_type": "dpt_hybrid"},
                },
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": _unet_params(unet_config),
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.AutoencoderKL",
                    "params": _first_stage_params(vae_config),
                },
                "cond_stage_config": {
                    "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                    "params": _cond_stage_params(text_config, open_clip_arch, open_clip_version),
                },
            },
        }
    }


def _check_expressible(unet_config: Any, vae_config: Any, text_config: Any, sched: Any) -> None:
    """Refuse configs that ldm's classes cannot express (they would load, and compute something else)."""
    _require(
        "UNet",
        unet_config,
        {
            "act_fn": "silu",
            "norm_num_groups": 32,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
            "center_input_sample": False,
            "class_embed_type": None,
            "addition_embed_type": None,
            "upcast_attention": False,
            "resnet_time_scale_shift": "default",
        },
    )
    _require("VAE", vae_config, {"act_fn": "silu", "norm_num_groups": 32, "mid_block_add_attention": True})
    _require("text encoder", text_config, {"hidden_act": "gelu", "layer_norm_eps": 1e-5})
    beta_schedule = _get(sched, "beta_schedule", "scaled_linear")
    if beta_schedule != "scaled_linear":
        raise ValueError(
            f"scheduler beta_schedule '{beta_schedule}': ldm's 'linear' equals only 'scaled_linear'"
        )
    prediction = _get(sched, "prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(f"scheduler prediction_type '{prediction}': the depth model predicts epsilon")


def _head_params(channels: list[int], unet_config: Any) -> dict:
    """ldm sizes attention by channels per head (SD 2) or by a number of heads (SD 1); diffusers by heads."""
    # diffusers' (misnamed) attention_head_dim holds the number of heads per level for SD 2.
    heads = _get(unet_config, "num_attention_heads") or _get(unet_config, "attention_head_dim")
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    head_channels = {c // h for c, h in zip(channels, heads, strict=True)}
    if len(head_channels) == 1 and all(c % h == 0 for c, h in zip(channels, heads, strict=True)):
        return {"num_head_channels": head_channels.pop()}
    if len(set(heads)) == 1:
        return {"num_heads": heads[0]}
    raise ValueError(f"UNet heads per level {heads} fit neither ldm's num_head_channels nor num_heads")


def _unet_params(unet_config: Any) -> dict:
    channels = list(_get(unet_config, "block_out_channels"))
    model_channels = channels[0]
    down_types = list(_get(unet_config, "down_block_types"))
    # ldm tests `ds in attention_resolutions`, ds doubling per level; listed high to low like Stability.
    attention_resolutions = sorted((2**i for i, t in enumerate(down_types) if "CrossAttn" in t), reverse=True)
    depth = _get(unet_config, "transformer_layers_per_block", 1)
    if isinstance(depth, (list, tuple)):
        if len(set(depth)) != 1:
            raise ValueError(f"UNet transformer_layers_per_block {depth} varies per level; ldm needs one value")
        depth = depth[0]
    return {
        "use_checkpoint": True,
        "image_size": 32,  # unused by ldm's UNetModel
        "in_channels": _get(unet_config, "in_channels"),
        "out_channels": _get(unet_config, "out_channels"),
        "model_channels": model_channels,
        "attention_resolutions": attention_resolutions,
        "num_res_blocks": _get(unet_config, "layers_per_block"),
        "channel_mult": [c // model_channels for c in channels],
        **_head_params(channels, unet_config),
        "use_spatial_transformer": True,
        "use_linear_in_transformer": bool(_get(unet_config, "use_linear_projection")),
        "transformer_depth": depth,
        "context_dim": _get(unet_config, "cross_attention_dim"),
        "legacy": False,
    }


def _first_stage_params(vae_config: Any) -> dict:
    vae_channels = list(_get(vae_config, "block_out_channels"))
    return {
        "embed_dim": _get(vae_config, "latent_channels"),
        "monitor": "val/rec_loss",
        "ddconfig": {
            "double_z": True,
            "z_channels": _get(vae_config, "latent_channels"),
            "resolution": 256,
            "in_channels": _get(vae_config, "in_channels"),
            "out_ch": _get(vae_config, "out_channels"),
            "ch": vae_channels[0],
            "ch_mult": [c // vae_channels[0] for c in vae_channels],
            "num_res_blocks": _get(vae_config, "layers_per_block"),
            "attn_resolutions": [],
            "dropout": 0.0,
        },
        "lossconfig": {"target": "torch.nn.Identity"},
    }


def _cond_stage_params(text_config: Any, open_clip_arch: str | None, open_clip_version: str | None) -> dict:
    params: dict = {"freeze": True, "layer": "penultimate"}
    if open_clip_arch is not None:
        return {"arch": open_clip_arch, "version": open_clip_version, **params}
    text_sizes = {
        "width": _get(text_config, "hidden_size"),
        "heads": _get(text_config, "num_attention_heads"),
        "layers": _get(text_config, "num_hidden_layers") + 1,  # diffusers drops the last block (penultimate)
        "vocab_size": _get(text_config, "vocab_size"),
        "context_length": _get(text_config, "max_position_embeddings"),
    }
    if text_sizes != VIT_H_14_TEXT:
        raise ValueError(f"text encoder sizes {text_sizes} are not ViT-H-14's: pass open_clip_arch")
    return params


# ---------------------------------------------------------------------------------------------------------
# Whole checkpoints
# ---------------------------------------------------------------------------------------------------------


def models_to_ldm(
    unet,
    vae,
    text_encoder,
    depth_estimator,
    scheduler_config: Any = None,
    open_clip_arch: str | None = None,
    open_clip_version: str | None = None,
    open_clip_layers: int | None = None,
) -> tuple[dict, dict]:
    """Loaded diffusers/transformers models -> (ldm state dict, ldm config dict)."""
    config = ldm_config_for(
        unet.config, vae.config, text_encoder.config, scheduler_config, open_clip_arch, open_clip_version
    )
    params = config["model"]["params"]
    state_dict = {
        **unet_to_ldm(unet.state_dict()),
        **vae_to_ldm(vae.state_dict()),
        **text_encoder_to_ldm(text_encoder.state_dict(), open_clip_layers),
        **depth_estimator_to_ldm(depth_estimator.state_dict()),
        **schedule_buffers(params["linear_start"], params["linear_end"], params["timesteps"]),
    }
    return state_dict, config


def _refuse_overwrite(out_path: Path) -> None:
    for path in (out_path, yaml_beside(out_path)):
        if path.exists():
            raise FileExistsError(
                f"{path} already exists; refusing to overwrite it (remove it or pick another name)"
            )


def write_ldm_checkpoint(
    state_dict: dict,
    config: dict,
    out_path: str | os.PathLike,
    overwrite: bool = False,
    metadata: dict | None = None,
) -> Path:
    """Write `out_path` (.safetensors) and its YAML atomically (temp file + rename)."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    out_path = Path(out_path)
    yaml_path = yaml_beside(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"{out_path}: the export writes .safetensors only")
    if not overwrite:
        _refuse_overwrite(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses strided tensors; no blanket copy (the real model is ~5 GB in float32).
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    suffix = f".tmp{os.getpid()}"
    tmp_ckpt = out_path.with_name(out_path.name + suffix)
    tmp_yaml = yaml_path.with_name(yaml_path.name + suffix)
    try:
        save_file(tensors, str(tmp_ckpt), metadata={"format": "pt", **(metadata or {})})
        tmp_yaml.write_text(OmegaConf.to_yaml(OmegaConf.create(config)), encoding="utf-8")
        # safetensors >= 0.5 creates files 0600; a WebUI running as another user must read them.
        for path in (tmp_ckpt, tmp_yaml):
            os.chmod(path, FILE_MODE)
        if not overwrite and (out_path.exists() or yaml_path.exists()):
            raise FileExistsError(f"{out_path} appeared while exporting; refusing to overwrite it")
        os.replace(tmp_yaml, yaml_path)
        os.replace(tmp_ckpt, out_path)
    finally:
        tmp_ckpt.unlink(missing_ok=True)
        tmp_yaml.unlink(missing_ok=True)
    return out_path


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def check_depth_folder(folder: str | os.PathLike) -> Path:
    """Fail loudly, before loading anything heavy, when `folder` is not a diffusers SD 2 depth model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"{folder}: not a folder (expected a diffusers StableDiffusionDepth2ImgPipeline folder)"
        )
    for part in ("unet", "vae", "text_encoder"):
        if not (folder / part / "config.json").is_file():
            raise ValueError(f"{folder}: no {part}/config.json; not a diffusers Stable Diffusion folder")
    in_channels = _read_json(folder / "unet" / "config.json").get("in_channels")
    if in_channels != 5:
        raise ValueError(
            f"{folder}: UNet has in_channels={in_channels}, a depth model has 5 (4 latent + 1 depth); "
            "this is not a Stable Diffusion 2 depth model"
        )
    if not (folder / "depth_estimator" / "config.json").is_file():
        raise ValueError(
            f"{folder}: no depth_estimator/ (MiDaS DPT-Hybrid); the LDM depth checkpoint embeds it, "
            "save the whole StableDiffusionDepth2ImgPipeline"
        )
    depth = _read_json(folder / "depth_estimator" / "config.json")
    if depth.get("model_type") != "dpt" or not depth.get("is_hybrid"):
        raise ValueError(
            f"{folder}: depth_estimator is not DPT-Hybrid (model_type={depth.get('model_type')}, "
            f"is_hybrid={depth.get('is_hybrid')}); ldm's depth model embeds exactly MiDaS DPT-Hybrid"
        )
    return folder


def export_diffusers_folder(
    folder: str | os.PathLike,
    out_path: str | os.PathLike,
    open_clip_arch: str | None = None,
    open_clip_version: str | None = None,
) -> Path:
    """Export a local diffusers SD 2 depth folder to an LDM `.safetensors` plus `<same stem>.yaml` beside it.

    Loads each component with from_pretrained from the local folder only (no hub). Refuses to overwrite.
    `open_clip_arch`/`open_clip_version` are needed only for text encoders that are not ViT-H-14-sized.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, DPTForDepthEstimation

    folder = check_depth_folder(folder)
    out_path = Path(out_path)
    _refuse_overwrite(out_path)  # checked again on write; here so nothing heavy loads first
    if out_path.suffix != ".safetensors":
        raise ValueError(f"{out_path}: the export writes .safetensors only")

    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), local_files_only=True)
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    depth_estimator = DPTForDepthEstimation.from_pretrained(
        str(folder / "depth_estimator"), local_files_only=True
    )
    scheduler_file = folder / "scheduler" / "scheduler_config.json"
    scheduler_config = _read_json(scheduler_file) if scheduler_file.is_file() else None

    state_dict, config = models_to_ldm(
        unet, vae, text_encoder, depth_estimator, scheduler_config, open_clip_arch, open_clip_version
    )
    # ldm and the WebUI expect float32 weights; fp16 folders are widened losslessly.
    state_dict = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    return write_ldm_checkpoint(state_dict, config, out_path)
