"""common/groot.py: GR00T N1.5 behind PI0Policy's interface (shapes, cache index / repeat, batch independence, no
dropout outside SFT, the time conversion in closed form and its buckets, SFT learns, save / load round trip, the
tiny's head init lets x_t reach the DiT), and the tiny GR00T through the scripts' loading and SFT paths. Peer
parity: tests/test_peer_groot.py."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.groot import GrootPolicy, make_config
from common.groot_checkpoint import load_groot
from common.policy import Observation

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def make_obs(c, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Observation(
        images=torch.rand(B, c.num_cameras, 3, c.image_size, c.image_size, generator=g) * 2 - 1,
        image_masks=torch.ones(B, c.num_cameras, dtype=torch.bool),
        tokens=torch.randint(4, c.vocab_size - 1, (B, c.max_token_len), generator=g),
        token_masks=torch.arange(c.max_token_len)[None].expand(B, -1) < torch.tensor([9, 6, 3])[:B, None],
        state=torch.randn(B, c.state_dim, generator=g))


def make_policy(seed=0, **kw):
    torch.manual_seed(seed)
    m = GrootPolicy(make_config("tiny-groot", **kw)).eval()
    with torch.no_grad():   # zero-initialised biases / per-embodiment tables: randomise so every path is visible
        for name, p in m.named_parameters():
            if p.ndim == 1 or ".b" in name[-2:]:
                p.add_(0.1 * torch.randn_like(p))
    return m


def xt(c, B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, c.action_horizon, c.action_dim, generator=g), torch.rand(B, generator=g) * 0.9 + 0.05


@pytest.fixture(scope="module")
def policy():
    return make_policy()


@torch.no_grad()
def test_interface_shapes(policy):
    c = policy.config
    assert c.variant == "groot" and policy.expert_width == c.hidden_size and policy.vlm_width == c.backbone_embedding_dim
    cache = policy.encode(make_obs(c))
    x, t = xt(c)
    v, feats = policy.velocity(cache, x, t)
    assert v.shape == (3, c.action_horizon, c.action_dim) and v.dtype == torch.float32
    assert feats.shape == (3, c.action_horizon, policy.expert_width) and feats.dtype == torch.float32
    assert policy.prefix_features(cache).shape == (3, policy.vlm_width)
    assert policy.sample_actions(make_obs(c), x, num_steps=4).shape == x.shape
    assert cache.batch_size == 3


@torch.no_grad()
def test_cache_index_and_repeat_equal_encoding_those_rows(policy):
    c = policy.config
    obs = make_obs(c)
    cache = policy.encode(obs)
    x, t = xt(c, B=6)
    v_rep = policy.velocity(cache.repeat(2), x, t)[0]
    one = Observation(*(getattr(obs, f)[1:2] for f in ("images", "image_masks", "tokens", "token_masks", "state")))
    v_one = policy.velocity(policy.encode(one).repeat(2), x[2:4], t[2:4])[0]   # rows 2, 3 of the repeat: obs row 1
    assert (v_rep[2:4] - v_one).abs().max() < 1e-5
    v_idx = policy.velocity(cache.index(torch.tensor([2, 0])), x[:2], t[:2])[0]
    v_all = policy.velocity(cache, torch.stack([x[1], x[0], x[0]]), torch.stack([t[1], t[0], t[0]]))[0]
    assert (v_idx - v_all[[2, 0]]).abs().max() < 1e-5


@torch.no_grad()
def test_encode_obs_is_encode_tokens_with_image_slots_first(policy):
    """encode(obs) = GR00T's own input layout: [image tokens of each camera][prompt slots], padding kept."""
    c = policy.config
    obs = make_obs(c)
    P = c.image_tokens
    ids = torch.cat([torch.full((3, c.num_cameras * P), policy.image_token_index), obs.tokens], 1)
    mask = torch.cat([torch.ones(3, c.num_cameras * P, dtype=torch.bool), obs.token_masks], 1)
    a = policy.encode(obs)
    b = policy.encode_tokens(ids, mask, obs.images.flatten(0, 1), obs.state)
    assert torch.equal(a.vl, b.vl) and torch.equal(a.state, b.state)


def test_velocity_has_no_dropout_in_train_mode_but_sft_does():
    """Appendix C.1: dropout would change the policy between rollout and update (ratio != 1): velocity() is the
    same in train() and eval(); GR00T's dropout acts only in sft_loss (train mode)."""
    policy = make_policy()
    c = policy.config
    obs, (x, t) = make_obs(c), xt(c)
    policy.train()
    cache = policy.encode(obs)
    v1, v2 = policy.velocity(cache, x, t)[0], policy.velocity(policy.encode(obs), x, t)[0]
    policy.eval()
    v3 = policy.velocity(policy.encode(obs), x, t)[0]
    assert torch.equal(v1, v2) and torch.equal(v1, v3)
    a = torch.randn(3, c.action_horizon, c.action_dim)
    policy.train()
    l1, l2 = (policy.sft_loss(obs, a, noise=x, time=t).item() for _ in range(2))
    policy.eval()
    l3, l4 = (policy.sft_loss(obs, a, noise=x, time=t).item() for _ in range(2))
    assert l1 != l2 and l3 == l4


def test_time_conversion_closed_form_and_buckets(policy):
    """Ours: x_t = t n + (1-t) a, v = n - a. GR00T: x_τ = (1-τ) n + τ a, pred = a - n. With τ = 1 - t the
    points agree and v = -pred; an exact velocity field integrates to the action in either convention."""
    g = torch.Generator().manual_seed(3)
    n, a = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    for t in (0.0, 0.25, 0.6, 1.0):
        tau = 1.0 - t
        assert torch.allclose(t * n + (1 - t) * a, (1 - tau) * n + tau * a, atol=1e-6)
    # our Euler x <- x - Δ v from t = 1 with v = n - a lands on a; GR00T's x += Δ pred from τ = 0 too
    x_ours, x_groot, K = n.clone(), n.clone(), 4
    for _ in range(K):
        x_ours, x_groot = x_ours - (n - a) / K, x_groot + (a - n) / K
    assert torch.allclose(x_ours, a, atol=1e-5) and torch.allclose(x_groot, a, atol=1e-5)
    # our fp32 grid t = 1 - k/K maps to GR00T's get_action bucket int(k/K · 1000), for every K the scripts use
    for K in (1, 2, 3, 4, 5, 7, 10, 16, 50):
        ours = policy.buckets(torch.tensor([1.0 - k * (1.0 / K) for k in range(K)], dtype=torch.float32))
        assert ours.tolist() == [int(k / K * 1000) for k in range(K)], K
    # and t in (0, 1] stays inside the 1000 buckets
    assert policy.buckets(torch.tensor([1e-6, 1.0])).tolist() == [999, 0]


@torch.no_grad()
def test_velocity_is_minus_groot_prediction(policy):
    c = policy.config
    cache = policy.encode(make_obs(c))
    x, t = xt(c)
    v, _ = policy.velocity(cache, x, t)
    pred, _ = policy.groot_velocity(cache, x, torch.floor((1 - t.double()) * 1000 + 1e-3).long())
    assert torch.equal(v, -pred)


def test_embodiment_selects_its_own_heads():
    p = make_policy()
    c = p.config
    obs, (x, t) = make_obs(c), xt(c)
    with torch.no_grad():
        v31 = p.velocity(p.encode(obs), x, t)[0]
        p.config.embodiment = 2
        v2 = p.velocity(p.encode(obs), x, t)[0]
    assert (v31 - v2).abs().max() > 1e-3


def test_sft_loss_decreases_and_freeze_vlm():
    p = make_policy()
    c = p.config
    obs = make_obs(c)
    a = torch.randn(3, c.action_horizon, c.action_dim) * 0.5
    p.freeze_vlm()
    assert not any(q.requires_grad for q in p.backbone.parameters())
    params = [q for q in p.parameters() if q.requires_grad]
    assert params and all(n.startswith("action_head.") for n, q in p.named_parameters() if q.requires_grad)
    opt = torch.optim.Adam(params, lr=3e-3)
    g = torch.Generator().manual_seed(0)
    noise, t = torch.randn(a.shape, generator=g), torch.rand(3, generator=g)
    p.train()
    losses = []
    for _ in range(30):
        loss = p.sft_loss(obs, a, noise=noise, time=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_save_load_round_trip(tmp_path):
    from common.checkpoint import load_policy, save_policy
    from common.processor import Processor, compute_norm_stats
    from common.tokenizer import train_tiny_tokenizer
    p = make_policy(embodiment=5)
    tok = train_tiny_tokenizer(["open the drawer", "close the drawer"], tmp_path / "tok.model", vocab_size=p.config.vocab_size)
    rng = np.random.default_rng(0)
    proc = Processor.from_stats(compute_norm_stats(rng.normal(size=(20, 4)), rng.normal(size=(20, 3))), tok, p.config)
    save_policy(tmp_path / "ckpt", p, proc)
    q, proc2 = load_policy(tmp_path / "ckpt")
    assert isinstance(q, GrootPolicy) and q.config.embodiment == 5 and q.config.max_token_len == p.config.max_token_len
    assert proc2.norm_stats == proc.norm_stats
    raw = {"images": rng.integers(0, 255, (2, 1, 32, 32, 3), dtype=np.uint8), "state": rng.normal(size=(2, 4)).astype(np.float32),
           "instruction": ["open the drawer", "close the drawer"], "task_id": np.zeros(2, np.int64)}
    x = torch.randn(2, p.config.action_horizon, p.config.action_dim)
    with torch.no_grad():
        assert torch.equal(p.sample_actions(proc.observation(raw, "cpu"), x, 4), q.sample_actions(proc2.observation(raw, "cpu"), x, 4))
    assert set(load_groot(tmp_path / "ckpt").state_dict()) == set(p.state_dict())
    # the scripts' --embodiment: another head of the same checkpoint, by tag or by id
    assert load_policy(tmp_path / "ckpt", embodiment="so100")[0].config.embodiment == 2
    assert load_policy(tmp_path / "ckpt", embodiment="7")[0].config.embodiment == 7


def test_bf16_vlm_keeps_the_head_fp32():
    p = make_policy()
    c = p.config
    obs, (x, t) = make_obs(c), xt(c)
    with torch.no_grad():
        v32 = p.velocity(p.encode(obs), x, t)[0]
        p.set_vlm_dtype(torch.bfloat16)
        v16, f16 = p.velocity(p.encode(obs), x, t)
    assert v16.dtype == f16.dtype == torch.float32 and p.action_head.vlln.weight.dtype == torch.float32
    assert (v16 - v32).abs().max() < 0.1 * v32.abs().max()


def test_lerobot_dir_without_its_base_config_is_one_clear_error(tmp_path):
    import shutil
    fix = ROOT / "tests" / "fixtures" / "peers" / "groot"
    shutil.copytree(fix / "lerobot", tmp_path / "lerobot")
    cfg = tmp_path / "lerobot" / "config.json"
    cfg.write_text(cfg.read_text().replace('"base_model_path": "', '"base_model_path": "/nonexistent'))
    with pytest.raises(ValueError, match="base_config"):
        load_groot(tmp_path / "lerobot", eagle_config=fix / "eagle" / "config.json")


def test_ppo_logprob_is_the_same_in_two_update_passes():
    """Appendix C.1 with the script's own step_logprob: in train() mode (the update) two passes over the same
    stored transition give the same log-prob as the rollout (eval) pass, so the first PPO ratio is exactly 1."""
    from types import SimpleNamespace

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import load_script
    step_logprob = load_script("flow_sde_ppo").step_logprob
    p = make_policy()
    c = p.config
    obs = make_obs(c)
    args = SimpleNamespace(denoise_steps=4, noise_level=0.5, replan_steps=4)
    x_j, x_next = torch.randn(3, c.action_horizon, c.action_dim), torch.randn(3, c.action_horizon, c.action_dim)
    j = torch.tensor([0, 1, 3])
    with torch.no_grad():
        p.eval()
        rollout = step_logprob(p, p.encode(obs), x_j, x_next, j, args, 4)[0]
    p.train()
    update = [step_logprob(p, p.encode(obs), x_j, x_next, j, args, 4)[0] for _ in range(2)]
    assert torch.equal(update[0], update[1]) and torch.equal(update[0].detach(), rollout)


def _head_sees(p: GrootPolicy) -> tuple[float, float]:
    """How much of an action token entering the DiT (action_encoder(x, τ) + position embedding) changes when x
    changes (relative norm), and the flow loss 200 Adam steps of the head reach on two fixed chunks (fresh noise
    and time every step)."""
    c, ah = p.config, p.action_head
    g = torch.Generator().manual_seed(0)
    x1, x2 = (torch.randn(16, c.action_horizon, c.action_dim, generator=g) for _ in range(2))
    b, e = torch.randint(0, c.num_timestep_buckets, (16,), generator=g), torch.full((16,), c.embodiment)
    with torch.no_grad():
        t1, t2 = (ah.action_encoder(x, b, e) + ah.position_embedding.weight[: c.action_horizon] for x in (x1, x2))
    share = ((t1 - t2).norm(dim=-1) / t1.norm(dim=-1)).mean().item()
    # one fixed action chunk per observation: a head blind to x_t cannot beat E|noise|² = 1
    p.freeze_vlm()
    obs = make_obs(c, B=2)
    a = torch.randn(2, c.action_horizon, c.action_dim, generator=g).clamp(-1.5, 1.5)
    cache = p.encode(obs).detach()
    opt = torch.optim.Adam([q for q in p.parameters() if q.requires_grad], lr=1e-3)
    rows = torch.arange(16) % 2
    losses = []
    for _ in range(200):
        noise, t = torch.randn(16, *a.shape[1:], generator=g), torch.rand(16, generator=g) * 0.999 + 0.001
        loss = p.flow_loss(cache.index(rows), a[rows], noise, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return share, float(np.mean(losses[-20:]))


def test_tiny_head_init_lets_sft_learn_to_denoise():
    """The tiny's fix for its few-shot SFT (embedded default: loss 1.16 -> 0.38, held-out 4% -> 58%): N1.5's 0.02
    init of the per-embodiment linears is ≈ 1/√fan_in at N1.5's widths but a gain of 0.16 per layer at the tiny's
    64, so x_t reached the DiT at a few % of its action tokens and SFT learnt a head blind to x_t (loss >= 1). The
    tiny inits them at 1/√fan_in (category_init_std=None); future tokens and position embedding are N1.5's
    N(0, 0.02²) in every preset."""
    torch.manual_seed(0)
    tiny = GrootPolicy(make_config("tiny-groot"))
    torch.manual_seed(0)
    n15 = GrootPolicy(make_config("tiny-groot", category_init_std=0.02))
    assert make_config("groot").category_init_std == 0.02 and tiny.config.category_init_std is None
    for p in (tiny, n15):
        ah = p.action_head
        assert abs(ah.future_tokens.weight.std().item() - 0.02) < 0.004
        assert abs(ah.position_embedding.weight.std().item() - 0.02) < 0.004
    fan_in = tiny.action_head.action_encoder.W2.W.shape[1]
    assert abs(tiny.action_head.action_encoder.W2.W.std().item() - fan_in ** -0.5) < 0.1 * fan_in ** -0.5
    assert abs(n15.action_head.action_encoder.W2.W.std().item() - 0.02) < 0.002
    share_tiny, loss_tiny = _head_sees(tiny)
    share_n15, loss_n15 = _head_sees(n15)
    assert share_tiny > 0.5 and share_n15 < 0.1, (share_tiny, share_n15)
    assert loss_tiny < 0.45 and loss_n15 > 0.55, (loss_tiny, loss_n15)   # measured 0.28 and 0.72


# nvidia/GR00T-N1.5-3B's released config.json, the action head's and backbone's sizes (as public copies of the file
# show it; nothing is downloaded here). Isaac-GR00T's code defaults differ: project_to_dim 1536, E_vl 1536.
N15_RELEASED = dict(
    action_head_cfg=dict(action_dim=32, action_horizon=16, add_pos_embed=True, backbone_embedding_dim=2048,
                         hidden_size=1024, input_embedding_dim=1536, max_action_dim=32, max_state_dim=64,
                         num_inference_timesteps=4, num_target_vision_tokens=32, num_timestep_buckets=1000,
                         noise_beta_alpha=1.5, noise_beta_beta=1.0, noise_s=0.999, use_vlln=True,
                         diffusion_model_cfg=dict(attention_head_dim=48, cross_attention_dim=2048, dropout=0.2,
                                                  final_dropout=True, interleave_self_attention=True,
                                                  num_attention_heads=32, num_layers=16, output_dim=1024,
                                                  positional_embeddings=None),
                         vl_self_attention_cfg=dict(attention_head_dim=64, dropout=0.2, final_dropout=True,
                                                    num_attention_heads=32, num_layers=4, positional_embeddings=None)),
    backbone_cfg=dict(project_to_dim=None, select_layer=12))


def test_a_head_config_with_positional_embeddings_is_one_value_error_naming_the_key():
    """N1.5's DiT and VL blocks have no positional embeddings; a config that asks for them is another model: the load
    stops with one ValueError naming the key (an `error:` line in the scripts), not a NotImplementedError traceback."""
    from common.groot_checkpoint import config_from
    ah = {**N15_RELEASED["action_head_cfg"], "diffusion_model_cfg": {**N15_RELEASED["action_head_cfg"]["diffusion_model_cfg"],
                                                                     "positional_embeddings": "sinusoidal"}}
    with pytest.raises(ValueError, match=r"diffusion_model_cfg\.positional_embeddings='sinusoidal'"):
        config_from({}, ah, N15_RELEASED["backbone_cfg"], {})


def test_groot_preset_has_the_released_n15_sizes_and_loads_them_without_a_head_config():
    """The full-size preset is N1.5-3B as released (no eagle_linear, E_vl 2048, VL attention 32 x 64), and a dir whose
    config holds no action_head_cfg (a LeRobot 0.5.1 dir without its base model's config) gets the same heads from the
    weights: with the code defaults' 48-wide VL heads, 2048 does not split and the load failed."""
    from common.groot_checkpoint import config_from
    ah, bb = N15_RELEASED["action_head_cfg"], N15_RELEASED["backbone_cfg"]
    c = make_config("groot")
    assert (c.action_dim, c.state_dim, c.action_horizon) == (ah["max_action_dim"], ah["max_state_dim"], ah["action_horizon"])
    assert (c.project_to_dim, c.llm_depth) == (bb["project_to_dim"], bb["select_layer"])
    assert (c.backbone_embedding_dim, c.hidden_size, c.input_embedding_dim) == (2048, 1024, 1536)
    dit, vl = ah["diffusion_model_cfg"], ah["vl_self_attention_cfg"]
    assert (c.dit_heads, c.dit_head_dim, c.dit_layers) == (dit["num_attention_heads"], dit["attention_head_dim"], dit["num_layers"])
    assert (c.vl_heads, c.vl_head_dim, c.vl_layers) == (vl["num_attention_heads"], vl["attention_head_dim"], vl["num_layers"])
    assert (c.num_target_vision_tokens, c.num_inference_timesteps, c.num_timestep_buckets) == (32, 4, 1000)
    with torch.device("meta"):
        sd = GrootPolicy(c).state_dict()
    assert "backbone.eagle_linear.weight" not in sd
    assert sd["action_head.model.transformer_blocks.0.attn1.to_k.weight"].shape == (1536, dit["cross_attention_dim"])
    for head_cfg in (ah, {}):   # the released config, and none (sizes and N1.5's head widths from the weights)
        loaded = config_from(sd, head_cfg, bb, {"vision_config": {"num_attention_heads": c.vision_heads}})
        for field in ("project_to_dim", "backbone_embedding_dim", "hidden_size", "input_embedding_dim", "vl_heads",
                      "vl_head_dim", "vl_layers", "dit_heads", "dit_head_dim", "dit_layers", "llm_depth", "action_dim"):
            assert getattr(loaded, field) == getattr(c, field), (field, head_cfg.keys())
