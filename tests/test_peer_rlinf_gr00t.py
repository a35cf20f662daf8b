"""RLinf's GR00T N1.5 LIBERO checkpoints (the paper's appendix C start, data config rlinf_gr00t_libero) against RLinf's
own simulation_io.py (tools/peers/rlinf_gr00t_libero.py, RLinf a3816b5): the env actions pirl sends for the same
model output, the state keys GR00T gets, the cameras, and the paper checkpoint's settings."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common import eagle, hub
from common.conventions import DATA_CONFIGS, camera_order, resolve_data_config
from common.groot import EMBODIMENTS
from helpers import unpack_eagle_files

FIX = Path(__file__).parent / "fixtures" / "peers" / "rlinf_gr00t"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "reference.npz")), json.loads((FIX / "reference.json").read_text())


@pytest.fixture(scope="module")
def processor(tmp_path_factory, ref):
    """An EagleProcessor whose metadata.json entry lists RLinf's keys, in its order, with min / max stats of
    -1 / 1 (min_max un-normalises them to themselves), LIBERO's cameras at 256 px."""
    from common.groot import make_config
    _, meta = ref
    d = unpack_eagle_files(tmp_path_factory.mktemp("eagle"))
    strip = lambda k: k.split(".", 1)[1]
    state = {strip(k): n for k, n in zip(meta["state_keys"], meta["state_dims"])}
    action = {strip(k): 1 for k in meta["action_keys"]}
    stats = lambda keys: {k: {"min": [-1.0] * n, "max": [1.0] * n} for k, n in keys.items()}
    entry = {"statistics": {"state": stats(state), "action": stats(action)},
             "modalities": {"video": {strip(k): {"resolution": [256, 256]} for k in meta["video_keys"]},
                            "state": {k: {"shape": [n]} for k, n in state.items()},
                            "action": {k: {"shape": [n]} for k, n in action.items()}}}
    config = make_config("tiny-groot", state_dim=16, action_dim=16, num_cameras=2, max_token_len=600, image_size=224)
    return eagle.EagleProcessor(d, entry, "libero_franka", config)


def test_the_env_gets_rlinfs_actions_gripper_included(ref, processor):
    r, meta = ref
    processor.data_config = resolve_data_config("rlinf_gr00t_libero", processor, "libero-spatial")
    model = torch.nn.functional.pad(torch.as_tensor(r["model_actions"]), (0, 16 - 7))      # (N, H, D)
    ours = processor.actions_to_env(model, 7)[:, :meta["chunk_size"]]
    assert np.allclose(ours, r["env_actions"], atol=1e-6, rtol=0), np.abs(ours - r["env_actions"]).max()   # min_max's fp32
    assert np.array_equal(ours[..., -1], r["env_actions"][..., -1])
    assert set(np.unique(ours[..., -1])) <= {-1.0, 0.0, 1.0} and (ours[0, :3, -1] == [1.0, 0.0, -1.0]).all()
    processor.data_config = DATA_CONFIGS["isaac_gr00t"]   # the gripper as the model outputs it: not what RLinf sends
    assert not np.allclose(processor.actions_to_env(model, 7)[:, :meta["chunk_size"]], r["env_actions"])


def test_sft_targets_invert_the_env_gripper(ref, processor):
    r, _ = ref
    processor.data_config = DATA_CONFIGS["rlinf_gr00t_libero"]
    env = r["env_actions"][..., :7].copy()
    env[..., -1] = np.where(env[..., -1] >= 0, 1.0, -1.0)   # demonstrations: LIBERO's +-1 gripper
    back = processor.actions_to_env(processor.actions_to_model(env), 7)
    assert np.allclose(back, env, atol=1e-6)
    assert set(processor.actions_to_model(env)[..., 6].unique().tolist()) <= {0.0, 1.0}   # RLinf's [0, 1]


def test_gr00t_gets_rlinfs_state_and_cameras(ref, processor):
    r, _ = ref
    processor.data_config = DATA_CONFIGS["rlinf_gr00t_libero"]
    raw = {"images": np.zeros((10, 2, 256, 256, 3), np.uint8), "state": r["env_state"], "instruction": ["pick"] * 10}
    obs = processor.observation(raw, "cpu")
    assert torch.allclose(obs.state[:, :8], torch.as_tensor(r["state"]), atol=1e-6, rtol=0)   # x ... gripper, RLinf's split
    assert camera_order(processor, "libero-spatial") == (0, 1)          # video.image, video.wrist_image


def test_an_rlinf_gr00t_dir_on_libero_is_known_by_its_embodiment_tag(processor, capsys):
    """metadata.json's libero_franka (RLinf's tag) on LIBERO: rlinf_gr00t_libero, said in one line; elsewhere, or
    another tag, Isaac-GR00T's default."""
    assert resolve_data_config(None, processor, "libero-goal").name == "rlinf_gr00t_libero"
    assert "libero_franka" in capsys.readouterr().out
    assert resolve_data_config(None, processor, "metaworld-drawer-open-v3").name == "isaac_gr00t"
    assert resolve_data_config("isaac_gr00t", processor, "libero-goal").name == "isaac_gr00t"


def test_the_papers_gr00t_checkpoints_run_as_rlinf_ran_them():
    row = DATA_CONFIGS["rlinf_gr00t_libero"]
    assert row.libero_client == "rlinf" and row.isaac_video_crop == 0.95 and row.gripper_from_unit
    assert row.replan_steps_on("libero-spatial") == 5 and row.replan_steps_on("libero-long") == 10
    assert row.episode_steps == {"libero-spatial": 240, "libero-object": 240, "libero-goal": 320, "libero-long": 480}
    for suite, repo in (("spatial", "Spatial"), ("object", "Object"), ("goal", "Goal"), ("long", "10")):
        assert hub.default_checkpoint(f"libero-{suite}", "groot") == f"RLinf/RLinf-Gr00t-SFT-{repo}"
        assert hub.known_data_config(f"RLinf/RLinf-Gr00t-SFT-{repo}") == "rlinf_gr00t_libero"
    assert EMBODIMENTS["libero_franka"] == 31   # RLinf's tag for them, on N1.5's new_embodiment projector
