#!/usr/bin/env bash
# GR00T N1.5's input side against LeRobot 0.5.1's own processor pipeline on the REAL Eagle 2.5 processor files:
# tools/peers/groot_eagle_fixtures.py in the GR00T peer's venv (made by tools/peers/groot_peer.sh), fixtures into
# tests/fixtures/peers/groot_eagle.
#   bash tools/peers/groot_eagle_peer.sh <Isaac-GR00T N1.5>/gr00t/model/backbone/eagle2_hg_model [VENV] [OUT]
#   bash tools/peers/groot_eagle_peer.sh --lerobot-only [VENV] [OUT]   (only the LeRobot dir's processor files:
#        <OUT>/lerobot + lerobot_reference.*, no Eagle files needed)
set -euo pipefail
cd "$(dirname "$0")/../.."
EAGLE=${1:?the eagle2_hg_model dir of an Isaac-GR00T N1.5 checkout, or --lerobot-only}
VENV=${2:-/work/peers/lerobot051-venv}
OUT=${3:-tests/fixtures/peers/groot_eagle}
[ -x "$VENV/bin/python" ] || { echo "error: no peer venv at $VENV: make it with bash tools/peers/groot_peer.sh" >&2; exit 2; }
if [ "$EAGLE" = "--lerobot-only" ]; then
  "$VENV/bin/python" tools/peers/groot_eagle_fixtures.py --lerobot-only --out "$OUT"
else
  "$VENV/bin/python" tools/peers/groot_eagle_fixtures.py --isaac-eagle "$EAGLE" --out "$OUT"
fi
