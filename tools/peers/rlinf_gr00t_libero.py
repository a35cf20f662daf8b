"""Peer fixtures of RLinf's GR00T N1.5 LIBERO conventions (data config rlinf_gr00t_libero), computed by RLinf's OWN
code: rlinf/models/embodiment/gr00t/simulation_io.py (RLinf a3816b5, loaded from its file: it imports only numpy and
torch), as RLinf's GR00T rollout calls it on LIBERO (examples/embodiment/config/model/gr00t.yaml obs_converter_type
"libero", num_action_chunks 5):
  convert_libero_obs_to_gr00t_format   RLinf's LIBERO env observation -> GR00T's video / state / language keys
  convert_to_libero_action_n1d5        GR00T's un-normalised action keys -> the 7-D LIBERO env actions (the gripper's
                                       [0, 1] as sign(1 - 2 g))
tests/test_peer_rlinf_gr00t.py compares pirl (common/eagle.py EagleProcessor with that data config) with them.

    /work/peers/rlinf-env-venv/bin/python tools/peers/rlinf_gr00t_libero.py --rlinf-src /work/peers/rlinf-src \\
        [--out tests/fixtures/peers/rlinf_gr00t]

Written to <out>/reference.npz: model_actions (10, 16, 7) float32 (GR00T's un-normalised action keys x, y, z, roll,
pitch, yaw, gripper concatenated; the gripper in [0, 1], with 0, 0.5 and 1 exactly among them), env_actions
(10, 5, 7) what RLinf sends to LIBERO, env_state (10, 8) and the state keys' arrays RLinf hands GR00T, concatenated in
its key order (state); reference.json: the video, state and action keys in RLinf's order, the chunk size, the commit.
"""
import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

N, H, A, CHUNK = 10, 16, 7, 5
ACTION_KEYS = ["action.x", "action.y", "action.z", "action.roll", "action.pitch", "action.yaw", "action.gripper"]


def load_simulation_io(rlinf_src: Path):
    path = rlinf_src / "rlinf/models/embodiment/gr00t/simulation_io.py"
    spec = importlib.util.spec_from_file_location("rlinf_gr00t_simulation_io", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--rlinf-src", type=Path, default=Path("/work/peers/rlinf-src"))
    p.add_argument("--commit", default="a3816b5")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests/fixtures/peers/rlinf_gr00t")
    args = p.parse_args()
    sio = load_simulation_io(args.rlinf_src)
    rng = np.random.default_rng(0)

    model = rng.uniform(-1, 1, (N, H, A)).astype(np.float32)
    model[..., -1] = rng.uniform(0, 1, (N, H))
    model[0, :3, -1] = [0.0, 0.5, 1.0]   # the ends, and the tie sign() sends to 0
    chunk = {k: model[..., i:i + 1].copy() for i, k in enumerate(ACTION_KEYS)}   # (N, H, 1) per key
    env_actions = sio.convert_to_libero_action_n1d5(chunk, chunk_size=CHUNK)      # (N, CHUNK, 7)

    env_state = rng.uniform(-1, 1, (N, 8)).astype(np.float32)
    obs = {"main_images": torch.zeros(N, 4, 4, 3, dtype=torch.uint8), "wrist_images": torch.ones(N, 4, 4, 3, dtype=torch.uint8),
           "states": torch.as_tensor(env_state), "task_descriptions": ["pick"] * N}
    groot = sio.convert_libero_obs_to_gr00t_format(obs)
    state_keys = [k for k in groot if k.startswith("state.")]
    video_keys = [k for k in groot if k.startswith("video.")]
    state = np.concatenate([groot[k][:, 0] for k in state_keys], axis=-1)          # (N, 8)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "reference.npz", model_actions=model, env_actions=np.asarray(env_actions, np.float32),
             env_state=env_state, state=state.astype(np.float32))
    (args.out / "reference.json").write_text(json.dumps({
        "rlinf_commit": args.commit, "file": "rlinf/models/embodiment/gr00t/simulation_io.py", "chunk_size": CHUNK,
        "video_keys": video_keys, "state_keys": state_keys, "state_dims": [int(groot[k].shape[-1]) for k in state_keys],
        "action_keys": ACTION_KEYS, "numpy": np.__version__, "torch": torch.__version__}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
