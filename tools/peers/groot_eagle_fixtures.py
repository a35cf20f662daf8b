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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--isaac-eagle", required=True, type=Path)
    parser.add_argument("--out", default="tests/fixtures/peers/groot_eagle", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out.resolve()
    home = Path(tempfile.mkdtemp(prefix="groot_eagle_home_"))
    os.environ["HF_LEROBOT_HOME"] = str(home)          # LeRobot reads it at import
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
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


if __name__ == "__main__":
    main()
