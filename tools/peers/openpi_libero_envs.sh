#!/usr/bin/env bash
# The openpi LIBERO client peer (issue 25): openpi's own examples/libero/main.py (openpi 15a9616) with PyPI's
# openpi-client 0.1.2, run on the project's LIBERO (hf-libero + the offline assets of tools/setup_sims.sh, which
# cannot be installed a second time here), then its fixtures (tools/peers/openpi_libero_client.py) into
# tests/fixtures/peers/openpi_libero; tests/test_peer_envs.py reads them. ~2 minutes on 2 CPU cores.
#   bash tools/peers/openpi_libero_envs.sh [OPENPI_SRC] [OUT]
# OPENPI_SRC: a checkout of Physical-Intelligence/openpi (examples/libero/main.py is read from it).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:-/work/peers/openpi-src}
OUT=${2:-tests/fixtures/peers/openpi_libero}
PKG=${OPENPI_CLIENT_DIR:-/work/peers/openpi-client-pkg}   # openpi_client on its own path, not in the project's venv
if [ ! -d "$PKG/openpi_client" ]; then
  .venv/bin/pip install -q --no-deps --target "$PKG" "openpi-client==0.1.2"
fi
test -f "$SRC/examples/libero/main.py" || { echo "no openpi checkout at $SRC (examples/libero/main.py)" >&2; exit 1; }
PYTHONPATH="$PKG" LIBERO_CONFIG_PATH=${LIBERO_CONFIG_PATH:-.sims/libero} MUJOCO_GL=${MUJOCO_GL:-egl} \
  .venv/bin/python tools/peers/openpi_libero_client.py --openpi-src "$SRC" --out "$OUT"
