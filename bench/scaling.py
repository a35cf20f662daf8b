"""Data-parallel scaling of one Flow-SDE PPO iteration: `torchrun --nproc_per_node P` vs one process,
same total --num-envs, on CPU (gloo).

    python bench/scaling.py                                       # 16 envs, 4 iterations, 1 vs 2 processes
    python bench/scaling.py --num-envs 4 --total-iterations 2 --minibatch-size 100 --micro-batch-size 50  # smoke

Both runs are flow_sde_ppo.py itself, launched one after the other as subprocesses (the 1-process run
as `python flow_sde_ppo.py`, the other as `python -m torch.distributed.run --standalone
--nproc_per_node P flow_sde_ppo.py`, i.e. torchrun), on the embedded default's cached SFT policy, with
evals cut to --eval-episodes episodes (the scripts always evaluate before and after) and no
videos. Each run's metrics.jsonl is read back; iteration 1 is dropped as warm-up; medians of:
  charts/iteration_seconds      rollout + update of one iteration (mean over ranks: they synchronise
                                at every gradient all-reduce, so the ranks' times are nearly equal);
  charts/env_steps_per_second   rollout env steps/s of ONE rank (all_reduce_mean averages it over
                                ranks), so the job's rollout throughput is P times it.
Figures: iteration throughput = num_envs x interaction_steps x rollout_epochs / iteration_seconds
(env steps trained on per second, the whole job) and the rollout throughput, each as the P-process /
1-process ratio (ideal: P). Each run gets OMP_NUM_THREADS = --cores / P torch threads per process,
so both use the same cores. Written to bench/results/scaling.json.
On this 2-core machine the simulators are already one worker process per env in both runs
(make_envs: asynchronous when num_envs > 1); a second rank adds a second model process and halves each
rank's rollout batch and update batch, so the ratio measures how well the tiny model's compute and the
gloo all-reduce split over the cores, not what a GPU node does.

What changes on one node of 8 GPUs (`torchrun --standalone --nproc_per_node 8 flow_sde_ppo.py ...`),
read from flow_sde_ppo.py and common/distributed.py:
  - setup_distributed: backend NCCL instead of gloo; rank r drives cuda:LOCAL_RANK, one process per GPU.
  - identical weights: every rank seeds torch with --seed and broadcast_parameters(policy / critic)
    copies rank 0's weights; per-rank seeds (seed * 1000 + rank) for the envs and the SDE sampler.
  - each rank owns --num-envs / 8 environments (its own simulator worker processes), its own rollout
    storage and its own hybrid ODE-SDE rollouts; nothing is exchanged during the rollout.
    global_step counts the envs of all ranks.
  - advantages are normalised with the global mean / variance: one all_reduce_mean of 2 scalars.
  - update: each rank shuffles its own local batch, takes --minibatch-size / 8 decisions per
    minibatch step, split into micro-batches of --micro-batch-size (gradient accumulation); after the
    last micro-batch ONE all_reduce (SUM, then / world) of a single flattened fp32 tensor holding all
    actor and critic gradients (all_reduce_gradients), then every rank clips and steps AdamW on the
    same gradients: the weights stay bit-identical (checked at the end by parameters_in_sync). The
    all-reduce is not overlapped with the backward pass (no DDP buckets).
    π0 with a frozen VLM: ~316 M trainable values (expert 311.5 M + heads 3.2 M + critic 1.1 M), a
    1.26 GB fp32 message per minibatch step, plus a flat copy and a clone of the gradients on each GPU
    while it runs (bench/memory.py). With the LIBERO-Spatial π0 preset (64 envs x 8 rollout epochs x 48
    decisions = 24 576 decisions, minibatch 2048, 2 update epochs) that is 24 all-reduces per iteration; a ring
    all-reduce sends 2 (P - 1) / P of the message per GPU, i.e. some 10 ms each at NVLink bandwidths, so
    the communication is small beside the rollout and the update compute.
  - logging: one all_reduce_mean of ~15 scalars per iteration; evals split the episode list over
    ranks (episodes[rank::world]) and all_gather_object the results; rank 0 alone writes.
  - what then limits scaling is each rank's simulators: 8 ranks x (64 / 8) env worker processes want
    ~64 CPU cores (LIBERO renders on the CPU), and the per-GPU rollout batch shrinks to 8 decisions,
    which leaves a GPU mostly idle during the rollout; raise --num-envs with the GPU count.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.cli import unset  # noqa: E402
from common.errors import UsageError, check_at_least, check_writable, main_errors  # noqa: E402


@dataclass
class Args:
    nproc: int = 2
    """processes (ranks) of the torchrun run, compared with one process"""
    num_envs: int = 16
    """parallel environments, the total over ranks (the same in both runs)"""
    total_iterations: int = 4
    """PPO iterations per run (iteration 1 is dropped as warm-up)"""
    interaction_steps: int = 100
    """env steps per env per rollout epoch (the embedded default's)"""
    minibatch_size: int = 200
    """decisions per gradient step, summed over ranks (must split into nproc x whole micro-batches)"""
    micro_batch_size: int = 100
    """decisions per forward/backward on one rank"""
    eval_episodes: int = 2
    """held-out episodes of the evals before and after training (not timed)"""
    cores: int = 2
    """CPU threads shared by the ranks: each process gets OMP_NUM_THREADS = cores // nprocs"""
    checkpoint: Annotated[str | None, unset("the few-shot SFT policy of --env that the RL scripts make or reuse "
                                            "(runs/cache)")] = None
    """the SFT policy: a dir or a Hub id org/name[@revision]"""
    env: str = "metaworld-drawer-open-v3"
    """simulator task"""
    run_root: str = "runs/bench_tmp"
    """where the two runs write their run dirs"""
    out: str = "bench/results/scaling.json"
    """where the figures are written (JSON)"""


def launch(args: Args, nproc: int, tag: str) -> tuple[Path, float]:
    """Run flow_sde_ppo.py with nproc processes; return its run dir and the wall time of the launch."""
    exp_name = f"scaling_p{nproc}_{tag}"
    flags = [*(["--checkpoint", args.checkpoint] if args.checkpoint else []), "--env", args.env, "--exp-name", exp_name, "--run-root", args.run_root,
             "--total-iterations", str(args.total_iterations), "--num-envs", str(args.num_envs),
             "--interaction-steps", str(args.interaction_steps), "--minibatch-size", str(args.minibatch_size),
             "--micro-batch-size", str(args.micro_batch_size), "--eval-every", "0",
             "--eval-episodes-per-task", str(args.eval_episodes), "--num-videos", "0", "--no-progress", "--device", "cpu"]
    launcher = [sys.executable] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, args.cores // nproc)))
    print("$ OMP_NUM_THREADS=%s %s" % (env["OMP_NUM_THREADS"], " ".join(launcher + ["flow_sde_ppo.py"] + flags)), flush=True)
    start = time.time()
    rc = subprocess.run(launcher + ["flow_sde_ppo.py"] + flags, cwd=ROOT, env=env).returncode
    if rc != 0:
        raise UsageError(f"the {nproc}-process run failed with exit code {rc} (its output is above)")
    wall = time.time() - start
    found = sorted((ROOT / args.run_root).glob(f"{args.env}__{exp_name}__*"))
    if len(found) != 1:
        raise RuntimeError(f"expected one run dir for {exp_name} under {args.run_root}, found {found}")
    return found[0], wall


def read_iterations(run_dir: Path) -> list[dict]:
    """The per-iteration rows of metrics.jsonl (eval rows carry no charts/iteration), warm-up dropped."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "charts/iteration" in r]
    return [r for r in rows if r["charts/iteration"] > 1]


def check_args(args: Args):
    """Every flag checked before any run is launched (UsageError: one `error:` line)."""
    from common.envs import check_env_name
    from common.sft import check_checkpoint_or_expert

    check_env_name(args.env)
    check_checkpoint_or_expert(args.checkpoint, args.env)
    check_at_least(1, nproc=args.nproc, interaction_steps=args.interaction_steps, minibatch_size=args.minibatch_size,
                   micro_batch_size=args.micro_batch_size, eval_episodes=args.eval_episodes, cores=args.cores)
    check_at_least(2, total_iterations=args.total_iterations)  # iteration 1 is the warm-up, not timed
    check_at_least(args.nproc, num_envs=args.num_envs)
    check_writable(ROOT / args.run_root, "--run-root")
    check_writable(ROOT / args.out, "--out")


def main(args: Args):
    check_args(args)
    steps_per_iteration = args.num_envs * args.interaction_steps  # rollout_epochs = 1 in the tiny preset
    if args.cores < args.nproc:
        print(f"note: --cores {args.cores} < --nproc {args.nproc}: each process gets 1 thread, so the "
              f"{args.nproc}-process run uses more threads than the 1-process run")
    tag = str(int(time.time()))
    results = {}
    for nproc in (1, args.nproc):
        run_dir, wall = launch(args, nproc, tag)
        rows = read_iterations(run_dir)
        if not rows:
            raise RuntimeError(f"{run_dir}: no iteration after the warm-up; use --total-iterations >= 2")
        it_s = statistics.median(r["charts/iteration_seconds"] for r in rows)
        rank_sps = statistics.median(r["charts/env_steps_per_second"] for r in rows)
        results[nproc] = {"run_dir": str(run_dir.relative_to(ROOT)), "iterations_timed": len(rows),
                          "iteration_seconds": it_s, "iteration_env_steps_per_second": steps_per_iteration / it_s,
                          "rollout_env_steps_per_second_per_rank": rank_sps,
                          "rollout_env_steps_per_second": rank_sps * nproc, "wall_seconds_with_evals": wall,
                          "omp_threads_per_process": max(1, args.cores // nproc)}
    one, many = results[1], results[args.nproc]
    ratios = {"iteration_throughput": many["iteration_env_steps_per_second"] / one["iteration_env_steps_per_second"],
              "rollout_throughput": many["rollout_env_steps_per_second"] / one["rollout_env_steps_per_second"]}
    print(f"\n{args.env}, {args.num_envs} envs in all, {args.cores} cores, median over iterations 2..{args.total_iterations}")
    print("| processes | iteration s | env steps/s (iteration) | rollout env steps/s |")
    print("|---|---|---|---|")
    for nproc, r in results.items():
        print(f"| {nproc} | {r['iteration_seconds']:.2f} | {r['iteration_env_steps_per_second']:.0f} | "
              f"{r['rollout_env_steps_per_second']:.0f} |")
    print(f"ratio {args.nproc} / 1 processes: iteration throughput {ratios['iteration_throughput']:.2f}, "
          f"rollout throughput {ratios['rollout_throughput']:.2f} (ideal {args.nproc})")
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "runs": {str(k): v for k, v in results.items()}, "ratios": ratios},
                              indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
