"""RLinf's ManiSkill conventions (data config rlinf_maniskill, common/envs.py's "rlinf" ManiSkill client), issue 25.

The action fixtures are RLinf's own code's outputs (tools/peers/rlinf_maniskill.py, RLinf a3816b5): for one batch of
normalised model chunks, what its π0 / π0.5 ManiSkill pipeline (openpi Unnormalize, ManiSkillOutputs, the first 5
steps, rlinf/envs/action_utils.py prepare_actions) sends to a WidowX and to a Panda. The render, episode-length, prompt
and missing-asset tests run pirl's envs (PickCube here: the SIMPLER asset packs cannot be downloaded on this machine).
"""
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from common import envs as E  # noqa: E402  (sets VK_ICD_FILENAMES... before the simulators)
from common.conventions import DATA_CONFIGS  # noqa: E402
from common.policy import make_config  # noqa: E402
from common.processor import Processor, resize_with_pad  # noqa: E402
from helpers import vulkan_ready  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "peers" / "rlinf_maniskill"
WIDOWX, PANDA = "PutCarrotOnPlateInScene-v1", "PickCube-v1"
ROBOT_ENV = {"widowx": WIDOWX, "panda": PANDA}
RLINF = DATA_CONFIGS["rlinf_maniskill"]


def fixture(name):
    return dict(np.load(FIXTURES / f"{name}.npz"))


# ----------------------------------------------------------------------------- actions (peer: RLinf's own code)
@pytest.mark.parametrize("robot", ["widowx", "panda"])
@pytest.mark.parametrize("name", ["pi0_maniskill", "pi05_maniskill"])
def test_env_actions_equal_rlinfs_prepare_actions(name, robot):
    """For the same model chunks, what pirl sends to the robot (processor.actions_to_env, the first 5 steps, then
    maniskill_env_actions of the rlinf client) equals RLinf's Unnormalize -> ManiSkillOutputs -> prepare_actions to
    1e-6: WidowX grippers as 2 * (g > 0.5) - 1, Panda actions as they are."""
    f = fixture(name)
    assert str(f["rlinf_commit"]).startswith("a3816b5")
    stats = {k: {s: f[f"{k}_{s}"].tolist() for s in ("mean", "std", "q01", "q99")} for k in ("state", "actions")}
    config = make_config("tiny-pi05" if "pi05" in name else "tiny", action_dim=32, state_dim=32)
    processor = Processor(stats, None, config, data_config=RLINF)
    assert processor.quantile == bool(f["use_quantiles"])
    chunk = processor.actions_to_env(torch.as_tensor(f["model_out"]), 7, state=f["state"])[:, :5]   # (N, H', 7)
    ours = E.maniskill_env_actions(chunk, ROBOT_ENV[robot], RLINF.maniskill_client)
    np.testing.assert_allclose(ours, f[f"to_env_{robot}"], atol=1e-6, rtol=0)
    if robot == "widowx":   # the fixture is not trivially on one side of the threshold
        assert set(np.unique(ours[..., 6])) == {-1.0, 1.0}


@pytest.mark.parametrize("robot", ["widowx", "panda"])
def test_gripper_threshold_edges_equal_rlinfs(robot):
    """Grippers at, just below and just above 0.5 (and outside [0, 1]) map as RLinf maps them: 0.5 closes."""
    f = fixture("pi0_maniskill")
    ours = E.maniskill_env_actions(f["edge_in"], ROBOT_ENV[robot], "rlinf")
    np.testing.assert_array_equal(ours, f[f"edge_out_{robot}"])
    if robot == "widowx":
        at_half = f["edge_in"][..., 6] == 0.5
        assert at_half.any() and (ours[..., 6][at_half] == -1.0).all()


def test_pirl_client_sends_actions_unchanged():
    f = fixture("pi0_maniskill")
    assert E.maniskill_env_actions(f["edge_in"], WIDOWX, "pirl") is f["edge_in"]
    with pytest.raises(ValueError, match="ManiSkill client 'openpi'"):
        E.maniskill_env_actions(f["edge_in"], WIDOWX, "openpi")


def test_simpler_sim_step_sends_the_mapped_gripper():
    """_ManiSkillSim.step applies the client's mapping before the env steps (a stand-in env records what it gets)."""
    class Recorder:
        def step(self, action):
            self.sent = action
            return None, None, None, None, {"success": torch.zeros(1, dtype=torch.bool)}

    sim = object.__new__(E._ManiSkillSim)
    sim.env, sim.env_id, sim.client, sim.simpler = Recorder(), WIDOWX, "rlinf", True
    sim.step(np.array([0.25, 0, 0, 0, 0, 0, 0.7], np.float32))
    np.testing.assert_array_equal(sim.env.sent, [[0.25, 0, 0, 0, 0, 0, 1.0]])
    sim.step(np.array([0.25, 0, 0, 0, 0, 0, 0.2], np.float32))
    assert sim.env.sent[0, 6] == -1.0


# ----------------------------------------------------------------------------- routing: data config -> make_envs
def test_env_options_carry_the_client_on_maniskill_only():
    assert RLINF.env_options("maniskill-carrot", 224)["maniskill_client"] == "rlinf"
    assert RLINF.env_options("maniskill-carrot", 224)["image_size"] == 224   # the env resizes its 640x480 to it
    assert DATA_CONFIGS["pirl"].env_options("maniskill-PickCube-v1", 64)["maniskill_client"] == "pirl"
    assert "maniskill_client" not in DATA_CONFIGS["rlinf_metaworld"].env_options("metaworld-drawer-open-v3", 224)
    assert all(c.maniskill_client in E.MANISKILL_CLIENTS for c in DATA_CONFIGS.values())


class _Recorded:
    """Stands in for ChunkVecEnv / ManiSkillBatchedEnv: records what make_envs builds, builds nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_simpler_episodes_prompt_and_client_reach_the_env(monkeypatch, device):
    """make_envs on a SIMPLER task (asset check stubbed: the packs are not here): 80-step episodes and the client for
    rlinf, the task's get_language_instruction() as prompt for both clients, 50 steps for pirl."""
    monkeypatch.setattr(E, "_check_maniskill_assets", lambda env_id: None)
    monkeypatch.setattr(E, "ChunkVecEnv", _Recorded)
    monkeypatch.setattr(E, "ManiSkillBatchedEnv", _Recorded)
    for client, steps in (("rlinf", 80), ("pirl", 50)):
        env = E.make_envs("maniskill-carrot", 1, maniskill_client=client, device=device)
        if device == "cpu":
            assert env.kwargs["max_episode_steps"] == steps and env.kwargs["task_descriptions"] == ["put carrot on plate"]
            assert env.args[0].args == (WIDOWX, 224, None, client)   # _ManiSkillSim's arguments
        else:
            assert env.args[3] == steps and env.args[4] == ["put carrot on plate"] and env.kwargs["client"] == client
    assert E.make_envs("maniskill-carrot", 1, maniskill_client="rlinf", max_episode_steps=7).kwargs["max_episode_steps"] == 7
    assert E.maniskill_max_steps(PANDA, "rlinf") == E.MANISKILL_MAX_STEPS   # RLinf's 80 is its SIMPLER setting


def test_prompts_are_the_tasks_own_instruction():
    """SIMPLER tasks: get_language_instruction() (RLinf's ManiskillEnv.instruction), not the env id; the Panda tasks
    have none and keep pirl's sentence."""
    from mani_skill.utils.registration import REGISTERED_ENVS
    for env_id in E.SIMPLER_REGISTERED:
        prompt = E.maniskill_instruction(env_id)
        assert prompt != env_id and " " in prompt
        assert prompt in REGISTERED_ENVS[env_id].cls.get_language_instruction.__code__.co_consts   # its own literal
    assert E.maniskill_instruction(WIDOWX) == "put carrot on plate"
    assert E.maniskill_instruction(PANDA) == E.MANISKILL_PROMPTS[PANDA]


def test_simpler_render_asks_for_the_mode_the_task_supports():
    """SIMPLER tasks take rgb+segmentation only (mani_skill green-screens the Bridge background on it): both clients
    ask for it; rlinf renders the 3rd_view_camera at its own 640x480 with the default shader."""
    import mani_skill.envs  # noqa: F401
    from mani_skill.envs.tasks.digital_twins.bridge_dataset_eval.base_env import BaseBridgeEnv
    rlinf = E.maniskill_render_config(WIDOWX, 224, "rlinf")
    assert rlinf["obs_mode"] in BaseBridgeEnv.SUPPORTED_OBS_MODES
    assert rlinf["sensor_configs"] == {"width": 640, "height": 480, "shader_pack": "default"}
    assert E.maniskill_render_config(WIDOWX, 64, "pirl")["obs_mode"] in BaseBridgeEnv.SUPPORTED_OBS_MODES
    assert E.maniskill_render_config(PANDA, 64, "pirl") == {
        "obs_mode": "rgb", "sensor_configs": {"width": 64, "height": 64, "shader_pack": "minimal"}}


def test_simpler_missing_assets_stay_one_line_with_the_rlinf_client():
    from mani_skill import ASSET_DIR
    if all((Path(ASSET_DIR) / d / m).exists() for d, m in E.SIMPLER_ASSET_PACKS.values()):
        pytest.skip("the SIMPLER asset packs are installed on this machine")
    with pytest.raises(E.MissingAssetError, match="bridge_v2_real2sim.*download_asset") as e:
        E.make_envs("maniskill-carrot", 1, maniskill_client="rlinf")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the 640x480 render (PickCube)
def test_resize_with_pad_uint8_is_the_processors_rounded():
    """The env's uint8 resize is common/processor.py resize_with_pad, rounded back to uint8 (openpi's ResizeImages)."""
    images = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (2, 480, 640, 3), dtype=np.uint8))
    ours = E.resize_with_pad_uint8(images, 224)
    assert ours.shape == (2, 224, 224, 3) and ours.dtype == torch.uint8
    processor = ((resize_with_pad(images, 224) + 1.0) * 127.5).permute(0, 2, 3, 1)
    assert (ours.float() - processor).abs().max() <= 0.5 + 1e-3
    assert (ours[:, :28] == 0).all() and (ours[:, -28:] == 0).all()   # 480 / (640 / 224) = 168 rows, 28 + 28 of pad
    assert E.resize_with_pad_uint8(ours, 224) is ours


@pytest.mark.skipif(not vulkan_ready(), reason="no software Vulkan: run tools/setup_sims.sh")
def test_rlinf_client_renders_640x480_and_resizes_with_pad():
    """PickCube's camera rendered at 640x480 (the rlinf client) reaches the policy as that render resized with pad to
    224 (black bands of 28 rows), the state is qpos alone; the GPU path's class (run on the CPU) returns the same."""
    env = E.make_envs(f"maniskill-{PANDA}", 1, image_size=224, asynchronous=False, autoreset=False,
                      maniskill_client="rlinf")
    batched = E.ManiSkillBatchedEnv(PANDA, 1, 0, 50, ["pick"], range(1000, 2**31 - 1), range(1000), autoreset=False,
                                    image_size=224, sim_backend="physx_cpu", render_backend="cpu", client="rlinf")
    try:
        obs = env.reset([(0, 3)])
        sim = env._workers[0].sim
        raw = sim.obs["sensor_data"]["base_camera"]["rgb"][..., :3]
        assert tuple(raw.shape) == (1, 480, 640, 3)
        assert obs["images"].shape == (1, 1, 224, 224, 3)
        np.testing.assert_array_equal(obs["images"][:, 0], E.resize_with_pad_uint8(raw, 224).numpy())
        assert obs["images"][0, 0, :28].max() == 0 and obs["images"][0, 0, -28:].max() == 0
        assert obs["images"][0, 0, 28:-28].std() > 5
        np.testing.assert_array_equal(obs["state"][0], sim.obs["agent"]["qpos"][0].numpy())   # 9-D Panda qpos
        assert env.max_episode_steps == 50 and obs["instruction"] == [E.MANISKILL_PROMPTS[PANDA]]
        b = batched.reset([(0, 3)])
        np.testing.assert_array_equal(b["images"], obs["images"])
        np.testing.assert_array_equal(b["state"], obs["state"])
    finally:
        env.close(), batched.close()
