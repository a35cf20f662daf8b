"""Peer fixtures for RLinf's π0 / π0.5 checkpoints (issue 15): `full_weights.pt` as RLinf's FSDP actor writes it,
and reference outputs of the policy it holds. Runs in the openpi peer venv (see tools/peers/openpi_fixtures.py):

    /work/peers/openpi-venv/bin/python tools/peers/rlinf_fixtures.py --openpi-src /work/peers/openpi-src/src \
        --rlinf-src /work/peers/rlinf-src

RLinf's own code was NOT run: RLinf (ray, its scheduler / worker stack, omegaconf configs) is not installable here
at tiny scale on CPU. What is RLinf's, and what is done as RLinf does it (RLinf commit a3816b5):
  * the model: RLinf's OpenPi0ForRLActionPrediction is openpi's PI0Pytorch plus RL heads
    (rlinf/models/embodiment/openpi/openpi_action_model.py:116, the value head at :191); here openpi's PI0Pytorch
    (the tiny sizes of openpi_fixtures.py) with RLinf's own ValueHead class (rlinf/models/embodiment/modules/
    value_head.py, compiled from its source) as `value_head`, with tiny hidden sizes (RLinf's are 512/256/128
    on a 1024-wide input: megabytes).
  * the dtypes: after loading, RLinf's get_model casts with openpi's to_bfloat16_for_selected_params("bfloat16")
    (rlinf/models/embodiment/openpi/__init__.py:90): most tensors of the file are bf16.
  * the file: RLinf's FSDPStrategyBase.save_checkpoint (rlinf/hybrid_engines/fsdp/strategy/base.py:250-264):
    get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)) of the FSDP
    model (here FSDP2 fully_shard, as RLinf's fsdp/utils.py:456, on a 1-process gloo group), then
    torch.save(state_dict, <save_path>/model_state_dict/full_weights.pt), save_path = <ckpt>/actor.
  * the norm stats: <ckpt>/<asset_id>/norm_stats.json (RLinf reads _checkpoints.load_norm_stats(checkpoint_dir,
    asset_id), rlinf/models/embodiment/openpi/__init__.py:112), written with openpi's normalize.save.
  * config.json: RLinf's RL output has none (RLinf takes the model config from its config name); the
    openpi-converted base model it starts from has one (examples/convert_jax_model_to_pytorch.py): it is copied
    in, as the only place that records the action horizon, plus (π0.5) `discrete_state_input`, which RLinf's
    config name fixes (rlinf/models/embodiment/openpi/dataconfig/__init__.py) and no file records.
  * the reference outputs: RLinf's loader (rlinf/models/embodiment/openpi/__init__.py:71-78:
    model.load_state_dict(torch.load(full_weights.pt), strict=False)) into a fresh fp32 openpi PI0Pytorch, then
    openpi's denoise_step / sample_actions (fp32; RLinf itself would next cast to bf16).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openpi_fixtures as opf  # noqa: E402

OUT = opf.ROOT / "tests" / "fixtures" / "peers" / "rlinf"
ASSET_ID = "rlinf/metaworld"          # nested, as RLinf's <repo_id>/... ids
VALUE_HIDDEN = (16, 8)


def value_head_class(rlinf_src: Path):
    """RLinf's ValueHead, compiled from its own source (torch.nn only)."""
    ns = {}
    exec(compile((rlinf_src / "rlinf/models/embodiment/modules/value_head.py").read_text(), "value_head.py", "exec"), ns)
    return ns["ValueHead"]


def save_like_rlinf(model, path: Path):
    """FSDP full state dict -> torch.save, as rlinf/hybrid_engines/fsdp/strategy/base.py:250-264."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
    fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state_dict = get_model_state_dict(model=model, options=opts)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(model_state_dict, path / "full_weights.pt")
    return model_state_dict


def main(openpi_src: Path, rlinf_src: Path, out: Path, num_steps: int = 10):
    from safetensors.torch import load_file, save_file
    op = opf.import_openpi(openpi_src)
    ValueHead = value_head_class(rlinf_src)
    for seed, model in enumerate(("pi0", "pi05"), start=20):
        d = out / model
        m = opf.build_tiny(op, model, seed)
        m.value_head = ValueHead(input_dim=opf.TINY[model]["expert"]["width"], hidden_sizes=VALUE_HIDDEN,
                                 output_dim=1, activation="relu", bias_last=True)
        m.paligemma_with_expert.to_bfloat16_for_selected_params("bfloat16")
        sd = save_like_rlinf(m, d / "actor" / "model_state_dict")
        c = opf.tiny_config(model)
        meta = {"action_dim": c.action_dim, "action_horizon": c.action_horizon, "paligemma_variant": c.paligemma_variant,
                "action_expert_variant": c.action_expert_variant, "precision": "bfloat16"}
        if c.pi05:   # fixed by RLinf's config name (dataconfig/__init__.py: most π0.5 configs False), written here
            meta["discrete_state_input"] = False
        (d / "config.json").write_text(json.dumps(meta, indent=2))
        op.normalize.save(d / ASSET_ID, opf.norm_stats(op, "metaworld", seed))
        (d / "tokenizer.model").write_bytes(opf.small_tokenizer(opf.TINY[model]["vocab"]))
        # RLinf's loader into a fresh fp32 model, then openpi's inference
        fresh = opf.build_tiny(op, model, seed + 1000)
        fresh.value_head = ValueHead(input_dim=opf.TINY[model]["expert"]["width"], hidden_sizes=VALUE_HIDDEN,
                                     output_dim=1, activation="relu", bias_last=True)
        missing, unexpected = fresh.load_state_dict(torch.load(d / "actor/model_state_dict/full_weights.pt",
                                                               map_location="cpu"), strict=False)
        assert not unexpected and all("embed_tokens" in k for k in missing), (missing, unexpected)
        fresh.eval()
        x = load_file(str(opf.OUT / model / "reference.safetensors"))   # the openpi fixture's inputs
        ref = {"velocity": opf.openpi_velocity(fresh, x), "actions": opf.openpi_actions(fresh, x, num_steps)}
        save_file({k: v.contiguous() for k, v in ref.items()}, str(d / "reference.safetensors"),
                  metadata={"inputs": f"tests/fixtures/peers/openpi/{model}/reference.safetensors",
                            "num_steps": str(num_steps)})
        dtypes = sorted({str(v.dtype) for v in sd.values()})
        print(f"{model}: {len(sd)} tensors ({dtypes}), e.g. {sorted(sd)[:2]}; |v| max {ref['velocity'].abs().max():.3f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--openpi-src", required=True, help="openpi's src/ directory")
    p.add_argument("--rlinf-src", required=True, help="RLinf's source tree (holds rlinf/)")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    torch.set_num_threads(1)
    main(Path(a.openpi_src), Path(a.rlinf_src), Path(a.out))
