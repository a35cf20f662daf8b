"""How far does Flow-SDE's exploration move the robot? The spread of the first action chunk over many
samples for ONE observation: the hybrid ODE-SDE rollout sampler (one SDE step per decision, eq. 9)
against the plain ODE, whose only randomness is its initial noise x_1.

    python bench/exploration.py                 # the embedded default's SFT policy, held-out state 0

MetaWorld actions are hand displacements: 1.0 = 1 cm per step. Writes bench/results/exploration.json.
"""
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import flow_sde_ppo as sde  # noqa: E402  (module import has no side effects)
from common.cli import unset  # noqa: E402
from common.errors import check_at_least, check_writable, main_errors  # noqa: E402


@dataclass
class Args:
    checkpoint: Annotated[str | None, unset("the few-shot SFT policy of --env that the RL scripts make or reuse "
                                            "(runs/cache)")] = None
    """the SFT policy: a dir or a Hub id org/name[@revision]"""
    data_config: Annotated[str | None, unset("what the checkpoint records, else a paper Hub id's own, else the one its "
                                             "format and --env imply")] = None
    """its data conventions, a common/conventions.py DATA_CONFIGS name; without --checkpoint, the embedded default's:
    pirl, or pirl_lerobot_view (made and run in LeRobot's MetaWorld camera view)"""
    env: str = "metaworld-drawer-open-v3"
    """simulator task"""
    init_id: int = 0
    """held-out init id of the observation"""
    samples: int = 256
    """action chunks sampled for the one observation"""
    denoise_steps: int = 4
    """K"""
    noise_levels: tuple[float, ...] = (0.2, 0.5, 0.8)
    """a values of the hybrid sampler"""
    replan_steps: int = 4
    """H': executed actions per chunk"""
    out: str = "bench/results/exploration.json"
    """where the figures are written"""


@torch.no_grad()
def check_args(args: Args) -> None:
    """Every flag checked before anything is built (UsageError: one `error:` line)."""
    from common.envs import check_env_name
    from common.conventions import check_embedded_data_config
    from common.sft import check_checkpoint_or_expert

    check_env_name(args.env)
    check_checkpoint_or_expert(args.checkpoint, args.env)
    if args.checkpoint is None:   # the embedded default: made under one of pirl's data configs
        check_embedded_data_config(args.data_config)
    check_at_least(0, init_id=args.init_id, noise_levels=args.noise_levels)
    check_at_least(1, samples=args.samples, denoise_steps=args.denoise_steps, replan_steps=args.replan_steps)
    check_writable(args.out, "--out")


def main(args: Args) -> None:
    from common.run import load_for_env   # its data conventions and cameras; a broken dir is one line naming it
    from common.sft import make_default_sft_policy
    from common.envs import make_envs
    from common.evaluate import check_policy_fits_env

    check_args(args)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    checkpoint = args.checkpoint or str(make_default_sft_policy(args.env, data_config=args.data_config))
    policy, processor, _ = load_for_env(checkpoint, args.env, args.data_config)
    env_opts = processor.data_config.env_options(args.env, policy.config.image_size)   # its render size and MetaWorld view
    envs = make_envs(args.env, 1, seed=0, **env_opts, autoreset=False, asynchronous=False)
    try:
        check_policy_fits_env(policy, processor, envs, env_opts["image_size"], args.env,
                              args.checkpoint or "the default policy", args.replan_steps)
        raw = envs.reset([(0, args.init_id)])
        A = envs.action_dim
    finally:
        envs.close()
    B = args.samples
    raw = {k: np.repeat(v, B, 0) if isinstance(v, np.ndarray) else list(v) * B for k, v in raw.items()}
    obs = processor.observation(raw, torch.device("cpu"))
    cache = policy.encode(obs)
    critic = sde.Critic(policy.expert_width, 64)  # its value is not used here
    gen = torch.Generator().manual_seed(0)

    def spread(actions: torch.Tensor) -> float:  # std over samples of the executed xyz actions, averaged
        env_actions = np.asarray(processor.actions_to_env(actions, A))[:, : args.replan_steps, :3]   # (B, H', 3)
        return float(env_actions.std(axis=0).mean())

    x_1 = torch.randn(B, policy.config.action_horizon, policy.config.action_dim, generator=gen)
    rows = {"ode": spread(policy.sample_actions(obs, noise=x_1, num_steps=args.denoise_steps))}
    for a in args.noise_levels:
        flags = sde.Args(denoise_steps=args.denoise_steps, noise_level=a, replan_steps=args.replan_steps)
        rows[f"hybrid a={a}"] = spread(sde.sample_hybrid(policy, cache, critic, flags, A, gen)[0])
    print(f"{args.env}, held-out state {args.init_id}, {B} samples, K = {args.denoise_steps}: "
          "std of the executed xyz actions over samples (1.0 = 1 cm per step)")
    for name, value in rows.items():
        print(f"  {name:>14}: {value:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "action_std": rows}, indent=2))


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
