"""Evaluate a checkpoint (or the scripted expert / a random policy) on held-out episodes; JSON summary.

    python tools/evaluate.py --checkpoint runs/cache/sft/<key> --env metaworld-button-press-topdown-v3
    python tools/evaluate.py --policy expert --env metaworld-button-press-topdown-v3 --episodes-per-task 20
    torchrun --standalone --nproc_per_node=2 tools/evaluate.py --checkpoint ...   # episodes split by rank

A bad flag, a missing checkpoint or one that does not fit the env ends in one `error: ...` line, exit 2.
"""
import json
import os
import sys
from dataclasses import dataclass
from typing import Annotated

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import sft  # noqa: E402
from common.cli import unset  # noqa: E402
from common.errors import UsageError, check_writable, main_errors  # noqa: E402

POLICIES = ("checkpoint", "expert", "random")


@dataclass
class Args:
    checkpoint: Annotated[str | None, unset("none; needed with --policy checkpoint")] = None
    """checkpoint dir (openpi / LeRobot / RLinf / ours) or Hugging Face Hub id org/name[@revision] (downloaded into
    the HF cache: HF_HOME, HF_HUB_OFFLINE, HF_TOKEN apply)"""
    asset_id: Annotated[str | None, unset("the only one")] = None
    """openpi / RLinf checkpoints with several norm stats (assets/<id>/): which one"""
    data_config: Annotated[str | None, unset("what the checkpoint records, else a paper Hub id's own, else the one its "
                                             "format and --env imply; an openpi / RLinf π0 on LIBERO must name it")] = None
    """the checkpoint's training data conventions where its files do not record them (common/conventions.py):
    pi0_libero (openpi / RLinf π0 on LIBERO: actions relative to the state), pi05_libero (absolute; the default for
    an openpi π0.5 on LIBERO), both in openpi's LIBERO client; rlinf_pi0_libero, rlinf_pi05_libero (the same in
    RLinf's LIBERO env: the paper's checkpoints; the default for an RLinf-saved π0.5), pi0_libero_horizon10, lerobot,
    rlinf_maniskill, rlinf_metaworld, isaac_gr00t (the default for an Isaac-GR00T N1.5: its 95% center crop),
    isaac_gr00t_no_crop, rlinf_gr00t_libero (RLinf's GR00T N1.5 on LIBERO: the paper's), pirl (pirl's own: the
    embedded default's), pirl_lerobot_view (the same in LeRobot's MetaWorld camera view and prompts; without
    --checkpoint the embedded default is made, and runs, in that view)"""
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
    image_size: Annotated[int | None, unset("the checkpoint's image size; 64 for expert / random")] = None
    """render size (pixels)"""
    num_steps: Annotated[int | None, unset("a LeRobot checkpoint's num_inference_steps, else 10")] = None
    """Euler ODE steps (the RL scripts' held-out evals run their --denoise-steps, 4 in the tiny preset: pass
    --num-steps 4 to repeat one of theirs)"""
    replan_steps: Annotated[int | None, unset("a LeRobot checkpoint's n_action_steps, else its data config's peer "
                                              "evaluation's (openpi's LIBERO client: 5), else 4")] = None
    """actions executed per chunk H'"""
    device: str = "auto"
    """auto | cpu | cuda"""
    video_dir: Annotated[str | None, unset("no videos")] = None
    """write mp4s of the first --num-videos episodes here"""
    num_videos: int = 0
    """episodes to record"""
    out: Annotated[str | None, unset("<checkpoint>/eval_<env>_seed<seed>.json, or printed only")] = None
    """JSON summary path"""


def check_args(args: Args):
    """Every flag checked before anything is built (UsageError: one `error:` line)."""
    from common.envs import check_env_name
    from common.experts import check_expert

    check_env_name(args.env)
    if args.policy not in POLICIES:
        raise UsageError(f"--policy must be one of {', '.join(POLICIES)} (got {args.policy!r})")
    if args.policy == "checkpoint":
        if args.checkpoint is None:
            raise UsageError("--checkpoint DIR is required with --policy checkpoint (or --policy expert | random)")
        from common.hub import check_checkpoint_spec
        check_checkpoint_spec(args.checkpoint)   # a local dir or a Hub id; downloaded (rank 0) when loaded
    if args.policy == "expert":
        check_expert(args.env)
    for flag, value, low in (("--num-envs", args.num_envs, 1), ("--num-steps", args.num_steps, 1),
                             ("--replan-steps", args.replan_steps, 1), ("--num-videos", args.num_videos, 0),
                             ("--episodes-per-task", args.episodes_per_task, 1), ("--image-size", args.image_size, 1)):
        if value is not None and value < low:
            raise UsageError(f"{flag} must be >= {low} (got {value})")
    if args.num_videos and args.video_dir is None:
        raise UsageError(f"--num-videos {args.num_videos} needs --video-dir DIR")
    out = args.out or (os.path.join(args.checkpoint, f"eval_{args.env}_seed{args.seed}.json")
                       if args.policy == "checkpoint" and os.path.isdir(args.checkpoint) else None)   # a Hub id: printed only
    for flag, path in (("--out", out), ("--video-dir", args.video_dir)):
        if path is not None:
            check_writable(path, flag)
    return out


def main(args: Args):
    from common.distributed import setup_distributed
    from common.evaluate import (check_policy_fits_env, evaluate, expert_act_fn, policy_act_fn, random_act_fn,
                                 sampling_defaults)
    from common.envs import make_envs

    out = check_args(args)
    d = setup_distributed(args.device)
    policy = processor = None
    if args.policy == "checkpoint":
        from common.run import load_for_env   # its data conventions and cameras; a broken dir is one line naming it
        policy, processor, args.checkpoint = load_for_env(args.checkpoint, args.env, args.data_config, device=d.device,
                                                          asset_id=args.asset_id)
    defaults = sampling_defaults(processor, args.env) if processor is not None else {}   # the checkpoint's own, where recorded
    args.num_steps = args.num_steps or defaults.get("num_steps", 10)
    args.replan_steps = args.replan_steps or defaults.get("replan_steps", sft.DEFAULT_REPLAN_STEPS)
    env_opts = (processor.data_config.env_options(args.env, policy.config.image_size) if policy is not None   # the peer's
                else {"image_size": sft.DEFAULT_IMAGE_SIZE})   # render size and MetaWorld view
    image_size = env_opts["image_size"] = args.image_size or env_opts["image_size"]   # --image-size wins
    envs = make_envs(args.env, args.num_envs, seed=args.seed, autoreset=False, **env_opts)
    try:
        if policy is not None:
            check_policy_fits_env(policy, processor, envs, image_size, args.env, f"--checkpoint {args.checkpoint}",
                                  args.replan_steps)
            act_fn = policy_act_fn(policy, processor, args.num_steps, args.replan_steps, action_dim=envs.action_dim)
        elif args.policy == "expert":
            act_fn = expert_act_fn(args.env, envs)
        else:
            act_fn = random_act_fn(envs.action_dim, args.replan_steps)
        summary = evaluate(act_fn, args.env, args.episodes_per_task, seed=args.seed, envs=envs,
                           video_dir=args.video_dir, num_videos=args.num_videos, json_path=out, progress=True)
    finally:
        envs.close()
    if d.is_main:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
