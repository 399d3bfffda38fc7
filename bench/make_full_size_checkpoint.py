"""Write a full-size SD 2 depth checkpoint with random weights (the real 512-depth-ema architecture and key
layout, ~5.6 GB float32) for benchmarks: `.venv/bin/python bench/make_full_size_checkpoint.py OUT.safetensors`.

Sizes are those of Stability's release (UNet 320/640/1280/1280 with linear projections and 1024-wide
context, the SD VAE, OpenCLIP ViT-H-14's text tower, MiDaS DPT-Hybrid); the YAML written beside it equals
the shipped v2-midas-inference.yaml.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(out: str) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTForDepthEstimation

    from depth2img.estimate.midas import dpt_hybrid_config, randomize_for_fixture
    from depth2img.export.ldm_export import models_to_ldm, write_ldm_checkpoint

    start = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=5, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
        use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        sample_size=256, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
    )
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, projection_dim=512, hidden_act="gelu", layer_norm_eps=1e-5,
    ))
    midas = DPTForDepthEstimation(dpt_hybrid_config())
    randomize_for_fixture(midas, seed=0)
    state, config = models_to_ldm(unet, vae, text, midas)
    del unet, vae, text, midas
    path = write_ldm_checkpoint(state, config, out)
    print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1])
