"""The independent references tests compare with: Stability's `ldm` (stable-diffusion-sdkit) and open_clip.

They are skipped where they are not installed (env (a), current releases), and required in env (b), the WebUI's
pins, where tools/test.sh sets DEPTH2IMG_REQUIRE_REFERENCES=1: a broken install there fails the run instead of
skipping the parity tests and leaving CI green.
"""

from __future__ import annotations

import importlib
import os

import pytest

REQUIRED = os.environ.get("DEPTH2IMG_REQUIRE_REFERENCES") == "1"


def reference(module: str):
    """The module, imported; skips the test module where absent, unless references are required."""
    if REQUIRED:
        return importlib.import_module(module)
    return pytest.importorskip(module, exc_type=ImportError)
