"""Load π0 / π0.5 checkpoints users already hold; save ours in the openpi PyTorch layout, or back in LeRobot's
for a policy that came from LeRobot (save_lerobot: its own from_pretrained loads it).

Formats, detected from the files (nothing is downloaded):
  openpi PyTorch  DIR/model.safetensors (keys `paligemma_with_expert.*`, `action_in_proj.*`, ...),
                  DIR/config.json (action_dim, action_horizon, paligemma_variant, ...),
                  DIR/assets/<asset_id>/norm_stats.json or DIR/<asset_id>/norm_stats.json
  ours            the openpi layout + "pirl" (our PI0Config) in config.json and DIR/tokenizer.model
  LeRobot         DIR/model.safetensors (the same keys under `model.`), config.json ("type": "pi0" | "pi05"),
                  normaliser stats in DIR/*normalizer*.safetensors (`observation.state.mean`, `action.q01`, ...);
                  it holds lm_head and embed_tokens as two tensors (kept apart), normalisation modes in
                  policy_{pre,post}processor.json (Processor.source = "lerobot": its conventions, processor.py)
  RLinf           SFT checkpoints are openpi's; its RL outputs are DIR/full_weights.pt (a torch state dict)
The variant is read from the weights (`time_mlp_in` -> π0.5, `state_proj` -> π0). GR00T N1.5 dirs go to
common/groot_checkpoint.py (load_policy / save_policy dispatch there); norm stats are read by common/norm_stats.py.
Where a checkpoint came from is the processor's Provenance (processor.py), declared here when it is built.
"""
import json
import math
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load as safetensors_load, load_file, save as safetensors_save, save_file, save_model

from common import groot_checkpoint
from common.logger import publish_dir
from common.norm_stats import find_norm_stats, read_norm_stats
from common.policy import PI0Config, PI0Policy, make_config
from common.processor import LEROBOT_BOUNDS, LEROBOT_FILES, LEROBOT_NORM_MODES, Processor, Provenance
from common.tokenizer import load_tokenizer

# RLinf writes full_weights.pt under model_state_dict/ (and actor/model_state_dict/ from its runner):
# rlinf/hybrid_engines/fsdp/strategy/base.py save_checkpoint; rlinf/models/embodiment/openpi/__init__.py get_model
WEIGHT_FILES = ("model.safetensors", "full_weights.pt", "model_state_dict/full_weights.pt",
                "actor/model_state_dict/full_weights.pt")
# pairs of names for one tensor (weight tying): a file may hold either
TIED = {"paligemma_with_expert.paligemma.lm_head.weight":
        "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"}
_STRIP = ("module.", "_orig_mod.", "model.", "_fsdp_wrapped_module.")   # DDP / torch.compile / LeRobot / FSDP prefixes


def read_weights(path: Path) -> tuple[dict, str]:
    """(state dict with openpi's top-level keys, format "openpi" | "lerobot" | "rlinf") of a π0 / π0.5 dir."""
    if (path / "model.safetensors").is_file():
        sd = load_file(str(path / "model.safetensors"))
        fmt = "lerobot" if any(k.startswith("model.paligemma_with_expert.") for k in sd) else "openpi"
        meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        if fmt == "openpi" and "action_horizon" not in meta and "pirl" not in meta:   # never guess it either
            raise ValueError(f"{path / 'config.json'}: action_horizon: not recorded (openpi's train_pytorch.py writes no "
                             "config.json; its metadata.pt needs openpi to unpickle); write {\"action_horizon\": H} "
                             "there, H = your TrainConfig's model.action_horizon")
    elif any((path / f).is_file() for f in WEIGHT_FILES[1:]):
        file = next(path / f for f in WEIGHT_FILES[1:] if (path / f).is_file())
        sd = torch.load(file, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
        fmt = "rlinf"
        meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        if "action_horizon" not in meta and "pirl" not in meta:   # not inferable from the weights: never guess it
            raise ValueError(f"{path / 'config.json'}: action_horizon: RLinf's {file.relative_to(path)} does not record "
                             "the action horizon (RLinf takes it from its config name); copy its base model's openpi "
                             "config.json here, or write {\"action_horizon\": H} there")
    else:
        raise FileNotFoundError(f"no weights in {path}: expected one of {list(WEIGHT_FILES)}")
    sd = normalize_keys(sd)
    if any(k.startswith(("img.", "llm.")) for k in sd):
        raise ValueError(f"{weights_file(path)}: keys `img.*` / `llm.*` are RLinf's OpenPI_RLinf (JAX-named) layout, not "
                         "loadable here; convert it with `python -m rlinf.utils.ckpt_convertor.openpi.convert "
                         "--mode openpi_rlinf_to_openpi_pytorch`")
    return sd, fmt


def weights_file(path: Path) -> Path:
    """The weights file a checkpoint directory holds (the first of WEIGHT_FILES present)."""
    return next((path / f for f in WEIGHT_FILES if (path / f).is_file()), path / WEIGHT_FILES[0])


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
    # openpi / LeRobot / RLinf: every size from the weights (any width / depth), the horizon from config.json
    horizon = meta.get("action_horizon", meta.get("chunk_size", 50))
    max_len = meta.get("max_token_len", meta.get("tokenizer_max_length", 200 if variant == "pi05" else 48))
    return make_config(variant, **{**sizes_from_weights(sd, weights_file(path)), **_lerobot_config(path, meta),
                                   **_openpi_config(path, meta, variant)},
                       action_horizon=horizon, max_token_len=max_len)


def _openpi_config(path: Path, meta: dict, variant: str) -> dict:
    """What an openpi / RLinf π0.5 config.json must say that the weights cannot: whether the state is prompt text.
    openpi's Pi0Config defaults to true, but its pi05_libero and most of RLinf's π0.5 configs set false, and
    openpi's converter does not write it (examples/convert_jax_model_to_pytorch.py): never guess it."""
    if variant != "pi05" or meta.get("type") in ("pi0", "pi05"):   # π0, or LeRobot's own config
        return {}
    if "discrete_state_input" not in meta:
        raise ValueError(f"{path / 'config.json'}: discrete_state_input: not recorded (openpi's converter omits it); "
                         "true puts the state in the π0.5 prompt (openpi's default), false does not (openpi's "
                         "pi05_libero, most RLinf π0.5 configs): add \"discrete_state_input\": true or false")
    return {"discrete_state_input": bool(meta["discrete_state_input"])}


def _lerobot_config(path: Path, meta: dict) -> dict:
    """What a LeRobot config.json fixes that the weights cannot tell: the cameras (its input_features of type
    VISUAL, then `empty_cameras` more; absent ones are black and masked, as LeRobot does), the time embedding's
    periods, the SFT time distribution and the resolution."""
    if meta.get("type") not in ("pi0", "pi05") or "input_features" not in meta:
        return {}
    cams = [k for k, f in meta["input_features"].items() if f.get("type") == "VISUAL"]
    cams += [k for k in (f"observation.images.empty_camera_{i}" for i in range(meta.get("empty_cameras", 0)))
             if k not in cams]
    out = {"num_cameras": len(cams)} if cams else {}
    out.update({ours: meta[theirs] for ours, theirs in (("min_period", "min_period"), ("max_period", "max_period"),
                ("time_beta_alpha", "time_sampling_beta_alpha"), ("time_beta_beta", "time_sampling_beta_beta"))
                if theirs in meta})
    if res := meta.get("image_resolution"):
        if res[0] != res[1]:
            raise ValueError(f"{path / 'config.json'}: image_resolution {res} is not square (PaliGemma's is)")
        out["image_size"] = res[0]
    return out


def _lerobot_processor(path: Path, meta: dict) -> dict:
    """LeRobot's normalisation modes and eps: from the saved pipelines' (un)normalizer steps, which are what its
    from_pretrained runs, else from config.json's normalization_mapping (its defaults: π0 MEAN_STD, π0.5 QUANTILES)."""
    mapping = meta.get("normalization_mapping") or {}
    modes = {k: mapping[t] for k, t in (("state", "STATE"), ("actions", "ACTION")) if t in mapping}
    eps = 1e-8
    for name, key, ftype, step_name in (("policy_preprocessor.json", "state", "STATE", "normalizer_processor"),
                                        ("policy_postprocessor.json", "actions", "ACTION", "unnormalizer_processor")):
        if (path / name).is_file():
            for step in json.loads((path / name).read_text()).get("steps", []):
                if step.get("registry_name") == step_name:
                    cfg = step.get("config", {})
                    modes[key] = cfg.get("norm_map", {}).get(ftype, "IDENTITY")   # LeRobot's default for a type
                    eps = cfg.get("eps", eps)
                    if modes[key] not in LEROBOT_NORM_MODES:
                        raise ValueError(f"{path / name}: {step_name} norm_map {ftype}={modes[key]!r} is not one of "
                                         f"LeRobot's {list(LEROBOT_NORM_MODES)}")
    if meta.get("use_relative_actions"):
        raise ValueError(f"{path / 'config.json'}: use_relative_actions=true (actions relative to the state, LeRobot's "
                         "RelativeActionsProcessorStep) is not supported here")
    return {"source": "lerobot", "norm_modes": modes, "eps": eps, **_lerobot_image_norm(path, meta)}


def _lerobot_image_norm(path: Path, meta: dict) -> dict:
    """LeRobot's VISUAL normalisation: its mode (the saved preprocessor's normalizer step, which from_pretrained runs,
    else config.json's normalization_mapping; IDENTITY by default) and, for another mode, each image slot's camera
    stats from the normalizer state ((C, 1, 1), as normalize_processor.py reshapes them; {} for a camera without
    stats, which LeRobot passes through), in the config's slot order (Processor image_mode / image_stats)."""
    mode, where = (meta.get("normalization_mapping") or {}).get("VISUAL", "IDENTITY"), path / "config.json"
    if (path / "policy_preprocessor.json").is_file():
        for step in json.loads((path / "policy_preprocessor.json").read_text()).get("steps", []):
            if step.get("registry_name") == "normalizer_processor":
                mode = step.get("config", {}).get("norm_map", {}).get("VISUAL", "IDENTITY")
                where = path / "policy_preprocessor.json"
    if mode not in LEROBOT_NORM_MODES:
        raise ValueError(f"{where}: VISUAL normalisation {mode!r} is not one of LeRobot's {list(LEROBOT_NORM_MODES)}")
    if mode == "IDENTITY":
        return {}
    cams = [k for k, f in meta.get("input_features", {}).items() if f.get("type") == "VISUAL"]
    stats = {k: {} for k in cams}
    for f in sorted(path.glob("policy_preprocessor*normalizer*.safetensors")):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                feat, _, stat = k.rpartition(".")
                if feat in stats:
                    stats[feat][stat] = fh.get_tensor(k).float().reshape(-1, 1, 1).numpy()
    need = ("mean", "std") if mode == "MEAN_STD" else LEROBOT_BOUNDS[mode]
    for k, s in stats.items():
        if s and not set(need) <= set(s):
            raise ValueError(f"{where}: VISUAL normalisation {mode} needs {need} of {k}; its stats hold {sorted(s)}")
    return {"image_mode": mode, "image_stats": stats}


_PG = "paligemma_with_expert.paligemma."
_VIT, _LM = _PG + "model.vision_tower.vision_model.", _PG + "model.language_model."
_EXPERT = "paligemma_with_expert.gemma_expert.model."
OPENPI_HEADS = 8     # openpi's joint attention reshapes to 1 * 8 * head_dim (models_pytorch/gemma_pytorch.py)
SIGLIP_HEADS = 16    # openpi never sets SigLIP's heads: transformers' PaliGemmaConfig default (So400m/14)


def sizes_from_weights(sd: dict, source) -> dict:
    """PI0Config sizes read from the tensors' shapes, for any width / depth. What shapes cannot tell (the number
    of attention heads) is openpi's fixed value. Keys absent from sd leave the preset's value."""
    def shape(key):
        return tuple(sd[key].shape) if key in sd else None

    def count(prefix):   # layers.<i>. indices under prefix
        return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})

    def bad(key, why):
        raise ValueError(f"{source}: {key}: {why}")
    out = {}
    if s := shape("action_in_proj.weight"):
        out["expert_width"], out["action_dim"] = s                     # (W_expert, D)
    if s := shape("state_proj.weight"):
        out["state_dim"] = s[1]                                        # π0 (W_expert, state_dim); LeRobot's may != D
    if s := shape(_EXPERT + "layers.0.mlp.gate_proj.weight"):
        out["expert_mlp_dim"] = s[0]
    if s := shape(_PG + "lm_head.weight") or shape(_LM + "embed_tokens.weight"):
        out["vocab_size"], out["vlm_width"] = s                        # (V, W_vlm)
    if s := shape(_LM + "layers.0.mlp.gate_proj.weight"):
        out["vlm_mlp_dim"] = s[0]
    if n := count(_LM + "layers."):
        out["depth"] = n
        if count(_EXPERT + "layers.") not in (0, n):
            bad(_EXPERT + "layers", f"{count(_EXPERT + 'layers.')} expert layers but {n} VLM layers; the joint "
                "attention pairs one expert layer with each VLM layer")
    q, k = (shape(_LM + f"layers.0.self_attn.{n}_proj.weight") for n in "qk")
    if q and k:                                                        # (heads * head_dim, W), (kv * head_dim, W)
        head_dim = q[0] // OPENPI_HEADS
        if q[0] % OPENPI_HEADS or k[0] % head_dim:
            bad(_LM + "layers.0.self_attn.q_proj.weight", f"{q[0]} query rows / {k[0]} key rows are not 8 heads x "
                "head_dim and kv_heads x head_dim (openpi's joint attention has 8 heads)")
        out.update(num_heads=OPENPI_HEADS, head_dim=head_dim, num_kv_heads=k[0] // head_dim)
        eq = shape(_EXPERT + "layers.0.self_attn.q_proj.weight")
        if eq and eq[0] != q[0]:
            bad(_EXPERT + "layers.0.self_attn.q_proj.weight", f"{eq[0]} query rows != the VLM's {q[0]} (shared heads)")
    if s := shape(_VIT + "embeddings.patch_embedding.weight"):         # (W_vision, 3, p, p)
        out["vision_width"], out["patch_size"], out["vision_heads"] = s[0], s[-1], SIGLIP_HEADS
        if s[0] % SIGLIP_HEADS:
            bad(_VIT + "embeddings.patch_embedding.weight", f"SigLIP width {s[0]} is not a multiple of its 16 heads")
        if n := shape(_VIT + "embeddings.position_embedding.weight"):  # ((R / p)^2, W_vision)
            side = math.isqrt(n[0])
            if side * side != n[0]:
                bad(_VIT + "embeddings.position_embedding.weight", f"{n[0]} positions are not a square grid of patches")
            out["image_size"] = side * s[-1]
    if n := count(_VIT + "encoder.layers."):
        out["vision_depth"] = n
    if s := shape(_VIT + "encoder.layers.0.mlp.fc1.weight"):
        out["vision_mlp_dim"] = s[0]
    return out


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


def load_policy(path, device="cpu", dtype=None, asset_id: str | None = None,
                embodiment: str | None = None) -> tuple[PI0Policy, Processor]:
    """Detect the format, build the model, load weights strictly, and build its Processor.
    dtype (e.g. torch.bfloat16 on CUDA) applies to the PaliGemma part only; the expert and heads stay fp32.
    asset_id picks the norm stats of an openpi / RLinf checkpoint that holds several (see find_norm_stats).
    embodiment (GR00T only: the scripts' --embodiment) picks its per-embodiment heads by tag or id."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if groot_checkpoint.is_groot_dir(path):   # GR00T N1.5 (Isaac-GR00T / LeRobot / ours): common/groot_checkpoint.py
        chosen = {} if embodiment is None else {"embodiment": int(embodiment) if embodiment.isdigit() else embodiment}
        return groot_checkpoint.load_groot_policy(path, device=device, dtype=dtype, asset_id=asset_id, **chosen)
    if embodiment is not None:
        raise ValueError(f"--embodiment {embodiment} is for GR00T checkpoints; this one holds a π0 / π0.5 (leave it out)")
    sd, fmt = read_weights(path)
    variant = detect_variant(sd)
    config = _config_from(path, sd, variant)
    with torch.device("meta"):
        policy = PI0Policy(config)
    policy = policy.to_empty(device=device)
    pg = policy.paligemma_with_expert.paligemma   # to_empty unties shared parameters: tie them again,
    head, emb = next(iter(TIED.items()))         # unless the file holds two different tables (LeRobot: fine-tuning
    if head in sd and emb in sd and not torch.equal(sd[head], sd[emb]):   # moves embed_tokens, never lm_head)
        pg.lm_head.weight.requires_grad_(False)   # kept as it came; unused here (no text decoding)
    else:
        pg.lm_head.weight = pg.model.language_model.embed_tokens.weight
    if fmt == "rlinf":   # RLinf RL outputs may carry extra heads (e.g. a critic): keep the policy's keys
        extra = sorted(set(sd) - set(policy.state_dict()))
        if extra:
            print(f"load_policy: ignoring {len(extra)} non-policy keys of {weights_file(path)}: {extra[:5]}")
            sd = {k: v for k, v in sd.items() if k not in extra}
    _reset_buffers(policy)
    load_state_dict_checked(policy, sd, source=f"{fmt} checkpoint {path}")
    policy = policy.to(device)
    if dtype is not None:
        policy.set_vlm_dtype(dtype)
    meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    conventions = _lerobot_processor(path, meta) if fmt == "lerobot" else {}   # the source's, kept at save
    found = find_norm_stats(path, asset_id)[1]
    lerobot = fmt == "lerobot"   # its config / processor files and each weight's dtype (bf16 mode): written back as they came
    provenance = Provenance(
        # who wrote it first: "openpi" | "lerobot" | "rlinf", or "pirl" for a policy we built (kept across our saves);
        # openpi-format models have fixed camera slots (absent cameras masked), ours are sized to their demos
        source_format=meta.get("source_format", "pirl") if "pirl" in meta else fmt,
        asset_id=None if found in (None, ".") else found,   # save_policy writes the stats back under this id
        source_files={f.name: f.read_bytes() for pat in LEROBOT_FILES for f in sorted(path.glob(pat))} if lerobot else {},
        source_dtypes={k: v.dtype for k, v in sd.items()} if lerobot else {})
    tokenizer = load_tokenizer(path, vocab_size=config.vocab_size)   # a shared PaliGemma one only if the model has its rows
    processor = Processor.from_stats(read_norm_stats(path, asset_id), tokenizer, config, **conventions, provenance=provenance)
    return policy, processor


def _reset_buffers(policy: PI0Policy):
    """Non-persistent buffers (RoPE frequencies, SigLIP position ids, embedding scale) are not in the file;
    after building on the meta device they hold garbage: recompute them."""
    pg = policy.paligemma_with_expert.paligemma
    lm = pg.model.language_model
    lm.rotary_emb = type(lm.rotary_emb)(lm.config)
    expert = policy.paligemma_with_expert.gemma_expert.model   # unused (the VLM's table serves both), but not garbage
    expert.rotary_emb = type(expert.rotary_emb)(expert.config)
    vm = pg.model.vision_tower.vision_model
    n = vm.embeddings.position_embedding.num_embeddings
    vm.embeddings.position_ids = torch.arange(n).expand(1, -1)
    lm.embed_tokens.embed_scale = torch.tensor(lm.config.hidden_size ** 0.5)


def save_policy(path, policy: PI0Policy, processor: Processor, extra: dict | None = None):
    """openpi PyTorch layout, written to a temp dir next to `path` and renamed into place; LeRobot's layout
    for a policy loaded from a LeRobot checkpoint (save_lerobot)."""
    if policy.config.variant == "groot":   # GR00T N1.5: its source's layout (common/groot_checkpoint.py)
        return groot_checkpoint.save_groot(path, policy, processor, extra)
    if processor.source == "lerobot":
        return save_lerobot(path, policy, processor, extra)
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
            "pi05": c.variant == "pi05", "discrete_state_input": c.variant == "pi05" and c.discrete_state_input,
            "source_format": processor.provenance.source_format, "data_config": processor.data_config.name, "pirl": asdict(c), **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    asset_id = processor.provenance.asset_id
    asset_dir = tmp / "assets" / (asset_id or "pirl")   # the source's id: openpi looks there
    asset_dir.mkdir(parents=True)
    (asset_dir / "norm_stats.json").write_text(json.dumps(processor.norm_stats, indent=2))
    if processor.provenance.source_format == "rlinf" and asset_id:
        rlinf_dir = tmp / asset_id   # RLinf's get_model reads DIR/<asset_id>/norm_stats.json, not assets/
        rlinf_dir.mkdir(parents=True)          # (rlinf/models/embodiment/openpi/__init__.py:112)
        (rlinf_dir / "norm_stats.json").write_text(json.dumps(processor.norm_stats, indent=2))
    (tmp / "tokenizer.model").write_bytes(processor.tokenizer.model_proto)
    publish_dir(tmp, path)


def _lerobot_stats_file(data: bytes, processor: Processor) -> bytes:
    """A LeRobot (un)normalizer state file with the processor's current stats (the bytes as they came when
    they agree, as after RL; new stats, e.g. after SFT on new data, replace the `<feature>.<stat>` tensors)."""
    tensors = safetensors_load(data)
    names = {"observation.state": "state", "action": "actions"}
    new = {}
    for k, v in tensors.items():
        feat, _, stat = k.rpartition(".")
        ours = processor.norm_stats["norm_stats"].get(names.get(feat), {}).get(stat)
        if ours is not None and len(ours) != v.numel():
            raise ValueError(f"LeRobot stats {k}: {len(ours)} values != the checkpoint's {v.numel()} (its config.json "
                             "features would not fit either); save it in the openpi layout instead")
        new[k] = v if ours is None else torch.tensor(ours, dtype=v.dtype).reshape(v.shape)
    if all(torch.equal(new[k], v) for k, v in tensors.items()):
        return data
    return safetensors_save(new)


def save_lerobot(path, policy: PI0Policy, processor: Processor, extra: dict | None = None):
    """LeRobot's layout, as its save_pretrained writes it, so that LeRobot's own from_pretrained (policy and
    processors) loads it: the source checkpoint's config.json and policy_{pre,post}processor files (RL moves no
    stats), model.safetensors with every tensor under `model.` (both embedding tables), our tokenizer.model;
    `extra` goes to pirl.json (LeRobot's config parser refuses unknown fields). Atomic like save_policy."""
    if not processor.provenance.source_files:
        raise ValueError("save_lerobot: the processor holds no LeRobot config / processor files (load_policy "
                         "records them from a LeRobot checkpoint)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
    for name, data in processor.provenance.source_files.items():
        (tmp / name).write_bytes(_lerobot_stats_file(data, processor) if "normalizer" in name else data)
    dtypes = processor.provenance.source_dtypes   # each tensor in the dtype the source file held it in
    sd, seen = {}, set()
    for k, v in policy.state_dict().items():
        v = v.detach().to(dtypes.get(k, torch.float32))
        if v.data_ptr() in seen:   # a tied table is written under both names, as LeRobot holds it
            v = v.clone()
        seen.add(v.data_ptr())
        sd["model." + k] = v.contiguous().cpu()
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "tokenizer.model").write_bytes(processor.tokenizer.model_proto)
    if extra:
        (tmp / "pirl.json").write_text(json.dumps(extra, indent=2))
    publish_dir(tmp, path)
