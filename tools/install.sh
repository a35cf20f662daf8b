#!/usr/bin/env bash
# One install for everything: a virtual environment in .venv (or $PIRL_VENV), the pinned Python
# packages under constraints.txt (torch stays 2.13.0: CPU wheel here, CUDA build on a GPU node),
# then the simulator set-up of tools/setup_sims.sh. Idempotent: run it again at any time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${PIRL_VENV:-$ROOT/.venv}"
t0=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade "pip>=24"
"$PY" -m pip install -q -c "$ROOT/constraints.txt" -r "$ROOT/requirements.txt"
# hf-libero / mani_skill pull in torchvision, whose PyPI build does not load beside torch 2.13.0
# ("operator torchvision::nms does not exist") and would break transformers' imports: remove it.
"$PY" -m pip uninstall -q -y torchvision 2>/dev/null || true
PYTHON="$PY" bash "$ROOT/tools/setup_sims.sh"
echo "[install] done in $(( $(date +%s) - t0 )) s: $VENV ($(du -sh "$VENV" | cut -f1))"
