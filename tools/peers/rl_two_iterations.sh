#!/usr/bin/env bash
# The round trips' RL leg: CKPT -> 2 iterations of our Flow-SDE PPO on metaworld-drawer-close-v3, saved every
# iteration; prints the iteration-2 policy dir. The random tiny peer fixtures earn no reward there (with none every
# gradient is 0 and RL would leave the weights as they came), so a few lines before the script add reward 1 to
# chunks whose first action's first dim is > 0 (tests/test_failures.py's prelude): the update then moves the weights.
#   POLICY=$(bash tools/peers/rl_two_iterations.sh CKPT WORK_DIR)
set -euo pipefail
CKPT=$1
WORK=$2
cd "$(dirname "$0")/../.."
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
OMP_NUM_THREADS=1 .venv/bin/python "$WORK/with_reward.py" --env metaworld-drawer-close-v3 --checkpoint "$CKPT" \
    --total-iterations 2 --num-envs 4 --interaction-steps 96 --minibatch-size 48 --micro-batch-size 24 \
    --eval-every 0 --eval-episodes-per-task 1 --max-episode-steps 96 --save-every 1 --num-videos 0 --no-progress \
    --run-root "$WORK/runs" --exp-name roundtrip > "$WORK/rl.log" 2>&1 || { tail -20 "$WORK/rl.log" >&2; exit 1; }
ls -d "$WORK"/runs/*/checkpoints/iter_000002/policy
