"""Small version probes so one codebase runs on the WebUI's pins and on current releases."""

from __future__ import annotations

import re

import torch


def torch_version() -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)
