"""Inpainting on DepthPipeline: a step-end blend that keeps the unmasked latents on the init image's noising path,
then a pixel composite, so nothing outside the mask changes."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from depth2img.pipeline.depth_pipeline import DepthPipeline


def inpaint(pipe: DepthPipeline, image: Image.Image, mask: Image.Image, call: dict) -> np.ndarray:
    """img2img whose unmasked latents follow the init image's noising path, then a pixel composite.

    Returns float images [B, H, W, 3] in [0, 1]; outside the mask they are exactly the init image.
    """
    device = pipe._execution_device
    dtype = pipe.unet.dtype
    pixels = pipe.image_processor.preprocess(image).to(device=device, dtype=pipe.vae.dtype)
    init_latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    init_latents = init_latents.to(dtype)
    latent_h, latent_w = init_latents.shape[-2:]
    keep = 1.0 - torch.from_numpy(np.asarray(mask.resize((latent_w, latent_h), Image.BILINEAR), np.float32) / 255.0)
    keep = (keep > 0.5).to(device=device, dtype=dtype)[None, None]
    # A separate generator: the unmasked area's noise must not shift the main generator's stream.
    noise_generator = torch.Generator("cpu").manual_seed(int(call["generator"].initial_seed()) + 1)
    noise = torch.randn(init_latents.shape, generator=noise_generator).to(device=device, dtype=dtype)

    report = call.pop("callback_on_step_end", None)

    def blend(pipeline, step, timestep, tensors):
        latents = tensors["latents"]
        timesteps = pipeline.scheduler.timesteps
        later = timesteps[timesteps < timestep]
        if len(later):
            target = pipeline.scheduler.add_noise(init_latents, noise, later[:1])
        else:
            target = init_latents
        if report is not None:
            report(pipeline, step, timestep, tensors)
        return {"latents": latents * (1 - keep) + target.expand_as(latents) * keep}

    generated = pipe(image=image, callback_on_step_end=blend, **call).images
    init = np.asarray(image, dtype=np.float32)[None] / 255.0
    weight = np.asarray(mask, dtype=np.float32)[None, ..., None] / 255.0
    return init * (1.0 - weight) + generated * weight
