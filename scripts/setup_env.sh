#!/usr/bin/env bash
# Create or reuse the project's virtualenv and install the pinned dependencies and the package.
# Usage: source scripts/setup_env.sh [extra]   (extra: dev for the test tools)
# RNLVIDEO_VENV chooses the virtualenv's location (default: .venv in the repository).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RNLVIDEO_VENV:-$repo/.venv}"
extra="${1:-}"
python_bin="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtualenv $venv"
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.rnlvideo-installed${extra:+-$extra}"
want="$(cat "$repo/constraints.txt" "$repo/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing pinned dependencies (constraints.txt) and rnlvideo${extra:+[$extra]}"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c "$repo/constraints.txt" \
    -e "$repo${extra:+[$extra]}"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
