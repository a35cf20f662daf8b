"""pirl's LIBERO env and processor against RLinf's OWN LIBERO env and model-side processing (issue 25): the
observation an RLinf π0 / π0.5 LIBERO checkpoint gets from pirl (make_envs(**DATA_CONFIGS["rlinf_pi0_libero"]
.env_options(env, 224)) + Processor with that data config, as the RL scripts and tools/evaluate.py build them)
against what RLinf's LiberoEnv + OpenPi0ForRLActionPrediction's input transforms give it, and the actions each sends
to LIBERO for the same model output chunk.

Fixtures (committed, ~0.2 MB) written by tools/peers/rlinf_libero.sh (RLinf a3816b5, rlinf-openpi 0.1.1,
openpi-client 0.1.2, hf-libero 0.1.4, robosuite 1.4.0, mujoco 3.3.0; tools/peers/rlinf_libero.py's docstring lists
what runs and the only stand-ins): libero_spatial task 0 at init states 0..9 and libero_10 task 0 at 0..2. They keep
the model-input images of the first state in full and, for every state, 16x16-pixel block means of the 256 px renders
and of the model-input images. LIBERO places its fixtures (furniture without joints, which set_init_state does not
set) from numpy's global RNG at reset; RLinf's worker seeds it right before (seed = env seed x resetting envs + env
index: 0 for its one env here), pirl from (run seed, task, init state): pirl's env is given RLinf's seed at its reset.

Found by this test and applied (common/envs.py libero_client "rlinf", data configs rlinf_pi0_libero /
rlinf_pi05_libero): RLinf's LiberoEnv.reset takes 15 steps of [0] * 6 + [-1] after set_init_state before its first
observation, openpi's client 10. With openpi's 10 on the same scenes the first observations differ (over all fixture
states; libero_spatial / libero_10: state up to 3.7e-3 / 8.4e-3, the normalised state 9.8e-3 / 1.6e-2, the 256 px
renders' 16 px block means up to 4.5 / 4.7 levels, the model-input images' 4.0 / 3.3; the first state's full
model-input images up to 64 levels, mean 0.60). With RLinf's 15 everything that reaches the model agrees: renders bit
for bit, state exactly, prompt, image slots, the normalised state to 5.4e-7 and the model-input images within one level
(openpi's jax resize_with_pad vs pirl's torch antialiased resize: mean 0.24, max 1.0014 unrounded; 1 once rounded).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.conventions import DATA_CONFIGS
from common.policy import make_config
from common.processor import Processor
from helpers import libero_ready
from test_peer_envs import RecordingTokenizer

FIX = Path(__file__).parent / "fixtures" / "peers" / "rlinf_libero"
SUITES = {"libero_spatial": "libero-spatial", "libero_10": "libero-long"}   # RLinf's suite name -> pirl's env
CONFIGS = {"pi0": DATA_CONFIGS["rlinf_pi0_libero"], "pi05": DATA_CONFIGS["rlinf_pi05_libero"]}


pytestmark = [pytest.mark.slow,   # real LIBERO: ~8 s per reset on one core, ~4 min in all
              pytest.mark.skipif(not libero_ready(), reason="LIBERO or its assets missing: run tools/setup_sims.sh")]


def fixture(suite):
    return dict(np.load(FIX / f"{suite}_task0.npz"))


def blocks(img: np.ndarray, block: int) -> np.ndarray:
    """(H, W, 3) levels -> (H / block, W / block, 3) block means (the fixture's)."""
    h, w, c = img.shape
    return img.astype(np.float64).reshape(h // block, block, w // block, block, c).mean(axis=(1, 3))


def rlinf_processor(f, variant):
    """pirl's processor as load_policy builds it for an RLinf (openpi-layout) LIBERO checkpoint: openpi's conventions
    (z-score for π0, quantiles for π0.5), 3 image slots, the rlinf_pi0_libero / rlinf_pi05_libero data config."""
    stats = {k: {s: f[f"stats_{k}_{s}"].tolist() for s in ("mean", "std", "q01", "q99")} for k in ("state", "actions")}
    config = make_config("tiny" if variant == "pi0" else "tiny-pi05", action_dim=32, state_dim=32, image_size=224,
                         num_cameras=3)
    tok = RecordingTokenizer()
    tok.tokenize = lambda prompt, state, max_len: tok.tokenize_text(prompt, max_len)
    return Processor(stats, tok, config, data_config=CONFIGS[variant])


class Aligned:
    """pirl's LIBERO env as the RL scripts make it for a data config (one in-process env), LIBERO seeded at each
    reset with the seed RLinf's worker gave it (the scene's fixtures are drawn from it)."""

    def __init__(self, env, data_config):
        from common.envs import make_envs
        self.env = make_envs(env, 1, asynchronous=False, **data_config.env_options(env, 224))

    def reset(self, init_id, seed):
        from libero.libero.envs import OffScreenRenderEnv
        real_seed = OffScreenRenderEnv.seed
        OffScreenRenderEnv.seed = lambda self, _: real_seed(self, int(seed))
        try:
            return self.env.reset([(0, init_id)])
        finally:
            OffScreenRenderEnv.seed = real_seed

    def close(self):
        self.env.close()


def compare(suite, data_config, n=None):
    """Max abs differences over the fixture's first n initial states: env state, 256 px renders (block means,
    both cameras), model-input images in levels (block means, ours rounded and not; full images at the first
    state where kept), the model's normalised state (π0, π0.5); the prompts and image slots."""
    f = fixture(suite)
    n = len(f["seed"]) if n is None else n
    b = int(f["block"])
    env, procs = Aligned(SUITES[suite], data_config), {v: rlinf_processor(f, v) for v in ("pi0", "pi05")}
    out = {"state": 0.0, "raw": 0.0, "model": 0.0, "model_rounded": 0.0, "state_model": 0.0, "masks_equal": True}
    try:
        for i in range(n):
            obs = env.reset(i, f["seed"][i])
            out["state"] = max(out["state"], float(np.abs(obs["state"][0] - f["state"][i]).max()))
            for cam, key in ((0, "raw_blocks"), (1, "raw_wrist_blocks")):
                out["raw"] = max(out["raw"], float(np.abs(blocks(obs["images"][0, cam], b) - f[key][i]).max()))
            for v, proc in procs.items():
                o = proc.observation(obs, "cpu")
                out["state_model"] = max(out["state_model"],
                                         float(np.abs(o.state[0].double().numpy() - f[f"state_model_{v}"][i]).max()))
            levels = (o.images[0].permute(0, 2, 3, 1).double().numpy() + 1.0) * 127.5   # (3, 224, 224, 3)
            for cam, key in ((0, "model_blocks"), (1, "model_wrist_blocks")):
                out["model"] = max(out["model"], float(np.abs(blocks(levels[cam], b) - f[key][i]).max()))
                out["model_rounded"] = max(out["model_rounded"],
                                           float(np.abs(blocks(np.round(levels[cam]), b) - f[key][i]).max()))
            if i == 0 and "image224" in f:
                full = ((0, "image224"), (1, "wrist224"))
                out["full_rounded"] = max(float(np.abs(np.round(levels[c]) - f[k]).max()) for c, k in full)
                out["full_max"] = max(float(np.abs(levels[c] - f[k]).max()) for c, k in full)
                out["full_mean"] = float(np.mean([np.abs(levels[c] - f[k]).mean() for c, k in full]))
            out["masks_equal"] &= o.image_masks[0].tolist() == f["image_masks"][i].tolist()
            out["empty_slots_max"] = float(o.images[0, 2:].max())           # the absent right wrist: black, -1
        out["prompt"], out["instruction"] = procs["pi0"].tokenizer.texts[-1], obs["instruction"][0]
        return out, f
    finally:
        env.close()


@pytest.mark.parametrize("suite", SUITES)
def test_libero_model_inputs_equal_rlinfs(suite):
    """On RLinf's scenes (its 15 settle steps taken by libero_client "rlinf"): the same renders bit for bit (block
    means equal), the same state, prompt and image slots (two cameras, a black masked third), the normalised state to
    1e-6 (π0: z-score, π0.5: quantiles), and the model-input images within one level once ours is rounded as openpi's
    jax resize_with_pad rounds (measured unrounded: mean 0.24, max 1.0014 levels at the first state; block means
    within 0.18)."""
    d, f = compare(suite, CONFIGS["pi0"])
    assert d["state"] <= 1e-6 and d["raw"] == 0.0, d
    assert d["instruction"] == str(f["prompt"]) and d["prompt"] == str(f["prompt_tokenized"])
    assert d["masks_equal"] and d["empty_slots_max"] == -1.0 == float(f["empty_slots_max"].max())
    assert d["state_model"] <= 1e-6, d
    assert d["model_rounded"] <= 1.0 and d["model"] < 1.0, d
    if "full_rounded" in d:
        assert d["full_rounded"] <= 1.0 and d["full_mean"] < 0.5, d


@pytest.mark.parametrize("suite", SUITES)
def test_dropping_rlinfs_settle_steps_is_caught(suite):
    """The check fails if the settle convention is dropped: openpi's client (pi0_libero: 10 settle steps, the rest
    the same) on the same scenes is off in state (measured at the first two states: libero_spatial 2.3e-3, libero_10
    8.4e-3) and in the renders (up to 4.3 and 4.7 levels in 16 px block means)."""
    d, f = compare(suite, DATA_CONFIGS["pi0_libero"], n=2)
    assert d["state"] > 1e-4 and d["raw"] > 1.0, d
    assert d["instruction"] == str(f["prompt"])                     # the same scene and task: only the settling


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_libero_env_actions_equal_rlinfs(variant):
    """For the same model output chunk, the actions pirl sends to LIBERO (crop to 7 dims, unnormalise: z-score for
    π0, quantiles for π0.5; π0: the state added back on the first 6 dims) equal what RLinf's output transforms +
    prepare_actions send (its first num_action_chunks = 5) to 1e-6, and stepping them from the same first observation
    gives RLinf's states at every step."""
    suite = "libero_spatial"
    f = fixture(suite)
    proc = rlinf_processor(f, variant)
    env = Aligned(SUITES[suite], CONFIGS[variant])
    try:
        obs = env.reset(0, f[f"seed_{variant}"])
        np.testing.assert_allclose(obs["state"][0], f[f"state_{variant}"], rtol=0, atol=1e-6)
        sent = f[f"sent_{variant}"]
        chunk = torch.as_tensor(f[f"model_chunk_{variant}"])[None, : len(sent)]
        actions = proc.actions_to_env(chunk, 7, state=obs["state"])[0]                # (5, 7)
        np.testing.assert_allclose(actions, sent, rtol=0, atol=1e-6)
        for k, a in enumerate(actions):
            obs, *_ = env.env.step_chunk(a[None, None])
            np.testing.assert_allclose(obs["state"][0], f[f"states_after_{variant}"][k], rtol=0, atol=1e-6)
    finally:
        env.close()


def test_episode_lengths_and_settle_steps_are_rlinfs():
    """make_envs(libero_client="rlinf") runs RLinf's episode lengths, as its run yamls compose them (recorded in the
    fixture's meta.json: env/libero_<suite>.yaml under libero_<suite>_ppo_openpi{,_pi05}.yaml's env.train / env.eval),
    which the data configs' episode_steps record; and RLinf's settle steps, as its worker took them."""
    from common.envs import LIBERO_SUITES, RLINF_LIBERO_MAX_STEPS, libero_max_steps, libero_settle_steps
    meta = json.loads((FIX / "meta.json").read_text())
    ours = {"libero_spatial": "libero-spatial", "libero_object": "libero-object", "libero_goal": "libero-goal",
            "libero_10": "libero-long", "libero_90": "libero-90"}
    for suite, name in ours.items():
        for v in ("pi0", "pi05"):
            settings = meta["episode_settings"][suite][v]
            assert {settings[s] for s in ("train", "eval") if s in settings} == {RLINF_LIBERO_MAX_STEPS[name]}, suite
            assert libero_max_steps(name, "rlinf") == RLINF_LIBERO_MAX_STEPS[name]
            assert libero_max_steps(name, "openpi") == LIBERO_SUITES[name][1]     # pirl's default: unchanged
    for config in CONFIGS.values():
        assert config.episode_steps == RLINF_LIBERO_MAX_STEPS and config.libero_client == "rlinf"
    for suite in SUITES:   # what RLinf's worker stepped between set_init_state and its first observation
        f = fixture(suite)
        assert libero_settle_steps("rlinf") == int(f["settle_steps"]) == 15 and libero_settle_steps("openpi") == 10
        assert f["settle_action"].tolist() == [0.0] * 6 + [-1.0]      # pirl's (common/envs.py _LiberoSim.reset)


def test_fixture_provenance():
    meta = json.loads((FIX / "meta.json").read_text())
    assert meta["rlinf_commit"].startswith("a3816b5") and meta["hf-libero"] == "0.1.4" and meta["mujoco"] == "3.3.0"
    assert meta["rlinf_openpi"] == "0.1.1" and meta["suites"]["libero_spatial"] >= 10
