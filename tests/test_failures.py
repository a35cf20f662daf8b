"""Unhappy paths of the three RL scripts, run as a user would (subprocesses on a real simulator): every
expected failure ends in ONE `error: ...` line naming the flag or file, exit code 2, no traceback, and
nothing half-written; a non-finite update stops the run before anything poisoned is saved; a resumed run
logs each step once; counts under torchrun are totals; the same seed and flags give the same metrics."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from test_scripts_e2e import ROOT, TINY_FLAGS, make_tiny_checkpoint, metrics, only_run, run_script

SCRIPTS = ["flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"]
ENV = "metaworld-button-press-topdown-v3"
GROUP = {"flow_sde_grpo": ["--group-size", "2"]}
TIMING_KEYS = {"charts/iteration_seconds", "charts/env_steps_per_second"}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(ENV, tmp_path_factory.mktemp("failures"))


def run_cli(script: str, args: list[str], prelude: str = "", nproc: int = 1, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a script as __main__, after a few lines of Python that set up a fault (or a reward), in 1 or
    `nproc` processes (torchrun), and capture it."""
    wrapper = Path(tempfile.mkdtemp()) / f"with_prelude_{script}.py"
    wrapper.write_text(f"import runpy, sys\nsys.path.insert(0, {str(ROOT)!r})\n{prelude}\n"
                       f"sys.argv[0] = {str(ROOT / (script + '.py'))!r}\n"
                       f"runpy.run_path({str(ROOT / (script + '.py'))!r}, run_name='__main__')\n")
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, *launcher, str(wrapper), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def strict_json_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl must be valid JSON: no bare NaN / Infinity."""
    def reject(constant):
        raise AssertionError(f"non-JSON constant {constant} in metrics.jsonl")

    return [json.loads(line, parse_constant=reject) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---- bad flags and files: one line, before anything is built --------------------------------------
BAD_FLAGS = [
    (["--num-envs", "0"], "--num-envs"),
    (["--total-iterations", "-3"], "--total-iterations"),
    (["--actor-lr", "0"], "--actor-lr"),
    (["--gamma", "1.5"], "--gamma"),
    (["--device", "cuda"], "--device cuda"),
    (["--env", "metaworld-no-such-task-v3"], "--env"),
    (["--checkpoint", "/nonexistent/ckpt"], "/nonexistent/ckpt"),
    (["--resume", "/nonexistent/run"], "--resume"),
    (["--cache-dir", "/etc/passwd/cache"], "--cache-dir"),   # the embedded default's cache: refused before the demos
    (["--data-config", "lerobot"], "pirl_lerobot_view"),   # the embedded default is trained under pirl's rows only
]


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)), ids=[named for _, named in BAD_FLAGS])
def test_bad_flag_is_one_error_line_and_writes_nothing(case, tmp_path):
    flags, named = BAD_FLAGS[case]
    script = SCRIPTS[case % len(SCRIPTS)]  # the checks are shared: each case on one script, every script used
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = run_script_raw(script, ["--run-root", str(tmp_path / "runs"), *flags])
    assert_one_error_line(proc, named)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def run_script_raw(script: str, args: list[str], **env_vars) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_vars}
    return subprocess.run([sys.executable, str(ROOT / f"{script}.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("script", SCRIPTS)
def test_without_cache_dir_the_scripts_cache_under_pirl_cache(script, tmp_path):
    """--cache-dir left out: $PIRL_CACHE, as tools/ and bench/ read it (an unwritable one is named)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_script_raw(script, ["--run-root", str(tmp_path / "runs")], PIRL_CACHE=str(blocker / "cache"))
    assert_one_error_line(proc, "--cache-dir", str(blocker / "cache"))


def test_unwritable_run_root_is_one_error_line(tmp_path, ckpt):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_script_raw("flow_sde_ppo", ["--env", ENV, "--checkpoint", str(ckpt), "--run-root", str(blocker / "runs")])
    assert_one_error_line(proc, "--run-root", str(blocker / "runs"))


def test_embodiment_on_a_pi0_checkpoint_is_one_error_line(tmp_path, ckpt):
    proc = run_script_raw("flow_sde_ppo", ["--env", ENV, "--checkpoint", str(ckpt), "--embodiment", "gr1",
                                           "--run-root", str(tmp_path / "runs")])
    assert_one_error_line(proc, "--embodiment gr1", "GR00T", str(ckpt))


def test_broken_checkpoint_dirs_are_one_error_line_naming_them(tmp_path, ckpt):
    empty = tmp_path / "empty"
    empty.mkdir()
    truncated = tmp_path / "truncated"
    garbage = tmp_path / "garbage"
    for broken in (truncated, garbage):
        broken.mkdir()
        for f in ckpt.iterdir():
            if f.is_file():
                (broken / f.name).write_bytes(f.read_bytes())
        (broken / "assets").mkdir()
    data = (ckpt / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    (garbage / "model.safetensors").write_bytes(os.urandom(4096))
    for broken in (empty, truncated, garbage):
        proc = run_script_raw("flow_sde_ppo", ["--env", ENV, "--checkpoint", str(broken), "--run-root", str(tmp_path / "runs")])
        line = assert_one_error_line(proc, str(broken))
        if broken is not empty:
            assert "model.safetensors" in line or "safetensors" in line, line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_checkpoint_that_cannot_see_the_env_is_one_error_line(ckpt, tmp_path):
    import shutil

    other = tmp_path / "three_cameras"
    shutil.copytree(ckpt, other)
    meta = json.loads((other / "config.json").read_text())
    meta["pirl"]["num_cameras"] += 2  # same weights, trained on other cameras: it would run, silently, at 0%
    (other / "config.json").write_text(json.dumps(meta))
    proc = run_script_raw("flow_noise_ppo", ["--env", ENV, "--checkpoint", str(other), "--run-root", str(tmp_path / "runs"), *TINY_FLAGS])
    assert_one_error_line(proc, "camera", str(other))


# ---- non-finite updates ---------------------------------------------------------------------------
# From the third gradient step on, every gradient is NaN (as a diverged loss would make it).
POISON_GRADIENTS = """
import torch.nn.utils as nn_utils
_clip, _calls = nn_utils.clip_grad_norm_, [0]
def _poisoned_clip(params, *a, **k):
    params = list(params)
    _calls[0] += 1
    if _calls[0] > 4:
        for p in params:
            if p.grad is not None:
                p.grad.fill_(float('nan'))
    return _clip(params, *a, **k)
nn_utils.clip_grad_norm_ = _poisoned_clip
"""


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_non_finite_gradient_stops_the_run_and_saves_nothing_after_it(script, ckpt, tmp_path):
    # GRPO: keep every group, so that unrewarded groups still take (zero-advantage) steps to poison
    grpo = ["--group-size", "2", "--no-filter-groups"] if script == "flow_sde_grpo" else []
    flags = ["--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "6", "--save-every", "1", "--run-root", str(tmp_path),
             *TINY_FLAGS, *grpo, "--update-epochs", "1"]
    proc = run_cli(script, flags, prelude=POISON_GRADIENTS)
    line = assert_one_error_line(proc, "non-finite", "grad_norm", "iteration")
    run_dir = only_run(tmp_path)
    saved = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("iter_"))
    stopped_at = int(line.split("iteration ")[1].split(":")[0])
    assert saved == [f"iter_{i:06d}" for i in range(1, stopped_at)]
    assert f"iter_{stopped_at - 1:06d}" in line if saved else "no checkpoint" in line
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    rows = strict_json_rows(run_dir)
    assert max(r.get("charts/iteration", 0) for r in rows) == stopped_at - 1  # the poisoned iteration is not logged


@pytest.mark.slow
def test_resume_skips_a_checkpoint_holding_non_finite_weights(ckpt, tmp_path):
    from safetensors.torch import load_file, save_file

    flags = ["--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "2", "--save-every", "1", "--run-root", str(tmp_path), *TINY_FLAGS]
    run_script("flow_sde_ppo", flags)
    run_dir = only_run(tmp_path)
    weights_file = run_dir / "checkpoints" / "iter_000002" / "policy" / "model.safetensors"
    weights = load_file(weights_file)
    key = next(k for k in weights if "gemma_expert" in k)
    weights[key][0] = float("nan")
    save_file(weights, weights_file)
    proc = run_script_raw("flow_sde_ppo", ["--resume", str(run_dir / "checkpoints" / "iter_000002"), "--total-iterations", "3"])
    assert_one_error_line(proc, "non-finite", "iter_000002")  # named explicitly: refused
    proc = run_script("flow_sde_ppo", ["--resume", str(run_dir), "--total-iterations", "3"])
    assert "skipping" in proc.stdout and "iter_000002" in proc.stdout  # the run dir: the newest finite one is taken
    iterations = [r["charts/iteration"] for r in metrics(run_dir) if "charts/iteration" in r]
    assert iterations == [1, 2, 3]  # iteration 2 replayed from iteration 1's checkpoint, logged once


@pytest.mark.slow
def test_resume_skips_an_unreadable_checkpoint_and_notes_the_stretched_lr_schedule(ckpt, tmp_path):
    flags = ["--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "2", "--save-every", "1", "--run-root", str(tmp_path),
             *TINY_FLAGS, "--num-videos", "0", "--anneal-lr"]
    run_script("flow_sde_ppo", flags)
    run_dir = only_run(tmp_path)
    state = run_dir / "checkpoints" / "iter_000002" / "train_state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])   # cut short (a crash while copying the run)
    proc = run_script("flow_sde_ppo", ["--resume", str(run_dir), "--total-iterations", "3"])
    skipped = [line for line in proc.stdout.splitlines() if "skipping" in line]
    assert len(skipped) == 1 and "iter_000002" in skipped[0] and "cannot be read" in skipped[0], proc.stdout[-2000:]
    stretched = [line for line in proc.stdout.splitlines() if "stretches the cosine" in line]
    assert len(stretched) == 1 and "--total-iterations 2 -> 3" in stretched[0], proc.stdout[-2000:]
    assert [r["charts/iteration"] for r in metrics(run_dir) if "charts/iteration" in r] == [1, 2, 3]  # 2 replayed from 1
    for state in (run_dir / "checkpoints").glob("iter_*/train_state.pt"):
        state.write_bytes(b"not a checkpoint")
    proc = run_script_raw("flow_sde_ppo", ["--resume", str(run_dir)])
    assert_one_error_line(proc, "--resume", "readable")


@pytest.mark.slow
def test_track_mirrors_the_run_to_wandb_offline(ckpt, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    flags = ["--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "1", "--run-root", str(tmp_path), *TINY_FLAGS,
             "--num-videos", "0", "--track", "--wandb-project-name", "pirl-test"]
    run_script("flow_sde_grpo", [*flags, *GROUP["flow_sde_grpo"]])
    run_dir = only_run(tmp_path)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb")), list((run_dir / "wandb").iterdir())
    assert [r["charts/iteration"] for r in metrics(run_dir) if "charts/iteration" in r] == [1]


def test_track_without_wandb_is_one_error_line(tmp_path):
    proc = run_cli("flow_noise_ppo", ["--track", "--run-root", str(tmp_path / "runs")], prelude="sys.modules['wandb'] = None")
    assert_one_error_line(proc, "--track", "pip install wandb")
    assert not (tmp_path / "runs").exists()


# ---- full disk --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_disk_is_one_error_line_and_leaves_no_half_checkpoint(ckpt, tmp_path):
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        proc = run_script_raw("flow_sde_ppo", ["--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "1",
                                               "--run-root", str(mount), *TINY_FLAGS, "--num-videos", "0"])
        line = assert_one_error_line(proc)
        assert "space" in line or "disk" in line, line
        run_dir = only_run(mount)
        ckpts = run_dir / "checkpoints"
        assert not ckpts.exists() or not list(ckpts.iterdir()), list(ckpts.iterdir())
    finally:
        subprocess.run(["umount", str(mount)])


# ---- logs -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resumed_run_has_no_duplicate_tensorboard_points(ckpt, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    flags = ["--env", ENV, "--checkpoint", str(ckpt), "--save-every", "2", "--run-root", str(tmp_path), *TINY_FLAGS]
    run_script("flow_sde_ppo", [*flags, "--total-iterations", "3"])  # checkpoints at 2 and 3
    run_dir = only_run(tmp_path)
    # as if killed after iteration 3 was logged but before its checkpoint: resume from iteration 2
    import shutil

    shutil.rmtree(run_dir / "checkpoints" / "iter_000003")
    run_script("flow_sde_ppo", ["--resume", str(run_dir), "--total-iterations", "4"])
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = [e.step for e in events.Scalars("charts/iteration")]
    assert steps == sorted(set(steps)) and len(steps) == 4, steps
    assert [e.value for e in events.Scalars("charts/iteration")] == [1, 2, 3, 4]


@pytest.mark.slow
def test_no_reward_warns_and_torchrun_counts_are_totals(ckpt, tmp_path):
    # 2 ranks x 1 env, 4-step episodes in an 8-step window: 2 episodes per env, 4 in all, none solved
    proc = run_script("flow_sde_ppo", ["--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "1",
                                       "--run-root", str(tmp_path), *TINY_FLAGS], nproc=2)
    assert "warning: iteration 1: no episode earned any reward" in proc.stdout + proc.stderr
    row = next(r for r in metrics(only_run(tmp_path)) if "charts/iteration" in r)
    assert row["charts/episodes"] == 4
    assert row["charts/rollout_success_rate"] == 0.0


# A reward whenever the first executed action's first dim is positive, so that a random tiny policy gets a
# real (closed-loop) learning signal; GRPO scores episodes by success: the first env of every group solves its
# episode, the second does not, so that every group has mixed outcomes.
REWARD_SOME_ACTIONS = """
import numpy as np
from common import envs as _envs
_step = _envs.ChunkVecEnv.step_chunk
def _rewarded(self, actions):
    obs, reward, terminated, truncated, info = _step(self, actions)
    lucky = np.asarray(actions)[:, 0, 0] > 0
    if 'grpo' in sys.argv[0]:
        lucky = np.arange(len(lucky)) % 2 == 0
        terminated = terminated | lucky
    return obs, reward + lucky.astype(np.float32), terminated, truncated, info
_envs.ChunkVecEnv.step_chunk = _rewarded
"""


@pytest.mark.slow
@pytest.mark.parametrize("script,nproc", [("flow_sde_ppo", 2), ("flow_noise_ppo", 1), ("flow_sde_grpo", 1)])
def test_same_seed_and_flags_give_identical_metrics(script, nproc, ckpt, tmp_path):
    flags = ["--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "2", *TINY_FLAGS, "--num-videos", "0",
             *GROUP.get(script, []), "--max-episode-steps", "8", "--update-epochs", "2"]
    rows = []
    for name in ("a", "b"):
        proc = run_cli(script, [*flags, "--run-root", str(tmp_path / name)], prelude=REWARD_SOME_ACTIONS, nproc=nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows.append([{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in metrics(only_run(tmp_path / name))])
    assert rows[0] == rows[1]
    learned = [r for r in rows[0] if r.get("losses/approx_kl")]  # the update really moved the policy
    assert learned and all(r["charts/env_reward"] > 0 for r in rows[0] if "charts/iteration" in r)
