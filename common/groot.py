"""GR00T N1.5 (NVIDIA): an Eagle 2.5 VLM and a flow-matching DiT action head, behind PI0Policy's interface.

The architecture as NVIDIA's Isaac-GR00T N1.5 and LeRobot 0.5.1's port of it (`lerobot/policies/groot/`) compute
it, read there for facts and rebuilt from maintained blocks (transformers' SigLIP and Qwen3, torch.nn); parameter
names are theirs, so `state_dict()` keys ARE the Isaac-GR00T checkpoint's (`backbone.*`, `action_head.*`; LeRobot
puts `_groot_model.` in front). Checked against LeRobot 0.5.1's own code: tests/test_peer_groot.py. This file is the
model only; its checkpoints (Isaac-GR00T, LeRobot 0.5.1, ours) are read and written by common/groot_checkpoint.py.

    VLM (encode, once per observation):
      SigLIP(images) -> pixel shuffle 0.5 -> mlp1 (LayerNorm, Linear, GELU, Linear) replaces the image tokens'
      embeddings in the Qwen3 input; Qwen3 runs its first `select_layer` layers (the rest are not even built,
      as GR00T pops them) and its final RMSNorm; then the head's vlln LayerNorm and vl_self_attention (a small
      self-attention transformer): the VL tokens (B, L, E_vl).
    action head (velocity, every denoising step):
      [state_encoder(state) | future_tokens | action_encoder(x, τ bucket) + position_embedding] -> DiT
      (AdaLayerNorm on the timestep embedding, blocks alternating cross-attention to the VL tokens and
      self-attention) -> action_decoder -> the last H tokens. Encoders / decoder are per-embodiment
      (CategorySpecificLinear: one weight matrix per embodiment id).

Time convention. GR00T: τ = 0 noise, τ = 1 action, x_τ = (1 - τ) noise + τ action, its network predicts
dx/dτ = action - noise, and it integrates τ: 0 -> 1 (x += Δ pred) with τ discretised into
num_timestep_buckets (1000) integer buckets, bucket = int(τ · 1000). Ours (openpi, what the scripts use):
t = 1 noise, t = 0 action, x_t = t noise + (1 - t) action, v = noise - action. So, inside this file only,
    τ = 1 - t,   the same x,   v_ours = -pred_groot,   bucket = floor((1 - t) · 1000)
(computed in float64 with a 1e-3-bucket guard, so t = 1 - k/K on our fp32 grid lands in GR00T's int(k/K · 1000)).

Differences from the peers, on purpose: dropout (0.2 in N1.5's DiT and VL transformer) is applied only inside
sft_loss in train mode (GR00T's fine-tuning recipe); velocity() never drops out, so a rollout and the PPO update
see the same policy (paper appendix C.1: the RL stage replaces the head's dropout layers by identity).
As in the peer, the DiT's cross-attention takes no padding mask (every VL token is attended to, padding too);
encode(obs) therefore keeps all max_token_len prompt slots, so a row's numbers never depend on its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import Qwen3Config, SiglipVisionConfig, SiglipVisionModel
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model

from common.policy import Observation

# LeRobot's GrootPackInputsStep mapping (Isaac-GR00T's EMBODIMENT_TAG_MAPPING), and the tags RLinf's GR00T N1.5
# checkpoints carry (RLinf a3816b5 rlinf/models/embodiment/gr00t/embodiment_tags.py: libero_franka, the paper's LIBERO
# SFT checkpoints, and isaaclab_franka on N1.5's new_embodiment projector 31; maniskill_widowx 30). RLinf maps
# new_embodiment itself to 10: an RLinf checkpoint tagged so needs --embodiment 10.
EMBODIMENTS = {"new_embodiment": 31, "oxe_droid": 17, "agibot_genie1": 26, "gr1": 24, "so100": 2, "unitree_g1": 3,
               "libero_franka": 31, "isaaclab_franka": 31, "maniskill_widowx": 30}


@dataclass
class GrootConfig:
    variant: str = "groot"
    action_dim: int = 32                 # D: GR00T's max_action_dim (actions zero-padded to it)
    state_dim: int | None = 64           # max_state_dim; None: D
    action_horizon: int = 16             # H
    max_token_len: int = 48              # prompt slots of our tokenizer (all kept: see the module docstring)
    image_size: int = 224                # R (SigLIP's; Eagle's force_image_size)
    num_cameras: int = 1
    discrete_state_input: bool = False   # (read by the Processor; GR00T's state goes to its state encoder)
    embodiment: int = 31                 # the embodiment id whose encoders / decoder are used ("new_embodiment")
    # Eagle 2.5: SigLIP
    vision_width: int = 1152
    vision_depth: int = 27
    vision_mlp_dim: int = 4304
    vision_heads: int = 16
    patch_size: int = 14
    vision_eps: float = 1e-6
    vision_use_head: bool = True         # SigLIP's pooling head: in the checkpoint, unused by GR00T
    vision_select_layer: int = -1        # Eagle's select_layer: -1 = SigLIP's post-layernormed output
    downsample_ratio: float = 0.5        # pixel shuffle
    use_pixel_shuffle: bool = True
    mlp_connector_layers: int = 2
    # Eagle 2.5: Qwen3 (only the first llm_depth = GR00T's select_layer layers exist)
    vocab_size: int = 151680
    llm_width: int = 2048
    llm_depth: int = 12
    llm_mlp_dim: int = 6144
    llm_heads: int = 16
    llm_kv_heads: int = 8
    llm_head_dim: int = 128
    rope_theta: float = 1000000.0
    rms_eps: float = 1e-6
    max_position_embeddings: int = 40960
    project_to_dim: int | None = None    # backbone eagle_linear llm_width -> E_vl (None: identity, N1.5's release)
    # action head
    backbone_embedding_dim: int = 2048   # E_vl (= Qwen3-1.7B's width, since N1.5 does not project)
    hidden_size: int = 1024              # state-encoder / decoder hidden width and the DiT output width
    input_embedding_dim: int = 1536      # E: DiT width (heads x head_dim)
    max_num_embodiments: int = 32
    num_target_vision_tokens: int = 32   # future tokens
    max_seq_len: int = 1024              # position embedding table
    add_pos_embed: bool = True
    use_vlln: bool = True
    dit_heads: int = 32
    dit_head_dim: int = 48
    dit_layers: int = 16
    dit_interleave: bool = True          # odd blocks self-attention, even blocks cross-attention
    dit_norm_eps: float = 1e-5
    vl_heads: int = 32
    vl_head_dim: int = 64
    vl_layers: int = 4
    dropout: float = 0.2                 # DiT and VL transformer (SFT only here)
    final_dropout: bool = True
    num_inference_timesteps: int = 4
    num_timestep_buckets: int = 1000
    noise_beta_alpha: float = 1.5
    noise_beta_beta: float = 1.0
    noise_s: float = 0.999
    # the per-embodiment linears' init, W ~ N(0, std²): N1.5's 0.02 (≈ 1/√fan_in at its widths, 1024-3072);
    # None: std = 1/√fan_in (the tiny: at width 64, 0.02 gives each layer a gain of 0.16 and x_t reaches the DiT
    # at 1e-3 of a token, so SFT cannot learn to denoise: loss 1.16, 4% success; see tests/test_groot.py)
    category_init_std: float | None = 0.02
    # train_sft's time distribution (our t): GR00T's t = u / s, u ~ Beta(1.5, 1), is the same law up to ~1e-3
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0

    def __post_init__(self):
        if self.state_dim is None:
            self.state_dim = self.action_dim
        if self.variant != "groot":
            raise ValueError(f"GrootConfig.variant={self.variant!r}; must be 'groot'")
        if self.dit_heads * self.dit_head_dim != self.input_embedding_dim:
            raise ValueError(f"dit_heads x dit_head_dim = {self.dit_heads * self.dit_head_dim} != input_embedding_dim "
                             f"{self.input_embedding_dim}")
        if self.vl_heads * self.vl_head_dim != self.backbone_embedding_dim:
            raise ValueError(f"vl_heads x vl_head_dim != backbone_embedding_dim {self.backbone_embedding_dim}")

    @property
    def image_tokens(self) -> int:   # VL tokens per camera
        n = (self.image_size // self.patch_size) ** 2
        return int(n * self.downsample_ratio ** 2) if self.use_pixel_shuffle else n


# Full size ("groot"): Eagle 2.5's SigLIP (1152 wide, 27 layers, patch 14, 224 px) and Qwen3-1.7B cut at layer 12,
# the head's sizes those of nvidia/GR00T-N1.5-3B's released config.json (read from public copies of it, not
# downloaded: tests/test_groot.py lists its values): no eagle_linear (project_to_dim null), E_vl = 2048, VL self-
# attention 32 x 64, DiT 32 x 48 = 1536 wide with 16 layers, hidden 1024. Isaac-GR00T's and LeRobot 0.5.1's *code*
# defaults differ (project_to_dim 1536); load_groot reads every size from the checkpoint's weights and the heads
# from its config.json, and falls back on these head widths where a config holds no action_head_cfg.
# Tiny ("tiny-groot"): the same architecture, for CPU tests and the embedded default.
_TINY = dict(action_dim=8, action_horizon=8, max_token_len=32, image_size=32, num_cameras=1, vocab_size=512,
             vision_width=32, vision_depth=1, vision_mlp_dim=64, vision_heads=2, patch_size=8, vision_use_head=False,
             llm_width=64, llm_depth=2, llm_mlp_dim=128, llm_heads=2, llm_kv_heads=1, llm_head_dim=32,
             max_position_embeddings=256, project_to_dim=None, backbone_embedding_dim=64, hidden_size=64, input_embedding_dim=64,
             num_target_vision_tokens=4, max_seq_len=32, dit_heads=2, dit_head_dim=32, dit_layers=2,
             vl_heads=2, vl_head_dim=32, vl_layers=1, state_dim=None, category_init_std=None)
PRESETS = {"groot": dict(), "tiny-groot": _TINY}


def make_config(preset: str, **overrides) -> GrootConfig:
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}; allowed values: {sorted(PRESETS)}")
    return GrootConfig(**{**PRESETS[preset], **overrides})


# ---------------------------------------------------------------------------------------------- caches
@dataclass(frozen=True)
class GrootCache:
    """encode()'s result, reused by every denoising step: the processed VL tokens, their mask, the encoded
    state token and the embodiment ids. index / repeat as PI0Policy's PrefixCache."""
    vl: Tensor            # (B, L, E_vl) fp32: vlln + vl_self_attention output (what the DiT cross-attends to)
    mask: Tensor          # (B, L) bool: real tokens (not used by the DiT, as in GR00T; used for pooling)
    state: Tensor         # (B, 1, E) fp32: state_encoder(state) for the embodiment
    embodiment: Tensor    # (B,) int64

    def _map(self, fn):
        return GrootCache(fn(self.vl), fn(self.mask), fn(self.state), fn(self.embodiment))

    def index(self, idx) -> "GrootCache":
        return self._map(lambda x: x[idx])

    def repeat(self, n: int) -> "GrootCache":
        return self._map(lambda x: x.repeat_interleave(n, dim=0))

    def detach(self) -> "GrootCache":
        return self._map(lambda x: x.detach())

    @property
    def batch_size(self) -> int:
        return self.vl.shape[0]


# ---------------------------------------------------------------------------------------------- blocks
class CategorySpecificLinear(nn.Module):
    """One (in, out) matrix and bias per embodiment: y = x W[id] + b[id]."""

    def __init__(self, num_categories: int, input_dim: int, hidden_dim: int):
        super().__init__()
        self.W = nn.Parameter(0.02 * torch.randn(num_categories, input_dim, hidden_dim))
        self.b = nn.Parameter(torch.zeros(num_categories, hidden_dim))

    def forward(self, x: Tensor, cat: Tensor) -> Tensor:   # x (B, T, in), cat (B,)
        return torch.bmm(x, self.W[cat]) + self.b[cat].unsqueeze(1)


class CategorySpecificMLP(nn.Module):
    def __init__(self, num_categories: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_categories, input_dim, hidden_dim)
        self.layer2 = CategorySpecificLinear(num_categories, hidden_dim, output_dim)

    def forward(self, x: Tensor, cat: Tensor) -> Tensor:
        return self.layer2(F.relu(self.layer1(x, cat)), cat)


def _bucket_sinusoid(buckets: Tensor, dim: int) -> Tensor:
    """The action encoder's time features: [sin, cos](bucket · 10000^(-i / (dim/2))), (B, T) -> (B, T, dim)."""
    half = dim // 2
    exponent = -torch.arange(half, dtype=torch.float, device=buckets.device) * (torch.log(torch.tensor(10000.0)) / half)
    freqs = buckets.float().unsqueeze(-1) * exponent.exp()
    return torch.cat([freqs.sin(), freqs.cos()], dim=-1)


class MultiEmbodimentActionEncoder(nn.Module):
    """x (B, H, D), bucket (B,) -> W3(swish(W2([W1 x, sinusoid(bucket)]))) (B, H, E)."""

    def __init__(self, action_dim: int, width: int, num_embodiments: int):
        super().__init__()
        self.width = width
        self.W1 = CategorySpecificLinear(num_embodiments, action_dim, width)
        self.W2 = CategorySpecificLinear(num_embodiments, 2 * width, width)
        self.W3 = CategorySpecificLinear(num_embodiments, width, width)

    def forward(self, x: Tensor, buckets: Tensor, cat: Tensor) -> Tensor:
        a = self.W1(x, cat)
        tau = _bucket_sinusoid(buckets[:, None].expand(-1, x.shape[1]), self.width).to(a.dtype)
        return self.W3(F.silu(self.W2(torch.cat([a, tau], dim=-1), cat)), cat)


class Attention(nn.Module):
    """diffusers' Attention as GR00T uses it (to_q / to_k / to_v / to_out.0, SDPA, no mask)."""

    def __init__(self, dim: int, heads: int, head_dim: int, kv_dim: int | None = None):
        super().__init__()
        inner, kv_dim = heads * head_dim, kv_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(kv_dim, inner)
        self.to_v = nn.Linear(kv_dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: Tensor, context: Tensor | None, drop) -> Tensor:
        context = x if context is None else context
        B = x.shape[0]
        q, k, v = (p(s).view(B, s.shape[1], self.heads, -1).transpose(1, 2)
                   for p, s in ((self.to_q, x), (self.to_k, context), (self.to_v, context)))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        return drop(self.to_out[0](out))


class FeedForward(nn.Module):
    """diffusers' FeedForward, "gelu-approximate": net.0.proj -> tanh GELU -> dropout -> net.2 (-> dropout)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.ModuleList([nn.Module(), nn.Identity(), nn.Linear(4 * dim, dim)])
        self.net[0].proj = nn.Linear(dim, 4 * dim)

    def forward(self, x: Tensor, drop, final: bool) -> Tensor:
        y = self.net[2](drop(F.gelu(self.net[0].proj(x), approximate="tanh")))
        return drop(y) if final else y


class AdaLayerNorm(nn.Module):
    """LayerNorm (no affine) modulated by the timestep embedding: (scale, shift) = linear(silu(temb))."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.eps = eps

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=1)
        return F.layer_norm(x, x.shape[-1:], eps=self.eps) * (1 + scale[:, None]) + shift[:, None]


class TransformerBlock(nn.Module):
    """GR00T's BasicTransformerBlock: x += [drop](attn(norm1(x), context)); x += ff(norm3(x))."""

    def __init__(self, dim: int, heads: int, head_dim: int, cross_dim: int | None, ada: bool, affine: bool, eps: float):
        super().__init__()
        self.norm1 = AdaLayerNorm(dim) if ada else nn.LayerNorm(dim, eps=eps)
        self.attn1 = Attention(dim, heads, head_dim, cross_dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.ff = FeedForward(dim)
        self.cross = cross_dim is not None

    def forward(self, x: Tensor, context: Tensor | None, temb: Tensor | None, drop, final: bool) -> Tensor:
        h = self.norm1(x, temb) if isinstance(self.norm1, AdaLayerNorm) else self.norm1(x)
        a = self.attn1(h, context if self.cross else None, drop)
        x = x + (drop(a) if final else a)
        return x + self.ff(self.norm3(x), drop, final)


class TimestepEncoder(nn.Module):
    """diffusers Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1) -> TimestepEmbedding (SiLU MLP)."""

    def __init__(self, dim: int):
        super().__init__()
        self.timestep_embedder = nn.Module()
        self.timestep_embedder.linear_1 = nn.Linear(256, dim)
        self.timestep_embedder.linear_2 = nn.Linear(dim, dim)

    def forward(self, buckets: Tensor) -> Tensor:
        half = 128
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=buckets.device) / (half - 1)
        emb = buckets[:, None].float() * torch.exp(exponent)[None, :]
        emb = torch.cat([emb.cos(), emb.sin()], dim=-1)                      # flip_sin_to_cos
        e = self.timestep_embedder
        return e.linear_2(F.silu(e.linear_1(emb.to(e.linear_1.weight.dtype))))


class DiT(nn.Module):
    def __init__(self, c: GrootConfig):
        super().__init__()
        E = c.input_embedding_dim
        self.timestep_encoder = TimestepEncoder(E)
        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(E, c.dit_heads, c.dit_head_dim,
                             None if (i % 2 == 1 and c.dit_interleave) else c.backbone_embedding_dim,
                             ada=True, affine=False, eps=c.dit_norm_eps) for i in range(c.dit_layers)])
        self.proj_out_1 = nn.Linear(E, 2 * E)
        self.proj_out_2 = nn.Linear(E, c.hidden_size)

    def forward(self, x: Tensor, context: Tensor, buckets: Tensor, drop, final: bool) -> Tensor:
        temb = self.timestep_encoder(buckets)
        for block in self.transformer_blocks:
            x = block(x, context, temb, drop, final)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=1)
        x = F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
        return self.proj_out_2(x)


class SelfAttentionTransformer(nn.Module):
    def __init__(self, c: GrootConfig):
        super().__init__()
        self.transformer_blocks = nn.ModuleList([
            TransformerBlock(c.backbone_embedding_dim, c.vl_heads, c.vl_head_dim, None, ada=False, affine=True, eps=1e-5)
            for _ in range(c.vl_layers)])

    def forward(self, x: Tensor, drop, final: bool) -> Tensor:
        for block in self.transformer_blocks:
            x = block(x, None, None, drop, final)
        return x


def _pixel_shuffle(x: Tensor, r: float) -> Tensor:
    """Eagle's pixel shuffle: (N, w, h, c) -> (N, h·r, w·r, c / r²), the same views / permutes."""
    n, w, h, c = x.shape
    x = x.view(n, w, int(h * r), int(c / r)).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * r), int(w * r), int(c / (r * r)))
    return x.permute(0, 2, 1, 3).contiguous()


# ---------------------------------------------------------------------------------------------- policy
class GrootPolicy(nn.Module):
    """encode(obs) -> GrootCache once per observation; velocity(cache, x_t, t) per denoising step (our t)."""

    def __init__(self, config: GrootConfig):
        super().__init__()
        c = self.config = config
        self.expert_width, self.vlm_width = c.hidden_size, c.backbone_embedding_dim
        self.image_token_index = c.vocab_size - 1   # image slots' id in encode_tokens' input_ids (a checkpoint's: Eagle's)
        self.lora_spec = None                       # common/lora.py's adapters: π0 only, never set on GR00T
        self._sft_dropout = False
        vision = SiglipVisionConfig(hidden_size=c.vision_width, intermediate_size=c.vision_mlp_dim,
                                    num_hidden_layers=c.vision_depth, num_attention_heads=c.vision_heads,
                                    patch_size=c.patch_size, image_size=c.image_size, layer_norm_eps=c.vision_eps,
                                    hidden_act="gelu_pytorch_tanh", vision_use_head=c.vision_use_head)
        text = Qwen3Config(hidden_size=c.llm_width, intermediate_size=c.llm_mlp_dim, num_hidden_layers=c.llm_depth,
                           num_attention_heads=c.llm_heads, num_key_value_heads=c.llm_kv_heads, head_dim=c.llm_head_dim,
                           vocab_size=c.vocab_size, rms_norm_eps=c.rms_eps, rope_theta=c.rope_theta,
                           max_position_embeddings=c.max_position_embeddings, tie_word_embeddings=False)
        self.backbone = nn.Module()
        eagle = self.backbone.eagle_model = nn.Module()
        eagle.vision_model = nn.Module()          # transformers 4's SiglipVisionModel level, as the checkpoints hold it
        eagle.vision_model.vision_model = SiglipVisionModel(vision)
        eagle.language_model = nn.Module()
        eagle.language_model.model = Qwen3Model(text)
        eagle.language_model.lm_head = nn.Linear(c.llm_width, c.vocab_size, bias=False)   # unused (no text decoding)
        vit = c.vision_width * (int(1 / c.downsample_ratio) ** 2 if c.use_pixel_shuffle else 1)
        if c.mlp_connector_layers == 2:
            eagle.mlp1 = nn.Sequential(nn.LayerNorm(vit), nn.Linear(vit, c.llm_width), nn.GELU(), nn.Linear(c.llm_width, c.llm_width))
        else:
            eagle.mlp1 = nn.Sequential(nn.Linear(vit, c.llm_width))
        self.backbone.eagle_linear = nn.Linear(c.llm_width, c.project_to_dim) if c.project_to_dim else nn.Identity()
        E, C = c.input_embedding_dim, c.max_num_embodiments
        ah = self.action_head = nn.Module()
        ah.model = DiT(c)
        ah.state_encoder = CategorySpecificMLP(C, c.state_dim, c.hidden_size, E)
        ah.action_encoder = MultiEmbodimentActionEncoder(c.action_dim, E, C)
        ah.action_decoder = CategorySpecificMLP(C, c.hidden_size, c.hidden_size, c.action_dim)
        ah.future_tokens = nn.Embedding(c.num_target_vision_tokens, E)
        ah.vlln = nn.LayerNorm(c.backbone_embedding_dim) if c.use_vlln else nn.Identity()
        ah.vl_self_attention = SelfAttentionTransformer(c) if c.use_vlln else nn.Identity()
        if c.add_pos_embed:
            ah.position_embedding = nn.Embedding(c.max_seq_len, E)
        # N1.5's own init (FlowmatchingActionHead): future tokens and position embedding N(0, 0.02²), not
        # nn.Embedding's N(0, 1) (which buries the action tokens' x_t features, ~0.07 in norm, under norm-8 noise)
        nn.init.normal_(ah.future_tokens.weight, std=0.02)
        if c.add_pos_embed:
            nn.init.normal_(ah.position_embedding.weight, std=0.02)
        if c.category_init_std != 0.02:   # (0.02: CategorySpecificLinear's own, N1.5's)
            for m in ah.modules():
                if isinstance(m, CategorySpecificLinear):
                    nn.init.normal_(m.W, std=c.category_init_std or m.W.shape[1] ** -0.5)

    # ---- handles -----------------------------------------------------------------------------------
    @property
    def _eagle(self):
        return self.backbone.eagle_model

    def _drop(self, x: Tensor) -> Tensor:
        """GR00T's dropout, only inside sft_loss in train mode (never in velocity(): RL sees no dropout)."""
        return F.dropout(x, self.config.dropout, training=True) if self._sft_dropout and self.config.dropout > 0 else x

    def freeze_vlm(self):
        """Train the action head only (the RL stage, paper C.1: the VLM is frozen)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def set_vlm_dtype(self, dtype: torch.dtype):
        self.backbone.to(dtype)
        return self

    # ---- time convention -----------------------------------------------------------------------------
    def buckets(self, t: Tensor) -> Tensor:
        """Our t (1 = noise) -> GR00T's discretised τ = 1 - t: floor(τ · N) in float64 with a 1e-3-bucket guard
        (t = 1 - k/K in fp32 -> int(k/K · N), as GR00T's get_action computes it in Python floats)."""
        n = self.config.num_timestep_buckets
        tau = 1.0 - t.double()
        return torch.floor(tau * n + 1e-3).clamp(0, n - 1).long()

    # ---- VLM ----------------------------------------------------------------------------------------
    def _vit(self, pixels: Tensor) -> Tensor:
        """(N, 3, R, R) in [-1, 1] -> (N, image_tokens, llm_width): SigLIP, pixel shuffle, mlp1."""
        c, vm = self.config, self._eagle.vision_model.vision_model
        pixels = pixels.to(self._eagle.mlp1[-1].weight.dtype)
        if c.vision_select_layer == -1:
            x = vm(pixel_values=pixels).last_hidden_state
        else:
            x = vm(pixel_values=pixels, output_hidden_states=True).hidden_states[c.vision_select_layer]
        if c.use_pixel_shuffle:
            s = int(x.shape[1] ** 0.5)
            x = _pixel_shuffle(x.reshape(x.shape[0], s, s, -1), c.downsample_ratio)
            x = x.reshape(x.shape[0], -1, x.shape[-1])
        return self._eagle.mlp1(x)

    def encode_tokens(self, input_ids: Tensor, attention_mask: Tensor, pixel_values: Tensor, state: Tensor,
                      embodiment: Tensor | int | None = None, image_positions: Tensor | None = None) -> GrootCache:
        """GR00T's own inputs (Eagle's processor output): input_ids (B, L) with image_token_index at the image
        slots (or image_positions (B, L) bool), attention_mask (B, L), pixel_values (B·n_img, 3, R, R), state
        (B, state_dim) or (B, 1, state_dim). Runs the VLM once and the head's VL / state encoders."""
        c, lm = self.config, self._eagle.language_model.model
        B = input_ids.shape[0]
        emb = lm.embed_tokens(input_ids)                                        # (B, L, W)
        vit = self._vit(pixel_values)                                           # (B·n_img, P, W)
        is_img = image_positions if image_positions is not None else input_ids == self.image_token_index
        emb = emb.masked_scatter(is_img[..., None].expand_as(emb), vit.reshape(-1, emb.shape[-1]).to(emb.dtype))
        # GR00T keeps Qwen3's first select_layer layers; its features are that last layer's output after the
        # final RMSNorm (transformers' last hidden state); positions 0..L-1 whatever the padding (as Eagle)
        out = lm(inputs_embeds=emb, attention_mask=attention_mask.long()).last_hidden_state
        feats = self.backbone.eagle_linear(out).float()                         # (B, L, E_vl)
        ah = self.action_head
        vl = ah.vl_self_attention(ah.vlln(feats), self._drop, self.config.final_dropout) if c.use_vlln else feats
        if embodiment is None:
            embodiment = c.embodiment
        emb_ids = torch.as_tensor(embodiment, dtype=torch.long, device=input_ids.device).expand(B).contiguous()
        state = state.float().reshape(B, 1, -1)
        return GrootCache(vl.float(), attention_mask.bool(), ah.state_encoder(state, emb_ids).float(), emb_ids)

    def encode(self, obs: Observation) -> GrootCache:
        """Our Observation: [image tokens of each camera][prompt slots] (absent cameras masked), then encode_tokens."""
        c = self.config
        B, n_cam = obs.images.shape[:2]
        P = c.image_tokens
        ids = torch.cat([torch.zeros(B, n_cam * P, dtype=torch.long, device=obs.tokens.device), obs.tokens], 1)
        is_img = torch.zeros_like(ids, dtype=torch.bool)
        is_img[:, : n_cam * P] = True
        mask = torch.cat([obs.image_masks.bool().repeat_interleave(P, dim=1), obs.token_masks.bool()], 1)
        return self.encode_tokens(ids, mask, obs.images.flatten(0, 1), obs.state, image_positions=is_img)

    def prefix_features(self, cache: GrootCache) -> Tensor:
        """(B, E_vl) fp32: masked mean of the VL tokens (the critic of GR00T uses velocity()'s features instead)."""
        w = cache.mask.float()[..., None]
        return (cache.vl * w).sum(1) / w.sum(1).clamp(min=1.0)

    # ---- action head --------------------------------------------------------------------------------
    def groot_velocity(self, cache: GrootCache, x: Tensor, buckets: Tensor) -> tuple[Tensor, Tensor]:
        """GR00T's own convention: pred = d x / d τ (action - noise) at bucket (B,) and the DiT output at the
        action tokens (B, H, hidden_size)."""
        c, ah = self.config, self.action_head
        if x.shape[1:] != (c.action_horizon, c.action_dim):
            raise ValueError(f"x_t must be (B, H={c.action_horizon}, D={c.action_dim}), got {tuple(x.shape)}")
        B = x.shape[0]
        a = ah.action_encoder(x.float(), buckets, cache.embodiment)                    # (B, H, E)
        if c.add_pos_embed:
            a = a + ah.position_embedding(torch.arange(a.shape[1], device=a.device))[None]
        seq = torch.cat([cache.state, ah.future_tokens.weight[None].expand(B, -1, -1), a], dim=1)
        out = ah.model(seq, cache.vl, buckets, self._drop, c.final_dropout)            # (B, 1 + F + H, hidden)
        feats = out[:, -c.action_horizon:]
        return ah.action_decoder(out, cache.embodiment)[:, -c.action_horizon:], feats

    def velocity(self, cache: GrootCache, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """v(x_t, t) in OUR convention (t = 1 noise, v = noise - action): -pred_GR00T at τ = 1 - t.
        Returns v (B, H, D) fp32 and the DiT's output at the action tokens (B, H, hidden_size) fp32."""
        t = t.float().expand(x_t.shape[0])
        pred, feats = self.groot_velocity(cache, x_t, self.buckets(t))
        return -pred.float(), feats.float()

    @torch.no_grad()
    def sample_actions(self, obs: Observation, noise: Tensor | None = None, num_steps: int | None = None) -> Tensor:
        """Deterministic Euler from t = 1 to 0 (GR00T: τ 0 -> 1, x += Δ pred): (B, H, D) fp32."""
        c = self.config
        num_steps = num_steps or c.num_inference_timesteps
        B = obs.state.shape[0]
        x = noise if noise is not None else torch.randn(B, c.action_horizon, c.action_dim, device=obs.state.device)
        return self.sample_from_cache(self.encode(obs), x, num_steps)

    def sample_from_cache(self, cache: GrootCache, x: Tensor, num_steps: int) -> Tensor:
        x, dt = x.float(), 1.0 / num_steps
        for k in range(num_steps):
            t = torch.full((x.shape[0],), 1.0 - k * dt, dtype=torch.float32, device=x.device)
            x = x - dt * self.velocity(cache, x, t)[0]
        return x

    def sft_loss(self, obs: Observation, actions: Tensor, noise: Tensor | None = None, time: Tensor | None = None,
                 action_mask: Tensor | None = None) -> Tensor:
        """GR00T's flow-matching loss (flow_loss) on encode(obs), with GR00T's dropout on in train mode (its
        fine-tuning recipe; velocity() alone never drops out)."""
        self._sft_dropout = self.training
        try:
            return self.flow_loss(self.encode(obs), actions, noise, time, action_mask)
        finally:
            self._sft_dropout = False

    def flow_loss(self, cache: GrootCache, actions: Tensor, noise: Tensor | None = None, time: Tensor | None = None,
                  action_mask: Tensor | None = None) -> Tensor:
        """In our time: x_t = t noise + (1 - t) a, mean ||v(x_t, t) - (noise - a)||² over action_mask (all of
        (B, H, D) by default); the same number as GR00T's ||pred - (a - noise)||² at τ = 1 - t. time: our t;
        None: GR00T's law, τ = (s - u) / s with u ~ Beta(1.5, 1)."""
        c = self.config
        actions = actions.float()
        B = actions.shape[0]
        noise = torch.randn_like(actions) if noise is None else noise.float()
        if time is None:
            u = torch.distributions.Beta(torch.tensor(c.noise_beta_alpha), torch.tensor(c.noise_beta_beta)).sample((B,))
            time = 1.0 - (c.noise_s - u) / c.noise_s
        time = time.float().to(actions.device)
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        v, _ = self.velocity(cache, x_t, time)
        err = (v - (noise - actions)) ** 2
        if action_mask is None:
            return err.mean()
        m = action_mask.float()
        return (err * m).sum() / m.sum()
