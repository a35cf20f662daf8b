"""Speed of the pieces of one RL iteration, measured in ONE run so the figures compare as ratios.

    python tools/bench_rollout.py                 # tiny π0, CPU, the embedded default's settings
    python tools/bench_rollout.py --device cuda --preset pi0 --batch 32     # a GPU node

Prints, per denoise-step count K:
  - rollout decision: one prefix pass + K expert passes (both samplers cost the same here);
  - update per sample: Flow-SDE recomputes ONE expert pass (step j) with gradients, Flow-Noise
    recomputes all K (the paper's Fig. 8b: its update cost grows with K);
and the raw vectorised env steps/s of --env beside the full rollout loop (model + env) steps/s.
Numbers are wall-clock on a shared machine: read them as ratios within one run.
"""
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Args:
    preset: str = "tiny"
    """model preset (tiny, tiny-pi05, pi0, pi05)"""
    batch: int = 16
    """decisions per batch (the number of envs at rollout, the micro-batch at update)"""
    image_size: int = 64
    """model image size"""
    num_cameras: int = 1
    """cameras"""
    steps: tuple[int, ...] = (1, 2, 4, 8)
    """denoise-step counts K to measure"""
    repeats: int = 5
    """timed repeats (after one warm-up)"""
    env: str = "metaworld-button-press-topdown-v3"
    """env for the env-vs-rollout comparison ('' to skip)"""
    replan_steps: int = 4
    """actions executed per decision H'"""
    device: str = "cpu"
    """cpu | cuda"""
    threads: int = 2
    """torch CPU threads"""


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main(args: Args):
    from common.policy import Observation, PI0Policy, make_config

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = make_config(args.preset, image_size=args.image_size, num_cameras=args.num_cameras)
    policy = PI0Policy(config).to(device)
    policy.freeze_vlm()
    B, L = args.batch, config.max_token_len
    obs = Observation(images=torch.rand(B, config.num_cameras, 3, config.image_size, config.image_size, device=device) * 2 - 1,
                      image_masks=torch.ones(B, config.num_cameras, dtype=torch.bool, device=device),
                      tokens=torch.randint(4, config.vocab_size, (B, L), device=device),
                      token_masks=torch.ones(B, L, dtype=torch.bool, device=device),
                      state=torch.randn(B, config.action_dim, device=device))
    x = torch.randn(B, config.action_horizon, config.action_dim, device=device)
    t = torch.full((B,), 0.5, device=device)

    @torch.no_grad()
    def rollout_decision(K):
        cache = policy.encode(obs)
        for _ in range(K):
            policy.velocity(cache, x, t)

    def update_sample(passes):
        with torch.no_grad():
            cache = policy.encode(obs)
        loss = sum(policy.velocity(cache, x, t)[0].square().mean() for _ in range(passes))
        loss.backward()

    print(f"preset={args.preset} batch={B} image={args.image_size} device={args.device} threads={args.threads}")
    print(f"{'K':>3} {'rollout ms':>11} {'SDE update ms':>14} {'Noise update ms':>16} {'Noise/SDE':>10}")
    for K in args.steps:
        roll = timed(lambda: rollout_decision(K), args.repeats, args.device) * 1e3
        sde = timed(lambda: update_sample(1), args.repeats, args.device) * 1e3
        noise = timed(lambda: update_sample(K), args.repeats, args.device) * 1e3
        print(f"{K:>3} {roll:>11.1f} {sde:>14.1f} {noise:>16.1f} {noise / sde:>10.2f}")

    if args.env:
        from common.envs import make_envs

        envs = make_envs(args.env, B, seed=0, image_size=args.image_size)
        try:
            envs.reset(seed=0)
            actions = np.zeros((B, args.replan_steps, envs.action_dim), np.float32)
            n = 10
            start = time.perf_counter()
            for _ in range(n):
                envs.step_chunk(actions)
            env_sps = n * B * args.replan_steps / (time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(n):
                rollout_decision(4)
                envs.step_chunk(actions)
            loop_sps = n * B * args.replan_steps / (time.perf_counter() - start)
        finally:
            envs.close()
        print(f"{args.env}: raw env {env_sps:.0f} steps/s, rollout loop (K=4) {loop_sps:.0f} steps/s "
              f"(ratio {loop_sps / env_sps:.2f})")


if __name__ == "__main__":
    main(tyro.cli(Args))
