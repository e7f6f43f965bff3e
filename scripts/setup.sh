#!/usr/bin/env bash
# One-command setup: system audio tools (when root and missing), ./.venv, the project with every extra.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v flite >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing espeak-ng and flite (offline TTS with word times) with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite >/dev/null
    else
        echo "setup: espeak-ng or flite not found; install them (e.g. 'sudo apt-get install espeak-ng flite')" \
             "for speech synthesis" >&2
    fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# The CPU build of torch first: a bare `torch` requirement would pull several GB of CUDA wheels.
# On a GPU machine, install the torch build you want before running this script.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/python -m pip install -q "torch==${SPIRITLENS_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[all]"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "setup: done (.venv ready; activate with 'source .venv/bin/activate')"
