"""ManiSkill's embedded default (issue 28, bench/maniskill_start.py): its few-shot setting, the cache key it is looked up
by, and the PushCube / PullCube scripted experts on held-out scenes within the env's episode length."""
import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from common import envs  # noqa: E402,F401  (sets VK_ICD_FILENAMES... before simulators: the skipif below reads it)
from common import sft  # noqa: E402
from common.experts import has_expert  # noqa: E402
from helpers import vulkan_ready  # noqa: E402

PUSH = "maniskill-PushCube-v1"


def test_maniskill_few_shot_default_is_pushcube_with_100_demos_and_1000_sft_steps():
    assert sft.MANISKILL_DEFAULT_ENV == PUSH and has_expert(PUSH) and has_expert("maniskill-PullCube-v1")
    assert sft.few_shot_defaults(PUSH) == {"num_demos": 100, "sft_steps": 1000, "image_size": 64}
    assert sft.few_shot_defaults("maniskill-PickCube-v1") == sft.few_shot_defaults(PUSH)   # per simulator
    assert sft.few_shot_defaults("metaworld-drawer-open-v3") == {   # MetaWorld's stays as it was
        "num_demos": sft.DEFAULT_NUM_DEMOS, "sft_steps": sft.DEFAULT_SFT_STEPS, "image_size": sft.DEFAULT_IMAGE_SIZE}
    assert (sft.DEFAULT_NUM_DEMOS, sft.DEFAULT_SFT_STEPS) == (10, 400)


@pytest.mark.parametrize("env_name, num_demos, steps", [(PUSH, 100, 1000), ("metaworld-drawer-open-v3", 10, 400)])
def test_default_sft_policy_is_looked_up_under_the_env_s_own_setting(env_name, num_demos, steps, tmp_path):
    """make_default_sft_policy (what the RL scripts call without --checkpoint) finds the cache entry of the env's own
    few-shot setting; an entry of another setting (ManiSkill's old 10 demos / 400 steps) is never reused."""
    def fake_checkpoint(n, s):
        out = sft.sft_checkpoint_dir(env_name, n, 0, "tiny", s, 64, sft.DEFAULT_ACTION_HORIZON, tmp_path)
        out.mkdir(parents=True)
        (out / "model.safetensors").write_bytes(b"")
        return out

    mine = fake_checkpoint(num_demos, steps)
    other = fake_checkpoint(*((10, 400) if num_demos != 10 else (100, 1000)))
    got = sft.make_default_sft_policy(env_name, cache_dir=tmp_path, progress=False)
    assert got == mine != other and f"__n{num_demos}__" in got.name and f"__{steps}steps__" in got.name


@pytest.mark.skipif(not vulkan_ready(), reason="no software Vulkan: run tools/setup_sims.sh")
@pytest.mark.parametrize("env_name", [PUSH, "maniskill-PullCube-v1"])
def test_push_and_pull_experts_succeed_on_held_out_scenes_within_the_episode_length(env_name):
    """The demo generator's loop (common/sft.py _expert_episodes) on held-out scenes, at the env's own episode length
    (50 steps): the expert succeeds well within it (bench/maniskill_start.py: 50 / 50 held-out scenes, 18-29 steps)."""
    from common.envs import make_envs
    from common.experts import make_expert

    env = make_envs(env_name, 1, image_size=32, asynchronous=False, autoreset=False)
    expert = make_expert(env_name)
    try:
        assert env.max_episode_steps == 50
        for init_id in (0, 1, 2):   # eval ids (held out from the demos)
            env.reset([(0, init_id)])
            for _ in range(env.max_episode_steps):
                action = expert.act(env)
                assert action.shape == (1, 7) and action.dtype == np.float32 and np.abs(action).max() <= 1
                _, reward, term, trunc, info = env.step_chunk(action[:, None])
                if term[0] or trunc[0]:
                    break
            assert term[0] and info["success"][0] and reward[0] == 1.0, f"expert failed on init {init_id}"
            assert info["episode_length"][0] <= 35
    finally:
        env.close()
