"""pirl's envs against the peers' OWN environment code (issue 25's proof for observations and actions): the model
inputs pirl builds from its simulators, and the actions it sends them, equal what the peer's env wrapper and
processors build on the same initial states. Fixtures (committed, < 5 MB) were written by the peers' code:

* MetaWorld vs LeRobot 0.6.1 (tools/peers/lerobot_envs.sh: its make_env / MetaworldEnv, preprocess_observation,
  PI0Policy._preprocess_images, postprocessor; metaworld 3.0.0, mujoco 3.3.0): drawer-open-v3 and pick-place-v3,
  reset seeds 1000..1009. Aligned by replaying in pirl's env the rand_vecs LeRobot's env drew at each reset
  (metaworld's reset runs reset_model twice: the scene is the last draw, the goal marker rendered is the previous
  draw's, its site moving after the last mj_forward); qpos / qvel then agree bit for bit (asserted).
* LIBERO spatial task 0, init states 0..9, vs openpi's examples/libero/main.py (tools/peers/openpi_libero_envs.sh,
  openpi 15a9616, openpi-client 0.1.2) and LeRobot 0.6.1's envs/libero.py + LiberoProcessorStep. Aligned by giving
  LIBERO, at pirl's reset, the global numpy RNG the peer's reset saw (LIBERO places its fixtures from it).
  PIRL_PEER_LIBERO_STATES=10 compares all 10 (default 2: ~9 s per state on 2 CPU cores).
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from common.conventions import DATA_CONFIGS, render_size
from common.envs import make_envs
from common.policy import make_config
from common.processor import Processor
from helpers import libero_ready

FIX = Path(__file__).parent / "fixtures" / "peers" / "lerobot_envs"
TASKS = ("drawer-open-v3", "pick-place-v3")

pytestmark = pytest.mark.slow   # real MetaWorld, 480 px renders: ~10 s in all


class RecordingTokenizer:
    """Stands in for the PaliGemma tokenizer (not downloadable here): records the text the processor tokenizes."""

    def __init__(self):
        self.texts = []

    def tokenize_text(self, text, max_len):
        self.texts.append(text)
        return np.zeros(max_len, np.int64), np.ones(max_len, bool)


def lerobot_processor(mode="MEAN_STD", stats=None):
    """pirl's processor as load_policy builds it for a LeRobot π0 checkpoint (source "lerobot")."""
    stats = stats or {"mean": [0.0] * 8, "std": [1.0] * 8, "q01": [-1.0] * 8, "q99": [1.0] * 8}   # [:n] of them
    config = make_config("tiny", action_dim=32, state_dim=32, image_size=224)   # π0's 224 px input
    return Processor({"state": stats, "actions": stats}, RecordingTokenizer(), config, source="lerobot",
                     norm_modes={"state": mode, "actions": mode}, data_config=DATA_CONFIGS["lerobot"])


def fixture(task):
    return dict(np.load(FIX / f"{task}.npz"))


class Aligned:
    """pirl's MetaWorld env (make_envs, one in-process env), reset to the initial state LeRobot's env had."""

    def __init__(self, task, image_size, view):
        self.env = make_envs(f"metaworld-{task}", 1, image_size=image_size, asynchronous=False, metaworld_view=view)
        self.env.reset([(0, 0)])                      # builds the task's MetaWorld env
        self.sim = self.env._workers[0].sim.env

    def reset(self, rand_vecs):
        draws = iter(rand_vecs)
        self.sim._get_state_rand_vec = lambda: next(draws).copy()   # the peer's draws, in its order
        try:
            return self.env.reset([(0, 0)])
        finally:
            del self.sim._get_state_rand_vec

    def close(self):
        self.env.close()


def model_input_levels(proc, obs):
    """pirl's model-input image (the first camera) as uint8 levels, (224, 224, 3) float64, and the tokenized prompt."""
    o = proc.observation(obs, "cpu")
    return (o.images[0, 0].permute(1, 2, 0).double().numpy() + 1.0) * 127.5, proc.tokenizer.texts[-1]


def compare_task(task, image_size, view):
    """Max abs differences over the fixture's 10 initial states: sim state, env state, images (levels), prompt."""
    f = fixture(task)
    env, proc = Aligned(task, image_size, view), lerobot_processor()
    try:
        out = {"qpos": 0.0, "state": 0.0, "image_mean": [], "image_max": 0.0, "raw480_max": None}
        for i in range(len(f["state"])):
            obs = env.reset(f["rand_vecs"][i])
            out["qpos"] = max(out["qpos"], np.abs(env.sim.data.qpos - f["qpos"][i]).max(),
                              np.abs(env.sim.data.qvel - f["qvel"][i]).max())
            out["state"] = max(out["state"], float(np.abs(obs["state"][0] - f["state"][i]).max()))
            levels, prompt = model_input_levels(proc, obs)
            d = np.abs(levels - f["image224"][i])
            out["image_mean"].append(d.mean())
            out["image_max"] = max(out["image_max"], d.max())
            if i == 0 and obs["images"].shape[2] == f["raw480"].shape[0]:
                out["raw480_max"] = np.abs(obs["images"][0, 0].astype(float) - f["raw480"]).max()
        out["image_mean"] = float(np.mean(out["image_mean"]))
        out["prompt"], out["instruction"] = prompt, obs["instruction"][0]
        return out, f
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_metaworld_model_inputs_equal_lerobots_at_its_render_size(task):
    """The LeRobot view rendered at LeRobot's 480 px: the same frame bit for bit, the same state vector, prompt and
    π0 prompt text, and the model-input image within one level (the fixture stores LeRobot's float image rounded to
    levels: measured mean 0.15, max 0.49)."""
    d, f = compare_task(task, 480, "lerobot")
    assert d["qpos"] == 0.0                                  # the initial states are aligned exactly
    assert d["state"] <= 1e-6
    assert d["instruction"] == str(f["prompt"]) and d["prompt"] == str(f["prompt_pi0"])
    assert d["raw480_max"] == 0.0
    assert d["image_max"] <= 1.0, d


@pytest.mark.parametrize("name, env, size", [
    ("lerobot", "metaworld-drawer-open-v3", 480),
    ("lerobot", "libero-spatial", 360),
    ("rlinf_metaworld", "metaworld-drawer-open-v3", 480),
    ("pi0_libero", "libero-spatial", 256),
    ("pi05_libero", "libero-spatial", 256)])
def test_render_size_is_the_peers(name, env, size):
    """What tools/evaluate.py renders at for a checkpoint of this data config (conventions.render_size) is what
    the peer renders at, the size the model-input comparisons in this file pass at."""
    assert render_size(DATA_CONFIGS[name], env, 224) == size
    if env.startswith("metaworld"):
        assert DATA_CONFIGS[name].metaworld_view == {"lerobot": "lerobot", "rlinf_metaworld": "rlinf"}[name]


def test_metaworld_fast_view_is_caught():
    """The check fails if the conventions regress: pirl's own "fast" view (the embedded default's: default camera
    pose, visuals off, task-name prompts) on the same states is far from LeRobot's (measured mean ~77 levels)."""
    d, f = compare_task("drawer-open-v3", 480, "fast")
    assert d["state"] <= 1e-6                                # the state does not depend on the view
    assert d["image_mean"] > 30 and d["instruction"] != str(f["prompt"])


@pytest.mark.parametrize("mode", ["MEAN_STD", "QUANTILES"])
def test_metaworld_env_actions_equal_lerobots(mode):
    """For the same model output chunk, the actions pirl sends to MetaWorld equal those LeRobot's postprocessor sends
    (crop to 4 dims, unnormalise, env postprocessor) to 1e-6, and stepping them from the same initial state gives
    the same states at every step."""
    task = "drawer-open-v3"
    f = fixture(task)
    stats = {s: f[f"stats_{s}"].tolist() for s in ("mean", "std", "q01", "q99")}
    proc = lerobot_processor(mode, stats)
    actions = proc.actions_to_env(torch.as_tensor(f["model_chunk"])[None], 4)[0]     # (H, 4)
    np.testing.assert_allclose(actions, f[f"sent_{mode}"], rtol=0, atol=1e-6)
    env = Aligned(task, 64, "lerobot")
    try:
        env.reset(f["rand_vecs"][0])
        for k, a in enumerate(actions):
            obs, *_ = env.env.step_chunk(a[None, None])
            np.testing.assert_allclose(obs["state"][0], f[f"states_after_{mode}"][k], rtol=0, atol=1e-6)
    finally:
        env.close()


def test_fixture_provenance():
    meta = json.loads((FIX / "meta.json").read_text())
    assert meta["lerobot"].startswith("0.6") and meta["metaworld"] == "3.0.0" and len(meta["seeds"]) >= 10


# ----------------------------------------------------------------------------- LIBERO vs openpi's client
# Fixtures written by openpi's own examples/libero/main.py (tools/peers/openpi_libero_client.py, openpi 15a9616,
# openpi-client 0.1.2): the element it sends to the policy server after env.seed(7), reset, set_init_state and
# 10 settle steps, for init states 0.. of libero_spatial task 0. The scene is aligned by giving LIBERO, at pirl's
# reset, numpy's global RNG state main.py's reset saw (LIBERO places its fixtures from it).
OPENPI_FIX = Path(__file__).parent / "fixtures" / "peers" / "openpi_libero"
LIBERO_STATES = int(os.environ.get("PIRL_PEER_LIBERO_STATES", "2"))   # 10 in the fixtures; ~9 s each


def _libero_ready():
    return libero_ready() and OPENPI_FIX.joinpath("libero_spatial_task0.npz").exists()


def openpi_processor(name):
    stats = {"mean": [0.0] * 8, "std": [1.0] * 8, "q01": [-1.0] * 8, "q99": [1.0] * 8}
    config = make_config("tiny-pi05" if "pi05" in name else "tiny", action_dim=32, state_dim=32, image_size=224)
    tok = RecordingTokenizer()
    tok.tokenize = lambda prompt, state, max_len: tok.tokenize_text(prompt, max_len)
    return Processor({"state": stats, "actions": stats}, tok, config, data_config=DATA_CONFIGS[name])


def compare_libero(proc, size, fix, n, seed_for):
    """pirl's make_envs("libero-spatial") rendered at `size` + Processor `proc` on the fixture's first n scenes
    (seed_for(i, real_seed) stands in for LIBERO's env.seed at pirl's reset i: the peer's RNG at its reset):
    per-state (mean, max, max after rounding ours to uint8) differences of the model-input images in levels, the
    state's max abs difference, the prompts."""
    from libero.libero.envs import OffScreenRenderEnv
    f = dict(np.load(fix))
    env = make_envs("libero-spatial", 1, image_size=size, asynchronous=False)
    real_seed = OffScreenRenderEnv.seed
    out = {"image": [], "wrist_image": [], "state": [], "prompt": None}
    try:
        for i in range(n):
            OffScreenRenderEnv.seed = seed_for(i, f, real_seed)
            obs = env.reset([(0, i)])
            o = proc.observation(obs, "cpu")
            levels = (o.images[0].permute(0, 2, 3, 1).double().numpy() + 1.0) * 127.5   # (2, 224, 224, 3)
            for k, cam in enumerate(("image", "wrist_image")):   # float levels, and ours rounded to uint8
                d = np.abs(levels[k] - f[cam][i])
                out[cam].append((d.mean(), d.max(), np.abs(np.round(levels[k]) - f[cam][i]).max()))
            out["state"].append(np.abs(obs["state"][0].astype(np.float64) - f["state"][i]).max())
        out["prompt"], out["tokenized"] = obs["instruction"][0], proc.tokenizer.texts[-1]
        return out, f
    finally:
        OffScreenRenderEnv.seed = real_seed
        env.close()


def openpi_rng(i, f, real_seed):
    """numpy's global RNG as openpi's main.py left it at reset i (env.seed(7) once, then its episodes)."""
    rng = ("MT19937", f["rng_keys"][i], int(f["rng_pos"][i]), int(f["rng_has_gauss"][i]),
           float(f["rng_cached_gaussian"][i]))
    return lambda self, seed: np.random.set_state(rng)


@pytest.mark.skipif(not _libero_ready(), reason="LIBERO assets missing: run tools/setup_sims.sh")
@pytest.mark.parametrize("name", ["pi0_libero"])
def test_libero_model_inputs_equal_openpis_client(name):
    """openpi's client and pirl (render 256, resize with pad to 224) on the same scenes: state to 1e-6, the prompt
    equal, both images within one uint8 level once ours is rounded to uint8 as openpi's client rounds (PIL's
    fixed-point bilinear vs torch's antialiased bilinear; unrounded: measured mean 0.26, max 1.001 levels)."""
    size = render_size(DATA_CONFIGS[name], "libero-spatial", 224)
    d, f = compare_libero(openpi_processor(name), size, OPENPI_FIX / "libero_spatial_task0.npz", LIBERO_STATES, openpi_rng)
    assert max(d["state"]) <= 1e-6, d["state"]
    assert d["prompt"] == str(f["prompt"]) and d["tokenized"] == str(f["prompt"])
    for cam in ("image", "wrist_image"):
        assert max(r for _, _, r in d[cam]) <= 1.0 and max(m for _, m, _ in d[cam]) < 1.1, (cam, d[cam])


@pytest.mark.skipif(not OPENPI_FIX.joinpath("meta.json").exists(), reason="no openpi LIBERO fixtures")
def test_openpi_libero_fixture_provenance():
    meta = json.loads((OPENPI_FIX / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["suite"] == "libero_spatial" and len(meta["init_states"]) >= 10


# ----------------------------------------------------------------------------- LIBERO vs LeRobot's env
# Fixtures written by LeRobot 0.6.1's own envs/libero.py + LiberoProcessorStep + PI0Policy._preprocess_images
# (tools/peers/lerobot_envs.py --libero 10): 360 px renders, env.seed(seed) at every reset (seeds 1000..), init
# state i at reset i. Aligned by seeding LIBERO at pirl's reset with LeRobot's seed.
LEROBOT_LIBERO = FIX / "libero_spatial_task0.npz"


def lerobot_seed(i, f, real_seed):
    return lambda self, seed: real_seed(self, int(f["seeds"][i]))


@pytest.mark.skipif(not _libero_ready() or not LEROBOT_LIBERO.exists(), reason="LIBERO assets or fixtures missing")
def test_libero_model_inputs_equal_lerobots_at_its_render_size():
    """LeRobot's LIBERO env and pirl rendering at LeRobot's 360 px with the LeRobot processor (resize without
    antialiasing): state to 1e-6, prompt equal, images within one level."""
    proc = lerobot_processor()
    proc.tokenizer.tokenize = lambda prompt, state, max_len: proc.tokenizer.tokenize_text(prompt, max_len)
    d, f = compare_libero(proc, 360, LEROBOT_LIBERO, LIBERO_STATES, lerobot_seed)
    assert max(d["state"]) <= 1e-6, d["state"]
    assert d["prompt"] == str(f["prompt"]) and d["tokenized"] == str(f["prompt"]) + "\n"
    for cam in ("image", "wrist_image"):
        assert max(m for _, m, _ in d[cam]) <= 1.0, (cam, d[cam])
