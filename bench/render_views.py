"""What MetaWorld's views cost to render on a CPU, and how far their pictures are from LeRobot's (issue 25).

    OMP_NUM_THREADS=1 python bench/render_views.py                  # drawer-open, 64 px, writes bench/results/render_views.json

For each view of common/envs.py METAWORLD_VIEWS at the embedded default's 64 px:
1. one env step and its observation (a render) in one in-process env, ms, mean of --renders;
2. a rollout: --num-envs worker processes (make_envs, as the RL scripts make them), 100 random actions each in chunks
   of 4 (one observation per chunk, as the scripts observe), seconds;
3. the first held-out scene's picture against the "lerobot" view's (LeRobot's and RLinf's own settings): mean and
   median of |difference| in uint8 levels.
The ratios are what matter: on a loaded machine every time is an upper bound.
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.errors import check_at_least, check_writable, main_errors  # noqa: E402


@dataclass
class Args:
    task: str = "drawer-open-v3"
    """MetaWorld task"""
    image_size: int = 64
    """render size (the embedded default's)"""
    renders: int = 20
    """steps (each with its render) timed per view"""
    num_envs: int = 16
    """worker processes of the rollout (the embedded default's --num-envs)"""
    out: str = "bench/results/render_views.json"
    """JSON written"""


def render_ms(task: str, view: str, image_size: int, renders: int) -> tuple[float, np.ndarray]:
    """Mean ms of one step + observation of the first held-out scene (one in-process env), and its first picture."""
    from common.envs import make_envs
    envs = make_envs(f"metaworld-{task}", 1, image_size=image_size, asynchronous=False, autoreset=False,
                     metaworld_view=view)
    try:
        image = envs.reset([(0, 0)])["images"][0, 0]
        t0 = time.perf_counter()
        for _ in range(renders):
            envs.step_chunk(np.zeros((1, 1, 4), np.float32))
        return (time.perf_counter() - t0) / renders * 1000, image
    finally:
        envs.close()


def rollout_seconds(task: str, view: str, image_size: int, num_envs: int) -> float:
    """100 env steps of num_envs workers, random actions in chunks of 4."""
    from common.envs import make_envs
    envs = make_envs(f"metaworld-{task}", num_envs, image_size=image_size, metaworld_view=view)
    try:
        envs.reset([(0, 50 + i) for i in range(num_envs)])
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for _ in range(25):
            envs.step_chunk(rng.uniform(-1, 1, (num_envs, 4, 4)).astype(np.float32))
        return time.perf_counter() - t0
    finally:
        envs.close()


def main(args: Args) -> None:
    from common.envs import METAWORLD_VIEWS, check_env_name
    check_env_name(f"metaworld-{args.task}", "--task")
    check_at_least(1, image_size=args.image_size, renders=args.renders, num_envs=args.num_envs)
    check_writable(args.out, "--out")
    rows, pictures = {}, {}
    for view in METAWORLD_VIEWS:
        ms, pictures[view] = render_ms(args.task, view, args.image_size, args.renders)
        rows[view] = {"step_and_render_ms": round(ms, 2),
                      "rollout_seconds": round(rollout_seconds(args.task, view, args.image_size, args.num_envs), 2)}
    for view, row in rows.items():
        d = np.abs(pictures[view].astype(float) - pictures["lerobot"])
        row.update(levels_from_lerobot_mean=round(float(d.mean()), 2), levels_from_lerobot_median=float(np.median(d)),
                   rollout_vs_default=round(row["rollout_seconds"] / rows["lerobot-fast"]["rollout_seconds"], 2))
        print(view, row, flush=True)
    Path(args.out).write_text(json.dumps({"task": args.task, "image_size": args.image_size, "num_envs": args.num_envs,
                                          "views": rows}, indent=1) + "\n")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
