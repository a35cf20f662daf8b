"""The paper's Table 6, "SFT" rows, at CPU scale: how much does the stochastic rollout sampler of
Flow-SDE (the one RL trains with) cost the few-shot SFT policy, against the deterministic ODE it is
evaluated with, as a function of the noise level a and the number of denoise steps K?

    python bench/ablation_sft.py                      # the full table: 50 held-out episodes per cell
    python bench/ablation_sft.py --episodes 4         # a smoke run (numbers mean nothing)

Policy: the embedded default's cached few-shot SFT policy (tiny π0, MetaWorld drawer-open,
64 px, H = 8), executing H' = 4 actions per decision, as flow_sde_ppo.py does.
Both columns run the ONE evaluation protocol (common/evaluate.py) on the SAME held-out episodes
(the env's eval init ids, seed 0), so the gap isolates the sampler:
  eval  = deterministic Euler ODE with K steps (policy_act_fn; what flow_sde_ppo.py's evals run);
  train = flow_sde_ppo.sample_hybrid with (K, a), imported, i.e. the rollout sampler of training:
          one denoise step j ~ U{0..K-1} per env per decision is the SDE step of eq. 9
          (σ_t = a sqrt(t / (1 - t))), the other K - 1 steps are the ODE.
The paper's "Train" is measured on training rollouts (train init states); ours uses held-out init
states for both columns so that the two differ only in the sampler.
The eval column depends on K only (the paper's noise-level rows repeat 65.2), so it is run once per K.
A cell with n episodes has a binomial standard error of up to 0.5 / sqrt(n) (7 points at n = 50).

Writes bench/results/ablation_sft.json: one row per (K, a) with eval / train success, the gap
(eval - train, points) and the mean episode lengths (successful episodes end early).
"""
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.cli import unset  # noqa: E402
from common.errors import check_at_least, check_writable, main_errors  # noqa: E402
from flow_sde_ppo import Args as PPOArgs  # noqa: E402  (module import has no side effects)
from flow_sde_ppo import sample_hybrid  # noqa: E402


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
    """simulator task (common.envs.ENV_NAMES)"""
    episodes: int = 50
    """held-out episodes per task for every cell (the embedded default's 50)"""
    num_envs: int = 16
    """parallel environments"""
    replan_steps: int = 4
    """H': actions executed per decision (the embedded default's)"""
    noise_levels: tuple[float, ...] = (0.2, 0.5, 0.8)
    """a values swept at K = --noise-sweep-steps"""
    noise_sweep_steps: int = 4
    """K of the noise-level sweep"""
    denoise_steps: tuple[int, ...] = (1, 2, 4, 8)
    """K values swept at a = --step-sweep-noise"""
    step_sweep_noise: float = 0.5
    """a of the denoise-step sweep"""
    seed: int = 0
    """eval seed: which held-out episodes, the initial noise and the SDE noise"""
    threads: int = 1
    """torch CPU threads"""
    out: str = "bench/results/ablation_sft.json"
    """where the table is written (JSON)"""


class hybrid_act_fn:
    """act_fn for evaluate(): the Flow-SDE rollout sampler of training (flow_sde_ppo.sample_hybrid).

    Per decision: encode the prefix once, then K denoise steps from x_1 ~ N(0, I), one of which
    (j drawn uniformly per env) is the SDE step of eq. 9 with noise level a; the first H' actions are
    executed. The value head is not needed here: a stub returns zeros. Its noise comes from one generator per
    wave of envs, as in training, so (unlike policy_act_fn's per-episode noise) its reads depend on --num-envs:
    compare SDE rows at one --num-envs.
    """

    def __init__(self, policy, processor, denoise_steps: int, noise_level: float, replan_steps: int, action_dim: int):
        self.policy, self.processor, self.action_dim = policy, processor, action_dim
        # only these three fields of flow_sde_ppo's Args are read by sample_hybrid
        self.ppo_args = PPOArgs(denoise_steps=denoise_steps, noise_level=noise_level, replan_steps=replan_steps)
        self.device = next(policy.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(0)

    def reset(self, seed: int):
        self.generator.manual_seed(seed)

    @staticmethod
    def no_critic(features: torch.Tensor, steps=None) -> torch.Tensor:  # (B, K, W), (B, K) -> (B,) zeros
        return features.new_zeros(features.shape[0])

    @torch.no_grad()
    def __call__(self, raw_obs: dict) -> np.ndarray:
        obs = self.processor.observation(raw_obs, self.device)
        cache = self.policy.encode(obs)
        actions, *_ = sample_hybrid(self.policy, cache, self.no_critic, self.ppo_args, self.action_dim, self.generator)
        return self.processor.actions_to_env(actions, self.action_dim)[:, : self.ppo_args.replan_steps]  # (N, H', A)


def check_args(args: Args):
    """Every flag checked before anything is built (UsageError: one `error:` line)."""
    from common.envs import check_env_name
    from common.conventions import check_embedded_data_config
    from common.sft import check_checkpoint_or_expert

    check_env_name(args.env)
    check_checkpoint_or_expert(args.checkpoint, args.env)
    if args.checkpoint is None:   # the embedded default: made under one of pirl's data configs
        check_embedded_data_config(args.data_config)
    check_at_least(1, episodes=args.episodes, num_envs=args.num_envs, replan_steps=args.replan_steps,
                   noise_sweep_steps=args.noise_sweep_steps, denoise_steps=args.denoise_steps, threads=args.threads)
    check_at_least(0, noise_levels=args.noise_levels, step_sweep_noise=args.step_sweep_noise)
    check_writable(ROOT / args.out, "--out")


def main(args: Args):
    from common.run import load_for_env   # its data conventions and cameras; a broken dir is one line naming it
    from common.sft import make_default_sft_policy
    from common.envs import make_envs
    from common.evaluate import check_policy_fits_env, evaluate, policy_act_fn

    check_args(args)
    torch.set_num_threads(args.threads)
    checkpoint = args.checkpoint or str(make_default_sft_policy(args.env, data_config=args.data_config))
    policy, processor, _ = load_for_env(checkpoint, args.env, args.data_config)
    env_opts = processor.data_config.env_options(args.env, policy.config.image_size)   # its render size and MetaWorld view
    policy.eval()
    envs = make_envs(args.env, args.num_envs, seed=args.seed, **env_opts, autoreset=False)
    cells = [(args.noise_sweep_steps, a) for a in args.noise_levels]
    cells += [(K, args.step_sweep_noise) for K in args.denoise_steps if (K, args.step_sweep_noise) not in cells]

    def run(act_fn) -> dict:
        return evaluate(act_fn, args.env, num_episodes_per_task=args.episodes, envs=envs, seed=args.seed)

    start, eval_by_K, rows = time.time(), {}, []
    try:
        check_policy_fits_env(policy, processor, envs, env_opts["image_size"], args.env,
                              args.checkpoint or "the default policy", args.replan_steps)
        for K, a in cells:
            if K not in eval_by_K:  # the deterministic ODE does not depend on a
                eval_by_K[K] = run(policy_act_fn(policy, processor, num_steps=K, replan_steps=args.replan_steps))
            ode, sde = eval_by_K[K], run(hybrid_act_fn(policy, processor, K, a, args.replan_steps, envs.action_dim))
            ev, train = ode["success_rate"], sde["success_rate"]
            rows.append({"denoise_steps": K, "noise_level": a, "eval_success": ev, "train_success": train,
                         "gap": ev - train, "num_episodes": sde["num_episodes"],
                         "eval_episode_length": ode["episode_length"], "train_episode_length": sde["episode_length"]})
            print(f"K={K} a={a}: eval {ev:.1%}  train {train:.1%}  ({time.time() - start:.0f} s)", flush=True)
    finally:
        envs.close()

    print(f"\n{args.env}, {rows[0]['num_episodes']} held-out episodes per cell, H' = {args.replan_steps}")
    print("| K | a | eval (ODE) % | train (hybrid SDE) % | gap (points) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['denoise_steps']} | {r['noise_level']} | {100 * r['eval_success']:.1f} | "
              f"{100 * r['train_success']:.1f} | {100 * r['gap']:+.1f} |")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "seconds": round(time.time() - start, 1)}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
