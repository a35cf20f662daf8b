"""RLinf as the peer (issue 15): π0 / π0.5 `full_weights.pt` as RLinf's FSDP actor writes them load here and
reproduce the policy's outputs. The fixtures in tests/fixtures/peers/rlinf/ were written by
tools/peers/rlinf_fixtures.py in the openpi peer venv: openpi's PI0Pytorch + RLinf's ValueHead, cast to bf16
as RLinf's get_model does, saved with get_model_state_dict(full_state_dict=True) of an FSDP2 model and
torch.save (RLinf's save_checkpoint); RLinf's own code was not run (see that script). Regenerate with

    /work/peers/openpi-venv/bin/python tools/peers/rlinf_fixtures.py --openpi-src /work/peers/openpi-src/src \
        --rlinf-src /work/peers/rlinf-src
"""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.checkpoint import load_policy, save_policy
from common.policy import Observation

torch.set_num_threads(1)
PEERS = Path(__file__).parent / "fixtures" / "peers"
FIX = PEERS / "rlinf"
WEIGHTS = "actor/model_state_dict/full_weights.pt"   # <ckpt>/actor/model_state_dict/ as RLinf's runner saves
MODELS = ["pi0", "pi05"]
TOL = 1e-4


@torch.no_grad()
def outputs(policy, model):
    x = load_file(str(PEERS / "openpi" / model / "reference.safetensors"))   # the inputs both fixtures share
    obs = Observation(images=x["images"], image_masks=x["image_masks"], tokens=x["tokens"],
                      token_masks=x["token_masks"], state=x["state"])
    v, _ = policy.velocity(policy.encode(obs), x["x_t"], x["t"])
    return v, policy.sample_actions(obs, x["noise"].clone(), num_steps=10)


@pytest.mark.parametrize("model", MODELS)
def test_rlinf_full_weights_load_and_reproduce_the_policy_within_1e_4(model, capsys):
    policy, proc = load_policy(FIX / model)
    assert "ignoring 6 non-policy keys" in capsys.readouterr().out            # RLinf's value_head.mlp.*
    ref = load_file(str(FIX / model / "reference.safetensors"))
    v, a = outputs(policy.eval(), model)
    assert (v - ref["velocity"]).abs().max() < TOL and (a - ref["actions"]).abs().max() < TOL
    # the file's bf16 tensors are held exactly (in fp32), its fp32 ones too
    sd = torch.load(FIX / model / WEIGHTS, weights_only=True)
    ours = policy.state_dict()
    assert {str(v.dtype) for v in sd.values()} == {"torch.bfloat16", "torch.float32"}
    for k, v in sd.items():
        if not k.startswith("value_head."):
            assert torch.equal(ours[k], v.float()), k
    assert proc.asset_id == "rlinf/metaworld"           # <ckpt>/<asset_id>/norm_stats.json, nested id
    assert proc.source_format == "rlinf"
    assert policy.config.discrete_state_input is False or model == "pi0"   # from config.json, as RLinf's configs


@pytest.mark.parametrize("where", ["full_weights.pt", "model_state_dict/full_weights.pt", WEIGHTS])
def test_every_place_rlinf_puts_full_weights_is_found(tmp_path, where):
    d = tmp_path / "ck"
    shutil.copytree(FIX / "pi0", d)
    (d / where).parent.mkdir(parents=True, exist_ok=True)
    if where != WEIGHTS:
        (d / WEIGHTS).rename(d / where)
    policy, _ = load_policy(d)
    assert policy.config.action_horizon == 6 and policy.config.vlm_width == 48


def test_what_rlinf_files_cannot_tell_fails_in_one_line(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(FIX / "pi0", d)
    (d / "config.json").unlink()                     # RLinf's RL output alone: no horizon anywhere
    with pytest.raises(ValueError, match=r"^[^\n]*config.json: action_horizon: RLinf's actor/model_state_dict/"
                                         r"full_weights.pt does not record the action horizon[^\n]*$"):
        load_policy(d)
    (d / "config.json").write_text(json.dumps({"action_horizon": 6}))
    assert load_policy(d)[0].config.action_horizon == 6
    torch.save({"img.stem.weight": torch.zeros(1), "llm.embedder.embedding.weight": torch.zeros(1)}, d / WEIGHTS)
    with pytest.raises(ValueError, match=r"full_weights.pt: keys `img.\*` / `llm.\*` are RLinf's OpenPI_RLinf"):
        load_policy(d)


def test_rlinf_policy_saves_to_openpi_layout_with_its_asset_id(tmp_path):
    policy, proc = load_policy(FIX / "pi05")
    save_policy(tmp_path / "out", policy, proc)
    assert (tmp_path / "out" / "assets" / "rlinf" / "metaworld" / "norm_stats.json").is_file()
    again, _ = load_policy(tmp_path / "out")
    torch.testing.assert_close(outputs(again.eval(), "pi05")[1], outputs(policy.eval(), "pi05")[1], rtol=0, atol=0)
