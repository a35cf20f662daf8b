"""common/checkpoint.py, processor.py, tokenizer.py: users' checkpoint layouts load strictly; clear errors;
save -> load round trip; normalisation, image and prompt conventions of openpi."""
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from common.checkpoint import _config_from, load_policy, save_policy
from common.policy import PI0Policy, make_config
from common.processor import Processor, compute_norm_stats, resize_with_pad
from common.tokenizer import load_tokenizer, train_tiny_tokenizer

torch.set_num_threads(1)
TASKS = ["pick up the red cube", "open the top drawer", "put the bowl on the plate"]


def openpi_state_dict(c) -> dict:
    """Tensors named and shaped as openpi's converter writes them (examples/convert_jax_model_to_pytorch.py,
    saved with safetensors.save_model, so the tied PaliGemma embedding appears only as `lm_head`)."""
    g = torch.Generator().manual_seed(0)
    shapes = {}
    V = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
    p, Vw, Vm = c.patch_size, c.vision_width, c.vision_mlp_dim
    shapes[V + "embeddings.patch_embedding.weight"] = (Vw, 3, p, p)
    shapes[V + "embeddings.patch_embedding.bias"] = (Vw,)
    shapes[V + "embeddings.position_embedding.weight"] = ((c.image_size // p) ** 2, Vw)
    for i in range(c.vision_depth):
        L = f"{V}encoder.layers.{i}."
        for n in ("layer_norm1", "layer_norm2"):
            shapes[L + n + ".weight"] = shapes[L + n + ".bias"] = (Vw,)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[L + f"self_attn.{n}.weight"], shapes[L + f"self_attn.{n}.bias"] = (Vw, Vw), (Vw,)
        shapes[L + "mlp.fc1.weight"], shapes[L + "mlp.fc1.bias"] = (Vm, Vw), (Vm,)
        shapes[L + "mlp.fc2.weight"], shapes[L + "mlp.fc2.bias"] = (Vw, Vm), (Vw,)
    shapes[V + "post_layernorm.weight"] = shapes[V + "post_layernorm.bias"] = (Vw,)
    P = "paligemma_with_expert.paligemma."
    shapes[P + "model.multi_modal_projector.linear.weight"] = (c.vlm_width, Vw)
    shapes[P + "model.multi_modal_projector.linear.bias"] = (c.vlm_width,)
    shapes[P + "lm_head.weight"] = (c.vocab_size, c.vlm_width)
    E = "paligemma_with_expert.gemma_expert."
    shapes[E + "lm_head.weight"] = (c.vocab_size, c.expert_width)
    q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    for prefix, W, M, ada in ((P + "model.language_model.", c.vlm_width, c.vlm_mlp_dim, False),
                              (E + "model.", c.expert_width, c.expert_mlp_dim, c.variant == "pi05")):
        norms = [f"layers.{i}.{n}" for i in range(c.depth) for n in ("input_layernorm", "post_attention_layernorm")]
        for n in norms + ["norm"]:
            if ada:
                shapes[prefix + n + ".dense.weight"], shapes[prefix + n + ".dense.bias"] = (3 * W, W), (3 * W,)
            else:
                shapes[prefix + n + ".weight"] = (W,)
        for i in range(c.depth):
            L = f"{prefix}layers.{i}."
            shapes.update({L + "self_attn.q_proj.weight": (q, W), L + "self_attn.k_proj.weight": (kv, W),
                           L + "self_attn.v_proj.weight": (kv, W), L + "self_attn.o_proj.weight": (W, q),
                           L + "mlp.gate_proj.weight": (M, W), L + "mlp.up_proj.weight": (M, W),
                           L + "mlp.down_proj.weight": (W, M)})
    We, D = c.expert_width, c.action_dim
    heads = {"action_in_proj": (We, D), "action_out_proj": (D, We)}
    heads.update({"time_mlp_in": (We, We), "time_mlp_out": (We, We)} if c.variant == "pi05" else
                 {"state_proj": (We, D), "action_time_mlp_in": (We, 2 * We), "action_time_mlp_out": (We, We)})
    for n, s in heads.items():
        shapes[n + ".weight"], shapes[n + ".bias"] = s, (s[0],)
    return {k: torch.randn(s, generator=g) * 0.05 for k, s in shapes.items()}


def stats(S=5, A=4, seed=0):
    rng = np.random.default_rng(seed)
    return compute_norm_stats(rng.normal(size=(200, S)), rng.normal(size=(200, A)) * 2 + 1)


def write_checkpoint(tmp_path, preset, fmt):
    c = make_config(preset)
    sd = openpi_state_dict(c)
    d = tmp_path / fmt
    d.mkdir()
    train_tiny_tokenizer(TASKS, d / "tokenizer.model", c.vocab_size)
    meta = {"action_dim": c.action_dim, "action_horizon": c.action_horizon, "pirl": asdict(c)}
    if fmt == "openpi":
        save_file(sd, str(d / "model.safetensors"))
        (d / "assets" / "libero").mkdir(parents=True)
        (d / "assets" / "libero" / "norm_stats.json").write_text(json.dumps(stats()))
    elif fmt == "lerobot":
        save_file({"model." + k: v for k, v in sd.items()}, str(d / "model.safetensors"))
        meta["type"] = c.variant
        st = stats()["norm_stats"]
        save_file({f"{feat}.{s}": torch.tensor(st[key][s]) for feat, key in (("observation.state", "state"),
                                                                               ("action", "actions"))
                   for s in ("mean", "std", "q01", "q99")},
                  str(d / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    else:  # RLinf RL output: a DDP-wrapped torch state dict, openpi-layout norm stats under <asset_id>/
        extra_head = {"module.value_head.weight": torch.zeros(1, c.expert_width)}   # ignored: not the policy's
        torch.save({**{"module." + k: v for k, v in sd.items()}, **extra_head}, d / "full_weights.pt")
        (d / "libero").mkdir()
        (d / "libero" / "norm_stats.json").write_text(json.dumps(stats()))
    (d / "config.json").write_text(json.dumps(meta))
    return d, sd


@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
@pytest.mark.parametrize("fmt", ["openpi", "lerobot", "rlinf"])
def test_users_checkpoint_layouts_load_with_zero_missing_or_unexpected_keys(tmp_path, preset, fmt):
    d, sd = write_checkpoint(tmp_path, preset, fmt)
    policy, proc = load_policy(d)          # strict: raises on any missing / unexpected key
    assert policy.config.variant == make_config(preset).variant
    ours = policy.state_dict()
    for k, v in sd.items():
        torch.testing.assert_close(ours[k], v)
    pg = policy.paligemma_with_expert.paligemma
    assert pg.lm_head.weight is pg.model.language_model.embed_tokens.weight   # tie restored
    raw = {"images": np.zeros((2, 1, 40, 48, 3), np.uint8), "state": np.ones((2, 5), np.float32),
           "instruction": TASKS[:2], "task_id": np.zeros(2, np.int64)}
    a = policy.sample_actions(proc.observation(raw, "cpu"), num_steps=2)
    assert torch.isfinite(a).all() and proc.actions_to_env(a, 4).shape == (2, policy.config.action_horizon, 4)


def test_missing_files_and_wrong_keys_give_clear_errors(tmp_path):
    d, sd = write_checkpoint(tmp_path, "tiny", "openpi")
    (d / "tokenizer.model").rename(d / "elsewhere.model")
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        load_policy(d)
    (d / "elsewhere.model").rename(d / "tokenizer.model")
    (d / "assets" / "libero" / "norm_stats.json").unlink()
    with pytest.raises(FileNotFoundError, match="norm_stats.json"):
        load_policy(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_policy(d)
    bad = dict(sd)
    del bad["action_out_proj.bias"]
    bad["action_out_proj.extra"] = torch.zeros(1)
    save_file(bad, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=r"1 missing \(e.g. \['action_out_proj.bias'\]\), 1 unexpected"):
        load_policy(d)
    del bad["action_out_proj.extra"], bad["state_proj.weight"], bad["state_proj.bias"]
    with pytest.raises(ValueError, match="state_proj"):   # neither π0 nor π0.5 heads
        save_file(bad, str(d / "model.safetensors")) or load_policy(d)


def test_full_size_openpi_config_is_inferred_from_config_json_and_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"action_dim": 32, "action_horizon": 10, "paligemma_variant": "gemma_2b",
         "action_expert_variant": "gemma_300m", "precision": "bfloat16", "discrete_state_input": True}))
    sd = {"action_in_proj.weight": torch.empty(1024, 32, device="meta")}
    c = _config_from(tmp_path, sd, "pi05")
    assert (c.variant, c.action_dim, c.action_horizon, c.max_token_len, c.vlm_width) == ("pi05", 32, 10, 200, 2048)


@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_save_load_round_trip_is_exact_and_atomic(tmp_path, preset):
    c = make_config(preset)
    torch.manual_seed(0)
    policy = PI0Policy(c).eval()
    proc = Processor.from_stats(stats(), train_tiny_tokenizer(TASKS, tmp_path / "tok.model", c.vocab_size), c)
    save_policy(tmp_path / "ck", policy, proc, extra={"step": 3})
    save_policy(tmp_path / "ck", policy, proc, extra={"step": 4})   # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "tok.model", "tok.model.sha256"]
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["step"] == 4
    loaded, proc2 = load_policy(tmp_path / "ck")
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    raw = {"images": np.random.default_rng(0).integers(0, 255, (2, 2, 32, 32, 3), dtype=np.uint8),
           "state": np.ones((2, 5), np.float32), "instruction": TASKS[1:], "task_id": np.zeros(2, np.int64)}
    noise = torch.randn(2, c.action_horizon, c.action_dim)
    torch.testing.assert_close(loaded.eval().sample_actions(proc2.observation(raw, "cpu"), noise, 3),
                               policy.sample_actions(proc.observation(raw, "cpu"), noise, 3))


# ---- processor / tokenizer ---------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_action_normalisation_round_trip_and_padding(tmp_path, preset):
    c = make_config(preset)
    proc = Processor.from_stats(stats(), train_tiny_tokenizer(TASKS, tmp_path / "t.model", c.vocab_size), c)
    env_actions = np.random.default_rng(1).normal(size=(3, c.action_horizon, 4)).astype(np.float32)
    model_actions = proc.actions_to_model(env_actions)
    assert model_actions.shape == (3, c.action_horizon, c.action_dim) and (model_actions[..., 4:] == 0).all()
    np.testing.assert_allclose(proc.actions_to_env(model_actions, 4), env_actions, atol=1e-5)
    s = proc.norm_stats["norm_stats"]["actions"]
    x = np.array(s["q99"] if c.variant == "pi05" else s["mean"], np.float32)
    expected = 1.0 if c.variant == "pi05" else 0.0     # quantile: q99 -> +1; z-score: mean -> 0
    np.testing.assert_allclose(proc.actions_to_model(x)[:4].numpy(), expected, atol=1e-4)


def test_resize_with_pad_keeps_aspect_and_scales_to_unit_range():
    img = torch.full((1, 20, 40, 3), 255, dtype=torch.uint8)     # wide white image
    out = resize_with_pad(img, 32)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[:, :, 8:24], torch.ones(1)) and torch.allclose(out[:, :, :8], -torch.ones(1))


def test_prompt_formats_and_tiny_tokenizer_cache(tmp_path):
    tok = train_tiny_tokenizer(TASKS, tmp_path / "a.model", 512)
    again = train_tiny_tokenizer(TASKS, tmp_path / "b.model", 512)
    assert tok.model_proto == again.model_proto                      # deterministic
    tokens, mask = tok.tokenize("open_the top drawer", None, 32)      # π0: BOS text "\n"
    text = tok.sp.decode([int(t) for t in tokens[mask]])
    assert tokens[0] == 2 and text == "open the top drawer\n" and (tokens[~mask] == 0).all()
    tokens, mask = tok.tokenize("open the top drawer", np.array([-1.0, 0.0, 0.999]), 64)   # π0.5 discrete state
    assert tok.sp.decode([int(t) for t in tokens[mask]]) == "Task: open the top drawer, State: 0 128 255;\nAction: "
    tokens, mask = tok.tokenize("open the top drawer", np.zeros(8), 6)
    assert mask.all() and len(tokens) == 6                           # truncated to max_len
    (tmp_path / "ck").mkdir()
    (tmp_path / "a.model").rename(tmp_path / "ck" / "tokenizer.model")
    assert load_tokenizer(tmp_path / "ck").vocab_size == tok.vocab_size


def test_processor_prompt_per_variant_and_state_padding(tmp_path):
    tok = train_tiny_tokenizer(TASKS, tmp_path / "t.model", 512)
    raw = {"images": np.zeros((1, 1, 32, 32, 3), np.uint8), "state": np.array([[0.5, -0.5, 2.0]], np.float32),
           "instruction": [TASKS[0]], "task_id": np.zeros(1, np.int64)}
    text = {}
    for name, cfg in {"pi0": make_config("tiny"), "pi05": make_config("tiny-pi05"),
                      "pi05-no-state": make_config("tiny-pi05", discrete_state_input=False)}.items():
        obs = Processor.from_stats(stats(S=3), tok, cfg).observation(raw, "cpu")
        text[name] = tok.sp.decode([int(t) for t in obs.tokens[0][obs.token_masks[0]]])
        assert obs.state.shape == (1, cfg.action_dim) and (obs.state[0, 3:] == 0).all()
        assert obs.image_masks.tolist() == [[True, False]] and (obs.images[0, 1] == -1).all()  # absent camera
    assert text["pi0"] == text["pi05-no-state"] == TASKS[0] + "\n"
    assert text["pi05"].startswith(f"Task: {TASKS[0]}, State: ") and text["pi05"].endswith(";\nAction: ")
