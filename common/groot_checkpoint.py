"""GR00T N1.5 checkpoints in the three layouts users hold: read any of them into a GrootPolicy (common/groot.py)
and its processor, and write a policy back in the layout it came in.

  Isaac-GR00T / HF  (GR00TN15.save_pretrained) config.json {"model_type": "gr00t_n1_5", backbone_cfg, action_head_cfg,
                    ...} + model.safetensors (or sharded + index) with keys backbone.* / action_head.*; its norm stats
                    in experiment_cfg/metadata.json, its Eagle 2.5 processor files beside it (common/eagle.py)
  LeRobot 0.5.1     (GrootPolicy.save_pretrained + its processors' save_pretrained) config.json {"type": "groot",
                    base_model_path, ...} + model.safetensors with the same keys under `_groot_model.` + the
                    policy_{pre,post}processor* files (min / max stats); the head's config is the base model's
  pirl              the Isaac-GR00T layout + "pirl" (our GrootConfig) in config.json, eagle_config.json, and either
                    our SentencePiece tokenizer.model + assets/pirl/norm_stats.json (policies trained here) or
                    eagle_processor/ + experiment_cfg/metadata.json (a real checkpoint after RL here)
Every size comes from the weights, heads / eps / rope from the configs; loads are strict (zero missing or
unexpected keys). save_groot writes a LeRobot-sourced policy back in LeRobot's layout (its from_pretrained loads
it), any other in the Isaac-GR00T one.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from common import eagle
from common.groot import EMBODIMENTS, GrootConfig, GrootPolicy
from common.logger import publish_dir
from common.norm_stats import read_norm_stats
from common.processor import LEROBOT_FILES, Processor, Provenance
from common.tokenizer import load_tokenizer

LEROBOT_PREFIX = "_groot_model."
EAGLE_CACHE = Path("lerobot") / "eagle2hg-processor-groot-n1p5" / "config.json"


def _weight_files(path: Path) -> list[Path]:
    """model.safetensors, or the shards of model.safetensors.index.json."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [path / "model.safetensors"]


def _read_safetensors(path: Path) -> dict:
    return {k: v for f in _weight_files(path) for k, v in load_file(str(f)).items()}


def is_groot_dir(path) -> bool:
    path = Path(path)
    meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    return meta.get("model_type") == "gr00t_n1_5" or meta.get("type") == "groot" or meta.get("pirl_model") == "groot"


def _eagle_config(path: Path, eagle_config) -> dict:
    """Eagle's config.json (vision / text sizes that the weights cannot tell, e.g. heads): the argument, the
    checkpoint's eagle_config.json (ours), or LeRobot's cache ($HF_LEROBOT_HOME, ~/.cache/huggingface/lerobot)."""
    candidates = [Path(eagle_config)] if eagle_config else []
    candidates.append(path / "eagle_config.json")
    home = os.environ.get("HF_LEROBOT_HOME", str(Path.home() / ".cache" / "huggingface" / "lerobot"))
    candidates.append(Path(home) / EAGLE_CACHE)
    for f in candidates:
        if f.is_file():
            return json.loads(f.read_text())
    return {}


def config_from(sd: dict, head_cfg: dict, backbone_cfg: dict, eagle_cfg: dict, **overrides) -> GrootConfig:
    """Every size the weights hold from the weights; heads, eps, rope from the configs (defaults: N1.5's)."""
    base = GrootConfig()
    dit, vl = head_cfg.get("diffusion_model_cfg") or {}, head_cfg.get("vl_self_attention_cfg") or {}
    for name, cfg in (("diffusion_model_cfg", dit), ("vl_self_attention_cfg", vl)):
        if cfg.get("positional_embeddings"):
            raise ValueError(f"config.json action_head_cfg.{name}.positional_embeddings={cfg['positional_embeddings']!r}: "
                             "pirl's GR00T is N1.5, whose DiT and VL blocks use none (null)")
    vp = "backbone.eagle_model.vision_model.vision_model."
    lp = "backbone.eagle_model.language_model.model."
    pe = sd[vp + "embeddings.patch_embedding.weight"]
    n_pos = sd[vp + "embeddings.position_embedding.weight"].shape[0]
    count = lambda prefix: len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})  # noqa: E731
    q = sd[lp + "layers.0.self_attn.q_proj.weight"]
    hd = sd[lp + "layers.0.self_attn.q_norm.weight"].shape[0]
    vcfg, tcfg = eagle_cfg.get("vision_config", {}), eagle_cfg.get("text_config", {})
    E = sd["action_head.future_tokens.weight"].shape[1]
    E_vl = sd["action_head.model.transformer_blocks.0.attn1.to_k.weight"].shape[1]
    mlp1_in = next(v for k, v in sorted(sd.items()) if k.startswith("backbone.eagle_model.mlp1.") and v.ndim == 2).shape[1]
    kw = dict(
        action_dim=sd["action_head.action_encoder.W1.W"].shape[1],
        state_dim=sd["action_head.state_encoder.layer1.W"].shape[1],
        action_horizon=head_cfg.get("action_horizon", base.action_horizon),
        image_size=pe.shape[-1] * int(round(n_pos ** 0.5)), patch_size=pe.shape[-1],
        vision_width=pe.shape[0], vision_depth=count(vp + "encoder.layers."),
        vision_mlp_dim=sd[vp + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        vision_heads=vcfg.get("num_attention_heads", base.vision_heads), vision_eps=vcfg.get("layer_norm_eps", base.vision_eps),
        vision_use_head=any(k.startswith(vp + "head.") for k in sd),
        vision_select_layer=eagle_cfg.get("select_layer", base.vision_select_layer),
        downsample_ratio=eagle_cfg.get("downsample_ratio", base.downsample_ratio),
        use_pixel_shuffle=mlp1_in != pe.shape[0], mlp_connector_layers=2 if "backbone.eagle_model.mlp1.3.weight" in sd else 1,
        vocab_size=sd[lp + "embed_tokens.weight"].shape[0], llm_width=q.shape[1], llm_depth=count(lp + "layers."),
        llm_mlp_dim=sd[lp + "layers.0.mlp.gate_proj.weight"].shape[0], llm_head_dim=hd, llm_heads=q.shape[0] // hd,
        llm_kv_heads=sd[lp + "layers.0.self_attn.k_proj.weight"].shape[0] // hd,
        rope_theta=tcfg.get("rope_theta", (tcfg.get("rope_parameters") or {}).get("rope_theta", base.rope_theta)),
        rms_eps=tcfg.get("rms_norm_eps", base.rms_eps),
        max_position_embeddings=tcfg.get("max_position_embeddings", base.max_position_embeddings),
        project_to_dim=sd["backbone.eagle_linear.weight"].shape[0] if "backbone.eagle_linear.weight" in sd else None,
        backbone_embedding_dim=E_vl, hidden_size=sd["action_head.action_decoder.layer1.W"].shape[1],
        input_embedding_dim=E, max_num_embodiments=sd["action_head.action_encoder.W1.W"].shape[0],
        num_target_vision_tokens=sd["action_head.future_tokens.weight"].shape[0],
        add_pos_embed="action_head.position_embedding.weight" in sd, use_vlln="action_head.vlln.weight" in sd,
        max_seq_len=sd["action_head.position_embedding.weight"].shape[0] if "action_head.position_embedding.weight" in sd else base.max_seq_len,
        dit_layers=count("action_head.model.transformer_blocks."),
        dit_interleave=dit.get("interleave_self_attention", base.dit_interleave),
        dit_norm_eps=dit.get("norm_eps", base.dit_norm_eps),
        dropout=dit.get("dropout", base.dropout), final_dropout=dit.get("final_dropout", base.final_dropout),
        vl_layers=count("action_head.vl_self_attention.transformer_blocks."),
        num_inference_timesteps=head_cfg.get("num_inference_timesteps") or base.num_inference_timesteps,
        num_timestep_buckets=head_cfg.get("num_timestep_buckets", base.num_timestep_buckets),
        noise_beta_alpha=head_cfg.get("noise_beta_alpha", base.noise_beta_alpha),
        noise_beta_beta=head_cfg.get("noise_beta_beta", base.noise_beta_beta), noise_s=head_cfg.get("noise_s", base.noise_s),
    )
    dit_hd = dit.get("attention_head_dim", base.dit_head_dim)
    vl_hd = vl.get("attention_head_dim", base.vl_head_dim)
    if not dit or not vl:   # heads are not in the weights: N1.5's head widths must divide the widths found
        if E % dit_hd or E_vl % vl_hd:
            raise ValueError(f"the checkpoint's config holds no action_head_cfg (a LeRobot dir whose base_model_path is "
                             f"not here?) and N1.5's head widths {dit_hd} / {vl_hd} do not divide its widths {E} / {E_vl}: "
                             "pass base_config=<the base model's config.json>")
    kw.update(dit_heads=dit.get("num_attention_heads", E // dit_hd), dit_head_dim=dit_hd,
              vl_heads=vl.get("num_attention_heads", E_vl // vl_hd), vl_head_dim=vl_hd)
    kw.update(overrides)
    return GrootConfig(**kw)


def load_groot(path, device="cpu", embodiment: int | str | None = None, eagle_config=None, base_config=None,
               policy_class=None, **overrides) -> GrootPolicy:
    """A GR00T N1.5 checkpoint dir (Isaac-GR00T / HF layout, LeRobot 0.5.1 layout, or ours) -> GrootPolicy,
    loaded strictly (zero missing / unexpected keys). embodiment: an id or a name of EMBODIMENTS (default: the
    checkpoint's own tag, else "new_embodiment"). base_config: the base model's config.json for a LeRobot dir
    (default: its base_model_path when that is a local dir). policy_class: GrootPolicy (default) or a subclass
    (common.eagle.EagleGrootPolicy: Eagle's own prompt layout)."""
    path = Path(path)
    meta = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
    sd = _read_safetensors(path)
    if any(k.startswith(LEROBOT_PREFIX) for k in sd):
        sd = {k[len(LEROBOT_PREFIX):]: v for k, v in sd.items()}
    model_cfg = meta
    if meta.get("type") == "groot":   # LeRobot: the head's config is the base model's
        base = Path(base_config) if base_config else Path(meta.get("base_model_path", "")) / "config.json"
        model_cfg = json.loads(base.read_text()) if base.is_file() else {}
    pirl = meta.get("pirl", {})
    if embodiment is None:
        embodiment = pirl.get("embodiment", meta.get("embodiment_tag", "new_embodiment"))
    if isinstance(embodiment, str):
        if embodiment not in EMBODIMENTS:
            raise ValueError(f"embodiment {embodiment!r}; known names: {sorted(EMBODIMENTS)} (or pass an id)")
        embodiment = EMBODIMENTS[embodiment]
    extra = {k: pirl[k] for k in ("max_token_len", "num_cameras") if k in pirl}
    config = config_from(sd, model_cfg.get("action_head_cfg", {}), model_cfg.get("backbone_cfg", {}),
                         _eagle_config(path, eagle_config), embodiment=int(embodiment), **{**extra, **overrides})
    if not 0 <= config.embodiment < config.max_num_embodiments:
        raise ValueError(f"embodiment id {config.embodiment} outside the checkpoint's 0..{config.max_num_embodiments - 1}")
    with torch.device("meta"):
        policy = (policy_class or GrootPolicy)(config)
    policy = policy.to_empty(device=device)
    lm = policy.backbone.eagle_model.language_model.model
    lm.rotary_emb = type(lm.rotary_emb)(lm.config).to(device)      # non-persistent buffers: recompute
    vm = policy.backbone.eagle_model.vision_model.vision_model
    vm.embeddings.position_ids = torch.arange(vm.embeddings.position_embedding.num_embeddings, device=device).expand(1, -1)
    own = policy.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    wrong = [k for k in set(own) & set(sd) if own[k].shape != sd[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"GR00T checkpoint {path}: {len(missing)} missing keys (e.g. {missing[:5]}), {len(unexpected)} "
                         f"unexpected (e.g. {unexpected[:5]}), wrong shapes {wrong[:3]}")
    policy.load_state_dict(sd, strict=True)
    eagle_cfg = _eagle_config(path, eagle_config)
    if eagle_cfg.get("image_token_index") is not None:
        policy.image_token_index = int(eagle_cfg["image_token_index"])
    return policy.to(device)


def load_groot_policy(path, device="cpu", dtype=None, asset_id=None, eagle_dir=None, norm_modes=None, **kw):
    """load_policy's GR00T branch: (GrootPolicy, Processor). A dir with our SentencePiece tokenizer.model (what
    save_groot writes for models trained here) gets our Processor and its openpi-layout norm stats; any other
    (a real Isaac-GR00T / LeRobot N1.5 checkpoint) gets GR00T's own input side (common/eagle.py): Eagle 2.5's
    processor files (eagle_dir, or where common.eagle.find_eagle_dir looks) and experiment_cfg/metadata.json's
    norm stats (norm_modes: {"state.<key>" | "action.<key>": "min_max" | "q99" | "mean_std" | "binary"}, default
    min_max, Isaac-GR00T's data configs' mode; metadata.json does not record them)."""
    path = Path(path)
    if not (path / "tokenizer.model").is_file():
        return _load_groot_eagle(path, device, dtype, eagle_dir, norm_modes, **kw)
    policy = load_groot(path, device=device, **kw)
    if dtype is not None:
        policy.set_vlm_dtype(dtype)
    processor = Processor.from_stats(read_norm_stats(path, asset_id), load_tokenizer(path), policy.config,
                                     provenance=Provenance("pirl"))
    return policy, processor


def _load_groot_eagle(path: Path, device, dtype, eagle_dir, norm_modes, embodiment=None, **kw):
    """A real GR00T N1.5 checkpoint: metadata.json's embodiment entry (its tag picks the embodiment id), the
    Eagle files, then the weights as EagleGrootPolicy with one camera per video key and a fixed prompt length.
    A LeRobot 0.5.1 dir (its processor files, no metadata.json) keeps its own files for save_groot."""
    pirl = (json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}).get("pirl", {})
    chosen = embodiment if embodiment is not None else pirl.get("embodiment")   # ours: the id it was saved with
    tag, entry = eagle.read_stats(path, chosen)
    if chosen is None:
        if tag not in EMBODIMENTS:
            raise ValueError(f"{path / eagle.METADATA}: embodiment tag {tag!r} has no known id ({sorted(EMBODIMENTS)}); "
                             "pass embodiment=<its projector id>")
        chosen = tag
    files = eagle.find_eagle_dir(path, eagle_dir)
    tokenizer = eagle.EagleTokenizer(files)
    n_cam = len(entry["modalities"].get("video") or {}) or 1
    kw.setdefault("num_cameras", pirl.get("num_cameras", n_cam))
    kw.setdefault("max_token_len", pirl.get("max_token_len", eagle.prompt_length(tokenizer, kw["num_cameras"])))
    eagle_cfg = kw.pop("eagle_config", None) or (files / "config.json" if (files / "config.json").is_file() else None)
    policy = load_groot(path, device=device, embodiment=chosen, eagle_config=eagle_cfg,
                        policy_class=eagle.EagleGrootPolicy, **kw)
    policy.image_token_index = tokenizer.image_token_id
    if tokenizer.image_token_id >= policy.config.vocab_size:
        raise ValueError(f"{files}: the image token id {tokenizer.image_token_id} is outside the checkpoint's "
                         f"vocabulary ({policy.config.vocab_size}): these Eagle files are not this model's")
    if tokenizer.tokens_per_tile != policy.config.image_tokens:
        raise ValueError(f"{files / 'processor_config.json'}: tokens_per_tile={tokenizer.tokens_per_tile} but the "
                         f"checkpoint's vision tower makes {policy.config.image_tokens} tokens per image")
    if dtype is not None:
        policy.set_vlm_dtype(dtype)
    if (path / eagle.METADATA).is_file() or not (path / eagle.LEROBOT_PRE).is_file():   # read_stats' choice
        provenance = Provenance("isaac-gr00t")
    else:   # LeRobot's config.json and processor files as they came, and each weight's dtype on file
        provenance = Provenance("lerobot", source_files={f.name: f.read_bytes() for pat in LEROBOT_FILES
                                                         for f in sorted(path.glob(pat))}, source_dtypes=_weight_dtypes(path))
    processor = eagle.EagleProcessor(files, entry, tag, policy.config, norm_modes, where=str(path / eagle.METADATA),
                                     provenance=provenance)
    if processor.images.size != policy.config.image_size:
        raise ValueError(f"{files / 'preprocessor_config.json'}: {processor.images.size} px tiles but the "
                         f"checkpoint's SigLIP takes {policy.config.image_size} px")
    return policy, processor


def _weight_dtypes(path: Path) -> dict:
    """{our key: torch dtype} of the weights as the file holds them (headers only)."""
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
    out = {}
    for f in _weight_files(path):
        with safe_open(str(f), "pt") as fh:
            for k in fh.keys():
                out[k.removeprefix(LEROBOT_PREFIX)] = dtypes[fh.get_slice(k).get_dtype()]
    return out


def save_groot(path, policy: GrootPolicy, processor, extra: dict | None = None):
    """save_policy's GR00T branch, atomic: LeRobot 0.5.1's layout for a policy loaded from a LeRobot dir
    (_write_lerobot: its own from_pretrained loads it), else the Isaac-GR00T / HF one (_write_isaac)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=path.name + ".tmp", dir=path.parent))
    if processor.provenance.source_format == "lerobot":
        _write_lerobot(tmp, policy, processor, extra)
    else:
        _write_isaac(tmp, policy, processor, extra)
    publish_dir(tmp, path)


def _write_lerobot(tmp: Path, policy: GrootPolicy, processor, extra: dict | None):
    """LeRobot 0.5.1's GR00T layout, as GrootPolicy.save_pretrained and its processors write it: the source's
    config.json and policy_{pre,post}processor* files as they came (RL moves no stats; new stats from SFT are
    refused by EagleProcessor.with_stats), model.safetensors with every tensor under `_groot_model.` in the dtype
    the source held it in; `extra` goes to pirl.json (LeRobot's config parser refuses unknown fields)."""
    if not processor.provenance.source_files:
        raise ValueError("save_groot: the processor holds no LeRobot config / processor files (the loader records "
                         "them from a LeRobot GR00T dir)")
    for name, data in processor.provenance.source_files.items():
        (tmp / name).write_bytes(data)
    dtypes = processor.provenance.source_dtypes
    save_file({LEROBOT_PREFIX + k: v.detach().to(dtypes.get(k, torch.float32)).contiguous().cpu()
               for k, v in policy.state_dict().items()}, str(tmp / "model.safetensors"))
    if extra:
        (tmp / "pirl.json").write_text(json.dumps(extra, indent=2))


def _write_isaac(tmp: Path, policy: GrootPolicy, processor, extra: dict | None):
    """The Isaac-GR00T / HF layout (config.json with backbone_cfg / action_head_cfg, model.safetensors with
    backbone.* / action_head.*), plus eagle_config.json and either assets/pirl/norm_stats.json + tokenizer.model
    (our Processor) or eagle_processor/ + experiment_cfg/metadata.json (GR00T's Eagle inputs)."""
    c = policy.config
    save_file({k: v.detach().contiguous().cpu() for k, v in policy.state_dict().items()}, str(tmp / "model.safetensors"),
              metadata={"format": "pt"})
    meta = {"model_type": "gr00t_n1_5", "architectures": ["GR00T_N1_5"], "action_dim": c.action_dim,
            "action_horizon": c.action_horizon, "compute_dtype": "float32",
            "backbone_cfg": {"select_layer": c.llm_depth, "project_to_dim": c.project_to_dim, "reproject_vision": False,
                             "tune_llm": False, "tune_visual": False},
            "action_head_cfg": {
                "action_dim": c.action_dim, "action_horizon": c.action_horizon, "add_pos_embed": c.add_pos_embed,
                "backbone_embedding_dim": c.backbone_embedding_dim, "hidden_size": c.hidden_size,
                "input_embedding_dim": c.input_embedding_dim, "max_action_dim": c.action_dim, "max_state_dim": c.state_dim,
                "max_num_embodiments": c.max_num_embodiments, "max_seq_len": c.max_seq_len,
                "noise_beta_alpha": c.noise_beta_alpha, "noise_beta_beta": c.noise_beta_beta, "noise_s": c.noise_s,
                "num_inference_timesteps": c.num_inference_timesteps, "num_target_vision_tokens": c.num_target_vision_tokens,
                "num_timestep_buckets": c.num_timestep_buckets, "use_vlln": c.use_vlln,
                "diffusion_model_cfg": {"attention_head_dim": c.dit_head_dim, "cross_attention_dim": c.backbone_embedding_dim,
                                        "dropout": c.dropout, "final_dropout": c.final_dropout,
                                        "interleave_self_attention": c.dit_interleave, "norm_type": "ada_norm",
                                        "num_attention_heads": c.dit_heads, "num_layers": c.dit_layers,
                                        "output_dim": c.hidden_size, "positional_embeddings": None},
                "vl_self_attention_cfg": {"attention_head_dim": c.vl_head_dim, "dropout": c.dropout,
                                          "final_dropout": c.final_dropout, "num_attention_heads": c.vl_heads,
                                          "num_layers": c.vl_layers, "positional_embeddings": None}},
            "pirl_model": "groot", "source_format": processor.provenance.source_format,
            "data_config": processor.data_config.name, "pirl": asdict(c), **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(meta, indent=2))
    eagle_cfg = {"model_type": "eagle_2_5_vl", "downsample_ratio": c.downsample_ratio, "force_image_size": c.image_size,
             "image_token_index": policy.image_token_index, "mlp_connector_layers": c.mlp_connector_layers,
             "use_pixel_shuffle": c.use_pixel_shuffle, "select_layer": c.vision_select_layer,
             "vision_config": {"model_type": "siglip_vision_model", "num_attention_heads": c.vision_heads,
                               "layer_norm_eps": c.vision_eps, "image_size": c.image_size, "patch_size": c.patch_size},
             "text_config": {"architectures": ["Qwen3ForCausalLM"], "num_attention_heads": c.llm_heads,
                             "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_theta,
                             "max_position_embeddings": c.max_position_embeddings}}
    (tmp / "eagle_config.json").write_text(json.dumps(eagle_cfg, indent=2))
    if isinstance(processor, eagle.EagleProcessor):   # Eagle inputs: its files + metadata.json
        processor.save(tmp)
    else:
        (tmp / "assets" / "pirl").mkdir(parents=True)
        (tmp / "assets" / "pirl" / "norm_stats.json").write_text(json.dumps(processor.norm_stats, indent=2))
        (tmp / "tokenizer.model").write_bytes(processor.tokenizer.model_proto)

