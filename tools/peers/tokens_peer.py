"""Peer fixtures of prompt TOKENS (issue 25): the ids and masks the peers' OWN tokenizer code makes of the prompts
pirl's envs produce, over one shared tiny SentencePiece model (PaliGemma's cannot be downloaded here).
tests/test_peer_tokens.py gives pirl's Processor the same model, prompts and states and compares.

    bash tools/peers/tokens_peer.sh     # all three steps below, ~15 s

Steps (each writes into tests/fixtures/peers/tokens/):
  prepare  (pirl's venv) trains paligemma_tiny.model (SentencePiece BPE with PaliGemma's specials and settings:
           <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4, "\\n" a piece of its own, byte fallback, split digits, no
           dummy prefix, identity normaliser) on the prompts, and writes prompts.json: LIBERO spatial tasks 0..9 as
           pirl's make_envs reads them (hf-libero's task.language), every MetaWorld description of
           common/metaworld_prompts.json, a few edge cases (underscores, spaces, a newline, one past 48 tokens),
           raw 8-D states (openpi's LIBERO client's 10 recorded ones, random, out-of-range, and two within 1e-7 of a
           π0.5 state bin edge after normalisation, where float32 and float64 arithmetic disagree) and norm stats.
  openpi   (openpi's venv) openpi's PaligemmaTokenizer (src/openpi/models/tokenizer.py) and transforms.py's
           Normalize + TokenizePrompt, as its ModelTransformFactory composes them: π0 (max_token_len 48), π0.5
           without state (pi05_libero: 200) and π0.5 with the discrete state (Pi0Config's default: 200) after
           quantile normalisation -> openpi.npz.
  lerobot  (LeRobot 0.6.1's venv) LeRobot's own make_pi0_pre_post_processors / make_pi05_pre_post_processors
           (Pi0NewLineProcessor, NormalizerProcessorStep, Pi05PrepareStateTokenizerProcessorStep,
           TokenizerProcessorStep) at its configs' default tokenizer_max_length, with transformers' AutoTokenizer
           -> lerobot.npz, plus LeRobot's own MetaWorld task descriptions (envs/metaworld_config.json).

Stand-ins, and only these:
  * openpi: `openpi.shared.download.maybe_download` returns the local model for the gs:// path openpi names (the
    path is checked); jax (tree.map), flax.traverse_util, shared.array_typing and model.ModelType as
    tools/peers/openpi_conventions.py stands them in; orbax, transformers.AutoProcessor and
    models/utils/fsq_tokenizer (FAST only) are empty modules; openpi_client.image_tools too (ResizeImages only)
    unless openpi_pi05_libero.py passes openpi_client's own package.
  * LeRobot: `AutoTokenizer.from_pretrained("google/paligemma-3b-pt-224")` loads a local directory instead: the
    tiny model as tokenizer.model with a tokenizer_config.json naming GemmaTokenizer (PaliGemma's class,
    add_bos_token true, add_eos_token false); transformers 5 converts it into its tokenizers-backed
    GemmaTokenizer (BPE over the model's pieces and merges, " " -> "▁", byte fallback), the class PaliGemma's
    hub files load as. The raw states enter LeRobot's pipeline as float32 tensors, as its env wrappers hand them.
"""
import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "peers" / "tokens"
MODEL = "paligemma_tiny.model"
OPENPI_TOKENIZER_URL = "gs://big_vision/paligemma_tokenizer.model"
LEROBOT_TOKENIZER_REPO = "google/paligemma-3b-pt-224"
EDGE_PROMPTS = ["pick_up the black_bowl ", "  open the top drawer\n", "put the soup in the basket\nthen close it",
                "pick up the black bowl " * 12 + "and place it on the plate"]   # the last: > 48 tokens


# ---------------------------------------------------------------------------- prepare (pirl's venv)
def prepare(out: Path, vocab_size: int):
    import io

    import sentencepiece as spm
    from libero.libero import benchmark
    suite = benchmark.get_benchmark_dict()["libero_spatial"]()
    libero = [suite.get_task(i).language for i in range(10)]           # what common/envs.py make_envs reads
    metaworld = json.loads((ROOT / "common" / "metaworld_prompts.json").read_text())["TASK_DESCRIPTIONS"]
    client = np.load(ROOT / "tests" / "fixtures" / "peers" / "openpi_libero" / "libero_spatial_task0.npz")
    assert str(client["prompt"]) == libero[0]                           # openpi's client sent task.language
    rng = np.random.default_rng(25)
    recorded = client["state"].astype(np.float64)                       # (10, 8) openpi's LIBERO client's
    lo, hi = recorded.min(0) - 0.05, recorded.max(0) + 0.05
    samples = rng.uniform(lo - 0.1, hi + 0.1, (400, 8))
    q01, q99 = np.quantile(samples, 0.01, 0), np.quantile(samples, 0.99, 0)
    stats = {"mean": samples.mean(0), "std": samples.std(0), "q01": q01, "q99": q99,
             "min": samples.min(0), "max": samples.max(0)}
    prompts = libero + list(metaworld.values()) + EDGE_PROMPTS
    n_random = len(prompts) - len(recorded) - 3 - 2
    states = np.concatenate([recorded, rng.uniform(lo - 0.1, hi + 0.1, (n_random, 8)),
                             np.stack([q01, q99, q01 + (q99 - q01) * np.linspace(-0.2, 1.2, 8)]),   # edges, outside
                             near_bin_edges(recorded[0], q01, q99)])
    lines = []
    for p in prompts:
        text = p.strip().replace("_", " ").replace("\n", " ")
        lines += [p, text, f"Task: {text}, State: 0 1 2 127 128 255;", "Action: "]
    lines.append(" ".join(str(i) for i in range(256)) + " ; , : . - _ -1")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, hard_vocab_limit=False, split_digits=True,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", control_symbols=["<mask>"], user_defined_symbols=["\n"], allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, add_dummy_prefix=False, normalization_rule_name="identity",
        num_threads=1, shuffle_input_sentence=False, minloglevel=2)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL).write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    assert [sp.id_to_piece(i) for i in range(5)] == ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    doc = {"_source": "tools/peers/tokens_peer.py prepare", "hf_libero": _version("hf-libero"),
           "sentencepiece": spm.__version__, "vocab_size": sp.get_piece_size(),
           "libero_spatial": libero, "metaworld": metaworld, "edge": EDGE_PROMPTS, "prompts": prompts,
           "states": states.tolist(), "near_bin_edge_rows": [len(states) - 2, len(states) - 1],
           "state_stats": {k: v.tolist() for k, v in stats.items()}}
    (out / "prompts.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"prepare: {len(prompts)} prompts, {len(states)} states, {sp.get_piece_size()} pieces, "
          f"{len(buf.getvalue())} bytes -> {out / MODEL}")


def near_bin_edges(state, q01, q99, dim=3):
    """Two states whose quantile-normalised `dim` (axis-angle x, ~3.14: the coarsest float32 grid) lies 1e-7 above /
    below one of π0.5's 256 bin edges in float64 (openpi normalises the client's float64 state with float64 stats),
    where float32 arithmetic (LeRobot's tensors) lands in the other bin: the first such edge from the middle out."""
    edges, out = np.linspace(-1, 1, 256 + 1)[:-1], []
    for delta in (1e-7, -1e-7):
        for k in sorted(range(1, 256), key=lambda k: abs(k - 128)):
            x = state.copy()
            x[dim] = q01[dim] + (edges[k] + delta + 1.0) / 2.0 * (q99[dim] - q01[dim] + 1e-6)
            n64 = (x - q01) / (q99 - q01 + 1e-6) * 2.0 - 1.0
            x32, lo, hi = (v.astype(np.float32) for v in (x, q01, q99))
            n32 = (x32 - lo) / (hi - lo + np.float32(1e-6)) * np.float32(2.0) - np.float32(1.0)
            if np.digitize(n64[dim], edges) != np.digitize(n32[dim], edges):
                out.append(x)
                break
    assert len(out) == 2, "no near-edge state found"
    return np.stack(out)


# ---------------------------------------------------------------------------- openpi (its venv)
def import_openpi(src: Path, model_file: Path, client_dir: Path | None = None):
    """openpi's tokenizer.py, transforms.py and shared/normalize.py, with the stand-ins of the module docstring;
    client_dir: openpi_client's own package (its image_tools, for ResizeImages), else an empty stand-in.
    Returns (tokenizer module, transforms, normalize, ModelType, the URLs maybe_download was asked for)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from openpi_conventions import _flatten_dict, _stub, _tree_map, _unflatten_dict, stub_array_typing_and_model
    _stub("jax", tree=types.SimpleNamespace(map=_tree_map))
    _stub("flax").traverse_util = _stub("flax.traverse_util", flatten_dict=_flatten_dict,
                                        unflatten_dict=_unflatten_dict)
    _stub("orbax").checkpoint = _stub("orbax.checkpoint")
    _stub("transformers", AutoProcessor=None)
    if client_dir is None:
        _stub("openpi_client").image_tools = _stub("openpi_client.image_tools")
    else:
        sys.path.insert(0, str(client_dir))
    sys.path.insert(0, str(src))
    import openpi.models
    import openpi.shared
    model_type = stub_array_typing_and_model(src)
    import openpi.models.utils   # a namespace package; its fsq_tokenizer (FAST only) needs jax / flax
    openpi.models.utils.fsq_tokenizer = _stub("openpi.models.utils.fsq_tokenizer")
    asked = []

    def maybe_download(url, **kwargs):
        asked.append(url)
        assert url == OPENPI_TOKENIZER_URL, url
        return Path(model_file)
    openpi.shared.download = _stub("openpi.shared.download", maybe_download=maybe_download)
    from openpi import transforms
    from openpi.models import tokenizer
    from openpi.shared import normalize
    return tokenizer, transforms, normalize, model_type, asked


def run_openpi(out: Path, src: Path):
    doc = json.loads((out / "prompts.json").read_text())
    tokenizer_mod, transforms, normalize, _, asked = import_openpi(src, out / MODEL)
    prompts, states = doc["prompts"], np.asarray(doc["states"], np.float64)
    st = {k: np.asarray(v, np.float64) for k, v in doc["state_stats"].items()}
    stats = {"state": normalize.NormStats(mean=st["mean"], std=st["std"], q01=st["q01"], q99=st["q99"])}
    result = {}
    for name, max_len, discrete in (("pi0", 48, False), ("pi05_nostate", 200, False), ("pi05_state", 200, True)):
        # ModelTransformFactory: TokenizePrompt(PaligemmaTokenizer(max_token_len), discrete_state_input), after the
        # data transforms' Normalize (quantiles for π0.5: DataConfigFactory.create_base_config)
        tokenize = transforms.TokenizePrompt(tokenizer_mod.PaligemmaTokenizer(max_len), discrete_state_input=discrete)
        chain = transforms.compose([transforms.Normalize(stats, use_quantiles=name != "pi0"), tokenize])
        rows = [chain({"state": states[i].copy(), "prompt": p}) for i, p in enumerate(prompts)]
        result[f"{name}_tokens"] = np.stack([r["tokenized_prompt"] for r in rows]).astype(np.int64)
        result[f"{name}_masks"] = np.stack([r["tokenized_prompt_mask"] for r in rows]).astype(bool)
        result[f"{name}_state"] = np.stack([r["state"] for r in rows])   # normalised, what was discretised
        print(f"openpi {name}: max_len {max_len} tokens {result[f'{name}_tokens'].shape}, "
              f"longest {int(result[f'{name}_masks'].sum(1).max())}")
    assert set(asked) == {OPENPI_TOKENIZER_URL}
    meta = {"peer": "openpi", "commit": "15a9616", "tokenizer_py_sha256": _sha256(src / "openpi/models/tokenizer.py"),
            "transforms_py_sha256": _sha256(src / "openpi/transforms.py"), "sentencepiece": _version("sentencepiece"),
            "max_len": {"pi0": 48, "pi05_nostate": 200, "pi05_state": 200}, "tokenizer_url": OPENPI_TOKENIZER_URL}
    np.savez_compressed(out / "openpi.npz", meta=np.array(json.dumps(meta)), **result)


# ---------------------------------------------------------------------------- LeRobot (its venv)
def standin_hub(model_file: Path, directory: Path):
    """A local stand-in for google/paligemma-3b-pt-224's tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(model_file.read_bytes())
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>",
        "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    return directory


def run_lerobot(out: Path):
    import tempfile

    from lerobot.envs import metaworld as lerobot_metaworld
    doc = json.loads((out / "prompts.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        result, meta = _lerobot_tokens(doc, standin_hub(out / MODEL, Path(tmp) / "paligemma"))
    descriptions = lerobot_metaworld.TASK_DESCRIPTIONS
    np.savez_compressed(out / "lerobot.npz", meta=np.array(json.dumps(meta)),
                        metaworld_tasks=np.array(list(doc["metaworld"])),
                        metaworld_descriptions=np.array([descriptions[t] for t in doc["metaworld"]]), **result)


def _lerobot_tokens(doc: dict, hub: Path):
    import torch
    import transformers
    from lerobot.configs import FeatureType, PolicyFeature
    from lerobot.policies.pi0.configuration_pi0 import PI0Config
    from lerobot.policies.pi0.processor_pi0 import make_pi0_pre_post_processors
    from lerobot.policies.pi05.configuration_pi05 import PI05Config
    from lerobot.policies.pi05.processor_pi05 import make_pi05_pre_post_processors
    from lerobot.processor import tokenizer_processor

    prompts, states = doc["prompts"], np.asarray(doc["states"], np.float64)
    asked = []

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            asked.append(name)
            assert name == LEROBOT_TOKENIZER_REPO, name
            return transformers.AutoTokenizer.from_pretrained(str(hub), *args, **kwargs)
    tokenizer_processor.AutoTokenizer = AutoTokenizer

    feats = {"observation.state": PolicyFeature(FeatureType.STATE, (8,))}
    acts = {"action": PolicyFeature(FeatureType.ACTION, (7,))}
    st = {k: torch.tensor(v, dtype=torch.float32) for k, v in doc["state_stats"].items()}
    dataset_stats = {"observation.state": st, "action": {k: v[:7] for k, v in st.items()}}
    result, max_len = {}, {}
    for name, Config, make in (("pi0", PI0Config, make_pi0_pre_post_processors),
                               ("pi05", PI05Config, make_pi05_pre_post_processors)):
        config = Config(input_features=dict(feats), output_features=dict(acts), device="cpu")
        pre, _ = make(config, dataset_stats=dataset_stats)
        batch = pre({"observation.state": torch.tensor(states, dtype=torch.float32), "task": list(prompts)})
        result[f"{name}_tokens"] = batch["observation.language.tokens"].numpy().astype(np.int64)
        result[f"{name}_masks"] = batch["observation.language.attention_mask"].numpy().astype(bool)
        result[f"{name}_state"] = batch["observation.state"].numpy()   # normalised (π0.5: what was discretised)
        max_len[name] = config.tokenizer_max_length
        print(f"lerobot {name}: tokenizer_max_length {config.tokenizer_max_length} tokens "
              f"{result[f'{name}_tokens'].shape}, longest {int(result[f'{name}_masks'].sum(1).max())}, "
              f"norm {config.normalization_mapping['STATE']}")
    hf = transformers.AutoTokenizer.from_pretrained(str(hub))
    assert set(asked) == {LEROBOT_TOKENIZER_REPO} and len(hf) == doc["vocab_size"], (asked, len(hf))   # no added pieces
    meta = {"peer": "lerobot", "lerobot": _version("lerobot"), "transformers": transformers.__version__,
            "tokenizers": _version("tokenizers"), "sentencepiece": _version("sentencepiece"),
            "hf_tokenizer_class": type(hf).__name__, "hf_vocab_size": len(hf), "max_len": max_len,
            "tokenizer_repo": LEROBOT_TOKENIZER_REPO}
    return result, meta


def _sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _version(dist: str) -> str:
    import importlib.metadata as md
    return md.version(dist)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["prepare", "openpi", "lerobot"])
    p.add_argument("--openpi-src", type=Path, default=Path("/work/peers/openpi-src/src"), help="openpi's src/")
    p.add_argument("--vocab-size", type=int, default=400)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.step == "prepare":
        prepare(args.out, args.vocab_size)
    elif args.step == "openpi":
        run_openpi(args.out, args.openpi_src)
    else:
        run_lerobot(args.out)


if __name__ == "__main__":
    main()
