#!/usr/bin/env bash
# openpi's π0.5 on LIBERO (issue 25): its pi05_libero input / output transforms on the observations its LIBERO client
# sent (tests/fixtures/peers/openpi_libero, tools/peers/openpi_libero_envs.sh), with the shared tiny tokenizer
# (tests/fixtures/peers/tokens, tools/peers/tokens_peer.sh), into tests/fixtures/peers/openpi_pi05_libero;
# tests/test_peer_openpi_pi05.py reads them. A few seconds.
#   bash tools/peers/openpi_pi05_libero.sh [OPENPI_SRC] [OUT]
# openpi's venv: numpy, pydantic, numpydantic, einops (tools/peers/openpi_conventions.py), sentencepiece, pillow;
# openpi_client: PyPI openpi-client 0.1.2 on a path of its own (as openpi_libero_envs.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:-/work/peers/openpi-src/src}
OUT=${2:-tests/fixtures/peers/openpi_pi05_libero}
OPENPI_PY=${OPENPI_PY:-/work/peers/openpi-venv/bin/python}
PKG=${OPENPI_CLIENT_DIR:-/work/peers/openpi-client-pkg}
if [ ! -d "$PKG/openpi_client" ]; then
  .venv/bin/pip install -q --no-deps --target "$PKG" "openpi-client==0.1.2"
fi
"$OPENPI_PY" -m pip install -q "sentencepiece==0.2.3" pillow
test -f tests/fixtures/peers/tokens/paligemma_tiny.model || bash tools/peers/tokens_peer.sh "$SRC"
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$OPENPI_PY" tools/peers/openpi_pi05_libero.py --openpi-src "$SRC" \
  --openpi-client "$PKG" --out "$OUT"
