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
cat > "$WORK/with_reward.py" <<PY
import runpy, sys
sys.path.insert(0, "$PWD")
import numpy as np
from common import envs as _envs
_step = _envs.ChunkVecEnv.step_chunk
def _rewarded(self, actions):
    obs, reward, terminated, truncated, info = _step(self, actions)
    return obs, reward + (np.asarray(actions)[:, 0, 0] > 0).astype(np.float32), terminated, truncated, info
_envs.ChunkVecEnv.step_chunk = _rewarded
sys.argv[0] = "$PWD/flow_sde_ppo.py"
runpy.run_path("$PWD/flow_sde_ppo.py", run_name="__main__")
PY
OMP_NUM_THREADS=1 .venv/bin/python "$WORK/with_reward.py" --env metaworld-drawer-close-v3 --checkpoint "$WORK/ckpt" \
    --total-iterations 2 --num-envs 4 --interaction-steps 96 --minibatch-size 48 --micro-batch-size 24 \
    --eval-every 0 --eval-episodes-per-task 1 --max-episode-steps 96 --save-every 1 --num-videos 0 --no-progress \
    --run-root "$WORK/runs" --exp-name roundtrip > "$WORK/rl.log" 2>&1 || { tail -20 "$WORK/rl.log"; exit 1; }
grep -o '"charts/[a-z_]*reward[a-z_]*": [0-9.e-]*' "$WORK"/runs/*/metrics.jsonl | tail -2 || true
POLICY=$(ls -d "$WORK"/runs/*/checkpoints/iter_000002/policy)
.venv/bin/python tools/peers/lerobot_roundtrip.py --dir "$WORK/ckpt" --out "$WORK/before" > /dev/null
.venv/bin/python tools/peers/lerobot_roundtrip.py --dir "$POLICY" --out "$WORK/after" --lerobot-python "$PEER"
.venv/bin/python - "$WORK/before/check_inputs.safetensors" "$WORK/after/check_inputs.safetensors" <<'PY'
import sys
from safetensors.torch import load_file
before, after = load_file(sys.argv[1]), load_file(sys.argv[2])
print(f"RL moved our actions by up to {(after['pirl_actions'] - before['pirl_actions']).abs().max().item():.4f} (max abs)")
PY
