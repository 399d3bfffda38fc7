"""Where the extension keeps its files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "models"
CONFIGS_DIR = MODELS_DIR / "configs"
# The public Stability config for 512-depth-ema, shipped so no user downloads and renames a YAML.
SHIPPED_DEPTH_CONFIG = CONFIGS_DIR / "v2-midas-inference.yaml"
# Where users may drop depth checkpoints for the CLI (same name as the WebUI's folder).
USER_CHECKPOINT_DIR = MODELS_DIR / "Stable-diffusion"
DEMO_DIR = MODELS_DIR / "demo"


def cache_dir() -> Path:
    """Git-ignored folder for derived files (tokenizer files, test fixtures)."""
    root = os.environ.get("DEPTH2IMG_CACHE")
    path = Path(root) if root else REPO_ROOT / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path
