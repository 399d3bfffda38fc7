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
# Here the independent references (Stability's ldm, open_clip) must be importable: missing means failed.
DEPTH2IMG_REQUIRE_REFERENCES=1 .venv-webui/bin/python -m pytest -q -p no:cacheprovider "$@"
