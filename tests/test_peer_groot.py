"""GR00T N1.5 against LeRobot 0.5.1's own code (tests/fixtures/peers/groot, written by tools/peers/groot_fixtures.py
in the peer's venv: a tiny random GR00T N1.5 saved by its GR00TN15.save_pretrained (Isaac-GR00T / HF layout) and
by LeRobot's GrootPolicy.save_pretrained, and the peer's outputs). Without the peer installed: both layouts load
with zero missing / unexpected keys; our velocity (our time convention, converted inside common/groot.py), the
timestep buckets, the sampled actions (4 and 10 steps, two embodiments) and the training loss match the peer's;
a wrong time convention or a wrong embodiment moves the result far past the tolerance. Last, the LeRobot dir loaded
through load_policy is saved back in LeRobot's own layout (issue 26) and acts the same once reloaded."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.groot import EMBODIMENTS, GrootPolicy
from common.groot_checkpoint import load_groot

torch.set_num_threads(1)
FIX = Path(__file__).resolve().parent / "fixtures" / "peers" / "groot"
EAGLE = FIX / "eagle" / "config.json"
TOL = 1e-4      # fp32, LeRobot vs us
CAUGHT = 1e-2   # a broken convention must move the result at least this much (100x the tolerance)
CASES = [(name, k) for name in ("new_embodiment", "so100") for k in (4, 10)]


@pytest.fixture(scope="module")
def ref():
    return load_file(str(FIX / "reference.safetensors"))


@pytest.fixture(scope="module")
def policy():
    return load_groot(FIX / "base", eagle_config=EAGLE).eval()


def cache_of(policy, ref, embodiment):
    return policy.encode_tokens(ref["input_ids"], ref["attention_mask"], ref["pixel_values"], ref["state"],
                                embodiment=embodiment)


def our_t(k, steps, n=3):
    """Our t at GR00T's step k of `steps`: t = 1 - k / steps (fp32, as the scripts build their grid)."""
    return torch.full((n,), 1.0 - k * (1.0 / steps), dtype=torch.float32)


def test_both_layouts_load_with_zero_missing_or_unexpected_keys():
    keys = set(GrootPolicy(load_groot(FIX / "base", eagle_config=EAGLE).config).state_dict())
    base = set(load_file(str(FIX / "base" / "model.safetensors")))
    lerobot = {k.removeprefix("_groot_model.") for k in load_file(str(FIX / "lerobot" / "model.safetensors"))}
    assert keys == base == lerobot
    a = load_groot(FIX / "base", eagle_config=EAGLE).state_dict()
    b = load_groot(FIX / "lerobot", eagle_config=EAGLE, base_config=FIX / "base" / "config.json").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((FIX / "lerobot" / "config.json").read_text())["type"] == "groot"


def test_embodiment_by_name_and_the_checkpoints_tag():
    assert load_groot(FIX / "lerobot", eagle_config=EAGLE, base_config=FIX / "base" / "config.json").config.embodiment == 31
    assert load_groot(FIX / "base", eagle_config=EAGLE, embodiment="so100").config.embodiment == EMBODIMENTS["so100"]
    with pytest.raises(ValueError, match="known names"):
        load_groot(FIX / "base", eagle_config=EAGLE, embodiment="no_such_robot")


@torch.no_grad()
def test_vl_tokens_match(policy, ref):
    assert (cache_of(policy, ref, 31).vl - ref["vl_tokens"]).abs().max() < TOL


@pytest.mark.parametrize("name,steps", CASES)
@torch.no_grad()
def test_velocity_buckets_and_actions_match(policy, ref, name, steps):
    """Our velocity at our t = 1 - k/K is minus GR00T's at its τ = k/K, bucket int(k/K · 1000); the Euler ODE
    from the peer's noise gives the peer's actions."""
    key, cache = f"{name}_k{steps}", cache_of(policy, ref, EMBODIMENTS[name])
    for k in range(steps):
        t = our_t(k, steps)
        assert torch.equal(policy.buckets(t), ref[f"{key}_bucket"][k])
        v, feats = policy.velocity(cache, ref[f"{key}_x"][k], t)
        assert (v + ref[f"{key}_v"][k]).abs().max() < TOL, (key, k)
        assert feats.shape == (3, policy.config.action_horizon, policy.expert_width)
    actions = policy.sample_from_cache(cache, ref[f"{key}_noise"], steps)
    assert (actions - ref[f"{key}_actions"]).abs().max() < TOL


@torch.no_grad()
def test_training_loss_matches(policy, ref):
    loss = policy.flow_loss(cache_of(policy, ref, 31), ref["loss_actions"], ref["loss_noise"],
                            time=1.0 - ref["loss_t_groot"], action_mask=ref["loss_action_mask"])
    assert abs(loss.item() - ref["loss"].item()) < TOL


@torch.no_grad()
def test_wrong_time_convention_or_embodiment_is_caught(policy, ref):
    key, cache = "new_embodiment_k4", cache_of(policy, ref, 31)
    k = 1
    x, t = ref[f"{key}_x"][k], our_t(k, 4)
    right = policy.velocity(cache, x, t)[0]
    peer = -ref[f"{key}_v"][k]
    # GR00T's τ fed as if it were our t (no 1 - t): bucket 250 read as 750
    wrong_time = -policy.groot_velocity(cache, x, policy.buckets(1.0 - t))[0]
    assert (right - peer).abs().max() < TOL and (wrong_time - peer).abs().max() > CAUGHT
    # GR00T's prediction taken as our velocity (no sign flip)
    assert (-right - peer).abs().max() > CAUGHT
    # another embodiment's encoders / decoder
    other = policy.sample_from_cache(cache_of(policy, ref, EMBODIMENTS["so100"]), ref[f"{key}_noise"], 4)
    assert (other - ref[f"{key}_actions"]).abs().max() > CAUGHT


# ---------------------------------------------------------------------------------------------- LeRobot round trip
EAGLE_FILES = FIX.parent / "groot_eagle" / "eagle"   # the real Eagle 2.5 processor files (vocab / merges xz-compressed)


@pytest.fixture(scope="module")
def lerobot_copy(tmp_path_factory):
    """The committed LeRobot dir as LeRobot wrote it, loadable through load_policy: base_model_path pointed at the
    committed base model (config.json's is the peer machine's path), the embedding tables grown to the real Qwen
    vocabulary (rows 0..63 the peer's) so that the real Eagle tokenizer's ids fit; and an Eagle processor dir with
    the real tokenizer and the tiny model's tile size / tokens per tile / Eagle config."""
    import lzma
    import shutil

    from safetensors.torch import save_file
    root = tmp_path_factory.mktemp("lerobot_round_trip")
    d, eagle_dir = root / "lerobot", root / "eagle"
    shutil.copytree(FIX / "lerobot", d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "base_model_path": str(FIX / "base")}, indent=4))
    sd, g = load_file(str(d / "model.safetensors")), torch.Generator().manual_seed(0)
    for k in [k for k in sd if k.endswith(("embed_tokens.weight", "lm_head.weight"))]:
        sd[k] = torch.cat([sd[k], 0.02 * torch.randn(151680 - sd[k].shape[0], sd[k].shape[1], generator=g)])
    save_file(sd, str(d / "model.safetensors"))
    eagle_dir.mkdir()
    for f in EAGLE_FILES.iterdir():
        data = f.read_bytes()
        (eagle_dir / f.name.removesuffix(".xz")).write_bytes(lzma.decompress(data) if f.suffix == ".xz" else data)
    pre = json.loads((eagle_dir / "preprocessor_config.json").read_text())
    (eagle_dir / "preprocessor_config.json").write_text(json.dumps({**pre, "size": {"height": 32, "width": 32}}))
    proc = json.loads((eagle_dir / "processor_config.json").read_text())
    (eagle_dir / "processor_config.json").write_text(json.dumps({**proc, "tokens_per_tile": 4}))
    shutil.copy(EAGLE, eagle_dir / "config.json")
    return d, eagle_dir


def act(policy, processor, seed=0):
    """Env actions (2, H, 5) from two raw observations and fixed noise: the processor's inputs and outputs included."""
    g = torch.Generator().manual_seed(seed)
    raw = {"images": torch.randint(0, 256, (2, 2, 40, 40, 3), dtype=torch.uint8, generator=g).numpy(),
           "state": torch.randn(2, 6, generator=g).numpy(), "instruction": ["open the drawer", "push the button"]}
    c = policy.config
    noise = torch.randn(2, c.action_horizon, c.action_dim, generator=g)
    with torch.no_grad():
        return torch.as_tensor(processor.actions_to_env(policy.sample_actions(processor.observation(raw, "cpu"), noise), 5))


def test_a_lerobot_dir_is_saved_back_in_lerobots_layout(lerobot_copy, tmp_path, monkeypatch):
    """Issue 26: a GR00T policy loaded from a LeRobot 0.5.1 dir is saved in LeRobot's layout, not Isaac-GR00T's:
    the file names LeRobot wrote, its safetensors keys (`_groot_model.*`), its config.json and processor files as
    they came; reloaded, it acts as before (to 1e-6), and weights changed after loading (RL) are the ones saved."""
    from safetensors import safe_open

    from common.checkpoint import load_policy, save_policy
    from common.eagle import EAGLE_DIR_ENV, EagleProcessor
    d, eagle_dir = lerobot_copy
    monkeypatch.setenv(EAGLE_DIR_ENV, str(eagle_dir))
    policy, processor = load_policy(d)
    assert isinstance(processor, EagleProcessor) and processor.provenance.source_format == "lerobot"
    with torch.no_grad():   # as after RL: the head moved
        policy.action_head.action_decoder.layer2.b.add_(0.1)
    before = act(policy, processor)
    save_policy(tmp_path / "saved", policy, processor)
    saved = tmp_path / "saved"
    assert sorted(f.name for f in saved.iterdir()) == sorted(f.name for f in (FIX / "lerobot").iterdir())
    with safe_open(str(saved / "model.safetensors"), "pt") as a, safe_open(str(FIX / "lerobot" / "model.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys()) and all(k.startswith("_groot_model.") for k in a.keys())
        assert a.metadata() == b.metadata()
    assert json.loads((saved / "config.json").read_text()).keys() == json.loads((FIX / "lerobot" / "config.json").read_text()).keys()
    for f in (FIX / "lerobot").glob("policy_*"):   # LeRobot's processor pipelines and their min / max stats
        assert (saved / f.name).read_bytes() == f.read_bytes(), f.name
    policy2, processor2 = load_policy(saved)
    assert processor2.provenance.source_format == "lerobot"
    assert all(torch.equal(v, policy2.state_dict()[k]) for k, v in policy.state_dict().items())
    assert (act(policy2, processor2) - before).abs().max() < 1e-6
    # pirl's own fields go beside LeRobot's config (its parser refuses unknown ones)
    save_policy(tmp_path / "extra", policy, processor, extra={"iteration": 3})
    assert json.loads((tmp_path / "extra" / "pirl.json").read_text()) == {"iteration": 3}
    assert (tmp_path / "extra" / "config.json").read_bytes() == (d / "config.json").read_bytes()
