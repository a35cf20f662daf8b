"""π0 / π0.5: PaliGemma (SigLIP + Gemma 2B) with a Gemma-300M flow-matching action expert.

Faithful to openpi's PyTorch model (src/openpi/models_pytorch/pi0_pytorch.py), built from unpatched
transformers 5.x blocks. Parameter names are openpi's, so `state_dict()` keys ARE openpi's keys.

Time convention (openpi; the opposite of Lipman et al.):
    t = 1 is pure noise, t = 0 is the action.
    x_t = t * noise + (1 - t) * action          (linear path)
    u   = noise - action                        (target velocity, d x_t / d t)
    Euler step from t to t - Δ:  x_{t-Δ} = x_t - Δ * v(x_t, t)

Token layout (big_vision cumulative masks, `_att_2d`):
    prefix = [image tokens of every camera][language tokens]    all attend bidirectionally (ar=0)
    suffix π0   = [state token (ar=1)][action tokens (ar=1, 0, 0, ...)]
    suffix π0.5 = [action tokens (ar=1, 0, 0, ...)]  (state, if any, is text in the prompt)
Each layer runs both streams with their own norms / q,k,v,o projections / MLP and ONE attention over the
concatenated sequence. Inference runs the prefix once (`encode`) and keeps its per-layer (k, v);
every denoising step (`velocity`) runs only the suffix against that cache.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GemmaConfig, GemmaForCausalLM, PaliGemmaConfig, PaliGemmaForConditionalGeneration
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb


@dataclass
class PI0Config:
    variant: str = "pi0"                 # "pi0" | "pi05"
    action_dim: int = 32                 # D (state and actions are zero-padded to D)
    state_dim: int | None = None         # π0's padded state width (LeRobot's max_state_dim); None: D
    action_horizon: int = 50             # H
    max_token_len: int = 48              # L (openpi: 48 for π0, 200 for π0.5)
    image_size: int = 224                # R
    num_cameras: int = 3
    discrete_state_input: bool = True    # π0.5 only: state as discretised text in the prompt
    vocab_size: int = 257152
    # SigLIP vision tower
    vision_width: int = 1152
    vision_depth: int = 27
    vision_mlp_dim: int = 4304
    vision_heads: int = 16
    patch_size: int = 14
    # Gemma 2B (VLM) and Gemma 300M (action expert); both share depth, heads and head_dim
    vlm_width: int = 2048
    vlm_mlp_dim: int = 16384
    expert_width: int = 1024
    expert_mlp_dim: int = 4096
    depth: int = 18
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    # flow matching
    min_period: float = 4e-3
    max_period: float = 4.0
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0

    def __post_init__(self):
        if self.state_dim is None:
            self.state_dim = self.action_dim
        if self.variant not in ("pi0", "pi05"):
            raise ValueError(f"PI0Config.variant={self.variant!r}; allowed values: 'pi0', 'pi05'")
        if self.expert_width % 2:
            raise ValueError(f"PI0Config.expert_width={self.expert_width} must be even (sinusoidal time embedding)")


_TINY = dict(action_dim=8, action_horizon=8, max_token_len=32, image_size=32, num_cameras=2, vocab_size=512,
             vision_width=64, vision_depth=1, vision_mlp_dim=128, vision_heads=2, patch_size=8,
             vlm_width=128, vlm_mlp_dim=256, expert_width=64, expert_mlp_dim=128,
             depth=2, num_heads=2, num_kv_heads=1, head_dim=32)
PRESETS = {
    "pi0": dict(variant="pi0"),
    "pi05": dict(variant="pi05", max_token_len=200),
    "tiny": dict(variant="pi0", **_TINY),
    "tiny-pi05": dict(_TINY, variant="pi05", max_token_len=64),
}


def make_config(preset: str, **overrides) -> PI0Config:
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}; allowed values: {sorted(PRESETS)}")
    return PI0Config(**{**PRESETS[preset], **overrides})


@dataclass
class Observation:
    images: Tensor        # (B, n_cam, 3, R, R) float32 in [-1, 1]
    image_masks: Tensor   # (B, n_cam) bool
    tokens: Tensor        # (B, L) int64
    token_masks: Tensor   # (B, L) bool
    state: Tensor         # (B, state_dim) float32, normalised and padded (unused by π0.5)


@dataclass(frozen=True)
class PrefixCache:
    """Immutable result of `encode`: per-layer prefix (k, v) after RoPE, the prefix padding mask,
    the pooled prefix features and the (π0) state. Reused by every denoising step."""
    keys: tuple           # depth x (B, n_kv, Lp, head_dim), VLM dtype
    values: tuple         # depth x (B, n_kv, Lp, head_dim)
    pad_mask: Tensor      # (B, Lp) bool
    features: Tensor      # (B, vlm_width) fp32: masked mean of the VLM's final-norm prefix output
    state: Tensor         # (B, D) fp32

    def _map(self, fn):
        return PrefixCache(tuple(fn(k) for k in self.keys), tuple(fn(v) for v in self.values),
                           fn(self.pad_mask), fn(self.features), fn(self.state))

    def index(self, idx) -> "PrefixCache":
        return self._map(lambda x: x[idx])

    def repeat(self, n: int) -> "PrefixCache":
        """Each row repeated n times, consecutively: row b -> rows b*n .. b*n+n-1."""
        return self._map(lambda x: x.repeat_interleave(n, dim=0))

    def detach(self) -> "PrefixCache":
        return self._map(lambda x: x.detach())

    @property
    def batch_size(self) -> int:
        return self.pad_mask.shape[0]


class AdaRMSNorm(nn.Module):
    """π0.5 adaptive RMSNorm: (scale, shift, gate) = dense(cond); y = rms(x) * (1 + scale) + shift, and the
    residual branch it feeds is gated: x + gate * f(y). Parameter names follow openpi (`dense.weight`,
    `dense.bias`; no `weight`). openpi zero-initialises dense.weight, so at init the condition has no effect.
    """

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.dense.weight)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        scale, shift, gate = self.dense(cond.to(self.dense.weight.dtype)).float()[:, None, :].chunk(3, dim=-1)
        return (normed * (1 + scale) + shift).to(x.dtype), gate.to(x.dtype)


def _norm(norm: nn.Module, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Plain Gemma RMSNorm (no gate) or adaRMS (gate); keeps the stream's dtype."""
    if isinstance(norm, AdaRMSNorm):
        return norm(x, cond)
    return norm(x), None


def _residual(x: Tensor, y: Tensor, gate: Tensor | None) -> Tensor:
    return x + y if gate is None else x + y * gate


def _att_2d(pad: Tensor, ar: Tensor) -> Tensor:
    """big_vision mask: token i sees valid token j iff cumsum(ar)[j] <= cumsum(ar)[i]. (B, N, N) bool."""
    cum = ar.long().cumsum(dim=1)
    return (cum[:, None, :] <= cum[:, :, None]) & pad[:, None, :] & pad[:, :, None]


GROUPED_KV = True   # False: the previous attention (KV heads repeated to every query head), kept as a reference
_SDPA_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")   # torch >= 2.5


def _attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float) -> Tensor:
    """Grouped-query attention: q (B, heads, Nq, hd) over k, v (B, n_kv, Nk, hd); query head h reads KV head
    h // (heads / n_kv). Repeating k, v to all heads (`repeat_interleave`) makes a copy that the backward
    keeps, per layer (bench/memory.py: most of the expert's activations at 3B). Instead:
      n_kv = 1 (π0, π0.5): a stride-0 `expand`, a view: the same kernel and numbers, no copy;
      n_kv > 1: SDPA's enable_gqa on CPU (its flash kernel groups natively); on CUDA, enable_gqa with a mask
      falls back to the math kernel (fp32 Nq x Nk probabilities, pytorch/pytorch#139586): repeat there."""
    heads, n_kv = q.shape[1], k.shape[1]
    if heads != n_kv and GROUPED_KV and n_kv == 1:
        k, v = k.expand(-1, heads, -1, -1), v.expand(-1, heads, -1, -1)
    elif heads != n_kv and GROUPED_KV and _SDPA_GQA and q.device.type == "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale, enable_gqa=True)
    elif heads != n_kv:
        k, v = k.repeat_interleave(heads // n_kv, 1), v.repeat_interleave(heads // n_kv, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)


def _sinusoidal(t: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """openpi time embedding, computed in float64 where available: (B,) -> (B, dim) fp32."""
    dtype = torch.float32 if t.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (2 * math.pi / period)[None, :] * t.to(dtype)[:, None]
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()


class PI0Policy(nn.Module):
    """encode(obs) -> PrefixCache once per observation; velocity(cache, x_t, t) per denoising step."""

    def __init__(self, config: PI0Config):
        super().__init__()
        c = self.config = config
        self.expert_width, self.vlm_width = c.expert_width, c.vlm_width
        self.lora_spec = None   # common/lora.py's LoraSpec once apply_lora has injected adapters
        gemma = dict(num_hidden_layers=c.depth, num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
                     head_dim=c.head_dim, vocab_size=c.vocab_size, hidden_activation="gelu_pytorch_tanh")
        vision = SiglipVisionConfig(hidden_size=c.vision_width, intermediate_size=c.vision_mlp_dim,
                                    num_hidden_layers=c.vision_depth, num_attention_heads=c.vision_heads,
                                    patch_size=c.patch_size, image_size=c.image_size, vision_use_head=False)
        vlm_cfg = PaliGemmaConfig(
            text_config=dict(model_type="gemma", hidden_size=c.vlm_width, intermediate_size=c.vlm_mlp_dim, **gemma),
            vision_config=vision.to_dict(), projection_dim=c.vlm_width, image_token_id=c.vocab_size - 1)
        paligemma = PaliGemmaForConditionalGeneration(vlm_cfg)
        # transformers 5 dropped SigLIP's `vision_model` level; put it back so keys match openpi's
        # `paligemma.model.vision_tower.vision_model.*`.
        paligemma.model.vision_tower = nn.Module()
        paligemma.model.vision_tower.vision_model = SiglipVisionModel(vision)
        expert = GemmaForCausalLM(GemmaConfig(hidden_size=c.expert_width, intermediate_size=c.expert_mlp_dim, **gemma))
        expert.model.embed_tokens = None          # the expert reads embeddings, never token ids (as openpi)
        expert.lm_head.weight.requires_grad_(False)  # unused; kept only so checkpoints match openpi's keys
        if c.variant == "pi05":                   # adaRMS in every expert norm, conditioned on the time MLP
            for layer in expert.model.layers:
                layer.input_layernorm = AdaRMSNorm(c.expert_width, c.expert_width)
                layer.post_attention_layernorm = AdaRMSNorm(c.expert_width, c.expert_width)
            expert.model.norm = AdaRMSNorm(c.expert_width, c.expert_width)
        self.paligemma_with_expert = nn.Module()
        self.paligemma_with_expert.paligemma = paligemma
        self.paligemma_with_expert.gemma_expert = expert

        W, D = c.expert_width, c.action_dim
        self.action_in_proj = nn.Linear(D, W)
        self.action_out_proj = nn.Linear(W, D)
        if c.variant == "pi05":
            self.time_mlp_in, self.time_mlp_out = nn.Linear(W, W), nn.Linear(W, W)
        else:
            self.state_proj = nn.Linear(c.state_dim, W)
            self.action_time_mlp_in, self.action_time_mlp_out = nn.Linear(2 * W, W), nn.Linear(W, W)

    # ---- handles on the blocks ------------------------------------------------------------------
    @property
    def _vlm(self):
        return self.paligemma_with_expert.paligemma.model.language_model

    @property
    def _expert(self):
        return self.paligemma_with_expert.gemma_expert.model

    def freeze_vlm(self):
        """Train the action expert and heads only."""
        for p in self.paligemma_with_expert.paligemma.parameters():
            p.requires_grad_(False)

    def set_vlm_dtype(self, dtype: torch.dtype):
        """E.g. bf16 on CUDA for the PaliGemma part; the expert, heads and outputs stay as they are (fp32)."""
        self.paligemma_with_expert.paligemma.to(dtype)
        return self

    # ---- prefix ----------------------------------------------------------------------------------
    def _embed_prefix(self, obs: Observation) -> tuple[Tensor, Tensor]:
        B, n_cam = obs.images.shape[:2]
        pg = self.paligemma_with_expert.paligemma.model
        dtype = pg.multi_modal_projector.linear.weight.dtype
        pixels = obs.images.flatten(0, 1).to(dtype)                        # (B*n_cam, 3, R, R)
        img = pg.multi_modal_projector(pg.vision_tower.vision_model(pixels).last_hidden_state)
        P = img.shape[1]
        img = img.reshape(B, n_cam * P, -1)                                # (B, n_cam*P, W_vlm)
        img_pad = obs.image_masks.bool().repeat_interleave(P, dim=1)       # per-camera mask over its tokens
        # prompt slots past the last one any row uses are masked for every query: drop them, so neither
        # the prefix pass nor any denoising step spends time on them (the same numbers, up to rounding)
        used = obs.token_masks.bool().any(dim=0).nonzero()
        L = int(used[-1]) + 1 if len(used) else 0
        # transformers 5's Gemma embedding already multiplies by sqrt(width) (openpi does it by hand)
        lang = self._vlm.embed_tokens(obs.tokens[:, :L]).to(dtype)         # (B, L, W_vlm)
        return torch.cat([img, lang], dim=1), torch.cat([img_pad, obs.token_masks[:, :L].bool()], dim=1)

    # ---- suffix ----------------------------------------------------------------------------------
    def _embed_suffix(self, state: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Returns suffix embeddings (B, Ls, W) fp32, ar mask (Ls,) and the adaRMS condition (π0.5)."""
        c = self.config
        if x_t.shape[1:] != (c.action_horizon, c.action_dim) or x_t.shape[0] != state.shape[0]:
            raise ValueError(f"x_t must be (B={state.shape[0]}, H={c.action_horizon}, D={c.action_dim}), "
                             f"got {tuple(x_t.shape)}")
        x_t, t = x_t.float(), t.float().expand(x_t.shape[0])   # t: (B,) or a scalar
        time_emb = _sinusoidal(t, c.expert_width, c.min_period, c.max_period)          # (B, W)
        action_emb = self.action_in_proj(x_t)                                           # (B, H, W)
        ar = [1] + [0] * (c.action_horizon - 1)   # actions: a new block, bidirectional within
        if c.variant == "pi05":
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time_emb))))       # adaRMS condition
            emb = action_emb
        else:  # π0: concat(action, time) -> MLP, then prepend the state token
            cond = None
            at = torch.cat([action_emb, time_emb[:, None, :].expand_as(action_emb)], dim=-1)
            at = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(at)))
            emb = torch.cat([self.state_proj(state.float())[:, None, :], at], dim=1)
            ar = [1] + ar                          # the prefix does not see the state, the state not the actions
        return emb, torch.tensor(ar, dtype=torch.bool, device=x_t.device), cond

    # ---- the joint layer loop --------------------------------------------------------------------
    def _layers(self, streams: list, mask: Tensor, positions: Tensor, past: PrefixCache | None = None):
        """streams: list of (hidden, gemma_model, adarms_cond) in sequence order (prefix first).
        mask (B, N_query, N_key) bool; positions (B, N_query). With `past`, keys/values of the cached prefix
        are prepended. Returns final-norm outputs (one per stream) and the per-layer (k, v) of all streams."""
        c = self.config
        hs = [h for h, _, _ in streams]
        lengths = [h.shape[1] for h in hs]
        # attention runs in the dtype of the last stream (the expert's, when it is present)
        att_dtype = hs[-1].dtype
        bias = torch.zeros(mask.shape, dtype=att_dtype, device=mask.device)
        bias = bias.masked_fill(~mask, torch.finfo(att_dtype).min)[:, None]   # (B, 1, Nq, Nk); no NaN rows
        cos, sin = self._vlm.rotary_emb(hs[-1], positions)
        kv_out = []
        for i in range(c.depth):
            qs, ks, vs, gates = [], [], [], []
            for h, (_, model, cond) in zip(hs, streams):
                layer = model.layers[i]
                x, g = _norm(layer.input_layernorm, h, cond)
                gates.append(g)
                B, N = x.shape[:2]
                qs.append(layer.self_attn.q_proj(x).view(B, N, -1, c.head_dim).transpose(1, 2).to(att_dtype))
                ks.append(layer.self_attn.k_proj(x).view(B, N, -1, c.head_dim).transpose(1, 2).to(att_dtype))
                vs.append(layer.self_attn.v_proj(x).view(B, N, -1, c.head_dim).transpose(1, 2).to(att_dtype))
            q, k = apply_rotary_pos_emb(torch.cat(qs, 2), torch.cat(ks, 2), cos.to(att_dtype), sin.to(att_dtype))
            v = torch.cat(vs, 2)
            kv_out.append((k, v))
            if past is not None:
                k = torch.cat([past.keys[i].to(att_dtype), k], dim=2)
                v = torch.cat([past.values[i].to(att_dtype), v], dim=2)
            att = _attention(q, k, v, bias, scale=c.head_dim ** -0.5)  # (B, heads, N_total, head_dim)
            att = att.transpose(1, 2).flatten(2)                        # (B, N_total, heads*head_dim)
            new_hs = []
            for h, (_, model, cond), g, a in zip(hs, streams, gates, att.split(lengths, dim=1)):
                layer = model.layers[i]
                h = _residual(h, layer.self_attn.o_proj(a.to(layer.self_attn.o_proj.weight.dtype)), g)
                x, g2 = _norm(layer.post_attention_layernorm, h, cond)
                new_hs.append(_residual(h, layer.mlp(x), g2))
            hs = new_hs
        outs = [_norm(model.norm, h, cond)[0] for h, (_, model, cond) in zip(hs, streams)]
        return outs, kv_out

    @staticmethod
    def _pool(out: Tensor, pad: Tensor) -> Tensor:
        w = pad.float()[..., None]
        return (out.float() * w).sum(1) / w.sum(1).clamp(min=1.0)

    # ---- public API ------------------------------------------------------------------------------
    def encode(self, obs: Observation) -> PrefixCache:
        """Run the prefix (images + language) once; return its per-layer KV cache."""
        emb, pad = self._embed_prefix(obs)
        positions = pad.long().cumsum(1) - 1
        (out,), kv = self._layers([(emb, self._vlm, None)], _att_2d(pad, torch.zeros_like(pad)), positions)
        return PrefixCache(tuple(k for k, _ in kv), tuple(v for _, v in kv), pad, self._pool(out, pad),
                           obs.state.float())

    def _suffix_mask(self, prefix_pad: Tensor, ar: Tensor) -> tuple[Tensor, Tensor]:
        B, Ls = prefix_pad.shape[0], ar.shape[0]
        suf_pad = torch.ones(B, Ls, dtype=torch.bool, device=prefix_pad.device)
        mask = torch.cat([prefix_pad[:, None, :].expand(B, Ls, -1), _att_2d(suf_pad, ar[None].expand(B, Ls))], 2)
        positions = prefix_pad.long().sum(1, keepdim=True) + torch.arange(Ls, device=ar.device)[None]  # offset
        return mask, positions

    def velocity(self, cache: PrefixCache, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """v(x_t, t) with the openpi convention (module docstring). x_t (B, H, D), t (B,) fp32.
        Returns v (B, H, D) fp32 and the expert's final-norm features at the action tokens (B, H, W) fp32."""
        emb, ar, cond = self._embed_suffix(cache.state, x_t, t)
        mask, positions = self._suffix_mask(cache.pad_mask, ar)
        emb = emb.to(self._expert.layers[0].mlp.up_proj.weight.dtype)
        (out,), _ = self._layers([(emb, self._expert, cond)], mask, positions, past=cache)
        feats = out[:, -self.config.action_horizon:].float()
        return self.action_out_proj(feats), feats

    def prefix_features(self, cache: PrefixCache) -> Tensor:
        return cache.features

    def velocity_full(self, obs: Observation, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The same velocity from ONE joint pass over [prefix, suffix] (openpi's training forward)."""
        pre, pre_pad = self._embed_prefix(obs)
        suf, ar, cond = self._embed_suffix(obs.state, x_t, t)
        suf = suf.to(self._expert.layers[0].mlp.up_proj.weight.dtype)
        B, Ls = suf.shape[:2]
        pad = torch.cat([pre_pad, torch.ones(B, Ls, dtype=torch.bool, device=pre_pad.device)], 1)
        ar_all = torch.cat([torch.zeros_like(pre_pad), ar[None].expand(B, Ls)], 1)
        (_, out), _ = self._layers([(pre, self._vlm, None), (suf, self._expert, cond)], _att_2d(pad, ar_all),
                                   pad.long().cumsum(1) - 1)
        feats = out[:, -self.config.action_horizon:].float()
        return self.action_out_proj(feats), feats

    @torch.no_grad()
    def sample_actions(self, obs: Observation, noise: Tensor | None = None, num_steps: int = 10) -> Tensor:
        """Deterministic Euler integration of the ODE from t=1 (noise) to t=0 (action): (B, H, D) fp32."""
        B, c = obs.state.shape[0], self.config
        x = noise if noise is not None else torch.randn(B, c.action_horizon, c.action_dim, device=obs.state.device)
        x, dt = x.float(), 1.0 / num_steps
        cache = self.encode(obs)
        for k in range(num_steps):
            t = torch.full((B,), 1.0 - k * dt, dtype=torch.float32, device=x.device)
            x = x - dt * self.velocity(cache, x, t)[0]          # x_{t-Δ} = x_t - Δ v
        return x

    def sft_loss(self, obs: Observation, actions: Tensor, noise: Tensor | None = None,
                 time: Tensor | None = None) -> Tensor:
        """Flow-matching loss, mean over (B, H, D): ||v(x_t, t) - (noise - action)||², t ~ Beta(1.5, 1)·0.999 + 0.001."""
        actions = actions.float()
        B = actions.shape[0]
        if noise is None:
            noise = torch.randn_like(actions)
        if time is None:
            beta = torch.distributions.Beta(torch.tensor(self.config.time_beta_alpha),
                                            torch.tensor(self.config.time_beta_beta))
            time = (beta.sample((B,)) * 0.999 + 0.001).to(actions.device)
        t = time.float()[:, None, None]
        x_t = t * noise + (1 - t) * actions
        v, _ = self.velocity_full(obs, x_t, time)
        return F.mse_loss(v, noise - actions)


def count_parameters(config: PI0Config) -> dict:
    """Parameter counts by part, built on the meta device (no memory)."""
    with torch.device("meta"):
        m = PI0Policy(config)
    pg = m.paligemma_with_expert.paligemma
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    return {"total": n(m), "vision": n(pg.model.vision_tower), "vlm_llm": n(pg.model.language_model),
            "expert_layers": n(m._expert), "expert_lm_head_unused": m.paligemma_with_expert.gemma_expert.lm_head.weight.numel()}
