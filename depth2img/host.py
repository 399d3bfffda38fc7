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

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import depthmap, midas
from .args import Depth2ImgArgs
from .conditioning import depth_conditioning
from .depth_cache import DepthCache
from .devices import module_placement
from .estimators import DepthEstimator, autocast_off, caller_device, probe_precision_caps


class Depth2ImgError(ValueError):
    """A job that must not run; the WebUI's API turns `status_code` into the HTTP status."""

    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.status_code = status_code
        self.detail = message


class ModuleMidasEstimator(DepthEstimator):
    """The loaded checkpoint's own MiDaS module (ldm's MiDaSInference in the WebUI): no second copy in memory.

    `module(pixel_values)` must return inverse depth [B, 1, h, w] or [B, h, w].
    `execution_device`: where the module computes when that differs from where its weights rest (the
    WebUI's --lowvram/--medvram hooks move it to the GPU on call).
    """

    name = "checkpoint-midas"
    label = "MiDaS DPT-Hybrid (from the depth checkpoint)"

    def __init__(self, module: torch.nn.Module, cache_key: str, execution_device: torch.device | None = None):
        self.module = module
        self._cache_key = f"{self.name}:{cache_key}"
        self.execution_device = execution_device
        self._float32_copy: torch.nn.Module | None = None

    @property
    def cache_key(self) -> str:
        return self._cache_key

    def _runtime(self) -> tuple[torch.nn.Module, torch.device, torch.dtype]:
        weights_device, dtype = module_placement(self.module)
        device = self.execution_device or weights_device
        if probe_precision_caps(device).supports(dtype):
            return self.module, device, dtype
        # The backend lacks a kernel for this dtype (e.g. float16 on the CPU): run a float32 copy.
        if self._float32_copy is None:
            self._float32_copy = copy.deepcopy(self.module).float()
        return self._float32_copy.to(device), device, torch.float32

    @torch.no_grad()
    def estimate(self, images) -> torch.Tensor:
        caller = caller_device(images)
        pixel_values = midas.preprocess(images)
        module, device, dtype = self._runtime()
        with autocast_off(device):
            depth = module(pixel_values.to(device=device, dtype=dtype))
        if depth.ndim == 4:
            depth = depth[:, 0]
        return depth.to(torch.float32).to(caller)


@dataclass
class JobGeometry:
    """Where the generated image sits relative to the init image (WebUI terms)."""

    width: int
    height: int
    resize_mode: int = 0  # the WebUI's img2img resize mode (3 = latent upscale: treated as just resize)
    crop_region: tuple[int, int, int, int] | None = None  # inpaint "only masked": (x1, y1, x2, y2) in the init


def _flatten_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _uses_defaults(args: Depth2ImgArgs) -> bool:
    return not args.invert and args.clip_near == 100.0 and args.clip_far == 0.0 and args.gamma == 1.0 and args.blur == 0


def decode_depth_argument(value) -> np.ndarray:
    """The API's base64 (or data URL) / the UI's bytes or file path -> depth map."""
    import base64
    import binascii

    if isinstance(value, np.ndarray) or isinstance(value, Image.Image):
        return depthmap.load_depth(value)
    if isinstance(value, (bytes, bytearray)):
        return depthmap.load_depth(bytes(value))
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise Depth2ImgError("depth2img arg 'depth_image' is not valid base64") from error
        try:
            return depthmap.load_depth(raw)
        except depthmap.DepthMapError as error:
            raise Depth2ImgError(f"depth2img arg 'depth_image': {error}") from error
    raise Depth2ImgError(f"depth2img arg 'depth_image' has unsupported type {type(value).__name__}")


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
    ):
        self.args = args
        self.geometry = geometry
        self.estimator = estimator
        self.cache = cache if cache is not None else DepthCache()
        self.init_images = init_images
        self.inpainting = inpainting
        self.uploaded = decode_depth_argument(args.depth_image) if args.source == "upload" else None
        self.last_depth: np.ndarray | None = None  # the processed map of the first sample, for outputs

    # ---- the hook the host calls ----
    def conditioning(self, latent: torch.Tensor, source_image: torch.Tensor | None = None) -> torch.Tensor:
        """Depth conditioning [B, 1, h, w] for `latent` [B, C, h, w], in its dtype and on its device."""
        batch = latent.shape[0]
        maps = self._depth_maps(batch, source_image)
        if len(maps) == 1 and batch > 1:
            maps = maps * batch
        if len(maps) != batch:
            raise Depth2ImgError(f"got {len(maps)} depth maps for a batch of {batch}")
        self.last_depth = maps[0] if isinstance(maps[0], np.ndarray) else maps[0].numpy()
        size = tuple(latent.shape[2:])
        if all(isinstance(m, torch.Tensor) for m in maps):  # straight from the estimator: one batched resize
            return depth_conditioning(torch.stack(maps), size, device=latent.device, dtype=latent.dtype)
        parts = [
            depth_conditioning(np.ascontiguousarray(m), size, device=latent.device, dtype=latent.dtype) for m in maps
        ]
        return torch.cat(parts)

    # ---- where the depth comes from ----
    def _depth_maps(self, batch: int, source_image: torch.Tensor | None) -> list:
        if self.uploaded is not None:
            return [self._fit(depthmap.postprocess(self.uploaded, **self.args.postprocess_kwargs()), None)]
        if self.estimator is None:
            raise Depth2ImgError("no depth estimator: load an SD 2 depth checkpoint or upload a depth map")
        if self.inpainting and self.init_images:
            return [self._whole_image_depth(image) for image in self.init_images]
        if source_image is None:
            raise Depth2ImgError(
                "Depth2Img has no image to estimate depth from: in txt2img, choose 'upload a depth map'"
            )
        depth = self.cache.estimate(self.estimator, source_image).cpu()
        if _uses_defaults(self.args):
            return list(depth)  # bit-exact with the native path when nothing is post-processed
        return [depthmap.postprocess(d.numpy(), **self.args.postprocess_kwargs()) for d in depth]

    def _whole_image_depth(self, image: Image.Image) -> np.ndarray:
        rgb = _flatten_rgb(image)
        tensor = midas.images_to_tensor(rgb)
        depth = self.cache.estimate(self.estimator, tensor).cpu()[0].numpy()
        depth = depthmap.postprocess(depth, **self.args.postprocess_kwargs())
        return self._fit(depth, rgb.size)

    def _fit(self, depth: np.ndarray, image_size: tuple[int, int] | None) -> np.ndarray:
        """Apply the job's geometry to a depth map of the whole init image (or the uploaded map)."""
        geometry = self.geometry
        if geometry.crop_region is not None:
            # Crop box is in init-image pixels; the map may have another resolution with the same aspect.
            src_w, src_h = image_size or (self.init_images[0].size if self.init_images else depth.shape[::-1])
            x1, y1, x2, y2 = geometry.crop_region
            sx, sy = depth.shape[1] / src_w, depth.shape[0] / src_h
            box = (int(round(x1 * sx)), int(round(y1 * sy)), int(round(x2 * sx)), int(round(y2 * sy)))
            cropped = depth[box[1] : max(box[3], box[1] + 1), box[0] : max(box[2], box[0] + 1)]
            return depthmap.fit_aspect(cropped, geometry.width, geometry.height, depthmap.ResizeMode.RESIZE_AND_FILL)
        mode = geometry.resize_mode if geometry.resize_mode in (0, 1, 2) else 0
        return depthmap.fit_aspect(depth, geometry.width, geometry.height, mode)


DEPTH_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".exr", ".jpg", ".jpeg", ".webp")


def find_depth_for(depth_dir: str | Path, input_path: str | Path) -> Path | None:
    """The depth map in `depth_dir` with the input image's file name (any supported suffix), if any."""
    folder = Path(depth_dir)
    stem = Path(input_path).stem
    for suffix in DEPTH_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def depth_to_png16_image(depth: np.ndarray) -> Image.Image:
    """A 16-bit grayscale PIL image (mode I;16) of a depth map: PNG keeps all 16 bits."""
    image = Image.fromarray(depthmap.to_uint16(depth))  # uint16 arrays become mode I;16
    return image
