"""Peer fixtures of LeRobot's env paths (issue 25), written by LeRobot's OWN env and processor code: the
observation its π0 policy gets at the model's input for 10 initial states (reset seeds) of MetaWorld drawer-open-v3
and pick-place-v3 and of LIBERO spatial task 0 (`--libero 10`), and the actions its postprocessor sends to MetaWorld
for one model output chunk. tests/test_peer_envs.py builds pirl's envs (common/envs.py; MetaWorld's "lerobot" view)
on the same initial states and compares.

Runs in LeRobot's own venv (never the project's), made by tools/peers/lerobot_envs.sh:
    /work/peers/lerobot061-venv/bin/python tools/peers/lerobot_envs.py

LeRobot's code, unmodified, as `lerobot-eval` composes it (scripts/lerobot_eval.py rollout):
  * envs/factory.py make_env(envs/configs.py MetaworldEnv(task=...)) -> a SyncVectorEnv of envs/metaworld.py
    MetaworldEnv (MT1(seed=42) task 0, corner2 moved to (0.75, 0.075, 0.7), 480 px, both axes flipped,
    obs_type pixels_agent_pos), reset(seed=[s]) with lerobot-eval's seeds (its --seed, default 1000, + episode);
  * envs/utils.py preprocess_observation (uint8 HWC -> float [0, 1] CHW, agent_pos -> float32 state),
    observation["task"] = env.call("task_description"), the env config's get_env_processors() preprocessor;
  * policies/pi0/modeling_pi0.py PI0Policy._preprocess_images (resize_with_pad_torch to 224, then 2x - 1), called
    with a stand-in `self` holding only what it reads (config.image_features / image_resolution, parameters());
    policies/pi0/processor_pi0.py Pi0NewLineProcessor (the prompt + "\\n");
  * actions: predict_action_chunk's crop to the env's 4 dims, select_action's queue (n_action_steps), the
    postprocessor's UnnormalizerProcessorStep and to-CPU step (as processor_pi0.make_pi0_pre_post_processors and
    processor/factory.py build them; its AbsoluteActionsProcessorStep, disabled unless use_relative_actions, which
    pirl refuses at load, is left out, and so is the preprocessor: the PaliGemma tokenizer cannot be downloaded
    here), the env postprocessor, then
    vec_env.step. Not run: the model itself (the chunk is a fixed random "model output").
What is stored per (task, seed): every rand_vec the reset drew, the initial qpos / qvel (to align pirl's env exactly), LeRobot's
state vector, prompt, the 224 px model-input image as uint8 levels (round((x + 1) * 127.5), within 0.5 of its
float), and the raw 480 px render for the first seed of each task.
"""
import argparse
import importlib.metadata
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "peers" / "lerobot_envs"
TASKS = ("drawer-open-v3", "pick-place-v3")
SEEDS = tuple(range(1000, 1010))   # lerobot-eval's default --seed 1000, one per episode
H, D, A = 10, 32, 4                # chunk length (n_action_steps), the model's padded action dim, MetaWorld's


def model_input_images(batch, keys=("observation.image",)):
    """LeRobot's own PI0Policy._preprocess_images with a stand-in self (no weights needed)."""
    from lerobot.policies.pi0.modeling_pi0 import PI0Policy
    cfg = types.SimpleNamespace(image_features={k: None for k in keys}, image_resolution=(224, 224))
    stub = types.SimpleNamespace(config=cfg, parameters=lambda: iter([torch.zeros(1)]))
    images, masks = PI0Policy._preprocess_images(stub, batch)
    return images[0] if len(keys) == 1 else images   # (1, 3, 224, 224) each, in [-1, 1]


def libero(out: Path, n: int):
    """LeRobot's LIBERO env (envs/libero.py via make_env(LiberoEnv(task="libero_spatial", task_ids=[0])), 360 px,
    env.seed(seed) + set_init_state + 10 settle steps at every reset), its LiberoProcessorStep (flips, 8-D state),
    then π0's image preprocessing: the model inputs for init states 0..n-1 (one env: reset i takes init state i)."""
    from lerobot.envs.configs import LiberoEnv
    from lerobot.envs.factory import make_env
    from lerobot.envs.utils import preprocess_observation
    import os
    if os.environ.get("LIBERO_ASSETS"):   # the offline scene assets (tools/setup_sims.sh's wheels), as pirl finds them
        import libero.libero as ll
        ll._assets_path_cache = os.environ["LIBERO_ASSETS"]
    cfg = LiberoEnv(task="libero_spatial", task_ids=[0])
    vec = next(iter(next(iter(make_env(cfg, n_envs=1).values())).values()))
    env_pre, _ = cfg.get_env_processors()
    rec = {"image": [], "wrist_image": [], "state": []}
    for i, seed in enumerate(SEEDS[:n]):
        obs, _ = vec.reset(seed=[seed])
        o = preprocess_observation(obs)
        o["task"] = list(vec.call("task_description"))
        o = env_pre(o)
        rec["state"].append(o["observation.state"][0].numpy())
        imgs = model_input_images(o, ("observation.images.image", "observation.images.image2"))
        for key, img in zip(("image", "wrist_image"), imgs):
            img = img[0].permute(1, 2, 0).numpy().astype(np.float64)
            rec[key].append(np.round((img + 1.0) * 127.5).astype(np.uint8))
        print(f"libero init state {i}: state {rec['state'][-1]}")
    np.savez_compressed(out / "libero_spatial_task0.npz", seeds=np.array(SEEDS[:n]), prompt=np.array(o["task"][0]),
                        **{k: np.stack(v) for k, v in rec.items()})


def newline_prompt(task: str) -> str:
    from lerobot.policies.pi0.processor_pi0 import Pi0NewLineProcessor
    step = Pi0NewLineProcessor()
    out = step({"observation": {}, "complementary_data": {"task": [task]}})
    return out["complementary_data"]["task"][0]


def postprocessor(stats, mode):
    """The π0 postprocessor of processor_pi0.make_pi0_pre_post_processors: unnormalise, then to the CPU."""
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.processor import DeviceProcessorStep, PolicyProcessorPipeline, UnnormalizerProcessorStep
    from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action
    feats = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(A,))}
    norm_map = {FeatureType.ACTION: NormalizationMode[mode]}
    return PolicyProcessorPipeline(
        steps=[UnnormalizerProcessorStep(features=feats, norm_map=norm_map, stats=stats), DeviceProcessorStep(device="cpu")],
        name="policy_postprocessor", to_transition=policy_action_to_transition,
        to_output=transition_to_policy_action)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--libero", type=int, default=0, help="also LIBERO: this many init states (needs hf-libero + "
                   "LIBERO_CONFIG_PATH with the offline assets)")
    p.add_argument("--task", choices=TASKS + ("libero",), help="one task (default: each in its own process: a closed env's EGL "
                   "context left the next task's renders black)")
    args = p.parse_args()
    if args.task is None:
        import subprocess
        for task in TASKS + (("libero",) if args.libero else ()):
            subprocess.run([sys.executable, __file__, "--out", str(args.out), "--task", task,
                            "--libero", str(args.libero)], check=True)
        return
    if args.task == "libero":
        args.out.mkdir(parents=True, exist_ok=True)
        return libero(args.out, args.libero)
    import lerobot
    from lerobot.envs.configs import MetaworldEnv
    from lerobot.envs.factory import make_env
    from lerobot.envs.utils import preprocess_observation
    import metaworld
    import mujoco
    from lerobot.utils.random_utils import set_seed
    args.out.mkdir(parents=True, exist_ok=True)
    # as lerobot-eval at start-up (LeRobot 0.6.1's MetaworldEnv.reset(seed) also seeds the scene itself: env.seed(seed),
    # seeded_rand_vec; 0.5.1's did not, and metaworld 3.0.0's reset ignores its seed argument)
    set_seed(SEEDS[0])
    rng = np.random.default_rng(25)
    # one fixed "model output" chunk and LeRobot-layout stats for the actions (MEAN_STD: π0's default; QUANTILES: π0.5's)
    chunk = rng.standard_normal((H, D)).astype(np.float32) * 0.8
    stats = {"action": {"mean": rng.uniform(-0.2, 0.2, A), "std": rng.uniform(0.2, 0.6, A),
                        "q01": rng.uniform(-1.0, -0.6, A), "q99": rng.uniform(0.6, 1.0, A)}}
    meta = {"lerobot": lerobot.__version__, "metaworld": importlib.metadata.version("metaworld"),
            "mujoco": mujoco.__version__, "torch": torch.__version__, "python": sys.version.split()[0],
            "tasks": list(TASKS), "seeds": list(SEEDS)}
    for task in [args.task]:
        cfg = MetaworldEnv(task=f"metaworld-{task}")
        envs = make_env(cfg, n_envs=1)
        vec = next(iter(next(iter(envs.values())).values()))
        env_pre, env_post = cfg.get_env_processors()
        rec = {k: [] for k in ("rand_vecs", "qpos", "qvel", "state", "image224")}
        vec.reset(seed=[SEEDS[0]])                  # builds the MetaWorld env (MetaworldEnv._ensure_env)
        inner = vec.envs[0]._env
        draws = []
        draw = inner._get_state_rand_vec          # observed, not changed: every rand_vec a reset draws, in order
        inner._get_state_rand_vec = lambda: draws.append(np.array(draw(), np.float64)) or draws[-1]
        for i, seed in enumerate(SEEDS):
            draws.clear()
            obs, _ = vec.reset(seed=[seed])
            # metaworld's reset runs reset_model twice (SawyerXYZEnv.reset, then gymnasium's MujocoEnv.reset): the
            # scene is the last draw, the goal marker rendered the previous one (the site moves after mj_forward)
            rec["rand_vecs"].append(np.stack(draws))
            rec["qpos"].append(inner.data.qpos.copy())
            rec["qvel"].append(inner.data.qvel.copy())
            if i == 0:
                raw480 = obs["pixels"][0].copy()
            o = preprocess_observation(obs)
            o["task"] = list(vec.call("task_description"))
            o = env_pre(o)
            rec["state"].append(o["observation.state"][0].numpy())
            img = model_input_images(o)[0].permute(1, 2, 0).numpy()                       # (224, 224, 3) in [-1, 1]
            rec["image224"].append(np.round((img.astype(np.float64) + 1.0) * 127.5).astype(np.uint8))
            prompt = o["task"][0]
        # actions for one chunk from the first seed's state: postprocessor per popped action, env postprocessor, step
        actions = {}
        for mode in ("MEAN_STD", "QUANTILES"):
            post = postprocessor(stats, mode)
            vec.reset(seed=[SEEDS[0]])
            model_chunk = torch.as_tensor(chunk)[None, :, :A]           # predict_action_chunk's crop, (1, H, 4)
            sent, states = [], []
            for k in range(H):                                          # select_action's queue: (1, 4) per step
                a = post(model_chunk[:, k])
                a = env_post({"action": a})["action"]
                a_np = a.to("cpu").numpy()
                sent.append(a_np[0].astype(np.float64))
                obs, _, term, trunc, _ = vec.step(a_np)
                states.append(obs["agent_pos"][0].copy())
            actions[f"sent_{mode}"] = np.stack(sent)
            actions[f"states_after_{mode}"] = np.stack(states)
        assert len({r.shape for r in rec["rand_vecs"]}) == 1, "a reset drew more rand_vecs than the others"
        np.savez_compressed(args.out / f"{task}.npz", prompt=np.array(prompt), prompt_pi0=np.array(newline_prompt(prompt)),
                            raw480=raw480, model_chunk=chunk,
                            **{k: np.stack(v) for k, v in rec.items()}, **actions,
                            **{f"stats_{k}": v for k, v in stats["action"].items()})
        vec.close()
        print(f"{task}: prompt {prompt!r}, state[0] {rec['state'][0]}, rand_vecs[0] {rec['rand_vecs'][0].tolist()}")
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
