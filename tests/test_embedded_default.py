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


@pytest.mark.slow  # ~60 s beside other jobs: two 1-demo collections, 2 SFT steps, one RL iteration
def test_data_config_pirl_lerobot_view_makes_and_runs_the_default_in_lerobots_view(tmp_path):
    """--data-config pirl_lerobot_view without --checkpoint: the demos are rendered in LeRobot's camera view with its
    prompt, the SFT checkpoint records the row (and is cached under the view), and the script picks that checkpoint up
    and runs on it; the plain default's cache entry is another one."""
    import shutil

    import numpy as np

    from common import sft
    from common.conventions import recorded_data_config
    from common.run import load_for_env

    env_name, cache = "metaworld-drawer-open-v3", tmp_path / "cache"
    demos = {view: sft.collect_demos(env_name, 1, cache_dir=cache, progress=False, view=view)
             for view in ("fast", "lerobot-fast")}
    assert demos["fast"].task_descriptions == ["drawer open"] and demos["lerobot-fast"].task_descriptions == ["Open a drawer"]
    np.testing.assert_array_equal(demos["fast"].state, demos["lerobot-fast"].state)   # the same scene and expert
    assert np.abs(demos["fast"].images.astype(int) - demos["lerobot-fast"].images).mean() > 20   # seen from elsewhere
    made = make_default_sft_policy(env_name, num_demos=1, sft_steps=2, cache_dir=cache, progress=False,
                                   data_config="pirl_lerobot_view")
    assert recorded_data_config(made) == "pirl_lerobot_view" and made.name.endswith("__lerobot-fast-view")
    _, processor, _ = load_for_env(str(made), env_name)
    assert processor.data_config.env_options(env_name, 64)["metaworld_view"] == "lerobot-fast"
    # the script's own lookup: the default few-shot key (10 demos, 400 steps) under the view
    num_demos, sft_steps, image_size = sft.few_shot_setting(env_name)
    key = sft.sft_checkpoint_dir(env_name, num_demos, 0, "tiny", sft_steps,
                                 image_size, sft.DEFAULT_ACTION_HORIZON, cache, view="lerobot-fast")
    shutil.copytree(made, key)
    shutil.rmtree(made)
    run_script("flow_sde_ppo", ["--env", env_name, "--data-config", "pirl_lerobot_view", "--cache-dir", str(cache),
                                "--total-iterations", "1", "--run-root", str(tmp_path / "runs"), *FLAGS])
    args = json.loads((only_run(tmp_path / "runs") / "args.json").read_text())
    assert args["data_config"] == "pirl_lerobot_view" and args["checkpoint"] == str(key)
    assert [p.name for p in (cache / "sft").iterdir()] == [key.name]   # found, not made again (nor the plain one)


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
