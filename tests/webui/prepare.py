"""Put this suite's fixture checkpoints into a WebUI's model folder (not the WebUI itself).

    .venv/bin/python -m tests.webui.prepare /path/to/stable-diffusion-webui
    .venv/bin/python -m tests.webui.prepare --forge /path/to/stable-diffusion-webui-forge

Writes models/Stable-diffusion/tiny-depth.{safetensors,yaml} (the core's tiny depth checkpoint) and
tiny-sd2.{safetensors,yaml} (the same weights as a plain 4-channel SD 2 model without MiDaS: the
"non-depth model" of the tests). The extension registers the tiny OpenCLIP arch both name.
Also models/depth/tiny-dpt/: a tiny transformers DPT folder (tests/estimator_fixtures.py), the suite's folder
estimator (a folder saved by a newer transformers loads in the WebUI's 4.30).

Forge takes a checkpoint for SD 2 only at SD 2's widths (UNet model_channels 320, context 1024) and builds the
VAE and text encoder from SD 2.1's fixed configs, loading them without strict checks (a missing or misshaped
weight is uninitialised memory or a crash, not an error): --forge writes forge-depth and forge-sd2 instead, with
the full-size VAE and a text tower of ViT-H-14's shape (its MLP width is free in Forge), and a UNet of one
320-channel level (its block counts are read from the file). About 780 MB; about 20 s to build and copy.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from depth2img.base.paths import cache_dir
from depth2img.export.tiny import build_tiny_depth_checkpoint

DEPTH_NAME = "tiny-depth"
PLAIN_NAME = "tiny-sd2"
FORGE_DEPTH_NAME = "forge-depth"
FORGE_PLAIN_NAME = "forge-sd2"
FOLDER_ESTIMATOR_NAME = "tiny-dpt"


def write_plain_sd2(depth_checkpoint: Path, out_dir: Path, name: str = PLAIN_NAME) -> Path:
    state = load_file(str(depth_checkpoint))
    plain = {k: v for k, v in state.items() if not k.startswith("depth_model.")}
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    plain[conv_in] = plain[conv_in][:, :4].contiguous()
    config = OmegaConf.load(depth_checkpoint.with_suffix(".yaml"))
    config.model.target = "ldm.models.diffusion.ddpm.LatentDiffusion"
    config.model.params.conditioning_key = "crossattn"
    del config.model.params["depth_stage_config"]
    del config.model.params["finetune_keys"]  # LatentFinetuneDiffusion's; plain LatentDiffusion refuses it
    config.model.params.unet_config.params.in_channels = 4
    out = out_dir / f"{name}.safetensors"
    save_file(plain, str(out))
    OmegaConf.save(config, out.with_suffix(".yaml"))
    return out


def forge_fixture_models(seed: int = 0) -> dict:
    """The smallest SD 2 depth model Forge (dfdcbab6) loads as SD 2: see the module docstring."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTForDepthEstimation

    from depth2img.estimate import midas
    from depth2img.export.tiny import randomize

    unet = dict(
        sample_size=8, in_channels=5, out_channels=4, down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",), block_out_channels=(320,), layers_per_block=1,
        cross_attention_dim=1024, attention_head_dim=(5,), use_linear_projection=True, norm_num_groups=32,
    )  # fmt: skip
    vae = dict(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        latent_channels=4, norm_num_groups=32, sample_size=64, scaling_factor=0.18215,
    )  # fmt: skip
    # Forge runs 23 of OpenCLIP's 24 blocks (the penultimate layer): the export adds the 24th as a no-op.
    text = dict(
        vocab_size=49408, hidden_size=1024, intermediate_size=64, num_attention_heads=16, num_hidden_layers=23,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1024,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        models = {
            "unet": UNet2DConditionModel(**unet),
            "vae": AutoencoderKL(**vae),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**text)),
            "depth_estimator": DPTForDepthEstimation(midas.dpt_hybrid_config()),
        }
        generator = torch.Generator().manual_seed(seed)
        for name in ("unet", "vae", "text_encoder"):
            randomize(models[name], generator)
        midas.randomize_for_fixture(models["depth_estimator"], seed)
    return {name: model.eval() for name, model in models.items()}


# Bump when forge_fixture_models changes what it builds: a cached fixture of another version is rebuilt.
FORGE_FIXTURE_VERSION = "1"
_FORGE_METADATA_KEY = "depth2img_forge_fixture"


def _forge_fixture_is_current(path: Path) -> bool:
    from safetensors import safe_open

    if not (path.is_file() and path.with_suffix(".yaml").is_file()):
        return False
    with safe_open(str(path), framework="pt") as handle:
        return (handle.metadata() or {}).get(_FORGE_METADATA_KEY) == FORGE_FIXTURE_VERSION


def build_forge_depth_checkpoint(out_dir: Path) -> Path:
    """<out_dir>/forge-depth.safetensors (fp16, its YAML beside it), rebuilt only for another builder version."""
    from depth2img.export import ldm_export

    path = out_dir / f"{FORGE_DEPTH_NAME}.safetensors"
    if _forge_fixture_is_current(path):
        return path
    models = forge_fixture_models()
    state_dict, config = ldm_export.models_to_ldm(
        models["unet"], models["vae"], models["text_encoder"], models["depth_estimator"],
        open_clip_arch="depth2img-forge-fixture", open_clip_layers=24,
    )  # fmt: skip
    state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    return ldm_export.write_ldm_checkpoint(
        state_dict, config, path, overwrite=True, metadata={_FORGE_METADATA_KEY: FORGE_FIXTURE_VERSION}
    )


def main(webui_dir: str, forge: bool = False) -> None:
    target = Path(webui_dir) / "models" / "Stable-diffusion"
    target.mkdir(parents=True, exist_ok=True)
    fixtures = cache_dir() / "fixtures"
    if forge:
        source, depth_name, plain_name = build_forge_depth_checkpoint(fixtures), FORGE_DEPTH_NAME, FORGE_PLAIN_NAME
    else:
        source, depth_name, plain_name = build_tiny_depth_checkpoint(fixtures), DEPTH_NAME, PLAIN_NAME
    for suffix in (".safetensors", ".yaml"):
        destination = target / f"{depth_name}{suffix}"
        # Never rewrite a checkpoint the WebUI may have loaded (memory-mapped) when it is already current.
        if not destination.is_file() or destination.stat().st_size != source.with_suffix(suffix).stat().st_size:
            shutil.copyfile(source.with_suffix(suffix), destination)
    write_plain_sd2(source, target, plain_name)
    print(f"wrote {depth_name} and {plain_name} checkpoints to {target}")
    folder = write_folder_estimator(Path(webui_dir) / "models" / "depth")
    print(f"wrote the folder estimator {folder}")


def write_folder_estimator(depth_dir: Path) -> Path:
    import tempfile

    from tests.estimator_fixtures import build_folder

    destination = depth_dir / FOLDER_ESTIMATOR_NAME
    with tempfile.TemporaryDirectory() as scratch:
        built = build_folder("dpt", Path(scratch))
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(built, destination)
    return destination


if __name__ == "__main__":
    forge_flag = "--forge" in sys.argv[1:]
    main(next(arg for arg in sys.argv[1:] if arg != "--forge"), forge=forge_flag)
