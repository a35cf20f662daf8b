"""common/conventions.py: a checkpoint's data conventions, applied as its owner applies them (issue 25).

The fixtures are openpi's own transform code's outputs (tools/peers/openpi_conventions.py, openpi 15a9616):
for one normalised model chunk and 12 LIBERO-like states, what its pi0_libero / pi05_libero pipelines send to
the env, and the SFT targets its input transforms make of env actions."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.conventions import DATA_CONFIGS, make_bool_mask, resolve_data_config
from common.errors import UsageError
from common.policy import make_config
from common.processor import Processor, Provenance
from helpers import libero_ready

FIXTURES = Path(__file__).parent / "fixtures" / "peers" / "openpi_conventions"


def fixture(name):
    return dict(np.load(FIXTURES / f"{name}.npz"))


def processor_for(name, data_config=None):
    f = fixture(name)
    stats = {k: {s: f[f"{k}_{s}"].tolist() for s in ("mean", "std", "q01", "q99")} for k in ("state", "actions")}
    config = make_config("tiny-pi05" if "pi05" in name else "tiny", action_dim=32, state_dim=32)
    return Processor(stats, None, config, data_config=data_config), f


@pytest.mark.parametrize("name", ["pi0_libero", "pi05_libero"])
def test_env_actions_equal_openpis_output_transforms(name):
    """For the same model chunk, the actions pirl sends to LIBERO equal openpi's (Unnormalize, AbsoluteActions,
    LiberoOutputs) to 1e-6, per state."""
    proc, f = processor_for(name, DATA_CONFIGS[name])
    n = len(f["states"])
    chunk = torch.as_tensor(np.broadcast_to(f["model_out"], (n, *f["model_out"].shape)).copy())   # (N, H, 32)
    ours = proc.actions_to_env(chunk, 7, state=f["states"])
    np.testing.assert_allclose(ours, f["to_env"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["pi0_libero", "pi05_libero"])
def test_sft_targets_equal_openpis_input_transforms(name):
    """actions_to_model (SFT targets) equals openpi's DeltaActions + Normalize + PadStatesAndActions."""
    proc, f = processor_for(name, DATA_CONFIGS[name])
    ours = proc.actions_to_model(f["env_actions"], state=f["states"]).numpy()
    np.testing.assert_allclose(ours, f["targets"], atol=1e-6, rtol=0)


def test_dropping_the_delta_transform_is_caught():
    """The pi0_libero fixture is far from what the absolute convention sends: a Processor that forgets the delta
    fails the comparison above by far more than its tolerance."""
    proc, f = processor_for("pi0_libero", DATA_CONFIGS["pirl"])
    n = len(f["states"])
    chunk = torch.as_tensor(np.broadcast_to(f["model_out"], (n, *f["model_out"].shape)).copy())
    absolute = proc.actions_to_env(chunk, 7)
    assert np.abs(absolute - f["to_env"]).max() > 0.1
    np.testing.assert_allclose(absolute[..., 6], f["to_env"][..., 6], atol=1e-6)   # the gripper is never relative


def test_delta_round_trip_and_missing_state():
    proc, f = processor_for("pi0_libero", DATA_CONFIGS["pi0_libero"])
    model = proc.actions_to_model(f["env_actions"], state=f["states"])
    np.testing.assert_allclose(proc.actions_to_env(model, 7, state=f["states"]), f["env_actions"], atol=1e-5)
    with pytest.raises(ValueError, match="raw env state"):
        proc.actions_to_env(model, 7)
    with pytest.raises(ValueError, match="raw env state"):
        proc.actions_to_model(f["env_actions"])


def test_absolute_default_is_bit_identical_to_plain_unnormalisation():
    """The embedded default (data config pirl) computes exactly what it computed before: no state is needed and a
    state given changes nothing."""
    proc, f = processor_for("pi0_libero")
    assert proc.data_config.name == "pirl" and not proc.data_config.delta
    chunk = torch.as_tensor(f["model_out"][None])
    x = f["model_out"][None, :, :7].astype(np.float32)
    s = proc._stats["actions"]
    expected = (x * (s["std"][:7] + 1e-6) + s["mean"][:7]).astype(np.float32)
    np.testing.assert_array_equal(proc.actions_to_env(chunk, 7), expected)
    np.testing.assert_array_equal(proc.actions_to_env(chunk, 7, state=f["states"][:1]), expected)
    assert proc.with_stats(proc.norm_stats).data_config is proc.data_config


def test_make_bool_mask_is_openpis():
    assert make_bool_mask(6, -1) == (True,) * 6 + (False,)
    assert make_bool_mask(2, -2, 2) == (True, True, False, False, True, True)


def _proc(source_format, variant="pi0"):
    return SimpleNamespace(provenance=SimpleNamespace(source_format=source_format), config=SimpleNamespace(variant=variant))


def _isaac_proc(*resolutions):
    videos = {f"cam{i}": {"resolution": list(r), "channels": 3, "fps": 20.0} for i, r in enumerate(resolutions)}
    return SimpleNamespace(provenance=SimpleNamespace(source_format="isaac-gr00t"), config=SimpleNamespace(variant="groot"),
                           entry={"modalities": {"video": videos}})


def test_an_isaac_gr00t_checkpoint_renders_at_its_metadata_resolution(capsys):
    """Isaac-GR00T's VideoToTensor takes only the dataset's resolution (metadata.json): the envs render at it."""
    row = resolve_data_config(None, _isaac_proc((256, 256), (256, 256)), "libero-goal")
    assert row.name == "isaac_gr00t" and row.env_options("libero-goal", 224)["image_size"] == 256
    assert row.env_options("metaworld-drawer-open-v3", 224)["image_size"] == 256
    assert resolve_data_config(None, _isaac_proc(), "libero-goal").env_options("libero-goal", 224)["image_size"] == 224
    for bad in ([(640, 480)], [(256, 256), (128, 128)]):   # not square; two sizes
        with pytest.raises(UsageError, match="metadata.json") as err:
            resolve_data_config(None, _isaac_proc(*bad), "libero-goal")
        assert "\n" not in str(err.value)
    assert resolve_data_config("pirl", _isaac_proc((640, 480)), "libero-goal").name == "pirl"   # no transforms: any size


def test_openpi_pi0_on_libero_needs_its_config_named():
    """The delta choice lives in the training config only: one error line listing the choices."""
    with pytest.raises(UsageError) as err:
        resolve_data_config(None, _proc("openpi"), "libero-spatial")
    assert "--data-config pi0_libero" in str(err.value) and "pi05_libero" in str(err.value)
    assert "--data-config rlinf_pi0_libero" in str(err.value) and "rlinf_pi05_libero" in str(err.value)
    assert "\n" not in str(err.value)
    assert resolve_data_config("pi0_libero", _proc("rlinf"), "libero-goal").delta
    with pytest.raises(UsageError, match="--data-config rlinf_pi0_libero"):   # an RLinf save: its own env's names
        resolve_data_config(None, _proc("rlinf"), "libero-goal")


def test_resolution_defaults(tmp_path, capsys):
    assert resolve_data_config(None, _proc("openpi", "pi05"), "libero-object").name == "pi05_libero"
    assert "pi05_libero" in capsys.readouterr().out   # said, not silent
    assert resolve_data_config(None, _proc("pirl"), "libero-spatial").name == "pirl"
    assert resolve_data_config(None, _proc("lerobot"), "libero-spatial").name == "lerobot"
    assert resolve_data_config(None, _proc("rlinf"), "metaworld-mt50").name == "rlinf_metaworld"
    groot = _proc("isaac-gr00t", "groot")
    assert resolve_data_config(None, groot, "libero-spatial").name == "isaac_gr00t"   # Isaac's data configs' crop
    assert "--data-config isaac_gr00t_no_crop" in capsys.readouterr().out   # said, with the other choices
    assert resolve_data_config("isaac_gr00t_no_crop", groot, "libero-spatial").isaac_video_crop == 1.0
    assert resolve_data_config("pirl", groot, "libero-spatial").isaac_video_crop is None
    assert resolve_data_config(None, _proc("lerobot", "groot"), "libero-spatial").name == "lerobot"   # LeRobot: no crop
    with pytest.raises(UsageError, match="Eagle inputs"):   # pirl's tiny GR00T has no Isaac video pipeline
        resolve_data_config("isaac_gr00t", _proc("pirl", "groot"), "libero-spatial")
    with pytest.raises(UsageError, match="GR00T"):
        resolve_data_config("pi0_libero", groot, "libero-spatial")
    with pytest.raises(UsageError, match="for libero envs"):
        resolve_data_config("pi0_libero", _proc("openpi"), "metaworld-mt50")
    for source, flag in (("lerobot", "pi0_libero"), ("pirl", "pi0_libero"), ("openpi", "nope")):
        with pytest.raises(UsageError):
            resolve_data_config(flag, _proc(source), "libero-spatial")
    (tmp_path / "config.json").write_text(json.dumps({"data_config": "pi0_libero"}))   # pirl's save of such a run
    assert resolve_data_config(None, _proc("openpi"), "libero-spatial", tmp_path).name == "pi0_libero"
    with pytest.raises(UsageError, match="records"):
        resolve_data_config("pi05_libero", _proc("openpi"), "libero-spatial", tmp_path)


def test_evaluate_refuses_an_unnamed_openpi_pi0_on_libero():
    """tools/evaluate.py on an openpi π0 checkpoint and a LIBERO env, no --data-config: one error line, exit 2,
    before any simulator is built."""
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "tools/evaluate.py", "--checkpoint", "tests/fixtures/peers/openpi/pi0",
                        "--asset-id", "physical-intelligence/libero", "--env", "libero-spatial"],
                       cwd=root, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "--data-config pi0_libero" in lines[0]


def test_save_records_the_data_config_and_reload_honours_it(tmp_path):
    """An openpi π0 run with --data-config pi0_libero saves it in config.json: resuming or evaluating that save
    needs no flag, and a contradicting flag is one error line."""
    from common.checkpoint import load_policy, save_policy
    policy, proc = load_policy("tests/fixtures/peers/openpi/pi0", asset_id="physical-intelligence/libero")
    proc.data_config = resolve_data_config("pi0_libero", proc, "libero-spatial", "tests/fixtures/peers/openpi/pi0")
    save_policy(tmp_path / "saved", policy, proc)
    _, again = load_policy(tmp_path / "saved")
    assert resolve_data_config(None, again, "libero-spatial", tmp_path / "saved").name == "pi0_libero"
    with pytest.raises(UsageError, match="records 'pi0_libero'"):
        resolve_data_config("pi05_libero", again, "libero-spatial", tmp_path / "saved")


@pytest.mark.parametrize("script", ["flow_sde_ppo.py", "flow_noise_ppo.py", "flow_sde_grpo.py", "tools/evaluate.py",
                                    "tools/sft.py"])
def test_each_script_takes_data_config_and_lists_the_known_names(script):
    """Every entry point with --data-config lists every row in its --help (the field's doc, kept by hand in each)."""
    source = (Path(__file__).resolve().parents[1] / script).read_text()
    assert "data_config: Annotated[" in source and "unset(" in source.split("data_config:", 1)[1].split("\n")[0]
    doc = source.split("data_config:", 1)[1].split('"""')[1]
    assert all(name in doc for name in DATA_CONFIGS), [name for name in DATA_CONFIGS if name not in doc]


def test_every_config_names_a_view_the_envs_know():
    from common.envs import LIBERO_CLIENTS, METAWORLD_VIEWS
    assert all(c.metaworld_view in METAWORLD_VIEWS for c in DATA_CONFIGS.values())
    assert DATA_CONFIGS["rlinf_metaworld"].metaworld_view == "rlinf" and DATA_CONFIGS["pirl"].metaworld_view == "fast"
    assert all(c.libero_client in LIBERO_CLIENTS for c in DATA_CONFIGS.values())
    assert {n for n, c in DATA_CONFIGS.items() if c.libero_client == "rlinf"} == {"rlinf_pi0_libero", "rlinf_pi05_libero",
                                                                                 "rlinf_gr00t_libero"}


def test_the_embedded_default_is_trained_under_pirls_rows_only():
    """No --checkpoint: pirl's demos and SFT, under pirl (its fast MetaWorld view) or pirl_lerobot_view (LeRobot's
    camera pose, skybox and prompts), which differ in the view alone; any other row is one error line naming both."""
    from common.conventions import EMBEDDED_DEFAULT_CONFIGS, check_embedded_data_config
    assert EMBEDDED_DEFAULT_CONFIGS == ("pirl", "pirl_lerobot_view")
    assert check_embedded_data_config(None) is DATA_CONFIGS["pirl"]
    lerobot_view = check_embedded_data_config("pirl_lerobot_view")
    assert lerobot_view.env_options("metaworld-drawer-open-v3", 64) == {"image_size": 64, "metaworld_view": "lerobot-fast"}
    assert dataclasses.replace(lerobot_view, name="pirl", metaworld_view="fast") == DATA_CONFIGS["pirl"]
    for other in ("lerobot", "rlinf_metaworld", "pi0_libero", "no_such_row"):
        with pytest.raises(UsageError, match=f"--data-config {other}: the embedded default .* pirl or pirl_lerobot_view"):
            check_embedded_data_config(other)


def test_rlinf_libero_configs_are_openpis_training_configs_in_rlinfs_env():
    """rlinf_pi0_libero / rlinf_pi05_libero: the actions, cameras, render size and prompt of pi0_libero / pi05_libero
    (RLinf runs openpi's two LIBERO training configs), RLinf's LIBERO client (15 settle steps, its episode lengths)
    through env_options on LIBERO envs only; resolved by name, from an RLinf save's π0.5 without one, and refused on
    other simulators; pi0_libero / pi05_libero stay openpi's client."""
    for ours, openpi in (("rlinf_pi0_libero", "pi0_libero"), ("rlinf_pi05_libero", "pi05_libero")):
        a, b = DATA_CONFIGS[ours], DATA_CONFIGS[openpi]
        assert (a.delta_mask, a.cameras, a.render_sizes, a.prompt, a.state, a.simulator, a.replan_steps) == \
               (b.delta_mask, b.cameras, b.render_sizes, b.prompt, b.state, b.simulator, b.replan_steps)
        assert a.libero_client == "rlinf" and b.libero_client == "openpi"
        assert a.env_options("libero-goal", 224) == {"image_size": 256, "metaworld_view": "fast", "libero_client": "rlinf"}
        assert b.env_options("libero-goal", 224)["libero_client"] == "openpi"
        assert "libero_client" not in a.env_options("metaworld-mt50", 224)
        assert resolve_data_config(ours, _proc("openpi"), "libero-long") is a
        with pytest.raises(UsageError, match="for libero envs"):
            resolve_data_config(ours, _proc("rlinf"), "metaworld-mt50")
    assert DATA_CONFIGS["rlinf_pi0_libero"].delta and not DATA_CONFIGS["rlinf_pi05_libero"].delta
    assert resolve_data_config(None, _proc("rlinf", "pi05"), "libero-spatial").name == "rlinf_pi05_libero"
    assert resolve_data_config(None, _proc("openpi", "pi05"), "libero-spatial").name == "pi05_libero"
    assert "libero_client" not in DATA_CONFIGS["pirl"].env_options("metaworld-mt50", 64)
    assert DATA_CONFIGS["pirl"].env_options("libero-goal", 64)["libero_client"] == "openpi"   # make_envs' default


def test_make_envs_takes_the_libero_client():
    """make_envs(libero_client=...): RLinf's episode lengths for "rlinf", pirl's (the paper's) otherwise, the flag's
    own max_episode_steps over both; an unknown client is a ValueError naming the known ones (no simulator is built:
    LIBERO's env is made at the first reset)."""
    import common.envs as E
    if not libero_ready():
        pytest.skip("LIBERO or its assets missing: run tools/setup_sims.sh")

    def steps(name, **kw):
        envs = E.make_envs(name, 1, asynchronous=False, **kw)
        envs.close()
        return envs.max_episode_steps
    for name in E.LIBERO_SUITES:
        assert steps(name, libero_client="rlinf") == E.RLINF_LIBERO_MAX_STEPS[name]
        assert steps(name) == steps(name, libero_client="openpi") == E.LIBERO_SUITES[name][1]
    assert steps("libero-goal", libero_client="rlinf", max_episode_steps=7) == 7
    with pytest.raises(ValueError, match="openpi"):
        E.make_envs("libero-goal", 1, asynchronous=False, libero_client="lerobot")


def test_render_size_is_the_peers_on_its_own_simulator_only():
    from common.conventions import render_size
    assert render_size(DATA_CONFIGS["pi0_libero"], "libero-goal", 224) == 256            # openpi's LIBERO client
    assert render_size(DATA_CONFIGS["rlinf_metaworld"], "metaworld-mt50", 224) == 480    # LeRobot / RLinf
    assert render_size(DATA_CONFIGS["pirl"], "libero-goal", 224) == 224                  # the embedded default: unchanged
    assert render_size(DATA_CONFIGS["lerobot"], "metaworld-mt50", 224) == 480            # LeRobot's own sizes
    assert render_size(DATA_CONFIGS["lerobot"], "libero-goal", 224) == 360
    assert render_size(DATA_CONFIGS["lerobot"], "maniskill-PickCube-v1", 224) == 224      # none recorded: the model's
    assert render_size(DATA_CONFIGS["pi0_libero"], "metaworld-mt50", 224) == 224


def test_evaluation_adds_the_state_of_each_decision_back():
    """common/evaluate.py's policy_act_fn (tools/evaluate.py, the scripts' held-out evals) passes each raw
    observation's state: with pi0_libero its env actions are the absolute convention's plus that state on the
    first 6 dims, for the same noise."""
    from common.checkpoint import load_policy
    from common.evaluate import policy_act_fn
    policy, proc = load_policy("tests/fixtures/peers/openpi/pi0", asset_id="physical-intelligence/libero")
    c = policy.config
    rng = np.random.default_rng(0)
    raw = {"images": rng.integers(0, 255, (2, c.num_cameras, 32, 32, 3), dtype=np.uint8),
           "state": fixture("pi0_libero")["states"][:2].astype(np.float32), "instruction": ["pick up the bowl"] * 2}
    delta = proc.with_stats(proc.norm_stats)
    delta.data_config = DATA_CONFIGS["pi0_libero"]
    absolute = policy_act_fn(policy, proc, num_steps=2, replan_steps=5)(raw)
    relative = policy_act_fn(policy, delta, num_steps=2, replan_steps=5)(raw)
    np.testing.assert_allclose(relative[..., :6] - absolute[..., :6], np.broadcast_to(raw["state"][:, None, :6], (2, 5, 6)),
                               atol=1e-5)
    np.testing.assert_array_equal(relative[..., 6], absolute[..., 6])


@pytest.mark.parametrize("script", ["flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"])
def test_each_script_builds_its_envs_on_the_checkpoints_view(script, tmp_path):
    """An RLinf checkpoint on MetaWorld trains (and is evaluated held-out: run.held_out_eval borrows these envs) on the
    view it was trained on: the script's make_envs gets rlinf_metaworld's 480 px render and LeRobot's camera pose
    with RLinf's settle steps (view "rlinf").
    The script runs as a user runs it, with make_envs replaced by one that prints its arguments and exits."""
    root = Path(__file__).resolve().parents[1]
    argv = [f"{script}.py", "--checkpoint", "tests/fixtures/peers/rlinf/pi0", "--env", "metaworld-drawer-open-v3",
            "--run-root", str(tmp_path), "--no-progress"]
    code = ("import runpy, sys\nimport common.envs as E\n"
            "def make_envs(name, num_envs, **kw):\n"
            "    print('MAKE_ENVS', {k: kw[k] for k in ('image_size', 'metaworld_view')}); raise SystemExit(0)\n"
            f"E.make_envs = make_envs\nsys.argv = {argv!r}\nrunpy.run_path('{script}.py', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    line = next((x for x in r.stdout.splitlines() if x.startswith("MAKE_ENVS")), None)
    assert line is not None, r.stdout[-2000:] + r.stderr[-2000:]
    assert line == "MAKE_ENVS {'image_size': 480, 'metaworld_view': 'rlinf'}"


def test_env_options_reach_the_simulator():
    """DataConfig.env_options -> make_envs: rlinf_metaworld renders 480 px with LeRobot's prompts; the embedded
    default's (pirl) is the model's size and pirl's fast view, as make_envs' defaults are."""
    from common.envs import make_envs
    assert DATA_CONFIGS["pirl"].env_options("metaworld-drawer-open-v3", 64) == {"image_size": 64, "metaworld_view": "fast"}
    envs = make_envs("metaworld-drawer-open-v3", 1, asynchronous=False, autoreset=False,
                     **DATA_CONFIGS["rlinf_metaworld"].env_options("metaworld-drawer-open-v3", 224))
    try:
        obs = envs.reset([(0, 0)])
    finally:
        envs.close()
    assert obs["images"].shape == (1, 1, 480, 480, 3) and obs["instruction"] == ["Open a drawer"]


def test_evaluation_defaults_are_the_checkpoints_own():
    """common/evaluate.py sampling_defaults: openpi's LIBERO client replans every 5 (pi0_libero / pi05_libero);
    pirl's own checkpoints record nothing (tools/evaluate.py's 4 and 10 apply); a LeRobot config.json's
    n_action_steps / num_inference_steps (tests/test_peer_lerobot.py runs them through tools/evaluate.py)."""
    from common.evaluate import sampling_defaults
    proc, _ = processor_for("pi0_libero", DATA_CONFIGS["pi0_libero"])
    assert sampling_defaults(proc) == {"replan_steps": 5}
    assert sampling_defaults(processor_for("pi0_libero")[0]) == {}
    rlinf, _ = processor_for("pi0_libero", DATA_CONFIGS["rlinf_pi0_libero"])   # RLinf: 10 on libero_10 only
    assert [sampling_defaults(rlinf, e)["replan_steps"] for e in ("libero-spatial", "libero-long")] == [5, 10]
    proc.provenance = dataclasses.replace(proc.provenance, source_files={
        "config.json": json.dumps({"type": "pi0", "n_action_steps": 50, "num_inference_steps": 10}).encode()})
    assert sampling_defaults(proc) == {"replan_steps": 50, "num_steps": 10}


def test_sft_of_a_delta_checkpoint_normalises_the_delta_chunks():
    """SFT of a pi0_libero checkpoint (common/sft.py build_policy): the action stats are the delta chunks' (openpi's
    compute_norm_stats runs after DeltaActions), so its SFT targets on the masked dims are z-scores (mean 0, std 1
    over the demos, the gripper's too); the absolute actions' stats would put them far off."""
    from common.checkpoint import load_policy
    from common.processor import compute_norm_stats
    from common.sft import Demos, action_chunks, build_policy
    policy, proc = load_policy("tests/fixtures/peers/openpi/pi0", asset_id="physical-intelligence/libero")
    proc.data_config = DATA_CONFIGS["pi0_libero"]
    rng = np.random.default_rng(0)
    T = 60
    state = (fixture("pi0_libero")["states"][rng.integers(12, size=T)] + rng.normal(0, 0.01, (T, 8))).astype(np.float32)
    actions = np.concatenate([state[:, :6] + rng.normal(0, 0.05, (T, 6)), rng.choice([-1.0, 1.0], (T, 1))], 1)
    demos = Demos(images=np.zeros((T, 1, 8, 8, 3), np.uint8), state=state, actions=actions.astype(np.float32),
                  episode=np.repeat([0, 1], T // 2), task_id=np.zeros(T, np.int64), task_descriptions=["put the bowl"])
    _, sft_proc = build_policy(demos, init_from=(policy, proc))
    chunks = action_chunks(demos, policy.config.action_horizon)
    targets = sft_proc.actions_to_model(chunks, state=state).numpy()[..., :7]          # (T, H, 7)
    np.testing.assert_allclose(targets.reshape(-1, 7).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(targets.reshape(-1, 7).std(0), 1, atol=1e-3)
    absolute = proc.with_stats(compute_norm_stats(state, actions))   # what SFT did before: the absolute actions' stats
    assert np.abs(absolute.actions_to_model(chunks, state=state).numpy()[..., :6].mean((0, 1))).max() > 5


# ---- a LeRobot checkpoint's cameras, by name (conventions.camera_order) ---------------------------------------------
def _lerobot_proc(kind, names):
    """What camera_order reads of a LeRobot checkpoint's processor: its config.json (type `kind`: pi0 | groot) with
    image features `names`, listed in that order."""
    features = {**{f"observation.images.{n}": {"type": "VISUAL", "shape": [3, 224, 224]} for n in names},
                "observation.state": {"type": "STATE", "shape": [8]}}
    config = json.dumps({"type": kind, "input_features": features}).encode()
    return SimpleNamespace(provenance=SimpleNamespace(source_format="lerobot", source_files={"config.json": config}),
                           config=SimpleNamespace(variant=kind))


def test_a_lerobot_groot_takes_its_cameras_by_name_in_lerobots_sorted_order(capsys):
    """LeRobot 0.5.1's GR00T stacks its image keys sorted by name, whatever order config.json lists them in: a
    'cam_wrist' / 'top' model gets LIBERO's wrist camera first, an 'image' / 'wrist_image' one the env's order."""
    from common.conventions import camera_order
    for names in (["top", "cam_wrist"], ["cam_wrist", "top"]):
        assert camera_order(_lerobot_proc("groot", names), "libero-spatial") == (1, 0)
    for names in (["wrist_image", "image"], ["image", "wrist_image"]):
        assert camera_order(_lerobot_proc("groot", names), "libero-goal") == (0, 1)
    isaac = SimpleNamespace(provenance=Provenance("isaac-gr00t"), config=SimpleNamespace(variant="groot"),
                            entry={"modalities": {"state": {}, "action": {}}})
    assert camera_order(isaac, "libero-goal") is None   # no metadata.json video keys on file: by position
    assert capsys.readouterr().out == ""   # every env camera used: nothing said


def test_a_lerobot_model_naming_fewer_cameras_than_the_env_uses_those_and_says_which_are_unused(capsys):
    from common.conventions import camera_order
    for kind in ("pi0", "pi05", "groot"):
        assert camera_order(_lerobot_proc(kind, ["image"]), "libero-spatial") == (0,)
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and "robot0_eye_in_hand_image unused" in out[0] and "observation.images.image" in out[0]
    assert camera_order(_lerobot_proc("groot", ["wrist_image"]), "libero-object") == (1,)
    assert "agentview_image unused" in capsys.readouterr().out


def test_a_camera_the_lerobot_model_needs_but_the_env_lacks_is_one_error_line_naming_both():
    """GR00T has no image masks: every camera it names must be there; π0 masks an absent one but needs one present
    (LeRobot's _preprocess_images raises on none)."""
    from common.conventions import camera_order
    for kind, names in (("groot", ["image", "wrist_image"]), ("groot", ["wrist_image"]), ("pi0", ["wrist_image"])):
        with pytest.raises(UsageError) as err:
            camera_order(_lerobot_proc(kind, names), "metaworld-drawer-open-v3")
        msg = str(err.value)
        assert "\n" not in msg and "['observation.images.wrist_image']" in msg and "corner2" in msg, msg
    assert camera_order(_lerobot_proc("pi0", ["image", "wrist_image"]), "metaworld-drawer-open-v3") == (0, None)


def test_the_fit_check_counts_the_cameras_a_lerobot_model_names_and_refuses_a_count_mismatch_by_position():
    """A one-camera LeRobot π0 on LIBERO (two cameras) sees the camera it names and fits; a one-camera checkpoint
    without names (openpi: the env's cameras by position) does not, in one line."""
    from common.conventions import camera_order
    from common.evaluate import check_policy_fits_env
    proc, _ = processor_for("pi0_libero")
    policy = SimpleNamespace(config=make_config("tiny", action_dim=32, state_dim=32, num_cameras=1))
    libero = SimpleNamespace(state_dim=8, action_dim=7, num_cameras=2)
    proc.provenance = dataclasses.replace(proc.provenance, source_format="lerobot")
    proc.camera_order = camera_order(_lerobot_proc("pi0", ["image"]), "libero-spatial")
    check_policy_fits_env(policy, proc, libero, 256, "libero-spatial")
    proc.provenance, proc.camera_order = dataclasses.replace(proc.provenance, source_format="openpi"), None
    with pytest.raises(UsageError) as err:
        check_policy_fits_env(policy, proc, libero, 256, "libero-spatial")
    assert "\n" not in str(err.value) and "2 camera(s) in the env but 1 in the model" in str(err.value)
