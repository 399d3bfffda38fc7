"""Depth map -> the UNet's fifth input channel.

Same arithmetic as Stability's `LatentDepth2ImageDiffusion.get_input` (ldm/models/diffusion/ddpm.py):
bicubic resize to the latent size (align_corners=False), then min-max to [-1, 1]. Two deliberate
differences from the hosts, which get them wrong:
- per sample: each batch item is normalized by its own range (the WebUI uses one range for the batch);
- a flat map (max == min) gives -1 everywhere, the value the reference's training formula
  2 * (d - min) / (max - min + 0.001) - 1 yields for it, instead of 0/0 = NaN (WebUI and diffusers).
For every non-flat map the result equals the WebUI's and diffusers' (plain max - min denominator).

A given range instead (`depth_range=(lo, hi)`, in the units of the processed map) maps lo -> -1 and hi -> +1
and clamps: frames of a sequence then share one scale instead of each being stretched to its own min-max.
"""

from __future__ import annotations

import numpy as np
import torch

from depth2img.base.devices import BackendCaps, bicubic_resize

# The value a flat (constant) depth map conditions on; see the module docstring.
FLAT_CONDITIONING = -1.0
# A span this small relative to the map's magnitude is treated as flat: dividing by it would only
# amplify rounding noise into a random pattern.
FLAT_RELATIVE_SPAN = 1e-6


def as_depth_batch(depth: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Accept HxW, BxHxW or Bx1xHxW; return float32 Bx1xHxW."""
    tensor = torch.from_numpy(np.ascontiguousarray(depth)) if isinstance(depth, np.ndarray) else depth
    if tensor.ndim == 2:
        tensor = tensor[None, None]
    elif tensor.ndim == 3:
        tensor = tensor[:, None]
    elif tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(f"depth must be HxW, BxHxW or Bx1xHxW, got shape {tuple(tensor.shape)}")
    return tensor.float()


def normalize_per_sample(depth: torch.Tensor) -> torch.Tensor:
    """Min-max each sample of Bx1xHxW to [-1, 1]; flat samples become FLAT_CONDITIONING."""
    if not torch.isfinite(depth).all():
        raise ValueError("depth map contains NaN or infinite values; fill or remove them before using the map")
    depth_min = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    depth_max = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
    span = depth_max - depth_min
    magnitude = torch.maximum(depth_max.abs(), depth_min.abs())
    flat = span <= FLAT_RELATIVE_SPAN * magnitude
    safe_span = torch.where(flat, torch.ones_like(span), span)
    normalized = 2.0 * (depth - depth_min) / safe_span - 1.0
    return torch.where(flat, torch.full_like(normalized, FLAT_CONDITIONING), normalized)


def check_depth_range(depth_range) -> tuple[float, float]:
    """(lo, hi) as two finite floats with lo < hi, or ValueError saying what is wrong."""
    try:
        low, high = (float(v) for v in depth_range)
    except (TypeError, ValueError) as error:
        raise ValueError(f"depth range must be two numbers (lo, hi), got {depth_range!r}") from error
    if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
        raise ValueError(f"depth range needs finite lo < hi (in the processed map's units), got ({low}, {high})")
    return low, high


def normalize_to_range(depth: torch.Tensor, depth_range: tuple[float, float]) -> torch.Tensor:
    """Map lo -> -1, hi -> +1 linearly and clamp to [-1, 1]: one scale for every sample (no per-sample min-max)."""
    if not torch.isfinite(depth).all():
        raise ValueError("depth map contains NaN or infinite values; fill or remove them before using the map")
    low, high = check_depth_range(depth_range)
    return (2.0 * (depth - low) / (high - low) - 1.0).clamp(-1.0, 1.0)


def depth_conditioning(
    depth: torch.Tensor | np.ndarray,
    latent_size: tuple[int, int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    caps: BackendCaps | None = None,
    depth_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Depth (larger = nearer) -> conditioning [B, 1, h, w] in [-1, 1] on `device` in `dtype`.

    depth_range None: each sample min-max normalized (the reference's behaviour); (lo, hi): lo -> -1,
    hi -> +1, clamped, the same for every sample. Computed in float32 on the depth's device (bicubic falls
    back to the CPU where the backend lacks it), then cast: half precision never enters the resize or the
    division.
    """
    batch = as_depth_batch(depth)
    if device is not None:
        batch = batch.to(device)
    resized = bicubic_resize(batch, tuple(latent_size), caps)
    if depth_range is None:
        return normalize_per_sample(resized).to(dtype)
    return normalize_to_range(resized, depth_range).to(dtype)
