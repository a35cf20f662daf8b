"""flow_sde_ppo.py: the SDE step (eq. 9), marginal preservation (eq. 8), GAE (eq. 13), the PPO ratio,
and end-to-end runs (see tests/test_scripts_e2e.py for the subprocess runs)."""

import math

import pytest
import torch

torch.set_num_threads(1)
from helpers import load_script, random_observation  # noqa: E402




fsp = load_script("flow_sde_ppo")


def resolved(args):
    """The flags as a run without a checkpoint resolves them: --model tiny unless given, every None from the preset."""
    from common.run import fill_from_preset

    fill_from_preset(args, None, fsp.preset)
    return args

# A 2-D Gaussian target N(MU, S^2): with x_t = t·noise + (1-t)·x0, the exact velocity
# v(x, t) = E[noise - x0 | x_t = x] is linear in x (jointly Gaussian), so the sampler is tested alone.
MU, S = torch.tensor([1.5, -0.7]), torch.tensor([0.3, 0.6])


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, 1)
    mean_t, var_t = (1 - t) * MU, t**2 + (1 - t) ** 2 * S**2
    e_noise = t / var_t * (x - mean_t)
    e_x0 = MU + (1 - t) * S**2 / var_t * (x - mean_t)
    return e_noise - e_x0


def paper_literal_step(x, v, t, dt, a):
    """eq. 9 read in the paper's τ = 1 - t (τ = 0 noise) with its velocity v_τ = action - noise = -v."""
    tau, v_paper = 1 - t.view(-1, 1), -v
    sigma = a * torch.sqrt(tau / (1 - tau).clamp_min(dt))
    mean = x + dt * (v_paper + sigma**2 / (2 * tau.clamp_min(dt)) * (x + (1 - tau) * v_paper))
    return mean, sigma * math.sqrt(dt)


def sample(num_steps: int, a: float, mode: str, n: int = 100_000) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x, dt = torch.randn(n, 2, generator=gen), 1.0 / num_steps
    for k in range(num_steps):
        t = torch.full((n,), 1.0 - k * dt)
        v = exact_velocity(x, t)
        if mode == "ode":
            x = x - dt * v
            continue
        if mode == "sde":
            mean, std = fsp.sde_step(x.view(n, 1, 2), v.view(n, 1, 2), t, dt, a)
            mean, std = mean.view(n, 2), std.view(n, 1)
        else:
            mean, std = paper_literal_step(x, v, t, dt, a)
        x = mean + std * torch.randn(x.shape, generator=gen)
    return x


def test_sde_step_matches_eq9_at_random_points():
    gen = torch.Generator().manual_seed(1)
    x, v = torch.randn(16, 5, 3, generator=gen), torch.randn(16, 5, 3, generator=gen)
    t = torch.rand(16, generator=gen) * 0.9 + 0.05
    dt, a = 0.1, 0.5
    mean, std = fsp.sde_step(x, v, t, dt, a)
    for i in range(16):
        ti = float(t[i])
        sigma = a * math.sqrt(ti / (1 - ti)) if 1 - ti >= dt else a * math.sqrt(ti / dt)
        expected = x[i] - dt * (v[i] + sigma**2 / (2 * ti) * (x[i] + (1 - ti) * v[i]))
        torch.testing.assert_close(mean[i], expected, rtol=1e-5, atol=1e-5)
        assert float(std[i]) == pytest.approx(sigma * math.sqrt(dt), rel=1e-5)


def test_sde_step_is_finite_at_t1_and_reduces_to_ode_without_noise():
    x, v = torch.randn(4, 2, 3), torch.randn(4, 2, 3)
    mean, std = fsp.sde_step(x, v, torch.ones(4), 0.25, 0.5)
    assert torch.isfinite(mean).all() and torch.allclose(std, torch.full_like(std, 0.5))  # std = a at t = 1
    mean0, std0 = fsp.sde_step(x, v, torch.full((4,), 0.6), 0.25, 0.0)
    torch.testing.assert_close(mean0, x - 0.25 * v)
    assert float(std0.abs().max()) == 0.0


@pytest.mark.parametrize("a", [0.2, 0.5, 0.8])
def test_sde_keeps_the_ode_marginal_and_the_flipped_convention_does_not(a):
    ode = sample(200, a, "ode")
    sde = sample(200, a, "sde")
    flipped = sample(200, a, "flipped")
    for x in (ode, sde):
        torch.testing.assert_close(x.mean(0), MU, atol=0.02, rtol=0)
        torch.testing.assert_close(x.std(0), S, atol=0, rtol=0.04)
    # the same formulas in the other time convention do not reproduce the target
    assert ((flipped.std(0) - S).abs() / S).max() > 0.3


def test_transition_logprob_is_the_gaussian_density_over_executed_dims():
    gen = torch.Generator().manual_seed(2)
    x, mean = torch.randn(3, 6, 8, generator=gen), torch.randn(3, 6, 8, generator=gen)
    std = torch.full((3, 1, 1), 0.3)
    got = fsp.transition_logprob(x, mean, std, replan_steps=4, action_dim=5)
    expected = torch.distributions.Normal(mean[:, :4, :5], 0.3).log_prob(x[:, :4, :5]).sum((1, 2))
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float32


def brute_force_gae(rewards, values, dones, next_value, gamma, lam):
    """A_t = Σ_k (γλ)^k δ_{t+k}, summing until the episode's end, written as the plain double sum."""
    T, N = rewards.shape
    adv = torch.zeros(T, N)
    for n in range(N):
        for t in range(T):
            total, discount = 0.0, 1.0
            for k in range(t, T):
                v_next = next_value[n] if k == T - 1 else values[k + 1, n]
                delta = rewards[k, n] + gamma * v_next * (1 - dones[k, n]) - values[k, n]
                total += discount * delta
                if dones[k, n]:
                    break
                discount *= gamma * lam
            adv[t, n] = total
    return adv


def test_gae_matches_brute_force_with_a_truncation_and_a_termination():
    gen = torch.Generator().manual_seed(3)
    T, N, gamma, lam = 7, 3, 0.99, 0.95
    rewards, values = torch.rand(T, N, generator=gen), torch.randn(T, N, generator=gen)
    dones = torch.zeros(T, N)
    dones[2, 0] = 1.0  # env 0: true termination (success) at decision 2
    dones[4, 1] = 1.0  # env 1: truncation at decision 4; its γ V(final obs) sits in the reward
    final_value = 0.7
    rewards[4, 1] += gamma * final_value
    next_value = torch.randn(N, generator=gen)
    adv, ret = fsp.compute_gae(rewards, values, dones, next_value, gamma, lam)
    expected = brute_force_gae(rewards, values, dones, next_value, gamma, lam)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, adv + values)
    # the truncated step's target is r + γ V(final obs), not 0 continuation
    assert float(adv[4, 1]) == pytest.approx(float(rewards[4, 1] - values[4, 1]))


def test_presets_follow_the_paper_tables_and_flags_override():
    args = resolved(fsp.Args(env="libero-long", model="pi05"))
    assert (args.update_epochs, args.denoise_steps, args.noise_level, args.anneal_lr) == (4, 5, 0.5, True)
    assert (args.interaction_steps, args.replan_steps, args.num_envs, args.minibatch_size) == (480, 10, 64, 2048)
    args = resolved(fsp.Args(env="libero-spatial", model="pi0", actor_lr=3e-6))
    assert (args.actor_lr, args.update_epochs, args.interaction_steps, args.replan_steps) == (3e-6, 2, 240, 5)
    args = resolved(fsp.Args(env="libero-object", model="pi05"))
    assert (args.denoise_steps, args.noise_level) == (5, 0.3)
    args = resolved(fsp.Args(env="maniskill-PutCarrotOnPlateInScene-v1", model="pi0"))
    assert (args.update_epochs, args.actor_lr, args.critic_lr, args.num_envs) == (4, 5.6e-6, 1.1e-4, 256)
    args = resolved(fsp.Args())   # the embedded default the README's 5-seed table measured
    assert (args.model, args.total_iterations, args.anneal_lr, args.actor_lr) == ("tiny", 100, True, 5e-5)
    assert (args.num_envs, args.minibatch_size, args.eval_every) == (32, 400, 25)


@pytest.mark.parametrize("script", ["flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"])
def test_every_preset_passes_its_own_batch_checks(script):
    """Each --env x --model preset resolves to flags its script accepts (a LIBERO tiny checkpoint and the ManiSkill
    GPU presets once stopped on their own rollout / minibatch sizes); the ManiSkill batch is Table 8's."""
    from common import groot, policy
    from common.run import fill_from_preset

    module = load_script(script)

    def resolve(env, model):
        args = module.Args(env=env, model=model)
        if hasattr(module, "resolve_args"):   # GRPO also sizes its groups
            return module.resolve_args(args, None)
        fill_from_preset(args, None, module.preset)
        return args

    horizons = {"tiny": policy.make_config("tiny").action_horizon, "pi0": policy.make_config("pi0").action_horizon,
                "pi05": policy.make_config("pi05").action_horizon,
                "tiny-groot": groot.make_config("tiny-groot").action_horizon, "groot": groot.make_config("groot").action_horizon}
    envs = ["libero-spatial", "libero-object", "libero-goal", "libero-long", "libero-90", "metaworld-drawer-open-v3",
            "metaworld-mt10", "maniskill-PickCube-v1", "maniskill-carrot", "maniskill-put-on-plate",
            "maniskill-PutOnPlateInScene25Main-v3"]
    # 256 envs x 10 chunks of 5 (a 50-step episode); SIMPLER's 80-step episodes; the generalisation set's 320 x 16
    maniskill_batch = {"maniskill-PickCube-v1": 2560, "maniskill-carrot": 4096, "maniskill-put-on-plate": 5120,
                       "maniskill-PutOnPlateInScene25Main-v3": 5120}
    for env in envs:
        for model, horizon in horizons.items():
            args = resolve(env, model)
            module.check_args(args, world_size=8 if model in ("pi0", "pi05", "groot") else 1, action_horizon=horizon)
            if env.startswith("maniskill-") and model == "pi0":   # Table 8: one rollout is the global batch
                batch = args.num_envs * args.interaction_steps // args.replan_steps
                assert args.minibatch_size == batch == maniskill_batch[env], (env, batch)
    args = resolve("maniskill-put-on-plate", "pi05")
    assert (args.total_iterations, args.update_epochs, args.num_envs) == (150, 5, 320)   # Table 8, π0.5 generalisation
    assert resolve("maniskill-cube", "pi0").total_iterations == 130


def test_bad_flag_combinations_give_clear_errors():
    args = resolved(fsp.Args(model="tiny"))
    args.replan_steps = 20
    with pytest.raises(ValueError, match="--replan-steps"):
        fsp.check_args(args, world_size=1, action_horizon=8)
    args = resolved(fsp.Args(model="tiny", num_envs=15))
    with pytest.raises(ValueError, match="--num-envs"):
        fsp.check_args(args, world_size=2, action_horizon=8)




@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_update_logprob_equals_rollout_logprob_for_unchanged_weights(preset):
    from common.policy import PI0Policy, make_config

    torch.manual_seed(0)
    policy = PI0Policy(make_config(preset)).eval()
    args = fsp.Args(model="tiny", denoise_steps=4, noise_level=0.5, replan_steps=5)
    width = policy.vlm_width if policy.config.variant == "pi05" else policy.expert_width
    critic = fsp.Critic(width, 32)
    obs = random_observation(policy.config, batch=12)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        cache = policy.encode(obs)
        actions, x_j, x_next, j, logp, critic_in, value = fsp.sample_hybrid(policy, cache, critic, args, 4, gen)
    assert actions.shape == x_j.shape == x_next.shape == (12, policy.config.action_horizon, policy.config.action_dim)
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all()
    assert set(j.tolist()) <= set(range(4)) and len(set(j.tolist())) > 1  # drawn per env
    assert critic_in.shape[1] == (1 if preset == "tiny-pi05" else 4)
    # the update recomputes the log-prob from ONE expert pass at step j against a fresh prefix pass
    shuffled = torch.randperm(12)
    new_logp, _ = fsp.step_logprob(policy, policy.encode(obs).index(shuffled), x_j[shuffled], x_next[shuffled],
                                   j[shuffled], args, 4)
    ratio = (new_logp - logp[shuffled]).exp()
    torch.testing.assert_close(ratio, torch.ones(12), atol=1e-4, rtol=0)
    approx_kl = ((ratio - 1) - (new_logp - logp[shuffled])).mean()
    assert abs(float(approx_kl)) < 1e-6
    # and the value the update regresses is the rollout's value (same inputs, same head)
    torch.testing.assert_close(critic(critic_in), value)


@pytest.mark.parametrize("mode", ["pre-decision", "all"])
def test_pre_decision_value_does_not_see_the_sde_noise_it_scores(mode):
    """The same x_1 and j with the SDE noise scaled by a = 0.5 or a = 1e-6: the expert features of steps k <= j are the same
    (x_k does not depend on the noise drawn at step j), later ones differ. With --critic-steps pre-decision V(o) is then
    the same for both draws; with `all` it moves with the decision (the action-dependent baseline)."""
    from common.policy import PI0Policy, make_config

    torch.manual_seed(0)
    policy = PI0Policy(make_config("tiny")).eval()
    critic = fsp.Critic(policy.expert_width, 32)
    torch.nn.init.normal_(critic.net[-1].weight)                  # the zero-init last layer would make every value 0
    obs = random_observation(policy.config, batch=12)
    runs = []
    with torch.no_grad():
        cache = policy.encode(obs)
        for a in (0.5, 1e-6):
            args = fsp.Args(model="tiny", denoise_steps=4, noise_level=a, replan_steps=4, critic_steps=mode)
            runs.append(fsp.sample_hybrid(policy, cache, critic, args, 4, torch.Generator().manual_seed(5)))
    (_, _, _, j, _, feats, value), (_, _, _, j_again, _, feats_small, value_small) = runs
    assert torch.equal(j, j_again) and len(set(j.tolist())) > 2 and (j < 3).any()
    before = fsp.critic_steps(j, 4, "pre-decision")              # (12, 4): k <= j
    assert before.sum(1).tolist() == (j + 1).tolist()
    torch.testing.assert_close(feats[before], feats_small[before], atol=1e-5, rtol=0)
    assert (feats[~before] - feats_small[~before]).abs().amax(dim=-1).min() > 1e-3   # every later step sees the noise
    if mode == "pre-decision":
        torch.testing.assert_close(value, value_small, atol=1e-5, rtol=0)
        # and the update's value is the rollout's: the later rows do not enter it
        torch.testing.assert_close(critic(feats_small, before), value)
    else:
        assert (value - value_small)[j < 3].abs().min() > 1e-4


def test_ratio_moves_when_the_expert_changes():
    from common.policy import PI0Policy, make_config

    torch.manual_seed(0)
    policy = PI0Policy(make_config("tiny")).eval()
    args = fsp.Args(model="tiny", denoise_steps=4, noise_level=0.5, replan_steps=5)
    obs = random_observation(policy.config, batch=6)
    with torch.no_grad():
        _, x_j, x_next, j, logp, _, _ = fsp.sample_hybrid(policy, policy.encode(obs), fsp.Critic(policy.expert_width, 8),
                                                          args, 4, torch.Generator().manual_seed(0))
        policy.action_out_proj.weight.add_(0.05)
    new_logp, _ = fsp.step_logprob(policy, policy.encode(obs), x_j, x_next, j, args, 4)
    assert (new_logp - logp).abs().max() > 1e-2


# ---- issue 14: --time-limit, --episode-weighting (RLinf's choices), flags kept across --resume --------------------
def test_time_limit_terminal_drops_the_bootstrap_that_bootstrap_adds():
    import numpy as np

    gamma, lam = 0.9, 0.5
    terminated, truncated = np.array([False, True, False]), np.array([True, True, False])  # env 0: time limit only
    assert fsp.time_limit_rows(terminated, truncated, "bootstrap").tolist() == [0]  # env 1 solved it: a true end
    assert fsp.time_limit_rows(terminated, truncated, "terminal").tolist() == []
    values, next_value, final_value = torch.tensor([[0.2], [0.4]]), torch.tensor([9.0]), 0.8
    for mode, expected_last in (("bootstrap", 0.0 + gamma * final_value - 0.4), ("terminal", 0.0 - 0.4)):
        rewards = torch.zeros(2, 1)  # env 0 only: decision 1 hits the limit with no reward
        rewards[1, fsp.time_limit_rows(terminated, truncated, mode)] += gamma * final_value
        adv, _ = fsp.compute_gae(rewards, values, torch.tensor([[0.0], [1.0]]), next_value, gamma, lam)
        assert float(adv[1, 0]) == pytest.approx(expected_last)
        assert float(adv[0, 0]) == pytest.approx(gamma * 0.4 - 0.2 + gamma * lam * expected_last)  # δ_0 + γλ A_1


def test_episode_weighting_gives_each_episode_equal_weight_in_both_losses():
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])  # env 0: episodes of 2 and 3
    w = fsp.episode_weights(dones)
    torch.testing.assert_close(w, torch.tensor([[1 / 2, 1 / 5]] * 2 + [[1 / 3, 1 / 5]] * 3))
    w = (w / w.mean()).reshape(-1)  # normalised to mean 1, as the update does
    adv = torch.tensor([[1.0, 5.0], [3.0, 5.0], [-3.0, 5.0], [0.0, 5.0], [0.0, 5.0]]).reshape(-1)
    returns, values, ones = 2 * adv, torch.zeros(10), torch.ones(10)
    pg, v = fsp.ppo_losses(ones, adv, values, values, returns, 0.2, w)  # ratio 1: pg = -A, v = 0.5 (V - R)²
    episode_means = [(1 + 3) / 2, (-3 + 0 + 0) / 3, 5.0]  # the mean of each of the 3 episodes
    assert float(pg) == pytest.approx(-sum(episode_means) / 3)
    assert float(v) == pytest.approx(sum(0.5 * 4 * m for m in [(1 + 9) / 2, 9 / 3, 25.0]) / 3)
    pg, _ = fsp.ppo_losses(ones, adv, values, values, returns, 0.2, ones)  # off: the mean over decisions
    assert float(pg) == pytest.approx(-float(adv.mean()))


def test_the_new_flags_are_saved_with_the_args_and_restored_on_resume(tmp_path):
    from dataclasses import asdict

    from common import run

    saved = fsp.Args(time_limit="terminal", episode_weighting=True, total_iterations=3)
    torch.save({"args": asdict(saved)}, tmp_path / "train_state.pt")
    args, _ = run.resumed_args(fsp.Args, fsp.Args(resume=str(tmp_path), total_iterations=5), tmp_path)
    assert (args.time_limit, args.episode_weighting, args.total_iterations) == ("terminal", True, 5)


def test_a_flag_given_at_its_default_on_resume_overrides_the_saved_value(tmp_path):
    from dataclasses import asdict

    from common import run

    saved = fsp.Args(time_limit="terminal", episode_weighting=True, progress=False)
    torch.save({"args": asdict(saved)}, tmp_path / "train_state.pt")
    argv = ["--resume", str(tmp_path), "--time-limit", "bootstrap", "--progress"]   # both at their defaults
    args, _ = run.resumed_args(fsp.Args, fsp.Args(resume=str(tmp_path)), tmp_path, argv=argv)
    assert (args.time_limit, args.progress, args.episode_weighting) == ("bootstrap", True, True)
    args, _ = run.resumed_args(fsp.Args, fsp.Args(resume=str(tmp_path)), tmp_path, argv=["--resume", str(tmp_path)])
    assert (args.time_limit, args.progress) == ("terminal", False)   # not given: the saved run's


def test_preset_bools_are_flag_pairs_left_to_the_preset_unless_given(tmp_path):
    """--anneal-lr / --no-anneal-lr as CleanRL users type them; absent: None, filled by the preset; on --resume a given one
    overrides the saved run's value."""
    from dataclasses import asdict

    import tyro

    from common import run

    assert tyro.cli(fsp.Args, args=[]).anneal_lr is None
    assert tyro.cli(fsp.Args, args=["--anneal-lr"]).anneal_lr is True
    assert resolved(tyro.cli(fsp.Args, args=["--no-anneal-lr"])).anneal_lr is False   # over the tiny preset's True
    assert resolved(tyro.cli(fsp.Args, args=[])).anneal_lr is True
    torch.save({"args": asdict(resolved(fsp.Args()))}, tmp_path / "train_state.pt")
    argv = ["--resume", str(tmp_path), "--no-anneal-lr"]
    args, _ = run.resumed_args(fsp.Args, tyro.cli(fsp.Args, args=argv), tmp_path, argv=argv)
    assert args.anneal_lr is False
    args, _ = run.resumed_args(fsp.Args, tyro.cli(fsp.Args, args=argv[:2]), tmp_path, argv=argv[:2])
    assert args.anneal_lr is True


def test_model_family_is_read_from_the_config():
    """Which presets a checkpoint takes: its variant for the paper's model sizes, `tiny` for the CPU presets' models."""
    from common import groot, policy
    from common.run import model_family

    assert [model_family(policy.make_config(p)) for p in ("pi0", "pi05", "tiny", "tiny-pi05")] == ["pi0", "pi05", "tiny", "tiny"]
    assert [model_family(groot.make_config(p)) for p in ("groot", "tiny-groot")] == ["groot", "tiny"]
