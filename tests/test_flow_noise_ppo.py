"""flow_noise_ppo.py: the noise network's bounded std (4.1.1), the joint log-likelihood of the denoising
chain (eq. 4-5), the PPO ratio of the one-layer MDP, presets and flag errors (the subprocess runs are in
tests/test_scripts_e2e.py)."""

import math

import pytest
import torch

torch.set_num_threads(1)
from helpers import load_script, random_observation  # noqa: E402




fnp = load_script("flow_noise_ppo")


def resolved(args):
    """The flags as a run without a checkpoint resolves them: --model tiny unless given, every None from the preset."""
    from common.run import fill_from_preset

    fill_from_preset(args, None, fnp.preset)
    return args


@pytest.mark.parametrize("bounds", [(0.08, 0.16), (0.04, 0.10)])
def test_noise_std_stays_within_bounds_and_reaches_both_ends(bounds):
    lo, hi = bounds
    raw = torch.cat([torch.tensor([-1e4, -50.0, -3.0, 0.0, 3.0, 50.0, 1e4]), torch.randn(1000) * 100])
    std = fnp.noise_std(raw, lo, hi)
    assert torch.isfinite(std).all() and std.dtype == torch.float32
    assert float(std.min()) >= lo * (1 - 1e-6) and float(std.max()) <= hi * (1 + 1e-6)
    assert float(std[0]) == pytest.approx(lo, rel=1e-6) and float(std[6]) == pytest.approx(hi, rel=1e-6)
    assert float(std[3]) == pytest.approx(math.sqrt(lo * hi), rel=1e-6)  # raw 0: the geometric mean
    assert (std[:7].diff() >= 0).all()  # monotone in the raw output
    # the network: bounded for extreme features too, and it starts at the geometric mean
    net = fnp.NoiseNet(width=6, action_dim=3, hidden=8, std_min=lo, std_max=hi)
    feats = torch.tensor([-1e4, 1e4]).view(2, 1, 1).expand(2, 5, 6)
    torch.testing.assert_close(net(feats), torch.full((2, 5, 3), math.sqrt(lo * hi)))
    with torch.no_grad():
        net.net[-1].weight.normal_()
    out = net(feats).detach()
    assert float(out.min()) >= lo * (1 - 1e-6) and float(out.max()) <= hi * (1 + 1e-6)


def normal_logpdf(x: float, mean: float, std: float) -> float:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def test_joint_logprob_equals_a_hand_computed_sum_on_a_small_chain():
    gen = torch.Generator().manual_seed(0)
    B, K, H, D, Hp, A = 2, 3, 4, 5, 2, 3
    chain = torch.randn(B, K + 1, H, D, generator=gen)
    means = torch.randn(B, K, H, D, generator=gen)
    stds = torch.rand(B, K, H, D, generator=gen) * 0.2 + 0.05
    got = fnp.joint_logprob(chain, means, stds, Hp, A, "sum")
    for b in range(B):
        total = 0.0
        for h in range(Hp):  # only the executed chunk H' x env action dims A count
            for d in range(A):
                total += normal_logpdf(float(chain[b, 0, h, d]), 0.0, 1.0)  # x_0 ~ N(0, I)
                for k in range(K):
                    total += normal_logpdf(float(chain[b, k + 1, h, d]), float(means[b, k, h, d]), float(stds[b, k, h, d]))
        assert float(got[b]) == pytest.approx(total, rel=1e-5)
    torch.testing.assert_close(fnp.joint_logprob(chain, means, stds, Hp, A, "mean"), got / (K + 1))
    # the dims that are not executed do not enter the likelihood
    chain2 = chain.clone()
    chain2[:, :, Hp:] += 7.0
    chain2[:, :, :, A:] -= 3.0
    torch.testing.assert_close(fnp.joint_logprob(chain2, means, stds, Hp, A, "sum"), got)
    with pytest.raises(ValueError, match="--logprob-reduction"):
        fnp.joint_logprob(chain, means, stds, Hp, A, "max")




def tiny_setup(preset: str = "tiny", reduction: str = "sum"):
    from common.policy import PI0Policy, make_config

    torch.manual_seed(0)
    policy = PI0Policy(make_config(preset)).eval()
    args = fnp.Args(model="tiny", denoise_steps=4, replan_steps=5, noise_std_min=0.08, noise_std_max=0.16,
                    logprob_reduction=reduction)
    noise_net = fnp.NoiseNet(policy.expert_width, policy.config.action_dim, 16, 0.08, 0.16)
    with torch.no_grad():  # a non-trivial θ': the std varies over tokens, dims and steps
        noise_net.net[-1].weight.normal_(0, 0.5)
    return policy, args, noise_net


def test_joint_logprob_gradient_reaches_the_velocity_and_the_noise_network():
    policy, args, noise_net = tiny_setup()
    obs = random_observation(policy.config, batch=4)
    with torch.no_grad():
        _, chain, *_ = fnp.sample_chain(policy, noise_net, policy.encode(obs), fnp.Critic(policy.expert_width, 8),
                                        args, 4, torch.Generator().manual_seed(1))
    policy.train()
    logp, entropy = fnp.chain_logprob(policy, noise_net, policy.encode(obs), chain, args, 4)
    (logp.mean() + entropy.mean()).backward()
    assert policy.action_out_proj.weight.grad is not None and policy.action_out_proj.weight.grad.abs().sum() > 0
    for p in noise_net.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the entropy bonus alone moves θ' only: the features enter the noise network detached
    policy.zero_grad(set_to_none=True)
    noise_net.zero_grad(set_to_none=True)
    _, entropy = fnp.chain_logprob(policy, noise_net, policy.encode(obs), chain, args, 4)
    entropy.mean().backward()
    assert policy.action_out_proj.weight.grad is None
    assert noise_net.net[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("preset,reduction", [("tiny", "sum"), ("tiny-pi05", "sum"), ("tiny", "mean"), ("tiny", "token")])
def test_ratio_is_one_for_unchanged_weights_on_shuffled_rows(preset, reduction):
    policy, args, noise_net = tiny_setup(preset, reduction)
    width = policy.vlm_width if policy.config.variant == "pi05" else policy.expert_width
    critic = fnp.Critic(width, 32)
    obs = random_observation(policy.config, batch=12)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        cache = policy.encode(obs)
        actions, chain, logp, critic_in, value = fnp.sample_chain(policy, noise_net, cache, critic, args, 4, gen)
    H, D = policy.config.action_horizon, policy.config.action_dim
    assert chain.shape == (12, 5, H, D) and chain.dtype == torch.float32
    torch.testing.assert_close(actions, chain[:, -1])
    assert logp.dtype == torch.float32 and torch.isfinite(logp).all()
    assert critic_in.shape[1] == (1 if preset == "tiny-pi05" else 4)
    # every step is stochastic: the chain is not the ODE's trajectory from the same x_0
    x = chain[:, 0]
    with torch.no_grad():
        for k in range(4):
            x = x - 0.25 * policy.velocity(cache, x, torch.full((12,), 1.0 - k / 4))[0]
    assert (x - actions).abs().mean() > 0.02
    # the update recomputes the K transitions against a fresh prefix pass, on shuffled rows
    shuffled = torch.randperm(12)
    with torch.no_grad():
        new_logp, entropy = fnp.chain_logprob(policy, noise_net, policy.encode(obs).index(shuffled), chain[shuffled], args, 4)
    ratio = (new_logp - logp[shuffled]).exp()
    assert ratio.shape == ((12, 5, 4) if reduction == "token" else (12,))  # token: one ratio per executed step x dim
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-4, rtol=0)
    low, high = 0.5 * math.log(2 * math.pi * math.e) + math.log(0.08), 0.5 * math.log(2 * math.pi * math.e) + math.log(0.16)
    assert (entropy >= low - 1e-5).all() and (entropy <= high + 1e-5).all()
    torch.testing.assert_close(critic(critic_in), value)


@pytest.mark.parametrize("mode", ["pre-decision", "all"])
def test_pre_decision_value_does_not_see_the_chain_it_scores(mode):
    """The same x_0 with noise std in [0.08, 0.16] or in [1e-6, 2e-6]: with --critic-steps pre-decision V(o) reads step 0
    only (x_0, drawn before the chain it scores) and is the same for both; with `all` it moves with the sampled chain."""
    policy, args, noise_net = tiny_setup()
    args.critic_steps = mode
    quiet_net = fnp.NoiseNet(policy.expert_width, policy.config.action_dim, 16, 1e-6, 2e-6)
    critic = fnp.Critic(policy.expert_width, 32)
    torch.nn.init.normal_(critic.net[-1].weight)                  # the zero-init last layer would make every value 0
    obs = random_observation(policy.config, batch=8)
    with torch.no_grad():
        cache = policy.encode(obs)
        (_, chain, _, feats, value), (_, quiet_chain, _, _, quiet_value) = [
            fnp.sample_chain(policy, net, cache, critic, args, 4, torch.Generator().manual_seed(5)) for net in (noise_net, quiet_net)]
    assert torch.equal(chain[:, 0], quiet_chain[:, 0]) and (chain[:, -1] - quiet_chain[:, -1]).abs().mean() > 0.02
    assert feats.shape[1] == (1 if mode == "pre-decision" else 4)
    if mode == "pre-decision":
        torch.testing.assert_close(value, quiet_value, atol=1e-6, rtol=0)
    else:
        assert (value - quiet_value).abs().max() > 1e-3


def test_ratio_moves_when_the_expert_or_the_noise_network_changes():
    policy, args, noise_net = tiny_setup()
    obs = random_observation(policy.config, batch=6)
    with torch.no_grad():
        cache = policy.encode(obs)
        _, chain, logp, _, _ = fnp.sample_chain(policy, noise_net, cache, fnp.Critic(policy.expert_width, 8), args, 4,
                                                torch.Generator().manual_seed(0))
        noise_net.net[-1].bias.add_(0.3)
        moved_noise, _ = fnp.chain_logprob(policy, noise_net, cache, chain, args, 4)
        noise_net.net[-1].bias.sub_(0.3)
        policy.action_out_proj.weight.add_(0.05)
        moved_expert, _ = fnp.chain_logprob(policy, noise_net, policy.encode(obs), chain, args, 4)
    assert (moved_noise - logp).abs().max() > 1e-2
    assert (moved_expert - logp).abs().max() > 1e-2


def test_presets_follow_the_paper_tables_and_flags_override():
    args = resolved(fnp.Args(env="libero-long", model="pi05"))
    assert (args.noise_std_min, args.noise_std_max, args.entropy_coef) == (0.04, 0.10, 0.005)
    assert (args.update_epochs, args.denoise_steps, args.anneal_lr, args.replan_steps) == (4, 5, True, 10)
    args = resolved(fnp.Args(env="libero-spatial", model="pi0", noise_std_max=0.2))
    assert (args.noise_std_min, args.noise_std_max, args.actor_lr, args.denoise_steps) == (0.08, 0.2, 1e-5, 4)
    args = resolved(fnp.Args(env="maniskill-PutCarrotOnPlateInScene-v1", model="pi05"))
    assert (args.noise_std_min, args.noise_std_max, args.update_epochs, args.num_envs) == (0.04, 0.10, 4, 256)
    args = resolved(fnp.Args())   # the embedded default the README's 5-seed table measured
    assert args.logprob_reduction in ("sum", "mean")
    assert (args.model, args.total_iterations, args.anneal_lr, args.actor_lr, args.num_envs) == ("tiny", 200, True, 5e-5, 16)


def test_bad_flag_combinations_give_clear_errors():
    fnp.check_args(resolved(fnp.Args(model="tiny")), world_size=1, action_horizon=8)  # the preset is valid
    args = resolved(fnp.Args(model="tiny", noise_std_min=0.2, noise_std_max=0.1))
    with pytest.raises(ValueError, match="--noise-std-min"):
        fnp.check_args(args, world_size=1, action_horizon=8)
    args = resolved(fnp.Args(model="tiny", entropy_coef=-1.0))
    with pytest.raises(ValueError, match="--entropy-coef"):
        fnp.check_args(args, world_size=1, action_horizon=8)
    args = resolved(fnp.Args(model="tiny"))
    args.replan_steps = 20
    with pytest.raises(ValueError, match="--replan-steps"):
        fnp.check_args(args, world_size=1, action_horizon=8)


# ---- issue 14: RLinf's per-token ratio, --time-limit, --episode-weighting, flags kept across --resume -------------
def test_token_logprob_is_the_per_token_mean_of_the_chain_terms_and_sums_to_mean():
    gen = torch.Generator().manual_seed(2)
    B, K, H, D, Hp, A = 2, 3, 4, 5, 2, 3
    chain, means = torch.randn(B, K + 1, H, D, generator=gen), torch.randn(B, K, H, D, generator=gen)
    stds = torch.rand(B, K, H, D, generator=gen) * 0.2 + 0.05
    got = fnp.joint_logprob(chain, means, stds, Hp, A, "token")
    assert got.shape == (B, Hp, A)
    for b, h, d in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:
        terms = [normal_logpdf(float(chain[b, 0, h, d]), 0.0, 1.0)]
        terms += [normal_logpdf(float(chain[b, k + 1, h, d]), float(means[b, k, h, d]), float(stds[b, k, h, d])) for k in range(K)]
        assert float(got[b, h, d]) == pytest.approx(sum(terms) / (K + 1), rel=1e-5)
    # RLinf's chunk_level is the sum of these per-token means: our `mean`
    torch.testing.assert_close(got.sum(dim=(1, 2)), fnp.joint_logprob(chain, means, stds, Hp, A, "mean"))


def test_token_ratio_objective_is_the_mean_of_per_token_clipped_objectives():
    ratio = torch.tensor([[[1.5, 0.9], [1.0, 0.7]], [[1.5, 0.9], [1.0, 0.7]]])  # (B=2, H'=2, A=2)
    adv, zeros, ones = torch.tensor([1.0, -2.0]), torch.zeros(2), torch.ones(2)
    pg, _ = fnp.ppo_losses(ratio, adv, zeros, zeros, zeros, 0.2, ones)
    positive = -(1.2 + 0.9 + 1.0 + 0.7) / 4  # A > 0: -A min(r, clip(r)) per token, then the tokens' mean
    negative = 2 * (1.5 + 0.9 + 1.0 + 0.8) / 4  # A < 0: -A max(r, clip(r))
    assert float(pg) == pytest.approx((positive + negative) / 2)
    one_ratio = ratio.log().mean(dim=(1, 2)).exp()  # one tempered ratio per decision is another estimator
    assert float(fnp.ppo_losses(one_ratio, adv, zeros, zeros, zeros, 0.2, ones)[0]) != pytest.approx(float(pg))


def test_time_limit_terminal_drops_the_bootstrap_that_bootstrap_adds():
    import numpy as np

    terminated, truncated = np.array([False, True, False]), np.array([True, True, False])
    assert fnp.time_limit_rows(terminated, truncated, "bootstrap").tolist() == [0]
    assert fnp.time_limit_rows(terminated, truncated, "terminal").tolist() == []


def test_episode_weighting_gives_each_episode_equal_weight_in_both_losses():
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])  # env 0: episodes of 2 and 3
    w = fnp.episode_weights(dones)
    torch.testing.assert_close(w, torch.tensor([[1 / 2, 1 / 5]] * 2 + [[1 / 3, 1 / 5]] * 3))
    w = (w / w.mean()).reshape(-1)
    adv = torch.tensor([[1.0, 5.0], [3.0, 5.0], [-3.0, 5.0], [0.0, 5.0], [0.0, 5.0]]).reshape(-1)
    zeros, ones = torch.zeros(10), torch.ones(10)
    pg, v = fnp.ppo_losses(ones, adv, zeros, zeros, 2 * adv, 0.2, w)
    assert float(pg) == pytest.approx(-((1 + 3) / 2 + (-3 + 0 + 0) / 3 + 5.0) / 3)
    assert float(v) == pytest.approx((10.0 + 6.0 + 50.0) / 3)  # 0.5 (2A)² averaged per episode, then over episodes


def test_the_new_flags_are_saved_with_the_args_and_restored_on_resume(tmp_path):
    from dataclasses import asdict

    from common import run

    saved = fnp.Args(logprob_reduction="token", time_limit="terminal", episode_weighting=True)
    torch.save({"args": asdict(saved)}, tmp_path / "train_state.pt")
    args, _ = run.resumed_args(fnp.Args, fnp.Args(resume=str(tmp_path)), tmp_path)
    assert (args.logprob_reduction, args.time_limit, args.episode_weighting) == ("token", "terminal", True)
