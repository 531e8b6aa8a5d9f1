#!/usr/bin/env bash
# Create .venv in the repository and install l2g with its dev tools. torch is installed FIRST and
# pinned: a resolver free to pick another torch would download gigabytes of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.28.0}  # the torchvision that pairs with torch 2.13
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" "torch==${TORCH_VERSION}" \
  "torchvision==${TORCHVISION_VERSION}"
.venv/bin/python -c "import l2g, torch; print('l2g ready: torch', torch.__version__)"
