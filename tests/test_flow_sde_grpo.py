"""flow_sde_grpo.py: group advantages (eq. 17) against a hand computation, masking after the first done,
group filtering, groups made of identical initial states on a real simulator, presets and flag errors,
and the rollout/update log-prob identity. The subprocess runs (e2e, torchrun, resume) are in
tests/test_scripts_e2e.py."""


import numpy as np
import pytest
import torch

torch.set_num_threads(1)
from helpers import load_script, random_observation  # noqa: E402




grpo = load_script("flow_sde_grpo")


def test_group_advantages_match_a_hand_computation():
    # three groups of 4: 3/4 success, all fail (zero variance), 1/4 success
    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    adv = grpo.group_advantages(scores, group_size=4)
    # group 1: mean 3/4, sample std sqrt((3 * (1/4)^2 + (3/4)^2) / 3) = 1/2
    # group 3: mean 1/4, sample std 1/2 as well
    expected = torch.tensor([0.5, -1.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 1.5, -0.5, -0.5, -0.5])
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[4:8], torch.zeros(4))  # zero-variance group: exactly zero, not NaN


def test_group_advantages_are_per_group_and_finite_for_groups_of_one():
    gen = torch.Generator().manual_seed(0)
    scores = (torch.rand(24, generator=gen) > 0.5).float()
    adv = grpo.group_advantages(scores, group_size=8)
    for g in range(3):
        a, r = adv[8 * g : 8 * (g + 1)], scores[8 * g : 8 * (g + 1)]
        assert abs(float(a.sum())) < 1e-4  # centred within its group
        if r.std() > 0:  # and scaled by the group's own std
            torch.testing.assert_close(a, (r - r.mean()) / (r.std() + 1e-6))
    # groups are contiguous: permuting whole groups permutes their advantages
    perm = torch.cat([torch.arange(16, 24), torch.arange(0, 8), torch.arange(8, 16)])
    torch.testing.assert_close(grpo.group_advantages(scores[perm], 8), adv[perm])
    assert torch.equal(grpo.group_advantages(torch.tensor([1.0, 0.0, 1.0]), 1), torch.zeros(3))


def test_steps_after_the_first_done_are_masked_and_scores_are_binary_success():
    T, N = 5, 4
    dones, successes = torch.zeros(T, N), torch.zeros(T, N)
    dones[1, 0] = successes[1, 0] = 1.0  # env 0: solved in decision 1
    dones[3, 1] = 1.0                    # env 1: time limit in decision 3 (failure)
    dones[0, 2] = successes[0, 2] = 1.0  # env 2: solved in its first decision
    # env 3: still running after T decisions -> a failure, every decision used
    scores, valid = grpo.episode_scores(dones, successes)
    assert scores.tolist() == [1.0, 0.0, 1.0, 0.0]
    expected = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]], dtype=torch.float32)
    assert torch.equal(valid, expected)  # the deciding step counts, the frozen ones after it do not


def test_filter_keeps_only_groups_with_mixed_outcomes():
    scores = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    keep = grpo.groups_kept(scores, 4, *grpo.FILTER_RANGE)
    assert keep.tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_group_episodes_repeat_each_initial_condition_on_contiguous_envs():
    train_ids = range(50, 2**31 - 1)
    episodes = grpo.group_episodes(np.random.default_rng(7), 3, 4, 10, train_ids)
    assert len(episodes) == 12
    groups = [episodes[4 * g : 4 * (g + 1)] for g in range(3)]
    assert all(len(set(g)) == 1 for g in groups) and len({g[0] for g in groups}) == 3
    assert all(0 <= task < 10 and init in train_ids for task, init in episodes)
    assert episodes == grpo.group_episodes(np.random.default_rng(7), 3, 4, 10, train_ids)  # seeded: exact resume


@pytest.mark.slow
def test_envs_of_a_group_start_identical_and_freeze_after_done():
    from common.envs import make_envs

    envs = make_envs("metaworld-mt10", num_envs=4, seed=0, image_size=32, autoreset=False, asynchronous=False,
                     max_episode_steps=4)
    try:
        rng = np.random.default_rng(3)
        while True:  # two groups on two different tasks, so task ids are checked too
            episodes = grpo.group_episodes(rng, 2, 2, envs.num_tasks, envs.train_init_ids)
            if episodes[0][0] != episodes[2][0]:
                break
        obs = envs.reset(episodes=episodes)
        for a, b in ((0, 1), (2, 3)):  # same task id, identical first image and state inside a group
            assert obs["task_id"][a] == obs["task_id"][b] and obs["instruction"][a] == obs["instruction"][b]
            assert np.array_equal(obs["images"][a], obs["images"][b]) and np.array_equal(obs["state"][a], obs["state"][b])
        assert obs["task_id"][0] != obs["task_id"][2] and not np.array_equal(obs["images"][0], obs["images"][2])
        # chunks of 3 steps in 4-step episodes: the time limit hits in decision 1, decision 2 is frozen
        T, N = 3, 4
        dones, successes = torch.zeros(T, N), torch.zeros(T, N)
        for t in range(T):
            _, reward, terminated, truncated, _ = envs.step_chunk(np.zeros((N, 3, envs.action_dim), np.float32))
            dones[t], successes[t] = torch.as_tensor(terminated | truncated).float(), torch.as_tensor(terminated).float()
            if t == 2:
                assert not (terminated | truncated).any() and not reward.any()  # frozen envs: no new done, no reward
        scores, valid = grpo.episode_scores(dones, successes)
        assert dones[1].all() and torch.equal(valid, torch.tensor([[1.0] * 4, [1.0] * 4, [0.0] * 4]))
        assert scores.tolist() == [0.0] * 4  # nobody solves a task with zero actions in 4 steps
    finally:
        envs.close()


def test_presets_follow_the_paper_tables_without_a_critic():
    args = grpo.resolve_args(grpo.Args(env="libero-long", model="pi05"), None)
    assert (args.update_epochs, args.denoise_steps, args.noise_level, args.anneal_lr) == (4, 5, 0.5, True)
    assert (args.interaction_steps, args.replan_steps, args.num_envs, args.group_size) == (480, 10, 64, 8)
    args = grpo.resolve_args(grpo.Args(env="libero-spatial", model="pi0", group_size=4), None)
    assert (args.actor_lr, args.update_epochs, args.interaction_steps, args.group_size) == (1e-5, 2, 240, 4)
    assert not any(hasattr(args, k) for k in ("critic_lr", "vf_coef", "gae_lambda", "gamma"))
    assert args.kl_coef == 0.0 and args.filter_groups


def test_bad_group_size_gives_a_clear_error():
    args = grpo.resolve_args(grpo.Args(model="tiny", num_envs=16, group_size=8, micro_batch_size=25), None)
    grpo.check_args(args, world_size=2, action_horizon=8)  # 8 envs per rank: one group each
    with pytest.raises(ValueError, match="--group-size"):
        grpo.check_args(args, world_size=4, action_horizon=8)  # 4 envs per rank: a group would straddle ranks
    args.group_size = 0
    with pytest.raises(ValueError, match="--group-size"):
        grpo.check_args(args, world_size=1, action_horizon=8)




def test_update_logprob_equals_rollout_logprob_for_unchanged_weights():
    from common.policy import PI0Policy, make_config

    torch.manual_seed(0)
    policy = PI0Policy(make_config("tiny")).eval()
    args = grpo.Args(model="tiny", denoise_steps=4, noise_level=0.5, replan_steps=5)
    obs = random_observation(policy.config, batch=8)
    with torch.no_grad():
        actions, x_j, x_next, j, logp = grpo.sample_hybrid(policy, policy.encode(obs), args, 4,
                                                           torch.Generator().manual_seed(5))
    assert actions.shape == x_j.shape == (8, policy.config.action_horizon, policy.config.action_dim)
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all()
    new_logp, _ = grpo.step_logprob(policy, policy.encode(obs), x_j, x_next, j, args, 4)
    torch.testing.assert_close((new_logp - logp).exp(), torch.ones(8), atol=1e-4, rtol=0)


# ---- issue 14: --loss-normalisation, --episode-weighting (RLinf's choices), --num-groups, flags kept across --resume
def grpo_minibatch_loss(losses, dones, successes, weighting: bool, normalisation: str) -> float:
    """The update's loss on one minibatch holding every row: Σ_kept w l / Z, as the main loop computes it."""
    scores, valid = grpo.episode_scores(dones, successes)
    mask = valid * grpo.groups_kept(scores, 2, *grpo.FILTER_RANGE).float()
    w = grpo.episode_weights(valid) if weighting else torch.ones_like(valid)
    denom = grpo.loss_denominator(float((w * mask).sum()), losses.numel(), normalisation)
    return float((w * mask * losses).sum()) / denom


def test_loss_normalisation_and_episode_weighting_match_closed_forms():
    # T = 4 decisions, N = 4 envs, groups (0, 1) and (2, 3). Env 0 solves at decision 0 (L = 1), env 1 fails at the
    # limit at decision 2 (L = 3): group 0 has mixed outcomes and is kept. Envs 2 and 3 both fail: dropped.
    dones = torch.zeros(4, 4)
    dones[0, 0] = dones[2, 1] = dones[1, 3] = 1.0
    successes = torch.zeros(4, 4)
    successes[0, 0] = 1.0
    losses = torch.arange(1.0, 17.0).view(4, 4)  # per-row loss l[t, n] = 4t + n + 1
    ep0, ep1 = [1.0], [2.0, 6.0, 10.0]  # the rows each kept episode uses
    torch.testing.assert_close(grpo.episode_weights(grpo.episode_scores(dones, successes)[1])[:, :2],
                               torch.tensor([[4.0, 4 / 3], [0.0, 4 / 3], [0.0, 4 / 3], [0.0, 0.0]]))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert grpo_minibatch_loss(losses, dones, successes, False, "kept") == pytest.approx(mean(ep0 + ep1))  # today
    assert grpo_minibatch_loss(losses, dones, successes, False, "all") == pytest.approx(sum(ep0 + ep1) / 16)
    # RLinf (masked_mean_ratio): T / L per kept row, a mean over all 16 rows = the mean over the 4 episodes of each
    # episode's mean loss, the dropped ones adding 0
    assert grpo_minibatch_loss(losses, dones, successes, True, "all") == pytest.approx((mean(ep0) + mean(ep1)) / 4)
    assert grpo_minibatch_loss(losses, dones, successes, True, "kept") == pytest.approx((mean(ep0) + mean(ep1)) / 2)


def test_num_groups_sizes_the_envs_and_a_mismatch_is_a_clear_error():
    args = grpo.resolve_args(grpo.Args(model="tiny"), None)   # the tiny preset the README's 5-seed table measured
    assert (args.num_envs, args.group_size, args.num_groups, args.minibatch_size) == (32, 8, 4, 400)
    assert (args.total_iterations, args.anneal_lr, args.eval_every) == (100, True, 25)
    args = grpo.resolve_args(grpo.Args(model="tiny", num_groups=2), None)
    assert (args.num_envs, args.num_groups) == (16, 2)
    args = grpo.resolve_args(grpo.Args(model="tiny", num_groups=4), None)
    assert (args.num_envs, args.num_groups) == (32, 4)
    args = grpo.resolve_args(grpo.Args(model="tiny", num_groups=4, group_size=2), None)
    assert (args.num_envs, args.num_groups) == (8, 4)
    args = grpo.resolve_args(grpo.Args(model="tiny", num_envs=16, num_groups=4), None)
    with pytest.raises(ValueError, match="--num-groups"):
        grpo.check_args(args, world_size=1, action_horizon=8)


def test_the_new_flags_are_saved_with_the_args_and_restored_on_resume(tmp_path):
    from dataclasses import asdict

    from common import run

    saved = grpo.resolve_args(grpo.Args(model="tiny", loss_normalisation="all", episode_weighting=True, num_groups=4), None)
    torch.save({"args": asdict(saved)}, tmp_path / "train_state.pt")
    args, _ = run.resumed_args(grpo.Args, grpo.Args(resume=str(tmp_path)), tmp_path)
    assert (args.loss_normalisation, args.episode_weighting, args.num_groups, args.num_envs) == ("all", True, 4, 32)
