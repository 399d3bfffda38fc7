#!/usr/bin/env bash
# Set up a Python environment for this repo. Idempotent: a finished environment is reused.
#   bash tools/setup.sh          -> .venv        (current releases: the CLI, the default tests)
#   bash tools/setup.sh webui    -> .venv-webui  (the WebUI v1.10.1 pins + Stability's ldm, for parity tests)
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-current}"
python="${PYTHON:-python3}"

case "$kind" in
  current) venv=.venv; reqs=requirements.txt; torch_pkgs=(torch==2.13.0) ;;
  webui) venv=.venv-webui; reqs=requirements-webui-pins.txt; torch_pkgs=(torch==2.1.2 torchvision==0.16.2) ;;
  *) echo "usage: bash tools/setup.sh [current|webui]" >&2; exit 2 ;;
esac

stamp="$venv/.depth2img-setup"
want="$(cat "$reqs" tools/setup.sh | sha1sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

echo "setting up $venv ($kind) ..." >&2
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
"${pip[@]}" "${torch_pkgs[@]}"
"${pip[@]}" -r "$reqs"
# Only open_clip's tokenizer vocabulary is needed in (a); its deps would replace the CPU torch.
if [ "$kind" = current ]; then
  "${pip[@]}" --no-deps open-clip-torch
else
  # Stability's ldm package (the code the WebUI runs for this model), for reference parity tests.
  "${pip[@]}" --no-deps stable-diffusion-sdkit
fi
echo "$want" > "$stamp"
