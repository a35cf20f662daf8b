"""Peer fixtures for GR00T N1.5's input side, written by LeRobot 0.5.1's OWN GR00T processor pipeline run on
the REAL Eagle 2.5 processor files (Qwen3 tokenizer, chat template, image processor config) of Isaac-GR00T N1.5.

    /work/peers/lerobot051-venv/bin/python tools/peers/groot_eagle_fixtures.py \\
        --isaac-eagle <Isaac-GR00T checkout>/gr00t/model/backbone/eagle2_hg_model [--out tests/fixtures/peers/groot_eagle]

(the venv is tools/peers/groot_peer.sh's). Nothing here imports pirl's code. LeRobot reads the Eagle processor
from its cache dir $HF_LEROBOT_HOME/lerobot/eagle2hg-processor-groot-n1p5, which its model creation fills
with its own vendored processor code (lerobot/policies/groot/eagle2_hg_model/*.py) plus the JSON / tokenizer
files of the HF repo lerobot/eagle2hg-processor-groot-n1p5. Here a temporary cache is filled the same way, the
files taken from Isaac-GR00T. Two edits: LeRobot renamed the processor classes (Eagle2_5_VL... -> Eagle25VL...),
so the auto_map / processor_class names in the JSON files are renamed to find its code; and return_tensors "pt"
is set in preprocessor_config.json (see fill_cache: transformers 5.3 does not pass the processor's own down).

Written to <out>/ (tests/test_eagle.py reads it; the tokenizer files are Apache-2.0, see NOTICE there):
  eagle/                 the Isaac-GR00T Eagle files as they are (vocab.json and merges.txt xz-compressed)
  reference.safetensors  per observation k: the peer's input_ids_k, attention_mask_k, pixel_values_k, state_k
                         (normalised, padded to max_state_dim), the raw images_k / raw_state_k; a left-padded batch
                         of observations 1 and 2 (batch_input_ids, batch_attention_mask); model actions and
                         their un-normalised env actions (post_actions)
  reference.json         instructions, the peer's prompt texts, stats, dims, versions
  lerobot/               a LeRobot GR00T dir's non-weight files as LeRobot writes them (write_lerobot_dir):
                         config.json (GrootConfig._save_pretrained, as GrootPolicy.save_pretrained calls it) and
                         policy_preprocessor.json / policy_postprocessor.json + their state files
                         (make_groot_pre_post_processors(...).save_pretrained), known min / max stats (float64,
                         as a dataset's stats are, with mean / std / quantiles / image stats beside them)
  lerobot_reference.safetensors  that dir's pipelines LOADED BACK by LeRobot (from_pretrained): raw_state,
                         state (the pack step's normalised, padded (B, 1, max_state_dim)), model_actions and
                         post_actions (the postprocessor's un-normalised env actions)
  lerobot_reference.json its stats, dims, versions

    ... --lerobot-only [--out DIR]   writes only lerobot/ and lerobot_reference.* (no Eagle files needed)
"""
import argparse
import json
import lzma
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

EAGLE_REPO = "lerobot/eagle2hg-processor-groot-n1p5"
FILES = ["vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json",
         "chat_template.json", "processor_config.json", "preprocessor_config.json", "config.json",
         "generation_config.json"]
RENAMED = ["tokenizer_config.json", "processor_config.json", "preprocessor_config.json"]
S_ENV, A_ENV, MAX_STATE, MAX_ACTION = 6, 5, 64, 32
# (instruction, cameras, height, width): a 224 px tile as it is, a small image upsampled, a large one downsampled
OBSERVATIONS = [("pick up the black bowl between the plate and the ramekin and place it on the plate", 2, 224, 224),
                ("open the top drawer of the cabinet.", 1, 48, 64),
                ("", 1, 256, 256)]


def fill_cache(home: Path, isaac_eagle: Path) -> Path:
    import lerobot.policies.groot as groot_pkg
    cache = home / EAGLE_REPO
    cache.mkdir(parents=True)
    for f in (Path(groot_pkg.__file__).parent / "eagle2_hg_model").glob("*.py"):   # LeRobot's own processor code
        shutil.copy(f, cache / f.name)
    for name in FILES:
        text = (isaac_eagle / name).read_text()
        (cache / name).write_text(text.replace("Eagle2_5_VL", "Eagle25VL") if name in RENAMED else text)
    # with transformers 5.3 (LeRobot 0.5.1's pin) the processor's return_tensors="pt" does not reach the image
    # processor, which then hands Eagle25VLProcessor a list it cannot use ('list' has no .shape): the same value
    # is set in its config instead (it changes the container only, not a number)
    cfg = json.loads((cache / "preprocessor_config.json").read_text())
    (cache / "preprocessor_config.json").write_text(json.dumps({**cfg, "return_tensors": "pt"}, indent=2))
    return cache


L_CAMERAS, L_STATE, L_ACTION, L_MAX_STATE, L_MAX_ACTION, L_TAG = 2, 6, 5, 8, 8, "so100"   # tiny-groot's dims


def write_lerobot_dir(out: Path, seed: int) -> None:
    """out/lerobot: what LeRobot 0.5.1 writes next to a GR00T policy's weights, by its own code; then LeRobot's
    own numbers from the pipelines it loads back from those files."""
    import lerobot
    from safetensors.torch import save_file
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.groot.configuration_groot import GrootConfig
    from lerobot.policies.groot.processor_groot import (GrootActionUnpackUnnormalizeStep, GrootPackInputsStep,
                                                        make_groot_pre_post_processors)
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import (batch_to_transition, policy_action_to_transition,
                                              transition_to_policy_action)
    from lerobot.types import TransitionKey

    g = np.random.default_rng(seed)
    d = out / "lerobot"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)

    def stats_of(n, const):
        lo = g.uniform(-2.0, 0.5, n)
        hi = lo + g.uniform(0.3, 2.5, n)
        hi[const] = lo[const]                            # a constant dim: LeRobot maps it to 0 / back to min
        return {"min": lo, "max": hi, "mean": (lo + hi) / 2, "std": (hi - lo) / 4, "q01": lo + 0.01, "q99": hi - 0.01,
                "count": np.array([1000])}
    stats = {"observation.state": stats_of(L_STATE, 2), "action": stats_of(L_ACTION, 4)}
    for i in range(L_CAMERAS):                           # a dataset's image stats sit in the same dict
        stats[f"observation.images.cam{i}"] = {"mean": np.full((3, 1, 1), 0.4), "std": np.full((3, 1, 1), 0.2),
                                                "min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))}
    features = {f"observation.images.cam{i}": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32))
                for i in range(L_CAMERAS)}
    features["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(L_STATE,))
    gconf = GrootConfig(input_features=features,
                        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(L_ACTION,))},
                        max_state_dim=L_MAX_STATE, max_action_dim=L_MAX_ACTION, chunk_size=8, n_action_steps=8,
                        use_bf16=False, embodiment_tag=L_TAG, device="cpu", push_to_hub=False)
    gconf._save_pretrained(d)
    pre, post = make_groot_pre_post_processors(gconf, dataset_stats=stats)
    pre.save_pretrained(d)
    post.save_pretrained(d)

    # LeRobot's own numbers, from the pipelines it loads back from the files just written
    pre2 = PolicyProcessorPipeline.from_pretrained(d, config_filename="policy_preprocessor.json")
    post2 = PolicyProcessorPipeline.from_pretrained(d, config_filename="policy_postprocessor.json",
                                                    to_transition=policy_action_to_transition,
                                                    to_output=transition_to_policy_action)
    pack = next(s for s in pre2.steps if isinstance(s, GrootPackInputsStep))
    assert any(isinstance(s, GrootActionUnpackUnnormalizeStep) for s in post2.steps)
    assert pack.embodiment_tag == L_TAG and pack.stats is not None
    lo, hi = stats["observation.state"]["min"], stats["observation.state"]["max"]
    span = np.where(hi > lo, hi - lo, 1.0)
    raw = torch.tensor(g.uniform(lo - 0.3 * span, hi + 0.3 * span, (4, L_STATE)), dtype=torch.float32)  # some outside
    state = pack(batch_to_transition({"observation.state": raw.clone(), "task": ["x"] * 4}))[TransitionKey.OBSERVATION]["state"]
    fresh = pre.steps[2](batch_to_transition({"observation.state": raw.clone(), "task": ["x"] * 4}))
    assert torch.equal(state, fresh[TransitionKey.OBSERVATION]["state"])   # the saved stats are the ones used
    model_actions = torch.tensor(g.uniform(-1.2, 1.2, (6, L_MAX_ACTION)), dtype=torch.float32)
    post_actions = post2(model_actions.clone())
    assert torch.equal(post_actions, post(model_actions.clone()))
    ref = {"raw_state": raw, "state": state, "model_actions": model_actions, "post_actions": post_actions}
    save_file({k: v.contiguous() for k, v in ref.items()}, str(out / "lerobot_reference.safetensors"))
    meta = {"stats": {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()
                      if not k.startswith("observation.images")},
            "cameras": L_CAMERAS, "env_state_dim": L_STATE, "env_action_dim": L_ACTION, "max_state_dim": L_MAX_STATE,
            "max_action_dim": L_MAX_ACTION, "embodiment_tag": L_TAG, "files": sorted(p.name for p in d.iterdir()),
            "versions": {"lerobot": getattr(lerobot, "__version__", "0.5.1"), "torch": torch.__version__,
                         "python": sys.version.split()[0]}}
    (out / "lerobot_reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {d}: {meta['files']}; state {tuple(state.shape)}, post actions {tuple(post_actions.shape)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--isaac-eagle", type=Path)
    parser.add_argument("--out", default="tests/fixtures/peers/groot_eagle", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lerobot-only", action="store_true", help="write only lerobot/ and lerobot_reference.*")
    args = parser.parse_args()
    out = args.out.resolve()
    home = Path(tempfile.mkdtemp(prefix="groot_eagle_home_"))
    os.environ["HF_LEROBOT_HOME"] = str(home)          # LeRobot reads it at import
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.lerobot_only:
        write_lerobot_dir(out, args.seed + 1)
        return
    if args.isaac_eagle is None:
        parser.error("--isaac-eagle is required (unless --lerobot-only)")
    fill_cache(home, args.isaac_eagle)

    import lerobot
    import transformers
    from safetensors.torch import save_file
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.groot.configuration_groot import GrootConfig
    from lerobot.policies.groot.processor_groot import collate, make_groot_pre_post_processors

    g = torch.Generator().manual_seed(args.seed)
    lo = -torch.rand(S_ENV, generator=g) - 0.5
    hi = torch.rand(S_ENV, generator=g) + 0.5
    hi[3] = lo[3]                                        # one constant dim: both peers map it to 0 / back to min
    a_lo, a_hi = -torch.rand(A_ENV, generator=g) - 0.5, torch.rand(A_ENV, generator=g) + 0.5
    a_hi[1] = a_lo[1]
    stats = {"observation.state": {"min": lo, "max": hi}, "action": {"min": a_lo, "max": a_hi}}
    features = {"observation.images.cam0": PolicyFeature(type=FeatureType.VISUAL, shape=(3, 224, 224)),
                "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(S_ENV,))}
    gconf = GrootConfig(input_features=features, output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(A_ENV,))},
                        max_state_dim=MAX_STATE, max_action_dim=MAX_ACTION, chunk_size=16, n_action_steps=16,
                        use_bf16=False, embodiment_tag="new_embodiment", device="cpu", push_to_hub=False)
    pre, post = make_groot_pre_post_processors(gconf, dataset_stats=stats)
    pack, encode, collate_step = pre.steps[2], pre.steps[3], pre.steps[4]

    ref, texts, contents = {}, [], []
    for k, (instruction, n_cam, h, w) in enumerate(OBSERVATIONS):
        images = torch.randint(0, 256, (1, n_cam, h, w, 3), generator=g, dtype=torch.uint8)
        state = torch.rand(1, S_ENV, generator=g) * 2.4 - 1.2
        batch = {f"observation.images.cam{i}": images[:, i].permute(0, 3, 1, 2).contiguous() for i in range(n_cam)}
        batch.update({"observation.state": state.clone(), "task": [instruction]})
        result = pre(batch)
        ref.update({f"images_{k}": images, f"raw_state_{k}": state, f"input_ids_{k}": result["eagle_input_ids"],
                    f"attention_mask_{k}": result["eagle_attention_mask"], f"pixel_values_{k}": result["eagle_pixel_values"],
                    f"state_{k}": result["state"]})     # GrootPackInputsStep's normalised (1, 1, max_state_dim)
        # the prompt text and the Eagle content of this observation, from the peer's own pack + encode steps
        from lerobot.processor.converters import batch_to_transition
        from lerobot.types import TransitionKey
        t = encode(pack(batch_to_transition({**batch, "observation.state": state.clone()})))
        content = t[TransitionKey.COMPLEMENTARY_DATA]["eagle_content"][0]
        texts.append(content["text_list"][0])
        contents.append(content)
    # a batch of observations 1 and 2 (one camera each) collated as LeRobot does: left padding to the longest
    batched = collate([{"eagle_content": c} for c in contents[1:]], collate_step.proc)
    ref["batch_input_ids"], ref["batch_attention_mask"] = batched["eagle_input_ids"], batched["eagle_attention_mask"]
    # actions: model outputs (N, max_action_dim) -> the peer's un-normalised env actions (N, A_ENV)
    model_actions = torch.rand(8, MAX_ACTION, generator=g) * 2.4 - 1.2
    ref["model_actions"], ref["post_actions"] = model_actions, post(model_actions.clone())

    (out / "eagle").mkdir(parents=True, exist_ok=True)
    for name in FILES:
        data = (args.isaac_eagle / name).read_bytes()
        if name in ("vocab.json", "merges.txt"):
            (out / "eagle" / (name + ".xz")).write_bytes(lzma.compress(data, preset=9))
        else:
            (out / "eagle" / name).write_bytes(data)
    save_file({k: v.contiguous() for k, v in ref.items()}, str(out / "reference.safetensors"))
    meta = {"observations": [{"instruction": i, "cameras": n, "height": h, "width": w} for i, n, h, w in OBSERVATIONS],
            "texts": texts, "stats": {k: {s: v.tolist() for s, v in d.items()} for k, d in stats.items()},
            "env_state_dim": S_ENV, "env_action_dim": A_ENV, "max_state_dim": MAX_STATE, "max_action_dim": MAX_ACTION,
            "keys": list(ref), "versions": {"lerobot": getattr(lerobot, "__version__", "0.5.1"), "torch": torch.__version__,
                                            "transformers": transformers.__version__, "python": sys.version.split()[0]}}
    (out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {out}: {[tuple(ref[f'input_ids_{k}'].shape) for k in range(len(OBSERVATIONS))]}")
    write_lerobot_dir(out, args.seed + 1)


if __name__ == "__main__":
    main()
