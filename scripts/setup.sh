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
# torch first, pinned to its CPU build: with it installed, trainlab's loose `torch>=2.2` needs
# nothing more. On PyPI a plain `torch==X` on Linux is the CUDA build (gigabytes of nvidia-*
# wheels), so ask for the `+cpu` local version: it comes from a local wheel folder or an index
# configured in pip (find-links / extra-index-url) when there is one, and otherwise from
# PyTorch's own CPU index.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}+cpu" \
        || .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}+cpu" \
            --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "trainlab is installed in .venv: run .venv/bin/trainlab --help"
