#!/usr/bin/env bash
# Isaac-GR00T N1.5's own evaluation video transforms on pirl's LIBERO renders (conventions.py isaac_gr00t): the
# fixtures of tests/test_peer_isaac_video.py, into tests/fixtures/peers/isaac_video. ~1 minute on 2 CPU cores.
#   bash tools/peers/isaac_gr00t_video.sh [ISAAC_SRC] [PEER_VENV] [OUT]
# ISAAC_SRC: a directory holding Isaac-GR00T's gr00t/data/transform/{video,base}.py and gr00t/data/{schema,
# embodiment_tags}.py (read one by one from NVIDIA/Isaac-GR00T: the whole repository is over 1 GB; its README.txt says
# which commit each came from), with empty package __init__.py files. PEER_VENV: Python 3.11 with Isaac-GR00T's pins
# from PyPI: torch 2.7.1, torchvision 0.22.1, albumentations 1.4.18, einops 0.8.1, numpy 1.26.4, pydantic 2.10.6,
# numpydantic 1.6.7, opencv-python-headless 4.11.0.86.
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:-/work/peers/isaac-gr00t-src}
VENV=${2:-/work/peers/isaac-venv}
OUT=${3:-tests/fixtures/peers/isaac_video}
test -f "$SRC/gr00t/data/transform/video.py" || { echo "error: no Isaac-GR00T files at $SRC (gr00t/data/transform/video.py)" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || { echo "error: no peer venv at $VENV (see the pins above)" >&2; exit 2; }
LIBERO_CONFIG_PATH=${LIBERO_CONFIG_PATH:-.sims/libero} MUJOCO_GL=${MUJOCO_GL:-egl} NO_ALBUMENTATIONS_UPDATE=1 \
  .venv/bin/python tools/peers/isaac_gr00t_video_fixtures.py --peer-python "$VENV/bin/python" --isaac-src "$SRC" --out "$OUT"
