#!/usr/bin/env bash
# The LeRobot env peer (issue 25): LeRobot 0.6.1 with its metaworld extra and hf-libero (its libero extra's LIBERO) in
# a venv of its own, then its fixtures (tools/peers/lerobot_envs.py: MetaWorld drawer-open / pick-place, LIBERO
# spatial task 0) into tests/fixtures/peers/lerobot_envs; tests/test_peer_envs.py reads them. ~5 minutes.
#   bash tools/peers/lerobot_envs.sh [VENV] [OUT]
# LeRobot 0.6.1 needs Python >= 3.12 (pyenv's 3.12 here); pip brings torch 2.11 (its CUDA build, run on the CPU)
# and metaworld 3.0.0 (LeRobot's pin). mujoco is pinned to 3.3.0 (ours): pip's newest, 4.0.1, breaks metaworld
# 3.0.0 (reset_mocap_welds: "could not broadcast input array from shape (11,) into shape (12,)"), and its
# mujoco-core / mujoco-studio wheels must go with it or `import mujoco` looks for libmujoco.so.4.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-/work/peers/lerobot061-venv}
OUT=${2:-tests/fixtures/peers/lerobot_envs}
PY312=${PY312:-$(ls -d ~/.pyenv/versions/3.12*/bin/python 2>/dev/null | head -1)}
if [ ! -x "$VENV/bin/python" ]; then
  "${PY312:?no Python 3.12 found: set PY312}" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "lerobot[metaworld]==0.6.1" "hf-libero==0.1.4"
"$VENV/bin/pip" uninstall -q -y mujoco-core mujoco-studio mujoco-studio-wasm 2>/dev/null || true
"$VENV/bin/pip" install -q --force-reinstall --no-deps "mujoco==3.3.0"
"$VENV/bin/pip" install -q "absl-py" "etils[epath]"   # mujoco 3.3.0's own dependencies
# LIBERO: the project's config and offline scene assets (tools/setup_sims.sh), found as common/envs.py finds them
ASSETS=$(LIBERO_CONFIG_PATH=.sims/libero .venv/bin/python -c "import common.envs as E; print(E._libero_assets_dir() or '')" 2>/dev/null | tail -1)
LIBERO_ASSETS=$ASSETS LIBERO_CONFIG_PATH=${LIBERO_CONFIG_PATH:-$PWD/.sims/libero} MUJOCO_GL=${MUJOCO_GL:-egl} \
  "$VENV/bin/python" tools/peers/lerobot_envs.py --out "$OUT" --libero 10
