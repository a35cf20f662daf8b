#!/usr/bin/env bash
# The RLinf env peer (issue 25): RLinf's own MetaWorld env wrapper and its openpi model-side transforms, run from
# RLinf's source (a3816b5) with its openpi fork (rlinf-openpi 0.1.1, PyPI) and openpi-client 0.1.2, then its fixtures
# (tools/peers/rlinf_envs.py: MetaWorld drawer-open / pick-place, 10 resets each) into tests/fixtures/peers/rlinf_envs;
# tests/test_peer_rlinf_envs.py reads them. ~2 minutes (+ ~5 for the venv the first time).
#   bash tools/peers/rlinf_envs.sh [RLINF_GIT_DIR] [OUT]
# RLINF_GIT_DIR: a bare clone of RLinf/RLinf (exported to $RLINF_SRC). The venv ($VENV) is an overlay on the LeRobot
# env peer's venv (tools/peers/lerobot_envs.sh: Python 3.12, metaworld 3.0.0, mujoco 3.3.0, torch, gymnasium,
# omegaconf), read through a .pth and left unchanged; it adds what RLinf's imports need (gym 0.26.2 for its vector-env
# module, ray for rlinf.config, sortedcontainers) and what openpi's transforms import (jax 0.5.3 CPU, flax, orbax,
# chex, ...), pinned to the LeRobot venv's versions of everything the two share.
set -euo pipefail
cd "$(dirname "$0")/../.."
GIT_DIR=${1:-/work/.mirror/RLinf+RLinf/repo}
OUT=${2:-tests/fixtures/peers/rlinf_envs}
BASE=${BASE:-/work/peers/lerobot061-venv}
VENV=${VENV:-/work/peers/rlinf-env-venv}
RLINF_SRC=${RLINF_SRC:-/work/peers/rlinf-src}
OPENPI=${OPENPI:-/work/peers/rlinf-openpi-0.1.1}
CLIENT=${CLIENT:-/work/peers/openpi-client-pkg}
test -x "$BASE/bin/python" || bash tools/peers/lerobot_envs.sh "$BASE"
if [ ! -x "$VENV/bin/python" ]; then
  "$(readlink -f "$BASE/bin/python")" -m venv "$VENV"
  echo "$BASE/lib/python3.12/site-packages" > "$VENV/lib/python3.12/site-packages/_lerobot061_venv.pth"
  "$BASE/bin/pip" freeze | grep -v "^-e\|@" > "$VENV/constraints.txt"
  "$VENV/bin/pip" install -q -c "$VENV/constraints.txt" "gym==0.26.2" "ray>=2.47" sortedcontainers \
    "jax==0.5.3" "jaxlib==0.5.3" "flax==0.10.2" "orbax-checkpoint==0.11.13" "chex==0.1.90" "beartype==0.19.0" \
    "jaxtyping==0.2.36" augmax numpydantic sentencepiece "ml-collections==1.0.0" tqdm-loggable dm-tree equinox tyro
fi
if [ ! -d "$RLINF_SRC/rlinf" ]; then
  mkdir -p "$RLINF_SRC" && git --git-dir="$GIT_DIR" archive HEAD | tar -x -C "$RLINF_SRC"
fi
if [ ! -d "$OPENPI/openpi" ]; then   # RLinf's openpi fork, its code only (its pins are RLinf's GPU stack)
  TMP=$(mktemp -d) && "$VENV/bin/pip" download -q --no-deps -d "$TMP" "rlinf-openpi==0.1.1"
  mkdir -p "$OPENPI" && (cd "$OPENPI" && unzip -q "$TMP"/rlinf_openpi-0.1.1-py3-none-any.whl)
fi
if [ ! -d "$CLIENT/openpi_client" ]; then
  "$VENV/bin/pip" install -q --no-deps --target "$CLIENT" "openpi-client==0.1.2"
fi
[ "${SETUP_ONLY:-0}" = 1 ] && exit 0   # tools/peers/rlinf_libero.sh: the venv and sources only
PYTHONPATH="$OPENPI:$CLIENT:$RLINF_SRC" JAX_PLATFORMS=cpu MUJOCO_GL=${MUJOCO_GL:-egl} \
  "$VENV/bin/python" tools/peers/rlinf_envs.py --rlinf-src "$RLINF_SRC" --rlinf-git "$GIT_DIR" --out "$OUT"
