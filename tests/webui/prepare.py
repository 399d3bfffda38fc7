"""Put this suite's fixture checkpoints into a WebUI's model folder (not the WebUI itself).

    .venv/bin/python -m tests.webui.prepare /path/to/stable-diffusion-webui

Writes models/Stable-diffusion/tiny-depth.{safetensors,yaml} (the core's tiny depth checkpoint) and
tiny-sd2.{safetensors,yaml} (the same weights as a plain 4-channel SD 2 model without MiDaS: the
"non-depth model" of the tests). The extension registers the tiny OpenCLIP arch both name.
Also models/depth/tiny-dpt/: a tiny transformers DPT folder (tests/estimator_fixtures.py), the suite's folder
estimator (a folder saved by a newer transformers loads in the WebUI's 4.30).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from depth2img.base.paths import cache_dir
from depth2img.export.tiny import build_tiny_depth_checkpoint

DEPTH_NAME = "tiny-depth"
PLAIN_NAME = "tiny-sd2"
FOLDER_ESTIMATOR_NAME = "tiny-dpt"


def write_plain_sd2(depth_checkpoint: Path, out_dir: Path) -> Path:
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
    out = out_dir / f"{PLAIN_NAME}.safetensors"
    save_file(plain, str(out))
    OmegaConf.save(config, out.with_suffix(".yaml"))
    return out


def main(webui_dir: str) -> None:
    target = Path(webui_dir) / "models" / "Stable-diffusion"
    target.mkdir(parents=True, exist_ok=True)
    source = build_tiny_depth_checkpoint(cache_dir() / "fixtures")
    for suffix in (".safetensors", ".yaml"):
        destination = target / f"{DEPTH_NAME}{suffix}"
        # Never rewrite a checkpoint the WebUI may have loaded (memory-mapped) when it is already current.
        if not destination.is_file() or destination.stat().st_size != source.with_suffix(suffix).stat().st_size:
            shutil.copyfile(source.with_suffix(suffix), destination)
    write_plain_sd2(source, target)
    print(f"wrote {DEPTH_NAME} and {PLAIN_NAME} checkpoints to {target}")
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
    main(sys.argv[1])
