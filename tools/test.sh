#!/usr/bin/env bash
# Set up both environments and run the whole test suite in each (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh current
bash tools/setup.sh webui
.venv/bin/ruff check .
echo "== tests: current releases (.venv)"
# Here the app (gradio) and its browser (chromium + Playwright), and Ray (sequence --ray), must be present:
# missing means failed.
DEPTH2IMG_REQUIRE_APP=1 DEPTH2IMG_REQUIRE_RAY=1 .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
echo "== tests: WebUI v1.10.1 pins + Stability's ldm (.venv-webui)"
# Here the independent references (Stability's ldm, open_clip) must be importable: missing means failed.
# ATEN_CPU_CAPABILITY=default: torch's generic CPU kernels, standing in for another processor than (a) runs on
# (CI machines differ: Intel, AMD), at no extra cost. Override it by setting the variable yourself.
ATEN_CPU_CAPABILITY="${ATEN_CPU_CAPABILITY:-default}" DEPTH2IMG_REQUIRE_REFERENCES=1 \
  .venv-webui/bin/python -m pytest -q -p no:cacheprovider "$@"
