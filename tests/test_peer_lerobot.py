"""LeRobot peer fixtures (tests/fixtures/peers/lerobot, written by tools/peers/lerobot_fixtures.py with LeRobot
0.6.1's own code: tiny random π0 / π0.5 saved by its save_pretrained + processors, and its outputs for fixed raw
inputs). Without LeRobot installed: loading those files reproduces LeRobot's velocity, sampled actions and env
actions; each convention that matters is checked by breaking it (the result must move far past the tolerance);
the full-size key lists and config fields of LeRobot's π0 / π0.5 match ours; saving a LeRobot-sourced policy
writes LeRobot's layout back (that LeRobot's from_pretrained loads it: `lerobot_fixtures.py --check-dir`)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from common.checkpoint import _config_from, detect_variant, load_policy, save_policy
from common.policy import PI0Policy, make_config
from common.processor import resize_with_pad, resize_with_pad_lerobot

torch.set_num_threads(1)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "peers" / "lerobot"
MODELS = ["pi0", "pi05", "pi05_mean_std", "pi0_trained_state12_action8"]
TOL = 1e-4      # fp32, LeRobot vs us
CAUGHT = 1e-2   # a broken convention must move the result at least this much (100x the tolerance)


def reference(name):
    d = FIXTURES / name
    ref = load_file(str(d / "reference.safetensors"))
    meta = json.loads((d / "reference.json").read_text())
    raw = {"images": ref["raw_images"].numpy(), "state": ref["raw_state"].numpy(), "instruction": meta["instruction"]}
    return d, ref, raw, meta["num_steps"]


@torch.no_grad()
def outputs(policy, proc, raw, ref, num_steps, t=None, obs_edit=None):
    obs = proc.observation(raw, "cpu")
    if obs_edit:
        obs_edit(obs)
    v, _ = policy.velocity(policy.encode(obs), ref["x_t"], ref["t"] if t is None else t)
    actions = policy.sample_actions(obs, ref["noise"].clone(), num_steps)
    env = torch.as_tensor(proc.actions_to_env(actions, ref["env_actions"].shape[-1]))
    return {"velocity": v, "actions": actions, "env_actions": env}


def max_diff(out, ref):
    return {k: float((out[k] - ref[k]).abs().max()) for k in out}


@pytest.fixture(scope="module")
def loaded():
    cache = {}

    def get(name):
        if name not in cache:
            policy, proc = load_policy(FIXTURES / name)
            cache[name] = (policy.eval(), proc)
        return cache[name]
    return get


@pytest.mark.parametrize("name", MODELS)
def test_lerobot_checkpoint_reproduces_lerobots_velocity_sampled_and_env_actions(loaded, name):
    d, ref, raw, K = reference(name)
    policy, proc = loaded(name)
    obs = proc.observation(raw, "cpu")
    L = obs.tokens.shape[1]
    assert torch.equal(obs.tokens, ref["tokens"]) and torch.equal(obs.token_masks, ref["token_masks"].bool())
    assert obs.image_masks.tolist() == ref["image_masks"].tolist()
    diff = max_diff(outputs(policy, proc, raw, ref, K), ref)
    assert max(diff.values()) < TOL, diff
    assert L == json.loads((d / "config.json").read_text())["tokenizer_max_length"]


def test_lerobot_images_prompt_and_state_match_lerobots_processors_exactly(loaded):
    d, ref, raw, _ = reference("pi0")
    policy, proc = loaded("pi0")
    obs = proc.observation(raw, "cpu")
    assert proc.source == "lerobot" and raw["images"].shape[2:4] == (45, 61)   # odd, non-square, downscaled
    torch.testing.assert_close(obs.images, ref["images"], atol=1e-6, rtol=0)
    openpi_resize = resize_with_pad(torch.from_numpy(raw["images"][:, 0]), 32)   # antialiased, rounded sizes
    assert (openpi_resize - ref["images"][:, 0]).abs().max() > CAUGHT
    assert torch.equal(resize_with_pad_lerobot(torch.from_numpy(raw["images"][:, 0]), 32), obs.images[:, 0])
    # LeRobot's π0 keeps "_" and edge spaces and only appends "\n" (openpi cleans them)
    text = proc.tokenizer.sp.decode([int(t) for t in obs.tokens[0][obs.token_masks[0]]])
    assert raw["instruction"][0] == "pick_up the red cube " and text == "pick_up the red cube \n"
    torch.testing.assert_close(obs.state[:, :raw["state"].shape[1]], ref["state"], atol=1e-6, rtol=0)


def test_lerobot_checkpoint_keeps_its_two_embedding_tables_and_reads_sizes_cameras_and_dims(loaded):
    sd = load_file(str(FIXTURES / "pi0" / "model.safetensors"))
    head, emb = (sd[f"model.paligemma_with_expert.paligemma.{k}.weight"] for k in
                 ("lm_head", "model.language_model.embed_tokens"))
    assert not torch.equal(head, emb)   # LeRobot holds two different tables
    policy, _ = loaded("pi0")
    pg = policy.paligemma_with_expert.paligemma
    assert torch.equal(pg.model.language_model.embed_tokens.weight, emb) and torch.equal(pg.lm_head.weight, head)
    c = policy.config
    assert (c.num_cameras, c.image_size, c.action_horizon, c.vlm_width, c.expert_width, c.depth) == (2, 32, 8, 32, 16, 2)
    c = loaded("pi0_trained_state12_action8")[0].config
    assert (c.state_dim, c.action_dim) == (12, 8)
    assert [loaded(n)[1].norm_modes for n in ("pi0", "pi05", "pi05_mean_std")] == [
        {"state": "MEAN_STD", "actions": "MEAN_STD"}, {"state": "QUANTILES", "actions": "QUANTILES"},
        {"state": "MEAN_STD", "actions": "MEAN_STD"}]


# ---- a broken convention is caught ------------------------------------------------------------------------
def _swap_cameras(raw):
    return {**raw, "images": raw["images"][:, ::-1].copy()}


def _other_norm(proc):
    other = {"MEAN_STD": "QUANTILES", "QUANTILES": "MEAN_STD"}
    proc.norm_modes = {k: other[m] for k, m in proc.norm_modes.items()}


def _other_table(policy):
    pg = policy.paligemma_with_expert.paligemma
    pg.model.language_model.embed_tokens.weight.data.copy_(pg.lm_head.weight.data)   # what a re-tie did


MUTATIONS = {
    "camera order swapped": dict(raw=_swap_cameras),
    "t -> 1 - t": dict(t=lambda t: 1 - t),
    "a masked prompt token": dict(obs_edit=lambda obs: obs.token_masks[:, 2].fill_(False)),
    "the other embedding table": dict(policy=_other_table),
    "the other normalisation mode": dict(proc=_other_norm),
    "openpi's conventions": dict(proc=lambda proc: setattr(proc, "source", "openpi")),
}


@pytest.mark.parametrize("name", ["pi0", "pi05"])
@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_broken_convention_moves_the_result_far_past_the_tolerance(name, mutation):
    _, ref, raw, K = reference(name)
    policy, proc = load_policy(FIXTURES / name)
    m = MUTATIONS[mutation]
    if "policy" in m:
        m["policy"](policy)
    if "proc" in m:
        m["proc"](proc)
    raw = m.get("raw", lambda r: r)(raw)
    t = m["t"](ref["t"]) if "t" in m else None
    diff = max_diff(outputs(policy.eval(), proc, raw, ref, K, t=t, obs_edit=m.get("obs_edit")), ref)
    key = "env_actions" if mutation == "the other normalisation mode" else "velocity"
    assert diff[key] > CAUGHT, diff


def test_after_20_lerobot_training_steps_from_tied_tables_a_re_tie_is_still_caught():
    """pi0_trained_state12_action8: embed_tokens = lm_head at the start, then 20 steps of LeRobot's own training
    (AdamW, its loss): the tables drift apart a little (1e-2), and re-tying them is already 100x the tolerance."""
    d, ref, raw, K = reference("pi0_trained_state12_action8")
    policy, proc = load_policy(d)
    pg = policy.paligemma_with_expert.paligemma
    drift = (pg.lm_head.weight - pg.model.language_model.embed_tokens.weight).abs().max()
    assert 0 < drift < 0.1 and pg.lm_head.weight is not pg.model.language_model.embed_tokens.weight
    assert max(max_diff(outputs(policy.eval(), proc, raw, ref, K), ref).values()) < TOL
    _other_table(policy)
    assert max_diff(outputs(policy, proc, raw, ref, K), ref)["velocity"] > CAUGHT


# ---- full size --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pi0", "pi05"])
def test_full_size_lerobot_keys_shapes_and_config_fields_match_ours(tmp_path, kind):
    full = json.loads((FIXTURES / "full_size.json").read_text())[kind]
    assert full["shared"] == []   # LeRobot ties nothing: lm_head and embed_tokens are separate tensors
    theirs = {k.removeprefix("model."): s for k, s in full["keys"].items()}
    sd = {k: torch.empty(s, device="meta") for k, s in theirs.items()}
    (tmp_path / "config.json").write_text(json.dumps(full["config"]))
    config = _config_from(tmp_path, sd, detect_variant(sd))
    cfg = full["config"]
    assert config == make_config(kind, num_cameras=1, action_horizon=cfg["chunk_size"])   # our full-size preset
    assert (config.state_dim, config.action_dim, config.max_token_len, config.image_size) == (
        cfg["max_state_dim"], cfg["max_action_dim"], cfg["tokenizer_max_length"], cfg["image_resolution"][0])
    assert (config.min_period, config.max_period, config.time_beta_alpha, config.time_beta_beta) == (
        cfg["min_period"], cfg["max_period"], cfg["time_sampling_beta_alpha"], cfg["time_sampling_beta_beta"])
    assert cfg["normalization_mapping"] == {"VISUAL": "IDENTITY", **{t: "MEAN_STD" if kind == "pi0" else "QUANTILES"
                                                                    for t in ("STATE", "ACTION")}}
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in PI0Policy(config).state_dict().items()}
    assert ours == theirs


# ---- saving back ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["pi0", "pi05"])
def test_save_policy_of_a_lerobot_policy_writes_lerobots_layout_and_reloads_the_same(tmp_path, name):
    d, ref, raw, K = reference(name)
    policy, proc = load_policy(d)
    with torch.no_grad():   # as after RL: the weights moved (embed_tokens included)
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_policy(tmp_path / "policy", policy, proc, extra={"iteration": 2})
    out = tmp_path / "policy"
    for f in d.glob("policy_*"):                      # processor files and config.json exactly as LeRobot wrote them
        assert (out / f.name).read_bytes() == f.read_bytes()
    assert (out / "config.json").read_bytes() == (d / "config.json").read_bytes()
    assert json.loads((out / "pirl.json").read_text()) == {"iteration": 2}
    saved, original = load_file(str(out / "model.safetensors")), load_file(str(d / "model.safetensors"))
    assert set(saved) == set(original) and all(saved[k].dtype == torch.float32 for k in saved)
    for k, v in policy.state_dict().items():
        assert torch.equal(saved["model." + k], v)
    again, proc2 = load_policy(out)
    assert proc2.source == "lerobot" and proc2.norm_modes == proc.norm_modes
    a, b = outputs(policy.eval(), proc, raw, ref, K), outputs(again.eval(), proc2, raw, ref, K)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # new stats (e.g. SFT on other data) go into LeRobot's normalizer files, not the stale ones
    proc.norm_stats["norm_stats"]["actions"]["mean"] = [m + 1.0 for m in proc.norm_stats["norm_stats"]["actions"]["mean"]]
    save_policy(out, policy, proc)
    stats = load_file(str(next(out.glob("policy_postprocessor_step_*_unnormalizer_processor.safetensors"))))
    torch.testing.assert_close(stats["action.mean"], torch.tensor(proc.norm_stats["norm_stats"]["actions"]["mean"]))
    np.testing.assert_allclose(load_policy(out)[1].norm_stats["norm_stats"]["actions"]["mean"],
                               proc.norm_stats["norm_stats"]["actions"]["mean"], rtol=1e-7)
    shutil.rmtree(out)


def test_lerobot_bf16_checkpoint_loads_its_exact_values_and_saves_back_in_its_own_dtypes(tmp_path):
    """LeRobot's bf16 mode (config dtype bfloat16) saves the PaliGemma / expert layers in bf16 (vision tower,
    projector and norms fp32). We hold its values exactly (upcast), reproduce what LeRobot computes with them in
    fp32 within TOL, sit within bf16 rounding of its own bf16 forward, and write each tensor back in the dtype
    it came in (so LeRobot's from_pretrained holds exactly what we saved)."""
    d, ref, raw, K = reference("pi0_bf16")
    on_file = load_file(str(d / "model.safetensors"))
    assert {v.dtype for v in on_file.values()} == {torch.bfloat16, torch.float32}
    policy, proc = load_policy(d)
    ours = policy.state_dict()
    assert all(torch.equal(ours[k.removeprefix("model.")], v.float()) for k, v in on_file.items())
    out = outputs(policy.eval(), proc, raw, ref, K)
    assert max(max_diff(out, {k: ref[k + "_fp32"] for k in out}).values()) < TOL
    bf16_gap = max_diff(out, ref)   # LeRobot's own bf16 forward: rounding of the order of 1e-2 (bf16 has 8 bits)
    assert max(bf16_gap.values()) < 5e-2, bf16_gap
    with torch.no_grad():   # as after RL, in fp32
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_policy(tmp_path / "policy", policy, proc)
    saved = load_file(str(tmp_path / "policy" / "model.safetensors"))
    assert {k: v.dtype for k, v in saved.items()} == {k: v.dtype for k, v in on_file.items()}
    for k, v in policy.state_dict().items():
        assert torch.equal(saved["model." + k], v.to(on_file["model." + k].dtype))


def test_what_cannot_be_loaded_from_lerobot_is_one_clear_error_naming_the_file_and_field(tmp_path):
    d = shutil.copytree(FIXTURES / "pi0", tmp_path / "pi0")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "use_relative_actions": True}))
    with pytest.raises(ValueError, match=r"pi0/config.json: use_relative_actions=true"):
        load_policy(d)
    (d / "config.json").write_text(json.dumps({**cfg, "image_resolution": [32, 48]}))
    with pytest.raises(ValueError, match=r"pi0/config.json: image_resolution \[32, 48\] is not square"):
        load_policy(d)
    (d / "config.json").write_text(json.dumps(cfg))
    post = json.loads((d / "policy_postprocessor.json").read_text())
    post["steps"][0]["config"]["norm_map"]["ACTION"] = "LOG"
    (d / "policy_postprocessor.json").write_text(json.dumps(post))
    with pytest.raises(ValueError, match=r"policy_postprocessor.json: unnormalizer_processor norm_map ACTION='LOG'"):
        load_policy(d)



def test_sft_of_a_lerobot_checkpoint_keeps_lerobots_conventions_and_layout(tmp_path):
    """Few-shot SFT from a user's LeRobot checkpoint (common.sft.build_policy with init_from) takes the demos'
    norm stats but keeps LeRobot's processing (modes, prompt, resize) and saves LeRobot's layout again."""
    from types import SimpleNamespace

    from common.processor import compute_norm_stats
    from common.sft import build_policy

    d = FIXTURES / "pi05_mean_std"
    policy, proc = load_policy(d)
    rng = np.random.default_rng(0)
    S, A = len(proc.norm_stats["norm_stats"]["state"]["mean"]), len(proc.norm_stats["norm_stats"]["actions"]["mean"])
    demos = SimpleNamespace(state=rng.normal(size=(32, S)).astype(np.float32), actions=rng.normal(size=(32, A)).astype(np.float32))
    _, new = build_policy(demos, init_from=(policy, proc))
    assert (new.source, new.norm_modes, new.eps) == (proc.source, proc.norm_modes, proc.eps) == ("lerobot", proc.norm_modes, proc.eps)
    assert new.norm_stats == compute_norm_stats(demos.state, demos.actions)
    save_policy(tmp_path / "policy", policy, new)
    assert (tmp_path / "policy" / "config.json").read_bytes() == (d / "config.json").read_bytes()  # LeRobot's layout
    assert load_policy(tmp_path / "policy")[1].source == "lerobot"


def _with_image_norm(tmp_path, mode, stats: dict):
    """The pi0 fixture with VISUAL `mode` in its config.json and saved preprocessor, and `stats` ({"<camera>.<stat>":
    tensor}) added to its normalizer state: what LeRobot writes for a policy trained with normalised images."""
    from safetensors.torch import save_file
    d = shutil.copytree(FIXTURES / "pi0", tmp_path / f"pi0_{mode}_{len(list(tmp_path.iterdir()))}")
    cfg = json.loads((d / "config.json").read_text())
    cfg["normalization_mapping"]["VISUAL"] = mode
    (d / "config.json").write_text(json.dumps(cfg))
    pre = json.loads((d / "policy_preprocessor.json").read_text())
    step = next(s for s in pre["steps"] if s["registry_name"] == "normalizer_processor")
    step["config"]["norm_map"]["VISUAL"] = mode
    (d / "policy_preprocessor.json").write_text(json.dumps(pre))
    save_file({**load_file(str(d / step["state_file"])), **stats}, str(d / step["state_file"]))
    return d


@pytest.mark.parametrize("mode", ["MEAN_STD", "QUANTILES"])
@pytest.mark.parametrize("size", ["48x40", "32x32"])
def test_lerobot_normalised_images_equal_lerobots_own(tmp_path, mode, size):
    """A LeRobot config whose VISUAL mode is not IDENTITY, with camera stats in its normalizer state: the images pirl
    feeds the model equal those LeRobot 0.6.1's NormalizerProcessorStep + PI0Policy._preprocess_images make
    (tools/peers/lerobot_image_norm.py): normalised per camera at the render size, then resized (with LeRobot's clamp
    to [0, 1], 48x40) or not (32x32), then 2x - 1. Far from the IDENTITY images pirl fed before."""
    ref = load_file(str(FIXTURES / "image_norm.safetensors"))
    stats = {k.split(".", 1)[1]: v for k, v in ref.items() if k.startswith(size + ".observation.")}
    _, proc = load_policy(_with_image_norm(tmp_path, mode, stats))
    assert proc.image_mode == mode and list(proc.image_stats) == ["observation.images.base", "observation.images.wrist"]
    raw = {"images": ref[f"{size}.raw"].numpy(), "state": np.zeros((2, 5), np.float32), "instruction": ["pick"] * 2}
    ours = proc.observation(raw, "cpu").images
    np.testing.assert_allclose(ours.numpy(), ref[f"{size}.{mode}"].numpy(), atol=1e-5, rtol=0)
    _, plain = load_policy(FIXTURES / "pi0")
    assert (plain.observation(raw, "cpu").images - ours).abs().max() > 0.5


def test_lerobot_image_normalisation_it_cannot_apply_is_one_error_line(tmp_path):
    """MEAN_STD whose camera stats lack the std: one `error:` line naming the mode, the camera and the file. Without any
    camera stats LeRobot passes the images through (no stats, no change): so does pirl."""
    import subprocess
    import sys

    _, proc = load_policy(_with_image_norm(tmp_path, "MEAN_STD", {}))
    assert proc.image_stats == {"observation.images.base": {}, "observation.images.wrist": {}}
    d = _with_image_norm(tmp_path, "MEAN_STD", {"observation.images.base.mean": torch.full((3, 1, 1), 0.5)})
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "tools/evaluate.py", "--checkpoint", str(d), "--env", "metaworld-drawer-open-v3"],
                       cwd=root, capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "VISUAL normalisation MEAN_STD needs ('mean', 'std') of observation.images.base" in lines[0]
    assert "policy_preprocessor.json" in lines[0]


def test_lerobot_checkpoints_own_sampling_settings_are_evaluates_defaults(tmp_path, monkeypatch):
    """tools/evaluate.py without --replan-steps / --num-steps runs a LeRobot checkpoint with its config.json's
    n_action_steps and num_inference_steps (as LeRobot's own eval would); flags given win."""
    import importlib.util

    import common.evaluate as ev

    d = shutil.copytree(FIXTURES / "pi0", tmp_path / "pi0")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "n_action_steps": 3, "num_inference_steps": 2}))
    used = []

    def fake_evaluate(act_fn, *args, **kwargs):   # what the eval would run with, without running it
        used.append((act_fn.replan_steps, act_fn.num_steps))
        return {"success_rate": 0.0}
    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    spec = importlib.util.spec_from_file_location("tools_evaluate", Path(__file__).resolve().parents[1] / "tools" / "evaluate.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    common = dict(checkpoint=str(d), env="metaworld-drawer-open-v3", num_envs=1, device="cpu", out=str(tmp_path / "o.json"))
    tool.main(tool.Args(**common))
    tool.main(tool.Args(**common, replan_steps=5, num_steps=4))
    assert used == [(3, 2), (5, 4)]


def _with_cameras(tmp_path, names):
    """The pi0 fixture with its config.json's image features renamed / reordered to `names`."""
    d = shutil.copytree(FIXTURES / "pi0", tmp_path / "_".join(names))
    cfg = json.loads((d / "config.json").read_text())
    feats = cfg["input_features"]
    cams = {n: feats["observation.images.base"] for n in names}
    cfg["input_features"] = {**{f"observation.images.{n}": f for n, f in cams.items()}, "observation.state": feats["observation.state"]}
    (d / "config.json").write_text(json.dumps(cfg))
    return load_policy(d)[1]


def test_lerobot_cameras_feed_the_image_slots_their_names_say(tmp_path):
    """A LeRobot config listing its wrist camera first gets LIBERO's wrist camera in its first slot (LeRobot stacks
    the config's image features in order): the images it sees are the base-first config's with the env's two
    cameras swapped. On MetaWorld (one scene camera) the wrist slot is left out (black, masked, after the present ones,
    as LeRobot's _preprocess_images places an absent camera)."""
    from common.conventions import camera_order
    _, ref, raw, _ = reference("pi0")
    base_first = _with_cameras(tmp_path, ["image", "wrist_image"])
    wrist_first = _with_cameras(tmp_path, ["wrist_image", "image"])
    for proc in (base_first, wrist_first):
        proc.camera_order = camera_order(proc, "libero-spatial")
    assert (base_first.camera_order, wrist_first.camera_order) == ((0, 1), (1, 0))
    swapped = {**raw, "images": raw["images"][:, ::-1]}
    np.testing.assert_array_equal(wrist_first.observation(raw, "cpu").images, base_first.observation(swapped, "cpu").images)
    assert not torch.equal(wrist_first.observation(raw, "cpu").images, base_first.observation(raw, "cpu").images)
    assert camera_order(wrist_first, "metaworld-drawer-open-v3") == (None, 0)   # the scene camera, then a masked slot
    assert camera_order(_with_cameras(tmp_path, ["image", "image2"]), "libero-goal") == (0, 1)   # LeRobot's LIBERO env


def test_lerobot_cameras_whose_names_do_not_tell_are_one_error_listing_both(tmp_path):
    from common.conventions import camera_order
    from common.errors import UsageError
    for names in (["cam_high", "wrist"], ["image", "top"]):   # unknown; two slots for one camera
        with pytest.raises(UsageError) as err:
            camera_order(_with_cameras(tmp_path, names), "libero-spatial")
        msg = str(err.value)
        assert "\n" not in msg and f"observation.images.{names[0]}" in msg and "robot0_eye_in_hand_image" in msg
