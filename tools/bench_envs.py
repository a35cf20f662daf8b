"""Raw vectorised env throughput (env steps/s, random actions) at training settings.

    python tools/bench_envs.py                                   # MetaWorld 8/16 envs at 64 and 224
    python tools/bench_envs.py --names libero-spatial maniskill-PickCube-v1 --num-envs 2 --sizes 224
    python tools/bench_envs.py --names metaworld-drawer-open-v3 --num-envs 32 --sizes 64 --num-workers 0 32

Prints, per setting, the build time, env steps per second and the worker processes' memory (PSS, summed).
"""
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.envs import check_env_name, make_envs  # noqa: E402
from common.errors import UsageError, main_errors  # noqa: E402


@dataclass
class Args:
    names: list[str] = field(default_factory=lambda: ["metaworld-mt50"])
    """env names (common.envs.ENV_NAMES)"""
    num_envs: list[int] = field(default_factory=lambda: [8, 16])
    """vector sizes to measure"""
    sizes: list[int] = field(default_factory=lambda: [64, 224])
    """image sizes to measure"""
    chunk: int = 5
    """executed action chunk H' (one render per chunk)"""
    chunks: int = 20
    """timed chunks per setting (after one warm-up chunk)"""
    num_workers: list[int] = field(default_factory=lambda: [0])
    """worker processes to measure (0: make_envs' default, one per CPU; --num-envs' value: one process per env)"""


def check_args(args: Args):
    """Every flag checked before any simulator is built (UsageError: one `error:` line)."""
    for name in args.names:
        check_env_name(name, "--names")
    for flag, values in (("--num-envs", args.num_envs), ("--sizes", args.sizes), ("--chunk", [args.chunk]),
                         ("--chunks", [args.chunks])):
        if not values or min(values) < 1:
            raise UsageError(f"{flag} must be >= 1 (got {values})")
    if not args.num_workers or min(args.num_workers) < 0:
        raise UsageError(f"--num-workers must be >= 0 (got {args.num_workers}; 0: one per CPU)")


def pss_mb(pid: int) -> float:
    """Proportional set size of one process (shared pages split among the processes that map them), MB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench(name, num_envs, size, chunk, chunks, num_workers):
    t0 = time.perf_counter()
    env = make_envs(name, num_envs, image_size=size, num_workers=num_workers or None)
    env.reset()
    setup = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    act = lambda: rng.uniform(-1, 1, (num_envs, chunk, env.action_dim)).astype(np.float32)  # noqa: E731
    env.step_chunk(act())
    t0 = time.perf_counter()
    for _ in range(chunks):
        env.step_chunk(act())
    dt = time.perf_counter() - t0
    processes = getattr(env, "_processes", [])
    memory = sum(pss_mb(p.proc.pid) for p in processes)
    env.close()
    return setup, num_envs * chunk * chunks / dt, len(processes), memory


def main(args: Args):
    check_args(args)
    print(f"{'env':28s} {'envs':>4s} {'size':>4s} {'workers':>7s} {'setup s':>8s} {'steps/s':>8s} {'workers MB':>10s}")
    for name in args.names:
        for n in args.num_envs:
            for size in args.sizes:
                for workers in args.num_workers:
                    setup, sps, procs, memory = bench(name, n, size, args.chunk, args.chunks, workers)
                    print(f"{name:28s} {n:4d} {size:4d} {procs:7d} {setup:8.1f} {sps:8.1f} {memory:10.0f}", flush=True)


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
