"""flow_noise_ppo.py: the noise network's bounded std (4.1.1), the joint log-likelihood of the denoising
chain (eq. 4-5), the PPO ratio of the one-layer MDP, presets and flag errors (the subprocess runs are in
tests/test_scripts_e2e.py)."""

import math

import pytest
import torch

torch.set_num_threads(1)
from helpers import load_script, random_observation  # noqa: E402




fnp = load_script("flow_noise_ppo")


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


@pytest.mark.parametrize("preset,reduction", [("tiny", "sum"), ("tiny-pi05", "sum"), ("tiny", "mean")])
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
    torch.testing.assert_close(ratio, torch.ones(12), atol=1e-4, rtol=0)
    low, high = 0.5 * math.log(2 * math.pi * math.e) + math.log(0.08), 0.5 * math.log(2 * math.pi * math.e) + math.log(0.16)
    assert (entropy >= low - 1e-5).all() and (entropy <= high + 1e-5).all()
    torch.testing.assert_close(critic(critic_in), value)


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
    args = fnp.resolve_args(fnp.Args(env="libero-long", model="pi05"), None)
    assert (args.noise_std_min, args.noise_std_max, args.entropy_coef) == (0.04, 0.10, 0.005)
    assert (args.update_epochs, args.denoise_steps, args.anneal_lr, args.replan_steps) == (4, 5, True, 10)
    args = fnp.resolve_args(fnp.Args(env="libero-spatial", model="pi0", noise_std_max=0.2), None)
    assert (args.noise_std_min, args.noise_std_max, args.actor_lr, args.denoise_steps) == (0.08, 0.2, 1e-5, 4)
    args = fnp.resolve_args(fnp.Args(env="maniskill-PutCarrotOnPlateInScene-v1", model="pi05"), None)
    assert (args.noise_std_min, args.noise_std_max, args.update_epochs, args.num_envs) == (0.04, 0.10, 4, 256)
    assert fnp.resolve_args(fnp.Args(), None).logprob_reduction in ("sum", "mean")


def test_bad_flag_combinations_give_clear_errors():
    fnp.check_args(fnp.resolve_args(fnp.Args(model="tiny"), None), world_size=1, action_horizon=8)  # the preset is valid
    args = fnp.resolve_args(fnp.Args(model="tiny", noise_std_min=0.2, noise_std_max=0.1), None)
    with pytest.raises(ValueError, match="--noise-std-min"):
        fnp.check_args(args, world_size=1, action_horizon=8)
    args = fnp.resolve_args(fnp.Args(model="tiny", entropy_coef=-1.0), None)
    with pytest.raises(ValueError, match="--entropy-coef"):
        fnp.check_args(args, world_size=1, action_horizon=8)
    args = fnp.resolve_args(fnp.Args(model="tiny"), None)
    args.replan_steps = 20
    with pytest.raises(ValueError, match="--replan-steps"):
        fnp.check_args(args, world_size=1, action_horizon=8)
