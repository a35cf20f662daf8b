"""Does LeRobot's own from_pretrained load what pirl saved, and give pirl's actions? (issue 15's round trip)

In OUR venv: load DIR (a LeRobot-layout directory that save_policy wrote, e.g. runs/<run>/checkpoints/
iter_000002/policy after RL from a LeRobot checkpoint), run fixed raw inputs through our Processor and policy,
write them with our outputs to OUT/check_inputs.safetensors (+ .json), then, with --lerobot-python, run
tools/peers/lerobot_fixtures.py --check-dir DIR in LeRobot's venv, which loads DIR with LeRobot's
PI0Policy / PI05Policy.from_pretrained and its saved processors and reports the max abs differences:

    .venv/bin/python tools/peers/lerobot_roundtrip.py --dir DIR --out /tmp/check \
        --lerobot-python /work/peers/lerobot-venv/bin/python
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common.checkpoint import load_policy  # noqa: E402

PROMPTS = ["drawer open", "pick_up the red cube "]


@torch.no_grad()
def pirl_outputs(d: Path, out: Path, num_steps: int = 10, seed: int = 0) -> dict:
    policy, proc = load_policy(d)
    policy.eval()
    c, g = policy.config, np.random.default_rng(seed)
    if proc.source != "lerobot":
        raise SystemExit(f"{d} was not loaded as a LeRobot checkpoint (source={proc.source!r})")
    cfg = json.loads((d / "config.json").read_text())
    S = cfg["input_features"]["observation.state"]["shape"][0]
    A = cfg["output_features"]["action"]["shape"][0]
    n_cam = sum(f["type"] == "VISUAL" for f in cfg["input_features"].values())
    raw = {"images": g.integers(0, 256, (2, n_cam, 45, 61, 3), dtype=np.uint8),
           "state": g.normal(size=(2, S)).astype(np.float32), "instruction": PROMPTS}
    x_t = torch.tensor(g.normal(size=(2, c.action_horizon, c.action_dim)), dtype=torch.float32)
    noise = torch.tensor(g.normal(size=(2, c.action_horizon, c.action_dim)), dtype=torch.float32)
    t = torch.tensor([0.3, 0.85])
    obs = proc.observation(raw, "cpu")
    v, _ = policy.velocity(policy.encode(obs), x_t, t)
    actions = policy.sample_actions(obs, noise.clone(), num_steps)
    env_actions = torch.as_tensor(proc.actions_to_env(actions, A))
    out.mkdir(parents=True, exist_ok=True)
    save_file({"raw_images": torch.from_numpy(raw["images"]), "raw_state": torch.from_numpy(raw["state"]),
               "x_t": x_t, "t": t, "noise": noise, "pirl_velocity": v, "pirl_actions": actions,
               "pirl_env_actions": env_actions}, str(out / "check_inputs.safetensors"))
    (out / "check_inputs.json").write_text(json.dumps({"instruction": PROMPTS, "num_steps": num_steps}))
    return {"velocity": v, "actions": actions, "env_actions": env_actions}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="a LeRobot-layout directory saved by pirl")
    ap.add_argument("--out", type=Path, required=True, help="where check_inputs.* and LeRobot's result go")
    ap.add_argument("--lerobot-python", help="python of a venv with lerobot[pi]==0.6.1: run the LeRobot side too")
    a = ap.parse_args()
    torch.set_num_threads(1)
    pirl_outputs(a.dir, a.out)
    print(f"wrote {a.out / 'check_inputs.safetensors'}")
    if a.lerobot_python:
        subprocess.run([a.lerobot_python, str(Path(__file__).with_name("lerobot_fixtures.py")), "--check-dir",
                        str(a.dir), "--inputs", str(a.out / "check_inputs.safetensors"),
                        "--result", str(a.out / "lerobot_result.safetensors")], check=True)


if __name__ == "__main__":
    main()
