"""GR00T N1.5's own input side, for real checkpoints: Eagle 2.5's processor files and Isaac-GR00T's norm stats.

Facts read in Isaac-GR00T N1.5 (gr00t/model/transforms.py GR00TTransform, gr00t/data/transform/state_action.py,
gr00t/model/backbone/eagle2_hg_model/) and LeRobot 0.5.1 (policies/groot/processor_groot.py and its
eagle2_hg_model/); the code is ours. Checked against LeRobot 0.5.1's own pipeline run on the real files:
tests/test_eagle.py (fixtures by tools/peers/groot_eagle_fixtures.py).

    prompt   one user turn [image 1, ..., image n, text] through the chat template of chat_template.json
             (Qwen3's: a default system turn, then the user turn, then "<|im_start|>assistant\\n"); the text is
             str([instruction]), as LeRobot's GrootEagleEncodeStep writes it "to match original GR00T" (Isaac-GR00T's
             inference renders its (T,) numpy array of instructions the same way); each "<image-k>" becomes
             "<image k><img>" + <IMG_CONTEXT> x tokens_per_tile + "</img>" (Eagle25VLProcessor, one tile per image:
             LeRobot's min_dynamic_tiles = max_dynamic_tiles = 1, use_thumbnail False), tokenised by the Qwen
             tokenizer of vocab.json / merges.txt (transformers' Qwen2Tokenizer), left-padded with its pad token.
    images   uint8 (under an Isaac-GR00T data config, conventions.py isaac_gr00t, first its own video transforms:
             isaac_eval_video) -> resized to the tile (preprocessor_config size) by bicubic with antialiasing
             (torchvision's resize as the fast image processor calls it; no aspect-preserving pad), then
             (x - mean / rescale) / (std / rescale) in fp32 (transformers' fused rescale-and-normalise): [-1, 1] for
             mean = std = 0.5.
    state /  split into the keys of experiment_cfg/metadata.json's modalities (their order: the concat order;
             a LeRobot 0.5.1 dir: one key each, the min / max of its pre / post processor steps' state files),
    actions  each normalised with its mode (Isaac-GR00T's Normalizer: min_max, q99, mean_std, binary; the data
             configs' default and LeRobot's only mode is min_max), concatenated, zero-padded to max_state_dim /
             max_action_dim; actions un-normalised the inverse way.

Unlike the peers, every row is left-padded to one fixed length (config.max_token_len) rather than to the longest
prompt of its batch: GR00T's DiT cross-attends to the padding too, so a row's numbers then never depend on its
batch (the rollout and the PPO update see the same policy). With a batch of one prompt of that length the inputs
are the peers' exactly.

Where the processor files are looked for, in order (the first holding them all is used):
  the `eagle_dir` argument; $PIRL_EAGLE_DIR; <checkpoint>/eagle_processor (what groot_checkpoint.save_groot writes);
  <checkpoint> itself; LeRobot's cache $HF_LEROBOT_HOME/lerobot/eagle2hg-processor-groot-n1p5 (default
  ~/.cache/huggingface/lerobot/...); an installed Isaac-GR00T's gr00t/model/backbone/eagle2_hg_model.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.conventions import DATA_CONFIGS
from common.errors import UsageError
from common.groot import EMBODIMENTS, GrootPolicy
from common.policy import Observation
from common.processor import Provenance

EAGLE_DIR_ENV = "PIRL_EAGLE_DIR"
LEROBOT_CACHE = Path("lerobot") / "eagle2hg-processor-groot-n1p5"
SAVED_DIR = "eagle_processor"                 # a checkpoint's own copy (groot_checkpoint.save_groot)
METADATA = Path("experiment_cfg") / "metadata.json"
REQUIRED = ("vocab.json", "merges.txt", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json",
            "chat_template.json")
OPTIONAL = ("added_tokens.json", "special_tokens_map.json", "config.json", "generation_config.json")
WORKS = (f"point {EAGLE_DIR_ENV} (or eagle_dir=) at Isaac-GR00T's gr00t/model/backbone/eagle2_hg_model or at "
         f"LeRobot's cache ~/.cache/huggingface/{LEROBOT_CACHE}, which hold {', '.join(REQUIRED)}")
NORM_MODES = ("min_max", "q99", "mean_std", "binary")
DEFAULT_MODE = "min_max"                      # every Isaac-GR00T data config's mode for joint states / actions
TEXT_BUDGET = 64                              # prompt tokens kept for the instruction beyond the template's own
_RESAMPLE = {2: "bilinear", 3: "bicubic"}     # PIL resample codes (preprocessor_config "resample") -> torch modes


# ---------------------------------------------------------------------------------------------- where
def _isaac_gr00t_dir() -> Path | None:
    """An installed Isaac-GR00T's vendored Eagle dir (found without importing the package)."""
    spec = importlib.util.find_spec("gr00t")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "model" / "backbone" / "eagle2_hg_model"


def candidate_dirs(checkpoint=None, eagle_dir=None) -> list[tuple[str, Path, bool]]:
    """(what, dir, explicit) in the order they are tried; an explicit one (argument, env var) must hold the files."""
    out = []
    if eagle_dir:
        out.append(("eagle_dir", Path(eagle_dir), True))
    if os.environ.get(EAGLE_DIR_ENV):
        out.append((f"${EAGLE_DIR_ENV}", Path(os.environ[EAGLE_DIR_ENV]), True))
    if checkpoint is not None:
        out += [("the checkpoint's copy", Path(checkpoint) / SAVED_DIR, False), ("the checkpoint", Path(checkpoint), False)]
    home = os.environ.get("HF_LEROBOT_HOME", str(Path.home() / ".cache" / "huggingface" / "lerobot"))
    out.append(("LeRobot's cache", Path(home) / LEROBOT_CACHE, False))
    isaac = _isaac_gr00t_dir()
    if isaac is not None:
        out.append(("Isaac-GR00T", isaac, False))
    return out


def find_eagle_dir(checkpoint=None, eagle_dir=None) -> Path:
    """The first candidate dir holding every REQUIRED file; UsageError listing where it looked otherwise."""
    looked = []
    for what, d, explicit in candidate_dirs(checkpoint, eagle_dir):
        missing = [f for f in REQUIRED if not (d / f).is_file()]
        if not missing:
            return d
        if explicit:
            raise UsageError(f"{what} {d}: Eagle processor files missing there: {', '.join(missing)}; {WORKS}")
        looked.append(str(d))
    raise UsageError(f"no Eagle 2.5 processor files (the GR00T tokenizer / image processor) found; looked in "
                     f"{'; '.join(looked)}; {WORKS}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not valid JSON ({err}); replace it by the file of Isaac-GR00T's "
                         "gr00t/model/backbone/eagle2_hg_model (or LeRobot's Eagle cache)") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a JSON object expected, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------------------- tokenizer + prompt
class EagleTokenizer:
    """Eagle 2.5's Qwen3 tokenizer (transformers' Qwen2Tokenizer on vocab.json / merges.txt / added tokens), its
    chat template and the image placeholders of processor_config.json."""

    def __init__(self, directory):
        from transformers import Qwen2Tokenizer
        d = self.directory = Path(directory)
        tok_cfg, proc_cfg = _read_json(d / "tokenizer_config.json"), _read_json(d / "processor_config.json")
        if tok_cfg.get("tokenizer_class") not in (None, "Qwen2Tokenizer", "Qwen2TokenizerFast"):
            raise UsageError(f"{d / 'tokenizer_config.json'}: tokenizer_class {tok_cfg['tokenizer_class']!r}; GR00T "
                             f"N1.5's Eagle 2.5 uses Qwen2Tokenizer (Qwen3's vocabulary); {WORKS}")
        try:
            self.tok = Qwen2Tokenizer.from_pretrained(str(d))
        except Exception as err:   # transformers raises many kinds for broken vocab / merges files
            raise UsageError(f"{d}: transformers cannot load the Qwen tokenizer from vocab.json / merges.txt "
                             f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); {WORKS}") from None
        # Eagle25VLProcessor's own defaults for what processor_config.json leaves out
        self.image_token = proc_cfg.get("image_token", "<IMG_CONTEXT>")
        self.image_start, self.image_end = proc_cfg.get("image_start_token", "<img>"), proc_cfg.get("image_end_token", "</img>")
        self.tokens_per_tile = int(proc_cfg.get("tokens_per_tile", 256))
        self.image_token_id = self.tok.convert_tokens_to_ids(self.image_token)
        if self.image_token_id is None or self.image_token_id == self.tok.unk_token_id:
            raise UsageError(f"{d}: the tokenizer has no token {self.image_token!r} (processor_config.json's image_token); {WORKS}")
        self.pad_id = self.tok.pad_token_id
        if self.pad_id is None:
            raise UsageError(f"{d / 'special_tokens_map.json'}: no pad_token (Eagle's is <|endoftext|>); {WORKS}")
        template = _read_json(d / "chat_template.json").get("chat_template")
        if not isinstance(template, str):
            raise UsageError(f"{d / 'chat_template.json'}: no \"chat_template\" string; {WORKS}")
        self.chat_template = template
        self.model_proto = None   # (our SentencePiece tokenizers' field; the Eagle files are saved as files)

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def chat_text(self, instruction: str, num_images: int) -> str:
        """The prompt text as Eagle25VLProcessor sees it: the chat template on one user turn
        [image x num_images, str([instruction])] + the generation prompt, placeholders expanded (one tile each)."""
        content = [{"type": "image"}] * num_images + [{"type": "text", "text": str([instruction or "Perform the task."])}]
        text = self.tok.apply_chat_template([{"role": "user", "content": content}], chat_template=self.chat_template,
                                            tokenize=False, add_generation_prompt=True)
        tiles = self.image_token * self.tokens_per_tile
        return re.sub(r"<image-(\d+)>", lambda m: f"<image {m[1]}>{self.image_start}{tiles}{self.image_end}", text)

    def tokenize(self, instruction: str, num_images: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """One prompt -> ids (length,) int64, left-padded with the pad token (padding_side "left", as GR00T sets
        it), and its attention mask (length,) bool. A prompt longer than `length` is an error (never cut: the
        image tokens must all be there)."""
        ids = self.tok(self.chat_text(instruction, num_images))["input_ids"]
        if len(ids) > length:
            raise ValueError(f"the GR00T prompt for {instruction!r} has {len(ids)} tokens > max_token_len={length}; "
                             "load the checkpoint with a larger max_token_len")
        out = np.full(length, self.pad_id, dtype=np.int64)
        out[length - len(ids):] = ids
        return out, np.arange(length) >= length - len(ids)


# ---------------------------------------------------------------------------------------------- images
class EagleImages:
    """preprocessor_config.json: one tile of size x size (resize), rescale, normalise."""

    def __init__(self, directory):
        path = Path(directory) / "preprocessor_config.json"
        cfg = _read_json(path)
        size = cfg.get("size") or {}
        self.size = int(size.get("height") or size.get("shortest_edge") or 448)   # the class default: 448
        if int(size.get("width", self.size)) != self.size:
            raise UsageError(f"{path}: non-square tile size {size}; Eagle's tiles are square")
        resample = int(cfg.get("resample", 3))
        if resample not in _RESAMPLE:
            raise UsageError(f"{path}: resample={resample}; supported: {sorted(_RESAMPLE)} (PIL bilinear / bicubic)")
        self.mode = _RESAMPLE[resample]
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        mean = cfg.get("image_mean", [0.5] * 3) if cfg.get("do_normalize", True) else [0.0] * 3
        std = cfg.get("image_std", [0.5] * 3) if cfg.get("do_normalize", True) else [1.0] * 3
        # transformers' fused rescale + normalise: mean and std scaled by 1 / rescale_factor, in fp32
        self.mean = (torch.tensor(mean, dtype=torch.float32) * (1.0 / rescale)).view(1, 3, 1, 1)
        self.std = (torch.tensor(std, dtype=torch.float32) * (1.0 / rescale)).view(1, 3, 1, 1)

    def __call__(self, images) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, size, size) fp32 (on the CPU)."""
        x = torch.as_tensor(np.asarray(images)).cpu().permute(0, 3, 1, 2).contiguous()
        if x.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {x.dtype}")
        if x.shape[-2:] != (self.size, self.size):
            # torchvision's resize of a uint8 image on the CPU: torch's native uint8 kernel, antialiased
            x = F.interpolate(x, size=(self.size, self.size), mode=self.mode, antialias=True, align_corners=False)
        return (x.float() - self.mean) / self.std


def isaac_eval_video(images, crop_scale: float, size: int) -> np.ndarray:
    """Isaac-GR00T N1.5's evaluation video transforms (gr00t/data/transform/video.py), before Eagle's processor:
    (N, H, W, 3) uint8 -> fp32 in [0, 1] (VideoToTensor) -> a center crop of int(H s) x int(W s) at torchvision's
    offsets round((H - h) / 2) (VideoCrop in eval mode) -> a bilinear antialiased resize to size x size (VideoResize
    "linear") -> x 255, truncated to uint8 (VideoToNumpy) -> (N, size, size, 3) uint8."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).to(torch.float32) / 255.0       # (N, 3, H, W)
    H, W = x.shape[-2:]
    h, w = int(H * crop_scale), int(W * crop_scale)
    top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
    x = F.interpolate(x[..., top:top + h, left:left + w], size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    return (x.permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------- norm stats
def read_metadata(checkpoint, embodiment=None) -> tuple[str, dict]:
    """(embodiment tag, its entry) of <checkpoint>/experiment_cfg/metadata.json. embodiment: a tag, an id, or
    None (the only tag there, else "new_embodiment")."""
    path = Path(checkpoint) / METADATA
    if not path.is_file():
        raise UsageError(f"{path} is missing: GR00T's norm stats (Isaac-GR00T writes experiment_cfg/metadata.json "
                         "next to the weights, LeRobot 0.5.1 policy_preprocessor.json / policy_postprocessor.json "
                         "and their .safetensors); copy the fine-tuning run's experiment_cfg/ (or LeRobot's "
                         "processor files) into the checkpoint dir")
    data = _read_json(path)
    tags = sorted(data)
    if isinstance(embodiment, str):
        tag = embodiment if embodiment in data else None
    else:   # an id: the tag of that id; else (or None) the only tag, else "new_embodiment"
        named = [t for t in tags if EMBODIMENTS.get(t) == embodiment]
        tag = named[0] if named else tags[0] if len(tags) == 1 else "new_embodiment" if "new_embodiment" in data else None
    if tag is None:
        raise UsageError(f"{path}: no entry for embodiment {embodiment!r}; it has {tags} (pass embodiment=<one of them>)")
    entry = data[tag]
    for key in ("statistics", "modalities"):
        if not isinstance(entry.get(key), dict):
            raise UsageError(f"{path}: {tag!r} lacks {key!r} (Isaac-GR00T's DatasetMetadata layout expected)")
    return tag, entry


# LeRobot 0.5.1's GR00T processor files (make_groot_pre_post_processors + PolicyProcessorPipeline.save_pretrained):
# <name>.json lists the steps (registry_name, config, and state_file where the step's state_dict is non-empty);
# the stats are a state file of flat "<feature key>.<stat>" tensors.
LEROBOT_PRE, LEROBOT_POST = "policy_preprocessor.json", "policy_postprocessor.json"
LEROBOT_PACK, LEROBOT_UNPACK = "groot_pack_inputs_v3", "groot_action_unpack_unnormalize_v1"


def _lerobot_step(d: Path, config_file: str, registry_name: str) -> tuple[dict, Path]:
    """(config, state file) of the step `registry_name` of LeRobot's <d>/<config_file>."""
    path = d / config_file
    if not path.is_file():
        raise UsageError(f"{path} is missing: LeRobot 0.5.1 writes it next to {LEROBOT_PRE} (the GR00T policy's "
                         "processor pipeline); copy both processor .json files and their .safetensors into the dir")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{path}: not valid JSON ({err}); LeRobot's processor pipeline file expected") from None
    steps = data.get("steps") if isinstance(data, dict) else None
    step = next((s for s in steps or [] if isinstance(s, dict) and s.get("registry_name") == registry_name), None)
    if step is None:
        raise UsageError(f"{path}: no {registry_name!r} step (LeRobot 0.5.1's GR00T pipeline; steps here: "
                         f"{[s.get('registry_name', s.get('class')) for s in steps or [] if isinstance(s, dict)]})")
    config = step.get("config") or {}
    if not config.get("normalize_min_max", True):
        raise UsageError(f"{path}: {registry_name} has normalize_min_max false (LeRobot then feeds raw state / "
                         "actions); only its min_max normalisation is read here")
    if not step.get("state_file"):
        raise UsageError(f"{path}: {registry_name} has no state_file: LeRobot saved it without dataset stats (it "
                         "then does not normalise); GR00T dirs with LeRobot's min / max stats are read here")
    return config, d / str(step["state_file"])


def _lerobot_min_max(state_file: Path, key: str) -> tuple[list, list]:
    """<key>.min / <key>.max of a LeRobot step's state file, as fp32 lists (LeRobot casts them to fp32)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not state_file.is_file():
        raise UsageError(f"{state_file} is missing: the min / max stats of LeRobot's GR00T processor step that "
                         "names it; copy it from the LeRobot training run's checkpoint dir")
    try:
        st = load_file(str(state_file))
    except (SafetensorError, OSError) as err:
        raise UsageError(f"{state_file}: not a readable safetensors file ({err}); copy it again from the LeRobot "
                         "training run's checkpoint dir") from None
    if f"{key}.min" not in st or f"{key}.max" not in st:
        raise UsageError(f"{state_file}: no {key}.min / {key}.max (it holds {sorted(st)})")
    lo, hi = st[f"{key}.min"].float().flatten(), st[f"{key}.max"].float().flatten()
    if lo.shape != hi.shape:
        raise UsageError(f"{state_file}: {key}.min has {lo.numel()} values, {key}.max {hi.numel()}")
    return lo.tolist(), hi.tolist()


def read_lerobot_stats(checkpoint, embodiment=None) -> tuple[str, dict] | None:
    """A LeRobot 0.5.1 GR00T dir's norm stats as a metadata.json entry (one key per modality, min_max), or None
    when the dir holds no policy_preprocessor.json. As LeRobot runs it: the state is normalised by the
    preprocessor's groot_pack_inputs_v3 step (its state file's observation.state.min / .max), the actions are
    un-normalised by the postprocessor's groot_action_unpack_unnormalize_v1 step (ITS state file's action.min /
    .max); both min_max on the whole vector (min == max: 0 / min), Isaac-GR00T's formula up to rounding. One
    camera per VISUAL input feature of config.json (LeRobot stacks the observation.images.* keys sorted); the
    embodiment tag of the pack step, whose own embodiment_mapping LeRobot uses (unknown tags: id 0)."""
    d = Path(checkpoint)
    if not (d / LEROBOT_PRE).is_file():
        return None
    pack, pack_file = _lerobot_step(d, LEROBOT_PRE, LEROBOT_PACK)
    _, unpack_file = _lerobot_step(d, LEROBOT_POST, LEROBOT_UNPACK)
    if pack.get("formalize_language"):
        raise UsageError(f"{d / LEROBOT_PRE}: {LEROBOT_PACK} has formalize_language true (LeRobot lower-cases the "
                         "instruction and drops punctuation); only the default (false) is supported here")
    entry = {"statistics": {}, "modalities": {}}
    for modality, key, state_file in (("state", "observation.state", pack_file), ("action", "action", unpack_file)):
        lo, hi = _lerobot_min_max(state_file, key)
        entry["statistics"][modality] = {modality: {"min": lo, "max": hi}}
        entry["modalities"][modality] = {modality: {"shape": [len(lo)]}}
    cfg = d / "config.json"
    try:
        features = (json.loads(cfg.read_text()) if cfg.is_file() else {}).get("input_features") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise UsageError(f"{cfg}: not LeRobot's GR00T config.json ({err})") from None
    entry["modalities"]["video"] = {k: {} for k, f in sorted(features.items())
                                    if isinstance(f, dict) and f.get("type") == "VISUAL"}
    tag = str(pack.get("embodiment_tag", "new_embodiment"))
    lerobot_id = (pack.get("embodiment_mapping") or EMBODIMENTS).get(tag, 0)
    if embodiment is None and EMBODIMENTS.get(tag) != lerobot_id:
        raise UsageError(f"{d / LEROBOT_PRE}: LeRobot maps embodiment tag {tag!r} to id {lerobot_id} (its "
                         f"embodiment_mapping) but GR00T's own ids are {EMBODIMENTS}; pass embodiment={lerobot_id}")
    return tag, entry


def read_stats(checkpoint, embodiment=None) -> tuple[str, dict]:
    """(tag, entry): Isaac-GR00T's experiment_cfg/metadata.json, else a LeRobot 0.5.1 GR00T dir's min / max
    (read_lerobot_stats), else read_metadata's error."""
    if not (Path(checkpoint) / METADATA).is_file():
        lerobot = read_lerobot_stats(checkpoint, embodiment)
        if lerobot is not None:
            return lerobot
    return read_metadata(checkpoint, embodiment)


class GrootNorm:
    """Isaac-GR00T's StateActionTransform normalisers for one modality ("state" or "action"): keys in
    metadata.json's order, each with its statistics and mode, on the concatenated vector."""

    def __init__(self, entry: dict, modality: str, modes: dict | None = None, where: str = "metadata.json"):
        stats, shapes = entry["statistics"].get(modality), entry["modalities"].get(modality)
        if not isinstance(stats, dict) or not stats:
            raise UsageError(f"{where}: no {modality} statistics")
        self.keys = list(shapes) if isinstance(shapes, dict) and set(shapes) == set(stats) else list(stats)
        self.modes = {k: (modes or {}).get(f"{modality}.{k}", (modes or {}).get(k, DEFAULT_MODE)) for k in self.keys}
        bad = {k: m for k, m in self.modes.items() if m not in NORM_MODES}
        if bad:
            raise UsageError(f"normalisation modes {bad}; Isaac-GR00T's are {list(NORM_MODES)}")
        self.stats = {}
        for k in self.keys:
            need = {"min_max": ("min", "max"), "q99": ("q01", "q99"), "mean_std": ("mean", "std"), "binary": ()}[self.modes[k]]
            missing = [s for s in need if s not in stats[k]]
            if missing:
                raise UsageError(f"{where}: {modality}.{k} lacks {missing} ({self.modes[k]} normalisation)")
            self.stats[k] = {s: torch.tensor(v, dtype=torch.float32) for s, v in stats[k].items() if v is not None}
        self.dims = [len(next(iter(self.stats[k].values()))) if self.stats[k] else int(shapes[k]["shape"][0]) for k in self.keys]
        self.dim = sum(self.dims)

    def _apply(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"{x.shape[-1]}-D vector but GR00T's metadata.json describes {self.dim} dims "
                             f"({dict(zip(self.keys, self.dims))})")
        parts = torch.split(x, self.dims, dim=-1)
        return torch.cat([_normalize(p, self.modes[k], self.stats[k], inverse) for k, p in zip(self.keys, parts)], -1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, inverse=False)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, inverse=True)

    def concatenated(self) -> dict:
        """Each statistic over the keys in order (openpi's layout, for checks that read norm_stats)."""
        names = set.intersection(*(set(s) for s in self.stats.values())) if self.stats else set()
        return {n: torch.cat([self.stats[k][n] for k in self.keys]).tolist() for n in sorted(names)}


def _normalize(x: torch.Tensor, mode: str, s: dict, inverse: bool) -> torch.Tensor:
    """Isaac-GR00T's Normalizer.forward / .inverse (state_action.py), fp32."""
    if mode == "binary":
        return (x > 0.5).to(x.dtype)
    lo, hi = {"min_max": ("min", "max"), "q99": ("q01", "q99"), "mean_std": ("mean", "std")}[mode]
    a, b = s[lo].to(x.dtype), s[hi].to(x.dtype)
    if mode == "mean_std":
        if inverse:
            return x * b + a
        return torch.where(b != 0, (x - a) / torch.where(b != 0, b, 1.0), x)        # std == 0: x as it is
    if inverse:
        return (x + 1) / 2 * (b - a) + a
    same = a == b
    y = (x - a) / torch.where(same, 1.0, b - a) * 2 - 1
    if mode == "min_max":
        return torch.where(same, torch.zeros_like(y), y)                             # min == max: 0
    return torch.where(same, x, y).clamp(-1, 1)                      # q99: q01 == q99 keeps x; all clipped after


# ---------------------------------------------------------------------------------------------- processor
class EagleProcessor:
    """Processor's interface (observation / actions_to_env / actions_to_model / norm_stats) with GR00T's own
    input side: Eagle's prompt and images, metadata.json's per-key normalisation. provenance: the checkpoint's
    (an Isaac-GR00T dir by default; a LeRobot 0.5.1 dir's own files, which save_groot writes back)."""

    def __init__(self, eagle_dir, entry: dict, tag: str, config, modes: dict | None = None, where: str = "metadata.json",
                 provenance: Provenance | None = None):
        self.eagle_dir = Path(eagle_dir)
        self.tokenizer, self.images = EagleTokenizer(eagle_dir), EagleImages(eagle_dir)
        self.entry, self.tag, self.config, self.where = entry, tag, config, where
        self.state_norm, self.action_norm = GrootNorm(entry, "state", modes, where), GrootNorm(entry, "action", modes, where)
        self.norm_modes = {**{f"state.{k}": m for k, m in self.state_norm.modes.items()},
                           **{f"action.{k}": m for k, m in self.action_norm.modes.items()}}
        self.provenance = provenance or Provenance("isaac-gr00t")
        self.data_config = DATA_CONFIGS["pirl"]   # set by the run (conventions.resolve_data_config): GR00T's are absolute
        # the env camera feeding each image, set by the run (conventions.camera_order: a LeRobot or Isaac-GR00T
        # checkpoint's cameras, matched by name, every image filled); None: the env's cameras in order
        self.camera_order = None
        self.files = {f: (self.eagle_dir / f).read_bytes() for f in REQUIRED + OPTIONAL if (self.eagle_dir / f).is_file()}

    @property
    def norm_stats(self) -> dict:
        return {"norm_stats": {"state": self.state_norm.concatenated(), "actions": self.action_norm.concatenated()}}

    def with_stats(self, norm_stats: dict):
        raise ValueError("SFT of a GR00T checkpoint with Eagle inputs on new demonstrations needs Isaac-GR00T's "
                         "per-key metadata.json statistics (min / max): not supported here")

    def _pad(self, x: torch.Tensor, width: int, name: str) -> torch.Tensor:
        if x.shape[-1] > width:
            raise ValueError(f"{name} has {x.shape[-1]} dims > the model's max_{name}_dim={width}")
        return F.pad(x, (0, width - x.shape[-1]))

    def observation(self, raw_obs: dict, device) -> Observation:
        c = self.config
        images = np.asarray(raw_obs["images"])                   # (N, n_cam, H, W, 3) uint8
        if images.ndim != 5 or images.shape[-1] != 3:
            raise ValueError(f"raw_obs['images'] must be (N, n_cam, H, W, 3) uint8, got {images.shape}")
        if self.camera_order is not None:   # the cameras its config names, in its order; the env's others left out
            images = images[:, list(self.camera_order)]
        N, n_cam = images.shape[:2]
        if n_cam > c.num_cameras:
            raise ValueError(f"raw_obs has {n_cam} cameras > config.num_cameras={c.num_cameras}")
        images = images.reshape(N * n_cam, *images.shape[2:])                  # (N n_cam, H, W, 3)
        if self.data_config.isaac_video_crop is not None:   # Isaac-GR00T's data config's transforms (conventions.py)
            images = isaac_eval_video(images, self.data_config.isaac_video_crop, c.image_size)
        pixels = self.images(images)
        toks = [self.tokenizer.tokenize(p, n_cam, c.max_token_len) for p in raw_obs["instruction"]]
        state = self.state_norm.normalize(torch.as_tensor(np.asarray(raw_obs["state"], dtype=np.float32)))
        return Observation(
            images=pixels.reshape(N, n_cam, *pixels.shape[1:]).to(device),
            image_masks=torch.ones(N, n_cam, dtype=torch.bool, device=device),
            tokens=torch.as_tensor(np.stack([t for t, _ in toks]), device=device),
            token_masks=torch.as_tensor(np.stack([m for _, m in toks]), device=device),
            state=self._pad(state, c.state_dim, "state").to(device))

    def actions_to_env(self, actions: torch.Tensor, env_action_dim: int, state=None) -> np.ndarray:   # state: no delta configs for GR00T (conventions.py)
        """(..., D) model actions -> (..., A) env actions: crop to metadata.json's dims, un-normalise per key, then
        the gripper as the env takes it where the data config says (conventions.py gripper_from_unit)."""
        if env_action_dim != self.action_norm.dim:
            raise ValueError(f"env actions have {env_action_dim} dims but GR00T's metadata.json describes "
                             f"{self.action_norm.dim} ({dict(zip(self.action_norm.keys, self.action_norm.dims))})")
        x = actions.detach().float().cpu()[..., :env_action_dim]
        return self.data_config.gripper_to_env(self.action_norm.unnormalize(x).numpy().astype(np.float32))

    def actions_to_model(self, env_actions: np.ndarray, state=None) -> torch.Tensor:
        env_actions = self.data_config.gripper_to_model(np.asarray(env_actions, dtype=np.float32))
        x = self.action_norm.normalize(torch.as_tensor(env_actions))
        return self._pad(x, self.config.action_dim, "action")

    def save(self, directory: Path) -> None:
        """The Eagle files (as read) into <directory>/eagle_processor, the stats into experiment_cfg/metadata.json."""
        (directory / SAVED_DIR).mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (directory / SAVED_DIR / name).write_bytes(data)
        (directory / METADATA).parent.mkdir(parents=True, exist_ok=True)
        (directory / METADATA).write_text(json.dumps({self.tag: self.entry}, indent=2))


class EagleGrootPolicy(GrootPolicy):
    """GrootPolicy whose Observation holds Eagle's own prompt: tokens = input_ids with the image tokens inside
    the chat (image_token_index slots), token_masks = the attention mask, images = the pixel values of each
    camera in prompt order; encode hands them to encode_tokens as GR00T's backbone takes them."""

    def encode(self, obs: Observation):
        return self.encode_tokens(obs.tokens, obs.token_masks, obs.images.flatten(0, 1), obs.state)


def prompt_length(tokenizer: EagleTokenizer, num_cameras: int) -> int:
    """Default max_token_len: the prompt of num_cameras images and the default instruction, plus TEXT_BUDGET."""
    return len(tokenizer.tok(tokenizer.chat_text("", num_cameras))["input_ids"]) + TEXT_BUDGET
