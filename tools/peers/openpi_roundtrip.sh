#!/usr/bin/env bash
# Round trip of issue 15: an openpi-written checkpoint -> our Flow-SDE PPO for 2 iterations -> saved ->
# loaded by openpi's own loader (PI0Pytorch + safetensors.torch.load_model, normalize.load(assets/<id>)) ->
# the same actions as ours. Needs the openpi peer venv (tools/peers/openpi_fixtures.py's docstring).
#   bash tools/peers/openpi_roundtrip.sh pi0|pi05 [WORK_DIR]
# metaworld-drawer-close-v3: the random tiny policy earns reward there, so the update moves the weights (on
# drawer-open no episode succeeds, the fresh critic predicts 0 and every gradient is 0: weights unchanged).
set -euo pipefail
MODEL=${1:-pi0}
WORK=${2:-/tmp/pirl_openpi_roundtrip_$MODEL}
PEER=${PEER:-/work/peers/openpi-venv/bin/python}
OPENPI_SRC=${OPENPI_SRC:-/work/peers/openpi-src/src}
cd "$(dirname "$0")/../.."
FIX=tests/fixtures/peers/openpi/$MODEL
rm -rf "$WORK" && mkdir -p "$WORK"
cp -r "$FIX" "$WORK/ckpt"
# one asset id (the scripts do not pass load_policy's asset_id yet); π0.5: the field openpi's config.json omits
rm -rf "$WORK/ckpt/assets/physical-intelligence" "$WORK/ckpt/reference.safetensors"
.venv/bin/python - "$WORK/ckpt/config.json" "$MODEL" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
if sys.argv[2] == "pi05":
    meta["discrete_state_input"] = True
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY
OMP_NUM_THREADS=1 .venv/bin/python flow_sde_ppo.py --env metaworld-drawer-close-v3 --checkpoint "$WORK/ckpt" \
    --total-iterations 2 --num-envs 4 --interaction-steps 96 --minibatch-size 48 --micro-batch-size 24 \
    --eval-every 0 --eval-episodes-per-task 1 --max-episode-steps 96 --save-every 1 --num-videos 0 --no-progress \
    --run-root "$WORK/runs" --exp-name roundtrip > "$WORK/rl.log" 2>&1 || { tail -20 "$WORK/rl.log"; exit 1; }
POLICY=$(ls -d "$WORK"/runs/*/checkpoints/iter_000002/policy)
.venv/bin/python tools/peers/our_outputs.py "$POLICY" --reference "$FIX/reference.safetensors" --out "$WORK/ours.safetensors"
.venv/bin/python - "$WORK/ours.safetensors" "$FIX/reference.safetensors" <<'PY'
import sys
from safetensors.torch import load_file
ours, before = load_file(sys.argv[1]), load_file(sys.argv[2])
print(f"RL moved our actions by up to {(ours['actions'] - before['actions']).abs().max().item():.4f} (max abs)")
PY
"$PEER" tools/peers/openpi_fixtures.py --openpi-src "$OPENPI_SRC" --check-dir "$POLICY" --variant "$MODEL" \
    --ours "$WORK/ours.safetensors" --asset-id metaworld
