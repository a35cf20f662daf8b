"""Expected failures of tools/*.py and bench/*.py: each ends in ONE `error:` line on stderr that names the
flag or file, exit code 2, no traceback, and nothing written. The entry points run in this process
(tyro parses the very command line; torch is imported once); tools/*.py once more as real subprocesses,
all at the same time, and bench/*.py's `__main__` blocks read. Also: common.errors.main_errors on its
own (full / read-only disk, unexpected errors keep their traceback) and MuJoCo never writing MUJOCO_LOG.TXT."""

import errno
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro

from common.errors import UsageError, check_writable, main_errors

ROOT = Path(__file__).resolve().parents[1]


def load_entry_point(rel: str):
    """tools/x.py or bench/x.py as a module (importing it must not start anything)."""
    spec = importlib.util.spec_from_file_location("entry_" + rel.replace("/", "_")[:-3], ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(rel: str, argv: list[str], capsys) -> tuple[int, str]:
    module = load_entry_point(rel)
    args = tyro.cli(module.Args, args=argv)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        with main_errors():
            module.main(args)
    return exit_info.value.code, capsys.readouterr().err


def assert_one_error_line(code: int, err: str, *names: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Env-free tiny checkpoints shaped for a MetaWorld task (S = A = 4, 32 px, H = 8): one camera, two
    cameras, and one whose model.safetensors is truncated."""
    from common.checkpoint import save_policy
    from common.policy import PI0Policy, make_config
    from common.processor import Processor, compute_norm_stats
    from common.tokenizer import train_tiny_tokenizer

    root = tmp_path_factory.mktemp("ckpts")
    rng = np.random.default_rng(0)
    stats = compute_norm_stats(rng.normal(size=(64, 4)).astype(np.float32), rng.uniform(-1, 1, (64, 4)).astype(np.float32))
    out = {}
    for name, cams in (("one_cam", 1), ("two_cams", 2)):
        config = make_config("tiny", num_cameras=cams, image_size=32, max_token_len=16)
        tokenizer = train_tiny_tokenizer(["drawer open"], root / f"{name}.model", vocab_size=config.vocab_size)
        torch.manual_seed(0)
        save_policy(root / name, PI0Policy(config), Processor.from_stats(stats, tokenizer, config))
        out[name] = root / name
    import shutil
    shutil.copytree(out["one_cam"], root / "truncated")
    weights = root / "truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    out["truncated"] = root / "truncated"
    return out


ENV = "metaworld-drawer-open-v3"
# (entry point, argv with {w} = a fresh folder nothing may be written to, {file} = a regular file, names the line must hold)
CASES = {
    "evaluate: missing checkpoint dir": ("tools/evaluate.py", ["--checkpoint", "{w}/nope", "--out", "{w}/s.json"], ["--checkpoint", "nope"]),
    "evaluate: unknown env": ("tools/evaluate.py", ["--policy", "random", "--env", "metaworld-drawer-opn-v3"], ["--env", "did you mean metaworld-drawer-open-v3"]),
    "evaluate: no expert for the env": ("tools/evaluate.py", ["--policy", "expert", "--env", "libero-spatial"], ["--env libero-spatial", "no scripted expert"]),
    "evaluate: --num-steps 0": ("tools/evaluate.py", ["--policy", "random", "--num-steps", "0"], ["--num-steps", ">= 1"]),
    "evaluate: --replan-steps 0": ("tools/evaluate.py", ["--policy", "random", "--replan-steps", "0"], ["--replan-steps", ">= 1"]),
    "evaluate: negative --episodes-per-task": ("tools/evaluate.py", ["--policy", "random", "--episodes-per-task", "-3"], ["--episodes-per-task"]),
    "evaluate: no --checkpoint": ("tools/evaluate.py", [], ["--checkpoint DIR", "--policy expert"]),
    "evaluate: unwritable --out": ("tools/evaluate.py", ["--policy", "random", "--out", "{file}/s.json"], ["--out", "not a folder"]),
    "sft: --steps 0": ("tools/sft.py", ["--steps", "0", "--out", "{w}/ckpt", "--cache-dir", "{w}/cache"], ["--steps", ">= 1"]),
    "sft: no expert for the env": ("tools/sft.py", ["--env", "libero-spatial", "--out", "{w}/ckpt", "--cache-dir", "{w}/cache"], ["--env libero-spatial", "no scripted expert"]),
    "sft: negative --num-demos": ("tools/sft.py", ["--num-demos", "-1", "--cache-dir", "{w}/cache"], ["--num-demos"]),
    "sft: unwritable --out": ("tools/sft.py", ["--out", "{file}/ckpt", "--cache-dir", "{w}/cache"], ["--out", "not a folder"]),
    "sft: --out a regular file": ("tools/sft.py", ["--out", "{file}", "--cache-dir", "{w}/cache"], ["--out", "a file is there"]),
    "sft: unwritable --cache-dir": ("tools/sft.py", ["--cache-dir", "{file}/cache", "--out", "{w}/ckpt"], ["--cache-dir", "not a folder"]),
    "sft: missing --init-from": ("tools/sft.py", ["--init-from", "{w}/nope", "--cache-dir", "{w}/cache"], ["--init-from", "no such directory"]),
    "sft: full-size preset from scratch": ("tools/sft.py", ["--preset", "pi0", "--cache-dir", "{w}/cache"], ["--preset pi0", "--init-from"]),
    "sft: another owner's data config from scratch": ("tools/sft.py", ["--data-config", "rlinf_metaworld", "--cache-dir", "{w}/cache"], ["--data-config rlinf_metaworld", "pirl_lerobot_view"]),
    "make_demos: --num-demos 0": ("tools/make_demos.py", ["--num-demos", "0", "--cache-dir", "{w}/cache"], ["--num-demos"]),
    "make_demos: a data config with no pirl rendering": ("tools/make_demos.py", ["--data-config", "lerobot", "--cache-dir", "{w}/cache"], ["--data-config lerobot", "pirl_lerobot_view"]),
    "make_demos: no expert for the env": ("tools/make_demos.py", ["--env", "libero-goal", "--cache-dir", "{w}/cache"], ["--env libero-goal", "no scripted expert"]),
    "bench_envs: --num-envs 0": ("tools/bench_envs.py", ["--num-envs", "0"], ["--num-envs"]),
    "bench_envs: unknown env": ("tools/bench_envs.py", ["--names", "nope"], ["--names", "unknown env"]),
    "compare: --total-iterations 0": ("bench/compare.py", ["--total-iterations", "0", "--run-root", "{w}/runs", "--out", "{w}/c"], ["--total-iterations"]),
    "compare: --parallel 0": ("bench/compare.py", ["--parallel", "0", "--run-root", "{w}/runs", "--out", "{w}/c"], ["--parallel"]),
    "compare: runs that fail, 2 at a time": ("bench/compare.py", ["--algos", "flow_sde_ppo", "--seeds", "1", "2", "--parallel", "2",
                                                                  "--extra=--no-such-flag", "--run-root", "{w}/runs", "--out", "{w}/c"],
                                             ["flow_sde_ppo --env metaworld-drawer-open-v3 --seed 1 (exit code 2)",
                                              "flow_sde_ppo --env metaworld-drawer-open-v3 --seed 2 (exit code 2)"]),
    "compare: no expert, no checkpoint": ("bench/compare.py", ["--env", "libero-spatial", "--run-root", "{w}/runs", "--out", "{w}/c"], ["--env libero-spatial", "--checkpoint DIR"]),
    "ablation_sft: missing checkpoint": ("bench/ablation_sft.py", ["--checkpoint", "{w}/nope", "--out", "{w}/a.json"], ["--checkpoint", "nope"]),
    "exploration: --samples 0": ("bench/exploration.py", ["--samples", "0", "--out", "{w}/e.json"], ["--samples"]),
    "per_state: multi-task env": ("bench/per_state.py", ["--env", "metaworld-mt10", "--out", "{w}/p.json"], ["--env", "single metaworld"]),
    "per_state: --before not its JSON": ("bench/per_state.py", ["--before", "{file}", "--out", "{w}/p.json"], ["--before", "not a per_state.py JSON"]),
    "scaling: --total-iterations 1": ("bench/scaling.py", ["--total-iterations", "1", "--run-root", "{w}/runs", "--out", "{w}/s.json"], ["--total-iterations", ">= 2"]),
    "speed: unknown --parts": ("bench/speed.py", ["--parts", "4", "--json-path", "{w}/s.json"], ["--parts"]),
    "memory: --world-size 0": ("bench/memory.py", ["--world-size", "0", "--out", "{w}/m.json"], ["--world-size"]),
    "maniskill_start: no expert": ("bench/maniskill_start.py", ["--env", "maniskill-StackCube-v1", "--out", "{w}/m.json"], ["maniskill-StackCube-v1", "no scripted expert"]),
    "maniskill_start: --num-demos 0": ("bench/maniskill_start.py", ["--num-demos", "0", "--out", "{w}/m.json"], ["--num-demos", ">= 1"]),
    "devset: unknown task": ("bench/devset.py", ["--tasks", "drawer-opn-v3", "--out", "{w}/d.json"], ["metaworld-drawer-opn-v3", "unknown env name"]),
    "render_views: unknown task": ("bench/render_views.py", ["--task", "drawer-opn-v3", "--out", "{w}/r.json"], ["--task", "metaworld-drawer-opn-v3", "unknown env name"]),
}


def fill(argv: list[str], w: Path, file: Path, checkpoints=None) -> list[str]:
    out = [a.format(w=w, file=file) for a in argv]
    return [str(checkpoints[a[6:]]) if checkpoints and a.startswith("ckpt::") else a for a in out]


@pytest.fixture
def places(tmp_path):
    w = tmp_path / "w"          # nothing may appear here
    file = tmp_path / "a_file"  # a regular file where a folder is needed
    file.write_text("x")
    return w, file


@pytest.mark.parametrize("case", list(CASES))
def test_bad_flag_is_one_error_line_and_writes_nothing(case, places, capsys):
    rel, argv, names = CASES[case]
    w, file = places
    code, err = run_in_process(rel, fill(argv, w, file), capsys)
    assert_one_error_line(code, err, *names)
    assert not w.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("rel, argv", [("tools/evaluate.py", ["--policy", "random"]),
                                       ("tools/sft.py", ["--cache-dir", "{w}/cache"])])
def test_device_cuda_without_a_gpu_is_one_error_line(rel, argv, places, capsys):
    w, file = places
    code, err = run_in_process(rel, fill(argv, w, file) + ["--device", "cuda"], capsys)
    assert_one_error_line(code, err, "--device cuda")
    assert not w.exists()


# checkpoint meets env: found only after loading it (and, for cameras, after the env is made)
FIT_CASES = {
    "truncated model.safetensors": (["--checkpoint", "ckpt::truncated"], ["--checkpoint", "truncated"]),
    "--replan-steps beyond the model's horizon": (["--checkpoint", "ckpt::one_cam", "--replan-steps", "9"], ["--replan-steps 9", "H=8"]),
    "checkpoint's cameras differ from the env's": (["--checkpoint", "ckpt::two_cams"], ["1 camera(s) in the env but 2 in the model", ENV]),
    "checkpoint's image size differs from the renders": (["--checkpoint", "ckpt::one_cam", "--image-size", "64"], ["64 px", "32 px", "--image-size 32"]),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_checkpoint_that_does_not_fit_is_one_error_line(case, checkpoints, places, capsys):
    argv, names = FIT_CASES[case]
    w, file = places
    argv = fill(argv, w, file, checkpoints) + ["--env", ENV, "--num-envs", "1", "--episodes-per-task", "1",
                                              "--out", str(w / "s.json")]
    code, err = run_in_process("tools/evaluate.py", argv, capsys)
    assert_one_error_line(code, err, *names)
    assert not w.exists()


SFT_INIT_CASES = {  # tools/sft.py --init-from: a broken dir fails before the demonstrations, a misfit one before training
    "truncated --init-from": ("truncated", "32", ["truncated", "not safetensors"]),
    "--init-from whose cameras differ from the demos'": ("two_cams", "32", ["1 camera(s) in the env but 2 in the model", ENV]),
    "--image-size other than what RL renders for --init-from": ("one_cam", "64", ["--image-size 64", "at 32 px", "pirl"]),
}


@pytest.mark.parametrize("case", list(SFT_INIT_CASES))
def test_sft_init_from_that_does_not_fit_is_one_error_line(case, checkpoints, places, capsys):
    ckpt, size, names = SFT_INIT_CASES[case]
    w, file = places
    argv = ["--init-from", str(checkpoints[ckpt]), "--env", ENV, "--num-demos", "1", "--image-size", size, "--steps", "1",
            "--cache-dir", str(w.parent / "cache"), "--out", str(w / "ckpt")]
    code, err = run_in_process("tools/sft.py", argv, capsys)
    assert_one_error_line(code, err, *names)
    assert not w.exists()


def test_tools_print_one_error_line_as_subprocesses(places):
    """The real command line of every tools/*.py, all started at once (~10 s on 2 idle cores)."""
    w, file = places
    first = {}
    for rel, argv, names in CASES.values():
        if rel.startswith("tools/"):
            first.setdefault(rel, (argv, names))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {rel: subprocess.Popen([sys.executable, str(ROOT / rel), *fill(argv, w, file)], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rel, (argv, _) in first.items()}
    for rel, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert_one_error_line(proc.returncode, err, *first[rel][1])
    assert not w.exists()


def test_every_bench_entry_point_runs_main_under_main_errors():
    """bench/*.py import the RL scripts (seconds each to start), so their failures run in process above; here
    each file's `__main__` block is checked to be `args = tyro.cli(Args)` then `with main_errors(): main(args)`."""
    import ast

    for path in sorted((ROOT / "bench").glob("*.py")):
        tree = ast.parse(path.read_text())
        block = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
        assert len(block) == 1, path
        code = ast.unparse(block[0])
        assert "with main_errors():\n        main(args)" in code, (path, code)
    assert {rel for rel, _, _ in CASES.values() if rel.startswith("bench/")} == \
        {f"bench/{p.name}" for p in (ROOT / "bench").glob("*.py")}   # and each has a failure case above


# ---- common.errors on its own -----------------------------------------------------------------------
@pytest.mark.parametrize("raised, expected", [
    (UsageError("--foo must be >= 1 (got 0)"), "error: --foo must be >= 1 (got 0)"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/x.pt"), "error: no space left on device: /data/run/x.pt"),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/run"), "error: cannot write /ro/run: Permission denied"),
    (FileNotFoundError("no tokenizer in /ckpt: expected tokenizer.model"), "error: no tokenizer in /ckpt: expected tokenizer.model"),
    (RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed"),
     "error: writing a checkpoint failed (is the disk full?)"),
])
def test_main_errors_turns_expected_failures_into_one_line(raised, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        with main_errors():
            raise raised
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(expected) and err.count("\n") == 1, err


def test_main_errors_keeps_unexpected_exceptions():
    with pytest.raises(ZeroDivisionError):
        with main_errors():
            1 / 0
    with pytest.raises(OSError):       # an OSError that is not about a full / read-only disk or a missing file
        with main_errors():
            raise OSError(errno.EIO, "Input/output error", "/dev/sda")


def test_check_writable_names_the_flag(tmp_path):
    check_writable(tmp_path / "new" / "deeper", "--out")   # a folder to be made under a writable one: fine
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match=r"--out .*f is a file, not a folder"):
        check_writable(tmp_path / "f" / "x.json", "--out")
    assert not (tmp_path / "new").exists()                 # checking writes nothing


def test_mujoco_writes_no_log_file_into_the_working_directory(tmp_path):
    """A diverging MetaWorld env (NaN actions) makes MuJoCo warn at every step; the warnings go to stderr
    once per kind, and no MUJOCO_LOG.TXT appears in the current directory (it used to land in the repo root)."""
    code = ("import numpy as np; from common.envs import make_envs\n"
            f"e = make_envs('{ENV}', 1, image_size=16, asynchronous=False); e.reset()\n"
            "for _ in range(3): e.step_chunk(np.full((1, 4, 4), np.nan, np.float32))\n"
            "e.close()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("MuJoCo warning")]
    assert warnings and len(warnings) == len(set(w.split(" Time =")[0] for w in warnings))


def test_sft_out_that_would_replace_a_folder_of_other_files_is_refused(places, tmp_path, capsys):
    """--out is published whole (an existing checkpoint there is replaced): a folder holding anything else is refused before
    the demonstrations, and keeps its files."""
    w, file = places
    folder = tmp_path / "my_notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    code, err = run_in_process("tools/sft.py", ["--out", str(folder), "--cache-dir", str(w / "cache")], capsys)
    assert_one_error_line(code, err, "--out", str(folder), "no checkpoint")
    assert (folder / "notes.txt").read_text() == "keep me" and file.read_text() == "x"
    assert not w.exists()


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_checkpoints_follow_the_umask(umask, file_mode, dir_mode, checkpoints, tmp_path):
    """Atomic writes (mkstemp / mkdtemp, then rename) give files and folders the modes a plain open() / mkdir() would."""
    from common.checkpoint import save_policy
    from common.logger import atomic_torch_save, atomic_write_text
    from common.run import load_checkpoint

    policy, processor = load_checkpoint(str(checkpoints["one_cam"]))
    old = os.umask(umask)
    try:
        atomic_torch_save({"x": torch.zeros(2)}, tmp_path / "state.pt")
        atomic_write_text(tmp_path / "args.json", "{}")
        save_policy(tmp_path / "policy", policy, processor)
    finally:
        os.umask(old)
    paths = [tmp_path / "state.pt", tmp_path / "args.json", *(tmp_path / "policy").rglob("*")]
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in [tmp_path / "policy", *paths]}
    assert modes["policy"] == dir_mode, modes
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != (dir_mode if (tmp_path / name).is_dir() else file_mode)}
    assert not wrong, wrong
