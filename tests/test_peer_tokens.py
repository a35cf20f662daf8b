"""pirl's prompt tokens against the peers' OWN tokenizer code (issue 25): with one shared tiny SentencePiece model
(PaliGemma's cannot be downloaded here), pirl's Processor, built as for each checkpoint source, turns the prompts
its envs produce (and, for π0.5, the state) into the same token ids and masks as the peer.

Fixtures (tests/fixtures/peers/tokens, `bash tools/peers/tokens_peer.sh`, ~15 s): paligemma_tiny.model
(400 pieces, PaliGemma's specials and SentencePiece settings), prompts.json (LIBERO spatial tasks 0..9 as
hf-libero's task.language, the 50 MetaWorld descriptions pirl and LeRobot use, 4 edge cases; 64 raw 8-D states,
two of them 1e-7 from a π0.5 bin edge, and their norm stats), and what the peers made of them:
  openpi.npz   openpi 15a9616's PaligemmaTokenizer + transforms.Normalize / TokenizePrompt: π0 (48), π0.5 without
               state (pi05_libero: 200), π0.5 with the discrete state after quantile normalisation (200);
  lerobot.npz  LeRobot 0.6.1's make_pi0 / make_pi05_pre_post_processors (newline step, normaliser, π0.5 state
               prompt, TokenizerProcessorStep) over transformers 5.24's GemmaTokenizer made from the same model.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from common.conventions import DATA_CONFIGS
from common.envs import _metaworld_instruction
from common.policy import make_config
from common.processor import Processor
from common.tokenizer import Tokenizer

FIX = Path(__file__).parent / "fixtures" / "peers" / "tokens"
DOC = json.loads((FIX / "prompts.json").read_text())
PROMPTS, STATES = DOC["prompts"], np.asarray(DOC["states"])     # 64 prompts, (64, 8) raw states, row i with row i
OPENPI, LEROBOT = dict(np.load(FIX / "openpi.npz")), dict(np.load(FIX / "lerobot.npz"))
EDGE = slice(len(PROMPTS) - len(DOC["edge"]), None)                # the 4 edge-case prompts
NEAR_EDGE = DOC["near_bin_edge_rows"]                                # states 1e-7 from a π0.5 bin edge (float64)


def processor(variant, max_len, source, data_config=None, discrete=True, norm_mode=None):
    """pirl's Processor as load_policy builds it for a checkpoint of that source, over the shared tiny model."""
    stats = DOC["state_stats"]
    config = make_config("tiny" if variant == "pi0" else "tiny-pi05", max_token_len=max_len, state_dim=32,
                         action_dim=32, discrete_state_input=discrete)
    kw = {"norm_modes": {"state": norm_mode, "actions": norm_mode}} if norm_mode else {}
    return Processor({"state": stats, "actions": stats}, Tokenizer((FIX / "paligemma_tiny.model").read_bytes()),
                     config, source=source, data_config=data_config, **kw)


def pirl_tokens(proc, prompts=PROMPTS, states=STATES):
    raw = {"images": np.zeros((len(prompts), 2, 8, 8, 3), np.uint8), "state": states, "instruction": list(prompts)}
    obs = proc.observation(raw, "cpu")
    return obs.tokens.numpy(), obs.token_masks.numpy(), obs.state.numpy()[:, :states.shape[1]]


def differing_rows(a, b, rows=None):
    """(row, prompt) of the rows (of PROMPTS, or of `rows` when a and b hold those) whose ids differ."""
    rows = list(range(len(PROMPTS))) if rows is None else list(rows)
    return [(rows[i], PROMPTS[rows[i]]) for i in np.flatnonzero((a != b).any(1))]


# ----------------------------------------------------------------------------- the prompts are pirl's envs'
def test_prompts_are_the_ones_pirls_envs_produce():
    """The LIBERO prompts are what pirl's make_envs("libero-spatial") hands the policy (and task 0's is what openpi's
    LIBERO client sent, its fixture); every MetaWorld description is pirl's (LeRobot view) and LeRobot's own."""
    client = np.load(FIX.parent / "openpi_libero" / "libero_spatial_task0.npz")
    assert str(client["prompt"]) == DOC["libero_spatial"][0]
    tasks, lerobot = LEROBOT["metaworld_tasks"].tolist(), LEROBOT["metaworld_descriptions"].tolist()
    assert len(tasks) == 50 and [_metaworld_instruction(t, "lerobot") for t in tasks] == lerobot
    assert PROMPTS[:10] == DOC["libero_spatial"] and PROMPTS[10:60] == lerobot


def test_libero_prompts_equal_pirls_env():
    from test_peer_envs import _libero_ready
    if not _libero_ready():
        pytest.skip("LIBERO assets missing: run tools/setup_sims.sh")
    from common.envs import make_envs
    env = make_envs("libero-spatial", 1, asynchronous=False)   # builds no scene until reset
    try:
        assert env.task_descriptions == DOC["libero_spatial"]
    finally:
        env.close()


# ----------------------------------------------------------------------------- openpi
def test_openpi_pi0_tokens_equal_openpis():
    """π0 (pi0_libero, max_token_len 48): BOS + cleaned text + "\\n" tokenised apart, truncated at 48 (the long edge
    prompt), padding id 0 / mask False: every id and mask equal to openpi's PaligemmaTokenizer."""
    tokens, masks, _ = pirl_tokens(processor("pi0", 48, "openpi", DATA_CONFIGS["pi0_libero"]))
    assert tokens.shape == OPENPI["pi0_tokens"].shape == (64, 48)
    assert differing_rows(tokens, OPENPI["pi0_tokens"]) == [] and np.array_equal(masks, OPENPI["pi0_masks"])
    assert masks[-1].all()   # the long edge prompt fills all 48


def test_openpi_pi05_libero_tokens_equal_openpis():
    """π0.5 as pi05_libero (discrete_state_input False, max_token_len 200): π0's format at 200, equal to openpi's."""
    tokens, masks, _ = pirl_tokens(processor("pi05", 200, "openpi", DATA_CONFIGS["pi05_libero"], discrete=False))
    assert differing_rows(tokens, OPENPI["pi05_nostate_tokens"]) == []
    assert np.array_equal(masks, OPENPI["pi05_nostate_masks"])


def test_openpi_pi05_discrete_state_tokens_equal_openpis():
    """π0.5 with the state in the prompt (openpi's Pi0Config default): quantile-normalised state, 256 bins (incl.
    out-of-range states: below -1 bin -1, from 1 - 1/128 up bin 255, as np.digitize gives them), "Task: ..., State:
    ...;\\nAction: ": ids and masks equal openpi's on every row but the two near-bin-edge states (next test); the
    normalised state within float32 rounding of openpi's float64 (measured max 1.1e-6, on values up to 1.4)."""
    tokens, masks, state = pirl_tokens(processor("pi05", 200, "openpi", discrete=True))
    rows = [i for i in range(len(PROMPTS)) if i not in NEAR_EDGE]
    assert differing_rows(tokens[rows], OPENPI["pi05_state_tokens"][rows], rows) == []
    assert np.array_equal(masks, OPENPI["pi05_state_masks"])
    np.testing.assert_allclose(state, OPENPI["pi05_state_state"], rtol=0, atol=5e-6)


def test_openpi_pi05_state_bins_near_bin_edges_equal_openpis():
    """The two states whose normalised dim 3 lies 1e-7 from a bin edge in openpi's float64 arithmetic: pirl
    digitizes openpi's float64 normalisation too (a float32 one put them in the neighbouring bins, one id each)."""
    tokens, _, _ = pirl_tokens(processor("pi05", 200, "openpi", discrete=True))
    assert differing_rows(tokens[NEAR_EDGE], OPENPI["pi05_state_tokens"][NEAR_EDGE], NEAR_EDGE) == []


# ----------------------------------------------------------------------------- LeRobot
def test_lerobot_pi0_tokens_equal_lerobots():
    """LeRobot π0 (tokenizer_max_length 48): the task + "\\n" uncleaned (Pi0NewLineProcessor), then PaliGemma's HF
    tokenizer (BOS, no EOS, right padding, truncation): equal to LeRobot's processor over transformers' tokenizer."""
    tokens, masks, _ = pirl_tokens(processor("pi0", 48, "lerobot", DATA_CONFIGS["lerobot"], norm_mode="MEAN_STD"))
    assert differing_rows(tokens, LEROBOT["pi0_tokens"]) == [] and np.array_equal(masks, LEROBOT["pi0_masks"])


def test_lerobot_pi05_tokens_equal_lerobots():
    """LeRobot π0.5 (tokenizer_max_length 200, QUANTILES state): its normaliser, then the state prompt
    (Pi05PrepareStateTokenizerProcessorStep), then the HF tokenizer: ids, masks and normalised state equal LeRobot's,
    the near-bin-edge states included (both normalise in float32)."""
    tokens, masks, state = pirl_tokens(processor("pi05", 200, "lerobot", DATA_CONFIGS["lerobot"],
                                                 norm_mode="QUANTILES"))
    assert differing_rows(tokens, LEROBOT["pi05_tokens"]) == [] and np.array_equal(masks, LEROBOT["pi05_masks"])
    assert np.abs(state - LEROBOT["pi05_state"]).max() <= 1e-6


def test_peers_differ_where_their_conventions_do():
    """The comparisons can fail: on the edge prompts (underscores, outer spaces, a newline) openpi's cleaned π0
    prompt and LeRobot's raw one give different tokens, so each pirl source matching its own peer is not luck;
    the LIBERO and MetaWorld prompts (clean, no newline) give the same tokens in both."""
    edge = range(len(PROMPTS))[EDGE]
    assert len(differing_rows(OPENPI["pi0_tokens"][EDGE], LEROBOT["pi0_tokens"][EDGE], edge)) >= 3
    assert np.array_equal(OPENPI["pi0_tokens"][:60], LEROBOT["pi0_tokens"][:60])
    assert np.array_equal(OPENPI["pi05_state_tokens"][:60], LEROBOT["pi05_tokens"][:60])
    assert not np.array_equal(OPENPI["pi05_state_tokens"][NEAR_EDGE], LEROBOT["pi05_tokens"][NEAR_EDGE])


def test_fixture_provenance():
    o, r = json.loads(str(OPENPI["meta"])), json.loads(str(LEROBOT["meta"]))
    assert o["commit"] == "15a9616" and o["max_len"] == {"pi0": 48, "pi05_nostate": 200, "pi05_state": 200}
    assert r["lerobot"] == "0.6.1" and r["max_len"] == {"pi0": 48, "pi05": 200}
    assert r["hf_tokenizer_class"] == "GemmaTokenizer" and DOC["vocab_size"] <= 512
    assert (FIX / "paligemma_tiny.model").stat().st_size < 300_000
