"""Speed against the limits, measured in ONE run so that every figure is a ratio of two timings
taken side by side (issue 9). Wall-clock times on a shared machine mean little; their ratios do.

    python bench/speed.py                      # tiny π0, CPU, the embedded default's settings (~70 s)
    python bench/speed.py --parts 1            # only the rollout / simulator ratio
    python bench/speed.py --device cuda --preset pi0 --image-size 224 --action-horizon 50 \
        --max-token-len 48 --replan-steps 5 --update-batch 32        # a GPU node (random weights)

It measures, with a random-init policy of the embedded default's shape (tiny π0, 64 px, one camera,
H = 8, L = 16) and the RL scripts' own functions (flow_sde_ppo.sample_hybrid, step_logprob,
flow_noise_ppo.chain_logprob):

  1. rollout / simulator: env steps/s of the full rollout loop of flow_sde_ppo.py
     (processor.observation -> encode -> K denoise steps -> actions_to_env -> envs.step_chunk, with the
     truncation bootstrap) over env steps/s of the bare vectorised simulator stepped with random
     actions, alternated round by round. Goal of the issue: >= 0.8 with the tiny model.
  2. update cost per action vs K: Flow-SDE hybrid (one expert pass with grad at the SDE step j),
     Flow-Noise (all K expert passes with grad, one joint log-likelihood) and the "standard" two-layer
     MDP where all K steps are stochastic, so each action is K transitions (K passes with grad; the
     prefix is shared by the K transitions of an action, the cheapest way to run it). Each includes the
     frozen-VLM prefix pass and the backward pass.
  3. sampling one action chunk with the prefix KV cache (one prefix pass + K expert passes,
     policy.sample_actions) vs the full [prefix, suffix] forward at every step (policy.velocity_full).

Measured here, alone, on the embedded default (--env metaworld-drawer-open-v3 --parts 1):
  1. rollout / simulator 0.65 with torch's 2 threads (436 vs 668 env steps/s; per decision step_chunk
     107 ms, encode 20, denoise 16, processor 2), 0.64 with --threads 1 (encode 36, denoise 26):
     bench/results/speed_rollout_threads{2,1}.json. The denoise steps are dispatch-bound at this size.
Earlier (button-press, 2 cores shared with three RL runs and their 48 env workers, load average 5-29,
--threads 1; bench/results/speed.json, whose alone re-run gave 0.70 in part 1):
  1. rollout / simulator 0.82 (309 vs 375 env steps/s). Per decision: step_chunk 180 ms, encode 24,
     denoise 15 (4 expert passes, critic, SDE), processor 1. Runs of `--parts 1` vary 0.56-0.87 with
     the load, before and after the fix below alike.
  2. update ms per action, hybrid / Flow-Noise / standard: K=1 2.0 / 2.0 / 1.8, K=8 1.7 / 5.2 / 3.9;
     standard/hybrid 0.9, 1.1, 1.4, 2.3 and noise/hybrid 1.0, 1.3, 1.9, 3.0 at K = 1, 2, 4, 8
     (the tiny model's prefix pass, shared by all three, is most of the hybrid's cost).
  3. KV cache vs recompute: 1.0, 1.7, 2.8, 4.1x at K = 1, 2, 4, 8 (max |diff| 5e-7).
Profile of the rollout loop (py-spy): rendering is the simulator's cost (llvmpipe, 8 ms per env per
chunk vs 0.3 ms per physics step); the model's is the prefix pass (Gemma MLP over 80 prefix tokens
per env, 11 of them prompt padding). Fix (common/policy.py): prompt slots no row uses are dropped
before the prefix pass; same actions (bitwise here), encode 0.84-0.94x for the tiny default
(L = 16, 5 used), 0.64x for tiny-pi05 with 30 of 64 used (interleaved A/B, same weights and inputs).
"""
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.errors import UsageError, check_at_least, check_writable, main_errors  # noqa: E402


@dataclass
class Args:
    env: str = "metaworld-drawer-open-v3"
    """simulator task (common.envs.ENV_NAMES)"""
    num_envs: int = 16
    """parallel environments (the rollout batch)"""
    image_size: int = 64
    """render and model image size"""
    preset: str = "tiny"
    """model preset (tiny, tiny-pi05, pi0, pi05); random weights: speed does not depend on them"""
    action_horizon: int = 8
    """H, the model's action chunk"""
    max_token_len: int = 16
    """L, prompt slots (the embedded default's)"""
    replan_steps: int = 4
    """H', actions executed per decision"""
    denoise_steps: int = 4
    """K of the rollout loop (part 1)"""
    steps: tuple[int, ...] = (1, 2, 4, 8)
    """the K values of parts 2 and 3"""
    update_batch: int = 16
    """actions per update micro-batch (part 2) and per sampling batch (part 3)"""
    decisions: int = 10
    """decisions timed per round in part 1"""
    rounds: int = 5
    """part 1: alternating (bare simulator, full loop) rounds; the medians are reported"""
    repeats: int = 5
    """parts 2 and 3: timed repeats per figure after one warm-up, interleaved; medians are reported"""
    noise_level: float = 0.5
    """a, the Flow-SDE noise level (TINY_CPU preset)"""
    device: str = "cpu"
    """cpu | cuda"""
    threads: int = 0
    """torch CPU threads (0: torch's default, all cores, as the RL scripts run; 1: a quieter share of a busy machine)"""
    seed: int = 0
    """seed of the weights, the env episodes and the sampler"""
    parts: tuple[int, ...] = (1, 2, 3)
    """which measurements to run (1 rollout vs simulator, 2 update cost, 3 KV cache vs recompute)"""
    json_path: str = "bench/results/speed.json"
    """where the figures are written"""


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def medians(fns: dict, repeats: int, device) -> dict:
    """Median wall time (s) of each function, after one warm-up call each; calls are interleaved
    (a, b, c, a, b, c, ...) so that a change of machine load hits every figure alike."""
    times = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if r:  # round 0 is the warm-up
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def build_policy(args: Args, envs, device):
    """Random-init policy of the embedded default's shape + a Processor (tiny tokenizer on the env's
    instructions, norm stats of random data: the numbers do not matter for speed)."""
    from common.policy import PI0Policy, make_config
    from common.processor import Processor, compute_norm_stats
    from common.tokenizer import train_tiny_tokenizer

    config = make_config(args.preset, image_size=args.image_size, num_cameras=envs.num_cameras,
                         action_horizon=args.action_horizon, max_token_len=args.max_token_len,
                         action_dim=max(make_config(args.preset).action_dim, envs.state_dim, envs.action_dim))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tiny_tokenizer(envs.task_descriptions, Path(tmp) / "tok.model", vocab_size=512)
    rng = np.random.default_rng(args.seed)
    stats = compute_norm_stats(rng.normal(size=(256, envs.state_dim)), rng.uniform(-1, 1, (256, envs.action_dim)))
    torch.manual_seed(args.seed)
    policy = PI0Policy(config).to(device)
    policy.freeze_vlm()  # the RL stage trains the expert only (the RL scripts' default)
    return policy, Processor.from_stats(stats, tokenizer, config)


def rollout_vs_simulator(args: Args, policy, processor, envs, device) -> dict:
    """Part 1: env steps/s of flow_sde_ppo.py's rollout loop vs of the bare simulator."""
    import flow_sde_ppo as sde

    sde_args = sde.Args(denoise_steps=args.denoise_steps, noise_level=args.noise_level, replan_steps=args.replan_steps)
    width = policy.vlm_width if policy.config.variant == "pi05" else policy.expert_width  # as flow_sde_ppo.py
    critic = sde.Critic(width, sde_args.critic_hidden).to(device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    A, N, Hp = envs.action_dim, envs.num_envs, args.replan_steps
    rng = np.random.default_rng(args.seed)
    parts = {"processor": 0.0, "encode": 0.0, "denoise": 0.0, "to_env": 0.0, "step_chunk": 0.0}

    def act_and_value(raw_obs):  # flow_sde_ppo.py's act_and_value, timed piece by piece
        t0 = time.perf_counter()
        obs = processor.observation(raw_obs, device)
        t1 = time.perf_counter()
        cache = policy.encode(obs)
        sync(device)
        t2 = time.perf_counter()
        actions, *_, value = sde.sample_hybrid(policy, cache, critic, sde_args, A, gen)
        sync(device)
        t3 = time.perf_counter()
        env_actions = processor.actions_to_env(actions, A)[:, :Hp]
        t4 = time.perf_counter()
        for k, dt in zip(("processor", "encode", "denoise", "to_env"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k] += dt
        return env_actions, value

    def full_loop(obs):
        for _ in range(args.decisions):
            env_actions, _ = act_and_value(obs)
            t0 = time.perf_counter()
            obs, reward, terminated, truncated, info = envs.step_chunk(env_actions)
            parts["step_chunk"] += time.perf_counter() - t0
            bootstrap = np.flatnonzero(truncated & ~terminated)
            if len(bootstrap):  # time limit: the RL scripts value the final observation
                act_and_value(sde.select_obs(info["final_obs"], bootstrap))
        return obs

    def bare_simulator():
        for _ in range(args.decisions):
            envs.step_chunk(rng.uniform(-1, 1, (N, Hp, A)).astype(np.float32))

    policy.eval()
    obs = envs.reset(seed=args.seed)
    obs = full_loop(obs)  # warm-up
    bare_simulator()
    steps = args.decisions * N * Hp
    sim_sps, loop_sps = [], []
    parts.update(dict.fromkeys(parts, 0.0))  # forget the warm-up
    for _ in range(args.rounds):
        start = time.perf_counter()
        bare_simulator()
        sim_sps.append(steps / (time.perf_counter() - start))
        start = time.perf_counter()
        obs = full_loop(obs)
        loop_sps.append(steps / (time.perf_counter() - start))
    n_dec = args.rounds * args.decisions
    out = {"simulator_steps_per_s": float(np.median(sim_sps)), "rollout_steps_per_s": float(np.median(loop_sps))}
    out["ratio"] = out["rollout_steps_per_s"] / out["simulator_steps_per_s"]
    out["ms_per_decision"] = {k: 1e3 * v / n_dec for k, v in parts.items()}
    return out


def update_cost(args: Args, policy, obs, action_dim: int, device) -> dict:
    """Part 2: seconds per action of one update micro-batch (prefix pass, expert passes with grad, backward)."""
    import flow_noise_ppo as fn
    import flow_sde_ppo as sde

    c, B, A = policy.config, obs.state.shape[0], action_dim
    noise_net = fn.NoiseNet(policy.expert_width, c.action_dim, fn.Args.noise_hidden, 0.08, 0.16).to(device)
    policy.train()
    out = {}
    for K in args.steps:
        sde_args = sde.Args(denoise_steps=K, noise_level=args.noise_level, replan_steps=args.replan_steps)
        fn_args = fn.Args(denoise_steps=K, replan_steps=args.replan_steps)
        gen = torch.Generator(device=device).manual_seed(args.seed)
        chain = torch.randn(B, K + 1, c.action_horizon, c.action_dim, generator=gen, device=device)   # (B, K+1, H, D)
        j = torch.randint(0, K, (B,), generator=gen, device=device)                         # the SDE step per action
        every_k = torch.arange(K, device=device).repeat(B)                                  # (B*K,) all steps

        def prefix():
            with torch.no_grad():  # frozen VLM, as in the scripts
                return policy.encode(obs)

        def hybrid():  # flow_sde_ppo.py: one transition (x_j -> x_{j+1}) per action
            cache = prefix()
            x_j, x_next = chain[torch.arange(B), j], chain[torch.arange(B), j + 1]
            logp, _ = sde.step_logprob(policy, cache, x_j, x_next, j, sde_args, A)
            logp.mean().backward()

        def noise():  # flow_noise_ppo.py: the whole chain's joint log-likelihood, K passes
            logp, entropy = fn.chain_logprob(policy, noise_net, prefix(), chain, fn_args, A)
            (logp.mean() + entropy.mean()).backward()

        def standard():  # every step stochastic: K transitions per action, each one expert pass
            cache = prefix().repeat(K)
            x_k, x_next = chain[:, :K].flatten(0, 1), chain[:, 1:].flatten(0, 1)
            logp, _ = sde.step_logprob(policy, cache, x_k, x_next, every_k, sde_args, A)
            logp.mean().backward()

        t = medians({"hybrid": hybrid, "noise": noise, "standard": standard}, args.repeats, device)
        policy.zero_grad(set_to_none=True)
        out[K] = {f"{k}_ms_per_action": 1e3 * v / B for k, v in t.items()}
        out[K].update(noise_over_hybrid=t["noise"] / t["hybrid"], standard_over_hybrid=t["standard"] / t["hybrid"])
    policy.eval()
    return out


@torch.no_grad()
def cache_vs_recompute(args: Args, policy, obs, device) -> dict:
    """Part 3: one action chunk with the prefix KV cache vs the full forward at every denoise step."""
    c, B = policy.config, obs.state.shape[0]
    out = {}
    for K in args.steps:
        noise = torch.randn(B, c.action_horizon, c.action_dim, generator=torch.Generator(device=device).manual_seed(0),
                            device=device)

        def cached():
            return policy.sample_actions(obs, noise=noise, num_steps=K)

        def recompute():  # the same Euler ODE, prefix + suffix recomputed by velocity_full at every step
            x = noise
            for k in range(K):
                t = torch.full((B,), 1.0 - k / K, device=device)
                x = x - (1.0 / K) * policy.velocity_full(obs, x, t)[0]
            return x

        t = medians({"cached": cached, "recompute": recompute}, args.repeats, device)
        diff = (cached() - recompute()).abs().max().item()   # the two paths must agree
        out[K] = {"cached_ms": 1e3 * t["cached"], "recompute_ms": 1e3 * t["recompute"],
                  "recompute_over_cached": t["recompute"] / t["cached"], "max_abs_diff": diff}
    return out


def print_rollout(args: Args, r: dict):
    print(f"\n1. rollout loop (K={args.denoise_steps}) {r['rollout_steps_per_s']:.0f} env steps/s, bare simulator "
          f"{r['simulator_steps_per_s']:.0f}: ratio {r['ratio']:.2f} (goal >= 0.8)")
    print("   ms per decision: " + ", ".join(f"{k} {v:.1f}" for k, v in r["ms_per_decision"].items()), flush=True)


def print_update(args: Args, res: dict):
    print(f"\n2. update, ms per action (batch {args.update_batch}; prefix pass + expert passes with grad + backward)")
    print(f"{'K':>3} {'hybrid':>8} {'noise':>8} {'standard':>9} {'noise/hybrid':>13} {'standard/hybrid':>16}")
    for K, r in res.items():
        print(f"{K:>3} {r['hybrid_ms_per_action']:>8.2f} {r['noise_ms_per_action']:>8.2f} "
              f"{r['standard_ms_per_action']:>9.2f} {r['noise_over_hybrid']:>13.2f} {r['standard_over_hybrid']:>16.2f}",
              flush=True)


def print_cache(args: Args, res: dict):
    print(f"\n3. sampling one chunk (batch {args.update_batch}), ms")
    print(f"{'K':>3} {'KV cache':>9} {'recompute':>10} {'ratio':>6} {'max |diff|':>11}")
    for K, r in res.items():
        print(f"{K:>3} {r['cached_ms']:>9.1f} {r['recompute_ms']:>10.1f} {r['recompute_over_cached']:>6.2f} "
              f"{r['max_abs_diff']:>11.1e}", flush=True)


def check_args(args: Args):
    """Every flag checked before anything is built (UsageError: one `error:` line)."""
    from common.envs import check_env_name
    from common.policy import PRESETS

    check_env_name(args.env)
    if args.preset not in PRESETS:
        raise UsageError(f"--preset {args.preset}: unknown; use one of {', '.join(PRESETS)}")
    check_at_least(1, num_envs=args.num_envs, image_size=args.image_size, action_horizon=args.action_horizon,
                   max_token_len=args.max_token_len, replan_steps=args.replan_steps, denoise_steps=args.denoise_steps,
                   steps=args.steps, update_batch=args.update_batch, decisions=args.decisions, rounds=args.rounds,
                   repeats=args.repeats)
    check_at_least(0, noise_level=args.noise_level, threads=args.threads)
    if args.replan_steps > args.action_horizon:
        raise UsageError(f"--replan-steps {args.replan_steps} > --action-horizon {args.action_horizon}")
    if not args.parts or not set(args.parts) <= {1, 2, 3}:
        raise UsageError(f"--parts takes 1, 2 and / or 3 (got {args.parts})")
    if args.device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda (got {args.device!r})")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device here; use --device cpu")
    check_writable(args.json_path, "--json-path")


def main(args: Args):
    from common.envs import make_envs

    check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"args": vars(args), "torch_threads": torch.get_num_threads(),
               "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"}
    envs = make_envs(args.env, args.num_envs, seed=args.seed, image_size=args.image_size)
    try:
        policy, processor = build_policy(args, envs, device)
        print(f"{args.env}, {args.num_envs} envs, {args.image_size} px, preset {args.preset}, H'={args.replan_steps}, "
              f"device {args.device}, {torch.get_num_threads()} thread(s)", flush=True)
        if 1 in args.parts:
            results["rollout_vs_simulator"] = rollout_vs_simulator(args, policy, processor, envs, device)
            print_rollout(args, results["rollout_vs_simulator"])
        raw = envs.reset(seed=args.seed + 1)
        action_dim = envs.action_dim
    finally:
        envs.close()
    rows = np.arange(args.update_batch) % args.num_envs   # a batch of real observations
    obs = processor.observation({k: [v[i] for i in rows] if isinstance(v, list) else v[rows] for k, v in raw.items()},
                                device)
    if 2 in args.parts:
        results["update_per_action"] = update_cost(args, policy, obs, action_dim, device)
        print_update(args, results["update_per_action"])
    if 3 in args.parts:
        results["sampling_cache_vs_recompute"] = cache_vs_recompute(args, policy, obs, device)
        print_cache(args, results["sampling_cache_vs_recompute"])
    path = Path(args.json_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
