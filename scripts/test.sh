#!/usr/bin/env bash
# The test suite: set up (with the dev tools), lint, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh dev

ruff check rnlvideo tools tests datasets
ruff format --check rnlvideo tools tests datasets
python -m pytest -q "$@"
