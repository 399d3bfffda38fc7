"""Run one request on a DepthPipeline: img2img, inpaint (image + mask) or txt2img (depth, no image)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from depth2img.pipeline.depth_pipeline import DepthPipeline
from depth2img.pipeline.inpaint import inpaint
from depth2img.pipeline.request import GenerationRequest, GenerationResult, check_request
from depth2img.pipeline.size import output_size
from depth2img.process import fitting, masks, postprocessing
from depth2img.source import decoding


def generate(
    pipe: DepthPipeline,
    request: GenerationRequest,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Run one request: img2img, inpaint (image + mask) or txt2img (depth, no image).

    The init image, the mask and the depth map get the same fit to the output size (request.resize_mode,
    the WebUI's semantics): stretched, centre-cropped, or padded with their edges.
    on_step(done, total) is called after each denoising step (a web page's progress bar); an exception raised
    from it stops the run between steps and propagates (diffusers' depth2img pipeline has no interrupt flag).
    """
    check_request(request)
    mask = request.mask
    image = decoding.flatten(request.image, request.background) if request.image is not None else None
    if request.depth is not None:
        depth = decoding.load_depth(request.depth)
    else:
        depth = pipe.estimate_depth(image)[0].numpy()

    source = image.size if image is not None else (depth.shape[1], depth.shape[0])
    width, height, size_note = output_size(request, *source)
    mode = "txt2img" if image is None else ("inpaint" if mask is not None else "img2img")
    if image is not None:
        image = fitting.fit_image(image, width, height, request.resize_mode, Image.LANCZOS)
    if mask is not None:
        mask = fitting.fit_image(mask.convert("L"), width, height, request.resize_mode, Image.NEAREST)

    scale = postprocessing.PostprocessScale.for_job(request.postprocess.get("scale"), request.depth_range)
    depth = postprocessing.postprocess(depth, **{**request.postprocess, "scale": scale})
    # An estimated map covers its picture at the estimator's resolution, whose sides it rounds: fitted by the
    # picture's aspect. An uploaded map is fitted by its own (README: depth maps).
    estimated_from = source if request.depth is None else None  # the init image's size before its fit
    depth = fitting.fit_aspect(depth, width, height, request.resize_mode, source_size=estimated_from)
    depth_tensor = torch.from_numpy(np.ascontiguousarray(depth))[None]
    mask_note = ""
    if request.depth_mask is not None:
        mask, mask_note = depth_band_mask(depth, request.depth_mask, mask, width, height, request.depth_range)
        mode = "inpaint"

    generator = torch.Generator("cpu").manual_seed(int(request.seed))
    pipe.set_progress_bar_config(disable=not progress)
    call = dict(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        depth_map=depth_tensor,
        strength=1.0 if mode == "txt2img" else request.strength,
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        num_images_per_prompt=request.batch_size,
        generator=generator,
        output_type="np" if mode == "inpaint" else request.output_type,
        depth_range=request.depth_range,
    )
    if on_step is not None:
        call["callback_on_step_end"] = _step_reporter(on_step)
    if mode == "txt2img":
        # The base pipeline needs an image for its size; prepare_latents ignores its content.
        images = pipe(image=Image.new("RGB", (width, height), (127, 127, 127)), txt2img=True, **call).images
    elif mode == "inpaint":
        images = inpaint(pipe, image, mask, call)
        if request.output_type == "pil":
            images = pipe.image_processor.numpy_to_pil(images)
    else:
        images = pipe(image=image, **call).images
    return GenerationResult(
        images=images, depth=depth, mode=mode, size_note=size_note, mask=mask, mask_note=mask_note
    )


def depth_band_mask(
    depth: np.ndarray,
    settings: masks.MaskSettings,
    painted: Image.Image | None,
    width: int,
    height: int,
    depth_range: tuple[float, float] | None = None,
) -> tuple[Image.Image, str]:
    """The inpainting mask (L, width x height) from a band of the processed, fitted depth map, and a note
    naming the band: depth2img.process.masks.image_band_mask, the one recipe every host uses."""
    return masks.image_band_mask(depth, settings, painted, width, height, depth_range)


def _step_reporter(on_step: Callable[[int, int], None]):
    def report(pipeline, step, timestep, tensors):
        on_step(step + 1, pipeline.num_timesteps)
        return {}

    return report
