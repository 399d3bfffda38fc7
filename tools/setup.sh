#!/usr/bin/env bash
# Set up a Python environment for this repo. Idempotent: a finished environment is reused.
#   bash tools/setup.sh          -> .venv        (current releases: the CLI, the default tests)
#   bash tools/setup.sh webui    -> .venv-webui  (the WebUI v1.10.1 pins + Stability's ldm, for parity tests)
# Quiet unless something fails: pip's output goes to a log that is printed (and kept) on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:-current}"

# The WebUI runs Python 3.10: env (b) uses it where the machine has it (on PATH or under pyenv).
find_python310() {
  local p
  for p in "$(command -v python3.10 2>/dev/null || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10; do
    if [ -n "$p" ] && [ -x "$p" ] && "$p" -c 'import venv' >/dev/null 2>&1; then echo "$p"; return 0; fi
  done
  return 1
}

case "$kind" in
  current) venv=.venv; reqs=requirements.txt; torch_pkgs=(torch==2.13.0); python="${PYTHON:-python3}" ;;
  webui)
    venv=.venv-webui; reqs=requirements-webui-pins.txt; torch_pkgs=(torch==2.1.2 torchvision==0.16.2)
    if [ -n "${PYTHON_WEBUI:-}" ]; then python="$PYTHON_WEBUI"
    elif python="$(find_python310)"; then :
    else
      python=python3
      echo "warning: no Python 3.10 found (the WebUI's); building $venv with $(python3 --version 2>&1)." \
           "Install python3.10 or set PYTHON_WEBUI to test on the WebUI's Python." >&2
    fi ;;
  *) echo "usage: bash tools/setup.sh [current|webui]" >&2; exit 2 ;;
esac

# The app's browser tests drive Debian's chromium (Playwright's own browser download fails offline).
if [ "$kind" = current ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (apt-get) for the app's browser tests ..." >&2
    apt_log="$(mktemp -t depth2img-apt.XXXXXX)"
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } >"$apt_log" 2>&1; then
      cat "$apt_log" >&2; echo "set-up failed: apt-get install chromium" >&2; exit 1
    fi
    rm -f "$apt_log"
  else
    echo "warning: chromium is missing and cannot be installed here (needs root and apt-get);" \
         "the app's browser tests will fail. Install Debian's chromium package." >&2
  fi
fi

stamp="$venv/.depth2img-setup"
want="$( (cat "$reqs" tools/setup.sh; "$python" --version 2>&1) | sha1sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

# A full disk otherwise shows up as pip's "No space left on device" halfway through.
# Measured: .venv about 2 GB; .venv-webui about 5 GB (torch 2.1.2 is a CUDA build) plus pip's download.
case "$kind" in current) need_gb=4 ;; webui) need_gb=9 ;; esac
for dir in . "${TMPDIR:-/tmp}"; do
  free_kb="$(df -Pk "$dir" | awk 'NR == 2 {print $4}')"
  if [ -n "$free_kb" ] && [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "set-up failed: $venv needs about $need_gb GB free on $(cd "$dir" && pwd)," \
         "which has $((free_kb / 1024)) MB. Free some space (old clones, /tmp) and run again." >&2
    exit 1
  fi
done

echo "setting up $venv ($kind, $("$python" --version 2>&1)) ..." >&2
log="$(mktemp -t depth2img-setup.XXXXXX)"
run() {
  if ! "$@" >>"$log" 2>&1; then
    echo "set-up failed: $*" >&2
    cat "$log" >&2
    echo "(log kept at $log)" >&2
    exit 1
  fi
}
rm -rf "$venv"
run "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location)
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
run "${pip[@]}" "${torch_pkgs[@]}"
run "${pip[@]}" -r "$reqs"
# Only open_clip's tokenizer vocabulary is needed in (a); its deps would replace the CPU torch.
if [ "$kind" = current ]; then
  run "${pip[@]}" --no-deps open-clip-torch
else
  # Stability's ldm package (the code the WebUI runs for this model), for reference parity tests.
  run "${pip[@]}" --no-deps stable-diffusion-sdkit
fi
rm -f "$log"
echo "$want" > "$stamp"
