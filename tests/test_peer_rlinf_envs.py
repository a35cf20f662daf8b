"""pirl's MetaWorld env and processor against RLinf's OWN env wrapper and model-side processing (issue 25): the
observation an RLinf π0 / π0.5 MetaWorld checkpoint gets from pirl (make_envs(**DATA_CONFIGS["rlinf_metaworld"]
.env_options(env, 224)) + Processor with that data config, as the RL scripts build them) against what RLinf's
MetaWorldEnv + OpenPi0ForRLActionPrediction's input transforms give it, and the actions each sends to MetaWorld for
the same model output chunk.

Fixtures (committed, ~2 MB) written by tools/peers/rlinf_envs.sh (RLinf a3816b5, rlinf-openpi 0.1.1,
openpi-client 0.1.2, metaworld 3.0.0, mujoco 3.3.0; tools/peers/rlinf_envs.py's docstring lists what runs and the
only stand-ins): drawer-open-v3 and pick-place-v3, 10 resets each. RLinf's MT1 env draws its scenes from its own
unseeded RNG; the fixture records each rand_vec drawn and qpos / qvel right after MetaWorld's reset, and pirl's env
replays the draws (test_peer_envs.py's Aligned): qpos / qvel then agree bit for bit (asserted).

Found by this test and applied: RLinf's MetaWorldEnv.reset (rlinf/envs/metaworld/metaworld_env.py, RESET_STEP = 15,
then one more all-zero step) takes 16 zero actions after MetaWorld's reset before its first observation; LeRobot's
env takes none. Without them (LeRobot's "lerobot" view) the first observations on the same scene differ (both tasks:
state up to 5.7e-3, the hand's x, and the gripper 1.0 vs 0.9974; the raw 480 px frame up to 242 levels; the
model-input image mean 1.8, max 180 levels; the normalised state 2.8e-2). rlinf_metaworld's view "rlinf" takes them.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.conventions import DATA_CONFIGS
from common.envs import RLINF_METAWORLD_SETTLE_STEPS, make_envs
from common.policy import make_config
from common.processor import Processor
from test_peer_envs import RecordingTokenizer

FIX = Path(__file__).parent / "fixtures" / "peers" / "rlinf_envs"
TASKS = ("drawer-open-v3", "pick-place-v3")
DATA_CONFIG = DATA_CONFIGS["rlinf_metaworld"]

pytestmark = [pytest.mark.slow,   # real MetaWorld, 480 px renders: ~40 s in all on one core
              pytest.mark.skipif(not FIX.joinpath("meta.json").exists(), reason="no RLinf env fixtures")]


def fixture(task):
    return dict(np.load(FIX / f"{task}.npz"))


def rlinf_processor(f, variant="pi0"):
    """pirl's processor as load_policy builds it for an RLinf (openpi-layout) MetaWorld checkpoint: openpi's
    conventions (z-score for π0, quantiles for π0.5), 3 image slots, the rlinf_metaworld data config."""
    stats = {k: {s: f[f"stats_{k}_{s}"].tolist() for s in ("mean", "std", "q01", "q99")} for k in ("state", "actions")}
    config = make_config("tiny" if variant == "pi0" else "tiny-pi05", action_dim=32, state_dim=32, image_size=224,
                         num_cameras=3)
    tok = RecordingTokenizer()
    tok.tokenize = lambda prompt, state, max_len: tok.tokenize_text(prompt, max_len)
    return Processor(stats, tok, config, data_config=DATA_CONFIG)


class Aligned:
    """pirl's MetaWorld env as the RL scripts make it for this data config (one in-process env), reset to the scene
    RLinf's env had (its rand_vec draws replayed in order)."""

    def __init__(self, task, view=None):
        options = {**DATA_CONFIG.env_options(f"metaworld-{task}", 224), **({"metaworld_view": view} if view else {})}
        self.env = make_envs(f"metaworld-{task}", 1, asynchronous=False, **options)
        self.env.reset([(0, 0)])                      # builds the task's MetaWorld env
        self.sim = self.env._workers[0].sim.env

    def reset(self, rand_vecs):
        """pirl's first observation on RLinf's scene; qpos / qvel as MetaWorld's own reset left them."""
        draws = iter(rand_vecs)
        self.sim._get_state_rand_vec = lambda: next(draws).copy()   # the peer's draws, in its order
        metaworld_reset = self.sim.reset

        def reset(*args, **kwargs):
            out = metaworld_reset(*args, **kwargs)
            self.qpos, self.qvel = self.sim.data.qpos.copy(), self.sim.data.qvel.copy()
            return out
        self.sim.reset = reset
        try:
            return self.env.reset([(0, 0)])
        finally:
            del self.sim._get_state_rand_vec, self.sim.reset

    def close(self):
        self.env.close()


def compare_task(task, view=None):
    """view: another MetaWorld view than rlinf_metaworld's (e.g. "lerobot", without RLinf's settle steps). Max abs differences over the
    fixture's initial states: sim state right after MetaWorld's reset, env state, raw 480 px frame (first state),
    model-input image in levels (mean, max, max after rounding ours), the model's normalised state (π0, π0.5), the
    prompts and image slots."""
    f = fixture(task)
    env, procs = Aligned(task, view), {v: rlinf_processor(f, v) for v in ("pi0", "pi05")}
    out = {"qpos": 0.0, "state": 0.0, "image_mean": [], "image_max": 0.0, "image_rounded_max": 0.0,
           "state_model": 0.0, "masks_equal": True}
    try:
        for i in range(len(f["state"])):
            obs = env.reset(f["rand_vecs"][i])
            out["qpos"] = max(out["qpos"], np.abs(env.qpos - f["qpos"][i]).max(), np.abs(env.qvel - f["qvel"][i]).max())
            out["state"] = max(out["state"], float(np.abs(obs["state"][0] - f["state"][i]).max()))
            if i == 0:
                out["raw480"] = float(np.abs(obs["images"][0, 0].astype(float) - f["raw480"]).max())
            for v, proc in procs.items():
                o = proc.observation(obs, "cpu")
                out["state_model"] = max(out["state_model"],
                                         float(np.abs(o.state[0].double().numpy() - f[f"state_model_{v}"][i]).max()))
            levels = (o.images[0, 0].permute(1, 2, 0).double().numpy() + 1.0) * 127.5
            d = np.abs(levels - f["image224"][i])
            out["image_mean"].append(d.mean())
            out["image_max"] = max(out["image_max"], d.max())
            out["image_rounded_max"] = max(out["image_rounded_max"], np.abs(np.round(levels) - f["image224"][i]).max())
            out["masks_equal"] &= o.image_masks[0].tolist() == f["image_masks"][i].tolist()
            out["empty_slots_max"] = float(o.images[0, 1:].max())           # absent cameras: black, -1
        out["image_mean"] = float(np.mean(out["image_mean"]))
        out["prompt"], out["instruction"] = procs["pi0"].tokenizer.texts[-1], obs["instruction"][0]
        return out, f
    finally:
        env.close()


@pytest.mark.parametrize("task", TASKS)
def test_metaworld_model_inputs_equal_rlinfs(task):
    """On RLinf's scenes (its 16 settle steps taken by the "rlinf" view): the same 480 px frame bit for bit, the same state, prompt and
    image slots (one camera, two black masked ones), the normalised state to 1e-6, and the model-input image within
    one level once ours is rounded as openpi's resize_with_pad rounds (PIL's fixed-point bilinear vs torch's
    antialiased bilinear; unrounded: measured mean 0.19, max 0.97 levels)."""
    assert int(fixture(task)["settle_steps"]) == RLINF_METAWORLD_SETTLE_STEPS
    d, f = compare_task(task)
    assert d["qpos"] == 0.0                                  # the initial states are aligned exactly
    assert d["state"] <= 1e-6 and d["raw480"] == 0.0, d
    assert d["instruction"] == str(f["prompt"]) and d["prompt"] == str(f["prompt_tokenized"])
    assert d["masks_equal"] and d["empty_slots_max"] == -1.0 == float(f["empty_slots_max"].max())
    assert d["state_model"] <= 1e-6, d
    assert d["image_rounded_max"] <= 1.0 and d["image_max"] < 1.0, d


@pytest.mark.parametrize("task", TASKS)
def test_metaworld_without_rlinfs_settle_steps_is_caught(task):
    """The check fails if the settle steps are dropped: LeRobot's view (the same camera, no settle steps) on the same
    scenes is off in state (measured up to 5.7e-3) and frame (up to 242 levels)."""
    d, f = compare_task(task, view="lerobot")
    assert d["qpos"] == 0.0
    assert d["state"] > 1e-3 and d["raw480"] > 100, d


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_metaworld_env_actions_equal_rlinfs(variant):
    """For the same model output chunk, the actions pirl sends to MetaWorld (crop to 4 dims, unnormalise: z-score for
    π0, quantiles for π0.5) equal what RLinf's output transforms + prepare_actions send (to 1e-6), and stepping them
    from the same state gives RLinf's states at every step."""
    task = "drawer-open-v3"
    f = fixture(task)
    proc = rlinf_processor(f, variant)
    actions = proc.actions_to_env(torch.as_tensor(f["model_chunk"])[None], 4)[0]     # (H, 4)
    np.testing.assert_allclose(actions, f[f"sent_{variant}"], rtol=0, atol=1e-6)
    env = Aligned(task)
    try:
        obs = env.reset(f[f"rand_vecs_{variant}"])
        assert np.abs(env.qpos - f[f"qpos_{variant}"]).max() == 0.0
        np.testing.assert_allclose(obs["state"][0], f[f"state_{variant}"], rtol=0, atol=1e-6)
        for k, a in enumerate(actions):
            obs, *_ = env.env.step_chunk(a[None, None])
            np.testing.assert_allclose(obs["state"][0], f[f"states_after_{variant}"][k], rtol=0, atol=1e-6)
    finally:
        env.close()


def test_fixture_provenance():
    meta = json.loads((FIX / "meta.json").read_text())
    assert meta["rlinf_commit"].startswith("a3816b5") and meta["metaworld"] == "3.0.0"
    assert meta["rlinf_openpi"] == "0.1.1" and meta["states"] >= 10 and meta["tasks"] == list(TASKS)
