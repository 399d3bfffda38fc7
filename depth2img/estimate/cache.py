"""Estimate each unique image once: within a batch and across runs.

The WebUI runs MiDaS once per batch item on identical input (batch 4 = 4 forwards). Here identical
images in a batch share one forward, and results are kept in a small LRU keyed by the image's
content and the estimator, so a repeated run with the same init image estimates nothing.

One cache serves every caller of a host (jobs, preview, API requests), possibly from several threads:
each lookup-estimate-store runs under one lock.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

from depth2img.base.devices import to_numpy_float32


def image_key(image: torch.Tensor) -> str:
    """Content hash of one [3, H, W] image (its float32 CPU bytes and shape)."""
    data = to_numpy_float32(image)
    return hashlib.sha1(repr(data.shape).encode() + data.tobytes()).hexdigest()


class DepthCache:
    """A bounded, thread-safe LRU of estimated depth maps plus a count of all estimator calls (for benchmarks).

    Per-caller counts (e.g. one job's "estimator calls" infotext) come from `estimate(..., on_call=...)`:
    the total counts every caller's calls.
    """

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self.estimator_calls = 0
        # Held through the forward too: two threads asking for the same new image estimate it once.
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def estimate(self, estimator, images: torch.Tensor, on_call: Callable[[], None] | None = None) -> torch.Tensor:
        """Depth [B, h, w] float32 for images [B, 3, H, W] in [-1, 1], on the images' device.

        on_call: called once for each estimator call this request makes (0 or 1 times).
        """
        # Same pixels through the same weights give the same depth, whichever caller asks (preview, API, job).
        keys = [(estimator.cache_key, image_key(image)) for image in images]
        with self._lock:
            found = {key: self._entries[key] for key in keys if key in self._entries}
            unique_missing: dict[tuple[str, str], int] = {}
            for i, key in enumerate(keys):
                if key not in found:
                    unique_missing.setdefault(key, i)
            if unique_missing:
                # One estimator call for all images not cached yet, each unique image once.
                batch = images[list(unique_missing.values())]
                self.estimator_calls += 1
                if on_call is not None:
                    on_call()
                depths = estimator.estimate(batch)
                for key, depth in zip(unique_missing, depths, strict=True):
                    found[key] = depth.detach().to("cpu", torch.float32)
            for key in dict.fromkeys(keys):
                self._store(key, found[key])
        return torch.stack([found[key] for key in keys]).to(images.device)

    def _store(self, key: tuple[str, str], depth: torch.Tensor) -> None:
        self._entries[key] = depth
        self._entries.move_to_end(key)
        while len(self._entries) > max(0, int(self.max_entries)):
            self._entries.popitem(last=False)
