"""One generation request (every mode: img2img, inpaint, txt2img), its result, and what is refused before any work."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from depth2img.condition.conditioning import check_depth_range
from depth2img.process import fitting, masks
from depth2img.source import decoding


@dataclass
class GenerationRequest:
    prompt: str
    image: Image.Image | None = None  # None = txt2img from the depth map
    depth: decoding.DepthSource | None = None  # None = estimate from the image
    mask: Image.Image | None = None  # white = repaint (inpainting)
    negative_prompt: str | None = None
    strength: float = 0.8
    steps: int = 30
    guidance: float = 7.5
    seed: int = 0
    width: int | None = None
    height: int | None = None
    batch_size: int = 1
    resize_mode: fitting.ResizeMode = fitting.ResizeMode.JUST_RESIZE
    postprocess: dict = field(default_factory=dict)  # keyword arguments of postprocessing.postprocess
    depth_range: tuple[float, float] | None = None  # (lo, hi) of the processed map -> [-1, 1]; None = its min-max
    depth_mask: masks.MaskSettings | None = None  # a mask from a depth band: img2img becomes inpainting
    output_type: str = "pil"  # "pil" | "np" (float32 [B, H, W, 3] in [0, 1], as diffusers returns it)
    # Transparent parts of the image are flattened on this colour before anything reads it (the WebUI's rule).
    background: str = decoding.DEFAULT_BACKGROUND


@dataclass
class GenerationResult:
    images: list[Image.Image] | np.ndarray
    depth: np.ndarray  # the processed depth map that conditioned the images (larger = nearer)
    mode: str
    size_note: str = ""  # how the output size was chosen when the request gave none
    mask: Image.Image | None = None  # inpainting: the mask used (L, output size, white = repainted)
    mask_note: str = ""  # a mask from a depth band: the band it used


def check_request(request: GenerationRequest) -> None:
    """Refuse, before any work, what the pipeline would fail on with an obscure error."""
    if request.image is None and request.depth is None:
        raise ValueError(
            "nothing to start from: give an init image (img2img, inpaint) or a depth map (txt2img), or both"
        )
    if request.mask is not None and request.image is None:
        raise ValueError("inpainting needs an init image as well as the mask")
    if request.depth_mask is not None and request.image is None:
        raise ValueError("a mask from a depth band needs an init image (it makes img2img an inpainting job)")
    if request.mask is not None and request.mask.size != request.image.size:
        raise ValueError(
            f"mask size {request.mask.width}x{request.mask.height} differs from the image's "
            f"{request.image.width}x{request.image.height}; give a mask of the same size"
        )
    if request.steps < 1:
        raise ValueError(f"steps must be at least 1, got {request.steps}")
    if not 0.0 < request.strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {request.strength}")
    # diffusers runs int(steps * strength) of the schedule's steps when starting from an init image.
    if request.image is not None and int(request.steps * request.strength) < 1:
        raise ValueError(
            f"steps x strength must give at least one denoising step: {request.steps} x {request.strength} "
            f"gives {int(request.steps * request.strength)}; raise --steps or --strength"
        )
    if request.batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {request.batch_size}")
    if request.depth_range is not None:
        check_depth_range(request.depth_range)
