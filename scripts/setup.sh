#!/usr/bin/env bash
# One-command setup: system tools (when root and missing), ./.venv, the project with every extra.
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
# Headless Chromium renders the HTML views offline; the tests use it to check hostile data stays text.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (headless rendering of the circuitsvis pages in the tests) with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        || echo "setup: chromium could not be installed; its browser test will be skipped" >&2
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first (a torch already in .venv is kept), then the project, which then keeps that torch.
# `pip install torch==X` installs whatever build the configured package index serves: from PyPI on
# Linux that is the CUDA build (several GB of nvidia-* wheels); a local wheel folder or pip config
# may serve the CPU build. For the CPU build from PyTorch's own index, run for example
#   SPIRITLENS_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
TORCH_SPEC="torch==${SPIRITLENS_TORCH_VERSION:-2.13.0}"
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    if [ -n "${SPIRITLENS_TORCH_INDEX_URL:-}" ]; then
        echo "setup: installing $TORCH_SPEC from $SPIRITLENS_TORCH_INDEX_URL"
        .venv/bin/python -m pip install -q "$TORCH_SPEC" --index-url "$SPIRITLENS_TORCH_INDEX_URL"
    else
        echo "setup: installing $TORCH_SPEC from pip's configured index (PyPI on Linux serves the CUDA build;" \
             "set SPIRITLENS_TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU build)"
        .venv/bin/python -m pip install -q "$TORCH_SPEC"
    fi
fi
.venv/bin/python -c "import torch; print('setup: torch', torch.__version__, '(CUDA', torch.version.cuda or 'none', 'build)')"
.venv/bin/python -m pip install -q -e ".[all]"
# FCPE (Expressive pitch tokens): torchfcpe declares torchaudio, whose PyPI wheel breaks transformers next to
# CPU torch; spiritlens never needs it (it resamples with soxr), so install torchfcpe without dependencies.
.venv/bin/python -m pip install -q --no-deps "torchfcpe==0.0.4"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "setup: done (.venv ready; activate with 'source .venv/bin/activate')"
