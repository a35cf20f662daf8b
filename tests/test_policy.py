"""common/policy.py: parity with transformers' own PI0, KV-cache exactness, masking, conditioning, SFT."""
import pytest
import torch
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

from common.checkpoint import load_state_dict_checked, normalize_keys
from common.policy import AdaRMSNorm, Observation, PI0Policy, make_config

torch.set_num_threads(1)


def make_obs(c, B=3, seed=0, n_valid=10):
    g = torch.Generator().manual_seed(seed)
    return Observation(
        images=torch.rand(B, c.num_cameras, 3, c.image_size, c.image_size, generator=g) * 2 - 1,
        image_masks=torch.ones(B, c.num_cameras, dtype=torch.bool),
        tokens=torch.randint(4, c.vocab_size - 1, (B, c.max_token_len), generator=g),
        token_masks=torch.arange(c.max_token_len)[None].expand(B, -1) < torch.tensor([n_valid, n_valid - 3, 5])[:B, None],
        state=torch.randn(B, c.action_dim, generator=g))


def make_policy(preset, seed=0):
    torch.manual_seed(seed)
    m = PI0Policy(make_config(preset)).eval()
    with torch.no_grad():   # openpi zero-inits adaRMS dense weights; randomise them so conditioning is visible
        for name, p in m.named_parameters():
            if "dense" in name or "norm" in name:
                p.normal_(0, 0.1)
    return m


def xt(c, B=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, c.action_horizon, c.action_dim, generator=g), torch.rand(B, generator=g) * 0.9 + 0.05


# ---- parity with transformers.models.pi0 ---------------------------------------------------------
def hf_pi0_to_lerobot_keys(sd: dict) -> dict:
    """Invert transformers' `pi0` conversion mapping (conversion_mapping.py) to get LeRobot hub keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith("model.vlm.language_model.embed_tokens."):
            k = "paligemma_with_expert.paligemma.lm_head." + k.rsplit(".", 1)[1]
        elif k.startswith("model.dit.embed_tokens."):
            k = "paligemma_with_expert.gemma_expert.lm_head." + k.rsplit(".", 1)[1]
        elif k.startswith("model.vlm.vision_tower."):   # openpi / LeRobot keep SigLIP's `vision_model` level
            k = "paligemma_with_expert.paligemma.model.vision_tower.vision_model." + k[len("model.vlm.vision_tower."):]
        elif k.startswith("model.vlm."):
            k = "paligemma_with_expert.paligemma.model." + k[len("model.vlm."):]
        elif k.startswith("model.dit."):
            k = "paligemma_with_expert.gemma_expert.model." + k[len("model.dit."):]
        elif k.startswith("embed_action_time."):
            k = k[len("embed_action_time."):]
        out["model." + k] = v   # LeRobot stores PI0Pytorch under `model.`
    return out


def test_matches_transformers_pi0_velocity_and_sampled_actions():
    """Same weights (through LeRobot's key names), same inputs and noise -> same velocity and actions.
    Differences by design: transformers places image features at image-token ids in input_ids (we
    concatenate [images][text] as openpi), and computes the time embedding in fp32 (openpi/ours: fp64)."""
    from transformers import PI0Config as HFConfig, PI0ForConditionalGeneration

    c = make_config("tiny")
    text = dict(model_type="gemma", hidden_size=c.vlm_width, intermediate_size=c.vlm_mlp_dim, num_hidden_layers=c.depth,
                num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                vocab_size=c.vocab_size)
    vision = dict(model_type="siglip_vision_model", hidden_size=c.vision_width, intermediate_size=c.vision_mlp_dim,
                  num_hidden_layers=c.vision_depth, num_attention_heads=c.vision_heads, patch_size=c.patch_size,
                  image_size=c.image_size, vision_use_head=False)
    hf_cfg = HFConfig(
        vlm_config=dict(model_type="paligemma", text_config=text, vision_config=vision, projection_dim=c.vlm_width,
                        image_token_id=c.vocab_size - 1),
        dit_config=dict(model_type="gemma", hidden_size=c.expert_width, intermediate_size=c.expert_mlp_dim,
                        num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
                        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim),
        chunk_size=c.action_horizon, max_state_dim=c.action_dim, max_action_dim=c.action_dim)
    torch.manual_seed(0)
    hf = PI0ForConditionalGeneration(hf_cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.1)

    ours = PI0Policy(c).eval()
    load_state_dict_checked(ours, normalize_keys(hf_pi0_to_lerobot_keys(hf.state_dict())), "transformers PI0")

    obs = make_obs(c)
    B = obs.state.shape[0]
    n_img = c.num_cameras * (c.image_size // c.patch_size) ** 2
    input_ids = torch.cat([torch.full((B, n_img), c.vocab_size - 1), obs.tokens], 1)
    attention_mask = torch.cat([obs.image_masks.repeat_interleave(n_img // c.num_cameras, 1), obs.token_masks], 1)
    x, t = xt(c)
    with torch.no_grad():
        v_hf = hf(state=obs.state, noise=x, timestep=t, input_ids=input_ids, pixel_values=obs.images,
                  pixel_attention_mask=obs.image_masks, attention_mask=attention_mask.long()).logits
        v_ours, _ = ours.velocity(ours.encode(obs), x, t)
        torch.testing.assert_close(v_ours, v_hf, atol=1e-4, rtol=1e-4)
        a_hf = hf.sample_actions(state=obs.state, input_ids=input_ids, pixel_values=obs.images, noise=x,
                                 attention_mask=attention_mask.long(), pixel_attention_mask=obs.image_masks,
                                 num_steps=5)
        a_ours = ours.sample_actions(obs, noise=x, num_steps=5)
    torch.testing.assert_close(a_ours, a_hf, atol=1e-4, rtol=1e-4)


# ---- KV cache, masks, conditioning -----------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_cached_suffix_pass_equals_full_joint_pass(preset):
    m = make_policy(preset)
    obs = make_obs(m.config)
    x, t = xt(m.config)
    with torch.no_grad():
        v_cache, f_cache = m.velocity(m.encode(obs), x, t)
        v_full, f_full = m.velocity_full(obs, x, t)
    torch.testing.assert_close(v_cache, v_full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f_cache, f_full, atol=1e-5, rtol=1e-5)
    assert v_cache.dtype == f_cache.dtype == torch.float32 and f_cache.shape[-1] == m.expert_width


@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_padded_tokens_and_masked_cameras_change_nothing(preset):
    m = make_policy(preset)
    obs = make_obs(m.config)
    x, t = xt(m.config)
    with torch.no_grad():
        v = m.velocity(m.encode(obs), x, t)[0]
        tokens = obs.tokens.clone()
        tokens[~obs.token_masks] = 7                      # rewrite every padded token
        obs2 = Observation(obs.images, obs.image_masks, tokens, obs.token_masks, obs.state)
        torch.testing.assert_close(m.velocity(m.encode(obs2), x, t)[0], v, atol=1e-5, rtol=1e-5)
        masks = obs.image_masks.clone()
        masks[:, 1] = False                               # hide camera 1, then change its pixels
        base = m.velocity(m.encode(Observation(obs.images, masks, obs.tokens, obs.token_masks, obs.state)), x, t)[0]
        images = obs.images.clone()
        images[:, 1] = -images[:, 1]
        moved = m.velocity(m.encode(Observation(images, masks, obs.tokens, obs.token_masks, obs.state)), x, t)[0]
    torch.testing.assert_close(moved, base, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_image_prompt_state_and_time_change_the_output(preset):
    m = make_policy(preset)
    obs = make_obs(m.config)
    x, t = xt(m.config)

    def v(o, tt=t):
        with torch.no_grad():
            return m.velocity(m.encode(o), x, tt)[0]

    base = v(obs)
    images = obs.images.clone()
    images[:, 0] = images[:, 0].flip(-1)
    tokens = obs.tokens.clone()
    tokens[:, 2] = (tokens[:, 2] + 1) % (m.config.vocab_size - 1)
    changed = {"image": v(Observation(images, obs.image_masks, obs.tokens, obs.token_masks, obs.state)),
               "prompt": v(Observation(obs.images, obs.image_masks, tokens, obs.token_masks, obs.state)),
               "time": v(obs, t * 0.5)}
    if m.config.variant == "pi0":   # π0.5 reads the state from the prompt, never from obs.state
        changed["state"] = v(Observation(obs.images, obs.image_masks, obs.tokens, obs.token_masks, obs.state + 1))
    for name, out in changed.items():
        assert (out - base).abs().amax(dim=(1, 2)).min() > 1e-4, f"changing the {name} did not change v"
    if m.config.variant == "pi05":
        same = v(Observation(obs.images, obs.image_masks, obs.tokens, obs.token_masks, obs.state + 1))
        torch.testing.assert_close(same, base)


def test_adarms_zero_conditioning_is_plain_rmsnorm_and_is_active_in_pi05():
    torch.manual_seed(0)
    W = 16
    ada, plain = AdaRMSNorm(W, 8), GemmaRMSNorm(W)
    with torch.no_grad():
        plain.weight.normal_()
        ada.dense.weight.zero_()                                           # no conditioning
        ada.dense.bias.copy_(torch.cat([plain.weight, torch.zeros(W), torch.ones(W)]))  # scale=w, shift=0, gate=1
    x, cond = torch.randn(2, 5, W), torch.randn(2, 8)
    y, gate = ada(x, cond)
    torch.testing.assert_close(y, plain(x))
    torch.testing.assert_close(gate, torch.ones(2, 1, W))
    # in the model: the expert's norms are adaRMS and their conditioning weights act on v
    m = make_policy("tiny-pi05")
    assert isinstance(m.paligemma_with_expert.gemma_expert.model.norm, AdaRMSNorm)
    obs, (x, t) = make_obs(m.config), xt(m.config)
    with torch.no_grad():
        cache = m.encode(obs)
        before = m.velocity(cache, x, t)[0]
        m.paligemma_with_expert.gemma_expert.model.layers[0].input_layernorm.dense.weight.zero_()
        after = m.velocity(cache, x, t)[0]
    assert (before - after).abs().max() > 1e-4


# ---- cache helpers, gradients, dtypes ----------------------------------------------------------------
def test_cache_repeat_and_index_match_repeated_observations():
    m = make_policy("tiny")
    obs = make_obs(m.config)
    cache = m.encode(obs).repeat(2)                          # rows 0,0,1,1,2,2
    x, t = xt(m.config, B=6)
    with torch.no_grad():
        v = m.velocity(cache, x, t)[0]
        v1 = m.velocity(cache.index(torch.tensor([2, 3])), x[2:4], t[2:4])[0]
        ref = m.velocity(m.encode(obs).index(torch.tensor([1, 1])), x[2:4], t[2:4])[0]
    torch.testing.assert_close(v[2:4], ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v1, ref, atol=1e-5, rtol=1e-5)
    assert m.prefix_features(cache).shape == (6, m.vlm_width)


def test_velocity_is_differentiable_wrt_expert_and_freeze_vlm_blocks_vlm_grads():
    m = make_policy("tiny-pi05")
    m.freeze_vlm()
    obs, (x, t) = make_obs(m.config), xt(m.config)
    with torch.no_grad():
        cache = m.encode(obs)
    v, feats = m.velocity(cache, x, t)
    (v.square().mean() + feats.mean()).backward()
    expert_grads = [p.grad for n, p in m.named_parameters() if "gemma_expert.model" in n or "action_" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in expert_grads)
    assert all(p.grad is None for p in m.paligemma_with_expert.paligemma.parameters())


def test_bf16_vlm_keeps_fp32_outputs():
    m = make_policy("tiny")
    obs, (x, t) = make_obs(m.config), xt(m.config)
    with torch.no_grad():
        v32 = m.velocity(m.encode(obs), x, t)[0]
        m.set_vlm_dtype(torch.bfloat16)
        cache = m.encode(obs)
        v16, f16 = m.velocity(cache, x, t)
    assert cache.keys[0].dtype == torch.bfloat16 and v16.dtype == f16.dtype == torch.float32
    assert m.action_out_proj.weight.dtype == torch.float32
    assert (v16 - v32).abs().max() < 0.1 * v32.abs().max()


def test_sample_actions_is_deterministic_euler():
    m = make_policy("tiny")
    obs, (x, _) = make_obs(m.config), xt(m.config)
    a = m.sample_actions(obs, noise=x, num_steps=3)
    with torch.no_grad():   # by hand: x_{t-Δ} = x_t - Δ v(x_t, t), t = 1, 2/3, 1/3
        cache, y = m.encode(obs), x.clone()
        for tt in (1.0, 2 / 3, 1 / 3):
            y = y - m.velocity(cache, y, torch.full((3,), tt))[0] / 3
    torch.testing.assert_close(a, y)
    torch.testing.assert_close(m.sample_actions(obs, noise=x, num_steps=3), a)


def test_sft_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    m = PI0Policy(make_config("tiny")).train()
    obs = make_obs(m.config)
    g = torch.Generator().manual_seed(3)
    actions = torch.randn(3, m.config.action_horizon, m.config.action_dim, generator=g).clamp(-1, 1)
    noise = torch.randn(actions.shape, generator=g)
    time = torch.rand(3, generator=g)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(30):
        loss = m.sft_loss(obs, actions, noise=noise, time=time)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert torch.isfinite(m.sft_loss(obs, actions))   # default Beta(1.5, 1) time and Gaussian noise


def test_bad_preset_and_variant_name_allowed_values():
    with pytest.raises(ValueError, match="tiny-pi05"):
        make_config("small")
    with pytest.raises(ValueError, match="'pi0', 'pi05'"):
        make_config("tiny", variant="pi1")


# ---- grouped-query attention without repeating the KV heads ---------------------------------------
def _outputs_and_grads(m, c, obs):
    x, t = xt(c)
    m.zero_grad(set_to_none=True)
    cache = m.encode(obs)
    v, feats = m.velocity(cache, x, t)
    v_full, _ = m.velocity_full(obs, x, t)
    (v.square().mean() + v_full.square().mean()).backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    actions = m.sample_actions(obs, noise=torch.randn(3, c.action_horizon, c.action_dim,
                                                      generator=torch.Generator().manual_seed(5)), num_steps=4)
    return [v.detach(), feats.detach(), v_full.detach(), actions], grads


@pytest.mark.parametrize("preset,overrides", [("tiny", {}), ("tiny-pi05", {}), ("tiny", dict(num_heads=4, num_kv_heads=2))])
def test_grouped_kv_attention_equals_the_repeated_kv_attention(preset, overrides, monkeypatch):
    """The KV heads are no longer repeated to every query head (a stride-0 expand for one KV head, SDPA's
    enable_gqa for several): velocities (cached and joint pass), sampled actions and every gradient are
    those of the previous repeat_interleave code, to float tolerance."""
    import common.policy as policy_module

    torch.manual_seed(0)
    m = PI0Policy(make_config(preset, **overrides))
    obs = make_obs(m.config)
    new_out, new_grads = _outputs_and_grads(m, m.config, obs)
    monkeypatch.setattr(policy_module, "GROUPED_KV", False)
    old_out, old_grads = _outputs_and_grads(m, m.config, obs)
    for a, b in zip(new_out, old_out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert new_grads.keys() == old_grads.keys() and len(new_grads) > 10
    for k in new_grads:
        torch.testing.assert_close(new_grads[k], old_grads[k], rtol=1e-4, atol=1e-6, msg=k)


def test_grouped_kv_attention_saves_less_for_backward(monkeypatch):
    """The expert pass with gradient keeps fewer bytes for the backward: the repeated prefix keys/values
    (heads x Nk x hd per layer) are gone; what is left of the attention is one KV head."""
    import common.policy as policy_module

    torch.manual_seed(0)
    c = make_config("tiny", num_heads=8, num_kv_heads=1)
    m = PI0Policy(c)
    m.freeze_vlm()
    obs = make_obs(c)
    with torch.no_grad():
        cache = m.encode(obs)
    x, t = xt(c)

    def saved_bytes():
        seen = {}

        def pack(tensor):
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor
        params = {p.untyped_storage().data_ptr() for p in m.parameters()}
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            m.velocity(cache, x, t)
        return sum(n for ptr, n in seen.items() if ptr not in params)

    grouped = saved_bytes()
    monkeypatch.setattr(policy_module, "GROUPED_KV", False)
    repeated = saved_bytes()
    B, (Lp, Ls) = 3, (cache.pad_mask.shape[1], c.action_horizon + 1)
    # the repeated fp32 k and v (heads of them) were kept; now the one KV head they were made from is
    saved_less = c.depth * 2 * B * (c.num_heads - c.num_kv_heads) * (Lp + Ls) * c.head_dim * 4
    assert repeated - grouped == saved_less
    assert grouped < 0.6 * repeated
