"""Tiny transformers depth models of every architecture the installed transformers has, saved as folders.

Random weights from transformers' init give an almost constant depth (heads initialised near zero, then a
ReLU or sigmoid), which would let a wrong resize or a swapped axis pass unnoticed. randomize() redraws every
parameter from one seeded generator at scales that keep activations O(1), and makes the last head convolution
positive, so the depth follows the image.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import transformers

from depth2img.estimate.folders import installed_architectures


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            param = params[name]
            noise = torch.randn(tuple(param.shape), generator=gen)
            if param.ndim >= 2:
                value = noise / math.sqrt(math.prod(param.shape[1:]))
            elif name.endswith(".weight"):  # norm scales
                value = 1.0 + 0.1 * noise
            else:
                value = 0.02 * noise
            param.copy_(value)
        convs = [m for n, m in model.named_modules() if n.startswith("head") and isinstance(m, torch.nn.Conv2d)]
        if convs:  # the depth head's last convolution: positive, so the ReLU / sigmoid after it does not flatten it
            convs[-1].weight.abs_()
            convs[-1].bias.fill_(0.5)
    return model


def _dinov2(**extra):
    return transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=56,
        patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False, **extra,
    )


def _dpt_vit():
    return transformers.DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=64,
        patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
        reassemble_factors=[4, 2, 1, 0.5],
    )


def _glpn():
    return transformers.GLPNConfig(
        num_encoder_blocks=4, depths=[1, 1, 1, 1], sr_ratios=[8, 4, 2, 1], hidden_sizes=[8, 16, 32, 32],
        num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=16, head_hidden_size=16,
    )


def _depth_anything(metric: bool):
    kind = dict(depth_estimation_type="metric", max_depth=20) if metric else {}
    return transformers.DepthAnythingConfig(
        backbone_config=_dinov2(), neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        reassemble_hidden_size=32, patch_size=14, **kind,
    )


def _zoedepth():
    beit = transformers.BeitConfig(
        image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, use_relative_position_bias=True, reshape_hidden_states=False,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return transformers.ZoeDepthConfig(
        backbone_config=beit, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, bottleneck_features=16,
        num_relative_features=8, bin_embedding_dim=16, num_attractors=[4, 2, 2, 1],
        bin_configurations=[{"n_bins": 16, "min_depth": 0.001, "max_depth": 10.0}],
        patch_transformer_hidden_size=16, patch_transformer_intermediate_size=32,
        patch_transformer_num_attention_heads=2, num_patch_transformer_layers=1,
    )


def _prompt_depth_anything():
    return transformers.PromptDepthAnythingConfig(
        backbone_config=_dinov2(), neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        reassemble_hidden_size=32, patch_size=14, depth_estimation_type="metric", max_depth=10,
    )


# name: (model_type, config factory, image processor factory)
def _dpt_processor(**kwargs):
    return transformers.DPTImageProcessor(**kwargs)


FIXTURES = {
    "dpt": ("dpt", _dpt_vit, lambda: _dpt_processor(size={"height": 64, "width": 64})),
    "glpn": ("glpn", _glpn, lambda: transformers.GLPNImageProcessor(size_divisor=32)),
    "depth-anything": (
        "depth_anything",
        lambda: _depth_anything(False),
        lambda: _dpt_processor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14),
    ),
    "depth-anything-metric": (
        "depth_anything",
        lambda: _depth_anything(True),
        lambda: _dpt_processor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14),
    ),
    "zoedepth": (
        "zoedepth",
        _zoedepth,
        lambda: transformers.ZoeDepthImageProcessor(size={"height": 64, "width": 64}, ensure_multiple_of=16),
    ),
    "prompt-depth-anything": (
        "prompt_depth_anything",
        _prompt_depth_anything,
        lambda: transformers.PromptDepthAnythingImageProcessor(
            size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14
        ),
    ),
}


def available_fixtures() -> list[str]:
    have = installed_architectures()
    return [name for name, (model_type, _, _) in FIXTURES.items() if model_type in have]


def build_folder(name: str, root: Path, seed: int = 0) -> Path:
    """Save the tiny `name` model (randomized) with its image processor under root/name."""
    model_type, make_config, make_processor = FIXTURES[name]
    folder = Path(root) / name
    model = transformers.AutoModelForDepthEstimation.from_config(make_config()).eval()
    randomize(model, seed).save_pretrained(folder, safe_serialization=True)
    make_processor().save_pretrained(folder)
    return folder
