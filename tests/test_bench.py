"""The measuring scripts of bench/: their arithmetic, on inputs whose answer is known."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def write_run(path: Path, evals: list[tuple[int, float]], seconds_per_iteration: float, steps_per_iteration: int):
    rows, step = [], 0
    for k, (at_step, success) in enumerate(evals):
        while step < at_step:
            step += steps_per_iteration
            rows.append({"global_step": step, "charts/iteration_seconds": seconds_per_iteration})
        rows.append({"global_step": at_step, "eval/success_rate": success})
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_compare_reads_curves_and_averages_over_seeds(tmp_path):
    import compare

    write_run(tmp_path / "a", [(0, 0.5), (200, 0.7)], seconds_per_iteration=2.0, steps_per_iteration=100)
    write_run(tmp_path / "b", [(0, 0.4), (200, 0.5)], seconds_per_iteration=4.0, steps_per_iteration=100)
    curves = [compare.read_curve(tmp_path / "a"), compare.read_curve(tmp_path / "b")]
    assert curves[0] == {"env_steps": [0, 200], "train_seconds": [0.0, 4.0], "success": [0.5, 0.7], "episodes": None}
    summary = compare.summarise(curves)
    assert summary["mean"] == pytest.approx([0.45, 0.6])
    assert summary["std"] == pytest.approx([0.05, 0.1])            # population std over the 2 seeds
    assert summary["train_seconds"] == pytest.approx([0.0, 6.0])   # mean of 4 s and 8 s of training
    assert summary["sft"] == [0.5, 0.4] and summary["final"] == [0.7, 0.5]


def test_memory_counts_the_pi0_parameters_of_the_paper_model():
    """π0 = PaliGemma (SigLIP So400m + Gemma 2B, ~2.92 B) + a Gemma 300M action expert (~0.31 B),
    counted on the meta device (no memory)."""
    import memory
    from common.policy import make_config

    counts = memory.count_parameters(make_config("pi0"), critic_hidden=512)
    assert 2.85e9 < counts["vlm (frozen)"] < 2.95e9
    assert 0.29e9 < counts["expert (trainable)"] < 0.33e9
    static = memory.static_bytes(counts, memory.SCHEMES["fp32"])
    trainable = counts["expert (trainable)"] + counts["heads (trainable)"] + counts["critic (trainable)"]
    assert static["AdamW moments (fp32)"] == 8 * trainable     # two fp32 moments per trainable value
    assert np.isclose(static["gradients (fp32)"], 4 * trainable)


def fake_finished_run(run_root: Path, env: str, algo: str, seed: int, evals: list[tuple[int, float]],
                      total_iterations: int = 20, eval_episodes: int = 100):
    """A run folder as bench/compare.py finds it: metrics.jsonl, eval/iter_*.json, args.json, and the plot written at
    the very end."""
    path = run_root / f"{env}__{algo}__{seed}__1700000000"
    write_run(path, evals, seconds_per_iteration=1.0, steps_per_iteration=100)
    (path / "eval").mkdir()
    for step, success in evals:
        (path / "eval" / f"iter_{step // 100:06d}.json").write_text(json.dumps({"num_episodes": eval_episodes,
                                                                               "success_rate": success}))
    (path / "args.json").write_text(json.dumps({"total_iterations": total_iterations,
                                                "eval_episodes_per_task": eval_episodes}))
    (path / "learning_curve.png").write_bytes(b"")


def test_compare_reports_start_peak_final_per_task_and_seed(tmp_path, capsys):
    """--envs A,B: per task and seed start / peak / final / final − peak, and per task mean ± std over seeds of the
    gain and of final − peak, read back from the runs' metrics.jsonl; a run of another budget is not mixed in."""
    import compare

    A, B = "metaworld-door-open-v3", "metaworld-push-v3"
    runs = tmp_path / "runs"
    fake_finished_run(runs, A, "flow_sde_ppo", 1, [(0, 0.40), (1000, 0.70), (2000, 0.50)])   # rises, gives 20 back
    fake_finished_run(runs, A, "flow_sde_ppo", 2, [(0, 0.30), (1000, 0.40), (2000, 0.60)])   # peak = final
    fake_finished_run(runs, B, "flow_sde_ppo", 1, [(0, 0.50), (1000, 0.45), (2000, 0.40)])   # ends below start
    fake_finished_run(runs, B, "flow_sde_ppo", 2, [(0, 0.20), (1000, 0.90)], total_iterations=50)  # other budget
    out = tmp_path / "out" / "set"
    compare.main(compare.Args(envs=f"{A},{B}", algos=("flow_sde_ppo",), seeds=(1, 2), launch=False,
                              total_iterations=20, run_root=str(runs), out=str(out)))
    doc = json.loads(out.with_suffix(".json").read_text())
    a, b = doc["report"][A]["flow_sde_ppo"], doc["report"][B]["flow_sde_ppo"]
    s1 = a["per_seed"]["1"]
    assert (s1["start"], s1["peak"], s1["final"]) == (0.40, 0.70, 0.50) and s1["peak_step"] == 1000
    assert s1["final_minus_peak"] == pytest.approx(-0.20) and s1["gave_back_over_10"] and not s1["ends_below_start"]
    assert a["per_seed"]["2"]["final_minus_peak"] == 0.0
    assert a["gain_mean"] == pytest.approx(0.20) and a["gain_std"] == pytest.approx(0.10)    # gains +10 and +30
    assert a["final_minus_peak_mean"] == pytest.approx(-0.10) and a["final_minus_peak_std"] == pytest.approx(0.10)
    assert a["runs_gave_back_over_10"] == 1 and a["runs_below_start"] == 0
    # the evals' binomial noise: seed 1 sqrt(.4 .6 / 100 + .5 .5 / 100), seed 2 sqrt(.3 .7 / 100 + .6 .4 / 100); the mean's
    assert s1["gain_se"] == pytest.approx(0.07) and a["per_seed"]["2"]["gain_se"] == pytest.approx(np.sqrt(0.0045))
    assert a["gain_se"] == pytest.approx(np.sqrt(0.0049 + 0.0045) / 2)
    assert b["seeds"] == 1 and b["runs_below_start"] == 1                                # seed 2: 50 iterations
    assert b["per_seed"]["1"]["gain"] == pytest.approx(-0.10) and b["per_seed"]["1"]["final_minus_peak"] == pytest.approx(-0.10)
    assert set(doc["tasks"]) == {A, B} and doc["tasks"][A]["flow_sde_ppo"]["seeds"] == 2
    assert (out.parent / f"set_{A}.png").is_file() and (out.parent / f"set_{B}.png").is_file()
    printed = capsys.readouterr().out
    assert f"| {A} | flow_sde_ppo | 1 | 40 | 70 | 50 | -20 |" in printed
    assert f"| {A} | flow_sde_ppo | 2 | 35.0 | +20.0 ± 10.0 | ±4.8 | -10.0 ± 10.0 | 0 | 1 |" in printed
    # over the set: task means +20 (A) and -10 (B) -> mean +5, lowest -10; 3 runs, one below start, one gave back 20
    assert doc["set"]["flow_sde_ppo"] == pytest.approx({"tasks": 2, "runs": 3, "task_gain_mean": 0.05,
                                                        "lowest_task_gain": -0.10, "runs_below_start": 1,
                                                        "runs_gave_back_over_10": 1})
    assert "| flow_sde_ppo | 2 | 3 | +5.0 | -10.0 | 1 | 1 |" in printed


def test_compare_single_env_keeps_its_files(tmp_path):
    """Without --envs: <out>.json is keyed by algorithm as before (the report added), <out>.png is written."""
    import compare

    env, runs = "metaworld-drawer-open-v3", tmp_path / "runs"
    fake_finished_run(runs, env, "flow_sde_ppo", 1, [(0, 0.5), (1000, 0.8), (2000, 0.7)])
    out = tmp_path / "compare_lr1.5e-5"     # --out is a prefix, dots and all
    compare.main(compare.Args(env=env, algos=("flow_sde_ppo",), seeds=(1,), launch=False, total_iterations=20,
                              run_root=str(runs), out=str(out)))
    doc = json.loads((tmp_path / "compare_lr1.5e-5.json").read_text())
    assert list(doc) == ["flow_sde_ppo"] and doc["flow_sde_ppo"]["sft"] == [0.5] and doc["flow_sde_ppo"]["final"] == [0.7]
    assert doc["flow_sde_ppo"]["report"]["per_seed"]["1"]["final_minus_peak"] == pytest.approx(-0.1)
    assert (tmp_path / "compare_lr1.5e-5.png").is_file() and not (tmp_path / "compare_lr1.json").exists()


def test_per_state_transitions_follow_each_group_of_states():
    """--before: states grouped by the earlier policy (always / mixed / never), each group's success before and after,
    and where its states are now."""
    import per_state

    before = np.array([[1, 1], [1, 1], [1, 0], [0, 1], [0, 0], [0, 0]], bool)   # 2 always, 2 mixed, 2 never
    after = np.array([[1, 1], [0, 0], [1, 1], [1, 1], [1, 0], [0, 0]], bool)
    moves = per_state.transitions(before, after)
    assert moves["always"] == {"states": 2, "success_before": 1.0, "success_after": 0.5,
                               "now": {"always": 1, "mixed": 0, "never": 1}}
    assert moves["mixed"]["success_before"] == 0.5 and moves["mixed"]["now"] == {"always": 2, "mixed": 0, "never": 0}
    assert moves["never"]["success_after"] == 0.25 and moves["never"]["now"] == {"always": 0, "mixed": 1, "never": 1}
    assert "| mixed | 2 | 50% → 100% | 2 / 0 / 0 |" in per_state.format_transitions(moves)


def test_per_state_before_must_match_the_run(tmp_path):
    """A --before of another task (or number of states / seeds) is one error line naming what it was run with."""
    import per_state
    from common.errors import UsageError

    before = tmp_path / "sft.json"
    before.write_text(json.dumps({"args": {"env": "metaworld-window-open-v3", "num_states": 32, "seeds": 4},
                                  "success": [[True] * 4] * 32}))
    with pytest.raises(UsageError, match="--before .* --env metaworld-window-open-v3"):
        per_state.check_args(per_state.Args(before=str(before), out=str(tmp_path / "p.json")))   # drawer-open
    # the right task and sizes but no per-state successes: refused before the eval, not after it
    before.write_text(json.dumps({"args": {"env": "metaworld-drawer-open-v3", "num_states": 32, "seeds": 4}}))
    with pytest.raises(UsageError, match="not a per_state.py JSON"):
        per_state.check_args(per_state.Args(before=str(before), out=str(tmp_path / "p.json")))


def test_compare_rejects_a_bad_task_set():
    import compare
    from common.errors import UsageError

    for envs in ("metaworld-push-v3,metaworld-push-v3", " , "):
        with pytest.raises(UsageError):
            compare.check_args(compare.Args(envs=envs, launch=False))
