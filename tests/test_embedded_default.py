"""The embedded default (no --checkpoint) on every env family that has a scripted expert: demonstrations ->
few-shot SFT of the tiny preset -> RL. make_default_sft_policy is the very function the scripts call
without --checkpoint; here it runs at tiny settings (1 demo, 2 SFT steps, 32 px renders), then
flow_sde_ppo.py runs one iteration on the policy it made. An env without an expert (LIBERO) is one
clear error that says to pass --checkpoint. Each script's --help says what leaving a flag out does (the
preset's value, the paper's checkpoint, ...), never tyro's "(default: None)"."""

import json
import os
import re
import subprocess
import sys

import pytest
from test_scripts_e2e import ROOT, metrics, only_run, run_script

from common.sft import NoExpertError, make_default_sft_policy

FAMILIES = ["metaworld-drawer-open-v3", "metaworld-mt10", "maniskill-PickCube-v1"]  # single task, multi-task, ManiSkill
# one env, in the script's own process (no worker to start: ManiSkill's take ~15 s each); 4 decisions of 4 steps
FLAGS = ["--num-envs", "1", "--interaction-steps", "16", "--replan-steps", "4", "--minibatch-size", "4",
         "--micro-batch-size", "2", "--update-epochs", "1", "--eval-episodes-per-task", "1", "--max-episode-steps", "4",
         "--no-progress", "--num-videos", "0"]
ENV_DIMS = {"metaworld-drawer-open-v3": (4, 4, 1), "metaworld-mt10": (4, 4, 1), "maniskill-PickCube-v1": (16, 7, 1)}


@pytest.mark.slow  # measured beside other jobs: drawer-open 50 s, MT10 107 s, PickCube 270 s (ManiSkill starts slowly)
@pytest.mark.parametrize("env_name", FAMILIES)
def test_default_path_demos_sft_rl_runs_on_every_family_with_an_expert(env_name, tmp_path):
    ckpt = make_default_sft_policy(env_name, num_demos=1, sft_steps=2, cache_dir=tmp_path / "cache",
                                   image_size=32, progress=False)
    config = json.loads((ckpt / "config.json").read_text())
    S, A, n_cam = ENV_DIMS[env_name]
    # the tiny preset's D = 8 grows to fit the env's state and actions (both are padded to D, as in openpi)
    assert config["pirl"]["action_dim"] == max(8, S, A)
    assert (config["pirl"]["num_cameras"], config["pirl"]["image_size"]) == (n_cam, 32)
    assert config["sft"]["env_name"] == env_name and config["sft"]["steps"] == 2
    run_root = tmp_path / "runs"
    run_script("flow_sde_ppo", ["--env", env_name, "--checkpoint", str(ckpt), "--total-iterations", "1",
                                "--run-root", str(run_root), *FLAGS])
    run_dir = only_run(run_root)
    assert json.loads((run_dir / "args.json").read_text())["env"] == env_name
    rows = metrics(run_dir)
    assert [r["charts/iteration"] for r in rows if "charts/iteration" in r] == [1]
    assert len([r for r in rows if "eval/success_rate" in r]) == 2  # before and after RL


def test_default_path_without_an_expert_says_pass_a_checkpoint(tmp_path):
    with pytest.raises(NoExpertError, match=r"no scripted expert.*--checkpoint DIR"):
        make_default_sft_policy("libero-spatial", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # failed before collecting anything


@pytest.mark.parametrize("script", ["flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"])
def test_help_says_where_each_preset_flag_comes_from_and_its_tiny_value(script):
    """Every flag left at None for the preset shows, in --help, that it comes from the --env x --model preset and the
    embedded default's (tiny) value, the very value the run takes."""
    from helpers import load_script

    module = load_script(script)
    env = {**os.environ, "COLUMNS": "1000", "OMP_NUM_THREADS": "1"}
    text = subprocess.run([sys.executable, str(ROOT / f"{script}.py"), "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120).stdout
    text = " ".join(text.replace("│", " ").split())   # one line, the box and the wrapping gone
    tiny = module.preset(module.Args().env, "tiny")
    for name, value in tiny.items():
        flag = "--" + name.replace("_", "-")
        flag = f"{flag}, --no-{flag[2:]}" if isinstance(value, bool) else f"{flag} {'INT' if isinstance(value, int) else 'FLOAT'}"
        help_of_flag = text[text.index(f" {flag} "):]
        default = help_of_flag[help_of_flag.index("(default:"):].split(")")[0] + ")"
        assert default == f"(default: from the --env x --model preset; tiny: {value})", (flag, default)


HELP_SCRIPTS = ["flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"] + sorted(   # every tool and bench script with flags
    str(p.relative_to(ROOT).with_suffix("")) for d in ("tools", "bench") for p in (ROOT / d).glob("*.py")
    if "tyro.cli(" in p.read_text())


@pytest.mark.parametrize("script", HELP_SCRIPTS)
def test_help_says_what_leaving_a_flag_out_does_never_default_none(script):
    """A flag whose default is None shows in --help what leaving it out does (the paper's checkpoint, α = rank, a new
    run, ...), not tyro's "(default: None)"."""
    env = {**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / f"{script}.py"), "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.replace("│", " ").split())   # one line, the box and the wrapping gone
    none = [text[max(0, m.start() - 100):m.end()] for m in re.finditer("default: None", text)]   # each with its flag
    assert "(default:" in text and not none, none
