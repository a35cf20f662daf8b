#!/usr/bin/env bash
# Round trip of issue 15: a checkpoint written by RLinf's own code (tests/fixtures/peers/rlinf) -> our Flow-SDE
# PPO for 2 iterations -> saved -> loaded by RLinf's own get_model (rlinf/models/embodiment/openpi/__init__.py)
# -> RLinf's velocity / actions vs ours. Needs the RLinf peer venv (tools/peers/rlinf_fixtures.py's docstring).
# The random tiny fixtures earn no reward on MetaWorld (every gradient would be 0), so, as
# tools/peers/lerobot_roundtrip.sh, a prelude adds reward 1 to chunks whose first action's first dim is > 0.
#   bash tools/peers/rlinf_roundtrip.sh pi0|pi05 [WORK_DIR]
set -euo pipefail
MODEL=${1:-pi0}
WORK=${2:-/tmp/pirl_rlinf_roundtrip_$MODEL}
PEER=${PEER:-/work/peers/rlinf-venv/bin/python}
RLINF_SRC=${RLINF_SRC:-/work/peers/rlinf-full}
OPENPI_SRC=${OPENPI_SRC:-/work/peers/rlinf-openpi-0.1.1}
OPENPI_CLIENT=${OPENPI_CLIENT:-/work/peers/openpi-src/packages/openpi-client/src}
cd "$(dirname "$0")/../.."
FIX=tests/fixtures/peers/rlinf/$MODEL
rm -rf "$WORK" && mkdir -p "$WORK"
cp -r "$FIX" "$WORK/ckpt"
rm -f "$WORK/ckpt/reference.safetensors"
POLICY=$(bash tools/peers/rl_two_iterations.sh "$WORK/ckpt" "$WORK")   # with the reward prelude
.venv/bin/python tools/peers/our_outputs.py "$POLICY" --reference "$FIX/reference.safetensors" \
    --out "$WORK/ours.safetensors" --num-steps 5
.venv/bin/python - "$WORK/ours.safetensors" "$FIX/reference.safetensors" <<'PY'
import sys
from safetensors.torch import load_file
ours, before = load_file(sys.argv[1]), load_file(sys.argv[2])
print(f"RL moved our actions by up to {(ours['actions'] - before['actions']).abs().max().item():.4f} (max abs)")
PY
"$PEER" tools/peers/rlinf_fixtures.py --rlinf-src "$RLINF_SRC" --openpi-src "$OPENPI_SRC" \
    --openpi-client "$OPENPI_CLIENT" --check-dir "$POLICY" --variant "$MODEL" --ours "$WORK/ours.safetensors" 2>&1 \
    | grep -v "INFO\|WARNING\|Warning"
