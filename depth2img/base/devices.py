"""Device and dtype rules shared by every step that touches tensors.

Real user failures this module exists for:
- OpenCV 'resize: src data type = 23 is not supported' — float16 arrays handed to cv2;
- 'Input type (MPSFloatType) and weight type (torch.FloatTensor) should be the same' — inputs not
  moved to where a model's weights are;
- ops a backend lacks (bicubic interpolation on MPS in older torch; some float16 CPU kernels).
Backend capabilities are plain data (BackendCaps) so each fallback branch is testable on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from depth2img.base.compat import torch_version


@dataclass(frozen=True)
class BackendCaps:
    """What a device can compute natively; anything else falls back to float32 on the CPU."""

    bicubic: bool = True  # F.interpolate(mode="bicubic") for float32 (conditioning computes in float32 only)


def backend_caps(device: torch.device | str) -> BackendCaps:
    device = torch.device(device)
    if device.type == "mps":
        # aten::upsample_bicubic2d has an MPS kernel only from torch 2.1 on.
        return BackendCaps(bicubic=torch_version() >= (2, 1))
    return BackendCaps()


def to_numpy_float32(tensor: torch.Tensor) -> np.ndarray:
    """A numpy copy OpenCV accepts: float32 on the CPU, whatever the tensor's dtype and device."""
    return tensor.detach().to(device="cpu", dtype=torch.float32).numpy()


def module_placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a model's weights are and in which dtype (its first floating-point parameter)."""
    for param in module.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return torch.device("cpu"), torch.float32


def bicubic_resize(x: torch.Tensor, size: tuple[int, int], caps: BackendCaps | None = None) -> torch.Tensor:
    """Bicubic resize of [B, C, H, W] (align_corners=False, as Stability's reference), computed in float32.

    float32 keeps the per-sample min-max that follows exact; the result keeps x's device, in float32.
    """
    caps = caps or backend_caps(x.device)
    x32 = x.float()
    if caps.bicubic:
        return torch.nn.functional.interpolate(x32, size=size, mode="bicubic", align_corners=False)
    resized = torch.nn.functional.interpolate(x32.cpu(), size=size, mode="bicubic", align_corners=False)
    return resized.to(x.device)
