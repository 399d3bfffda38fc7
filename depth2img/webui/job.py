"""Host-side depth conditioning for one generation job (the WebUI adapter's logic, without the WebUI).

The WebUI script gathers plain values from its processing object (sizes, resize mode, the inpaint crop,
init images, the loaded model's MiDaS) and hands them to a DepthConditioner; the WebUI then calls
`conditioning(latent, source_image)` wherever it would have computed its own depth conditioning
(img2img init, txt2img sampling, the hires-fix second pass). Compared with the WebUI's native path:
- each unique image is estimated once (not once per batch item), results cached across jobs;
- the latent size comes from the latent itself (the native path VAE-encodes the image again for it);
- per-sample, flat-safe normalization; float32 into OpenCV; inputs moved to the estimator's weights;
- inpainting takes depth from the whole, unfilled init image and follows the WebUI's "only masked" crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from depth2img.base import limits
from depth2img.base.errors import Depth2ImgError
from depth2img.condition.conditioning import depth_conditioning
from depth2img.estimate import midas
from depth2img.estimate.cache import DepthCache
from depth2img.estimate.interface import DepthEstimator
from depth2img.process import fitting, masks, postprocessing
from depth2img.schema.args import Depth2ImgArgs
from depth2img.source import decoding, depth_kinds
from depth2img.source.transport import decode_base64

# The latent is 1/8 of the image's size in SD's VAE: depth outputs are sized from the latent they conditioned.
LATENT_SCALE = 8




def job_error(error: Exception) -> Depth2ImgError:
    """Any failure while preparing a job, as the Depth2ImgError that stops it.

    The core's own errors (depth maps, args, checkpoints, estimators: all ValueErrors whose message says what
    to do) keep their message, status 422; anything else is a fault here, status 500, named with its type.
    """
    if isinstance(error, Depth2ImgError):
        return error
    if isinstance(error, ValueError):
        return Depth2ImgError(str(error))
    return Depth2ImgError(
        f"Depth2Img could not prepare the job ({type(error).__name__}: {error}); the job was stopped, the "
        "console shows the details",
        status_code=500,
    )




# The one flattening rule of every host (decoding.flatten); the name the WebUI job code uses.
flatten_image = decoding.flatten




@dataclass
class JobGeometry:
    """Where the generated image sits relative to the init image (WebUI terms)."""

    width: int
    height: int
    resize_mode: int = 0  # the WebUI's img2img resize mode (3 = latent upscale: treated as just resize)
    crop_region: tuple[int, int, int, int] | None = None  # inpaint "only masked": (x1, y1, x2, y2) in the init


def decode_depth_argument(
    value, max_pixels: int = limits.DEFAULT_MAX_PIXELS, **decode_kwargs
) -> depth_kinds.DecodedDepth:
    """The API's base64 (or data URL), the UI's bytes, an array or a PIL image -> the depth map, with how it was
    read (its notice, e.g. "approximate": show it to the user).

    decode_kwargs: how to read it (Depth2ImgArgs.decode_kwargs(): depth kind, distance range, EXR channel).
    Every failure is a Depth2ImgError naming the field 'depth_image' (status 422).
    """
    field = "depth2img arg 'depth_image'"
    if isinstance(value, str):
        value = decode_base64(value, field)
    if not isinstance(value, (bytes, bytearray, np.ndarray, Image.Image)):
        raise Depth2ImgError(
            f"{field} has unsupported type {type(value).__name__}: send a base64 PNG/TIFF/.npy (or the bytes)"
        )
    if isinstance(value, bytearray):
        value = bytes(value)
    try:
        return decoding.decode_depth(value, max_pixels=max_pixels, **decode_kwargs)
    except limits.DepthMapError as error:
        raise Depth2ImgError(f"{field}: {error}") from error


def estimate_image(estimator: DepthEstimator, cache: DepthCache, image: Image.Image, background: str) -> np.ndarray:
    """Depth of one PIL image (transparency on `background`, the WebUI's rule) through the shared cache."""
    return cache.estimate(estimator, midas.images_to_tensor(flatten_image(image, background)))[0].numpy()


class DepthConditioner:
    """Computes the UNet's depth channel for one job; see the module docstring."""

    def __init__(
        self,
        args: Depth2ImgArgs,
        geometry: JobGeometry,
        *,
        estimator: DepthEstimator | None = None,
        cache: DepthCache | None = None,
        init_images: list[Image.Image] | None = None,
        inpainting: bool = False,
        background: str = "#ffffff",
        max_pixels: int = limits.DEFAULT_MAX_PIXELS,
        depth: depth_kinds.DecodedDepth | None = None,
        postprocess_scale: postprocessing.PostprocessScale | None = None,
    ):
        """background: the colour transparent init images are flattened on (the WebUI's img2img_background_color).
        depth: a map already decoded (the batch tab's file), used instead of args.depth_image.
        postprocess_scale: the set's scale the map is post-processed on (the batch folder's); None: args'.
        """
        self.args = args
        self.post = args.postprocess_kwargs(scale=postprocess_scale)
        self.geometry = geometry
        self.estimator = estimator
        self.cache = cache if cache is not None else DepthCache()
        self.init_images = init_images
        self.inpainting = inpainting
        self.background = background
        if depth is None and args.source == "upload":
            depth = decode_depth_argument(args.depth_image, max_pixels, **args.decode_kwargs())
        self.uploaded = depth.depth if depth is not None else None
        # What the user should know about the uploaded map (e.g. converted without its distance range: approximate).
        self.notices = [depth.notice] if depth is not None and depth.notice else []
        self.estimator_calls = 0  # this job's calls (the cache's total counts every caller's)
        self.last_depth: np.ndarray | None = None  # the processed map of the first sample, for outputs
        self.last_size: tuple[int, int] | None = None  # (width, height) of the image it conditioned

    # ---- the hook the host calls ----
    def conditioning(self, latent: torch.Tensor, source_image: torch.Tensor | None = None) -> torch.Tensor:
        """Depth conditioning [B, 1, h, w] for `latent` [B, C, h, w], in its dtype and on its device."""
        batch = latent.shape[0]
        maps = self._depth_maps(batch, source_image)
        if len(maps) == 1 and batch > 1:
            maps = maps * batch
        if len(maps) != batch:
            raise Depth2ImgError(
                f"got {len(maps)} depth maps for a batch of {batch}: send one init image, or one per batch item"
            )
        self.last_depth = maps[0] if isinstance(maps[0], np.ndarray) else maps[0].numpy()
        size = tuple(latent.shape[2:])
        self.last_size = (size[1] * LATENT_SCALE, size[0] * LATENT_SCALE)
        # A given range (args.depth_range) holds one scale across samples and jobs; None: each map's min-max.
        scale = dict(device=latent.device, dtype=latent.dtype, depth_range=self.args.depth_range)
        if all(isinstance(m, torch.Tensor) for m in maps):  # straight from the estimator: one batched resize
            return depth_conditioning(torch.stack(maps), size, **scale)
        parts = [depth_conditioning(np.ascontiguousarray(m), size, **scale) for m in maps]
        return torch.cat(parts)

    def output_depth(self) -> np.ndarray | None:
        """The last processed map at the size of the image it conditioned (the generated image; with the
        WebUI's "only masked" inpainting, the generated crop), for saving or returning."""
        if self.last_depth is None:
            return None
        return fitting.resize(self.last_depth, *self.last_size)

    # ---- where the depth comes from ----
    def _count_call(self) -> None:
        self.estimator_calls += 1

    def _estimate(self, images: torch.Tensor) -> torch.Tensor:
        return self.cache.estimate(self.estimator, images, on_call=self._count_call).cpu()

    def _depth_maps(self, batch: int, source_image: torch.Tensor | None) -> list:
        post = self.post
        if self.uploaded is not None:
            return [self._fit(postprocessing.postprocess(self.uploaded, **post), None)]
        if self.estimator is None:
            raise Depth2ImgError("no depth estimator: load an SD 2 depth checkpoint or upload a depth map")
        if self.inpainting and self.init_images:
            return [self._whole_image_depth(image) for image in self.init_images]
        if source_image is None:
            raise Depth2ImgError(
                "Depth2Img has no image to estimate depth from: in txt2img, choose 'upload a depth map'"
            )
        depth = self._estimate(source_image)
        if postprocessing.is_identity(**post):
            return list(depth)  # bit-exact with the native path when nothing is post-processed
        return [postprocessing.postprocess(d.numpy(), **post) for d in depth]

    def _whole_image_depth(self, image: Image.Image) -> np.ndarray:
        return self._fit(self._processed_depth_of(image), image.size)

    def _processed_depth_of(self, image: Image.Image) -> np.ndarray:
        """The processed map of a whole init image (transparency flattened as the WebUI does), at the
        estimator's resolution."""
        depth = self._estimate(midas.images_to_tensor(flatten_image(image, self.background)))[0].numpy()
        return postprocessing.postprocess(depth, **self.post)

    # ---- an inpainting mask from a depth band ----
    def inpaint_mask(self, painted: Image.Image | None = None) -> tuple[Image.Image, str]:
        """The job's inpainting mask from args' depth band (L, the first init image's size: where the WebUI's
        own masks live, before its blur, "only masked" crop and resize), combined with the painted mask as
        args.mask_combine says; and a note naming the band.

        The depth is the whole init image's (or the uploaded map, taken as the init image's); percent of range
        is of args.depth_range when given. painted: the WebUI's mask as it reads it (create_binary_mask), any
        size (fitted to the image's like the WebUI fits masks: stretched). A band with no pixel stops the job.
        """
        settings = self.args.mask_settings()
        if settings is None:
            raise Depth2ImgError("depth2img arg 'mask_from_depth' is off: no depth band to make a mask from")
        if not self.init_images:
            raise Depth2ImgError(
                "depth2img arg 'mask_from_depth': a mask from a depth band needs an init image; use img2img or "
                "inpaint (txt2img has none)"
            )
        image = self.init_images[0]
        if self.uploaded is not None:
            depth = postprocessing.postprocess(self.uploaded, **self.post)
        else:
            if self.estimator is None:
                raise Depth2ImgError("no depth estimator: load an SD 2 depth checkpoint or upload a depth map")
            depth = self._processed_depth_of(image)
        if painted is not None and painted.size != image.size:
            painted = painted.convert("L").resize(image.size, Image.NEAREST)
        try:
            return masks.image_band_mask(depth, settings, painted, *image.size, self.args.depth_range)
        except masks.MaskError as error:
            raise Depth2ImgError(f"Depth2Img mask from a depth band: {error}") from error

    def _fit(self, depth: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
        """Apply the job's geometry to a depth map of the whole init image (or the uploaded map)."""
        geometry = self.geometry
        if geometry.crop_region is not None:
            # The crop box is in init-image pixels: a map of another resolution (the estimator's, its sides
            # rounded to its multiples) is brought to the picture's size first, so the crop is the picture's.
            src_w, src_h = image_size or (self.init_images[0].size if self.init_images else depth.shape[::-1])
            if depth.shape[:2] != (src_h, src_w):
                depth = fitting.resize(depth, src_w, src_h)
            x1, y1, x2, y2 = geometry.crop_region
            cropped = depth[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
            return fitting.fit_aspect(cropped, geometry.width, geometry.height, fitting.ResizeMode.RESIZE_AND_FILL)
        mode = geometry.resize_mode if geometry.resize_mode in (0, 1, 2) else 0
        # image_size: an estimated map, fitted by its picture's aspect; an uploaded map (None) by its own.
        return fitting.fit_aspect(depth, geometry.width, geometry.height, mode, source_size=image_size)
