"""Load π0 / π0.5 checkpoints users already hold; save ours in the openpi PyTorch layout.

Formats, detected from the files (nothing is downloaded):
  openpi PyTorch  DIR/model.safetensors (keys `paligemma_with_expert.*`, `action_in_proj.*`, ...),
                  DIR/config.json (action_dim, action_horizon, paligemma_variant, ...),
                  DIR/assets/<asset_id>/norm_stats.json or DIR/<asset_id>/norm_stats.json
  ours            the openpi layout + "pirl" (our PI0Config) in config.json and DIR/tokenizer.model
  LeRobot         DIR/model.safetensors (the same keys under `model.`), config.json ("type": "pi0" | "pi05"),
                  normaliser stats in DIR/*normalizer*.safetensors (`observation.state.mean`, `action.q01`, ...)
  RLinf           SFT checkpoints are openpi's; its RL outputs are DIR/full_weights.pt (a torch state dict)
The variant is read from the weights (`time_mlp_in` -> π0.5, `state_proj` -> π0).
"""
import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model

from common.policy import PI0Config, PI0Policy, make_config
from common.processor import Processor
from common.tokenizer import load_tokenizer

WEIGHT_FILES = ("model.safetensors", "full_weights.pt")
# pairs of names for one tensor (weight tying): a file may hold either
TIED = {"paligemma_with_expert.paligemma.lm_head.weight":
        "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"}
_STRIP = ("module.", "_orig_mod.", "model.")   # DDP / torch.compile / LeRobot prefixes


def _read_weights(path: Path) -> tuple[dict, str]:
    if (path / "model.safetensors").is_file():
        sd = load_file(str(path / "model.safetensors"))
        fmt = "lerobot" if any(k.startswith("model.paligemma_with_expert.") for k in sd) else "openpi"
    elif (path / "full_weights.pt").is_file():
        sd = torch.load(path / "full_weights.pt", map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
        fmt = "rlinf"
    else:
        raise FileNotFoundError(f"no weights in {path}: expected one of {list(WEIGHT_FILES)}")
    return normalize_keys(sd), fmt


def normalize_keys(sd: dict) -> dict:
    """Strip wrapper prefixes until keys start at openpi's top level (`paligemma_with_expert.` ...)."""
    out = {}
    for k, v in sd.items():
        while not k.startswith(("paligemma_with_expert.", "action_", "state_proj", "time_mlp")) and k.startswith(_STRIP):
            k = k[k.index(".") + 1:]
        out[k] = v
    return out


def detect_variant(sd: dict) -> str:
    if "time_mlp_in.weight" in sd:
        return "pi05"
    if "state_proj.weight" in sd:
        return "pi0"
    raise ValueError("cannot tell π0 from π0.5: weights have neither `state_proj.weight` (π0) nor "
                     "`time_mlp_in.weight` (π0.5)")


def _config_from(path: Path, sd: dict, variant: str) -> PI0Config:
    meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    if "pirl" in meta:
        return PI0Config(**{f.name: meta["pirl"][f.name] for f in fields(PI0Config) if f.name in meta["pirl"]})
    # openpi / LeRobot / RLinf: full-size PaliGemma + Gemma-300M, dims from the weights
    D, W = sd["action_in_proj.weight"].shape[1], sd["action_in_proj.weight"].shape[0]
    horizon = meta.get("action_horizon", meta.get("chunk_size", 50))
    max_len = meta.get("max_token_len", meta.get("tokenizer_max_length", 200 if variant == "pi05" else 48))
    cfg = make_config(variant, action_dim=D, action_horizon=horizon, max_token_len=max_len)
    if W != cfg.expert_width:
        raise ValueError(f"{path}: expert width {W} is not Gemma-300M's {cfg.expert_width}; only the "
                         "gemma_2b + gemma_300m variants are known for non-pirl checkpoints")
    return cfg


def _norm_stats(path: Path) -> dict:
    direct = [path / "norm_stats.json"] + sorted(path.glob("assets/*/norm_stats.json")) + sorted(path.glob("*/norm_stats.json"))
    for f in direct:
        if f.is_file():
            return json.loads(f.read_text())
    for f in sorted(path.glob("*normalizer*.safetensors")):   # LeRobot processor state
        stats = {"state": {}, "actions": {}}
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                feat, _, stat = k.rpartition(".")
                name = {"observation.state": "state", "action": "actions"}.get(feat)
                if name:
                    stats[name][stat] = fh.get_tensor(k).float().tolist()
        if stats["state"] and stats["actions"]:
            return {"norm_stats": stats}
    raise FileNotFoundError(f"no normalisation stats in {path}: expected assets/<asset_id>/norm_stats.json, "
                            "<asset_id>/norm_stats.json or a LeRobot *normalizer*.safetensors")


def load_state_dict_checked(policy: PI0Policy, sd: dict, source: str = "checkpoint"):
    """Strict load that names missing / unexpected keys; tied tensors may come under either name."""
    sd = dict(sd)
    for a, b in TIED.items():
        if a in sd and b not in sd:
            sd[b] = sd[a]
        elif b in sd and a not in sd:
            sd[a] = sd[b]
    expected = policy.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [f"{k}: {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{source} does not match the {policy.config.variant} model: "
                         f"{len(missing)} missing (e.g. {missing[:5]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:5]}), {len(wrong)} wrong shapes (e.g. {wrong[:3]})")
    policy.load_state_dict(sd, strict=True)


def vlm_dtype(choice: str, device: torch.device, train_vlm: bool) -> torch.dtype | None:
    """The VLM's weight dtype for load_policy from the scripts' --vlm-dtype (auto | float32 | bfloat16).
    auto: bfloat16 on CUDA while the VLM is frozen (a frozen 3B VLM in bf16 halves its memory), else None
    (fp32, as loaded): a trained VLM stays fp32 so that its optimizer updates are not rounded away."""
    if choice == "auto":
        return torch.bfloat16 if device.type == "cuda" and not train_vlm else None
    return getattr(torch, choice)


def load_policy(path, device="cpu", dtype=None) -> tuple[PI0Policy, Processor]:
    """Detect the format, build the model, load weights strictly, and build its Processor.
    dtype (e.g. torch.bfloat16 on CUDA) applies to the PaliGemma part only; the expert and heads stay fp32."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    sd, fmt = _read_weights(path)
    variant = detect_variant(sd)
    config = _config_from(path, sd, variant)
    with torch.device("meta"):
        policy = PI0Policy(config)
    policy = policy.to_empty(device=device)
    pg = policy.paligemma_with_expert.paligemma   # to_empty unties shared parameters: tie them again
    pg.lm_head.weight = pg.model.language_model.embed_tokens.weight
    if fmt == "rlinf":   # RLinf RL outputs may carry extra heads (e.g. a critic): keep the policy's keys
        extra = sorted(set(sd) - set(policy.state_dict()))
        if extra:
            print(f"load_policy: ignoring {len(extra)} non-policy keys of {path / 'full_weights.pt'}: {extra[:5]}")
            sd = {k: v for k, v in sd.items() if k not in extra}
    _reset_buffers(policy)
    load_state_dict_checked(policy, sd, source=f"{fmt} checkpoint {path}")
    policy = policy.to(device)
    if dtype is not None:
        policy.set_vlm_dtype(dtype)
    processor = Processor.from_stats(_norm_stats(path), load_tokenizer(path), config)
    return policy, processor


def _reset_buffers(policy: PI0Policy):
    """Non-persistent buffers (RoPE frequencies, SigLIP position ids, embedding scale) are not in the file;
    after building on the meta device they hold garbage: recompute them."""
    pg = policy.paligemma_with_expert.paligemma
    lm = pg.model.language_model
    lm.rotary_emb = type(lm.rotary_emb)(lm.config)
    vm = pg.model.vision_tower.vision_model
    n = vm.embeddings.position_embedding.num_embeddings
    vm.embeddings.position_ids = torch.arange(n).expand(1, -1)
    lm.embed_tokens.embed_scale = torch.tensor(lm.config.hidden_size ** 0.5)


def save_policy(path, policy: PI0Policy, processor: Processor, extra: dict | None = None):
    """openpi PyTorch layout, written to a temp dir next to `path` and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
    c = policy.config
    save_model(policy, str(tmp / "model.safetensors"))   # dedups tied weights like openpi's converter
    full = c.vocab_size == 257152
    meta = {"action_dim": c.action_dim, "action_horizon": c.action_horizon,
            "paligemma_variant": "gemma_2b" if full else "pirl_custom",
            "action_expert_variant": "gemma_300m" if full else "pirl_custom",
            "precision": "float32" if policy.action_out_proj.weight.dtype == torch.float32 else "bfloat16",
            "pi05": c.variant == "pi05", "pirl": asdict(c), **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    (tmp / "assets" / "pirl").mkdir(parents=True)
    (tmp / "assets" / "pirl" / "norm_stats.json").write_text(json.dumps(processor.norm_stats, indent=2))
    (tmp / "tokenizer.model").write_bytes(processor.tokenizer.model_proto)
    if path.exists():
        old = path.with_name(path.name + f".old{os.getpid()}")
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)
