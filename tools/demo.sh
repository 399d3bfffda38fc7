#!/usr/bin/env bash
# Set up .venv and run the main job: depth-guided img2img with the CLI on the bundled example.
# Without models/Stable-diffusion/512-depth-ema.{safetensors,ckpt} the embedded demo checkpoint is used
# (real architecture, tiny sizes, random weights: the picture is noise, the pipeline is real).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh current
mkdir -p outputs
.venv/bin/python -m depth2img generate --image examples/scene.png --prompt "a cozy living room, photo" \
  --strength 1.0 --steps 20 --seed 42 --out outputs/demo.png --save-depth outputs/demo-depth.png "$@"
