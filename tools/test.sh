#!/usr/bin/env bash
# Set up both environments and run the whole test suite in each (CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh current
bash tools/setup.sh webui
.venv/bin/ruff check .
echo "== tests: current releases (.venv)"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
echo "== tests: WebUI v1.10.1 pins + Stability's ldm (.venv-webui)"
.venv-webui/bin/python -m pytest -q -p no:cacheprovider "$@"
