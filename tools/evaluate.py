"""Evaluate a checkpoint (or the scripted expert / a random policy) on held-out episodes; JSON summary.

    python tools/evaluate.py --checkpoint runs/cache/sft/<key> --env metaworld-button-press-topdown-v3
    python tools/evaluate.py --policy expert --env metaworld-button-press-topdown-v3 --episodes-per-task 20
    torchrun --standalone --nproc_per_node=2 tools/evaluate.py --checkpoint ...   # episodes split by rank
"""
import json
import os
import sys
from dataclasses import dataclass

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import sft  # noqa: E402

POLICIES = ("checkpoint", "expert", "random")


@dataclass
class Args:
    checkpoint: str | None = None
    """checkpoint directory (openpi / LeRobot / RLinf / ours); needed with --policy checkpoint"""
    policy: str = "checkpoint"
    """checkpoint | expert (scripted, upper bound) | random (lower bound)"""
    env: str = sft.DEFAULT_ENV
    """env name (common.envs.ENV_NAMES)"""
    episodes_per_task: int | None = 50
    """episodes per task from the env's eval init ids (None: all of them, e.g. LIBERO's 50)"""
    num_envs: int = 4
    """parallel envs"""
    seed: int = 0
    """eval seed: which eval init ids and the ODE's initial noise"""
    image_size: int = sft.DEFAULT_IMAGE_SIZE
    """render size (pixels)"""
    num_steps: int = 10
    """Euler ODE steps"""
    replan_steps: int = sft.DEFAULT_REPLAN_STEPS
    """actions executed per chunk H'"""
    device: str = "auto"
    """auto | cpu | cuda"""
    video_dir: str | None = None
    """write mp4s of the first --num-videos episodes here"""
    num_videos: int = 0
    """episodes to record"""
    out: str | None = None
    """JSON summary path (default <checkpoint>/eval_<env>_seed<seed>.json, or printed only)"""


def main(args: Args):
    from common.distributed import setup_distributed
    from common.evaluate import evaluate, expert_act_fn, policy_act_fn, random_act_fn
    from common.envs import make_envs

    if args.policy not in POLICIES:
        raise ValueError(f"--policy must be one of {', '.join(POLICIES)} (got {args.policy!r})")
    d = setup_distributed(args.device)
    envs = make_envs(args.env, args.num_envs, seed=args.seed, image_size=args.image_size, autoreset=False)
    try:
        if args.policy == "checkpoint":
            if args.checkpoint is None:
                raise ValueError("--checkpoint is required with --policy checkpoint")
            from common.checkpoint import load_policy
            policy, processor = load_policy(args.checkpoint, device=d.device)
            act_fn = policy_act_fn(policy, processor, args.num_steps, args.replan_steps)
        elif args.policy == "expert":
            act_fn = expert_act_fn(args.env, envs)
        else:
            act_fn = random_act_fn(envs.action_dim, args.replan_steps)
        out = args.out or (os.path.join(args.checkpoint, f"eval_{args.env}_seed{args.seed}.json")
                           if args.policy == "checkpoint" else None)
        summary = evaluate(act_fn, args.env, args.episodes_per_task, seed=args.seed, envs=envs,
                           video_dir=args.video_dir, num_videos=args.num_videos, json_path=out, progress=True)
    finally:
        envs.close()
    if d.is_main:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(tyro.cli(Args))
