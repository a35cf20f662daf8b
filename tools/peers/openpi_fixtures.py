"""Peer fixtures from openpi's OWN PyTorch code (issue 15): tiny random π0 / π0.5 saved as openpi saves them,
reference velocities and sampled actions computed by openpi, and the full-size key lists of real π0 / π0.5.

Runs in its own venv (never the project's): Python 3.11, torch 2.13.0, transformers 4.53.2 with openpi's
`transformers_replace/` files copied over it (openpi README, PyTorch section), safetensors, numpy,
sentencepiece, pydantic + numpydantic (openpi's normalize.py):

    python3.11 -m venv /work/peers/openpi-venv
    /work/peers/openpi-venv/bin/pip install torch==2.13.0 transformers==4.53.2 safetensors numpy sentencepiece \
        pydantic numpydantic pillow
    git -C <openpi git dir> archive HEAD src/openpi packages/openpi-client | tar -x -C /work/peers/openpi-src
    cp -r /work/peers/openpi-src/src/openpi/models_pytorch/transformers_replace/* \
        /work/peers/openpi-venv/lib/python3.11/site-packages/transformers/
    # write the fixtures (tests/fixtures/peers/openpi/):
    /work/peers/openpi-venv/bin/python tools/peers/openpi_fixtures.py --openpi-src /work/peers/openpi-src/src
    # load a directory we saved with openpi's loader and compare its actions with ours (ours.safetensors
    # written by tests/test_peer_openpi.py's helper `our_actions_file`, see --help):
    /work/peers/openpi-venv/bin/python tools/peers/openpi_fixtures.py --openpi-src ... --check-dir DIR \
        --variant pi0 --ours ours.safetensors

What is openpi's code and what is a stand-in (openpi's PyTorch port imports two JAX-side modules):
  * `openpi.models.gemma`: its `Config` dataclass and `get_config` are taken from openpi's own gemma.py source
    (the class and function nodes, compiled here without jax/flax); two tiny variants are added.
  * `openpi.shared.image_tools`: its `resize_with_pad_torch` is taken from openpi's source the same way.
  * `Pi0Config` (flax): a dataclass with the fields PI0Pytorch reads.
  * openpi hard-codes PaliGemma's vocabulary (257152), SigLIP's sizes and the 224 px input: for a tiny model
    those constants are replaced at the module boundary (the config handed to transformers' PaliGemma /
    Gemma constructors, preprocess_observation_pytorch's image_resolution). Everything else (PI0Pytorch,
    PaliGemmaWithExpertModel, the patched transformers, embed_prefix / denoise_step / sample_actions,
    safetensors.torch.save_model / load_model, normalize.save / load) is openpi's code, unmodified.
  * openpi's joint attention reshapes to `1 * 8 * head_dim`: 8 heads, as every openpi variant has.
"""
import argparse
import ast
import dataclasses
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "peers" / "openpi"
TASKS = ["open the drawer", "pick up the red cube", "put the bowl on the plate"]
ASSET_IDS = ("physical-intelligence/libero", "metaworld")   # two ids: selection by id is tested; one nested
ASSET_DIMS = {"physical-intelligence/libero": (8, 7), "metaworld": (4, 4)}   # (state, action) dims

# Non-default sizes (none equals our presets'); heads 8 (openpi's joint layer), SigLIP heads 16 (openpi never
# sets them: PaliGemmaConfig's default).
TINY = {
    "pi0": dict(vlm=dict(width=48, depth=2, mlp_dim=80, num_heads=8, num_kv_heads=1, head_dim=8),
                expert=dict(width=32, depth=2, mlp_dim=56, num_heads=8, num_kv_heads=1, head_dim=8),
                vision=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, patch_size=8, image_size=32),
                vocab=320, action_dim=8, action_horizon=6),
    "pi05": dict(vlm=dict(width=40, depth=3, mlp_dim=72, num_heads=8, num_kv_heads=2, head_dim=4),
                 expert=dict(width=24, depth=3, mlp_dim=40, num_heads=8, num_kv_heads=2, head_dim=4),
                 vision=dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, patch_size=8, image_size=24),
                 vocab=320, action_dim=12, action_horizon=5),
}
_current = {}


def _nodes_from(path: Path, names: set, namespace: dict) -> dict:
    """Compile only the named top-level classes / functions / assignments of an openpi source file."""
    tree = ast.parse(path.read_text())
    keep = [n for n in tree.body if getattr(n, "name", None) in names
            or (isinstance(n, (ast.Assign, ast.AnnAssign)) and any(
                getattr(t, "id", None) in names for t in (n.targets if isinstance(n, ast.Assign) else [n.target])))]
    for node in keep:   # openpi decorates some with jax / typecheck helpers we do not have
        if hasattr(node, "decorator_list"):
            node.decorator_list = [d for d in node.decorator_list if "dataclass" in ast.unparse(d)]
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def import_openpi(src: Path):
    """Import openpi's PyTorch port with the two JAX-side modules replaced by pieces of their own source."""
    src = Path(src)
    sys.path.insert(0, str(src))
    import openpi.models  # noqa: F401  (empty package __init__)
    import openpi.shared  # noqa: F401

    lora = types.ModuleType("openpi.models.lora")

    @dataclasses.dataclass
    class LoRAConfig:
        rank: int = 16
        alpha: float = 16.0
    lora.LoRAConfig = LoRAConfig
    gemma = types.ModuleType("openpi.models.gemma")
    ns = _nodes_from(src / "openpi/models/gemma.py", {"Config", "Variant", "get_config", "PALIGEMMA_VOCAB_SIZE"},
                     {"dataclasses": dataclasses, "lora": lora, "Literal": __import__("typing").Literal,
                      "TypeAlias": __import__("typing").TypeAlias, "Sequence": __import__("typing").Sequence})
    openpi_get_config = ns["get_config"]

    def get_config(variant):
        if variant.startswith("tiny_"):   # tiny_<vlm|expert>_<pi0|pi05>
            _, part, model = variant.split("_")
            return ns["Config"](**TINY[model][part])
        return openpi_get_config(variant)
    gemma.__dict__.update(ns)
    gemma.get_config = get_config
    gemma.openpi_get_config = openpi_get_config
    image_tools = types.ModuleType("openpi.shared.image_tools")
    image_tools.__dict__.update(_nodes_from(src / "openpi/shared/image_tools.py", {"resize_with_pad_torch"},
                                            {"torch": torch, "F": torch.nn.functional}))
    for name, mod in (("openpi.models.lora", lora), ("openpi.models.gemma", gemma),
                      ("openpi.shared.image_tools", image_tools)):
        sys.modules[name] = mod
        setattr(sys.modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], mod)

    from openpi.models_pytorch import gemma_pytorch, pi0_pytorch, preprocessing_pytorch
    from openpi.shared import normalize

    real_pg, real_gemma = gemma_pytorch.PaliGemmaForConditionalGeneration, gemma_pytorch.GemmaForCausalLM

    def paligemma(config):   # openpi's hard-coded vocab / SigLIP sizes -> the tiny model's
        if "model" in _current:
            t = TINY[_current["model"]]
            config.text_config.vocab_size = t["vocab"]
            for k, v in t["vision"].items():
                setattr(config.vision_config, k, v)
            config.vision_config.projection_dim = config.projection_dim = t["vlm"]["width"]
        return real_pg(config=config)

    def expert(config):
        if "model" in _current:
            config.vocab_size = TINY[_current["model"]]["vocab"]
        return real_gemma(config=config)
    gemma_pytorch.PaliGemmaForConditionalGeneration = paligemma
    gemma_pytorch.GemmaForCausalLM = expert
    return types.SimpleNamespace(pi0_pytorch=pi0_pytorch, gemma=gemma, normalize=normalize,
                                 preprocessing=preprocessing_pytorch)


@dataclasses.dataclass
class Pi0ConfigStandIn:
    """The fields of openpi's Pi0Config (src/openpi/models/pi0_config.py) that PI0Pytorch reads."""
    pi05: bool = False
    paligemma_variant: str = "gemma_2b"
    action_expert_variant: str = "gemma_300m"
    dtype: str = "float32"
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = None
    pytorch_compile_mode: str = None   # no torch.compile

    def __post_init__(self):   # as Pi0Config.__post_init__
        if self.max_token_len is None:
            self.max_token_len = 200 if self.pi05 else 48


def tiny_config(model: str) -> Pi0ConfigStandIn:
    t = TINY[model]
    return Pi0ConfigStandIn(pi05=model == "pi05", paligemma_variant=f"tiny_vlm_{model}",
                            action_expert_variant=f"tiny_expert_{model}", action_dim=t["action_dim"],
                            action_horizon=t["action_horizon"])


def build_tiny(op, model: str, seed: int):
    """openpi's PI0Pytorch at the tiny sizes, every parameter random (norm scales and adaRMS too)."""
    _current["model"] = model
    op.preprocessing.preprocess_observation_pytorch.__kwdefaults__["image_resolution"] = (
        (TINY[model]["vision"]["image_size"],) * 2)
    try:
        torch.manual_seed(seed)
        m = op.pi0_pytorch.PI0Pytorch(tiny_config(model))
    finally:
        _current.clear()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            std = 0.2 if p.ndim == 1 else 1.0 / max(p.shape[-1], 1) ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return m.eval()


def inputs(model: str, seed: int) -> dict:
    """Fixed model inputs: 3 cameras (openpi's keys), masks, a padded prompt, state, noise and (x_t, t)."""
    t = TINY[model]
    g = torch.Generator().manual_seed(seed + 100)
    B, R, L, D, H = 2, t["vision"]["image_size"], 10, t["action_dim"], t["action_horizon"]
    tokens = torch.randint(4, t["vocab"], (B, L), generator=g)
    token_masks = torch.arange(L)[None] < torch.tensor([[L], [6]])
    tokens[~token_masks] = 0
    return {"images": torch.rand(B, 3, 3, R, R, generator=g) * 2 - 1,          # (B, cam, 3, R, R) in [-1, 1]
            "image_masks": torch.tensor([[True, True, False], [True, False, True]]),
            "tokens": tokens, "token_masks": token_masks,
            "state": torch.randn(B, D, generator=g),
            "noise": torch.randn(B, H, D, generator=g),
            "x_t": torch.randn(B, H, D, generator=g),
            "t": torch.tensor([0.7, 0.3])}


def observation(x: dict):
    keys = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")   # preprocessing_pytorch.IMAGE_KEYS
    return types.SimpleNamespace(images={k: x["images"][:, i] for i, k in enumerate(keys)},
                                 image_masks={k: x["image_masks"][:, i] for i, k in enumerate(keys)},
                                 state=x["state"], tokenized_prompt=x["tokens"],
                                 tokenized_prompt_mask=x["token_masks"], token_ar_mask=None, token_loss_mask=None)


@torch.no_grad()
def openpi_velocity(m, x: dict) -> torch.Tensor:
    """v(x_t, t): the prefix pass of PI0Pytorch.sample_actions (pi0_pytorch.py, its first 14 lines), then
    openpi's own denoise_step."""
    images, img_masks, lang_tokens, lang_masks, state = m._preprocess_observation(observation(x), train=False)
    prefix_embs, prefix_pad_masks, prefix_att_masks = m.embed_prefix(images, img_masks, lang_tokens, lang_masks)
    prefix_att_2d_masks = __import__("openpi.models_pytorch.pi0_pytorch", fromlist=["x"]).make_att_2d_masks(
        prefix_pad_masks, prefix_att_masks)
    prefix_position_ids = torch.cumsum(prefix_pad_masks, dim=1) - 1
    prefix_att_2d_masks_4d = m._prepare_attention_masks_4d(prefix_att_2d_masks)
    m.paligemma_with_expert.paligemma.language_model.config._attn_implementation = "eager"
    _, past_key_values = m.paligemma_with_expert.forward(
        attention_mask=prefix_att_2d_masks_4d, position_ids=prefix_position_ids, past_key_values=None,
        inputs_embeds=[prefix_embs, None], use_cache=True)
    return m.denoise_step(state, prefix_pad_masks, past_key_values, x["x_t"], x["t"])


@torch.no_grad()
def openpi_actions(m, x: dict, num_steps: int) -> torch.Tensor:
    return m.sample_actions("cpu", observation(x), noise=x["noise"].clone(), num_steps=num_steps)


def norm_stats(op, asset_id: str, seed: int) -> dict:
    """Random stats with the dims of the asset's robot (MetaWorld: 4-D state and actions; LIBERO: 8 and 7)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, S in zip(("state", "actions"), ASSET_DIMS[asset_id]):
        x = rng.normal(size=(500, S)) * rng.uniform(0.5, 2.0, S) + rng.normal(size=S)
        out[key] = op.normalize.NormStats(mean=x.mean(0), std=x.std(0), q01=np.quantile(x, 0.01, 0),
                                          q99=np.quantile(x, 0.99, 0))
    return out


def small_tokenizer(vocab_size: int) -> bytes:
    """Our tiny SentencePiece (common/tokenizer.py's corpus and options) without the NFKC normaliser table
    (200 KB of the file; the prompts are ASCII): only the RL round trip tokenises, parity feeds tokens."""
    import io

    import sentencepiece as spm
    sys.path.insert(0, str(ROOT))
    from common.tokenizer import tiny_corpus   # numpy + sentencepiece only
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_corpus(TASKS)), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, hard_vocab_limit=False, split_digits=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, num_threads=1, shuffle_input_sentence=False,
        user_defined_symbols=["\n"], remove_extra_whitespaces=False, add_dummy_prefix=False,
        normalization_rule_name="identity", minloglevel=2)
    return buf.getvalue()


RESIZE_SIZES = ((47, 64), (64, 47), (37, 53), (64, 64), (24, 24))   # (H, W) raw renders; 47 x 64: int != round


def write_resize_fixture(openpi_src: Path, out: Path, size: int = 32):
    """openpi's image resize (openpi_client.image_tools.resize_with_pad: PIL bilinear, int sizes, uint8 out, as
    its policy transforms and clients apply it before the model), on smooth and noisy uint8 images."""
    from safetensors.numpy import save_file
    ns = {}
    src = openpi_src.parent / "packages/openpi-client/src/openpi_client/image_tools.py"
    exec(compile(src.read_text(), str(src), "exec"), ns)
    rng, data = np.random.default_rng(0), {}
    for i, (h, w) in enumerate(RESIZE_SIZES):
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = 127 + 120 * np.sin(xx[..., None] / 3.0 + np.arange(3)) * np.cos(yy[..., None] / 2.0)
        raw = np.stack([smooth.astype(np.uint8), rng.integers(0, 256, (h, w, 3), dtype=np.uint8)])
        data[f"raw_{i}"], data[f"openpi_{i}"] = raw, ns["resize_with_pad"](raw, size, size)
    save_file(data, str(out / "resize.safetensors"), metadata={"size": str(size)})


def write_fixtures(op, out: Path, num_steps: int = 10):
    from safetensors.torch import save_file, save_model
    sys.path.insert(0, str(ROOT))
    out.mkdir(parents=True, exist_ok=True)
    for seed, model in enumerate(("pi0", "pi05")):
        d = out / model
        m = build_tiny(op, model, seed)
        # as openpi's train_pytorch.py save_checkpoint: safetensors.torch.save_model + assets/<asset_id>/,
        # and config.json as examples/convert_jax_model_to_pytorch.py writes it
        d.mkdir(exist_ok=True)
        save_model(m, str(d / "model.safetensors"))
        c = tiny_config(model)
        (d / "config.json").write_text(json.dumps(
            {"action_dim": c.action_dim, "action_horizon": c.action_horizon, "paligemma_variant": c.paligemma_variant,
             "action_expert_variant": c.action_expert_variant, "precision": "float32"}, indent=2))
        for i, asset_id in enumerate(ASSET_IDS):
            op.normalize.save(d / "assets" / asset_id, norm_stats(op, asset_id, 10 * seed + i))
        (d / "tokenizer.model").write_bytes(small_tokenizer(TINY[model]["vocab"]))
        x = inputs(model, seed)
        ref = {**x, "velocity": openpi_velocity(m, x), "actions": openpi_actions(m, x, num_steps)}
        save_file({k: v.contiguous() for k, v in ref.items()}, str(d / "reference.safetensors"),
                  metadata={"num_steps": str(num_steps), "openpi": "PI0Pytorch.denoise_step / sample_actions"})
        print(f"{model}: velocity |v| max {ref['velocity'].abs().max():.3f}, actions |a| max {ref['actions'].abs().max():.3f}")
    # full-size key lists of real π0 / π0.5 (gemma_2b + gemma_300m), built on the meta device
    full = {}
    for model in ("pi0", "pi05"):
        with torch.device("meta"):
            m = op.pi0_pytorch.PI0Pytorch(Pi0ConfigStandIn(pi05=model == "pi05"))
        vc = m.paligemma_with_expert.paligemma.config.vision_config
        full[model] = {
            "state_dict": {k: list(v.shape) for k, v in m.state_dict().items()},
            "config": {"paligemma": dataclasses.asdict(op.gemma.get_config("gemma_2b")),
                       "expert": dataclasses.asdict(op.gemma.get_config("gemma_300m")),
                       "vision": {k: getattr(vc, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                              "num_attention_heads", "patch_size", "image_size",
                                                              "projection_dim")},
                       "vocab_size": m.paligemma_with_expert.paligemma.config.text_config.vocab_size,
                       "action_dim": 32, "action_horizon": 50, "max_token_len": Pi0ConfigStandIn(pi05=model == "pi05").max_token_len}}
        for part in ("paligemma", "expert"):
            full[model]["config"][part].pop("lora_configs")
    (out / "full_size_keys.json").write_text(json.dumps(full, sort_keys=True, separators=(",", ":")))
    print(f"wrote {out}")


def check_dir(op, directory: Path, model: str, ours: Path, asset_id: str, num_steps: int):
    """openpi's loader on a directory we saved: PI0Pytorch(config) + safetensors.torch.load_model
    (src/openpi/models/model.py: load_pytorch), norm stats from assets/<asset_id> (training/checkpoints.py:
    load_norm_stats); actions from openpi's sample_actions on our saved inputs vs ours."""
    from safetensors.torch import load_file, load_model
    _current["model"] = model
    op.preprocessing.preprocess_observation_pytorch.__kwdefaults__["image_resolution"] = (
        (TINY[model]["vision"]["image_size"],) * 2)
    try:
        m = op.pi0_pytorch.PI0Pytorch(tiny_config(model))
    finally:
        _current.clear()
    load_model(m, str(directory / "model.safetensors"))   # strict, as openpi
    m.eval()
    stats = op.normalize.load(directory / "assets" / asset_id)
    x = load_file(str(ours))
    a = openpi_actions(m, x, num_steps)
    v = openpi_velocity(m, x)
    da, dv = (a - x["actions"]).abs().max().item(), (v - x["velocity"]).abs().max().item()
    ns = json.loads((directory / "assets" / asset_id / "norm_stats.json").read_text())["norm_stats"]
    dn = max(float(np.abs(np.asarray(getattr(stats[k], s)) - np.asarray(x[f"stats.{k}.{s}"].numpy())).max())
             for k in ("state", "actions") for s in ("mean", "std", "q01", "q99"))
    print(json.dumps({"dir": str(directory), "asset_id": asset_id, "max_abs_diff_actions": da,
                      "max_abs_diff_velocity": dv, "max_abs_diff_norm_stats": dn, "stats_keys": sorted(ns)}))
    return da, dv, dn


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--openpi-src", required=True, help="openpi's src/ directory (holds openpi/)")
    p.add_argument("--out", default=str(OUT), help="fixture directory to write")
    p.add_argument("--check-dir", default=None, help="a policy dir we saved: load it with openpi's loader")
    p.add_argument("--variant", default="pi0", choices=sorted(TINY), help="--check-dir: which tiny model it holds")
    p.add_argument("--ours", default=None, help="--check-dir: safetensors with our inputs, actions, velocity, stats")
    p.add_argument("--asset-id", default="metaworld", help="--check-dir: the asset id openpi's config would name")
    p.add_argument("--num-steps", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(1)
    op = import_openpi(Path(a.openpi_src))
    if a.check_dir:
        da, dv, dn = check_dir(op, Path(a.check_dir), a.variant, Path(a.ours), a.asset_id, a.num_steps)
        sys.exit(0 if max(da, dv, dn) < 1e-4 else 1)
    write_fixtures(op, Path(a.out), a.num_steps)
    write_resize_fixture(Path(a.openpi_src), Path(a.out))
