"""Does LeRobot 0.5.1's own GrootPolicy.from_pretrained load the GR00T dir pirl saves back in LeRobot's layout, and
give pirl's actions? (issue 26: round trips stay in the user's format)

In OUR venv (no flag): the committed LeRobot GR00T fixture (tests/fixtures/peers/groot/lerobot, written by LeRobot)
is loaded by load_policy as tests/test_peer_groot.py does (its embedding tables grown to the real Qwen vocabulary,
rows 0..63 the peer's, so that the real Eagle tokenizer fits; its base model the same), its action head moved as RL
would move it, saved by save_policy (LeRobot's layout), reloaded, and run on the peer's own GR00T inputs
(tests/fixtures/peers/groot/reference.safetensors) and on raw states / model actions; everything goes to
WORK/check_inputs.safetensors. Then, with --lerobot-python, the same file in LeRobot's venv (--peer) loads
WORK/saved with GrootPolicy.from_pretrained and its saved pre / post processor pipelines and prints the max abs
differences (weights, actions of get_action from the same noise, normalised state, un-normalised actions):

    bash tools/peers/groot_peer.sh                    # once: LeRobot 0.5.1's venv (/work/peers/lerobot051-venv)
    .venv/bin/python tools/peers/groot_lerobot_roundtrip.py --work /tmp/groot_rt \
        --lerobot-python /work/peers/lerobot051-venv/bin/python
"""
import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "peers" / "groot"
EAGLE_FILES = ROOT / "tests" / "fixtures" / "peers" / "groot_eagle" / "eagle"
VOCAB = 151680          # the real Qwen vocabulary (the Eagle tokenizer's ids reach 151668)
STEPS, EMBODIMENT, A_ENV = 4, 31, 5


def grow_vocab(src: Path, dst: Path, prefix: str):
    sd, g = load_file(str(src)), torch.Generator().manual_seed(0)
    for k in [k for k in sd if k.startswith(prefix) and k.endswith(("embed_tokens.weight", "lm_head.weight"))]:
        sd[k] = torch.cat([sd[k], 0.02 * torch.randn(VOCAB - sd[k].shape[0], sd[k].shape[1], generator=g)])
    save_file(sd, str(dst))


@torch.no_grad()
def pirl_side(work: Path):
    sys.path.insert(0, str(ROOT))
    from common.checkpoint import load_policy, save_policy
    from common.eagle import EAGLE_DIR_ENV
    if work.exists():
        shutil.rmtree(work)
    base, src, eagle_dir = work / "base", work / "src", work / "eagle"
    shutil.copytree(FIX / "base", base)
    grow_vocab(FIX / "base" / "model.safetensors", base / "model.safetensors", "backbone.")
    shutil.copytree(FIX / "lerobot", src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "base_model_path": str(base)}, indent=4))
    grow_vocab(FIX / "lerobot" / "model.safetensors", src / "model.safetensors", "_groot_model.backbone.")
    eagle_dir.mkdir()
    for f in EAGLE_FILES.iterdir():
        data = f.read_bytes()
        (eagle_dir / f.name.removesuffix(".xz")).write_bytes(lzma.decompress(data) if f.suffix == ".xz" else data)
    for name, extra in (("preprocessor_config.json", {"size": {"height": 32, "width": 32}}),
                        ("processor_config.json", {"tokens_per_tile": 4})):
        (eagle_dir / name).write_text(json.dumps({**json.loads((eagle_dir / name).read_text()), **extra}))
    shutil.copy(FIX / "eagle" / "config.json", eagle_dir / "config.json")
    os.environ[EAGLE_DIR_ENV] = str(eagle_dir)

    policy, processor = load_policy(src)
    g = torch.Generator().manual_seed(1)
    for name, p in policy.action_head.named_parameters():   # as RL would: every head weight moved
        p.add_(0.05 * torch.randn(p.shape, generator=g))
    save_policy(work / "saved", policy, processor)
    policy, processor = load_policy(work / "saved")
    assert processor.provenance.source_format == "lerobot"

    ref = load_file(str(FIX / "reference.safetensors"))
    ids = ref["input_ids"]
    cache = policy.encode_tokens(ids, ref["attention_mask"], ref["pixel_values"], ref["state"], embodiment=EMBODIMENT,
                                 image_positions=ids == json.loads((FIX / "reference.json").read_text())["image_token_index"])
    noise = ref[f"new_embodiment_k{STEPS}_noise"]
    actions = policy.sample_from_cache(cache, noise, STEPS)            # our t; GR00T's get_action is τ = 1 - t
    raw_state = torch.randn(6, 6, generator=g) * 1.5
    model_actions = torch.rand(6, policy.config.action_dim, generator=g) * 2.4 - 1.2
    save_file({"input_ids": ids, "attention_mask": ref["attention_mask"], "pixel_values": ref["pixel_values"],
               "state": ref["state"], "noise": noise, "pirl_actions": actions, "raw_state": raw_state,
               "pirl_state": processor.state_norm.normalize(raw_state), "model_actions": model_actions,
               "pirl_env_actions": torch.as_tensor(processor.actions_to_env(model_actions, A_ENV))},
              str(work / "check_inputs.safetensors"))
    print(f"saved {work / 'saved'}: {sorted(f.name for f in (work / 'saved').iterdir())}", file=sys.stderr)


@torch.no_grad()
def peer_side(work: Path):
    """In LeRobot 0.5.1's venv: nothing of pirl is imported."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    home = work / "lerobot_home"
    os.environ["HF_LEROBOT_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import groot_fixtures as gf   # its Eagle cache, SDPA for SigLIP, and GR00TN15's post_init for transformers 5.3
    cache = gf.prepare_eagle_cache(home)
    eagle_cfg = json.loads(json.dumps(gf.EAGLE_CONFIG))
    eagle_cfg["text_config"]["vocab_size"] = VOCAB
    (cache / "config.json").write_text(json.dumps(eagle_cfg, indent=2))
    from lerobot.policies.groot.groot_n1 import GR00TN15
    from lerobot.policies.groot.modeling_groot import GrootPolicy
    from lerobot.policies.groot.processor_groot import GrootPackInputsStep
    from lerobot.processor import PolicyProcessorPipeline
    from lerobot.processor.converters import batch_to_transition, policy_action_to_transition, transition_to_policy_action
    from lerobot.types import TransitionKey
    torch.distributions.Distribution.set_default_validate_args(False)
    init = GR00TN15.__init__

    def init_then_post_init(self, *a, **k):
        init(self, *a, **k)
        self.post_init()

    GR00TN15.__init__ = init_then_post_init
    saved, inp = work / "saved", load_file(str(work / "check_inputs.safetensors"))
    policy = gf.build_peer(GrootPolicy.from_pretrained, str(saved))
    m = policy._groot_model.eval()
    gf.cpu_attention(m)
    ours = {k.removeprefix("_groot_model."): v for k, v in load_file(str(saved / "model.safetensors")).items()}
    theirs = m.state_dict()
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))[:5]
    weights = max((ours[k].float() - theirs[k].float()).abs().max().item() for k in ours)

    B, H, D = inp["noise"].shape
    record = []
    hook = m.action_head.action_encoder.register_forward_hook(lambda mod, a, o: record.append(a[0].clone()))
    m.action_head.num_inference_timesteps = STEPS
    torch.manual_seed(100 + STEPS)            # the fixture's noise: get_action draws exactly this first
    out = m.get_action({"eagle_input_ids": inp["input_ids"], "eagle_attention_mask": inp["attention_mask"],
                        "eagle_pixel_values": inp["pixel_values"], "eagle_image_sizes": torch.tensor([[32, 32]] * inp["pixel_values"].shape[0]),
                        "state": inp["state"], "state_mask": torch.ones(B, 1, inp["state"].shape[-1], dtype=torch.bool),
                        "embodiment_id": torch.full((B,), EMBODIMENT, dtype=torch.long)})["action_pred"]
    hook.remove()
    assert torch.equal(record[0], inp["noise"]), "get_action did not start from pirl's noise"

    pre = PolicyProcessorPipeline.from_pretrained(saved, config_filename="policy_preprocessor.json")
    post = PolicyProcessorPipeline.from_pretrained(saved, config_filename="policy_postprocessor.json",
                                                   to_transition=policy_action_to_transition, to_output=transition_to_policy_action)
    pack = next(s for s in pre.steps if isinstance(s, GrootPackInputsStep))
    n = inp["raw_state"].shape[0]
    state = pack(batch_to_transition({"observation.state": inp["raw_state"].clone(), "task": ["x"] * n}))
    state = state[TransitionKey.OBSERVATION]["state"].reshape(n, -1)[:, :inp["pirl_state"].shape[-1]]
    env_actions = post(inp["model_actions"].clone())
    print(json.dumps({"dir": str(saved), "max_abs_diff_weights": weights,
                      "max_abs_diff_actions": (out - inp["pirl_actions"]).abs().max().item(),
                      "max_abs_actions": out.abs().max().item(),
                      "max_abs_diff_state": (state - inp["pirl_state"]).abs().max().item(),
                      "max_abs_diff_env_actions": (env_actions - inp["pirl_env_actions"]).abs().max().item()}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="scratch dir (emptied): the saved dir and check inputs")
    ap.add_argument("--lerobot-python", help="python of LeRobot 0.5.1's venv: run the LeRobot side too")
    ap.add_argument("--peer", action="store_true", help="(internal) the LeRobot side, in its venv")
    a = ap.parse_args()
    if a.peer:
        return peer_side(a.work)
    pirl_side(a.work)
    if a.lerobot_python:
        subprocess.run([a.lerobot_python, __file__, "--peer", "--work", str(a.work)], check=True)


if __name__ == "__main__":
    main()
