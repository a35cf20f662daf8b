"""ManiSkill's embedded default (issue 28, bench/maniskill_start.py): its few-shot setting and the cache key it is looked
up by (its PushCube / PullCube experts: tests/test_envs.py)."""
import pytest

from common import sft
from common.experts import has_expert

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
