"""Peer fixtures written by LeRobot 0.5.1's OWN GR00T N1.5 code: a tiny random checkpoint + reference outputs.

LeRobot 0.6.x replaced GR00T N1.5 by N1.7 (its docs: "pin lerobot==0.5.1" for N1.5), and 0.5.1 needs
Python >= 3.12 and torch < 2.11, so it runs in a venv of its own (made by tools/peers/groot_peer.sh, which
then runs this file). Nothing here imports pirl's code.

    bash tools/peers/groot_peer.sh                       # venv + fixtures into tests/fixtures/peers/groot

What is written to <out>/ (tests/test_peer_groot.py reads it):
  eagle/config.json     the tiny Eagle 2.5 VL config (SigLIP + Qwen3) that LeRobot's EagleBackbone read from
                        its cache dir ($HF_LEROBOT_HOME/lerobot/eagle2hg-processor-groot-n1p5), as real users'
                        caches hold the full-size one
  base/                 GR00TN15.save_pretrained (the Isaac-GR00T / HF layout: config.json with backbone_cfg and
                        action_head_cfg, model.safetensors with keys backbone.* / action_head.*)
  lerobot/              LeRobot's GrootPolicy.save_pretrained (config.json "type": "groot", model.safetensors with
                        keys _groot_model.*) plus its pre/post processor files (min/max stats)
  reference.safetensors inputs (eagle input ids, attention mask, pixel values, padded state, fixed noise) and
                        the peer's outputs: per-step (x, timestep bucket, velocity) of get_action with 4 and 10
                        denoising steps (read by hooks on its own modules), its sampled actions, the same for a
                        second embodiment id, and its training loss for fixed (actions, noise, t)
  reference.json        ids, steps, embodiment ids, versions

Tiny sizes (what the real N1.5 has in brackets): SigLIP 16 wide, 2 layers, 32 px, patch 8 (1152, 27, 224, 14),
pixel shuffle 0.5 and a 2-layer MLP connector as N1.5; Qwen3 32 wide, 3 layers of which the backbone keeps
select_layer=2 (2048, 28 -> 12); DiT 2 layers x 2 heads x 8 (16 x 32 x 48); 4 future tokens (32), H = 4 (16),
action / state dims 8 (32 / 64), 32 embodiments as N1.5. Weights are random (every parameter redrawn, so
no zero-initialised layer hides a bug).

The one run-time setting changed on the peer's model: its SigLIP asks for flash_attention_2 (a CUDA kernel);
on this CPU it is switched to SDPA, the same function.
"""
import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

EAGLE_REPO = "lerobot/eagle2hg-processor-groot-n1p5"
IMAGE_TOKEN = 7          # the tiny vocabulary's <IMG_CONTEXT>
PAD_TOKEN = 0
VOCAB = 64
EMBODIMENTS = {"new_embodiment": 31, "so100": 2}

EAGLE_CONFIG = {
    "architectures": ["Eagle2_5_VLForConditionalGeneration"],
    "auto_map": {"AutoConfig": "configuration_eagle2_5_vl.Eagle25VLConfig",
                 "AutoModel": "modeling_eagle2_5_vl.Eagle25VLForConditionalGeneration"},
    "model_type": "eagle_2_5_vl",
    "downsample_ratio": 0.5, "force_image_size": 32, "image_token_index": IMAGE_TOKEN, "mlp_connector_layers": 2,
    "use_pixel_shuffle": True, "select_layer": -1, "template": "qwen3-chat", "dynamic_image_size": False,
    "use_thumbnail": False, "max_dynamic_tiles": 1, "min_dynamic_tiles": 1, "loss_version": "efficient_v2",
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 16, "intermediate_size": 32,
                      "num_attention_heads": 2, "num_hidden_layers": 2, "patch_size": 8, "image_size": 32,
                      "num_channels": 3, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6},
    "text_config": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 32,
                    "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
                    "num_key_value_heads": 1, "head_dim": 16, "vocab_size": VOCAB, "rms_norm_eps": 1e-6,
                    "rope_theta": 1000000.0, "max_position_embeddings": 256, "tie_word_embeddings": False,
                    "attention_bias": False, "hidden_act": "silu"},
}
BACKBONE_CFG = dict(tune_llm=False, tune_visual=False, select_layer=2, reproject_vision=False,
                    use_flash_attention=False, load_bf16=False, project_to_dim=None)
ACTION_HEAD_CFG = dict(
    action_dim=8, action_horizon=4, add_pos_embed=True, backbone_embedding_dim=32, hidden_size=16,
    input_embedding_dim=16, max_action_dim=8, max_state_dim=8, max_num_embodiments=32, max_seq_len=16,
    model_dtype="float32", noise_beta_alpha=1.5, noise_beta_beta=1.0, noise_s=0.999, num_inference_timesteps=4,
    num_target_vision_tokens=4, num_timestep_buckets=1000, tune_diffusion_model=True, tune_projector=True,
    use_vlln=True,
    diffusion_model_cfg=dict(attention_head_dim=8, cross_attention_dim=32, dropout=0.2, final_dropout=True,
                             interleave_self_attention=True, norm_type="ada_norm", num_attention_heads=2,
                             num_layers=2, output_dim=16, positional_embeddings=None),
    vl_self_attention_cfg=dict(attention_head_dim=16, dropout=0.2, final_dropout=True, num_attention_heads=2,
                               num_layers=1, positional_embeddings=None),
)
N_CAM, B, H, D, S_ENV, A_ENV = 2, 3, 4, 8, 6, 5
IMG_TOKENS = 4           # (32 / 8)^2 patches, pixel-shuffled by 0.5


def prepare_eagle_cache(home: Path) -> Path:
    """The files EagleBackbone / ensure_eagle_cache_ready look for, so nothing is downloaded."""
    cache = home / EAGLE_REPO
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "config.json").write_text(json.dumps(EAGLE_CONFIG, indent=2))
    for name in ["vocab.json", "added_tokens.json", "chat_template.json", "special_tokens_map.json",
                 "generation_config.json", "preprocessor_config.json", "processor_config.json",
                 "tokenizer_config.json"]:
        (cache / name).write_text("{}")
    (cache / "merges.txt").write_text("#version: 0.2\n")
    return cache


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter redrawn: norms' weights 1 + 0.1 N, biases 0.1 N, matrices N / sqrt(fan-in)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and ("norm" in name or "vlln" in name or name.endswith("ln.weight")) and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * r)
            elif p.ndim == 1:
                p.copy_(0.1 * r)
            elif p.ndim == 3:      # CategorySpecificLinear W: (embodiments, in, out)
                p.copy_(r / math.sqrt(p.shape[1]))
            else:
                p.copy_(r / math.sqrt(p[0].numel()))


def cpu_attention(model) -> None:
    """Eagle's SigLIP is built with attn_implementation flash_attention_2 (CUDA-only): the same attention by SDPA."""
    for mod in model.modules():
        if hasattr(mod, "set_attn_implementation") and getattr(mod.config, "_attn_implementation", None) == "flash_attention_2":
            mod.set_attn_implementation("sdpa")
    for mod in model.modules():
        cfg = getattr(mod, "config", None)
        if cfg is not None and getattr(cfg, "_attn_implementation", None) == "flash_attention_2":
            cfg._attn_implementation = "sdpa"


def build_peer(cls, *args, **kwargs):
    """cls(*args) with transformers' attention choice "flash_attention_2" (hard-coded for SigLIP by the Eagle
    code; a CUDA kernel that is not installed here) answered with "sdpa", the same attention, during construction."""
    from transformers.modeling_utils import PreTrainedModel
    saved = PreTrainedModel._check_and_adjust_attn_implementation

    def to_sdpa(self, attn_implementation, *a, **k):
        if attn_implementation == "flash_attention_2":
            attn_implementation = "sdpa"
        return saved(self, attn_implementation, *a, **k)

    PreTrainedModel._check_and_adjust_attn_implementation = to_sdpa
    try:
        obj = cls(*args, **kwargs)
    finally:
        PreTrainedModel._check_and_adjust_attn_implementation = saved
    cpu_attention(obj)
    return obj


def eagle_inputs(seed: int):
    """Left-padded rows as Eagle's processor makes them (padding_side left): a few text tokens, then the image
    tokens of each camera, then more text; rows of different lengths. Pixel values in [-1, 1] (SigLIP's 0.5 / 0.5)."""
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 6, 1]       # text tokens after the images
    L = 2 + N_CAM * IMG_TOKENS + max(lengths)
    ids = torch.full((B, L), PAD_TOKEN, dtype=torch.long)
    mask = torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate(lengths):
        row = torch.cat([torch.randint(8, VOCAB, (2,), generator=g), torch.full((N_CAM * IMG_TOKENS,), IMAGE_TOKEN),
                         torch.randint(8, VOCAB, (n,), generator=g)])
        ids[b, L - len(row):] = row
        mask[b, L - len(row):] = 1
    pixels = torch.rand(B * N_CAM, 3, 32, 32, generator=g) * 2 - 1
    state = torch.zeros(B, 1, D)
    state[:, 0, :S_ENV] = torch.rand(B, S_ENV, generator=g) * 2 - 1
    return ids, mask, pixels, state


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="tests/fixtures/peers/groot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    home = Path(tempfile.mkdtemp(prefix="groot_home_"))
    os.environ["HF_LEROBOT_HOME"] = str(home)          # LeRobot reads it at import
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prepare_eagle_cache(home)

    import lerobot
    import transformers
    from safetensors.torch import save_file
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.groot.configuration_groot import GrootConfig
    from lerobot.policies.groot.groot_n1 import GR00TN15, GR00TN15Config
    from lerobot.policies.groot.modeling_groot import GrootPolicy
    from lerobot.policies.groot.processor_groot import make_groot_pre_post_processors

    # transformers' from_pretrained builds on the meta device, where Beta()'s argument validation (.item()) fails
    torch.distributions.Distribution.set_default_validate_args(False)
    # GR00TN15.__init__ never calls PreTrainedModel.post_init(), which transformers 5.3's from_pretrained needs
    # (all_tied_weights_keys): call it after the peer's own __init__ (it sets bookkeeping only, no weights)
    init = GR00TN15.__init__

    def init_then_post_init(self, *a, **k):
        init(self, *a, **k)
        self.post_init()

    GR00TN15.__init__ = init_then_post_init
    torch.manual_seed(args.seed)
    cfg = GR00TN15Config(backbone_cfg=BACKBONE_CFG, action_head_cfg=ACTION_HEAD_CFG, action_horizon=H,
                         action_dim=D, compute_dtype="float32")
    model = build_peer(GR00TN15, cfg, local_model_path="")
    randomize(model, args.seed)
    (out / "eagle").mkdir(parents=True, exist_ok=True)
    (out / "eagle" / "config.json").write_text(json.dumps(EAGLE_CONFIG, indent=2) + "\n")
    model.save_pretrained(out / "base")

    # LeRobot's policy wrapper loads that base dir as GR00TN15.from_pretrained does for nvidia/GR00T-N1.5-3B
    features_in = {f"observation.images.cam{i}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32)) for i in range(N_CAM)}
    features_in["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(S_ENV,))
    gconf = GrootConfig(base_model_path=str(out / "base"), input_features=features_in,
                        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(A_ENV,))},
                        max_state_dim=D, max_action_dim=D, chunk_size=H, n_action_steps=H, use_bf16=False,
                        embodiment_tag="new_embodiment", device="cpu", push_to_hub=False)
    policy = build_peer(GrootPolicy, gconf)
    loaded, written = policy._groot_model.state_dict(), model.state_dict()
    bad = sorted(set(loaded) ^ set(written)) + [k for k in loaded if k in written and not torch.equal(loaded[k], written[k])]
    # seen with transformers 5.3.0: from_pretrained re-initialises the Eagle connector (mlp1's two Linear layers:
    # Eagle25VLPreTrainedModel._init_weights runs on them although the file holds them). Recorded in reference.json;
    # the written weights are put back so that base/ and lerobot/ hold the same model as the outputs below.
    assert set(loaded) == set(written), "LeRobot's GrootPolicy has other keys than the base checkpoint"
    policy._groot_model.load_state_dict(written)
    policy.save_pretrained(out / "lerobot")
    g = torch.Generator().manual_seed(args.seed + 1)
    stats = {"observation.state": {"min": -torch.rand(S_ENV, generator=g) - 0.5, "max": torch.rand(S_ENV, generator=g) + 0.5},
             "action": {"min": -torch.rand(A_ENV, generator=g) - 0.5, "max": torch.rand(A_ENV, generator=g) + 0.5}}
    pre, post = make_groot_pre_post_processors(gconf, dataset_stats=stats)
    pre.save_pretrained(out / "lerobot")
    post.save_pretrained(out / "lerobot")

    m = policy._groot_model.eval()
    cpu_attention(m)
    print("attention:", {type(mod).__name__: mod.config._attn_implementation for mod in m.modules()
                         if hasattr(getattr(mod, "config", None), "_attn_implementation")})

    ids, mask, pixels, state = eagle_inputs(args.seed + 2)
    base = {"eagle_input_ids": ids, "eagle_attention_mask": mask, "eagle_pixel_values": pixels,
            "eagle_image_sizes": torch.tensor([[32, 32]] * (B * N_CAM)), "state": state,
            "state_mask": torch.ones(B, 1, D, dtype=torch.bool)}
    head = m.action_head
    record = []
    hooks = [head.action_encoder.register_forward_hook(lambda mod, a, o: record.append({"x": a[0].clone(), "bucket": a[1].clone()})),
             head.action_decoder.register_forward_hook(lambda mod, a, o: record[-1].update(v=o[:, -H:].clone()))]
    ref, meta = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "state": state}, {}
    # the backbone's features (after its select_layer) and the head's processed VL tokens, for diagnosis
    with torch.no_grad():
        bb = m.backbone(m.backbone.prepare_input({k: v for k, v in base.items() if k.startswith("eagle_")}))
        ref["backbone_features"] = bb["backbone_features"].clone()
        ref["vl_tokens"] = head.process_backbone_output(bb)["backbone_features"].clone()
    for name, emb_id in EMBODIMENTS.items():
        for steps in (4, 10):
            head.num_inference_timesteps = steps
            record.clear()
            torch.manual_seed(100 + steps)
            noise = torch.randn(B, H, D)
            torch.manual_seed(100 + steps)    # get_action draws exactly this noise first
            with torch.no_grad():
                act = m.get_action({**base, "embodiment_id": torch.full((B,), emb_id, dtype=torch.long)})["action_pred"]
            assert torch.equal(record[0]["x"], noise), "get_action did not start from the recorded noise"
            key = f"{name}_k{steps}"
            ref[f"{key}_noise"], ref[f"{key}_actions"] = noise, act.clone()
            ref[f"{key}_x"] = torch.stack([r["x"] for r in record])            # (K, B, H, D)
            ref[f"{key}_bucket"] = torch.stack([r["bucket"] for r in record])  # (K, B)
            ref[f"{key}_v"] = torch.stack([r["v"] for r in record])            # (K, B, H, D) GR00T velocity
    head.num_inference_timesteps = ACTION_HEAD_CFG["num_inference_timesteps"]
    for h in hooks:
        h.remove()

    # training loss for fixed actions, noise and time (its forward draws the noise with torch.randn)
    g = torch.Generator().manual_seed(args.seed + 3)
    actions = torch.rand(B, H, D, generator=g) * 2 - 1
    t_groot = torch.tensor([0.05, 0.5, 0.93])
    action_mask = torch.ones(B, H, D)
    action_mask[:, :, A_ENV:] = 0
    head.sample_time = lambda batch_size, device, dtype: t_groot.to(device, dtype)
    torch.manual_seed(7)
    loss_noise = torch.randn(B, H, D)
    torch.manual_seed(7)
    with torch.no_grad():
        loss = m.forward({**base, "embodiment_id": torch.full((B,), 31, dtype=torch.long), "action": actions,
                          "action_mask": action_mask})["loss"]
    ref.update(loss_actions=actions, loss_noise=loss_noise, loss_t_groot=t_groot, loss_action_mask=action_mask,
               loss=loss.reshape(1).clone())

    save_file({k: v.contiguous() for k, v in ref.items()}, str(out / "reference.safetensors"))
    meta.update(peer_reinitialised_on_load=bad, embodiments=EMBODIMENTS, steps=[4, 10], image_token_index=IMAGE_TOKEN, pad_token=PAD_TOKEN,
                num_cameras=N_CAM, env_state_dim=S_ENV, env_action_dim=A_ENV,
                versions={"lerobot": lerobot.__version__ if hasattr(lerobot, "__version__") else "0.5.1",
                          "torch": torch.__version__, "transformers": transformers.__version__,
                          "python": sys.version.split()[0]})
    (out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
