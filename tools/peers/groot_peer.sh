#!/usr/bin/env bash
# The GR00T N1.5 peer: LeRobot 0.5.1 (the last LeRobot with N1.5; 0.6.x ships N1.7) in a venv of its own,
# then its fixtures (tools/peers/groot_fixtures.py) into tests/fixtures/peers/groot.
#   bash tools/peers/groot_peer.sh [VENV] [OUT]
# LeRobot 0.5.1 needs Python >= 3.12 (pyenv's 3.12 here) and torch < 2.11 (PyPI serves the CUDA build of 2.10;
# it runs on the CPU). Only what its groot policy imports is installed: lerobot itself goes in with --no-deps
# (its full dependency list pulls in datasets, wandb, rerun, av, pynput, ... that the groot code never touches).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-/work/peers/lerobot051-venv}
OUT=${2:-tests/fixtures/peers/groot}
PY312=${PY312:-$(ls -d ~/.pyenv/versions/3.12*/bin/python 2>/dev/null | head -1)}
if [ ! -x "$VENV/bin/python" ]; then
  "${PY312:?no Python 3.12 found: set PY312}" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "torch==2.10.*" "transformers==5.3.0" "diffusers>=0.27.2,<0.36" "peft>=0.18,<1.0" \
  "einops>=0.8,<0.9" "huggingface-hub>=1.0,<2.0" "draccus==0.10.0" "numpy>=2.0,<2.3" safetensors Pillow \
  "timm>=1.0,<1.1" "dm-tree>=0.1.8,<1.0" "packaging<26" "gymnasium>=1.1.1,<2" termcolor "deepdiff>=7.0.1,<9" "accelerate>=1.10,<2" \
  "datasets>=4.0,<5.0" "av>=15.0.0,<16.0.0" "jsonlines>=4,<5" "imageio[ffmpeg]>=2.34,<3" "pyserial>=3.5,<4" \
  "opencv-python-headless>=4.9,<4.14" "setuptools<81"
"$VENV/bin/pip" install -q --no-deps "lerobot==0.5.1"
"$VENV/bin/python" tools/peers/groot_fixtures.py --out "$OUT"
