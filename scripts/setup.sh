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
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "trainlab is installed in .venv: run .venv/bin/trainlab --help"
