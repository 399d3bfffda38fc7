"""Loading the standalone engine: diffusers' StableDiffusionDepth2ImgPipeline, built offline from a depth checkpoint.

diffusers has no `from_single_file` for this pipeline, and its generic single-file route goes to a
model hub. So the pipeline is assembled from parts that load locally:
- UNet and VAE: diffusers' `from_single_file` with the LDM YAML as `original_config`;
- text encoder: diffusers' `convert_open_clip_checkpoint` into a CLIPTextModel configured from the
  checkpoint's own tensor shapes;
- tokenizer: derived from the BPE file open-clip-torch ships (depth2img.checkpoint.tokenizer);
- scheduler: built in code from the YAML's schedule;
- depth estimator: the checkpoint's embedded MiDaS, converted to transformers' DPT (depth2img.estimate.midas).
A diffusers-format depth model folder loads with the same class through `from_pretrained`.
Also: which checkpoint by default, and which device and dtype.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

from depth2img.base.paths import DEMO_DIR, USER_CHECKPOINT_DIR
from depth2img.checkpoint.load import (
    TEXT_PREFIX,
    CheckpointError,
    config_path_for,
    load_state_dict,
    require_config_matches,
    require_depth_checkpoint,
)
from depth2img.checkpoint.tokenizer import load_clip_tokenizer
from depth2img.estimate import midas
from depth2img.export import tiny
from depth2img.pipeline.depth_pipeline import DepthPipeline

DEFAULT_CHECKPOINT_NAMES = ("512-depth-ema.safetensors", "512-depth-ema.ckpt")


def default_checkpoint(announce=print) -> Path:
    """models/Stable-diffusion/512-depth-ema.* if present, else the embedded demo checkpoint."""
    for name in DEFAULT_CHECKPOINT_NAMES:
        candidate = USER_CHECKPOINT_DIR / name
        if candidate.is_file():
            return candidate
    path = tiny.build_tiny_depth_checkpoint(DEMO_DIR)
    announce(
        "*** DEMO CHECKPOINT: no depth model found in models/Stable-diffusion/ (512-depth-ema.safetensors or "
        ".ckpt), so the embedded demo checkpoint is used: the real architecture with tiny sizes and RANDOM "
        "weights — the results are noise. Pass --checkpoint or put the real model there. ***"
    )
    return path


def text_encoder_config_from_checkpoint(state: dict[str, torch.Tensor]):
    """CLIPTextConfig of the OpenCLIP text tower in an LDM checkpoint, read from its tensor shapes.

    SD 2 takes the penultimate layer's output, so the diffusers model has one layer fewer than the tower.
    Heads follow OpenCLIP's convention (width / 64), true for ViT-H-14 and our tiny fixture.
    """
    from transformers import CLIPTextConfig

    vocab_size, width = state[TEXT_PREFIX + "token_embedding.weight"].shape
    block = re.compile(re.escape(TEXT_PREFIX) + r"transformer\.resblocks\.(\d+)\.")
    layer_ids = {int(m.group(1)) for key in state if (m := block.match(key))}
    projection = state.get(TEXT_PREFIX + "text_projection")
    return CLIPTextConfig(
        vocab_size=int(vocab_size),
        hidden_size=int(width),
        intermediate_size=int(state[TEXT_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        num_hidden_layers=len(layer_ids) - 1,
        num_attention_heads=max(1, int(width) // 64),
        max_position_embeddings=int(state[TEXT_PREFIX + "positional_embedding"].shape[0]),
        projection_dim=int(projection.shape[1]) if projection is not None else int(width),
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        pad_token_id=0,
        bos_token_id=49406,
        eos_token_id=49407,
    )


def load_text_encoder(state: dict[str, torch.Tensor]):
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextModel

    model = CLIPTextModel(text_encoder_config_from_checkpoint(state))
    converted = convert_open_clip_checkpoint(model, state, prefix=TEXT_PREFIX)
    expected = model.state_dict()
    # transformers 5 dropped the `text_model.` level from CLIPTextModel's keys; diffusers still writes it.
    converted = {
        (k if k in expected else k.removeprefix("text_model.")): v for k, v in converted.items()
    }
    # The tower's last block is unused (penultimate layer) and has no place in the diffusers model.
    converted = {k: v for k, v in converted.items() if k in expected}
    missing = [k for k in expected if k not in converted and not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"text encoder weights missing from the checkpoint: {missing[:5]}")
    model.load_state_dict(converted, strict=False)
    return model.eval()


def make_scheduler(config, name: str = "pndm"):
    """A diffusers scheduler with the checkpoint's training schedule (LDM 'linear' = diffusers 'scaled_linear')."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

    params = config["model"]["params"]
    common = dict(
        num_train_timesteps=int(params.get("timesteps", 1000)),
        beta_start=float(params.get("linear_start", 0.00085)),
        beta_end=float(params.get("linear_end", 0.012)),
        beta_schedule="scaled_linear",
        steps_offset=1,
    )
    if name == "pndm":  # the scheduler Stability's diffusers release of this model ships with
        return PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **common)
    if name == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **common)
    if name == "euler":
        return EulerDiscreteScheduler(**common)
    raise ValueError(f"unknown scheduler {name!r}; choose pndm, ddim or euler")


@contextlib.contextmanager
def _quiet_empty_float32_list():
    """Drop diffusers' "modules ... should be kept in float32: []" warning, and only with an empty list.

    from_single_file(torch_dtype=...) casts with .to() itself and warns about it even when no module needs
    float32 (the list is empty for these models): nothing is lost, so the message is noise for our users.
    """
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()

    logger = logging.getLogger("diffusers.models.modeling_utils")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _device_and_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    if device is None:
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    device = torch.device(device)
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return device, dtype


def load_pipeline(
    path: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    scheduler: str = "pndm",
    announce=print,
) -> DepthPipeline:
    """A DepthPipeline (a real StableDiffusionDepth2ImgPipeline) from a depth checkpoint or diffusers folder.

    `None` uses the default checkpoint (see default_checkpoint). Nothing is downloaded.
    """
    from omegaconf import OmegaConf

    device, dtype = _device_and_dtype(device, dtype)
    path = Path(path) if path is not None else default_checkpoint(announce)
    info = require_depth_checkpoint(path)
    if info.format == "diffusers":
        # Our pipeline estimates with depth2img.estimate.midas's exact MiDaS preprocessing, not the feature extractor;
        # folders saved from a DepthPipeline have none.
        extra = {} if (path / "feature_extractor").is_dir() else {"feature_extractor": None}
        pipe = DepthPipeline.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype, **extra)
        pipe.depth_estimator.to(torch.float32)
    else:
        from diffusers import AutoencoderKL, UNet2DConditionModel

        config_path = config_path_for(path)
        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
        state = load_state_dict(path)
        require_config_matches(path, state, config, config_path)
        # float32 is what from_single_file builds anyway: passing it would only add a cast (and its warning).
        dtype_arg = {} if dtype == torch.float32 else {"torch_dtype": dtype}
        with _quiet_empty_float32_list():
            unet = UNet2DConditionModel.from_single_file(state, original_config=str(config_path), **dtype_arg)
            vae = AutoencoderKL.from_single_file(state, original_config=str(config_path), **dtype_arg)
        text_encoder = load_text_encoder(state).to(dtype)
        # MiDaS stays float32: its batch norms are unreliable in half precision.
        depth_estimator = midas.load_midas_from_state_dict(state, dtype=torch.float32)
        del state
        pipe = DepthPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=load_clip_tokenizer(),
            unet=unet,
            scheduler=make_scheduler(config, scheduler),
            depth_estimator=depth_estimator,
            feature_extractor=None,
        )
    pipe.checkpoint_path = path
    return pipe.to(device)
