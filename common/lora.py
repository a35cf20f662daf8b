"""LoRA on the VLM during RL (πRL section 5.5, Fig. 15), with PEFT's adapters.

The paper freezes the VLM in RL (section 5.1); its section 5.5 instead adapts the VLM with LoRA,
r = 32, α = 32, beside the fully trainable action expert, in two settings (Flow-SDE π0, LIBERO-Long):
    LoRA-I   the frozen-VLM training config (LR 5e-6, 4 update epochs)
    LoRA-II  conservative: LR 1e-6, 2 update epochs; only this one matched the frozen baseline
--lora-preset applies those settings to any env x model preset: LoRA-II takes 1/5 of the preset's
actor LR and half its update epochs (LIBERO-Long π0: 5e-6 -> 1e-6, 4 -> 2, the paper's numbers).

    W x  ->  W x + (α / r) · B A x        A (r, in) random, B (out, r) zero: step 0 is the SFT policy
W stays frozen (bf16 on CUDA through the scripts' --vlm-dtype auto); A and B are fp32 (PEFT casts the
input to them). No dropout: a random mask changes the policy between the rollout and the update, so the
PPO ratio π_new / π_old would compare two different networks (paper appendix C, GR00T).

Checkpoints (flow_*.py):
    policy/                  the user's format, adapters merged into the weights (W + (α/r) B A, fp32)
    adapters.safetensors     the adapters alone (+ adapters.json: rank, α, targets, base checkpoint)
    train_state.pt["lora"]   what --resume needs: the adapters and the path of the frozen base weights
Resume reloads W from the base checkpoint (merging is not invertible bit for bit) and the adapters
from the train state; their AdamW moments come back with the optimizer's state dict.
"""
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

LM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")   # every Gemma linear
VISION_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")                  # every SigLIP linear
PRESETS = {  # paper 5.5: r, α; LR and update-epoch factors applied to the env x model preset
    "lora-i": dict(rank=32, alpha=32.0, lr_scale=1.0, epochs_scale=1.0),
    "lora-ii": dict(rank=32, alpha=32.0, lr_scale=0.2, epochs_scale=0.5),
}
ADAPTER = "default"   # PEFT's adapter name: parameter names end in `.lora_A.default.weight`


@dataclass
class LoraSpec:
    rank: int
    alpha: float
    targets: tuple          # module names adapted in the language model
    vision: bool            # also every linear of the SigLIP vision tower
    base: str | None        # the checkpoint holding the frozen W (for --resume)


def _blocks(policy, vision: bool) -> list[tuple[nn.Module, tuple]]:
    pg = policy.paligemma_with_expert.paligemma.model
    blocks = [(pg.language_model, None)]
    if vision:
        blocks.append((pg.vision_tower.vision_model, VISION_TARGETS))
    return blocks


def apply_lora(policy, rank: int, alpha: float | None = None, targets=LM_TARGETS, vision: bool = False,
               base: str | None = None):
    """Inject LoRA (PEFT) into the PaliGemma language model (and the vision tower): in place, only the
    adapters of these blocks are trainable, the expert and heads keep their requires_grad. Returns policy."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    targets = tuple(targets)
    unknown = sorted(set(targets) - set(LM_TARGETS))
    if unknown or not targets:
        raise ValueError(f"--lora-targets {','.join(targets)}: unknown {unknown}; allowed: {','.join(LM_TARGETS)}")
    if policy.lora_spec is not None:
        raise ValueError("this policy already has LoRA adapters")
    alpha = float(rank if alpha is None else alpha)
    if not alpha > 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha}")
    for block, names in _blocks(policy, vision):
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(names or targets),
                            bias="none", init_lora_weights=True)   # A kaiming-uniform, B = 0
        inject_adapter_in_model(config, block, adapter_name=ADAPTER)
    for p in lora_parameters(policy):   # PEFT creates them in the base weight's dtype: keep them fp32
        p.data = p.data.float()
        p.requires_grad_(True)
    policy.lora_spec = LoraSpec(rank, alpha, targets, vision, base)
    return policy


def lora_layers(policy) -> list[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in policy.named_modules() if isinstance(m, LoraLayer)]


def lora_parameters(policy) -> list[nn.Parameter]:
    return [p for name, p in policy.named_parameters() if ".lora_A." in name or ".lora_B." in name]


def adapter_state_dict(policy) -> dict:
    """The adapters alone: {policy parameter name: fp32 tensor on the CPU}."""
    return {name: p.detach().cpu().clone() for name, p in policy.named_parameters()
            if ".lora_A." in name or ".lora_B." in name}


def load_adapter_state_dict(policy, sd: dict) -> None:
    own = dict((name, p) for name, p in policy.named_parameters() if ".lora_A." in name or ".lora_B." in name)
    if own.keys() != sd.keys():
        missing, unexpected = sorted(own.keys() - sd.keys()), sorted(sd.keys() - own.keys())
        raise ValueError(f"LoRA adapters do not match the policy: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(sd[name])


def _merged_weight(layer) -> torch.Tensor:
    """W + (α/r) B A in fp32, on the CPU (the checkpoint's copy; the GPU keeps only the factors)."""
    return (layer.base_layer.weight.detach().float() + layer.get_delta_weight(ADAPTER).float()).cpu()


@contextmanager
def merged(policy, enabled: bool = True):
    """Inside the block every LoRA layer is a plain nn.Linear holding W + (α/r) B A (fp32): state_dict()
    has the model's own keys, so save_policy writes the user's format. On exit the LoRA layers come back
    with W untouched (no merge / unmerge rounding), so training continues bit for bit. No LoRA or not
    enabled (ranks that do not write the checkpoint): no-op."""
    swapped = []
    for name, layer in lora_layers(policy) if enabled else []:
        parent_name, _, attr = name.rpartition(".")
        parent = policy.get_submodule(parent_name)
        base = layer.base_layer
        plain = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        plain.weight = nn.Parameter(_merged_weight(layer), requires_grad=False)
        if base.bias is not None:
            plain.bias = base.bias
        setattr(parent, attr, plain)
        swapped.append((parent, attr, layer))
    try:
        yield policy
    finally:
        for parent, attr, layer in swapped:
            setattr(parent, attr, layer)


def train_state(policy) -> dict | None:
    """What --resume needs, for train_state.pt["lora"]: the spec and the adapters (None without LoRA)."""
    spec = policy.lora_spec
    return None if spec is None else {"spec": asdict(spec), "adapters": adapter_state_dict(policy)}


def export_adapters(state: dict | None, folder) -> None:
    """folder/adapters.safetensors (the adapters alone) and folder/adapters.json, from train_state(policy)
    (taken before `merged`, which swaps the LoRA layers out); no-op without LoRA (state None)."""
    from safetensors.torch import save_file

    if state is None:
        return
    spec, folder = state["spec"], Path(folder)
    save_file({k: v.contiguous() for k, v in state["adapters"].items()}, str(folder / "adapters.safetensors"))
    info = {**spec, "dropout": 0.0, "scaling": spec["alpha"] / spec["rank"], "peft_adapter_name": ADAPTER,
            "merged_into": "policy/model.safetensors"}
    (folder / "adapters.json").write_text(json.dumps(info, indent=2))


def restore(policy, state: dict) -> None:
    """--resume: `policy` was loaded from the checkpoint's policy/ (merged weights). Put the frozen base W
    back from the base checkpoint, re-inject the same LoRA and load the saved adapters."""
    from common.checkpoint import read_weights

    spec = LoraSpec(**{**state["spec"], "targets": tuple(state["spec"]["targets"])})
    if spec.base is None or not Path(spec.base).is_dir():
        raise FileNotFoundError(f"resuming a LoRA run needs its base checkpoint {spec.base} (the frozen VLM weights "
                                "the adapters were trained on); it is not there any more")
    base_sd, _ = read_weights(Path(spec.base))
    saved_merged = {}
    with torch.no_grad():
        for block, names in _blocks(policy, spec.vision):
            prefix = _name_of(policy, block)
            for name, m in block.named_modules():
                if isinstance(m, nn.Linear) and name.rpartition(".")[2] in (names or spec.targets):
                    key = f"{prefix}.{name}.weight"
                    saved_merged[f"{prefix}.{name}"] = m.weight.detach().clone()
                    m.weight.copy_(base_sd[key].to(torch.float32))   # the same rounding as load_policy's dtype
    apply_lora(policy, spec.rank, spec.alpha, spec.targets, spec.vision, spec.base)
    load_adapter_state_dict(policy, state["adapters"])
    # the base must be the one the adapters were trained on: W + (α/r) B A gives back the saved merged weights
    with torch.no_grad():
        for name, layer in lora_layers(policy):
            w = _merged_weight(layer).to(saved_merged[name].dtype)
            if not torch.allclose(w, saved_merged[name].cpu(), rtol=1e-2, atol=1e-3):
                raise ValueError(f"--resume: base checkpoint {spec.base} is not the one this run's adapters were "
                                 f"trained on ({name}: base + adapters != the saved merged weights)")


def _name_of(policy, module) -> str:
    return next(name for name, m in policy.named_modules() if m is module)


def resolve_preset(args, table: dict) -> None:
    """--lora-preset lora-i | lora-ii: fill --lora-rank / --lora-alpha, and the actor LR and update
    epochs (flags left at None) from `table`, the env x model preset scaled as in the module docstring."""
    if args.lora_preset == "none":
        return
    p = PRESETS[args.lora_preset]
    if not args.lora_rank:
        args.lora_rank = p["rank"]
        args.lora_alpha = p["alpha"] if args.lora_alpha is None else args.lora_alpha
    if args.actor_lr is None:
        args.actor_lr = table["actor_lr"] * p["lr_scale"]
    if args.update_epochs is None:
        args.update_epochs = max(1, round(table["update_epochs"] * p["epochs_scale"]))


def setup(policy, args, saved: dict | None = None) -> bool:
    """The scripts' one call, after freeze_vlm() and before the optimizer is built: --lora-rank > 0 puts
    LoRA on the VLM (base = --checkpoint); on --resume (saved = the train state) the run's adapters.
    A bad setting is a UsageError (one `error:` line in the scripts)."""
    from common.errors import UsageError

    try:
        return _setup(policy, args, saved)
    except ValueError as err:
        raise UsageError(str(err)) from None


def _setup(policy, args, saved: dict | None) -> bool:
    if saved is not None and saved.get("lora") is not None:
        restore(policy, saved["lora"])
        return True
    if not args.lora_rank:
        return False
    if saved is not None:
        raise ValueError("--lora-rank on --resume of a run trained without LoRA: its optimizer state has no adapters")
    if args.train_vlm:
        raise ValueError("--lora-rank and --train-vlm exclude each other: LoRA trains adapters on a frozen VLM")
    if policy.config.variant == "groot":
        raise ValueError("--lora-rank: LoRA targets PaliGemma's linears (π0 / π0.5); GR00T N1.5 trains its action "
                         "head with the VLM frozen (appendix C): drop --lora-rank / --lora-preset")
    apply_lora(policy, args.lora_rank, args.lora_alpha, args.lora_targets.split(","), args.lora_vision,
               base=str(Path(args.checkpoint).resolve()))
    return True
