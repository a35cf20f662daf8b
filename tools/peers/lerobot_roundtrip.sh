#!/usr/bin/env bash
# Round trip of issue 15 with a weight change: a LeRobot-written checkpoint -> our Flow-SDE PPO for 2 iterations on
# metaworld-drawer-close-v3 -> saved in LeRobot's layout -> loaded by LeRobot's own PI0Policy / PI05Policy.
# from_pretrained + its saved processors -> the same actions as ours. The random tiny LeRobot fixtures earn no
# reward on MetaWorld (with no reward every gradient is 0 and RL would leave the weights as they came), so a
# few lines before the script add reward 1 to chunks whose first action's first dim is > 0 (the same prelude
# as tests/test_failures.py): the PPO update then really moves every trained weight before the save.
#   bash tools/peers/lerobot_roundtrip.sh pi0|pi05|pi05_mean_std [WORK_DIR]
# Needs the LeRobot peer venv (tools/peers/lerobot_fixtures.py's docstring).
set -euo pipefail
MODEL=${1:-pi0}
WORK=${2:-/tmp/pirl_lerobot_roundtrip_$MODEL}
PEER=${PEER:-/work/peers/lerobot-venv/bin/python}
cd "$(dirname "$0")/../.."
FIX=tests/fixtures/peers/lerobot/$MODEL
rm -rf "$WORK" && mkdir -p "$WORK"
cp -r "$FIX" "$WORK/ckpt"
rm -f "$WORK/ckpt/reference.safetensors" "$WORK/ckpt/reference.json"
POLICY=$(bash tools/peers/rl_two_iterations.sh "$WORK/ckpt" "$WORK")   # with the reward prelude
.venv/bin/python tools/peers/lerobot_roundtrip.py --dir "$WORK/ckpt" --out "$WORK/before" > /dev/null
.venv/bin/python tools/peers/lerobot_roundtrip.py --dir "$POLICY" --out "$WORK/after" --lerobot-python "$PEER"
.venv/bin/python - "$WORK/before/check_inputs.safetensors" "$WORK/after/check_inputs.safetensors" <<'PY'
import sys
from safetensors.torch import load_file
before, after = load_file(sys.argv[1]), load_file(sys.argv[2])
print(f"RL moved our actions by up to {(after['pirl_actions'] - before['pirl_actions']).abs().max().item():.4f} (max abs)")
PY
