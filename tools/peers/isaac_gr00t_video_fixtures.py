"""Peer fixtures for an Isaac-GR00T N1.5 checkpoint's camera input on LIBERO (conventions.py `isaac_gr00t`):
pirl's LIBERO renders as an Isaac-GR00T checkpoint gets them (both cameras at its metadata.json resolution, 256 px
here: Isaac-GR00T's and RLinf's LIBERO data sets), then Isaac-GR00T's OWN evaluation video transforms run on them
(tools/peers/isaac_gr00t_video.py, in its own venv). tests/test_peer_isaac_video.py compares pirl's model input
with them.

    .venv/bin/python tools/peers/isaac_gr00t_video_fixtures.py [--peer-python /work/peers/isaac-venv/bin/python]
        [--isaac-src /work/peers/isaac-gr00t-src] [--num-init-states 10] [--out tests/fixtures/peers/isaac_video]

Written to <out>/reference.npz: images (N, 2, 256, 256, 3) uint8, pirl's renders of libero-spatial task 0's first
N init states (agent view, wrist; LIBERO's fixtures seeded as make_envs seeds them); crop / nocrop (N, 2, 224, 224, 3)
uint8, Isaac-GR00T's VideoToTensor -> VideoCrop(0.95) -> VideoResize(224, linear) -> VideoToNumpy on each camera
(and the same without VideoCrop); reference.json: the env, init ids, render size and the peer's versions.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ENV, RENDER = "libero-spatial", 256


def pirl_renders(num_init_states: int) -> np.ndarray:
    """(N, 2, R, R, 3) uint8: pirl's LIBERO observation images, rendered as for an isaac_gr00t checkpoint."""
    sys.path.insert(0, str(ROOT))
    from common.conventions import DATA_CONFIGS
    from common.envs import make_envs

    options = {**DATA_CONFIGS["isaac_gr00t"].env_options(ENV, 224), "image_size": RENDER}   # metadata.json's size
    env = make_envs(ENV, 1, asynchronous=False, **options)
    try:
        return np.concatenate([env.reset([(0, i)])["images"] for i in range(num_init_states)])
    finally:
        env.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--peer-python", default="/work/peers/isaac-venv/bin/python")
    p.add_argument("--isaac-src", default="/work/peers/isaac-gr00t-src")
    p.add_argument("--num-init-states", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "tests/fixtures/peers/isaac_video"))
    args = p.parse_args()
    images = pirl_renders(args.num_init_states)                                   # (N, 2, R, R, 3)
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inputs, images_0=images[:, 0], images_1=images[:, 1])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        subprocess.run([args.peer_python, str(ROOT / "tools/peers/isaac_gr00t_video.py"), "--src", args.isaac_src,
                        "--inputs", str(inputs), "--out", str(outputs)], check=True, env=env)
        peer = np.load(outputs)
        crop = np.stack([peer["out_0"], peer["out_1"]], axis=1)                  # (N, 2, 224, 224, 3)
        nocrop = np.stack([peer["nocrop_0"], peer["nocrop_1"]], axis=1)
        versions = json.loads(str(peer["versions"]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "reference.npz", images=images, crop=crop, nocrop=nocrop)
    (out / "reference.json").write_text(json.dumps({
        "env": ENV, "task": 0, "init_states": list(range(args.num_init_states)), "render_size": RENDER,
        "cameras": ["agentview_image", "robot0_eye_in_hand_image"], "crop_scale": 0.95, "size": 224,
        "peer": versions}, indent=2))
    print(f"wrote {out}: {crop.shape[0]} init states, {(out / 'reference.npz').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
