"""Are a policy's failures chance or the scene? Success of each held-out initial state over several
noise seeds of the deterministic ODE, next to the object's position.

    python bench/per_state.py                           # the embedded default's SFT policy, 32 states x 4 seeds
    python bench/per_state.py --max-episode-steps 250   # do the failures just need more time?
    python bench/per_state.py --checkpoint RUN/checkpoints/iter_000100/policy --before bench/results/per_state.json
                                                        # after RL: where did each group of states go?

A state that succeeds with some seeds and fails with others is where RL finds signal (a success to
reinforce next to a failure); a state that fails with every seed gives PPO nothing unless its
exploration reaches a success, and gives GRPO an all-fail group. Writes bench/results/per_state.json.
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
from common.cli import unset  # noqa: E402
from common.errors import UsageError, check_at_least, check_writable, main_errors  # noqa: E402


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
    """a metaworld-* task (the object position is read from MetaWorld's state)"""
    num_states: int = 32
    """held-out init ids 0..num_states-1"""
    seeds: int = 4
    """noise seeds of the ODE's initial noise per state"""
    num_envs: int = 16
    """parallel environments"""
    denoise_steps: int = 4
    """K of the ODE"""
    replan_steps: int = 4
    """H': actions executed per decision"""
    max_episode_steps: Annotated[int | None, unset("the benchmark's 100")] = None
    """episode length"""
    out: str = "bench/results/per_state.json"
    """where the per-state results are written"""
    before: Annotated[str | None, unset("no comparison")] = None
    """an earlier per-state JSON of the same --env, --num-states and --seeds (e.g. the SFT policy's): also print how
    its always / mixed / never states fared under this policy"""


def check_args(args: Args) -> None:
    """Every flag checked before anything is built (UsageError: one `error:` line)."""
    from common.conventions import check_embedded_data_config
    from common.envs import METAWORLD_EVAL_INITS, check_env_name
    from common.sft import check_checkpoint_or_expert

    check_env_name(args.env)
    if not args.env.startswith("metaworld-") or args.env in ("metaworld-mt10", "metaworld-mt50"):
        raise UsageError(f"--env must be a single metaworld-* task, e.g. metaworld-drawer-open-v3 (got {args.env})")
    check_checkpoint_or_expert(args.checkpoint, args.env)
    if args.checkpoint is None:   # the embedded default: made under one of pirl's data configs
        check_embedded_data_config(args.data_config)
    check_at_least(1, num_states=args.num_states, seeds=args.seeds, num_envs=args.num_envs,
                   denoise_steps=args.denoise_steps, replan_steps=args.replan_steps, max_episode_steps=args.max_episode_steps)
    if args.num_states > METAWORLD_EVAL_INITS:
        raise UsageError(f"--num-states {args.num_states}: there are {METAWORLD_EVAL_INITS} held-out init ids")
    check_writable(args.out, "--out")
    if args.before is not None:
        try:
            before = json.loads(Path(args.before).read_text())
            same = [before["args"][k] == getattr(args, k) for k in ("env", "num_states", "seeds")]
            if len(before["success"]) != before["args"]["num_states"]:   # main reads it after the long eval
                raise ValueError("its success rows do not match its --num-states")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--before {args.before}: not a per_state.py JSON ({e})") from None
        if not all(same):
            raise UsageError(f"--before {args.before} was run with --env {before['args']['env']} --num-states "
                             f"{before['args']['num_states']} --seeds {before['args']['seeds']}: run this one with the same")


GROUPS = ("always", "mixed", "never")


def groups(success: np.ndarray) -> np.ndarray:
    """Per state: "always" (every seed succeeds), "never" or "mixed". success: (states, seeds) bool."""
    rate = success.mean(1)
    return np.where(rate == 1, "always", np.where(rate == 0, "never", "mixed"))


def transitions(before: np.ndarray, after: np.ndarray) -> dict:
    """For each group of states under `before` (always / mixed / never): how many, their success before and after,
    and which group each is in after. before, after: (states, seeds) bool on the same states and seeds."""
    g0, g1 = groups(before), groups(after)
    out = {}
    for g in GROUPS:
        idx = g0 == g
        out[g] = {"states": int(idx.sum()),
                  "success_before": float(before[idx].mean()) if idx.any() else None,
                  "success_after": float(after[idx].mean()) if idx.any() else None,
                  "now": {h: int((g1[idx] == h).sum()) for h in GROUPS}}
    return out


def format_transitions(moves: dict) -> str:
    lines = ["| states under --before | how many | success before → after | now always / mixed / never |",
             "|---|---|---|---|"]
    for g, m in moves.items():
        if m["states"]:
            lines.append(f"| {g} | {m['states']} | {m['success_before']:.0%} → {m['success_after']:.0%} "
                         f"| {m['now']['always']} / {m['now']['mixed']} / {m['now']['never']} |")
    return "\n".join(lines)


def main(args: Args) -> None:
    from common.run import load_for_env   # its data conventions and cameras; a broken dir is one line naming it
    from common.sft import make_default_sft_policy
    from common.envs import make_envs
    from common.evaluate import check_policy_fits_env, policy_act_fn, run_wave

    check_args(args)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    checkpoint = args.checkpoint or str(make_default_sft_policy(args.env, data_config=args.data_config))
    policy, processor, _ = load_for_env(checkpoint, args.env, args.data_config)
    env_opts = processor.data_config.env_options(args.env, policy.config.image_size)   # its render size and MetaWorld view
    envs = make_envs(args.env, args.num_envs, seed=0, **env_opts, autoreset=False,
                     max_episode_steps=args.max_episode_steps)
    ids = list(envs.eval_init_ids)[: args.num_states]
    success = np.zeros((len(ids), args.seeds), bool)          # (states, seeds)
    position = np.zeros((len(ids), 3))                         # object xyz at reset, metres
    try:
        check_policy_fits_env(policy, processor, envs, env_opts["image_size"], args.env,
                              args.checkpoint or "the default policy", args.replan_steps)
        act_fn = policy_act_fn(policy, processor, args.denoise_steps, args.replan_steps)
        for seed in range(args.seeds):
            act_fn.reset(1000 + seed)
            for start in range(0, len(ids), args.num_envs):
                wave = [(0, i) for i in ids[start : start + args.num_envs]]
                real = len(wave)
                wave += [wave[-1]] * (args.num_envs - real)
                results = run_wave(envs, act_fn, wave, real, [], {}, episode_ids=[i for _, i in wave])   # noise by init id
                success[start : start + real, seed] = [ok for _, ok, _ in results]
                if seed == 0:  # the 39-D MetaWorld state keeps the object position at [4:7] until the end
                    envs.reset(wave)
                    position[start : start + real] = np.stack(envs.call("expert_obs"))[:real, 4:7]
    finally:
        envs.close()
    print("| init id | object x, y (m) | successes |\n|---|---|---|")
    for i, init in enumerate(ids):
        print(f"| {init} | {position[i, 0]:+.3f}, {position[i, 1]:.3f} | {''.join('1' if s else '0' for s in success[i])} |")
    group = groups(success)
    always, never = int((group == "always").sum()), int((group == "never").sum())
    print(f"{len(ids)} states x {args.seeds} seeds: success {success.mean():.1%}; always {always}, never {never}, "
          f"mixed {len(ids) - always - never}")
    result = {"args": vars(args), "init_ids": ids, "position": position.tolist(), "success": success.tolist(),
              "always": always, "never": never}
    if args.before is not None:
        before = np.array(json.loads(Path(args.before).read_text())["success"], bool)
        result["transitions"] = transitions(before, success)
        print(format_transitions(result["transitions"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
