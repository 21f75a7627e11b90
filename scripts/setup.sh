#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with timm-longtail and its test tools.
# torch is pinned by constraints.txt to the CPU wheel this machine carries (2.13.0); without the
# pin pip would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -c constraints.txt -e '.[dev]'
.venv/bin/python -c "import timm_longtail, timm; print('timm-longtail', timm_longtail.__version__, 'with timm', timm.__version__, 'ready')"
