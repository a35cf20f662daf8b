"""The paper's comparison (Tables 1 and 5) at CPU scale: SFT vs Flow-SDE PPO vs Flow-Noise PPO vs
Flow-SDE GRPO on the embedded default, same env-step budget, same seeds; mean ± std over seeds.

    python bench/compare.py                                  # 3 algorithms x 5 seeds, runs one after another
    python bench/compare.py --algos flow_sde_ppo --seeds 1   # one run
    python bench/compare.py --no-launch                      # only re-read runs/compare/* and re-plot
    python bench/compare.py --envs metaworld-door-open-v3,metaworld-push-v3 --algos flow_sde_ppo --seeds 1 2 3
                                                             # a task set (issue 28's dev set): env x seed x algo

Every run is the script itself with the same flags (subprocess, one at a time so each has the whole
machine and its wall time means something); the runs land in --run-root. Then the held-out eval
success of every run is read back from its metrics.jsonl and written as
    bench/results/compare.json   per algorithm: success at each eval point, mean ± std over seeds
    bench/results/compare.png    success vs env steps and vs training wall time (evals excluded)
and a Markdown table is printed for the README. The SFT row is the eval before RL (iteration 0),
which every run repeats on the same held-out episodes. A second table gives, per task, algorithm and seed,
start (iteration 0), peak (best eval), final and final − peak, then per task the mean ± std over seeds of the
gain (final − start) and of final − peak: does a run keep what it learnt (issue 28)? Beside the mean gain, the part
of it that is the evals' own sampling noise (binomial, from each eval's episode count). With several tasks a third
table gives, per algorithm, the mean of the task means and the lowest task mean.
With --envs (several tasks) the JSON holds {"tasks": {env: {algo: summary}}, "report": ...} and one PNG per
task is written as <out>_<env>.png; with one task the files are as they always were, the report added.
"""
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.cli import unset  # noqa: E402
from common.errors import UsageError, check_at_least, check_writable, main_errors  # noqa: E402
from common.sft import DEFAULT_ENV  # noqa: E402

ALGOS = ("flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo")


@dataclass
class Args:
    env: str = DEFAULT_ENV
    """task of every run (the scripts' --env; default: the embedded default)"""
    envs: Annotated[Optional[str], unset("--env alone")] = None
    """a set of tasks, comma-separated (e.g. metaworld-door-open-v3,metaworld-push-v3): every env x seed x algo is
    run and reported per task; replaces --env"""
    algos: tuple[str, ...] = ALGOS
    """which scripts to compare (any of flow_sde_ppo, flow_noise_ppo, flow_sde_grpo)"""
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    """run seeds (the same for every algorithm)"""
    eval_episodes: int = 100
    """held-out episodes per evaluation (100: a standard error of about ±5 points at 50%)"""
    total_iterations: int = 60
    """iterations of every run: the same env-step budget for all (num_envs x interaction steps each)"""
    eval_every: int = 20
    """held-out evaluation every this many iterations"""
    extra: str = ""
    """flags passed to every script unchanged, as one string (e.g. --extra="--train-vlm --actor-lr 1e-4")"""
    run_root: str = "runs/compare"
    """where the runs go (one folder per algorithm x seed); finished runs of the same --env and
    --total-iterations found there are reused, so give other --extra flags their own --run-root"""
    launch: bool = True
    """run what is missing (False: only read the runs already in --run-root)"""
    out: str = "bench/results/compare"
    """prefix of the JSON and PNG written"""
    threads: int = 2
    """OMP threads of each run"""
    parallel: int = 1
    """runs launched at once (e.g. --parallel 2 --threads 1 on 2 cores: the same total throughput, results sooner;
    the runs' wall times are then upper bounds). Same seed and flags give the same metrics only at the same --threads"""


def env_list(args: Args) -> list[str]:
    """The tasks of this comparison: --envs split on commas, else [--env]."""
    if args.envs is None:
        return [args.env]
    return [e.strip() for e in args.envs.split(",") if e.strip()]


def run_dir(args: Args, algo: str, seed: int, env: str | None = None) -> Path | None:
    """The finished run of (env, algo, seed) with this budget in --run-root, if any (the newest one)."""
    env = env or args.env
    runs = sorted(Path(args.run_root).glob(f"{env}__{algo}__{seed}__*"), key=lambda p: p.stat().st_mtime)
    done = [r for r in runs if (r / "learning_curve.png").exists()   # the plot is written at the very end
            and json.loads((r / "args.json").read_text())["total_iterations"] == args.total_iterations
            and json.loads((r / "args.json").read_text())["eval_episodes_per_task"] == args.eval_episodes]
    return done[-1] if done else None


def launch(args: Args, algo: str, seed: int, env: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / f"{algo}.py"), "--env", env or args.env, "--seed", str(seed), "--exp-name", algo,
           "--total-iterations", str(args.total_iterations), "--eval-every", str(args.eval_every),
           "--eval-episodes-per-task", str(args.eval_episodes),
           "--run-root", args.run_root, "--num-videos", "0", "--no-progress", *shlex.split(args.extra)]
    print("+", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})


def launch_missing(args: Args) -> None:
    """Run every (env, algo, seed) without a finished run in --run-root, --parallel at a time."""
    todo = [(env, algo, seed) for env in env_list(args) for algo in args.algos for seed in args.seeds
            if run_dir(args, algo, seed, env) is None]
    for start in range(0, len(todo), args.parallel):
        batch = [(env, algo, seed, launch(args, algo, seed, env)) for env, algo, seed in todo[start : start + args.parallel]]
        exit_codes = [(env, algo, seed, proc.wait()) for env, algo, seed, proc in batch]
        failed = [(env, algo, seed, rc) for env, algo, seed, rc in exit_codes if rc != 0]
        if failed:
            runs = ", ".join(f"{algo} --env {env} --seed {seed} (exit code {rc})" for env, algo, seed, rc in failed)
            raise UsageError(f"{runs} failed (the output is above); the finished runs stay in --run-root "
                             f"{args.run_root} and are reused")


def read_curve(path: Path) -> dict:
    """Eval success against env steps and against cumulative training seconds (evals excluded), and each eval's
    episode count (eval/iter_*.json num_episodes; None where those files do not match the evals one to one)."""
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    seconds, clock = 0.0, {}
    for r in rows:
        seconds += r.get("charts/iteration_seconds", 0.0)
        clock[r["global_step"]] = seconds
    evals = [(r["global_step"], r["eval/success_rate"]) for r in rows if "eval/success_rate" in r]
    steps = [s for s, _ in evals]
    episodes = [json.loads(f.read_text()).get("num_episodes") for f in sorted((path / "eval").glob("iter_*.json"))]
    if len(episodes) != len(evals) or None in episodes:
        episodes = None
    return {"env_steps": steps, "train_seconds": [clock[s] for s in steps], "success": [v for _, v in evals],
            "episodes": episodes}


def summarise(curves: list[dict]) -> dict:
    """Mean ± std over seeds at the eval points all seeds share."""
    n = min(len(c["success"]) for c in curves)
    success = np.array([c["success"][:n] for c in curves])                 # (seeds, evals)
    return {"env_steps": curves[0]["env_steps"][:n],
            "train_seconds": np.mean([c["train_seconds"][:n] for c in curves], axis=0).tolist(),
            "mean": success.mean(0).tolist(), "std": success.std(0).tolist(),
            "per_seed": success.tolist(),
            "sft": [float(x) for x in success[:, 0]], "final": [float(x) for x in success[:, -1]],
            "seeds": len(curves)}


def drift(success: list[float], env_steps: list[int], episodes: list[int] | None = None) -> dict:
    """One run's held-out curve in four numbers: start (iteration 0), peak (best eval), final, and what it gave back;
    with the evals' episode counts, the gain's standard error from their binomial sampling alone,
    sqrt(p0 (1 - p0) / n0 + p1 (1 - p1) / n1): what the same two policies would show on other eval draws."""
    best = int(np.argmax(success))            # the first eval that reached the best value
    start, peak, final = success[0], success[best], success[-1]
    gain_se = None if not episodes else float(np.sqrt(start * (1 - start) / episodes[0] + final * (1 - final) / episodes[-1]))
    return {"start": start, "peak": peak, "peak_step": env_steps[best], "final": final,
            "gain": final - start, "gain_se": gain_se, "final_minus_peak": final - peak,
            "ends_below_start": final < start, "gave_back_over_10": final - peak < -0.10 - 1e-9}


def task_report(curves: dict) -> dict:
    """curves[env][algo][seed] = read_curve(...) -> report[env][algo] = per seed drift() and, over seeds, mean ± std
    (population std, as summarise) of the gain and of final − peak, and the mean gain's standard error from the evals'
    sampling alone (sqrt of the summed per-run variances / seeds; None where a run's episode counts are unknown)."""
    report = {}
    for env, by_algo in curves.items():
        for algo, by_seed in by_algo.items():
            if not by_seed:
                continue
            per_seed = {seed: drift(c["success"], c["env_steps"], c.get("episodes")) for seed, c in sorted(by_seed.items())}
            ses = [d["gain_se"] for d in per_seed.values()]
            gain = np.array([d["gain"] for d in per_seed.values()])
            back = np.array([d["final_minus_peak"] for d in per_seed.values()])
            report.setdefault(env, {})[algo] = {
                "per_seed": per_seed, "seeds": len(per_seed),
                "start_mean": float(np.mean([d["start"] for d in per_seed.values()])),
                "gain_mean": float(gain.mean()), "gain_std": float(gain.std()),
                "gain_se": None if None in ses else float(np.sqrt(np.sum(np.square(ses))) / len(ses)),
                "final_minus_peak_mean": float(back.mean()), "final_minus_peak_std": float(back.std()),
                "worst_final_minus_peak": float(back.min()),
                "runs_below_start": int(sum(d["ends_below_start"] for d in per_seed.values())),
                "runs_gave_back_over_10": int(sum(d["gave_back_over_10"] for d in per_seed.values()))}
    return report


def set_report(report: dict) -> dict:
    """Over a task set, per algorithm: the mean of the per-task mean gains, the lowest of them (a set of defaults
    works on every task only if it is high enough), and the runs that ended below their start or > 10 below their peak."""
    by_algo = {}
    for by_task in report.values():
        for algo, r in by_task.items():
            by_algo.setdefault(algo, []).append(r)
    return {algo: {"tasks": len(rs), "runs": sum(r["seeds"] for r in rs),
                   "task_gain_mean": float(np.mean([r["gain_mean"] for r in rs])),
                   "lowest_task_gain": float(min(r["gain_mean"] for r in rs)),
                   "runs_below_start": sum(r["runs_below_start"] for r in rs),
                   "runs_gave_back_over_10": sum(r["runs_gave_back_over_10"] for r in rs)}
            for algo, rs in by_algo.items()}


def format_report(report: dict) -> str:
    """The report as Markdown tables (percent points): per run, per task and algorithm over seeds, and (several
    tasks) per algorithm over the set."""
    lines = ["| task | algorithm | seed | start % | peak % | final % | final − peak |", "|---|---|---|---|---|---|---|"]
    for env, by_algo in report.items():
        for algo, r in by_algo.items():
            for seed, d in r["per_seed"].items():
                lines.append(f"| {env} | {algo} | {seed} | {d['start'] * 100:.0f} | {d['peak'] * 100:.0f} "
                             f"| {d['final'] * 100:.0f} | {d['final_minus_peak'] * 100:+.0f} |")
    lines += ["", "| task | algorithm | seeds | start % (mean) | gain (final − start), mean ± std "
                  "| the evals' noise on that mean (1 s.e.) "
                  "| final − peak, mean ± std | runs ending below start | runs > 10 below their peak |",
              "|---|---|---|---|---|---|---|---|---|"]
    for env, by_algo in report.items():
        for algo, r in by_algo.items():
            noise = "–" if r["gain_se"] is None else f"±{r['gain_se'] * 100:.1f}"
            lines.append(f"| {env} | {algo} | {r['seeds']} | {r['start_mean'] * 100:.1f} "
                         f"| {r['gain_mean'] * 100:+.1f} ± {r['gain_std'] * 100:.1f} | {noise} "
                         f"| {r['final_minus_peak_mean'] * 100:+.1f} ± {r['final_minus_peak_std'] * 100:.1f} "
                         f"| {r['runs_below_start']} | {r['runs_gave_back_over_10']} |")
    if len(report) > 1:
        lines += ["", "| algorithm | tasks | runs | gain, mean of the task means | lowest task mean gain "
                      "| runs ending below start | runs > 10 below their peak |", "|---|---|---|---|---|---|---|"]
        for algo, r in set_report(report).items():
            lines.append(f"| {algo} | {r['tasks']} | {r['runs']} | {r['task_gain_mean'] * 100:+.1f} "
                         f"| {r['lowest_task_gain'] * 100:+.1f} | {r['runs_below_start']} | {r['runs_gave_back_over_10']} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for color, (algo, r) in zip(("C0", "C1", "C2"), results.items()):
        mean, std = np.array(r["mean"]), np.array(r["std"])
        for ax, x in zip(axes, (np.array(r["env_steps"]), np.array(r["train_seconds"]) / 60)):
            ax.plot(x, mean, color=color, marker="o", markersize=3, label=f"{algo} (mean ± std, {r['seeds']} seeds)")
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
            for seed_curve in r.get("per_seed", []):   # thin lines: the seeds themselves
                ax.plot(x, seed_curve, color=color, linewidth=0.6, alpha=0.4)
    axes[0].set_xlabel("environment steps")
    axes[1].set_xlabel("training wall time, minutes (evals excluded)")
    axes[0].set_ylabel("held-out success rate")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_args(args: Args) -> None:
    """Every flag checked before any run is launched (UsageError: one `error:` line)."""
    from common.envs import check_env_name
    from common.experts import check_expert

    envs = env_list(args)
    if not envs:
        raise UsageError("--envs needs at least one task (comma-separated)")
    if len(set(envs)) != len(envs):
        raise UsageError(f"--envs names a task twice: {args.envs}")
    for env in envs:
        check_env_name(env)
    bad = [a for a in args.algos if a not in ALGOS]
    if bad or not args.algos:
        raise UsageError(f"--algos takes {', '.join(ALGOS)}; got {', '.join(bad) or 'none'}")
    if not args.seeds:
        raise UsageError("--seeds needs at least one seed")
    check_at_least(1, total_iterations=args.total_iterations, threads=args.threads, eval_episodes=args.eval_episodes,
                   parallel=args.parallel)
    check_at_least(0, eval_every=args.eval_every)
    check_writable(Path(args.out).parent, "--out")
    if args.launch:
        check_writable(args.run_root, "--run-root")
        if len(envs) > 1 and "--checkpoint" in args.extra:
            raise UsageError("--envs with several tasks: each run makes its task's own few-shot policy; one "
                             '--extra="--checkpoint DIR" cannot fit them all (compare one task at a time with --env)')
        if "--checkpoint" not in args.extra:   # the runs make (or reuse) the embedded default
            for env in envs:
                check_expert(env, hint='give the runs a policy with --extra="--checkpoint DIR"')


def main(args: Args) -> None:
    check_args(args)
    if args.launch:
        launch_missing(args)
    envs = env_list(args)
    curves, results = {}, {}    # curves[env][algo][seed]; results[env][algo] = summarise(...)
    for env in envs:
        for algo in args.algos:
            found = {seed: run_dir(args, algo, seed, env) for seed in args.seeds}
            by_seed = {seed: read_curve(d) for seed, d in found.items() if d is not None}
            if by_seed:
                curves.setdefault(env, {})[algo] = by_seed
                results.setdefault(env, {})[algo] = summarise(list(by_seed.values()))
    if not results:
        raise UsageError(f"no finished runs in --run-root {args.run_root} (run without --no-launch first)")
    report = task_report(curves)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out_json = out.parent / f"{out.name}.json"   # --out is a prefix: one with a dot (compare_lr1.5e-5) keeps it
    if args.envs is None:   # one task: the files as they always were (the per-seed report added to each algorithm)
        single = results[args.env]
        for algo, r in single.items():
            r["report"] = report[args.env][algo]
        out_json.write_text(json.dumps(single, indent=2))
        pngs = [out.parent / f"{out.name}.png"]
        plot(single, pngs[0])
    else:
        out_json.write_text(json.dumps({"tasks": results, "report": report, "set": set_report(report)}, indent=2))
        pngs = [out.parent / f"{out.name}_{env}.png" for env in results]
        for env, png in zip(results, pngs):
            plot(results[env], png)
    for env, by_algo in results.items():
        if len(results) > 1:
            print(f"\n{env}")
        print("| algorithm | seeds | SFT % | success % at each eval (mean ± std) | Δ final − SFT, per seed |\n"
              "|---|---|---|---|---|")
        for algo, r in by_algo.items():
            sft, final = np.array(r["sft"]) * 100, np.array(r["final"]) * 100
            curve = " → ".join(f"{m * 100:.0f} ± {s * 100:.0f}" for m, s in zip(r["mean"], r["std"]))
            delta = final - sft   # paired by seed: each run's own SFT eval (same episodes and eval noise)
            print(f"| {algo} | {r['seeds']} | {sft.mean():.1f} ± {sft.std():.1f} | {curve} "
                  f"| {delta.mean():+.1f} ± {delta.std():.1f} ({', '.join(f'{d:+.0f}' for d in delta)}) |")
    print("\n" + format_report(report))
    print(f"wrote {out_json} and {', '.join(map(str, pngs))}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
