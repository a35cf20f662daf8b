"""Issue 28's dev set: which MetaWorld tasks give the embedded default's few-shot start between 20% and 80% held-out.

    OMP_NUM_THREADS=1 python bench/devset.py                                  # every candidate below, one after another
    OMP_NUM_THREADS=1 python bench/devset.py --tasks door-open-v3 push-v3     # some of them
    python bench/devset.py --table                                            # only print --out as a Markdown table

For each task, exactly what `flow_sde_ppo.py --env metaworld-<task>` does before RL:
1. the scripted expert on the 50 held-out scenes (upper bound; the demos themselves come from successful expert
   episodes on TRAIN scenes only, common/sft.py collect_demos);
2. make_default_sft_policy: 10 demos, seed 0, 64 px, 400 SFT steps of the tiny π0 (cached under runs/cache/sft/,
   the same key the RL scripts look up, so a later RL run reuses it);
3. the RL scripts' iteration-0 eval: deterministic Euler ODE (K = 4 steps, H' = 4), held-out scenes, 100 episodes,
   16 envs, eval seed --eval-seed (the run seed; 1 = the README's command 1 and bench/compare.py's first seed).
Each finished task is merged into --out at once (a rerun of some tasks replaces their rows, keeps the others).
"""
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.errors import check_writable, main_errors  # noqa: E402

CANDIDATES = ("door-open-v3", "window-open-v3", "window-close-v3", "button-press-v3", "plate-slide-v3",
              "faucet-open-v3", "lever-pull-v3", "push-v3", "faucet-close-v3", "coffee-button-v3", "handle-press-v3",
              "reach-v3", "sweep-into-v3", "door-close-v3", "pick-place-v3", "drawer-close-v3")   # the order measured


@dataclass
class Args:
    tasks: tuple[str, ...] = CANDIDATES
    """MetaWorld tasks (without the metaworld- prefix), measured in this order"""
    eval_seed: int = 1
    """eval seed = the RL run's --seed (its iteration-0 eval)"""
    eval_episodes: int = 100
    """held-out episodes of the SFT policy (50 scenes, each twice)"""
    expert_episodes: int = 50
    """held-out episodes of the scripted expert (deterministic: each of the 50 scenes once)"""
    num_envs: int = 16
    """eval envs (the embedded default's --num-envs: the eval's noise draws depend on it)"""
    low: float = 0.2
    """dev-set range of the start, low end"""
    high: float = 0.8
    """dev-set range of the start, high end"""
    threads: int = 1
    """torch threads"""
    data_config: str = "pirl"
    """the embedded default's data config: pirl (pirl's MetaWorld view) or pirl_lerobot_view (LeRobot's camera view
    and prompts); the SFT policy is made, cached and evaluated in its view, as the RL scripts' --data-config does"""
    out: str = "bench/results/devset_starts.json"
    """JSON written (merged per task)"""
    table: bool = False
    """measure nothing: print the tasks of --out as a Markdown table"""


def measure(task: str, args: Args) -> dict:
    from common import sft
    from common.checkpoint import load_policy
    from common.conventions import check_embedded_data_config
    from common.envs import make_envs
    from common.evaluate import evaluate, expert_act_fn, policy_act_fn

    env = f"metaworld-{task}"
    view = check_embedded_data_config(args.data_config).metaworld_view
    t0 = time.time()
    envs = make_envs(env, args.num_envs, seed=args.eval_seed, image_size=sft.DEFAULT_IMAGE_SIZE, autoreset=False,
                     metaworld_view=view)
    try:
        expert = evaluate(expert_act_fn(env, envs), env, args.expert_episodes, seed=args.eval_seed, envs=envs)
        t1 = time.time()
        row = {"task": task, "env": env, "expert_success": expert["success_rate"], "expert_seconds": round(t1 - t0, 1)}
        try:
            ckpt = sft.make_default_sft_policy(env, progress=False, data_config=args.data_config)   # 10 demos, 400 steps
        except RuntimeError as e:   # the expert failed too often on the train scenes to give 10 demos
            return {**row, "error": str(e)}
        t2 = time.time()
        meta = json.loads((ckpt / "config.json").read_text())["sft"]
        policy, processor = load_policy(str(ckpt), device="cpu")
        act_fn = policy_act_fn(policy, processor, num_steps=4, replan_steps=sft.DEFAULT_REPLAN_STEPS,
                               action_dim=envs.action_dim)
        start = evaluate(act_fn, env, args.eval_episodes, seed=args.eval_seed, envs=envs)
        t3 = time.time()
    finally:
        envs.close()
    return {**row, "sft_checkpoint": str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt),
            "sft_final_loss": meta["final_loss"], "demo_steps": meta["demo_steps"],
            "demo_seconds": meta["demo_seconds"], "sft_seconds": meta["sft_seconds"],
            "sft_wall_seconds": round(t2 - t1, 1),   # ~0 when the checkpoint was cached
            "start_success": start["success_rate"], "start_episodes": start["num_episodes"],
            "start_episode_length": start["episode_length"], "eval_seconds": round(t3 - t2, 1),
            "total_seconds": round(t3 - t0, 1), "in_range": args.low <= start["success_rate"] <= args.high}


def table(doc: dict) -> str:
    """Every task measured, in the order measured; in range = a dev-set candidate."""
    lines = ["| task | expert, held-out % | SFT final loss | start, held-out % (100 ep.) | in 20–80% | "
             "demos + SFT + eval, s |", "|---|---|---|---|---|---|"]
    for task, r in doc["tasks"].items():
        if "error" in r:
            lines.append(f"| {task} | {r['expert_success'] * 100:.0f} | – | – | no ({r['error']}) | – |")
            continue
        lines.append(f"| {task} | {r['expert_success'] * 100:.0f} | {r['sft_final_loss']:.3f} "
                     f"| {r['start_success'] * 100:.0f} | {'yes' if r['in_range'] else 'no'} "
                     f"| {r['demo_seconds']:.0f} + {r['sft_seconds']:.0f} + {r['eval_seconds']:.0f} |")
    return "\n".join(lines)


def main(args: Args):
    import torch

    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return

    from common.conventions import check_embedded_data_config
    from common.envs import check_env_name

    for task in args.tasks:   # every name, the data config and the output checked before the first SFT
        check_env_name(f"metaworld-{task}")
    check_embedded_data_config(args.data_config)
    check_writable(args.out, "--out")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        row = measure(task, args)
        print(json.dumps(row), flush=True)
        doc = json.loads(out.read_text()) if out.is_file() else {}
        doc["protocol"] = {"demos": 10, "demo_seed": 0, "image_size": 64, "sft_steps": 400, "preset": "tiny",
                           "eval": f"deterministic ODE K=4, H'=4, held-out scenes, {args.eval_episodes} episodes, "
                                   f"{args.num_envs} envs, eval seed {args.eval_seed}",
                           "range": [args.low, args.high], "threads": args.threads, "data_config": args.data_config,
                           "command": "OMP_NUM_THREADS=1 python bench/devset.py --tasks " + " ".join(args.tasks)
                                      + (f" --data-config {args.data_config}" if args.data_config != "pirl" else "")}
        doc.setdefault("tasks", {})[task] = row
        out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = tyro.cli(Args)
    with main_errors():
        main(args)
