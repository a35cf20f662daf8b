"""RLinf as the peer (issue 15): π0 / π0.5 `full_weights.pt` written by RLinf's own code load here and reproduce
RLinf's own outputs. The fixtures in tests/fixtures/peers/rlinf/ were written by tools/peers/rlinf_fixtures.py in
a venv holding RLinf (a3816b5) and its openpi fork (rlinf-openpi 0.1.1): RLinf's get_model built each tiny random
model from an openpi SFT dir (configs pi0_metaworld / pi05_metaworld, value head included), RLinf's
FSDPModelManager wrapped it (FSDP2, 1-process gloo on CPU) and saved it (FSDPStrategyBase.save_checkpoint), and
RLinf's get_model reloaded the output for the reference velocities / sampled actions (its get_velocity and
sample_actions). Regenerate with

    /work/peers/rlinf-venv/bin/python tools/peers/rlinf_fixtures.py --rlinf-src /work/peers/rlinf-full \
        --openpi-src /work/peers/rlinf-openpi-0.1.1 --openpi-client /work/peers/openpi-src/packages/openpi-client/src
"""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from common.checkpoint import load_policy, save_policy
from common.policy import Observation

torch.set_num_threads(1)
FIX = Path(__file__).parent / "fixtures" / "peers" / "rlinf"
WEIGHTS = "actor/model_state_dict/full_weights.pt"   # <ckpt>/actor/model_state_dict/ as RLinf's runner saves
ASSET_ID = "lerobot/metaworld_mt50"                  # the asset id of RLinf's metaworld configs
MODELS = ["pi0", "pi05"]
TOL = 1e-4
BF16_TOL = 5e-2   # RLinf's own forward with its bf16 weights (and bf16-rounded RoPE frequencies); ours is fp32


def reference(model):
    ref = load_file(str(FIX / model / "reference.safetensors"))
    with safe_open(str(FIX / model / "reference.safetensors"), "pt") as f:
        meta = f.metadata()
    return ref, meta


@torch.no_grad()
def outputs(policy, x, num_steps, t=None):
    obs = Observation(images=x["images"], image_masks=x["image_masks"], tokens=x["tokens"],
                      token_masks=x["token_masks"], state=x["state"])
    v, _ = policy.velocity(policy.encode(obs), x["x_t"], x["t"] if t is None else t)
    return v, policy.sample_actions(obs, x["noise"].clone(), num_steps=num_steps)


@pytest.mark.parametrize("model", MODELS)
def test_rlinf_full_weights_load_and_reproduce_rlinf_within_1e_4(model, capsys):
    policy, proc = load_policy(FIX / model)
    out = capsys.readouterr().out
    assert "ignoring 8 non-policy keys" in out and "value_head.mlp.0.bias" in out   # RLinf's ValueHead, 4 layers
    ref, meta = reference(model)
    assert meta["config_name"] == f"{model}_metaworld"
    v, a = outputs(policy.eval(), ref, int(meta["num_steps"]))
    assert (v - ref["velocity"]).abs().max() < TOL and (a - ref["actions"]).abs().max() < TOL
    # RLinf's own bf16 run of the same file: bf16 rounding apart, the same policy
    assert (v - ref["velocity_bf16"]).abs().max() < BF16_TOL and (a - ref["actions_bf16"]).abs().max() < BF16_TOL
    # a broken convention is far outside the tolerance: t -> 1 - t
    assert (outputs(policy, ref, 1, t=1 - ref["t"])[0] - ref["velocity"]).abs().max() > 100 * TOL
    # every tensor of the file but the value head is held exactly (bf16 ones in fp32); nothing else is missing
    sd = torch.load(FIX / model / WEIGHTS, weights_only=True)
    ours = policy.state_dict()
    assert {str(t.dtype) for t in sd.values()} == {"torch.bfloat16", "torch.float32"}
    assert set(ours) - set(sd) == set()
    for k, t in sd.items():
        if not k.startswith("value_head."):
            assert torch.equal(ours[k], t.float()), k
    assert policy.config.action_dim == 32 and policy.config.action_horizon == 5   # RLinf's openpi: 32-wide projections
    assert proc.provenance.asset_id == ASSET_ID                     # <ckpt>/<asset_id>/norm_stats.json, nested id
    assert proc.provenance.source_format == "rlinf"
    assert policy.config.discrete_state_input is False or model == "pi0"   # from config.json (RLinf's pi05_metaworld)
    wrote = json.loads(meta["rlinf_wrote"])              # what RLinf's save_checkpoint wrote (DCP state not committed)
    assert WEIGHTS in wrote and any(k.startswith("actor/dcp_checkpoint/") for k in wrote)


@pytest.mark.parametrize("where", ["full_weights.pt", "model_state_dict/full_weights.pt", WEIGHTS])
def test_every_place_rlinf_puts_full_weights_is_found(tmp_path, where):
    d = tmp_path / "ck"
    shutil.copytree(FIX / "pi0", d)
    (d / where).parent.mkdir(parents=True, exist_ok=True)
    if where != WEIGHTS:
        (d / WEIGHTS).rename(d / where)
    policy, _ = load_policy(d)
    assert policy.config.action_horizon == 5 and policy.config.vlm_width == 48


def test_what_rlinf_files_cannot_tell_fails_in_one_line(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(FIX / "pi0", d)
    (d / "config.json").unlink()                     # RLinf's RL output alone: no horizon anywhere
    with pytest.raises(ValueError, match=r"^[^\n]*config.json: action_horizon: RLinf's actor/model_state_dict/"
                                         r"full_weights.pt does not record the action horizon[^\n]*$"):
        load_policy(d)
    (d / "config.json").write_text(json.dumps({"action_horizon": 5}))
    assert load_policy(d)[0].config.action_horizon == 5
    torch.save({"img.stem.weight": torch.zeros(1), "llm.embedder.embedding.weight": torch.zeros(1)}, d / WEIGHTS)
    with pytest.raises(ValueError, match=r"full_weights.pt: keys `img.\*` / `llm.\*` are RLinf's OpenPI_RLinf"):
        load_policy(d)


def test_rlinf_policy_saves_to_openpi_layout_with_its_asset_id(tmp_path):
    policy, proc = load_policy(FIX / "pi05")
    save_policy(tmp_path / "out", policy, proc)
    assert (tmp_path / "out" / "assets" / "lerobot" / "metaworld_mt50" / "norm_stats.json").is_file()   # openpi's place
    assert (tmp_path / "out" / "lerobot" / "metaworld_mt50" / "norm_stats.json").is_file()   # RLinf's get_model's place
    again, _ = load_policy(tmp_path / "out")
    ref, _ = reference("pi05")
    torch.testing.assert_close(outputs(again.eval(), ref, 5)[1], outputs(policy.eval(), ref, 5)[1], rtol=0, atol=0)
