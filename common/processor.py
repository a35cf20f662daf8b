"""Raw env observations <-> model Observation; action (un)normalisation. openpi conventions:
  π0   z-score:   x' = (x - mean) / (std + 1e-6)
  π0.5 quantile:  x' = (x - q01) / (q99 - q01 + 1e-6) * 2 - 1
state and actions are zero-padded from S / A to the model's D; images resized-with-pad to R and scaled
from uint8 [0, 255] to [-1, 1] (padding is black, i.e. -1). Stats use openpi's norm_stats.json layout:
{"norm_stats": {"state": {"mean", "std", "q01", "q99"}, "actions": {...}}}.

A checkpoint from LeRobot (source="lerobot", recorded by load_policy) keeps LeRobot's conventions instead:
  normalisation per its normalization_mapping (norm_modes), lerobot/processor/normalize_processor.py:
    MEAN_STD   x' = (x - mean) / (std + eps),              x = x' * std + mean
    QUANTILES  x' = 2 (x - q01) / (q99 - q01) - 1,         x = (x' + 1) (q99 - q01) / 2 + q01   (MIN_MAX, QUANTILE10 alike)
  eps = 1e-8; images resized-with-pad as resize_with_pad_lerobot, after a non-IDENTITY VISUAL mode normalised each
  camera's x / 255 with its own (C, 1, 1) stats (image_mode / image_stats); π0's prompt = the task + "\n", uncleaned;
  the state zero-padded to its own max_state_dim (config.state_dim).
"""
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from common.conventions import DATA_CONFIGS, DataConfig
from common.policy import Observation, PI0Config
from common.tokenizer import Tokenizer


def compute_norm_stats(states: np.ndarray, actions: np.ndarray) -> dict:
    """states (T, S), actions (T, A) -> openpi norm_stats.json dict (exact quantiles)."""
    def stats(x):
        x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
        return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
                "q01": np.quantile(x, 0.01, axis=0).tolist(), "q99": np.quantile(x, 0.99, axis=0).tolist()}
    return {"norm_stats": {"state": stats(states), "actions": stats(actions)}}


def resize_with_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size) float in [-1, 1]; aspect ratio kept, black padding. As openpi's
    openpi_client.image_tools.resize_with_pad (PIL bilinear, which antialiases like torch's antialias=True):
    sizes truncated, int(h / ratio); PIL's uint8 rounding is not copied (within one level of it)."""
    x = images.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        ratio = max(h, w) / size
        nh, nw = max(1, int(h / ratio)), max(1, int(w / ratio))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False).clamp(0, 255)
        top, left = (size - nh) // 2, (size - nw) // 2
        x = F.pad(x, (left, size - nw - left, top, size - nh - top), value=0.0)
    return x / 127.5 - 1.0


def resize_with_pad_lerobot(images: torch.Tensor, size: int, normalize=None) -> torch.Tensor:
    """LeRobot's version (policies/common/vla_utils.py resize_with_pad_torch on [0, 1] floats, then 2x - 1):
    sizes truncated, int(h / ratio), and bilinear without antialiasing. (N, H, W, 3) uint8 -> (N, 3, size, size).
    normalize: LeRobot's NormalizerProcessorStep on the (N, 3, H, W) x / 255 before it (a non-IDENTITY VISUAL mode;
    the resize's clamp to [0, 1] then applies to the normalised values, as in LeRobot)."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    if normalize is not None:
        x = normalize(x)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        ratio = max(w / size, h / size)
        nh, nw = int(h / ratio), int(w / ratio)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
        top, left = (size - nh) // 2, (size - nw) // 2
        x = F.pad(x, (left, size - nw - left, top, size - nh - top), value=0.0)
    return x * 2.0 - 1.0


LEROBOT_NORM_MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")
LEROBOT_BOUNDS = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}
LEROBOT_FILES = ("config.json", "policy_preprocessor*", "policy_postprocessor*")   # a LeRobot dir's own, kept as they came


@dataclass(frozen=True)
class Provenance:
    """Where a policy's checkpoint came from, declared by the loader that builds its processor: save_policy writes
    the policy back in that format (pirl's own: "pirl", what a processor built here without a checkpoint holds)."""
    source_format: str = "pirl"        # who wrote it first: openpi | lerobot | rlinf | isaac-gr00t | pirl (kept across saves)
    asset_id: str | None = None        # openpi / RLinf: the norm stats' asset id, written back under it
    source_files: dict = field(default_factory=dict)    # LeRobot: {name: bytes} of LEROBOT_FILES, written back as they came
    source_dtypes: dict = field(default_factory=dict)   # LeRobot: {weight name: torch.dtype} on file (bf16 mode), kept at save


class Processor:
    def __init__(self, norm_stats: dict, tokenizer: Tokenizer, config: PI0Config, source: str = "openpi",
                 norm_modes: dict | None = None, eps: float = 1e-8, provenance: Provenance | None = None,
                 data_config: DataConfig | None = None, camera_order: tuple[int | None, ...] | None = None,
                 image_mode: str = "IDENTITY", image_stats: dict | None = None):
        """source: whose conventions to follow ("openpi" | "lerobot"); norm_modes ({"state": ..., "actions": ...}
        LeRobot NormalizationMode names) and eps are LeRobot's only, as are image_mode (its VISUAL mode) and image_stats
        ({camera feature: {stat: (3, 1, 1)}} for every image slot, in slot order; {} for a camera without stats);
        provenance: the checkpoint's (save_policy's layout)."""
        if source not in ("openpi", "lerobot"):
            raise ValueError(f"Processor source={source!r}; allowed values: 'openpi', 'lerobot'")
        if "norm_stats" in norm_stats:
            norm_stats = norm_stats["norm_stats"]
        for key in ("state", "actions"):
            if key not in norm_stats:
                raise ValueError(f"norm stats lack {key!r} (have {sorted(norm_stats)}); openpi layout expected")
        self.norm_stats = {"norm_stats": norm_stats}
        self.tokenizer, self.config, self.source = tokenizer, config, source
        self.quantile = config.variant == "pi05"   # openpi: quantile norm for π0.5, z-score for π0
        default = "QUANTILES" if self.quantile else "MEAN_STD"   # LeRobot's per-variant defaults
        self.norm_modes = {k: (norm_modes or {}).get(k, default) for k in ("state", "actions")}
        if source == "lerobot" and not set(self.norm_modes.values()) <= set(LEROBOT_NORM_MODES):
            raise ValueError(f"LeRobot normalisation modes {self.norm_modes}; known: {list(LEROBOT_NORM_MODES)}")
        self.eps = eps
        self.provenance = provenance or Provenance()
        self.data_config = data_config or DATA_CONFIGS["pirl"]   # actions absolute or relative to the state (conventions.py)
        self.camera_order = camera_order   # the env camera feeding each image slot (conventions.camera_order); None: in order
        self.image_mode, self.image_stats = image_mode, image_stats or {}
        if image_mode not in LEROBOT_NORM_MODES:
            raise ValueError(f"LeRobot VISUAL normalisation mode {image_mode!r}; known: {list(LEROBOT_NORM_MODES)}")
        self._stats = {k: {s: np.asarray(v, dtype=np.float32) for s, v in norm_stats[k].items() if v is not None}
                       for k in ("state", "actions")}
        # π0.5's discrete state (openpi): normalised in float64, as openpi's Normalize does with its JSON stats
        self._stats64 = {"state": {s: np.asarray(v, dtype=np.float64) for s, v in norm_stats["state"].items()
                                   if v is not None}}

    @classmethod
    def from_stats(cls, norm_stats: dict, tokenizer: Tokenizer, config: PI0Config, **kwargs) -> "Processor":
        return cls(norm_stats, tokenizer, config, **kwargs)

    def with_stats(self, norm_stats: dict) -> "Processor":
        """The same conventions and provenance (source, modes, eps, asset id, LeRobot files) with other norm
        stats: SFT of a user's checkpoint on new demonstrations keeps its framework's processing and layout."""
        return Processor(norm_stats, self.tokenizer, self.config, source=self.source, norm_modes=self.norm_modes,
                         eps=self.eps, provenance=self.provenance, data_config=self.data_config,
                         camera_order=self.camera_order, image_mode=self.image_mode, image_stats=self.image_stats)

    # ---- normalisation ---------------------------------------------------------------------------
    def _lerobot_norm(self, x: np.ndarray, key: str, inverse: bool) -> np.ndarray:
        """LeRobot's NormalizerProcessorStep / UnnormalizerProcessorStep, in its order of operations."""
        s, n, mode = self._stats[key], x.shape[-1], self.norm_modes[key]
        if mode == "IDENTITY":
            return x
        if mode == "MEAN_STD":
            mean, std = s["mean"][:n], s["std"][:n]
            return x * std + mean if inverse else (x - mean) / (std + np.float32(self.eps))
        lo_key, hi_key = LEROBOT_BOUNDS[mode]
        if lo_key not in s or hi_key not in s:
            raise ValueError(f"LeRobot {mode} normalisation needs {lo_key!r} / {hi_key!r} stats for {key}; "
                             f"have {sorted(s)}")
        lo, hi = s[lo_key][:n], s[hi_key][:n]
        denom = np.where(hi - lo == 0, np.float32(self.eps), hi - lo)
        if mode == "MIN_MAX":
            return (x + 1) / 2 * denom + lo if inverse else 2 * (x - lo) / denom - 1
        return (x + 1.0) * denom / 2.0 + lo if inverse else 2.0 * (x - lo) / denom - 1.0

    def _normalize(self, x: np.ndarray, key: str, stats: dict | None = None) -> np.ndarray:
        if self.source == "lerobot":
            return self._lerobot_norm(x, key, inverse=False)
        s, n = (stats or self._stats)[key], x.shape[-1]
        if self.quantile:
            return (x - s["q01"][:n]) / (s["q99"][:n] - s["q01"][:n] + 1e-6) * 2.0 - 1.0
        return (x - s["mean"][:n]) / (s["std"][:n] + 1e-6)

    def _unnormalize(self, x: np.ndarray, key: str) -> np.ndarray:
        if self.source == "lerobot":
            return self._lerobot_norm(x, key, inverse=True)
        s, n = self._stats[key], x.shape[-1]
        if self.quantile:
            return (x + 1.0) / 2.0 * (s["q99"][:n] - s["q01"][:n] + 1e-6) + s["q01"][:n]
        return x * (s["std"][:n] + 1e-6) + s["mean"][:n]

    def _lerobot_image_norm(self, slots: list[int], n: int):
        """LeRobot's NormalizerProcessorStep for the cameras filling `slots`, as a function of their (n * len(slots),
        3, H, W) x / 255 (batch-major); each camera its own stats, a camera without stats passed through (as LeRobot)."""
        keys = list(self.image_stats)

        def normalize(x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(n, len(slots), *x.shape[1:]).clone()
            for j, slot in enumerate(slots):
                s = {k: torch.as_tensor(v, dtype=x.dtype, device=x.device) for k, v in self.image_stats[keys[slot]].items()}
                if not s:
                    continue
                if self.image_mode == "MEAN_STD":
                    x[:, j] = (x[:, j] - s["mean"]) / (s["std"] + self.eps)
                else:
                    lo, hi = (s[b] for b in LEROBOT_BOUNDS[self.image_mode])
                    denom = torch.where(hi - lo == 0, torch.tensor(self.eps, dtype=x.dtype, device=x.device), hi - lo)
                    x[:, j] = 2 * (x[:, j] - lo) / denom - 1
            return x.flatten(0, 1)
        return normalize

    def _in_slots(self, images: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """(N, n_cam, ...) env images -> those feeding the model's image slots, in slot order, and the slots they fill
        (camera_order: a LeRobot / Isaac-GR00T model's, matched by name; a slot whose camera the env lacks is left out)."""
        if self.camera_order is None:
            return images, list(range(images.shape[1]))
        slots = [i for i, cam in enumerate(self.camera_order) if cam is not None]
        return images[:, [self.camera_order[i] for i in slots]], slots

    def _pad(self, x: np.ndarray, name: str) -> np.ndarray:
        D = self.config.state_dim if name == "state" else self.config.action_dim
        if x.shape[-1] > D:
            raise ValueError(f"{name} has {x.shape[-1]} dims > the model's {name}_dim={D}")
        return np.concatenate([x, np.zeros((*x.shape[:-1], D - x.shape[-1]), x.dtype)], axis=-1)

    # ---- observations ----------------------------------------------------------------------------
    def observation(self, raw_obs: dict, device) -> Observation:
        c = self.config
        # uint8 to the device first: a quarter of the bytes of the float image, converted there
        images, slots = self._in_slots(np.asarray(raw_obs["images"]))      # (N, n_cam, R0, R0, 3) uint8
        images = torch.as_tensor(images).to(device)
        if images.ndim != 5 or images.shape[-1] != 3:
            raise ValueError(f"raw_obs['images'] must be (N, n_cam, H, W, 3) uint8, got {tuple(images.shape)}")
        N, n_cam = images.shape[:2]
        if n_cam > c.num_cameras:
            raise ValueError(f"raw_obs has {n_cam} cameras > config.num_cameras={c.num_cameras}")
        if self.source == "lerobot":   # a non-IDENTITY VISUAL mode: LeRobot's normalised images
            normalize = self._lerobot_image_norm(slots, N) if self.image_mode != "IDENTITY" else None
            img = resize_with_pad_lerobot(images.flatten(0, 1), c.image_size, normalize)
        else:
            img = resize_with_pad(images.flatten(0, 1), c.image_size)
        img = img.reshape(N, n_cam, 3, c.image_size, c.image_size)
        masks = torch.ones(N, c.num_cameras, dtype=torch.bool)
        if n_cam < c.num_cameras:   # absent cameras: black images, masked out (as openpi)
            masks[:, n_cam:] = False
            img = torch.cat([img, -torch.ones(N, c.num_cameras - n_cam, 3, c.image_size, c.image_size,
                                              device=img.device)], 1)
        state = self._normalize(np.asarray(raw_obs["state"], dtype=np.float32), "state")   # (N, S)
        discrete = c.variant == "pi05" and c.discrete_state_input
        if discrete and self.source != "lerobot":   # openpi digitizes a float64 state: near a bin edge float32 errs
            discrete_state = self._normalize(np.asarray(raw_obs["state"], dtype=np.float64), "state", self._stats64)
        else:                                       # LeRobot normalises in float32 tensors
            discrete_state = state
        if self.source == "lerobot" and not discrete:   # LeRobot's π0: Pi0NewLineProcessor, then the tokenizer
            toks = [self.tokenizer.tokenize_text(p if p.endswith("\n") else p + "\n", c.max_token_len)
                    for p in raw_obs["instruction"]]
        else:
            toks = [self.tokenizer.tokenize(p, discrete_state[i] if discrete else None, c.max_token_len)
                    for i, p in enumerate(raw_obs["instruction"])]
        return Observation(
            images=img, image_masks=masks.to(device),
            tokens=torch.as_tensor(np.stack([t for t, _ in toks]), device=device),
            token_masks=torch.as_tensor(np.stack([m for _, m in toks]), device=device),
            state=torch.as_tensor(self._pad(state, "state").astype(np.float32), device=device))

    # ---- actions ---------------------------------------------------------------------------------
    def actions_to_env(self, actions: torch.Tensor, env_action_dim: int, state=None) -> np.ndarray:
        """(..., H, D) model actions -> (..., H, A) env actions: crop, unnormalise, then, for a delta data config,
        add the raw env state (..., S) of that decision back on its mask (openpi's Unnormalize, AbsoluteActions)."""
        x = actions.detach().float().cpu().numpy()[..., :env_action_dim]
        x = self._unnormalize(x, "actions").astype(np.float32)
        return self.data_config.gripper_to_env(self.data_config.to_absolute(x, state))   # absolute configs: x as it is

    def actions_to_model(self, env_actions: np.ndarray, state=None) -> torch.Tensor:
        """(..., H, A) env actions -> (..., H, D) normalised, zero-padded model actions (fp32, CPU); a delta data
        config first subtracts the raw state (..., S) of the chunk's first step on its mask (openpi's DeltaActions)."""
        x = self.data_config.gripper_to_model(np.asarray(env_actions, dtype=np.float32))
        x = self._normalize(self.data_config.to_delta(x, state), "actions")   # absolute configs: x as it is
        return torch.as_tensor(self._pad(x, "actions").astype(np.float32))
