"""Demonstrations, SFT and the evaluation harness on a real MetaWorld task (tiny model, small renders)."""
import json

import numpy as np
import pytest
import torch

torch.set_num_threads(2)

from common.checkpoint import load_policy, save_policy  # noqa: E402
from common.envs import make_envs  # noqa: E402
from common.evaluate import eval_episodes, evaluate, expert_act_fn, policy_act_fn, random_act_fn  # noqa: E402
from common.sft import Demos, action_chunks, collect_demos, demo_batch, demo_cache_path, train_sft  # noqa: E402

ENV = "metaworld-button-press-topdown-v3"
R = 32  # render size: small keeps every test a few seconds


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pirl_cache")


@pytest.fixture(scope="module")
def demos(cache):
    return collect_demos(ENV, num_demos=2, seed=0, image_size=R, cache_dir=cache, progress=False)


def test_expert_demos_are_successful_and_cached(demos, cache):
    """Two kept episodes, each ended by success before the 100-step limit, with consistent shapes."""
    assert demos.num_episodes == 2
    T = len(demos.actions)
    assert demos.images.shape == (T, 1, R, R, 3) and demos.images.dtype == np.uint8
    assert demos.state.shape == (T, 4) and demos.actions.shape == (T, 4)
    lengths = np.bincount(demos.episode)
    assert (lengths < 100).all()                         # terminated = solved, not truncated
    assert np.abs(demos.actions).max() <= 1.0
    assert demos.task_descriptions == ["button press topdown"]
    again = Demos.load(demo_cache_path(ENV, 2, 0, R, cache))     # the cache holds exactly these arrays
    for k in ("images", "state", "actions", "episode", "task_id"):
        np.testing.assert_array_equal(getattr(again, k), getattr(demos, k))


def test_no_scripted_expert_is_a_clear_error(cache):
    with pytest.raises(ValueError, match="no scripted expert"):
        collect_demos("libero-spatial", 1, cache_dir=cache)
    with pytest.raises(ValueError, match="unknown env name"):
        collect_demos("metaworld-nope-v3", 1, cache_dir=cache)


def test_caches_are_keyed_by_how_the_demos_are_rendered(tmp_path):
    """Demos and SFT policies cached under one MetaWorld view are never reused under another (common/sft.py
    render_tag: the default view, or the one a data config names), nor ManiSkill demos of RLinf's client under
    pirl's; other simulators' keys carry no view."""
    import common.envs as E
    from common.sft import sft_checkpoint_dir
    fast = demo_cache_path(ENV, 10, 0, 64, tmp_path), sft_checkpoint_dir(ENV, 10, 0, "tiny", 400, 64, 8, tmp_path)
    assert all(f"__{E.METAWORLD_DEFAULT_VIEW}-view" in p.name for p in fast)
    other = (demo_cache_path(ENV, 10, 0, 64, tmp_path, view="lerobot-fast"),
             sft_checkpoint_dir(ENV, 10, 0, "tiny", 400, 64, 8, tmp_path, view="lerobot-fast"))
    assert all("__lerobot-fast-view" in p.name for p in other) and all(a != b for a, b in zip(fast, other))
    assert "view" not in demo_cache_path("libero-spatial", 10, 0, 64, tmp_path, view="lerobot-fast").name
    pirl, rlinf = (demo_cache_path("maniskill-PushCube-v1", 10, 0, 64, tmp_path, maniskill_client=c) for c in ("pirl", "rlinf"))
    assert pirl != rlinf and "__rlinf-client" in rlinf.name and "client" not in pirl.name


def test_a_checkpoints_demos_are_rendered_as_rl_renders_for_it():
    """common/sft.py demo_rendering: tools/sft.py --init-from renders the demos with the checkpoint's data config's
    render size, MetaWorld view and ManiSkill client, those of DataConfig.env_options (what the RL scripts and
    tools/evaluate.py render); a --image-size that disagrees is one UsageError naming the size that would work."""
    from common.conventions import DATA_CONFIGS
    from common.errors import UsageError
    from common.sft import demo_rendering

    assert demo_rendering(DATA_CONFIGS["rlinf_metaworld"], ENV, 224) == {
        "image_size": 480, "view": "rlinf", "maniskill_client": "pirl"}                # RLinf's 480 px corner2, resized
    assert demo_rendering(DATA_CONFIGS["lerobot"], ENV, 224)["view"] == "lerobot"
    assert demo_rendering(DATA_CONFIGS["rlinf_maniskill"], "maniskill-PushCube-v1", 224)["maniskill_client"] == "rlinf"
    assert demo_rendering(DATA_CONFIGS["pirl"], ENV, 224, 224) == {                      # pirl's: the model's own size
        "image_size": 224, "view": DATA_CONFIGS["pirl"].metaworld_view, "maniskill_client": "pirl"}
    assert demo_rendering(DATA_CONFIGS["pirl_lerobot_view"], ENV, 64)["view"] == "lerobot-fast"
    with pytest.raises(UsageError, match="--image-size 64: .* at 480 px .*rlinf_metaworld"):
        demo_rendering(DATA_CONFIGS["rlinf_metaworld"], ENV, 224, 64)


def test_tools_sft_init_from_renders_demos_in_the_checkpoints_view(demos, cache, tmp_path):
    """tools/sft.py --init-from a checkpoint that records pirl_lerobot_view: its demos are rendered in that view at
    its size (no --image-size given), the result records the same data config, and its default folder names the
    source checkpoint, so that the RL scripts' embedded default (the key without it) is never replaced by it."""
    import importlib.util
    from pathlib import Path

    import tyro

    from common.conventions import DATA_CONFIGS

    policy, processor, _ = train_sft(demos, "tiny", steps=1, batch_size=4, progress=False, cache_dir=cache,
                                     action_horizon=4, config_overrides={"max_token_len": 16})
    processor.data_config = DATA_CONFIGS["pirl_lerobot_view"]
    save_policy(tmp_path / "mine", policy, processor)
    spec = importlib.util.spec_from_file_location("entry_tools_sft", Path(__file__).resolve().parents[1] / "tools/sft.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tyro.cli(tool.Args, args=["--init-from", str(tmp_path / "mine"), "--env", ENV, "--num-demos", "1",
                                     "--steps", "1", "--batch-size", "4", "--cache-dir", str(tmp_path / "c")])
    tool.main(args)
    outs = list((tmp_path / "c" / "sft").iterdir())
    assert len(outs) == 1 and "__from-mine__" in outs[0].name and outs[0].name.endswith("__lerobot-fast-view")
    assert json.loads((outs[0] / "config.json").read_text())["data_config"] == "pirl_lerobot_view"
    made = [p.name for p in (tmp_path / "c" / "demos").iterdir()]
    assert made == [f"{ENV}__n1__seed0__{R}px__lerobot-fast-view.npz"], made


def test_action_chunks_repeat_last_action_past_episode_end():
    actions = np.arange(5, dtype=np.float32)[:, None]    # episode 0: steps 0,1,2; episode 1: steps 3,4
    d = Demos(np.zeros((5, 1, 2, 2, 3), np.uint8), np.zeros((5, 1), np.float32), actions,
              np.array([0, 0, 0, 1, 1]), np.zeros(5, np.int64), ["t"])
    chunks = action_chunks(d, 3)[..., 0]
    np.testing.assert_array_equal(chunks, [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]])


@pytest.mark.slow  # ~80 optimizer steps: ~10-30 s on an idle 2-core CPU, minutes when the machine is loaded
def test_sft_lowers_loss_and_checkpoint_reloads_bit_identically(demos, cache, tmp_path):
    policy, processor, losses = train_sft(demos, "tiny", steps=1, batch_size=8, progress=False, cache_dir=cache,
                                          action_horizon=4, config_overrides={"max_token_len": 16})
    chunks = action_chunks(demos, 4)
    idx = np.arange(0, len(chunks), max(1, len(chunks) // 16))
    obs, actions = demo_batch(demos, chunks, idx, processor, "cpu")
    g = torch.Generator().manual_seed(0)           # fixed noise and times: the loss is a deterministic function
    noise, t = torch.randn(actions.shape, generator=g), torch.rand(len(idx), generator=g) * 0.999 + 0.001
    with torch.no_grad():
        before = policy.sft_loss(obs, actions, noise, t).item()
    policy, processor, losses = train_sft(demos, steps=80, batch_size=16, lr=1e-3, warmup_steps=10, progress=False,
                                          log_every=10, policy=policy, processor=processor)
    with torch.no_grad():
        after = policy.sft_loss(obs, actions, noise, t).item()
    assert after < 0.6 * before, (before, after)
    # norm stats come from the demonstrations (openpi layout)
    stats = processor.norm_stats["norm_stats"]
    np.testing.assert_allclose(stats["actions"]["mean"], demos.actions.mean(0), rtol=1e-5, atol=1e-6)
    save_policy(tmp_path / "ckpt", policy, processor)
    loaded, proc2 = load_policy(tmp_path / "ckpt")
    sd1, sd2 = policy.state_dict(), loaded.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    assert json.dumps(proc2.norm_stats, sort_keys=True) == json.dumps(processor.norm_stats, sort_keys=True)
    noise = torch.randn(2, 4, policy.config.action_dim, generator=torch.Generator().manual_seed(1))
    obs1, _ = demo_batch(demos, chunks, idx[:2], processor, "cpu")
    obs2, _ = demo_batch(demos, chunks, idx[:2], proc2, "cpu")
    assert torch.equal(obs1.tokens, obs2.tokens) and torch.equal(obs1.state, obs2.state)
    assert torch.equal(policy.sample_actions(obs1, noise), loaded.sample_actions(obs2, noise))


def test_eval_episodes_fixed_held_out_and_sliceable():
    eps = eval_episodes(range(50), num_tasks=2, num_episodes_per_task=None, seed=0)
    assert eps == [(t, i) for t in range(2) for i in range(50)]          # LIBERO: every init state
    a = eval_episodes(range(50), 3, 7, seed=3)
    assert a == eval_episodes(range(50), 3, 7, seed=3) and len(a) == 21
    assert all(0 <= i < 50 for _, i in a) and len(set(a)) == 21
    parts = [a[r::2] for r in range(2)]                                  # torchrun slices: disjoint, complete
    assert sorted(parts[0] + parts[1]) == sorted(a) and not set(parts[0]) & set(parts[1])
    with pytest.raises(ValueError, match="num_episodes_per_task"):
        eval_episodes(range(50), 1, 0, seed=0)
    assert eval_episodes(range(50), 1, 50, seed=3) == eval_episodes(range(50), 1, None, seed=3)
    # more episodes than held-out scenes (MetaWorld's 50, --eval-episodes-per-task 100): each scene twice, not 50 episodes
    b = eval_episodes(range(50), 2, 100, seed=3)
    assert len(b) == 200 and all(b.count((t, i)) == 2 for t in range(2) for i in range(50))
    c = eval_episodes(range(50), 1, 120, seed=3)
    counts = np.bincount([i for _, i in c], minlength=50)
    assert len(c) == 120 and counts.min() == 2 and (counts == 3).sum() == 20


@pytest.fixture(scope="module")
def eval_env():
    envs = make_envs(ENV, num_envs=2, seed=0, image_size=R, autoreset=False, asynchronous=False)
    yield envs
    envs.close()


def test_expert_scores_100_and_random_scores_0(eval_env):
    expert = evaluate(expert_act_fn(ENV, eval_env), ENV, 4, seed=0, envs=eval_env)
    assert expert["success_rate"] == 1.0 and expert["num_episodes"] == 4
    assert expert["per_task"] == {"button press topdown": 1.0} and expert["episode_length"] < 100
    rand = evaluate(random_act_fn(4, chunk=5), ENV, 4, seed=0, envs=eval_env)
    assert rand["success_rate"] == 0.0 and rand["episode_length"] == 100.0


def test_policy_eval_is_deterministic_under_a_seed(demos, cache, tmp_path):
    policy, processor, _ = train_sft(demos, "tiny", steps=1, batch_size=4, progress=False, action_horizon=4,
                                     cache_dir=cache,
                                     config_overrides={"max_token_len": 16})
    envs = make_envs(ENV, num_envs=2, seed=0, image_size=R, autoreset=False, asynchronous=False,
                     max_episode_steps=12)
    try:
        act = policy_act_fn(policy, processor, num_steps=3, replan_steps=4)
        assert act(envs.reset([(0, 0), (0, 1)])).shape == (2, 4, 4)
        s1 = evaluate(act, ENV, 3, seed=5, envs=envs, video_dir=tmp_path / "v", num_videos=1,
                      json_path=tmp_path / "s.json")
        s2 = evaluate(act, ENV, 3, seed=5, envs=envs)
        assert s1 == s2 and s1["num_episodes"] == 3 and s1["episode_length"] <= 12
        assert json.loads((tmp_path / "s.json").read_text()) == s1
        assert len(list((tmp_path / "v").glob("*.mp4"))) == 1
        with pytest.raises(ValueError, match="replan_steps"):
            policy_act_fn(policy, processor, 3, replan_steps=9)
    finally:
        envs.close()
    auto = make_envs(ENV, num_envs=1, image_size=R, autoreset=True, asynchronous=False)
    try:
        with pytest.raises(ValueError, match="autoreset=False"):
            evaluate(act, ENV, 1, envs=auto)
    finally:
        auto.close()


def test_each_eval_episode_draws_its_own_noise_whatever_the_wave(demos, cache):
    """An episode's initial noise x_1 depends on (seed, its place in the episode list) only: the same in a wave of
    2 envs or of 3 (so --num-envs and the world size do not change an eval), another for another episode or seed;
    and evaluate() hands each (task, init id) the same episode id whatever --num-envs."""
    policy, processor, _ = train_sft(demos, "tiny", steps=1, batch_size=4, progress=False, action_horizon=4,
                                     cache_dir=cache, config_overrides={"max_token_len": 16})
    envs = {n: make_envs(ENV, num_envs=n, seed=0, image_size=R, autoreset=False, asynchronous=False,
                         max_episode_steps=8) for n in (2, 3)}
    try:
        act = policy_act_fn(policy, processor, num_steps=3, replan_steps=4)
        act.reset(5)
        act.start_episodes([7, 8])
        pair = act(envs[2].reset([(0, 0), (0, 0)]))                       # (2, 4, 4): one scene, two episodes
        act.start_episodes([9, 7, 8])
        triple = act(envs[3].reset([(0, 0), (0, 0), (0, 0)]))
        torch.testing.assert_close(triple[1:], pair, rtol=0, atol=1e-5)  # episodes 7, 8: the same actions
        assert np.abs(pair[0] - pair[1]).max() > 1e-3 and np.abs(triple[0] - pair[0]).max() > 1e-3
        act.reset(6)
        act.start_episodes([7])
        assert np.abs(act(envs[2].reset([(0, 0), (0, 0)]))[0] - pair[0]).max() > 1e-3   # another seed, other noise

        class first_frames:   # each episode id's first image (it tells the scene, i.e. the (task, init id))
            def __init__(self):
                self.seen, self.ids = {}, []

            def start_episodes(self, ids):
                self.ids = list(ids)

            def __call__(self, raw_obs):
                for i, e in enumerate(self.ids):
                    self.seen.setdefault(e, raw_obs["images"][i].tobytes())
                self.ids = []
                return np.zeros((len(raw_obs["state"]), 1, 4), np.float32)

        seen = {}
        for n, e in envs.items():
            rec = first_frames()
            evaluate(rec, ENV, 5, seed=5, envs=e)
            seen[n] = rec.seen
        assert seen[2] == seen[3] and sorted(seen[2]) == [0, 1, 2, 3, 4] and len(set(seen[2].values())) == 5
    finally:
        for e in envs.values():
            e.close()
