"""Run directory, TensorBoard scalars, a JSONL copy of every scalar, the learning-curve PNG and
atomic file writes. Only rank 0 creates a RunLogger; other ranks log nothing.

A run lives in `runs/<run_name>/`:
    events.out.tfevents.*   TensorBoard scalars (`tensorboard --logdir runs`)
    metrics.jsonl           one JSON object per logged step (what tests and plots read)
    args.json               the resolved arguments of the run (after presets)
    checkpoints/iter_XXXXXX the policy (openpi layout) + train_state.pt, written atomically
    eval/                   eval summaries (JSON) and videos
    learning_curve.png      success rates against environment steps
"""

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place; an existing folder of that name is replaced."""
    final_dir = Path(final_dir)
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


class RunLogger:
    def __init__(self, run_dir: str | Path, args: dict, resume_step: int | None = None):
        """resume_step: the global step of the checkpoint a resumed run starts from; TensorBoard hides the
        points logged after it (purge_step) and metrics.jsonl drops them, so replayed steps are not doubled."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if resume_step is not None:
            self.truncate_after(resume_step)
        self.writer = SummaryWriter(str(self.run_dir), purge_step=None if resume_step is None else resume_step + 1)
        if resume_step is None:
            table = "\n".join(f"|{k}|{v}|" for k, v in sorted(args.items()))
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
            atomic_write_text(self.run_dir / "args.json", json.dumps(args, indent=2, default=str))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        row = {k: v if math.isfinite(v) else None for k, v in scalars.items()}  # NaN / inf -> null: valid JSON
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps({"global_step": step, **row}, allow_nan=False) + "\n")
        self.writer.flush()

    def truncate_after(self, step: int) -> None:
        """On resume, drop metrics logged after the checkpoint so the curve has no duplicates."""
        if not self.metrics_path.exists():
            return
        rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r["global_step"] <= step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def plot_learning_curve(self, keys=("eval/success_rate", "charts/rollout_success_rate")) -> Path:
        """learning_curve.png: the given scalars against environment steps."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            points = [(r["global_step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(self.run_dir.name, fontsize=8)
        path = self.run_dir / "learning_curve.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def close(self) -> None:
        self.writer.close()
