"""GPU memory of the Flow-SDE PPO update for the full-size π0, on paper: how large a micro-batch fits one
80 GB GPU? No GPU needed: parameters are counted on the meta device and activations analytically.

    python bench/memory.py                          # π0, one 80 GB GPU, the LIBERO-Spatial preset
    python bench/memory.py --world-size 8           # per GPU of an 8-GPU node (adds the all-reduce buffers)
    python bench/memory.py --preset pi05 --env libero-long

What one update micro-batch holds (flow_sde_ppo.py, frozen VLM, section 5.1 of the paper):
  1. static: the weights, and for the trainable part (action expert + action/time/state heads + critic)
     the gradients and AdamW's two moments; in the "mixed" scheme also an fp32 master copy.
  2. per sample: the prefix KV cache (encode under no_grad, kept until the backward ends), then ONE
     expert pass with gradient at the stored SDE step j (step_logprob) whose saved-for-backward
     tensors are counted layer by layer below, and the raw inputs.
  3. phases that do not overlap the activations: the flattened gradient all-reduce (world > 1) and
     AdamW's step; the peak is static + the largest of them.
  4. LoRA on the VLM (common/lora.py, --lora-rank): the prefix pass runs with a graph and keeps, per
     sample, what its backward needs (prefix_lora_saved_bytes), on top of all of the above; the adapters
     add fp32 weights + gradients + AdamW moments.
  5. full --train-vlm (every weight fp32 and trained: --vlm-dtype auto keeps a trained VLM fp32): the whole
     policy's gradients and AdamW moments, the prefix pass kept for backward through the language model
     AND the SigLIP tower (siglip_saved_bytes); on one GPU, under plain torchrun (+ the all-reduce), and
     sharded with FSDP2 (--fsdp: static / world size, plus the unsharded root and two layers in flight;
     the rollout phase holds a full fp32 copy gathered for it: common/distributed.py).
Attention: the prefix's single KV head is shared by the 8 query heads as a stride-0 view ("grouped KV",
common/policy.py _attention); "repeated KV" is the code before (repeat_interleave, a copy per head kept
for backward). Both are in the settings table.
Three weight/precision schemes:
  mixed     bf16 weights everywhere, fp32 master weights + fp32 gradients + AdamW for the trainable
            part (heads and critic stay fp32: the code feeds them fp32); activations bf16.
  vlm-bf16  load_policy(..., dtype=torch.bfloat16): PaliGemma bf16, expert and heads fp32.
  fp32      what flow_sde_ppo.py does today: load_policy(checkpoint, device) with no dtype.
Attention backend: on CUDA, SDPA with this float mask runs the memory-efficient kernel, which saves
q, k, v, its output and the log-sum-exp ("fused"); the CPU flash kernel saves the same. The meta
device runs the math path, which keeps q, kᵀ, v and the softmax probabilities in fp32 ("math").
The GPU table uses "fused". torch.cuda.max_memory_allocated does not exist on CPU, so the analytic
count is checked instead against the live-tensor bytes of the real code (encode + step_logprob +
backward) tracked op by op (LiveBytes): on real CPU tensors for the embedded default's tiny π0
(fused) and on meta tensors for the full π0 (math, no memory used). Neither sees allocator
fragmentation, which the --reserve-gb margin stands for.

Writes bench/results/memory.json.
"""
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.errors import UsageError, check_at_least, check_writable, main_errors  # noqa: E402
from common.policy import Observation, PI0Policy, PrefixCache, make_config  # noqa: E402
from flow_sde_ppo import Args as PPOArgs  # noqa: E402
from flow_sde_ppo import Critic, preset, step_logprob  # noqa: E402

GB = 1e9


@dataclass
class Args:
    preset: str = "pi0"
    """model preset of common.policy (pi0, pi05)"""
    env: str = "libero-spatial"
    """env whose flow_sde_ppo preset (paper's Tables 7-8) sets H', K, the micro-batch and the rollout storage"""
    gpu_gb: float = 80.0
    """GPU memory, 1e9 bytes (an "80 GB" H100 offers ~85e9, so this is conservative)"""
    reserve_gb: float = 6.0
    """kept free: CUDA context (~0.5), NCCL buffers (~0.5), caching-allocator fragmentation (~5)"""
    world_size: int = 1
    """ranks (GPUs): each holds num_envs / world_size envs' rollout storage; > 1 adds the all-reduce buffers"""
    critic_hidden: int = 512
    """width of the critic MLP (flow_sde_ppo --critic-hidden)"""
    fsdp_world_size: int = 8
    """GPUs of the full --train-vlm FSDP2 column (flow_sde_ppo --train-vlm --fsdp under torchrun)"""
    validate: bool = True
    """check the activation count against live-tensor tracking (tiny on CPU, full model on meta; ~1 min)"""
    out: str = "bench/results/memory.json"
    """where the figures are written (JSON)"""


# precision schemes: bytes per element (see the docstring)
SCHEMES = {
    "mixed": dict(vlm=2, expert=2, master=4, act=2, cache=2),
    "vlm-bf16": dict(vlm=2, expert=4, master=0, act=4, cache=2),
    "fp32": dict(vlm=4, expert=4, master=0, act=4, cache=4),
}
FP32 = 4


def count_parameters(config, critic_hidden: int) -> dict:
    """Parameter counts by part, built on the meta device (no memory), after freeze_vlm()."""
    with torch.device("meta"):
        policy = PI0Policy(config)
        critic = Critic(config.vlm_width if config.variant == "pi05" else config.expert_width, critic_hidden)
    policy.freeze_vlm()
    expert = policy.paligemma_with_expert.gemma_expert
    n = lambda params: sum(p.numel() for p in params)  # noqa: E731
    counts = {
        "vlm (frozen)": n(policy.paligemma_with_expert.paligemma.parameters()),  # SigLIP + projector + Gemma 2B (tied embedding once)
        "expert (trainable)": n(p for p in expert.parameters() if p.requires_grad),
        "expert lm_head (frozen, unused)": n(p for p in expert.parameters() if not p.requires_grad),  # kept for openpi's keys
        "heads (trainable)": n(p for name, p in policy.named_parameters() if not name.startswith("paligemma_with_expert")),
        "critic (trainable)": n(critic.parameters()),
    }
    assert counts["vlm (frozen)"] + n(expert.parameters()) + counts["heads (trainable)"] == n(policy.parameters())
    return counts


def static_bytes(counts: dict, s: dict) -> dict:
    """Weights + gradients + optimizer, bytes. Gradients are fp32 (accumulated over micro-batches);
    AdamW keeps exp_avg and exp_avg_sq in fp32 (8 B); heads and critic are fp32 in every scheme."""
    expert, small = counts["expert (trainable)"], counts["heads (trainable)"] + counts["critic (trainable)"]
    return {
        "weights": counts["vlm (frozen)"] * s["vlm"] + (expert + counts["expert lm_head (frozen, unused)"]) * s["expert"]
                   + small * FP32,
        "fp32 master weights": expert * s["master"],
        "gradients (fp32)": (expert + small) * FP32,
        "AdamW moments (fp32)": (expert + small) * 2 * FP32,
    }


def lengths(c) -> tuple[int, int, int]:
    """Prefix Lp = image tokens of all cameras + L prompt slots; suffix Ls = [state] + H actions; keys Nk."""
    Lp = c.num_cameras * (c.image_size // c.patch_size) ** 2 + c.max_token_len
    Ls = c.action_horizon + (1 if c.variant == "pi0" else 0)
    return Lp, Ls, Lp + Ls


def expert_saved_bytes(c, act: int, backend: str, grouped: bool = True) -> dict:
    """Bytes saved for backward by ONE expert pass (velocity at step j) for ONE sample.

    Per layer, as common/policy.py computes it (act = bytes of the expert's dtype):
      2 Gemma RMSNorms: they compute in fp32 and keep x.float(), x * rsqrt (both Ls x W) and rsqrt (Ls)
      inputs of the linear layers: q/k/v (one tensor, Ls x W), o_proj (Ls x heads*hd), gate/up (Ls x W)
      MLP: gate output (for gelu'), gelu output and up output (for the product), the product (down_proj)
      attention over Nk = Lp + Ls keys; grouped (common/policy.py today): the KV head is a stride-0 view
      for every query head; not grouped (before): the KV head REPEATED to all heads (repeat_interleave)
        fused: q and the output (heads x Ls x hd), k and v (kv heads x Nk x hd) in act, lse (heads x Ls) fp32
        math : q, kᵀ, v and the probabilities (heads x Ls x Nk), upcast to fp32; its batched matmuls copy
               the KV head per query head, so grouping saves nothing there (counted as repeated; the
               meta device measures grouped KV even higher, +29%: see the validation)
    Once: the final norm, RoPE cos/sin, the additive mask (fused only), the action/time MLP and the heads.
    """
    Lp, Ls, Nk = lengths(c)
    W, M, nh, hd, H, D = c.expert_width, c.expert_mlp_dim, c.num_heads, c.head_dim, c.action_horizon, c.action_dim
    norm = 2 * Ls * W * FP32 + Ls * FP32
    linear_in = Ls * (2 * W + nh * hd) * act
    mlp = 4 * Ls * M * act
    kv = c.num_kv_heads if grouped else nh
    if backend == "fused":
        attention = (2 * nh * Ls * hd + 2 * kv * Nk * hd) * act + nh * Ls * FP32
        mask = Ls * Nk * act
    else:
        attention = (nh * Ls * hd + 2 * nh * Nk * hd + nh * Ls * Nk) * FP32
        mask = 0
    if c.variant == "pi0":  # action_in_proj input, concat(action, time), the MLP's two inputs, state, features
        head = (H * D + H * 2 * W + 2 * H * W + D + H * W) * FP32
    else:  # action_in_proj input, time MLP, features
        head = (H * D + 2 * W + H * W) * FP32
    # the backward pass frees each layer's saved tensors as it goes; its extra is about one layer's
    # attention share (the gradients of k and v), a calibration checked by --validate
    return {"layers": c.depth * (2 * norm + linear_in + mlp + attention), "attention (of layers)": c.depth * attention,
            "once": norm + 2 * Ls * hd * act + mask + head, "backward transient": attention}


def prefix_lora_saved_bytes(c, s: dict, rank: int, backend: str, grouped: bool = True) -> dict:
    """Bytes the prefix pass keeps for backward for ONE sample when LoRA adapts the language model's 7 linears
    (common/lora.py: W frozen in the VLM dtype, A and B fp32; SigLIP frozen: no graph through the images).
    Per layer, over Lp prefix tokens (v = bytes of the VLM dtype):
      2 RMSNorms as in the expert (x.float(), x * rsqrt, rsqrt); a frozen W keeps nothing for its own backward
      LoRA inputs, cast to fp32 by PEFT: a copy per adapter when the VLM is bf16 (q, k, v, gate, up each
        copy their shared input: 5 x W, o: heads*hd, down: mlp), the very tensor when it is fp32 (2 W + heads*hd + mlp)
      LoRA A outputs, 7 x r fp32; the MLP: gate output, gelu output, up output (3 x mlp, v)
      attention (fused): q and the output (heads x hd) and the lse; grouped, k and v are the KV cache itself
        (counted there); repeated, the 8-head copies too; the Lp x Lp additive mask once
    Backward transient: one layer's share (its attention gradients, per query head, and the fp32 gradients
    of its hidden state and MLP), calibrated with --validate."""
    Lp, W, M, nh, hd, v = lengths(c)[0], c.vlm_width, c.vlm_mlp_dim, c.num_heads, c.head_dim, s["vlm"]
    norm = 2 * Lp * W * FP32 + Lp * FP32
    lora_in = Lp * ((5 * W if v != FP32 else 2 * W) + nh * hd + M) * FP32
    lora_mid = 7 * Lp * rank * FP32
    mlp = 3 * Lp * M * v
    kv = 0 if grouped else 2 * nh * Lp * hd * v
    attention = (2 * nh * Lp * hd * v + nh * Lp * FP32 + kv) if backend == "fused" else \
        (nh * Lp * hd + 2 * nh * Lp * hd + nh * Lp * Lp) * FP32
    layer = 2 * norm + lora_in + lora_mid + mlp + attention
    transient = (2 * nh * Lp * hd) * v + 2 * Lp * M * FP32 + 2 * Lp * W * FP32
    # the first layer's input norm reads the embeddings, which need no gradient: it keeps nothing
    return {"layers": c.depth * layer - norm, "once": norm + Lp * Lp * v + 2 * Lp * hd * v, "backward transient": transient}


def siglip_saved_bytes(c) -> dict:
    """Bytes the SigLIP tower keeps for backward for ONE sample (all cameras) when it is trained (fp32, fused SDPA:
    SigLIP has no mask). Per layer over Lv patches: 2 LayerNorms (input, mean, rstd), the inputs of the q/k/v, out,
    fc1 (Lv x Wv each) and fc2 (Lv x Mv) linears, fc1's output for gelu' (Lv x Mv), the attention's q, k, v, output
    (4 x Lv x Wv) and lse (heads x Lv). Once: the pixels, the post-LayerNorm and the projector's input."""
    Lv, Wv, Mv, hv = (c.image_size // c.patch_size) ** 2, c.vision_width, c.vision_mlp_dim, c.vision_heads
    layer = (2 * (Lv * Wv + 2 * Lv) + 3 * Lv * Wv + 2 * Lv * Mv + 4 * Lv * Wv + hv * Lv) * FP32
    once = (3 * c.image_size ** 2 + 2 * (Lv * Wv + 2 * Lv)) * FP32
    return {"layers": c.num_cameras * c.vision_depth * layer, "once": c.num_cameras * once}


def full_vlm_per_sample_bytes(c) -> dict:
    """Everything one update sample holds at the peak with full --train-vlm (all fp32): the LM prefix pass kept for
    backward (prefix_lora_saved_bytes at fp32 and rank 0: the very tensors a trained linear keeps; its first norm
    now keeps its input too, the embeddings being trained), SigLIP's (siglip_saved_bytes), the expert pass."""
    s = SCHEMES["fp32"]
    base = per_sample_bytes(c, s, "fused")
    Lp, W = lengths(c)[0], c.vlm_width
    pre = prefix_lora_saved_bytes(c, s, 0, "fused")
    lm = pre["layers"] + pre["once"] + 2 * Lp * W * FP32 + Lp * FP32
    vision = siglip_saved_bytes(c)
    expert = expert_saved_bytes(c, s["act"], "fused")
    total = base["kv cache"] + base["inputs"] + lm + vision["layers"] + vision["once"] + expert["layers"] + expert["once"] \
        + max(expert["backward transient"], pre["backward transient"])
    return {"kv cache": base["kv cache"], "inputs": base["inputs"], "language model saved": lm,
            "SigLIP saved": vision["layers"] + vision["once"], "expert saved": base["expert saved"], "total": total}


def full_vlm_bytes(config, counts: dict, micro: int, storage_one_gpu: int, world_size: int, budget: float,
                   fsdp: bool) -> dict:
    """Full --train-vlm (fp32): per GPU of `world_size` ranks, plain torchrun (fsdp False: the whole static memory on
    every GPU, + the flattened all-reduce when world > 1) or FSDP2 (fsdp True: weights, gradients and AdamW moments
    / world; the critic replicated; in the update, the unsharded root group (embeddings, projector, heads: FSDP keeps
    the root gathered through forward and backward) and two layer groups in flight, params + gradients; the rollout
    phase holds a full fp32 copy of the weights, gathered for it). storage_one_gpu: the rollout storage of 1 GPU."""
    with torch.device("meta"):
        policy = PI0Policy(config)
    n = lambda params: sum(p.numel() for p in params)  # noqa: E731
    frozen = counts["expert lm_head (frozen, unused)"]
    trainable = sum(counts.values()) - frozen               # every policy weight (tied embedding once) + critic
    critic = counts["critic (trainable)"]
    static = {"weights (fp32)": (trainable + frozen) * FP32, "gradients (fp32)": trainable * FP32,
              "AdamW moments (fp32)": trainable * 2 * FP32}
    storage = storage_one_gpu // world_size
    if fsdp:
        static = {k: (v - critic * (FP32 if "weights" in k or "gradients" in k else 2 * FP32)) / world_size
                  + critic * (FP32 if "weights" in k or "gradients" in k else 2 * FP32) for k, v in static.items()}
        layered = set()
        for model in (policy._vlm, policy._expert, policy.paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder):
            layered |= {id(p) for p in model.layers.parameters()}
        root = [p for p in policy.parameters() if id(p) not in layered]   # the expert's unused lm_head: no gradient
        layer = max(n(m.parameters()) for m in policy._vlm.layers)
        in_flight = (n(root) + n(p for p in root if p.requires_grad) + 4 * layer) * FP32  # unsharded params + gradients
        other = {"AdamW step": FP32 * trainable / world_size,
                 "rollout: full fp32 copy": (trainable + frozen) * FP32}
    else:
        in_flight = 0
        other = {"gradient all-reduce": 2 * FP32 * trainable if world_size > 1 else 0, "AdamW step": FP32 * trainable}
    static_total = sum(static.values())
    sample = full_vlm_per_sample_bytes(config)
    fits = math.floor((budget - static_total - storage - in_flight) / sample["total"])
    fits = max(fits, 0) if static_total + storage + max(other.values()) <= budget else 0
    return {"trainable": trainable, "static": static, "static_total": static_total, "in_flight": in_flight,
            "other_phases": other, "per_sample": sample, "rollout_storage": storage,
            "peak": static_total + storage + max(in_flight + micro * sample["total"], max(other.values())), "max_micro_batch": fits}


def per_sample_bytes(c, s: dict, backend: str, grouped: bool = True, lora_rank: int = 0) -> dict:
    """Everything one update sample holds at the peak (the start of the backward pass).
    lora_rank > 0: the prefix pass runs with a graph (LoRA on the language model) and keeps its share."""
    Lp, Ls, _ = lengths(c)
    saved = expert_saved_bytes(c, s["act"], backend, grouped)
    cache = c.depth * 2 * c.num_kv_heads * Lp * c.head_dim * s["cache"]        # per-layer (k, v) of the prefix
    inputs = c.num_cameras * 3 * c.image_size ** 2 * FP32 + c.max_token_len * 9 + c.action_dim * FP32 + 3 * c.action_horizon * c.action_dim * FP32
    # the prefix pass (no grad) is over before the expert pass; its largest transient is one Gemma layer:
    # hidden states (4 x Lp x W_vlm), q / repeated k, v, gate / gelu / up (3 x Lp x mlp), and the
    # Lp x Lp mask: the bool mask and its cumsum comparisons (3 x 1 B), the zeros and the masked_fill bias
    # (a rough count, ~10%: --validate compares it with the tiny model's measured prefix pass)
    v = s["vlm"]
    encode = (4 * Lp * c.vlm_width + 3 * c.num_heads * Lp * c.head_dim + 3 * Lp * c.vlm_mlp_dim + 2 * Lp * Lp) * v + 3 * Lp * Lp
    expert = saved["layers"] + saved["once"] + saved["backward transient"]
    out = {"kv cache": cache, "inputs": inputs, "expert saved": expert, "attention (of expert saved)": saved["attention (of layers)"],
           "encode transient": encode, "prefix saved (LoRA)": 0, "total": cache + inputs + max(expert, encode)}
    if lora_rank:
        pre = prefix_lora_saved_bytes(c, s, lora_rank, backend, grouped)
        prefix = pre["layers"] + pre["once"]
        out["prefix saved (LoRA)"] = prefix
        # the prefix graph lives through the expert pass and its backward; the peak is one of the two backwards
        # (the no-grad prefix pass's transient is now made of the very tensors kept for backward)
        out["total"] = cache + inputs + prefix + saved["layers"] + saved["once"] + max(saved["backward transient"],
                                                                                      pre["backward transient"])
    return out


def lora_parameter_count(config, rank: int) -> int:
    """Adapter parameters of LoRA on the language model's 7 linears: r x (in + out) each, per layer."""
    W, M, nh, kvh, hd = config.vlm_width, config.vlm_mlp_dim, config.num_heads, config.num_kv_heads, config.head_dim
    shapes = [(W, nh * hd), (W, kvh * hd), (W, kvh * hd), (nh * hd, W), (W, M), (W, M), (M, W)]
    return config.depth * sum(rank * (i + o) for i, o in shapes)


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the `with` block and still alive, checked after every op
    (forward and backward): what an allocator must hold at least, without its fragmentation.
    Views and in-place results share an input's storage and are not new memory."""

    def __init__(self):
        super().__init__()
        self.live, self.peak = {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and not t._is_view() and t.untyped_storage()._cdata not in inputs:
                storage = t.untyped_storage()
                self.live.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        self.live = {k: v for k, v in self.live.items() if not v[0].expired()}
        self.peak = max(self.peak, sum(n for _, n in self.live.values()))
        return out


def measured_update_bytes(config, s: dict, batch: int, device: str, args: PPOArgs, lora_rank: int = 0,
                          train_vlm: bool = False) -> dict:
    """Peak live bytes of one update micro-batch through the real code: encode (no grad; with a graph
    under LoRA), step_logprob at random SDE steps j, backward; the whole of it and its two phases. Random
    weights (memory does not depend on them); the inputs are made outside and not counted."""
    torch.manual_seed(0)
    c = config
    with torch.device(device):
        policy = PI0Policy(c)
        obs = Observation(images=torch.rand(batch, c.num_cameras, 3, c.image_size, c.image_size) * 2 - 1,
                          image_masks=torch.ones(batch, c.num_cameras, dtype=torch.bool),
                          tokens=torch.randint(4, c.vocab_size - 1, (batch, c.max_token_len)),
                          token_masks=torch.ones(batch, c.max_token_len, dtype=torch.bool),
                          state=torch.randn(batch, c.action_dim))
        x_j = torch.randn(batch, c.action_horizon, c.action_dim)
        x_next, j = torch.randn_like(x_j), torch.randint(0, args.denoise_steps, (batch,))
    if not train_vlm:
        policy.freeze_vlm()
    policy.paligemma_with_expert.paligemma.to({2: torch.bfloat16, 4: torch.float32}[s["vlm"]])
    policy.paligemma_with_expert.gemma_expert.to({2: torch.bfloat16, 4: torch.float32}[s["expert"]])
    if lora_rank:
        from common.lora import apply_lora

        apply_lora(policy, lora_rank)

    def encode():
        with torch.set_grad_enabled(bool(lora_rank) or train_vlm):
            return policy.encode(obs)

    def stand_in_cache():
        """A PrefixCache of the right shapes and dtype, for where encode() cannot run (below)."""
        Lp, dtype = lengths(c)[0], {2: torch.bfloat16, 4: torch.float32}[s["vlm"]]
        with torch.device(device):
            kv = lambda: tuple(torch.randn(batch, c.num_kv_heads, Lp, c.head_dim, dtype=dtype) for _ in range(c.depth))  # noqa: E731
            return PrefixCache(kv(), kv(), torch.ones(batch, Lp, dtype=torch.bool), torch.randn(batch, c.vlm_width),
                               torch.randn(batch, c.action_dim))

    def expert(cache):
        logprob, _ = step_logprob(policy, cache, x_j, x_next, j, args, c.action_dim)
        logprob.mean().backward()

    peaks = {"update": None, "encode": None}
    if device == "meta":  # the prefix pass trims unused prompt slots (a data-dependent op): no meta kernel
        cache = stand_in_cache()
        expert(cache)  # the first backward allocates .grad: static memory, not the micro-batch's
    else:
        expert(encode())
        for phase, fn in (("update", lambda: expert(encode())), ("encode", encode)):
            with LiveBytes() as tracker:
                fn()
            peaks[phase] = tracker.peak
        cache = encode()
    with LiveBytes() as tracker:  # the cache is made outside: not counted
        expert(cache)
    peaks["expert"] = tracker.peak
    return peaks


def check_args(args: Args):
    """Every flag checked before anything is computed (UsageError: one `error:` line)."""
    from common.envs import check_env_name

    if args.preset not in ("pi0", "pi05"):
        raise UsageError(f"--preset must be pi0 or pi05 (the paper's presets), got {args.preset!r}")
    check_env_name(args.env)
    check_at_least(1, world_size=args.world_size, critic_hidden=args.critic_hidden, fsdp_world_size=args.fsdp_world_size)
    check_at_least(0, reserve_gb=args.reserve_gb)
    if not args.gpu_gb > args.reserve_gb:
        raise UsageError(f"--gpu-gb {args.gpu_gb} must exceed --reserve-gb {args.reserve_gb}")
    check_writable(ROOT / args.out, "--out")


def setting_bytes(config, counts: dict, s: dict, micro: int, storage: int, world_size: int, budget: float,
                  grouped: bool = True, lora_rank: int = 0) -> dict:
    """Static bytes, per-sample bytes, the peak at `micro` and the largest micro-batch within `budget` for one
    setting: precision scheme s, grouped or repeated KV heads, LoRA rank (0: the VLM frozen as is)."""
    lora = lora_parameter_count(config, lora_rank) if lora_rank else 0
    trainable = counts["expert (trainable)"] + counts["heads (trainable)"] + counts["critic (trainable)"] + lora
    st = static_bytes(counts, s)
    st["LoRA adapters: fp32 weights, gradients, AdamW"] = lora * 4 * FP32
    static = sum(st.values())
    other = {"gradient all-reduce": 2 * FP32 * trainable if world_size > 1 else 0, "AdamW step": FP32 * trainable}
    sample = per_sample_bytes(config, s, "fused", grouped, lora_rank)
    fits = math.floor((budget - static - storage) / sample["total"])
    fits = fits if static + storage + max(other.values()) <= budget else 0
    return {"lora_parameters": lora, "static": st, "static_total": static, "other_phases": other, "per_sample": sample,
            "peak": static + storage + max(micro * sample["total"], max(other.values())), "max_micro_batch": fits}


def predicted_update_peak(preset_name: str = "pi0", scheme: str = "vlm-bf16", micro: int = 32, lora_rank: int = 0,
                          grouped: bool = True, critic_hidden: int = 512) -> float:
    """Bytes at the peak of one update step at micro-batch `micro` without rollout storage: what
    tools/gpu_check.py compares with torch.cuda.max_memory_allocated of the live 3B update."""
    config = make_config(preset_name)
    r = setting_bytes(config, count_parameters(config, critic_hidden), SCHEMES[scheme], micro, 0, 1, 1e18,
                      grouped, lora_rank)
    return r["peak"]


def main(args: Args):
    check_args(args)
    start = time.time()
    config = make_config(args.preset)
    hp = preset(args.env, args.preset)
    ppo_args = PPOArgs(denoise_steps=hp["denoise_steps"], noise_level=hp["noise_level"], replan_steps=hp["replan_steps"])
    counts = count_parameters(config, args.critic_hidden)
    trainable = counts["expert (trainable)"] + counts["heads (trainable)"] + counts["critic (trainable)"]
    Lp, Ls, Nk = lengths(config)
    print(f"{args.preset}: prefix {Lp} tokens ({config.num_cameras} cameras x {(config.image_size // config.patch_size) ** 2}"
          f" + {config.max_token_len}), suffix {Ls}, expert width {config.expert_width}, depth {config.depth}")
    print("| part | parameters |\n|---|---|")
    for k, v in counts.items():
        print(f"| {k} | {v / 1e6:,.1f} M |")
    print(f"| total (policy + critic) | {sum(counts.values()) / 1e6:,.1f} M |")

    # rollout storage kept on the GPU through the update (flow_sde_ppo.py: x_j, x_next (E,T,N,H,D) fp32,
    # critic inputs (E,T,N,K,W) fp32 for π0, (E,T,N,1,W_vlm) for π0.5, 6 (E,T,N) fp32 and j int64);
    # images and states stay in host memory (numpy)
    decisions = hp["rollout_epochs"] * (hp["interaction_steps"] // hp["replan_steps"]) * hp["num_envs"] // args.world_size
    K_in, W_c = (1, config.vlm_width) if config.variant == "pi05" else (hp["denoise_steps"], config.expert_width)
    storage = decisions * (2 * config.action_horizon * config.action_dim * FP32 + K_in * W_c * FP32 + 6 * FP32 + 8)
    micro = hp["micro_batch_size"]

    report = {"args": vars(args), "parameters": counts, "trainable": trainable, "preset": hp, "schemes": {}}
    budget = args.gpu_gb * GB - args.reserve_gb * GB
    for name, s in SCHEMES.items():
        st = static_bytes(counts, s)
        static = sum(st.values())
        # phases outside the activations: all_reduce_gradients keeps the old gradients, one flat copy and
        # the new clones alive together (+8 B per trainable value); foreach AdamW makes a sqrt(v) temporary (+4 B)
        other = {"gradient all-reduce": 2 * FP32 * trainable if args.world_size > 1 else 0, "AdamW step": FP32 * trainable}
        sample = per_sample_bytes(config, s, "fused")
        fits = math.floor((budget - static - storage) / sample["total"])
        fits = fits if static + storage + max(other.values()) <= budget else 0
        report["schemes"][name] = {"static": st, "static_total": static, "rollout_storage": storage, "other_phases": other,
                                   "per_sample_fused": sample, "per_sample_math": per_sample_bytes(config, s, "math"),
                                   "peak_at_preset_micro_batch": static + storage + max(micro * sample["total"], max(other.values())),
                                   "max_micro_batch": fits}

    print(f"\none GPU of {args.gpu_gb:.0f} GB, {args.reserve_gb:.0f} GB kept free; {args.env} preset: micro-batch {micro}, "
          f"{decisions} decisions of rollout storage per GPU (world size {args.world_size}); GB = 1e9 bytes")
    names = list(SCHEMES)
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    rows = [(k, lambda r, k=k: r["static"][k]) for k in static_bytes(counts, SCHEMES["mixed"])]
    rows += [("static total", lambda r: r["static_total"]), ("rollout storage", lambda r: r["rollout_storage"]),
             ("all-reduce / AdamW step transient", lambda r: max(r["other_phases"].values())),
             ("per sample: prefix KV cache", lambda r: r["per_sample_fused"]["kv cache"]),
             ("per sample: expert activations + backward", lambda r: r["per_sample_fused"]["expert saved"]),
             ("  of which attention (grouped KV)", lambda r: r["per_sample_fused"]["attention (of expert saved)"]),
             ("per sample: prefix pass transient", lambda r: r["per_sample_fused"]["encode transient"]),
             ("per sample (fused attention)", lambda r: r["per_sample_fused"]["total"]),
             ("per sample (math attention)", lambda r: r["per_sample_math"]["total"]),
             (f"peak at micro-batch {micro}", lambda r: r["peak_at_preset_micro_batch"])]
    for label, get in rows:
        vals = [get(report["schemes"][n]) for n in names]
        unit = (lambda v: f"{v / 1e6:.1f} MB") if "per sample" in label or "of which" in label else (lambda v: f"{v / GB:.2f} GB")
        print(f"| {label} | " + " | ".join(unit(v) for v in vals) + " |")
    print("| largest micro-batch that fits | " + " | ".join(str(report["schemes"][n]["max_micro_batch"]) for n in names) + " |")

    # frozen VLM vs LoRA r = 32 on the language model, before (repeated KV) and after (grouped KV) the attention change
    settings = {"frozen VLM, repeated KV (before)": dict(grouped=False, lora_rank=0),
                "frozen VLM, grouped KV": dict(grouped=True, lora_rank=0),
                "LoRA r=32, repeated KV": dict(grouped=False, lora_rank=32),
                "LoRA r=32, grouped KV": dict(grouped=True, lora_rank=32)}
    for scheme in ("vlm-bf16", "fp32"):
        report[f"settings ({scheme})"] = {name: setting_bytes(config, counts, SCHEMES[scheme], micro, storage, args.world_size,
                                                              budget, **kw) for name, kw in settings.items()}
    rs = report["settings (vlm-bf16)"]
    print(f"\nVLM bf16, expert fp32 (--vlm-dtype auto on CUDA); LoRA: {rs['LoRA r=32, grouped KV']['lora_parameters'] / 1e6:.1f} M "
          "fp32 adapter parameters on the language model's 7 linears (SigLIP frozen); same GPU and rollout storage")
    print("| | " + " | ".join(rs) + " |\n|---|" + "---|" * len(rs))
    for label, get, unit in [("static (weights, gradients, AdamW)", lambda r: r["static_total"], GB),
                             ("per sample: expert activations + backward", lambda r: r["per_sample"]["expert saved"], 1e6),
                             ("  of which attention", lambda r: r["per_sample"]["attention (of expert saved)"], 1e6),
                             ("per sample: prefix pass kept for backward (LoRA)", lambda r: r["per_sample"]["prefix saved (LoRA)"], 1e6),
                             ("per sample (fused attention)", lambda r: r["per_sample"]["total"], 1e6),
                             (f"peak at micro-batch {micro}", lambda r: r["peak"], GB)]:
        print(f"| {label} | " + " | ".join(f"{get(r) / unit:.2f} GB" if unit == GB else f"{get(r) / unit:.1f} MB" for r in rs.values()) + " |")
    print("| largest micro-batch that fits | " + " | ".join(str(r["max_micro_batch"]) for r in rs.values()) + " |")

    # full --train-vlm (every weight fp32 and trained): one GPU, plain torchrun on 8, FSDP2 on 8
    storage_one = storage * args.world_size  # the rollout storage of all envs on one GPU
    full = {"1 GPU": full_vlm_bytes(config, counts, micro, storage_one, 1, budget, fsdp=False),
            f"{args.fsdp_world_size} GPUs, plain torchrun": full_vlm_bytes(config, counts, micro, storage_one, args.fsdp_world_size,
                                                                        budget, fsdp=False),
            f"{args.fsdp_world_size} GPUs, FSDP2 (--fsdp)": full_vlm_bytes(config, counts, micro, storage_one, args.fsdp_world_size,
                                                                        budget, fsdp=True)}
    report["full --train-vlm (fp32)"] = full
    any_full = next(iter(full.values()))
    print(f"\nfull --train-vlm: {any_full['trainable'] / 1e9:.2f} B trainable values, all fp32 (weights, gradients, AdamW), "
          f"the prefix pass kept for backward through the language model and SigLIP; micro-batch {micro}; per GPU")
    print("| | " + " | ".join(full) + " |\n|---|" + "---|" * len(full))
    for label, get, unit in [("static (weights, gradients, AdamW)", lambda r: r["static_total"], GB),
                             ("all-reduce / AdamW step / rollout-copy phase", lambda r: max(r["other_phases"].values()), GB),
                             ("FSDP in flight: unsharded root + 2 layers (params, gradients)", lambda r: r["in_flight"], GB),
                             ("per sample: language model prefix kept for backward", lambda r: r["per_sample"]["language model saved"], 1e6),
                             ("per sample: SigLIP kept for backward", lambda r: r["per_sample"]["SigLIP saved"], 1e6),
                             ("per sample: expert activations + backward", lambda r: r["per_sample"]["expert saved"], 1e6),
                             ("per sample in all", lambda r: r["per_sample"]["total"], 1e6),
                             (f"peak at micro-batch {micro}", lambda r: r["peak"], GB)]:
        print(f"| {label} | " + " | ".join(f"{get(r) / unit:.2f} GB" if unit == GB else f"{get(r) / unit:,.0f} MB" for r in full.values()) + " |")
    print("| largest micro-batch that fits | " + " | ".join(str(r["max_micro_batch"]) for r in full.values()) + " |")

    if args.validate:
        print("\nvalidation: analytic per-sample bytes vs live-tensor tracking of the real update (slope over two batches)")
        import common.policy as policy_module

        tiny = make_config("tiny", image_size=64, num_cameras=1, max_token_len=16)
        checks = [  # label, config, device, scheme, backend, batches, grouped KV, LoRA rank
            ("tiny (embedded default), CPU", tiny, "cpu", "fp32", "fused", (32, 64), True, 0),
            ("tiny, CPU, repeated KV (before)", tiny, "cpu", "fp32", "fused", (32, 64), False, 0),
            ("tiny, CPU, LoRA r=8", tiny, "cpu", "fp32", "fused", (32, 64), True, 8),
            ("tiny, CPU, LoRA r=8", tiny, "cpu", "vlm-bf16", "fused", (32, 64), True, 8),
            (f"{args.preset}, meta, repeated KV", config, "meta", "fp32", "math", (1, 2), False, 0),
            (f"{args.preset}, meta, repeated KV", config, "meta", "mixed", "math", (1, 2), False, 0),
            (f"{args.preset}, meta, repeated KV", config, "meta", "vlm-bf16", "math", (1, 2), False, 0),
            (f"{args.preset}, meta, grouped KV", config, "meta", "vlm-bf16", "math", (1, 2), True, 0)]
        report["validation"] = []
        for label, cfg, device, scheme, backend, (b1, b2), grouped, rank in checks:
            s = SCHEMES[scheme]
            policy_module.GROUPED_KV = grouped
            try:
                p1, p2 = (measured_update_bytes(cfg, s, b, device, ppo_args, lora_rank=rank) for b in (b1, b2))
            finally:
                policy_module.GROUPED_KV = True
            # under LoRA the expert's backward runs on into the prefix graph: no expert-only figure to compare
            measured = {k: (p2[k] - p1[k]) / (b2 - b1) for k in p1 if p1[k] is not None and not (rank and k == "expert")}
            a = per_sample_bytes(cfg, s, backend, grouped, rank)
            analytic = {"update": a["total"] - a["inputs"],
                        "encode": a["kv cache"] + (a["prefix saved (LoRA)"] if rank else a["encode transient"]),
                        "expert": a["expert saved"]}
            report["validation"].append({"model": label, "scheme": scheme, "backend": backend, "batches": [b1, b2],
                                         "grouped_kv": grouped, "lora_rank": rank,
                                         "measured_per_sample": measured, "analytic_per_sample": analytic})
            print(f"  {label} / {scheme} / {backend} attention, MB per sample, measured (analytic):  " + ",  ".join(
                f"{k} {measured[k] / 1e6:.3f} ({analytic[k] / 1e6:.3f}, {analytic[k] / measured[k] - 1:+.0%})" for k in measured))
        # full --train-vlm: the prefix pass (language model + SigLIP) with a graph, everything fp32
        p1, p2 = (measured_update_bytes(tiny, SCHEMES["fp32"], b, "cpu", ppo_args, train_vlm=True) for b in (32, 64))
        measured = {k: (p2[k] - p1[k]) / 32 for k in ("update", "encode")}
        a = full_vlm_per_sample_bytes(tiny)
        analytic = {"update": a["total"] - a["inputs"], "encode": a["kv cache"] + a["language model saved"] + a["SigLIP saved"]}
        report["validation"].append({"model": "tiny, CPU, full --train-vlm", "scheme": "fp32", "backend": "fused",
                                     "batches": [32, 64], "measured_per_sample": measured, "analytic_per_sample": analytic})
        print("  tiny, CPU, full --train-vlm / fp32 / fused attention, MB per sample, measured (analytic):  " + ",  ".join(
            f"{k} {measured[k] / 1e6:.3f} ({analytic[k] / 1e6:.3f}, {analytic[k] / measured[k] - 1:+.0%})" for k in measured))
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
