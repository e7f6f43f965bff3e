#!/usr/bin/env bash
# The main job (the Known experiment, by default on the toy SpiritLM), setting up ./.venv first if needed
# (scripts/ensure_setup.sh). Arguments go to `spiritlens experiment` (default: --out runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_setup.sh
if [ "$#" -eq 0 ]; then
    set -- --out runs/demo
fi
exec .venv/bin/spiritlens experiment "$@"
