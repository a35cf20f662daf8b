"""Peer fixtures of RLinf's MetaWorld env path (issue 25), written by RLinf's OWN env wrapper and model-side
processing: what an RLinf π0 / π0.5 MetaWorld policy is given (the image it sees, its state, its prompt) at 10
resets of drawer-open-v3 and pick-place-v3, and the actions RLinf sends to MetaWorld for one model output chunk.
tests/test_peer_rlinf_envs.py builds pirl's side (make_envs + Processor for DATA_CONFIGS["rlinf_metaworld"]) on the
same initial states and compares.

    bash tools/peers/rlinf_envs.sh        # makes the venv, then runs this file in it

RLinf's code, unmodified (RLinf a3816b5; its openpi fork rlinf-openpi 0.1.1; openpi-client 0.1.2), as its
env worker and rollout worker compose it for examples/embodiment/config/metaworld_50_ppo_openpi{,_pi05}.yaml:
  * rlinf/envs/metaworld/metaworld_env.py MetaWorldEnv(cfg = env/metaworld_50.yaml, num_envs=1): its
    ReconfigureSubprocEnv of gym.make("Meta-World/MT1", camera_id=2, render_mode="rgb_array") with corner2 moved to
    (0.75, 0.075, 0.7), reset(reset_state_ids=[task index * 10 + i]) (which runs RESET_STEP = 15 zero actions,
    then one more zero step, before it observes), _wrap_obs (render flipped on both axes, state = obs[:4], the
    task description of metaworld_config.json);
  * rlinf/data/schema/embodied_types.py EnvOutput.to_dict (the obs the rollout worker gets), then
    openpi_action_model.py OpenPi0ForRLActionPrediction.obs_processor and input_transform (unbound, on a stand-in
    `self` holding the config and the composed transforms), then openpi's Observation.from_dict (uint8 -> [-1, 1]),
    as predict_action_batch does. The transforms are those rlinf/models/embodiment/openpi/__init__.py get_model
    composes (InjectDefaultPrompt, MetaworldInputs, Normalize, the model transforms: ResizeImages(224),
    TokenizePrompt, PadStatesAndActions), from get_openpi_config("pi0_metaworld" / "pi05_metaworld") with the
    yaml's openpi overrides; the list is re-typed here from get_model (checked against its source text at run time);
  * actions: output_transform (Unnormalize, MetaworldOutputs' [:, :4], [:action_chunk]), then
    rlinf/envs/action_utils.py prepare_actions(env_type="metaworld", model_type="openpi"), then MetaWorldEnv.chunk_step.
Stand-ins, and only these:
  * openpi's PaligemmaTokenizer (its SentencePiece file is a download): a recorder of the prompt TokenizePrompt
    passes it, returning zero tokens;
  * the SFT checkpoint get_model reads norm stats from: a directory holding only norm_stats.json (fixed random
    stats, openpi's normalize.save) under the config's asset id; no model weights are built (the model output
    chunk is a fixed random array);
  * the config's video_cfg.video_base_dir interpolation (${runner.logger.log_path}): a /tmp path (never written).
Observed, not changed (to align pirl's env exactly): every rand_vec MetaWorld's reset draws and qpos / qvel right
after it (before RLinf's 16 zero steps), recorded by wrapping SawyerXYZEnv._get_state_rand_vec and reset in the
env's subprocess (forked, so the class wrappers carry over) and read back through RLinf's own get_env_attr.
"""
import argparse
import importlib.metadata as md
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "peers" / "rlinf_envs"
TASKS = ("drawer-open-v3", "pick-place-v3")
N_STATES = 10
A = 4   # MetaWorld's action dim


def install_recorders():
    """Record, per reset of the MetaWorld env, each rand_vec drawn and the sim state after it (no behaviour change)."""
    from metaworld.sawyer_xyz_env import SawyerXYZEnv
    from gymnasium import Wrapper
    draw, reset = SawyerXYZEnv._get_state_rand_vec, SawyerXYZEnv.reset

    def recorded_draw(self):
        v = draw(self)
        self.__dict__.setdefault("pirl_record", {"draws": []})["draws"].append(np.array(v, np.float64))
        return v

    def recorded_reset(self, *a, **k):
        self.__dict__["pirl_record"] = {"draws": []}
        out = reset(self, *a, **k)
        self.pirl_record.update(qpos=self.data.qpos.copy(), qvel=self.data.qvel.copy())
        return out

    SawyerXYZEnv._get_state_rand_vec, SawyerXYZEnv.reset = recorded_draw, recorded_reset
    # RLinf's worker answers get_env_attr with getattr(outermost wrapper, name): let wrappers show the record
    Wrapper.pirl_record = property(lambda self: self.unwrapped.__dict__.get("pirl_record"))


class RecordingTokenizer:
    """Stands in for openpi's PaligemmaTokenizer: records the prompt TokenizePrompt gives it."""
    texts = []

    def __init__(self, max_len: int = 48, *a, **k):
        self.max_len = max_len

    def tokenize(self, prompt, state=None):
        RecordingTokenizer.texts.append(prompt)
        return np.zeros(self.max_len, np.int32), np.ones(self.max_len, bool)


def env_cfg(rlinf_src: Path):
    from omegaconf import OmegaConf
    cfg = OmegaConf.load(rlinf_src / "examples/embodiment/config/env/metaworld_50.yaml")
    cfg.video_cfg.video_base_dir = "/tmp/rlinf_envs_video"
    return cfg


def model_cfg(rlinf_src: Path, variant: str):
    """The rollout model config: model/pi0{,_5}.yaml + the metaworld yaml's actor.model block (its openpi overrides)."""
    from omegaconf import OmegaConf
    conf = rlinf_src / "examples/embodiment/config"
    base = OmegaConf.load(conf / ("model/pi0.yaml" if variant == "pi0" else "model/pi0_5.yaml"))
    run = OmegaConf.load(conf / f"metaworld_50_ppo_openpi{'' if variant == 'pi0' else '_pi05'}.yaml")
    return OmegaConf.merge(base, run.actor.model)


GET_MODEL_TRANSFORMS = """        transforms=[
            *repack_transforms.inputs,
            transforms.InjectDefaultPrompt(default_prompt),
            *data_config.data_transforms.inputs,
            transforms.Normalize(
                norm_stats, use_quantiles=data_config.use_quantile_norm
            ),
            *data_config.model_transforms.inputs,
        ],
        output_transforms=[
            *data_config.model_transforms.outputs,
            transforms.Unnormalize(
                norm_stats, use_quantiles=data_config.use_quantile_norm
            ),
            *data_config.data_transforms.outputs,
            *repack_transforms.outputs,
        ],"""


def rlinf_policy_io(rlinf_src: Path, variant: str, stats: dict, ckpt: Path, cfg=None):
    """A stand-in `self` for OpenPi0ForRLActionPrediction's obs_processor / input_transform / output_transform: the
    config and the transforms rlinf/models/embodiment/openpi/__init__.py get_model composes (no weights). cfg: the
    rollout model config (default: the MetaWorld run's, model_cfg; tools/peers/rlinf_libero.py passes LIBERO's)."""
    import openpi.models.tokenizer as tok
    import openpi.shared.normalize as normalize
    import openpi.transforms as transforms
    from openpi.training import checkpoints as _checkpoints
    import rlinf.models.embodiment.openpi as rlinf_openpi
    from rlinf.models.embodiment.openpi.dataconfig import get_openpi_config
    from rlinf.models.embodiment.openpi.openpi_action_model import OpenPi0Config, OpenPi0ForRLActionPrediction
    assert GET_MODEL_TRANSFORMS in inspect.getsource(rlinf_openpi.get_model), "RLinf's get_model composes otherwise"
    tok.PaligemmaTokenizer = RecordingTokenizer
    cfg = model_cfg(rlinf_src, variant) if cfg is None else cfg
    train_config = get_openpi_config(cfg.openpi.config_name, model_path=str(ckpt), data_kwargs=None)
    model_config = OpenPi0Config(**train_config.model.__dict__)
    for key, val in cfg.openpi.items():          # get_model's override_model_config_kwargs
        model_config.__dict__[key] = val
    data_config = train_config.data.create(train_config.assets_dirs, model_config)
    normalize.save(ckpt / data_config.asset_id, {k: normalize.NormStats(**{s: np.asarray(v) for s, v in d.items()})
                                                  for k, d in stats.items()})
    norm_stats = _checkpoints.load_norm_stats(ckpt, data_config.asset_id)
    repack_transforms, default_prompt = transforms.Group(), None
    self = types.SimpleNamespace(config=model_config)
    self._input_transform = transforms.compose([
        *repack_transforms.inputs, transforms.InjectDefaultPrompt(default_prompt), *data_config.data_transforms.inputs,
        transforms.Normalize(norm_stats, use_quantiles=data_config.use_quantile_norm),
        *data_config.model_transforms.inputs])
    self._output_transform = transforms.compose([
        *data_config.model_transforms.outputs,
        transforms.Unnormalize(norm_stats, use_quantiles=data_config.use_quantile_norm),
        *data_config.data_transforms.outputs, *repack_transforms.outputs])
    M = OpenPi0ForRLActionPrediction
    self._select_configured_state = lambda s: M._select_configured_state(self, s)
    return self, M, cfg, data_config


def model_inputs(policy, M, obs):
    """predict_action_batch's first three lines (obs_processor, input_transform, precision_processor on the CPU)
    and openpi's Observation.from_dict: the model's observation for the env obs of one reset."""
    from openpi.models import model as _model
    from rlinf.data.schema.embodied_types import EnvOutput
    env_obs = EnvOutput(obs=obs).to_dict()["obs"]
    to_process = M.obs_processor(policy, env_obs)
    processed = M.input_transform(policy, to_process, transpose=False)
    return _model.Observation.from_dict(processed)


def record_task(args, task: str):
    from rlinf.envs.action_utils import prepare_actions
    from rlinf.envs.metaworld.metaworld_env import MetaWorldEnv
    install_recorders()
    rng = np.random.default_rng(25)
    # fixed random openpi norm stats (state and actions, 4-D as RLinf's MetaWorld checkpoints) and one model output
    stats = {k: {"mean": rng.uniform(-0.3, 0.3, A), "std": rng.uniform(0.2, 0.6, A),
                 "q01": rng.uniform(-1.0, -0.6, A), "q99": rng.uniform(0.6, 1.0, A)} for k in ("state", "actions")}
    ckpt = Path(tempfile.mkdtemp(prefix="rlinf_envs_ckpt_"))
    io = {v: rlinf_policy_io(args.rlinf_src, v, stats, ckpt / v) for v in ("pi0", "pi05")}
    horizon = io["pi0"][0].config.action_horizon
    chunk = (rng.standard_normal((1, horizon, 32)) * 0.8).astype(np.float32)

    env = MetaWorldEnv(env_cfg(args.rlinf_src), num_envs=1, seed_offset=0, total_num_processes=1, worker_info=None)
    task_index = env.env_names_all.index(task)
    rec = {k: [] for k in ("rand_vecs", "qpos", "qvel", "state", "image224", "state_model_pi0", "state_model_pi05",
                           "image_masks", "empty_slots_max")}

    def reset(trial):
        obs, _ = env.reset(reset_state_ids=np.array([task_index * 10 + trial]))
        r = env.env.get_env_attr("pirl_record")[0]
        return obs, r

    try:
        for i in range(args.states):
            obs, r = reset(i)
            rec["rand_vecs"].append(np.stack(r["draws"]))
            rec["qpos"].append(r["qpos"])
            rec["qvel"].append(r["qvel"])
            rec["state"].append(obs["states"][0].numpy().astype(np.float64))
            if i == 0:
                raw480 = obs["main_images"][0].numpy().copy()
            for v in ("pi0", "pi05"):
                policy, M, _, _ = io[v]
                o = model_inputs(policy, M, obs)
                rec[f"state_model_{v}"].append(o.state[0].numpy().astype(np.float64))
                if v == "pi0":
                    keys = list(o.images)                  # base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb
                    img = o.images[keys[0]][0].permute(1, 2, 0).numpy().astype(np.float64)   # (224, 224, 3) in [-1, 1]
                    levels = (img + 1.0) * 127.5
                    assert np.abs(levels - np.round(levels)).max() < 1e-3   # uint8 levels (PIL's resize), exactly
                    rec["image224"].append(np.round(levels).astype(np.uint8))
                    rec["image_masks"].append(np.array([bool(o.image_masks[k][0]) for k in keys]))
                    rec["empty_slots_max"].append(max(float(o.images[k].max()) for k in keys[1:]))
            prompts = RecordingTokenizer.texts[-2:]
            assert prompts[0] == prompts[1], prompts
        # actions: the same model output chunk through each variant's output transforms and prepare_actions
        actions = {}
        for v in ("pi0", "pi05"):
            policy, M, cfg, _ = io[v]
            obs, r = reset(0)
            o = model_inputs(policy, M, obs)
            out = M.output_transform(policy, {"actions": torch.as_tensor(chunk), "state": o.state})["actions"]
            sent = prepare_actions(raw_chunk_actions=out, env_type="metaworld", model_type=cfg.model_type,
                                   num_action_chunks=cfg.num_action_chunks, action_dim=cfg.action_dim)
            obs_list, *_ = env.chunk_step(sent)
            actions[f"sent_{v}"] = np.asarray(sent, np.float64)[0]
            actions[f"states_after_{v}"] = np.stack([ob["states"][0].numpy() for ob in obs_list]).astype(np.float64)
            actions[f"rand_vecs_{v}"], actions[f"qpos_{v}"] = np.stack(r["draws"]), r["qpos"]
            actions[f"state_{v}"] = obs["states"][0].numpy().astype(np.float64)
    finally:
        env.env.close()
        shutil.rmtree(ckpt, ignore_errors=True)
    assert len({x.shape for x in rec["rand_vecs"]}) == 1, "a reset drew more rand_vecs than the others"
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / f"{task}.npz", prompt=np.array(obs["task_descriptions"][0]),
                        prompt_tokenized=np.array(prompts[0]), raw480=raw480, model_chunk=chunk[0],
                        settle_steps=np.array(env.RESET_STEP + 1),
                        **{k: np.stack(v) for k, v in rec.items()}, **actions,
                        **{f"stats_{k}_{s}": np.asarray(v) for k, d in stats.items() for s, v in d.items()})
    print(f"{task}: prompt {prompts[0]!r}, state[0] {rec['state'][0]}, sent_pi0[0] {actions['sent_pi0'][0]}")


def meta(args):
    import mujoco
    rev = subprocess.run(["git", "--git-dir", str(args.rlinf_git), "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip() if args.rlinf_git else None
    versions = {p: md.version(p) for p in ("metaworld", "mujoco", "gymnasium", "gym", "torch", "numpy", "pillow",
                                           "omegaconf", "ray", "jax", "flax")}
    versions["rlinf_openpi"] = _openpi_version()
    versions["openpi_client"] = md.version("openpi-client") if _has("openpi-client") else _client_version()
    return {"rlinf_commit": rev, **versions, "mujoco_module": mujoco.__version__, "python": sys.version.split()[0],
            "tasks": list(TASKS), "states": args.states, "reset_state_ids": "task index in metaworld_50 * 10 + i",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL")}


def _has(name):
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def _openpi_version():
    import openpi
    dist = next(Path(openpi.__file__).parents[1].glob("rlinf_openpi-*.dist-info"), None)
    return dist.name.removeprefix("rlinf_openpi-").removesuffix(".dist-info") if dist else openpi.__file__


def _client_version():
    import openpi_client
    dist = next(Path(openpi_client.__file__).parents[1].glob("openpi_client-*.dist-info"), None)
    return dist.name.removeprefix("openpi_client-").removesuffix(".dist-info") if dist else openpi_client.__file__


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rlinf-src", type=Path, default=Path("/work/peers/rlinf-src"), help="RLinf's source tree")
    p.add_argument("--rlinf-git", type=Path, default=None, help="RLinf's git dir (for the commit in meta.json)")
    p.add_argument("--states", type=int, default=N_STATES)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--task", choices=TASKS, help="one task (default: each in its own process)")
    args = p.parse_args()
    if args.task is None:
        for task in TASKS:
            subprocess.run([sys.executable, __file__, "--rlinf-src", str(args.rlinf_src), "--states", str(args.states),
                            "--out", str(args.out), "--task", task], check=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "meta.json").write_text(json.dumps(meta(args), indent=1) + "\n")
        return
    record_task(args, args.task)


if __name__ == "__main__":
    main()
