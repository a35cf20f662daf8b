"""pirl's π0.5 on LIBERO against openpi's OWN pi05_libero policy transforms (issue 25): on the observations openpi's
LIBERO client sent (tests/fixtures/peers/openpi_libero: examples/libero/main.py, libero_spatial task 0, init states
0..9), pirl's Processor with DATA_CONFIGS["pi05_libero"] builds the model inputs openpi's policy builds (images and
their masks, quantile-normalised padded state, prompt tokens at 200 with no state in them) and sends the env the
actions openpi's output transforms send for the same model chunk (quantile unnormalisation, absolute, 7 dims).

Fixtures: tests/fixtures/peers/openpi_pi05_libero (`bash tools/peers/openpi_pi05_libero.sh`: openpi 15a9616's
LiberoInputs / Normalize / ResizeImages / TokenizePrompt / PadStatesAndActions / Unnormalize / LiberoOutputs as
create_trained_policy composes them for TrainConfig "pi05_libero"), with the shared tiny tokenizer of
tests/fixtures/peers/tokens.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from common.conventions import DATA_CONFIGS, render_size
from common.policy import make_config
from common.processor import Processor
from common.tokenizer import Tokenizer

PEERS = Path(__file__).parent / "fixtures" / "peers"
FIX = dict(np.load(PEERS / "openpi_pi05_libero" / "pi05_libero.npz"))
META = json.loads((PEERS / "openpi_pi05_libero" / "meta.json").read_text())
CLIENT = dict(np.load(PEERS / "openpi_libero" / "libero_spatial_task0.npz"))


def pi05_libero_processor():
    """pirl's Processor as load_policy builds it for an openpi π0.5 LIBERO checkpoint (--data-config pi05_libero,
    config.json discrete_state_input false), with openpi's norm stats and the shared tiny tokenizer."""
    stats = {k: {s: FIX[f"{k}_{s}"].tolist() for s in ("mean", "std", "q01", "q99")} for k in ("state", "actions")}
    config = make_config("pi05", discrete_state_input=False)   # 224 px, 3 image slots, 200 tokens, 32-D
    tokenizer = Tokenizer((PEERS / "tokens" / "paligemma_tiny.model").read_bytes())
    return Processor(stats, tokenizer, config, source="openpi", data_config=DATA_CONFIGS["pi05_libero"])


def client_observation():
    n = len(CLIENT["state"])
    return {"images": np.stack([CLIENT["image"], CLIENT["wrist_image"]], 1),      # (n, 2, 224, 224, 3) uint8
            "state": CLIENT["state"], "instruction": [str(CLIENT["prompt"])] * n}


def openpi_images():
    """openpi's model-input images, (n, 3, 3, 224, 224): its transforms pass the client's bytes through (checked by
    digest), the absent right wrist is zeros; Observation.from_dict maps each level as `level_to_float`."""
    digest = lambda x: hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).hexdigest()   # noqa: E731
    zeros = np.zeros_like(CLIENT["image"])
    assert list(FIX["image_sha256"]) == [digest(CLIENT["image"]), digest(CLIENT["wrist_image"]), digest(zeros)]
    levels = np.stack([CLIENT["image"], CLIENT["wrist_image"], zeros], 1)
    return torch.as_tensor(FIX["level_to_float"][levels]).permute(0, 1, 4, 2, 3)


def test_openpi_pi05_libero_fixture_is_its_config():
    """The fixture is openpi's pi05_libero: quantile norm, 200 tokens, no state in the prompt, absolute actions."""
    cfg = META["train_config"]
    assert META["commit"] == "15a9616" and META["use_quantiles"] and META["max_token_len"] == 200
    assert cfg["model"] == {"pi05": True, "action_horizon": 10, "discrete_state_input": False}
    assert cfg["data"]["extra_delta_transform"] is False and not DATA_CONFIGS["pi05_libero"].delta
    assert FIX["tokens"].shape == (10, 200) and FIX["to_env"].shape == (10, 10, 7)


def test_model_inputs_equal_openpis_pi05_libero_policy():
    """On the client's 10 observations: images equal (pirl x / 127.5 - 1, openpi x / 255 * 2 - 1: measured 0), the
    same image masks (base, left wrist, no right wrist), the same token ids and masks, and the normalised padded state
    within 5e-6 of openpi's (measured max 1.2e-6: pirl casts the raw state to float32 before normalising, openpi
    normalises the client's float64; dim 3, ~3.14, has the coarsest float32 grid; π0.5 does not read this state)."""
    proc = pi05_libero_processor()
    obs = proc.observation(client_observation(), "cpu")
    assert (obs.images - openpi_images()).abs().max() <= 1e-6
    assert obs.image_masks.tolist() == FIX["image_masks"].tolist() == [[True, True, False]] * 10
    np.testing.assert_allclose(obs.state.numpy(), FIX["state"], rtol=0, atol=5e-6)
    assert np.array_equal(obs.tokens.numpy(), FIX["tokens"]) and np.array_equal(obs.token_masks.numpy(),
                                                                                 FIX["token_masks"])


def test_env_actions_equal_openpis_pi05_libero_outputs():
    """The same model chunks (10, 32) sent to the env: unnormalised with quantiles, no state added back, cropped
    to 7: equal to openpi's Unnormalize + LiberoOutputs within float32 rounding (measured max 2.8e-7 on values up to
    3.5)."""
    proc = pi05_libero_processor()
    state = CLIENT["state"]                                                # (10, 8) raw, one per chunk
    actions = proc.actions_to_env(torch.as_tensor(FIX["model_out"]), 7, state)
    np.testing.assert_allclose(actions, FIX["to_env"], rtol=0, atol=1e-6)


def test_pi05_libero_differs_from_pi0_libero_where_it_should():
    """The check can fail: pi0_libero's processing of the same chunk (z-score, state added back on 6 dims) and
    a π0.5 prompt with the state in it both move far from openpi's pi05_libero (measured: actions by up to 4.8)."""
    proc = pi05_libero_processor()
    pi0 = Processor(proc.norm_stats, proc.tokenizer, make_config("pi0"), data_config=DATA_CONFIGS["pi0_libero"])
    state = CLIENT["state"]                                                # (10, 8) raw, one per chunk
    assert np.abs(pi0.actions_to_env(torch.as_tensor(FIX["model_out"]), 7, state) - FIX["to_env"]).max() > 0.1
    discrete = Processor(proc.norm_stats, proc.tokenizer, make_config("pi05"), data_config=DATA_CONFIGS["pi05_libero"])
    assert not np.array_equal(discrete.observation(client_observation(), "cpu").tokens.numpy(), FIX["tokens"])


# ----------------------------------------------------------------------------- from pirl's own LIBERO env
@pytest.mark.slow
def test_pirls_libero_env_gives_openpis_pi05_libero_model_inputs():
    """pirl's make_envs("libero-spatial") at pi05_libero's render size (256) on the client's first scene (LIBERO
    given the RNG state openpi's reset saw, as tests/test_peer_envs.py aligns them), then the pi05_libero Processor:
    the prompt's tokens equal openpi's, the normalised state within 1e-5 (raw states agree to 1e-6), images within
    one level once rounded as openpi's client rounds (its PIL resize vs pirl's torch resize; measured mean 0.24, max
    1.001 levels unrounded; state 3.5e-7). ~18 s on 2 CPU cores."""
    from test_peer_envs import _libero_ready, openpi_rng
    if not _libero_ready():
        pytest.skip("LIBERO assets missing: run tools/setup_sims.sh")
    from libero.libero.envs import OffScreenRenderEnv

    from common.envs import make_envs
    proc = pi05_libero_processor()
    size = render_size(DATA_CONFIGS["pi05_libero"], "libero-spatial", 224)
    env = make_envs("libero-spatial", 1, image_size=size, asynchronous=False)
    real_seed = OffScreenRenderEnv.seed
    try:
        OffScreenRenderEnv.seed = openpi_rng(0, CLIENT, real_seed)
        raw = env.reset([(0, 0)])
    finally:
        OffScreenRenderEnv.seed = real_seed
        env.close()
    obs = proc.observation(raw, "cpu")
    assert size == 256 and raw["instruction"] == [str(CLIENT["prompt"])]
    assert np.array_equal(obs.tokens[0].numpy(), FIX["tokens"][0]) and np.array_equal(obs.token_masks[0].numpy(),
                                                                                       FIX["token_masks"][0])
    np.testing.assert_allclose(obs.state[0].numpy(), FIX["state"][0], rtol=0, atol=1e-5)
    ours = torch.round((obs.images[0, :2] + 1) * 127.5)
    theirs = torch.round((openpi_images()[0, :2] + 1) * 127.5)
    assert (ours - theirs).abs().max() <= 1.0 and obs.image_masks[0].tolist() == [True, True, False]
