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


def _umask() -> int:
    """The process's umask: from /proc on Linux (setting it to read it back would race the other threads' writes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path, directory: bool = False) -> None:
    """mkstemp / mkdtemp make 0600 / 0700 entries: give them the mode a plain open() / mkdir() would (0666 / 0777 less
    the user's umask), so that a checkpoint is as readable as any other file the user writes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    follow_umask(tmp)
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
    follow_umask(tmp)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place; an existing folder of that name is replaced. Its folders and files get
    the modes of a plain mkdir / open() (tempfile.mkdtemp makes 0700, safetensors' writer 0600)."""
    final_dir = Path(final_dir)
    for entry in [Path(tmp_dir), *Path(tmp_dir).rglob("*")]:
        if not entry.is_symlink():
            follow_umask(entry, directory=entry.is_dir())
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


class RunLogger:
    def __init__(self, run_dir: str | Path, args: dict, resume_step: int | None = None, wandb: dict | None = None):
        """resume_step: the global step of the checkpoint a resumed run starts from; TensorBoard hides the
        points logged after it (purge_step) and metrics.jsonl drops them, so replayed steps are not doubled.
        wandb: --track's project and entity: Weights & Biases mirrors the TensorBoard scalars (sync_tensorboard), under
        the run's name, with the resolved args as its config; it writes into run_dir/wandb and honours WANDB_MODE."""
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.wandb_run = None
        if wandb is not None:   # before the SummaryWriter: wandb patches tensorboard to mirror it
            self.wandb_run = init_wandb(self.run_dir, args, **wandb)
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
        if self.wandb_run is not None:
            self.wandb_run.finish()


def init_wandb(run_dir: Path, args: dict, project: str, entity: str | None):
    """CleanRL's --track: wandb.init with the TensorBoard scalars synced; a failure (no login, no network: try
    WANDB_MODE=offline) is one `error:` line."""
    import wandb

    from common.errors import UsageError

    try:
        return wandb.init(project=project, entity=entity, name=run_dir.name, config=args, dir=str(run_dir),
                          sync_tensorboard=True, save_code=True)
    except Exception as err:   # wandb.errors.UsageError / CommError: not logged in, no network, a bad entity
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(f"--track: wandb.init failed ({first}); run `wandb login`, or set WANDB_MODE=offline "
                         "to log locally (wandb sync later)") from None
