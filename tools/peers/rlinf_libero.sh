#!/usr/bin/env bash
# The RLinf LIBERO env peer (issue 25): RLinf's own LIBERO env (rlinf/envs/libero/libero_env.py) and its openpi
# model-side transforms, run from RLinf's source (a3816b5) with its openpi fork (rlinf-openpi 0.1.1) and openpi-client
# 0.1.2, then its fixtures (tools/peers/rlinf_libero.py: libero_spatial task 0, 10 resets; libero_10 task 0, 3) into
# tests/fixtures/peers/rlinf_libero; tests/test_peer_rlinf_libero.py reads them. ~4 minutes on 2 CPU cores.
#   bash tools/peers/rlinf_libero.sh [RLINF_GIT_DIR] [OUT]
# The venv and sources are tools/peers/rlinf_envs.sh's (made there if missing): an overlay on the LeRobot env peer's
# venv, which holds hf-libero 0.1.4, robosuite 1.4.0 and mujoco 3.3.0 (the versions pirl's venv runs). LIBERO's scene
# assets are the project's offline wheels (tools/setup_sims.sh), found as common/envs.py finds them; its config file
# is a temporary copy of .sims/libero's (RLinf rewrites it to point at the package it imports).
set -euo pipefail
cd "$(dirname "$0")/../.."
GIT_DIR=${1:-/work/.mirror/RLinf+RLinf/repo}
OUT=${2:-tests/fixtures/peers/rlinf_libero}
VENV=${VENV:-/work/peers/rlinf-env-venv}
RLINF_SRC=${RLINF_SRC:-/work/peers/rlinf-src}
OPENPI=${OPENPI:-/work/peers/rlinf-openpi-0.1.1}
CLIENT=${CLIENT:-/work/peers/openpi-client-pkg}
SETUP_ONLY=1 VENV=$VENV RLINF_SRC=$RLINF_SRC OPENPI=$OPENPI CLIENT=$CLIENT bash tools/peers/rlinf_envs.sh "$GIT_DIR"
ASSETS=$(LIBERO_CONFIG_PATH=.sims/libero .venv/bin/python -c "import common.envs as E; print(E._libero_assets_dir() or '')" 2>/dev/null | tail -1)
CONFIG=$(mktemp -d)
trap 'rm -rf "$CONFIG"' EXIT
cp .sims/libero/config.yaml "$CONFIG/"
PYTHONPATH="$OPENPI:$CLIENT:$RLINF_SRC" JAX_PLATFORMS=cpu MUJOCO_GL=${MUJOCO_GL:-egl} LIBERO_CONFIG_PATH=$CONFIG \
  "$VENV/bin/python" tools/peers/rlinf_libero.py --rlinf-src "$RLINF_SRC" --rlinf-git "$GIT_DIR" --assets "$ASSETS" \
  --out "$OUT"
