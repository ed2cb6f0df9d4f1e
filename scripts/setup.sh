#!/usr/bin/env bash
# Set up trainlab on a fresh machine: a virtual environment in .venv with the CPU build of
# PyTorch (pinned, so pip never pulls the multi-gigabyte CUDA wheels) and trainlab itself.
# Safe to run again: it reuses .venv and installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: with it installed, trainlab's loose `torch>=2.2` needs nothing more.
# On Linux x86-64, PyPI's plain `torch==X` is the CUDA build (gigabytes of nvidia-* wheels), so
# ask for the `+cpu` build: from a local wheel folder or an index configured in pip when there is
# one, else from PyTorch's CPU index. macOS and ARM wheels on PyPI are CPU-only already.
install_torch() {
    .venv/bin/python -m pip install --quiet --retries 1 --timeout 60 "$@"
}
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
        install_torch "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
            || install_torch "torch==${TORCH_VERSION}+cpu" --index-url https://download.pytorch.org/whl/cpu
    else
        install_torch "torch==${TORCH_VERSION}"
    fi
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "trainlab is installed in .venv: run .venv/bin/trainlab --help (or 'source .venv/bin/activate' once per shell, then trainlab ...)"
