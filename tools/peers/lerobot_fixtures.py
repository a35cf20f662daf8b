"""Peer fixtures written by LeRobot's OWN code: tiny random π0 / π0.5 checkpoints + reference outputs.

Runs in a separate venv with LeRobot installed (it needs Python >= 3.12 and torch < 2.12, so it cannot
share ours); nothing here imports pirl's code:

    ~/.pyenv/versions/3.12.1/bin/python -m venv /work/peers/lerobot-venv
    /work/peers/lerobot-venv/bin/pip install 'lerobot[pi]==0.6.1' sentencepiece
    /work/peers/lerobot-venv/bin/python tools/peers/lerobot_fixtures.py --out tests/fixtures/peers/lerobot
    # load a directory that pirl saved (e.g. after RL) with LeRobot's from_pretrained + processors and
    # compare its actions with the ones pirl recorded in DIR/../check_inputs.safetensors:
    /work/peers/lerobot-venv/bin/python tools/peers/lerobot_fixtures.py --check-dir DIR --inputs FILE

Models: pi0 and pi05 (2 cameras, LeRobot's default normalisation: MEAN_STD / QUANTILES), pi05_mean_std
(normalization_mapping MEAN_STD), pi0_trained_state12_action8 (max_state_dim 12 != max_action_dim 8, and
trained 20 steps with LeRobot's loss from tied embedding tables), pi0_bf16 (config dtype bfloat16: LeRobot
keeps the PaliGemma / expert layers in bf16 but for the vision tower, projector and norms, and saves them so;
its reference also holds the outputs of a float32-config LeRobot model holding the same values). In every one lm_head != embed_tokens.
Per model, in <out>/<name>/: what LeRobot's `save_pretrained` writes for the policy and for its pre/post
processors (config.json, model.safetensors, policy_{pre,post}processor*.{json,safetensors}), our tiny
tokenizer.model, and reference.safetensors: raw inputs (uint8 images of an odd, non-square size, raw
state, x_t, t, noise; prompts in reference.json) and LeRobot's outputs for them through its own
processors (normalisation, prompt, tokenisation, image resize-with-pad) and model: the velocity at
(x_t, t), 10-step Euler actions from `noise` (model space, padded) and the env actions after its
postprocessor. <out>/full_size.json: key names / shapes of the real-size π0 / π0.5 (built on the meta
device) and their default config.json.

Tiny sizes: LeRobot reads widths from named Gemma variants and hard-codes SigLIP's MLP width, the
projector width and a 257152-token vocabulary; the patches below swap in small numbers at build
time only (the joint attention reshapes to 8 heads, so 8 heads are kept).
"""
import argparse
import json
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TASKS = ["pick_up the red cube ", "open the top drawer", "drawer open", "put the bowl on the plate"]
TINY = dict(vlm=dict(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
            expert=dict(width=16, depth=2, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=8),
            vision=dict(hidden_size=32, num_hidden_layers=1, intermediate_size=32, patch_size=8))
# SigLIP keeps PaliGemma's default 16 heads (LeRobot, like openpi, never sets them): width 32 = 16 x 2
RAW_HW = (45, 61)   # raw camera frames: odd, non-square, larger than the model's 32 px (downscaled)


# ---------------------------------------------------------------------------- tokenizer stand-in
class StandInTokenizer:
    """What LeRobot's TokenizerProcessorStep calls on PaliGemma's HF tokenizer (add_bos_token=True,
    no EOS, right padding with pad id 0, truncation at max_length), over a local SentencePiece model."""

    def __init__(self, model_file):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.pad_token_id, self.bos_token_id = self.sp.pad_id(), self.sp.bos_id()

    def __call__(self, text, max_length, truncation=True, padding="max_length", padding_side="right",
                 return_tensors="pt", **_):
        assert padding == "max_length" and padding_side == "right" and return_tensors == "pt"
        texts = [text] if isinstance(text, str) else list(text)
        ids = torch.full((len(texts), max_length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros(len(texts), max_length, dtype=torch.long)
        for i, t in enumerate(texts):
            tok = ([self.bos_token_id] + self.sp.encode(t))[:max_length if truncation else None]
            ids[i, :len(tok)], mask[i, :len(tok)] = torch.tensor(tok), 1
        return {"input_ids": ids, "attention_mask": mask}


def tiny_tokenizer(path: Path, vocab_size: int) -> Path:
    """A small SentencePiece BPE model (PaliGemma's specials: pad 0, eos 1, bos 2, unk 3; "\n" a piece
    of its own; no dummy prefix), identity-normalised so that the file stays a few kB."""
    import io
    import sentencepiece as spm
    lines = []
    for s in TASKS:
        text = s.strip().replace("_", " ")
        lines += [s, text, f"Task: {text}, State: 0 1 2 127 128 255;", "Action: "]
    lines.append(" ".join(str(i) for i in range(256)) + " ; , : . - _")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, byte_fallback=True, hard_vocab_limit=False, split_digits=False,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, num_threads=1, shuffle_input_sentence=False,
        user_defined_symbols=["\n"], remove_extra_whitespaces=False, add_dummy_prefix=False,
        normalization_rule_name="identity", minloglevel=2)
    path.write_bytes(buf.getvalue())
    return path


# ---------------------------------------------------------------------------- tiny-size patches
@contextmanager
def tiny_sizes(vocab_size: int):
    """Swap LeRobot's named Gemma variants for tiny ones, and its hard-coded SigLIP / projector sizes and
    vocabulary for tiny ones right before the PaliGemma / expert modules are built from them."""
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05

    def gemma(variant):
        return modeling_pi0.GemmaConfig(**TINY["vlm" if variant == "gemma_2b" else "expert"])

    def paligemma(PaliGemma):
        def build(config):
            for k, v in {**TINY["vision"], "projection_dim": TINY["vlm"]["width"]}.items():
                setattr(config.vision_config, k, v)
            config.text_config.vocab_size = config._vocab_size = vocab_size
            return PaliGemma(config=config)
        return build

    def expert(Expert):
        def build(config):
            config.vocab_size = vocab_size
            return Expert(config=config)
        return build

    names = ("get_gemma_config", "PaliGemmaForConditionalGenerationWithPiGemma", "PiGemmaForCausalLM")
    saved = [(m, {n: getattr(m, n) for n in names}) for m in (modeling_pi0, modeling_pi05)]
    for m, orig in saved:
        m.get_gemma_config = gemma
        m.PaliGemmaForConditionalGenerationWithPiGemma = paligemma(orig[names[1]])
        m.PiGemmaForCausalLM = expert(orig[names[2]])
    try:
        yield
    finally:
        for m, orig in saved:
            for n, v in orig.items():
                setattr(m, n, v)


# ---------------------------------------------------------------------------- building / saving
def policy_classes(kind):
    if kind == "pi0":
        from lerobot.policies.pi0 import processor_pi0 as proc
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
        from lerobot.policies.pi0.modeling_pi0 import PI0Policy as Policy
        return Config, Policy, proc, proc.make_pi0_pre_post_processors
    from lerobot.policies.pi05 import processor_pi05 as proc
    from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy as Policy
    return Config, Policy, proc, proc.make_pi05_pre_post_processors


@contextmanager
def standin_tokenizer_in(proc_module, tokenizer):
    """LeRobot's factory names PaliGemma's hub tokenizer (not reachable here): hand it the stand-in."""
    base = proc_module.TokenizerProcessorStep
    proc_module.TokenizerProcessorStep = lambda **kw: base(**kw, tokenizer=tokenizer)
    try:
        yield
    finally:
        proc_module.TokenizerProcessorStep = base


def dataset_stats(S, A, seed):
    g = np.random.default_rng(seed)
    out = {}
    for key, n in (("observation.state", S), ("action", A)):
        x = g.normal(size=(500, n)) * g.uniform(0.5, 3.0, n) + g.normal(size=n)
        out[key] = {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0),
                    "q01": np.quantile(x, 0.01, 0), "q99": np.quantile(x, 0.99, 0)}
    return {k: {s: torch.tensor(v, dtype=torch.float32) for s, v in d.items()} for k, d in out.items()}


def make_model(kind, out: Path, tok_file: Path, vocab_size: int, seed: int, cameras=("base", "wrist"),
               S=5, A=4, max_state_dim=8, max_action_dim=8, chunk=8, norm=None, train_steps=0, dtype="float32"):
    """Build a tiny LeRobot policy with random weights and save it + its processors with LeRobot's code.
    train_steps: first tie embed_tokens to lm_head (as a checkpoint converted from openpi starts), then train
    that many steps with LeRobot's own loss (policy.forward) and AdamW on random demonstrations."""
    from lerobot.configs import FeatureType, NormalizationMode, PolicyFeature
    Config, Policy, proc_module, make_processors = policy_classes(kind)
    feats = {f"observation.images.{c}": PolicyFeature(FeatureType.VISUAL, (3, 32, 32)) for c in cameras}
    feats["observation.state"] = PolicyFeature(FeatureType.STATE, (S,))
    kw = dict(input_features=feats, output_features={"action": PolicyFeature(FeatureType.ACTION, (A,))},
              chunk_size=chunk, n_action_steps=chunk, max_state_dim=max_state_dim, max_action_dim=max_action_dim,
              image_resolution=(32, 32), tokenizer_max_length=48 if kind == "pi0" else 64, device="cpu",
              dtype=dtype)
    if norm:
        kw["normalization_mapping"] = {"VISUAL": NormalizationMode.IDENTITY, "STATE": NormalizationMode(norm),
                                       "ACTION": NormalizationMode(norm)}
    config = Config(**kw)
    torch.manual_seed(seed)
    with tiny_sizes(vocab_size):
        policy = Policy(config).eval()
    for p in policy.parameters():   # LeRobot zero-initialises adaRMS: give every tensor random values
        if p.ndim >= 1:
            torch.nn.init.normal_(p, std=0.3 if p.ndim == 1 else 0.2)
    tokenizer = StandInTokenizer(tok_file)
    with standin_tokenizer_in(proc_module, tokenizer):
        pre, post = make_processors(config, dataset_stats=dataset_stats(S, A, seed))
    if train_steps:
        finetune(policy, pre, train_steps, seed)
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    (out / "tokenizer.model").write_bytes(tok_file.read_bytes())
    return policy, pre, post


def finetune(policy, pre, steps, seed, lr=1e-3):
    pg = policy.model.paligemma_with_expert.paligemma
    with torch.no_grad():
        pg.model.language_model.embed_tokens.weight.copy_(pg.lm_head.weight)   # tied at the start
    opt = torch.optim.AdamW(policy.parameters(), lr=lr, weight_decay=0.01)
    policy.train()
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        raw = raw_inputs(policy, seed=1000 + i)
        A = policy.config.output_features["action"].shape[0]
        batch = pre({**lerobot_batch(policy, raw), "action": torch.randn(2, policy.config.chunk_size, A, generator=g)})
        loss, _ = policy.forward(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    head, emb = pg.lm_head.weight, pg.model.language_model.embed_tokens.weight
    print(f"  after {steps} training steps |embed_tokens - lm_head| max {float((head - emb).abs().max().detach()):.2e}")


# ---------------------------------------------------------------------------- LeRobot's outputs
def raw_inputs(policy, B=2, seed=0, tasks=None):
    c = policy.config
    g = np.random.default_rng(seed)
    n_cam, S = len(c.image_features), c.input_features["observation.state"].shape[0]
    H, W = RAW_HW
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = (127 + 100 * np.sin(xx[..., None] / 5.0 + yy[..., None] / 7.0 + np.arange(3))).astype(np.float32)
    images = np.clip(smooth[None, None] + g.normal(0, 30, (B, n_cam, H, W, 3)), 0, 255).astype(np.uint8)
    return {"images": images, "state": g.normal(size=(B, S)).astype(np.float32) * 1.5,
            "instruction": list(tasks or TASKS[:B]),
            "x_t": torch.tensor(g.normal(size=(B, c.chunk_size, c.max_action_dim)), dtype=torch.float32),
            "t": torch.tensor([0.3, 0.85][:B], dtype=torch.float32),
            "noise": torch.tensor(g.normal(size=(B, c.chunk_size, c.max_action_dim)), dtype=torch.float32)}


def lerobot_batch(policy, raw):
    """Env frames as LeRobot's env wrappers hand them to the preprocessor: float [0, 1], (B, 3, H, W)."""
    batch = {key: torch.from_numpy(raw["images"][:, i]).permute(0, 3, 1, 2).float() / 255.0
             for i, key in enumerate(policy.config.image_features)}
    batch["observation.state"] = torch.from_numpy(raw["state"])
    batch["task"] = list(raw["instruction"])
    return batch


@torch.no_grad()
def lerobot_outputs(policy, pre, post, raw, num_steps=10):
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi05 import modeling_pi05
    kind = policy.config.type
    batch = pre(lerobot_batch(policy, raw))
    images, img_masks = policy._preprocess_images(batch)
    tokens, masks = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
    args = (images, img_masks, tokens, masks) + ((policy.prepare_state(batch),) if kind == "pi0" else ())
    # the velocity at (x_t, t): LeRobot's own prefix pass + denoise_step, with its Euler loop swapped for one call
    mod = modeling_pi0 if kind == "pi0" else modeling_pi05
    euler = mod.euler_integrate
    mod.euler_integrate = lambda fn, noise, n, **kw: fn(noise, raw["t"])
    try:
        v = policy.model.sample_actions(*args, noise=raw["x_t"].clone(), num_steps=1)
    finally:
        mod.euler_integrate = euler
    actions = policy.model.sample_actions(*args, noise=raw["noise"].clone(), num_steps=num_steps)
    chunk = policy.predict_action_chunk(batch, noise=raw["noise"].clone(), num_steps=num_steps)
    env_actions = post(chunk)
    assert torch.equal(chunk, actions[..., :chunk.shape[-1]])
    return {"velocity": v, "actions": actions, "env_actions": env_actions, "tokens": tokens,
            "token_masks": masks, "images": torch.stack(images, 1), "image_masks": torch.stack(img_masks, 1),
            **({"state": batch["observation.state"]} if kind == "pi0" else {})}


def write_reference(out: Path, policy, pre, post, raw, keep_images=False):
    """raw inputs + LeRobot's outputs; keep_images: also its processed (resized, [-1, 1]) camera images.
    A bf16 policy (config dtype bfloat16): also those of a float32-config twin with the same values (`*_fp32`)."""
    ref = lerobot_outputs(policy, pre, post, raw)
    tensors = {"raw_images": torch.from_numpy(raw["images"]), "raw_state": torch.from_numpy(raw["state"]),
               "x_t": raw["x_t"], "t": raw["t"], "noise": raw["noise"]}
    tensors.update({k: v.contiguous() for k, v in ref.items() if k != "images" or keep_images})
    if policy.config.dtype == "bfloat16":   # a float32-config twin (fp32 buffers: RoPE etc.) holding the same values
        import copy
        config32 = copy.deepcopy(policy.config)
        config32.dtype = "float32"
        with tiny_sizes(policy.model.paligemma_with_expert.paligemma.lm_head.weight.shape[0]):
            twin = type(policy)(config32).eval()
        twin.load_state_dict({k: v.float() for k, v in policy.state_dict().items()})
        ref32 = lerobot_outputs(twin, pre, post, raw)
        tensors.update({f"{k}_fp32": ref32[k].contiguous() for k in ("velocity", "actions", "env_actions")})
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(json.dumps({"instruction": raw["instruction"], "num_steps": 10}, indent=1))
    return ref


# ---------------------------------------------------------------------------- full-size key lists
def full_size(out: Path):
    """Real-size π0 / π0.5 as LeRobot builds them (on the meta device: no memory, nothing downloaded):
    every state-dict key and shape, the parameters shared under two names, and config.json's fields."""
    result = {}
    for kind in ("pi0", "pi05"):
        Config, Policy, _, _ = policy_classes(kind)
        from lerobot.configs import FeatureType, PolicyFeature
        config = Config(input_features={"observation.images.base_0_rgb": PolicyFeature(FeatureType.VISUAL, (3, 224, 224)),
                                        "observation.state": PolicyFeature(FeatureType.STATE, (8,))},
                        output_features={"action": PolicyFeature(FeatureType.ACTION, (7,))}, device="cpu")
        config.validate_features()
        mod = sys.modules[Policy.__module__]
        with torch.device("meta"):
            model = (mod.PI0Pytorch if kind == "pi0" else mod.PI05Pytorch)(config)
        sd = {"model." + k: list(v.shape) for k, v in model.state_dict().items()}
        names = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append("model." + name)
        with tempfile.TemporaryDirectory() as d:
            config._save_pretrained(Path(d))
            cfg_json = json.loads((Path(d) / "config.json").read_text())
        result[kind] = {"keys": sd, "shared": [n for n in names.values() if len(n) > 1], "config": cfg_json}
    (out / "full_size.json").write_text(json.dumps(result, sort_keys=True, separators=(",", ":")))


# ---------------------------------------------------------------------------- --check-dir
@torch.no_grad()
def check_dir(d: Path, inputs: Path, result: Path | None):
    """Load d with LeRobot's own from_pretrained (policy + processors) and run the inputs pirl recorded;
    print / write LeRobot's actions and their max abs difference from pirl's."""
    from lerobot.policies.factory import make_pre_post_processors
    kind = json.loads((d / "config.json").read_text())["type"]
    _, Policy, _, _ = policy_classes(kind)
    on_file = load_file(str(d / "model.safetensors"))
    vocab = on_file["model.paligemma_with_expert.paligemma.lm_head.weight"].shape[0]
    with tiny_sizes(vocab) if vocab != 257152 else nullcontext():   # the sizes it was built at
        policy = Policy.from_pretrained(str(d)).eval()
    loaded = policy.state_dict()   # LeRobot's from_pretrained only warns when loading fails: check it loaded all
    bad = [k for k, v in on_file.items() if k not in loaded or not torch.equal(loaded[k], v)]
    if bad or set(loaded) != set(on_file):
        raise SystemExit(f"LeRobot did not load {d} as it is: {len(bad)} tensors differ (e.g. {bad[:3]}), "
                         f"keys missing / unexpected {sorted(set(loaded) ^ set(on_file))[:5]}")
    tok = StandInTokenizer(d / "tokenizer.model")
    pre, post = make_pre_post_processors(policy.config, pretrained_path=str(d),
                                         preprocessor_overrides={"tokenizer_processor": {"tokenizer": tok}})
    t = load_file(str(inputs))
    meta = json.loads(Path(str(inputs).replace(".safetensors", ".json")).read_text())
    raw = {"images": t["raw_images"].numpy(), "state": t["raw_state"].numpy(), "instruction": meta["instruction"],
           "x_t": t["x_t"], "t": t["t"], "noise": t["noise"]}
    ref = lerobot_outputs(policy, pre, post, raw, num_steps=meta.get("num_steps", 10))
    report = {"dir": str(d), "lerobot_loaded_every_tensor": True}
    for k in ("velocity", "actions", "env_actions"):
        if f"pirl_{k}" in t:
            report[f"max_abs_diff_{k}"] = float((ref[k] - t[f"pirl_{k}"]).abs().max())
    print(json.dumps(report, indent=1))
    if result:
        save_file({k: v.contiguous() for k, v in ref.items() if k in ("velocity", "actions", "env_actions")},
                  str(result))
        Path(str(result) + ".json").write_text(json.dumps(report, indent=1))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="write the fixtures here")
    ap.add_argument("--check-dir", type=Path, help="load this directory with LeRobot and run --inputs")
    ap.add_argument("--inputs", type=Path, help="raw inputs + pirl's outputs (safetensors; prompts in .json)")
    ap.add_argument("--result", type=Path, help="--check-dir: write LeRobot's outputs here")
    ap.add_argument("--rl-checkpoint", type=Path, help="also write a tiny 1-camera π0 sized for MetaWorld here")
    ap.add_argument("--only", nargs="+", help="write only these models (and not full_size.json)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.check_dir:
        check_dir(a.check_dir, a.inputs, a.result)
        return
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_file = tiny_tokenizer(Path(tmp) / "tok.model", 320)
        import sentencepiece as spm
        vocab = spm.SentencePieceProcessor(model_file=str(tok_file)).get_piece_size()
        models = {   # name: (kind, overrides)
            "pi0": ("pi0", dict(seed=1)),
            "pi05": ("pi05", dict(seed=2)),
            "pi05_mean_std": ("pi05", dict(seed=3, norm="MEAN_STD")),
            "pi0_trained_state12_action8": ("pi0", dict(seed=4, max_state_dim=12, S=10, train_steps=20)),
            "pi0_bf16": ("pi0", dict(seed=6, dtype="bfloat16")),   # LeRobot's bf16 mode: saved as it holds it
        }
        for name, (kind, kw) in models.items():
            if a.only and name not in a.only:
                continue
            policy, pre, post = make_model(kind, out / name, tok_file, vocab, **kw)
            ref = write_reference(out / name, policy, pre, post, raw_inputs(policy, seed=kw["seed"]),
                                  keep_images=name == "pi0")
            print(f"{name}: |v| max {ref['velocity'].abs().max():.3f}, |a| max {ref['actions'].abs().max():.3f}")
        if a.rl_checkpoint:   # MetaWorld: 1 camera, 4-D state and actions, 32 px
            make_model("pi0", a.rl_checkpoint, tok_file, vocab, seed=5, cameras=("corner",), S=4, A=4)
    if not a.only:
        full_size(out)


if __name__ == "__main__":
    main()
