"""DepthPipeline: diffusers' StableDiffusionDepth2ImgPipeline with the core's depth handling.

It changes diffusers' pipeline in three named places only:
- prepare_depth_map: the core's conditioning (per-sample, flat-safe, or a given depth range) and estimator
  (cached, deduplicated);
- prepare_latents: pure noise for txt2img (no init image);
- inpainting: a step-end blend that keeps the unmasked latents on the init image's path, and a final
  pixel composite so nothing outside the mask changes (depth2img.pipeline.inpaint).
"""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from depth2img.condition.conditioning import depth_conditioning
from depth2img.estimate import midas
from depth2img.estimate.cache import DepthCache
from depth2img.estimate.checkpoint_midas import CheckpointMidasEstimator


def _base_pipeline_class():
    from transformers.utils import logging as transformers_logging

    # diffusers' depth2img module imports transformers' DPTImageProcessor, which warns at import that it falls
    # back to its PIL backend without torchvision (absent here: its wheel would replace the CPU torch). That
    # processor is never used (MiDaS preprocessing is depth2img.estimate.midas.preprocess): the warning is only noise.
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        from diffusers import StableDiffusionDepth2ImgPipeline
    finally:
        transformers_logging.set_verbosity(level)
    return StableDiffusionDepth2ImgPipeline


_Base = _base_pipeline_class()
_TXT2IMG: contextvars.ContextVar[bool] = contextvars.ContextVar("depth2img_txt2img", default=False)
_DEPTH_RANGE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar(
    "depth2img_depth_range", default=None
)


class DepthPipeline(_Base):
    """diffusers' depth2img pipeline with the core's depth handling (see the module docstring)."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, depth_estimator, feature_extractor):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            depth_estimator=depth_estimator,
            feature_extractor=feature_extractor,
        )
        self.depth_cache = DepthCache()
        self.checkpoint_path: Path | None = None
        self._call_lock = threading.RLock()

    def __call__(self, *args, txt2img: bool = False, depth_range: tuple[float, float] | None = None, **kwargs):
        """diffusers' __call__; txt2img=True starts from pure noise (the image only gives the size);
        depth_range=(lo, hi) conditions on that fixed range instead of each map's min-max.

        Safe from several threads (a web app's workers): the mode is this call's (a context variable, not
        pipeline state), and calls take turns, since diffusers' schedulers keep per-call state
        (set_timesteps, PNDM's history) on the one scheduler object.
        """
        with self._call_lock:
            token = _TXT2IMG.set(txt2img)
            range_token = _DEPTH_RANGE.set(depth_range)
            try:
                return super().__call__(*args, **kwargs)
            finally:
                _DEPTH_RANGE.reset(range_token)
                _TXT2IMG.reset(token)

    @property
    def estimator(self):
        if getattr(self, "_estimator", None) is None or self._estimator.model is not self.depth_estimator:
            self._estimator = CheckpointMidasEstimator(self.depth_estimator)
        return self._estimator

    def estimate_depth(self, images) -> torch.Tensor:
        """Depth [B, h, w] (larger = nearer) of PIL image(s) or a [B, 3, H, W] tensor in [-1, 1]."""
        return self.depth_cache.estimate(self.estimator, midas.images_to_tensor(images))

    # diffusers hook 1: the conditioning.
    def prepare_depth_map(self, image, depth_map, batch_size, do_classifier_free_guidance, dtype, device):
        height, width = _image_size(image)
        if depth_map is None:
            depth_map = self.estimate_depth(image)
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)
        conditioning = depth_conditioning(
            depth_map, latent_size, device=device, dtype=dtype, depth_range=_DEPTH_RANGE.get()
        )
        if conditioning.shape[0] < batch_size:
            conditioning = conditioning.repeat(batch_size // conditioning.shape[0], 1, 1, 1)
        return torch.cat([conditioning] * 2) if do_classifier_free_guidance else conditioning

    # diffusers hook 2: txt2img starts from pure noise instead of a noised init image.
    def prepare_latents(self, image, timestep, batch_size, num_images_per_prompt, dtype, device, generator=None):
        if not _TXT2IMG.get():
            return super().prepare_latents(
                image, timestep, batch_size, num_images_per_prompt, dtype, device, generator
            )
        from diffusers.utils.torch_utils import randn_tensor

        height, width = image.shape[-2:]
        shape = (
            batch_size * num_images_per_prompt,
            self.vae.config.latent_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma


def _image_size(image) -> tuple[int, int]:
    first = image[0] if isinstance(image, (list, tuple)) else image
    if isinstance(first, Image.Image):
        return first.height, first.width
    if isinstance(first, np.ndarray):
        raise TypeError("pass PIL images or tensors: diffusers swaps width and height of bare numpy images here")
    return tuple(first.shape[-2:])
