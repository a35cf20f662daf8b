"""Peer fixtures from RLinf's OWN code (issue 15): tiny random π0 / π0.5 built by RLinf's get_model from an openpi
SFT directory, wrapped and saved by RLinf's FSDP actor code (actor/model_state_dict/full_weights.pt + its DCP
training state), and reference velocities / sampled actions from RLinf's own model reloaded by RLinf's loader.

Setup (RLinf a3816b5, its openpi fork rlinf-openpi 0.1.1 from PyPI; torch / transformers shared with the openpi
peer venv, see tools/peers/openpi_fixtures.py):

    python3.11 -m venv /work/peers/rlinf-venv
    echo /work/peers/openpi-venv/lib/python3.11/site-packages \
        > /work/peers/rlinf-venv/lib/python3.11/site-packages/_openpi_venv.pth
    /work/peers/rlinf-venv/bin/pip install jax==0.5.3 jaxlib==0.5.3 flax==0.10.2 augmax orbax-checkpoint==0.11.13 \
        beartype==0.19.0 jaxtyping==0.2.36 einops ml-collections==1.0.0 etils tqdm-loggable "ray>=2.47" omegaconf \
        "hydra-core<1.4.0.dev8" accelerate chex==0.1.90 dm-tree equinox filelock fsspec rich polars tyro treescope \
        imageio
    pip download --no-deps rlinf-openpi==0.1.1 && unzip rlinf_openpi-0.1.1-py3-none-any.whl -d /work/peers/rlinf-openpi-0.1.1
    git --git-dir=<RLinf mirror> archive HEAD | tar -x -C /work/peers/rlinf-full
    /work/peers/rlinf-venv/bin/python tools/peers/rlinf_fixtures.py --rlinf-src /work/peers/rlinf-full \
        --openpi-src /work/peers/rlinf-openpi-0.1.1 --openpi-client /work/peers/openpi-src/packages/openpi-client/src

What runs is RLinf's code (paths in the RLinf tree), with the config composed from RLinf's own yaml files
(examples/embodiment/config/model/pi0{,_5}.yaml + hybrid_engines/fsdp.yaml + the actor block of
metaworld_45_ppo_openpi.yaml / metaworld_50_ppo_openpi_pi05.yaml):
  * rlinf.models.get_model -> rlinf/models/embodiment/openpi/__init__.py get_model: get_openpi_config
    ("pi0_metaworld" / "pi05_metaworld"), OpenPi0ForRLActionPrediction (openpi_action_model.py, with its value
    head), loading the SFT model.safetensors, to_bfloat16_for_selected_params, the norm stats and transforms.
  * FSDPModelManager.__init__ / setup_model_and_optimizer / save_checkpoint (hybrid_engines/fsdp/
    fsdp_model_manager.py): FSDP2Strategy.wrap_model (apply_fsdp2_to_model), build_optimizer (AdamW + its
    warmup_optimizer_state), build_lr_scheduler, then FSDPStrategyBase.save_checkpoint (strategy/base.py): DCP
    training state under actor/dcp_checkpoint/, full_weights.pt under actor/model_state_dict/.
    model_provider_func is EmbodiedFSDPActor's (workers/actor/embodied_fsdp_actor_worker.py:117: get_model).
  * the reference: get_model again on the output dir (it reads actor/model_state_dict/full_weights.pt), then the
    model in fp32 (.float(): the file's bf16 values exactly) and RLinf's own _build_prefix_cache + get_velocity
    (v at fixed (x_t, t)) and sample_actions(mode="eval") (its flow-ODE loop, config num_steps).

What is not RLinf's, and why it cannot change the bytes written:
  * no accelerator here: RLinf's Worker detects none (torch_device_type / torch_platform None). They are set to
    "cpu" and a platform whose synchronize / empty_cache / ipc_collect / set_device do nothing (RLinf calls them
    to free memory) and whose is_available() is False (so get_model leaves the model on the CPU).
    FSDP2 over a 1-process gloo group on CPU; strategy "fsdp2" instead of the yaml's "fsdp": RLinf's FSDP1 wrap
    passes device_id=int(LOCAL_RANK) (strategy/fsdp.py:177), a CUDA device. Both save through the same
    FSDPStrategyBase.save_checkpoint.
  * tiny sizes (size only, no other behaviour): openpi's gemma.get_config gets tiny variants; the PaliGemma /
    Gemma constructors get the tiny vocabulary and SigLIP sizes openpi hard-codes (as openpi_fixtures.py);
    preprocess_observation_pytorch's image_resolution; RLinf's ValueHead gets a tiny input / hidden width (RLinf
    hard-codes 1024 / 2048 in and 512-256-128 hidden: megabytes), same class, same 3 hidden layers, same keys.
  * the SFT input: a random tiny openpi PI0Pytorch (rlinf-openpi's) saved with safetensors save_model, its norm
    stats (openpi's normalize.save) at <sft>/lerobot/metaworld_mt50/ (the asset id of RLinf's metaworld configs);
    openpi's tokenizer download is served from a local cache (OPENPI_DATA_HOME) holding a tiny SentencePiece: it
    is only used by RLinf's input transforms, which the fixture does not use (tokens are fed directly).
  * the fp32 reference: after .float(), the RoPE frequencies (non-persistent buffers, not in the file) are
    recomputed by their own class: RLinf's bf16 cast rounded them (0.1 -> 0.10009765625), which .float() cannot
    undo. The bf16 reference (velocity_bf16 / actions_bf16) is RLinf's model exactly as get_model leaves it.
    π0.5 (value_after_vlm): get_value_from_vlm hard-codes 968 prefix tokens, so the reference passes run with
    use_vlm_value off (values are not compared; actions and velocities do not depend on it).
  * config.json and the norm stats next to actor/: RLinf's RL output has neither (it takes them from its config
    name and the SFT dir); copied from the SFT dir, as a user must. reference.safetensors is ours (RLinf's
    outputs, saved).
"""
import argparse
import dataclasses
import json
import os
import shutil
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import openpi_fixtures as opf  # noqa: E402

OUT = opf.ROOT / "tests" / "fixtures" / "peers" / "rlinf"
ASSET_ID = "lerobot/metaworld_mt50"   # data_config.asset_id of RLinf's pi0_metaworld / pi05_metaworld (its repo_id)
VALUE_HIDDEN = (16, 8, 4)
RUNS = {"pi0": ("model/pi0.yaml", "metaworld_45_ppo_openpi.yaml"),
        "pi05": ("model/pi0_5.yaml", "metaworld_50_ppo_openpi_pi05.yaml")}
_current = {}


class CpuPlatform:
    """Stands in for torch.cuda in RLinf's Worker.torch_platform (memory housekeeping only)."""
    synchronize = empty_cache = ipc_collect = staticmethod(lambda *a, **k: None)
    set_device = staticmethod(lambda *a, **k: None)
    is_available = staticmethod(lambda: False)
    current_device = staticmethod(lambda: torch.device("cpu"))


def import_rlinf(rlinf_src: Path, openpi_src: Path, openpi_client: Path):
    sys.path[:0] = [str(rlinf_src), str(openpi_src), str(openpi_client)]
    import openpi.models.gemma as gemma
    from openpi.models_pytorch import gemma_pytorch, preprocessing_pytorch
    from rlinf.scheduler import Worker
    Worker.torch_device_type, Worker.torch_platform = "cpu", CpuPlatform

    openpi_get_config = gemma.get_config

    def get_config(variant):   # tiny_<vlm|expert>_<pi0|pi05>
        if variant.startswith("tiny_"):
            _, part, model = variant.split("_")
            return gemma.Config(**opf.TINY[model][part])
        return openpi_get_config(variant)
    gemma.get_config = get_config
    real_pg, real_gemma = gemma_pytorch.PaliGemmaForConditionalGeneration, gemma_pytorch.GemmaForCausalLM

    def paligemma(config):
        t = opf.TINY[_current["model"]]
        config.text_config.vocab_size = t["vocab"]
        for k, v in t["vision"].items():
            setattr(config.vision_config, k, v)
        config.vision_config.projection_dim = config.projection_dim = t["vlm"]["width"]
        return real_pg(config=config)

    def expert(config):
        config.vocab_size = opf.TINY[_current["model"]]["vocab"]
        return real_gemma(config=config)
    gemma_pytorch.PaliGemmaForConditionalGeneration, gemma_pytorch.GemmaForCausalLM = paligemma, expert

    from rlinf.models.embodiment.openpi import openpi_action_model as oam
    real_value_head = oam.ValueHead

    def value_head(input_dim, hidden_sizes, **kw):   # RLinf's class at a tiny width (input: expert / VLM width)
        t = opf.TINY[_current["model"]]
        width = t["vlm"]["width"] if input_dim == 2048 else t["expert"]["width"]
        return real_value_head(input_dim=width, hidden_sizes=VALUE_HIDDEN[:len(hidden_sizes)], **kw)
    oam.ValueHead = value_head
    return preprocessing_pytorch


def rlinf_config(rlinf_src: Path, model: str, model_path: Path):
    """The actor config as Hydra composes it from RLinf's yaml files, plus the tiny variants and fsdp2."""
    from omegaconf import OmegaConf
    conf = rlinf_src / "examples/embodiment/config"
    model_yaml, run_yaml = RUNS[model]
    run = OmegaConf.load(conf / run_yaml)
    cfg = OmegaConf.merge(
        {"runner": run.runner, "actor": {"model": OmegaConf.load(conf / model_yaml),
                                         "fsdp_config": OmegaConf.load(conf / "hybrid_engines/fsdp.yaml")}},
        {"actor": run.actor},
        {"actor": {"model": {"model_path": str(model_path),
                             "openpi": {"paligemma_variant": f"tiny_vlm_{model}",
                                        "action_expert_variant": f"tiny_expert_{model}"}},
                   "fsdp_config": {"strategy": "fsdp2"}}})
    OmegaConf.resolve(cfg)
    return cfg


def write_sft(model: str, d: Path, seed: int, cfg):
    """The SFT directory RLinf starts from: a random tiny openpi PI0Pytorch (rlinf-openpi) in openpi's layout."""
    import numpy as np
    from openpi.models_pytorch.pi0_pytorch import PI0Pytorch
    from openpi.shared import normalize
    from rlinf.models.embodiment.openpi.dataconfig import get_openpi_config
    from safetensors.torch import save_model
    base = get_openpi_config(cfg.actor.model.openpi.config_name).model   # RLinf's Pi0Config for this config name
    c = dataclasses.replace(base, paligemma_variant=f"tiny_vlm_{model}", action_expert_variant=f"tiny_expert_{model}")
    _current["model"] = model
    torch.manual_seed(seed)
    m = PI0Pytorch(c)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in m.named_parameters():
            std = 0.2 if p.ndim == 1 else 1.0 / max(p.shape[-1], 1) ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    d.mkdir(parents=True, exist_ok=True)
    save_model(m, str(d / "model.safetensors"))
    meta = {"action_dim": c.action_dim, "action_horizon": c.action_horizon, "paligemma_variant": c.paligemma_variant,
            "action_expert_variant": c.action_expert_variant, "precision": "bfloat16"}
    if c.pi05:
        meta["discrete_state_input"] = bool(c.discrete_state_input)
    (d / "config.json").write_text(json.dumps(meta, indent=2))
    rng, stats = np.random.default_rng(seed), {}
    for key in ("state", "actions"):   # MetaWorld: 4-D state and actions
        x = rng.normal(size=(500, 4)) * rng.uniform(0.5, 2.0, 4) + rng.normal(size=4)
        stats[key] = normalize.NormStats(mean=x.mean(0), std=x.std(0), q01=np.quantile(x, 0.01, 0),
                                         q99=np.quantile(x, 0.99, 0))
    normalize.save(d / ASSET_ID, stats)
    return c


def inputs(model: str, c, seed: int) -> dict:
    t = opf.TINY[model]
    g = torch.Generator().manual_seed(seed + 100)
    B, R, L, D, H = 2, t["vision"]["image_size"], 10, c.action_dim, c.action_horizon
    tokens = torch.randint(4, t["vocab"], (B, L), generator=g)
    token_masks = torch.arange(L)[None] < torch.tensor([[L], [6]])
    tokens[~token_masks] = 0
    return {"images": torch.rand(B, 3, 3, R, R, generator=g) * 2 - 1,
            "image_masks": torch.tensor([[True, True, False], [True, False, True]]),
            "tokens": tokens, "token_masks": token_masks, "state": torch.randn(B, D, generator=g),
            "noise": torch.randn(B, H, D, generator=g), "x_t": torch.randn(B, H, D, generator=g),
            "t": torch.tensor([0.7, 0.3])}


@torch.no_grad()
def rlinf_outputs(m, x: dict) -> dict:
    """RLinf's own inference: OpenPi0ForRLActionPrediction._build_prefix_cache + get_velocity, sample_actions."""
    obs = opf.observation(x)
    images, img_masks, lang_tokens, lang_masks, state = m._preprocess_observation(obs, train=False)
    _, prefix_pad_masks, pkv = m._build_prefix_cache(images, img_masks, lang_tokens, lang_masks)
    v, _ = m.get_velocity(state, x["x_t"], x["t"], prefix_pad_masks, pkv)
    m.use_vlm_value = False   # π0.5's VLM value (get_value_from_vlm) hard-codes 968 prefix tokens; values unused here
    out = m.sample_actions(obs, noise=x["noise"].clone(), mode="eval", compute_values=False)
    return {"velocity": v, "actions": out["actions"]}


def check_dir(rlinf_src: Path, openpi_src: Path, openpi_client: Path, directory: Path, model: str, ours: Path,
              work: Path):
    """RLinf's own loader on a directory we saved (rlinf.models.get_model with model_path=DIR: its *.safetensors
    with load_state_dict(strict=False), norm stats from DIR/<asset_id>/), then RLinf's outputs on our saved inputs
    (tools/peers/our_outputs.py) vs ours: in fp32 (RLinf's model holding the file's fp32 values: the same
    load_state_dict again after .float()) and as get_model leaves it (its bf16 cast rounds our RL-trained fp32
    weights); and RLinf's norm stats vs the ones our Processor uses."""
    import numpy as np
    from safetensors.torch import load_file
    os.environ.update(OPENPI_DATA_HOME=str(work / "openpi_cache"))
    preprocessing = import_rlinf(rlinf_src, openpi_src, openpi_client)
    from rlinf.models import get_model
    preprocessing.preprocess_observation_pytorch.__kwdefaults__["image_resolution"] = (
        (opf.TINY[model]["vision"]["image_size"],) * 2)
    cfg = rlinf_config(rlinf_src, model, directory)
    _current["model"] = model
    m = get_model(cfg.actor.model).float().eval()
    _current.clear()
    from safetensors import safe_open
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        held = set(f.keys())
    # keys RLinf's strict=False load would leave at their init (embed_tokens: tied to lm_head in RLinf's model)
    missing = sorted(k for k in m.state_dict() if k not in held and not k.startswith("value_head."))
    for mod in m.modules():
        if type(mod).__name__.endswith("RotaryEmbedding"):
            mod.inv_freq = type(mod)(config=mod.config).inv_freq
    x = load_file(str(ours))
    o_bf16 = rlinf_outputs(m, x)   # as get_model leaves it: to_bfloat16_for_selected_params rounded our fp32 weights
    m.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)   # get_model's load, kept fp32
    o = rlinf_outputs(m, x)
    stats = json.loads((directory / ASSET_ID / "norm_stats.json").read_text())["norm_stats"]
    dn = max(float(np.abs(np.asarray(stats[k][s]) - x[f"stats.{k}.{s}"].numpy()).max())
             for k in ("state", "actions") for s in ("mean", "std", "q01", "q99"))
    print(json.dumps({"dir": str(directory), "missing_for_rlinf": missing,
                      "max_abs_diff_velocity": (o["velocity"] - x["velocity"]).abs().max().item(),
                      "max_abs_diff_actions": (o["actions"] - x["actions"]).abs().max().item(),
                      "max_abs_diff_norm_stats": dn,
                      "bf16_as_get_model_leaves_it": {k: (o_bf16[k] - x[k]).abs().max().item() for k in o_bf16}}))


def main(rlinf_src: Path, openpi_src: Path, openpi_client: Path, out: Path, work: Path, keep_dcp: bool = False):
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533",
                      OPENPI_DATA_HOME=str(work / "openpi_cache"))
    preprocessing = import_rlinf(rlinf_src, openpi_src, openpi_client)
    tok = work / "openpi_cache/big_vision/paligemma_tokenizer.model"   # the tokenizer openpi would download
    tok.parent.mkdir(parents=True, exist_ok=True)
    tok.write_bytes(opf.small_tokenizer(320))
    import torch.distributed as dist
    from rlinf.hybrid_engines.fsdp.fsdp_model_manager import FSDPModelManager
    from rlinf.models import get_model
    from rlinf.workers.actor.embodied_fsdp_actor_worker import EmbodiedFSDPActor
    from safetensors.torch import save_file
    dist.init_process_group("gloo", rank=0, world_size=1)
    for seed, model in enumerate(("pi0", "pi05"), start=20):
        preprocessing.preprocess_observation_pytorch.__kwdefaults__["image_resolution"] = (
            (opf.TINY[model]["vision"]["image_size"],) * 2)
        sft, d = work / f"sft_{model}", out / model
        shutil.rmtree(sft, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
        cfg = rlinf_config(rlinf_src, model, sft)
        c = write_sft(model, sft, seed, cfg)
        # RLinf's FSDP actor: FSDPModelManager with EmbodiedFSDPActor's model_provider_func (get_model)
        _current["model"] = model
        torch.manual_seed(seed + 1)   # the value head's initialisation
        actor = FSDPModelManager(cfg.actor, world_size=1, rank=0)
        actor.cfg = cfg
        actor.model_provider_func = types.MethodType(EmbodiedFSDPActor.model_provider_func, actor)
        actor.setup_model_and_optimizer()
        d.mkdir(parents=True)
        actor.save_checkpoint(str(d / "actor"), step=0)
        wrote = {str(f.relative_to(d)): f.stat().st_size for f in sorted((d / "actor").rglob("*")) if f.is_file()}
        if not keep_dcp:   # optimizer / scheduler / RNG state: not a policy (and 1-2 MB); listed in the metadata
            shutil.rmtree(d / "actor" / "dcp_checkpoint")
        # what the user adds next to RLinf's output (RLinf takes them from the config name / SFT dir)
        shutil.copy(sft / "config.json", d / "config.json")
        shutil.copytree(sft / ASSET_ID, d / ASSET_ID)
        (d / "tokenizer.model").write_bytes(tok.read_bytes())
        # RLinf's loader on the output (actor/model_state_dict/full_weights.pt), then its inference in fp32
        cfg_out = rlinf_config(rlinf_src, model, d)
        ref_model = get_model(cfg_out.actor.model).eval()   # as RLinf runs it: its selected params in bf16
        _current.clear()
        x = inputs(model, c, seed)
        as_run = rlinf_outputs(ref_model, x)
        ref_model.float()
        for mod in ref_model.modules():   # RoPE frequencies (not in the file) were rounded by the bf16 cast
            if type(mod).__name__.endswith("RotaryEmbedding"):
                mod.inv_freq = type(mod)(config=mod.config).inv_freq
        ref = {**x, **rlinf_outputs(ref_model, x), **{k + "_bf16": v.float() for k, v in as_run.items()}}
        save_file({k: v.contiguous() for k, v in ref.items()}, str(d / "reference.safetensors"),
                  metadata={"num_steps": str(ref_model.config.num_steps), "config_name": cfg.actor.model.openpi.config_name,
                            "rlinf": "OpenPi0ForRLActionPrediction get_velocity / sample_actions(mode=eval)",
                            "rlinf_wrote": json.dumps(wrote)})
        sd = torch.load(d / "actor/model_state_dict/full_weights.pt", weights_only=True)
        print(f"{model}: {len(sd)} tensors {sorted({str(v.dtype) for v in sd.values()})}, "
              f"num_steps {ref_model.config.num_steps}, |v| max {ref['velocity'].abs().max():.3f}")
    dist.destroy_process_group()
    print(f"wrote {out}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rlinf-src", required=True, help="RLinf's source tree (holds rlinf/ and examples/)")
    p.add_argument("--openpi-src", required=True, help="the dir holding rlinf-openpi 0.1.1's openpi/ package")
    p.add_argument("--openpi-client", required=True, help="openpi-client's src/ directory")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--work", default="/tmp/rlinf_fixtures_work", help="SFT inputs and openpi's cache")
    p.add_argument("--keep-dcp", action="store_true", help="keep actor/dcp_checkpoint/ (RLinf's training state)")
    p.add_argument("--check-dir", default=None, help="a policy dir we saved: load it with RLinf's get_model")
    p.add_argument("--variant", default="pi0", choices=sorted(RUNS), help="--check-dir: which tiny model it holds")
    p.add_argument("--ours", default=None, help="--check-dir: tools/peers/our_outputs.py's file (--num-steps 5)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.check_dir:
        sys.exit(check_dir(Path(a.rlinf_src), Path(a.openpi_src), Path(a.openpi_client), Path(a.check_dir), a.variant,
                           Path(a.ours), Path(a.work)))
    main(Path(a.rlinf_src), Path(a.openpi_src), Path(a.openpi_client), Path(a.out), Path(a.work), a.keep_dcp)
