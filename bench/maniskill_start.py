"""Issue 28: the ManiSkill embedded default's few-shot start, and why it is what it is.

    OMP_NUM_THREADS=1 python bench/maniskill_start.py                                   # the embedded default's setting
    OMP_NUM_THREADS=1 python bench/maniskill_start.py --num-demos 20 --tag push-n20     # one lever changed
    OMP_NUM_THREADS=1 python bench/maniskill_start.py --env maniskill-PickCube-v1 --num-demos 10 --sft-steps 400 --tag pick
    python bench/maniskill_start.py --table                                             # only print --out as Markdown

One row per setting (--tag), merged into --out. What `flow_sde_ppo.py --env maniskill-<task>` does before RL, measured:
1. the scripted expert on held-out scenes (--expert-episodes, one env): success, and its episode length (the step of
   success; the episode ends there) under --max-episode-steps;
2. the few-shot SFT policy: common/sft.py make_default_sft_policy with this setting (cached under --cache-dir by the
   same key the RL scripts use: a run with this setting reuses it), its final SFT loss and demo steps;
3. the RL scripts' iteration-0 eval: deterministic Euler ODE (K = 4, H' = 4), held-out scenes, --eval-episodes,
   --num-envs envs (16: the embedded default's, so the eval noise is the run's), eval seed --eval-seed; plus what the
   policy gets done on the way (privileged state read before every decision): the closest its TCP came to the cube and
   the cube to the goal (medians over episodes), and on PickCube the share of episodes in which it ever grasped the cube.
The envs run in this process (asynchronous=False): one ManiSkill worker per env would start 16 SAPIEN processes.
"""
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.cli import unset  # noqa: E402
from common.errors import UsageError, check_at_least, check_writable, main_errors  # noqa: E402


@dataclass
class Args:
    env: Annotated[Optional[str], unset("common/sft.py MANISKILL_DEFAULT_ENV")] = None
    """ManiSkill env"""
    num_demos: Annotated[Optional[int], unset("the env's few-shot default, common/sft.py few_shot_defaults")] = None
    """demonstrations"""
    sft_steps: Annotated[Optional[int], unset("the env's few-shot default")] = None
    """SFT steps of batch 32"""
    image_size: Annotated[Optional[int], unset("the env's few-shot default")] = None
    """render and model image size"""
    max_episode_steps: Annotated[Optional[int], unset("the env's, as the RL scripts run it")] = None
    """episode length of the expert and policy evals"""
    tag: str = "default"
    """row name in --out"""
    eval_seed: int = 1
    """eval seed = the RL run's --seed (its iteration-0 eval)"""
    eval_episodes: int = 50
    """held-out episodes of the SFT policy (the RL scripts' iteration-0 eval: 50)"""
    expert_episodes: int = 50
    """held-out episodes of the scripted expert"""
    num_envs: int = 16
    """eval envs (the embedded default's --num-envs: the eval's noise draws depend on it)"""
    skip_expert: bool = False
    """skip step 1 (the expert does not change with SFT settings)"""
    cache_dir: Annotated[Optional[str], unset("runs/cache, what the RL scripts read")] = None
    """demos / SFT cache"""
    threads: int = 1
    """torch threads"""
    out: str = "bench/results/maniskill_start.json"
    """JSON written (merged per --tag)"""
    table: bool = False
    """measure nothing: print the rows of --out as a Markdown table"""


def expert_run(env_name: str, args: Args) -> dict:
    import numpy as np

    from common.envs import make_envs
    from common.evaluate import eval_episodes
    from common.experts import make_expert

    envs = make_envs(env_name, 1, seed=args.eval_seed, image_size=64, autoreset=False, asynchronous=False,
                     max_episode_steps=args.max_episode_steps)
    expert, lengths = make_expert(env_name), []
    try:
        for ep in eval_episodes(envs.eval_init_ids, envs.num_tasks, args.expert_episodes, args.eval_seed):
            envs.reset([ep])
            while True:
                _, _, term, trunc, info = envs.step_chunk(expert.act(envs)[:, None])
                if term[0] or trunc[0]:
                    lengths.append((bool(term[0]), int(info["episode_length"][0])))
                    break
    finally:
        envs.close()
    ok = [n for s, n in lengths if s]
    return {"expert_success": float(np.mean([s for s, _ in lengths])), "expert_episodes": len(lengths),
            "expert_length_mean": float(np.mean(ok)) if ok else None,
            "expert_length_range": [min(ok), max(ok)] if ok else None, "max_episode_steps": envs.max_episode_steps}


def policy_run(env_name: str, ckpt: Path, args: Args) -> dict:
    """The RL scripts' iteration-0 eval (common/evaluate.py protocol, same episodes and noise), with privileged
    progress read before every decision."""
    import numpy as np
    import torch

    from common.checkpoint import load_policy
    from common.envs import make_envs
    from common.evaluate import eval_episodes, policy_act_fn
    from common.sft import DEFAULT_REPLAN_STEPS

    policy, processor = load_policy(str(ckpt), device="cpu")
    opts = processor.data_config.env_options(env_name, policy.config.image_size)
    envs = make_envs(env_name, args.num_envs, seed=args.eval_seed, autoreset=False, asynchronous=False,
                     max_episode_steps=args.max_episode_steps, **opts)
    act = policy_act_fn(policy, processor, num_steps=4, replan_steps=DEFAULT_REPLAN_STEPS, action_dim=envs.action_dim)
    act.reset(args.eval_seed)
    episodes = eval_episodes(envs.eval_init_ids, envs.num_tasks, args.eval_episodes, args.eval_seed)
    rows = []   # (success, length, ever grasped, min cube-goal distance, min tcp-cube distance)
    has_grasp = False
    try:
        for start in range(0, len(episodes), envs.num_envs):
            wave = episodes[start:start + envs.num_envs]
            real = len(wave)
            wave = wave + [wave[-1]] * (envs.num_envs - real)
            obs = envs.reset(wave)
            n = envs.num_envs
            done, success = np.zeros(n, bool), np.zeros(n, bool)
            length, grasped = np.zeros(n, np.int64), np.zeros(n, bool)
            goal_d, reach_d = np.full(n, np.inf), np.full(n, np.inf)

            def progress():
                nonlocal has_grasp
                for i, o in enumerate(envs.call("expert_obs")):
                    has_grasp |= "is_grasped" in o
                    if not done[i]:
                        grasped[i] |= bool(o.get("is_grasped", False))
                        if "goal_pos" in o:
                            goal_d[i] = min(goal_d[i], float(np.linalg.norm(o["obj_pose"][:3] - o["goal_pos"])))
                        if "obj_pose" in o:
                            reach_d[i] = min(reach_d[i], float(np.linalg.norm(o["obj_pose"][:3] - o["tcp_pose"][:3])))
            while not done.all():
                progress()
                with torch.no_grad():
                    actions = act(obs)
                obs, _, term, trunc, info = envs.step_chunk(actions)
                ended = ~done & (term | trunc)
                success |= ~done & info["success"]
                length[ended] = info["episode_length"][ended]
                done |= ended
            rows += [(bool(success[i]), int(length[i]), bool(grasped[i]), goal_d[i], reach_d[i]) for i in range(real)]
    finally:
        envs.close()
    s, n, g, gd, rd = (np.array(c) for c in zip(*rows))
    out = {"start_success": float(s.mean()), "start_episodes": len(rows), "start_episode_length": float(n.mean()),
           "start_min_cube_goal_m": float(np.median(gd)), "start_min_tcp_cube_m": float(np.median(rd))}
    return {**out, "start_ever_grasped": float(g.mean())} if has_grasp else out


def measure(args: Args) -> dict:
    from common import sft

    env = args.env or sft.MANISKILL_DEFAULT_ENV
    num_demos, sft_steps, image_size = sft.few_shot_setting(env, args.num_demos, args.sft_steps, args.image_size)
    row = {"tag": args.tag, "env": env, "num_demos": num_demos, "sft_steps": sft_steps, "image_size": image_size}
    t0 = time.time()
    if not args.skip_expert:
        row.update(expert_run(env, args))
    t1 = time.time()
    ckpt = sft.make_default_sft_policy(env, num_demos=num_demos, sft_steps=sft_steps, image_size=image_size, progress=False,
                                       cache_dir=args.cache_dir)
    t2 = time.time()
    meta = json.loads((ckpt / "config.json").read_text())["sft"]
    row.update(policy_run(env, ckpt, args))
    t3 = time.time()
    return {**row, "sft_checkpoint": str(ckpt.relative_to(ROOT) if ckpt.is_relative_to(ROOT) else ckpt),
            "sft_final_loss": meta["final_loss"], "demo_steps": meta["demo_steps"], "demo_seconds": meta["demo_seconds"],
            "sft_seconds": meta["sft_seconds"], "expert_seconds": round(t1 - t0, 1),
            "sft_wall_seconds": round(t2 - t1, 1), "eval_seconds": round(t3 - t2, 1),
            "eval": f"deterministic ODE K=4, H'=4, held-out scenes, {args.eval_episodes} episodes, {args.num_envs} envs, "
                    f"eval seed {args.eval_seed}",
            "command": "OMP_NUM_THREADS=1 python bench/maniskill_start.py " + " ".join(sys.argv[1:])}


def table(doc: dict) -> str:
    lines = ["| setting | expert, held-out % (steps) | demos (steps) | SFT steps, final loss | start, held-out % | "
             "episode length | closest TCP-cube, median cm | expert + demos + SFT + eval, s |", "|---|---|---|---|---|---|---|---|"]
    for tag, r in doc.items():
        exp = f"{r['expert_success'] * 100:.0f} ({r['expert_length_mean']:.0f})" if "expert_success" in r else "–"
        lines.append(f"| {tag} ({r['env']}, {r.get('image_size', 64)} px) | {exp} | {r['num_demos']} ({r['demo_steps']}) "
                     f"| {r['sft_steps']}, {r['sft_final_loss']:.3f} | {r['start_success'] * 100:.0f} "
                     f"({r['start_episodes']} ep.) | {r['start_episode_length']:.1f} | {r['start_min_tcp_cube_m'] * 100:.1f} "
                     f"| {r['expert_seconds']:.0f} + {r['demo_seconds']:.0f} + {r['sft_seconds']:.0f} + {r['eval_seconds']:.0f} |")
    return "\n".join(lines)


def check_args(args: Args) -> None:
    """Every flag checked before any simulator is built (UsageError: one `error:` line)."""
    from common.sft import MANISKILL_DEFAULT_ENV, check_expert

    if args.env is not None and not args.env.startswith("maniskill-"):
        raise UsageError(f"--env {args.env}: a ManiSkill task (maniskill-<Task-v1>; MetaWorld's starts: bench/devset.py)")
    check_expert(args.env or MANISKILL_DEFAULT_ENV)   # the demonstrations need a scripted expert
    check_at_least(1, num_demos=args.num_demos, sft_steps=args.sft_steps, image_size=args.image_size,
                   max_episode_steps=args.max_episode_steps, eval_episodes=args.eval_episodes,
                   expert_episodes=args.expert_episodes, num_envs=args.num_envs, threads=args.threads)
    check_writable(args.out, "--out")


def main(args: Args):
    import torch

    out = Path(args.out)
    if args.table:
        print(table(json.loads(out.read_text())))
        return
    check_args(args)
    torch.set_num_threads(args.threads)
    row = measure(args)
    print(json.dumps(row), flush=True)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc[args.tag] = row
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = tyro.cli(Args)
    with main_errors():
        main(args)
