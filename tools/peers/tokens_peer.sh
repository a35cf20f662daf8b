#!/usr/bin/env bash
# The prompt-token peers (issue 25): one tiny SentencePiece model and the prompts (pirl's venv), then the token ids
# and masks openpi's own tokenizer / transforms and LeRobot 0.6.1's own processors make of them, each in its venv
# (tools/peers/tokens_peer.py), into tests/fixtures/peers/tokens; tests/test_peer_tokens.py reads them. ~1 minute.
#   bash tools/peers/tokens_peer.sh [OPENPI_SRC] [OUT]
# OPENPI_SRC: openpi's src/ (15a9616); its venv needs numpy, pydantic, numpydantic, einops (openpi_conventions.py)
# and sentencepiece. LeRobot's venv: tools/peers/lerobot_envs.sh builds it; sentencepiece is added here (transformers
# needs it to convert a SentencePiece model).
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${1:-/work/peers/openpi-src/src}
OUT=${2:-tests/fixtures/peers/tokens}
OPENPI_PY=${OPENPI_PY:-/work/peers/openpi-venv/bin/python}
LEROBOT_PY=${LEROBOT_PY:-/work/peers/lerobot061-venv/bin/python}
"$OPENPI_PY" -m pip install -q "sentencepiece==0.2.3"
"$LEROBOT_PY" -m pip install -q "sentencepiece==0.2.3"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
LIBERO_CONFIG_PATH=${LIBERO_CONFIG_PATH:-.sims/libero} .venv/bin/python tools/peers/tokens_peer.py prepare --out "$OUT"
"$OPENPI_PY" tools/peers/tokens_peer.py openpi --openpi-src "$SRC" --out "$OUT"
"$LEROBOT_PY" tools/peers/tokens_peer.py lerobot --out "$OUT"
