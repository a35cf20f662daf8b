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
    assert curves[0] == {"env_steps": [0, 200], "train_seconds": [0.0, 4.0], "success": [0.5, 0.7]}
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
