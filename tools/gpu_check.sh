#!/usr/bin/env bash
# GPU check: CUDA tests, the engine in float16/bfloat16 against float32, the estimators in float16 and across
# devices, full-size benchmarks; one markdown table at the end (tools/gpu_check.py says what each part does).
#
#   bash tools/gpu_check.sh          on a CUDA machine (exit status 1 if a check failed)
#   bash tools/gpu_check.sh --cpu    everything that can run on the CPU (CI runs this: tests/test_gpu_check.py)
#   more options: bash tools/gpu_check.sh --help
#
# The GPU machine has torch (CUDA), transformers, safetensors, timm and OpenCV but no diffusers, omegaconf or
# open-clip-torch, and no network. Carry those as wheels in .whl/, which this script installs into /tmp/site
# (GPU_CHECK_SITE) first. Download them here, for the GPU machine's Python 3.12 (all four are pure Python; the versions are .venv's;
# stable-diffusion-sdkit ships Stability's ldm, for the estimator benchmark; --no-deps: the machine has the rest):
#
#   echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"     # keep the wheels out of git
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl diffusers==0.42.1 omegaconf==2.4.0 open-clip-torch==3.3.0 stable-diffusion-sdkit==2.1.5
#
# and name .whl in the device call's carry. PYTHON picks the interpreter (default python3; CI's test passes .venv's).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
SITE="${GPU_CHECK_SITE:-/tmp/site}"
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
exec "$PYTHON" tools/gpu_check.py "$@"
