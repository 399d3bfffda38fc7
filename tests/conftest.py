"""Shared test set-up: offline by force, and the tiny depth checkpoint built once per run."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

_real_connect = socket.socket.connect
OUTSIDE_CONNECTIONS: list[object] = []


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and (host.startswith("127.") or host in ("localhost", "::1")):
        return _real_connect(self, address)
    if self.family == getattr(socket, "AF_UNIX", None):
        return _real_connect(self, address)
    OUTSIDE_CONNECTIONS.append(address)
    raise OSError(f"test tried to open a network connection to {address}: everything must be offline")


socket.socket.connect = _guarded_connect


@pytest.fixture(autouse=True)
def _no_outside_connections():
    before = len(OUTSIDE_CONNECTIONS)
    yield
    assert OUTSIDE_CONNECTIONS[before:] == [], "a network connection was attempted"


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """The tiny depth checkpoint (real key layout, random weights) with its YAML beside it."""
    from depth2img.base.paths import cache_dir
    from depth2img.export.tiny import build_tiny_depth_checkpoint

    return build_tiny_depth_checkpoint(cache_dir() / "fixtures")
