"""A speed ratio means something only when both sides did the same work: each bench checks that first.

`require_same_work(what, ours, reference, largest=..., mean=...)` compares two outputs (PIL images, arrays, tensors,
or lists of them): the same shape, and where the same weights and seed are used the largest and/or the mean absolute
difference within the stated tolerance (in the output's own units: 0-255 for images). Otherwise it raises
`NotSameWork`, which ends the bench with a message instead of a ratio. Written here: no library compares PIL
images, arrays and tensors alike for a bench.
"""

from __future__ import annotations

import numpy as np


class NotSameWork(SystemExit):
    """Both sides of a bench did not do the same work: no ratio is printed."""

    def __init__(self, message: str):
        super().__init__(f"bench refused: {message}; no ratio printed (it would compare unequal work)")


def as_array(output) -> np.ndarray:
    """An output as a float64 array: PIL images as their pixels, tensors moved to the CPU."""
    if isinstance(output, (list, tuple)):
        return np.stack([as_array(item) for item in output])
    if hasattr(output, "detach"):
        return output.detach().float().cpu().numpy().astype(np.float64)
    return np.asarray(output, dtype=np.float64)


def require_same_work(
    what: str, ours, reference, largest: float | None = None, mean: float | None = None
) -> tuple[float, float]:
    """(largest, mean) absolute difference of ours against reference; raises NotSameWork when the shapes differ,
    either side is not finite, or a difference passes its tolerance (None: not checked)."""
    a, b = as_array(ours), as_array(reference)
    if a.shape != b.shape:
        raise NotSameWork(f"{what}: outputs of shape {a.shape} against the reference's {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise NotSameWork(f"{what}: an output is not finite")
    difference = np.abs(a - b)
    found = (float(difference.max()), float(difference.mean())) if a.size else (0.0, 0.0)
    for name, value, tolerance in (("largest", found[0], largest), ("mean", found[1], mean)):
        if tolerance is not None and value > tolerance:
            raise NotSameWork(f"{what}: the {name} difference is {value:.4g} (tolerance {tolerance:g})")
    return found
