"""GR00T N1.5 against LeRobot 0.5.1's own code (tests/fixtures/peers/groot, written by tools/peers/groot_fixtures.py
in the peer's venv: a tiny random GR00T N1.5 saved by its GR00TN15.save_pretrained (Isaac-GR00T / HF layout) and
by LeRobot's GrootPolicy.save_pretrained, and the peer's outputs). Without the peer installed: both layouts load
with zero missing / unexpected keys; our velocity (our time convention, converted inside common/groot.py), the
timestep buckets, the sampled actions (4 and 10 steps, two embodiments) and the training loss match the peer's;
a wrong time convention or a wrong embodiment moves the result far past the tolerance."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.groot import EMBODIMENTS, GrootPolicy, load_groot

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
