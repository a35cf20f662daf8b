"""GR00T N1.5's input side (common/eagle.py) against LeRobot 0.5.1's own GR00T processor pipeline run on the
REAL Eagle 2.5 processor files of Isaac-GR00T N1.5 (tests/fixtures/peers/groot_eagle, written by
tools/peers/groot_eagle_fixtures.py in the peer's venv; the files are committed, vocab.json / merges.txt
xz-compressed, so this runs without the peer or a network). Checked: the chat text, input ids and attention
masks (one prompt, and a left-padded batch), pixel values (a 224 px tile, an upsampled and a downsampled
image), the normalised padded state and the un-normalised actions (metadata.json's per-key min_max against
LeRobot's min / max stats). Then a fake real-layout checkpoint (tiny weights, Isaac-GR00T config.json,
experiment_cfg/metadata.json, the real tokenizer) loads through run.load_checkpoint and acts end to end, and
missing / malformed files are one UsageError line naming the file. Last, a LeRobot 0.5.1 GR00T dir (no
metadata.json: LeRobot's own config.json and pre / post processor files with min / max stats, written and loaded
back by LeRobot in tools/peers/groot_eagle_fixtures.py --lerobot-only) loads through run.load_checkpoint, and
our normalised state / un-normalised actions match LeRobot's own; a missing or broken state file is one line
naming it; its cameras feed its images by name (LeRobot's sorted order), an env camera it does not name left out.
An Isaac-GR00T dir's cameras are matched by metadata.json's names too; one listed in another order than the env's
stops the run (its model's order, the data config's video_keys, is not on file)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from common import eagle
from common.errors import UsageError
from helpers import unpack_eagle_files

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "peers" / "groot_eagle"
STATE_KEYS, ACTION_KEYS = {"single_arm": 5, "gripper": 1}, {"single_arm": 4, "gripper": 1}


@pytest.fixture(scope="module")
def ref():
    return load_file(str(FIX / "reference.safetensors")), json.loads((FIX / "reference.json").read_text())


@pytest.fixture(scope="module")
def eagle_dir(tmp_path_factory):
    """The committed Isaac-GR00T Eagle files, vocab.json / merges.txt decompressed."""
    return unpack_eagle_files(tmp_path_factory.mktemp("eagle"))


@pytest.fixture(scope="module")
def tokenizer(eagle_dir):
    return eagle.EagleTokenizer(eagle_dir)


def split(values, keys):
    out, i = {}, 0
    for k, n in keys.items():
        out[k] = values[i:i + n]
        i += n
    return out


def metadata_entry(stats: dict) -> dict:
    """Isaac-GR00T's metadata.json entry holding LeRobot's min / max vectors, split into two keys per modality."""
    entry = {"statistics": {"state": {}, "action": {}}, "modalities": {"video": {"cam0": {"resolution": [224, 224],
             "channels": 3, "fps": 20.0}}, "state": {}, "action": {}}, "embodiment_tag": "new_embodiment"}
    for modality, lerobot_key, keys in (("state", "observation.state", STATE_KEYS), ("action", "action", ACTION_KEYS)):
        lo, hi = split(stats[lerobot_key]["min"], keys), split(stats[lerobot_key]["max"], keys)
        for k, n in keys.items():
            entry["statistics"][modality][k] = {"min": lo[k], "max": hi[k], "mean": [0.0] * n, "std": [1.0] * n,
                                                "q01": lo[k], "q99": hi[k]}
            entry["modalities"][modality][k] = {"absolute": True, "rotation_type": None, "shape": [n], "continuous": True}
    return entry


# ---------------------------------------------------------------------------------------------- parity
def test_chat_text_and_input_ids_match_the_peer(ref, tokenizer):
    r, meta = ref
    for k, o in enumerate(meta["observations"]):
        expanded = meta["texts"][k]
        for i in range(1, o["cameras"] + 1):
            expanded = expanded.replace(f"<image-{i}>", f"<image {i}><img>{'<IMG_CONTEXT>' * 256}</img>")
        assert tokenizer.chat_text(o["instruction"], o["cameras"]) == expanded
        L = r[f"input_ids_{k}"].shape[1]
        ids, mask = tokenizer.tokenize(o["instruction"], o["cameras"], L)
        assert np.array_equal(ids, r[f"input_ids_{k}"][0].numpy())
        assert np.array_equal(mask, r[f"attention_mask_{k}"][0].numpy().astype(bool))
        assert (ids == tokenizer.image_token_id).sum() == 256 * o["cameras"]


def test_left_padding_matches_the_peers_batch(ref, tokenizer):
    r, meta = ref
    L = r["batch_input_ids"].shape[1]
    rows = [tokenizer.tokenize(o["instruction"], o["cameras"], L) for o in meta["observations"][1:]]
    assert np.array_equal(np.stack([i for i, _ in rows]), r["batch_input_ids"].numpy())
    assert np.array_equal(np.stack([m for _, m in rows]), r["batch_attention_mask"].numpy().astype(bool))
    assert (r["batch_attention_mask"] == 0).any()   # the batch was padded


def test_pixel_values_match_the_peer_exactly(ref, eagle_dir):
    r, meta = ref
    images = eagle.EagleImages(eagle_dir)
    for k, o in enumerate(meta["observations"]):
        ours = images(r[f"images_{k}"][0].numpy())
        assert ours.shape == r[f"pixel_values_{k}"].shape == (o["cameras"], 3, 224, 224)
        assert torch.equal(ours, r[f"pixel_values_{k}"]), (k, (ours - r[f"pixel_values_{k}"]).abs().max())


def test_state_normalisation_and_action_unnormalisation_match_the_peer(ref, eagle_dir):
    from common.groot import make_config
    r, meta = ref
    config = make_config("tiny-groot", state_dim=meta["max_state_dim"], action_dim=meta["max_action_dim"],
                         num_cameras=2, max_token_len=600)
    processor = eagle.EagleProcessor(eagle_dir, metadata_entry(meta["stats"]), "new_embodiment", config)
    for k, o in enumerate(meta["observations"]):
        raw = {"images": r[f"images_{k}"].numpy(), "state": r[f"raw_state_{k}"].numpy(), "instruction": [o["instruction"]]}
        obs = processor.observation(raw, "cpu")
        peer = r[f"state_{k}"].reshape(1, -1)
        assert obs.state.shape == peer.shape == (1, meta["max_state_dim"])
        assert torch.allclose(obs.state, peer, atol=1e-6, rtol=0), (obs.state - peer).abs().max()
        assert torch.equal(obs.images[0], r[f"pixel_values_{k}"])
        assert torch.equal(obs.tokens[0, -r[f"input_ids_{k}"].shape[1]:], r[f"input_ids_{k}"][0])
    ours = processor.actions_to_env(r["model_actions"], meta["env_action_dim"])
    assert np.allclose(ours, r["post_actions"].numpy(), atol=1e-6, rtol=0), np.abs(ours - r["post_actions"].numpy()).max()
    back = processor.actions_to_model(ours)[:, :meta["env_action_dim"]]
    keep = r["model_actions"][:, :meta["env_action_dim"]]
    varying = torch.tensor([lo != hi for lo, hi in zip(meta["stats"]["action"]["min"], meta["stats"]["action"]["max"])])
    assert torch.allclose(back[:, varying], keep[:, varying], atol=1e-5)
    assert (back[:, ~varying] == 0).all()           # min == max: 0, as both peers


def test_other_isaac_gr00t_modes():
    entry = {"statistics": {"state": {"a": {"q01": [0.0, 1.0], "q99": [2.0, 1.0]}, "b": {"mean": [1.0], "std": [2.0]},
                                      "c": {}}},
             "modalities": {"state": {"a": {"shape": [2]}, "b": {"shape": [1]}, "c": {"shape": [1]}}}}
    norm = eagle.GrootNorm(entry, "state", {"state.a": "q99", "state.b": "mean_std", "state.c": "binary"})
    y = norm.normalize(torch.tensor([[3.0, 5.0, 3.0, 0.7]]))
    # q99: clipped to [-1, 1], q01 == q99 keeps x (clipped too, as Isaac-GR00T clamps after); (3 - 1) / 2; > 0.5
    assert torch.equal(y, torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(norm.normalize(torch.tensor([[1.0, 0.5, 1.0, 0.2]])), torch.tensor([[0.0, 0.5, 0.0, 0.0]]))
    with pytest.raises(UsageError, match="Isaac-GR00T's are"):
        eagle.GrootNorm(entry, "state", {"state.a": "quantile"})


# ---------------------------------------------------------------------------------------------- a real-layout dir
def write_fake_checkpoint(root: Path, eagle_dir: Path, ref_meta: dict) -> tuple[Path, Path]:
    """Tiny random weights with Qwen's real vocabulary size, a config.json as Isaac-GR00T writes it (no pirl
    fields), experiment_cfg/metadata.json, and a processor dir: the real tokenizer files, the tiny model's
    image size / tokens per image in the image-processor configs, a tiny Eagle config.json."""
    from common.groot import GrootPolicy, make_config
    c = make_config("tiny-groot", vocab_size=151680)
    torch.manual_seed(0)
    policy = GrootPolicy(c)
    ckpt, proc = root / "ckpt", root / "eagle_tiny"
    (ckpt / "experiment_cfg").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({
        "model_type": "gr00t_n1_5", "architectures": ["GR00T_N1_5"], "action_dim": c.action_dim,
        "action_horizon": c.action_horizon, "compute_dtype": "bfloat16",
        "backbone_cfg": {"select_layer": c.llm_depth, "project_to_dim": None, "tune_llm": False, "tune_visual": True},
        "action_head_cfg": {"action_dim": c.action_dim, "action_horizon": c.action_horizon, "max_state_dim": c.state_dim,
                            "num_inference_timesteps": 4, "noise_beta_alpha": 1.5, "noise_beta_beta": 1.0, "noise_s": 0.999,
                            "num_timestep_buckets": 1000,
                            "diffusion_model_cfg": {"attention_head_dim": c.dit_head_dim, "num_attention_heads": c.dit_heads,
                                                    "dropout": 0.2, "final_dropout": True, "interleave_self_attention": True,
                                                    "norm_type": "ada_norm", "positional_embeddings": None},
                            "vl_self_attention_cfg": {"attention_head_dim": c.vl_head_dim, "num_attention_heads": c.vl_heads,
                                                      "dropout": 0.2, "final_dropout": True, "positional_embeddings": None}}}))
    (ckpt / "experiment_cfg" / "metadata.json").write_text(json.dumps({"new_embodiment": metadata_entry(ref_meta["stats"])}))
    shutil.copytree(eagle_dir, proc)
    pre = json.loads((proc / "preprocessor_config.json").read_text())
    pre["size"] = {"height": c.image_size, "width": c.image_size}
    (proc / "preprocessor_config.json").write_text(json.dumps(pre))
    pc = json.loads((proc / "processor_config.json").read_text())
    (proc / "processor_config.json").write_text(json.dumps({**pc, "tokens_per_tile": c.image_tokens}))
    (proc / "config.json").write_text(json.dumps({
        "model_type": "eagle_2_5_vl", "downsample_ratio": 0.5, "select_layer": -1, "image_token_index": 151669,
        "vision_config": {"num_attention_heads": c.vision_heads, "layer_norm_eps": 1e-6},
        "text_config": {"num_attention_heads": c.llm_heads, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
                        "max_position_embeddings": c.max_position_embeddings}}))
    return ckpt, proc


@pytest.fixture(scope="module")
def fake(tmp_path_factory, eagle_dir, ref):
    return write_fake_checkpoint(tmp_path_factory.mktemp("real_layout"), eagle_dir, ref[1])


def raw_obs(n=2, seed=0, size=40):
    rng = np.random.default_rng(seed)
    return {"images": rng.integers(0, 256, (n, 1, size, size, 3), dtype=np.uint8),
            "state": rng.uniform(-1, 1, (n, 6)).astype(np.float32),
            "instruction": ["open the drawer", "push the button and then close the drawer"][:n]}


def test_a_real_layout_checkpoint_loads_and_acts_end_to_end(fake, monkeypatch, tmp_path):
    from common.checkpoint import save_policy
    from common.run import load_checkpoint
    ckpt, proc = fake
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    policy, processor = load_checkpoint(str(ckpt))
    assert isinstance(policy, eagle.EagleGrootPolicy) and isinstance(processor, eagle.EagleProcessor)
    c = policy.config
    assert (c.num_cameras, c.embodiment, policy.image_token_index) == (1, 31, 151669)
    obs = processor.observation(raw_obs(), "cpu")
    assert obs.tokens.shape == (2, c.max_token_len) and not obs.token_masks[:, 0].any()   # left-padded, fixed length
    # the Observation is GR00T's own input: encode == encode_tokens on the same ids / mask / pixels / state
    direct = policy.encode_tokens(obs.tokens, obs.token_masks, obs.images.flatten(0, 1), obs.state)
    assert torch.equal(policy.encode(obs).vl, direct.vl)
    # one row alone gives the numbers it gives in a batch (fixed-length padding)
    alone = processor.observation({k: v[1:] for k, v in raw_obs().items()}, "cpu")
    assert torch.allclose(policy.encode(alone).vl[0], direct.vl[1], atol=1e-5)
    noise = torch.randn(2, c.action_horizon, c.action_dim, generator=torch.Generator().manual_seed(0))
    actions = processor.actions_to_env(policy.sample_actions(obs, noise=noise), 5)
    assert actions.shape == (2, c.action_horizon, 5) and np.isfinite(actions).all()
    # saved (as the scripts save checkpoints) and loaded again: self-contained, the same actions
    monkeypatch.delenv(eagle.EAGLE_DIR_ENV)
    save_policy(tmp_path / "saved", policy, processor)
    assert (tmp_path / "saved" / eagle.SAVED_DIR / "vocab.json").is_file() and not (tmp_path / "saved" / "tokenizer.model").exists()
    policy2, processor2 = load_checkpoint(str(tmp_path / "saved"))
    again = processor2.actions_to_env(policy2.sample_actions(processor2.observation(raw_obs(), "cpu"), noise=noise), 5)
    assert np.allclose(again, actions, atol=1e-6)


# ---------------------------------------------------------------------------------------------- unhappy paths
def one_line_error(ckpt, monkeypatch, tmp_path, eagle_env=None):
    from common.run import load_checkpoint
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "no_lerobot_home"))
    if eagle_env is None:
        monkeypatch.delenv(eagle.EAGLE_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(eagle_env))
    with pytest.raises(UsageError) as err:
        load_checkpoint(str(ckpt))
    line = str(err.value)
    assert "\n" not in line
    return line


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_no_eagle_files_anywhere_lists_where_it_looked(fake, monkeypatch, tmp_path):
    ckpt, _ = fake
    line = one_line_error(ckpt, monkeypatch, tmp_path)
    assert "no Eagle 2.5 processor files" in line and str(ckpt) in line and "no_lerobot_home" in line
    assert eagle.EAGLE_DIR_ENV in line and "eagle2_hg_model" in line


def test_missing_or_malformed_processor_files_name_the_file(fake, monkeypatch, tmp_path):
    ckpt, proc = fake
    missing = copy_of(proc, tmp_path / "missing")
    (missing / "merges.txt").unlink()
    line = one_line_error(ckpt, monkeypatch, tmp_path, missing)
    assert "merges.txt" in line and str(missing) in line
    for name, text in (("processor_config.json", "{not json"), ("tokenizer_config.json", '{"tokenizer_class": "GPT2Tokenizer"}'),
                       ("chat_template.json", "{}"), ("vocab.json", '{"a": 0}')):
        broken = copy_of(proc, tmp_path / f"broken_{name}")
        (broken / name).write_text(text)
        line = one_line_error(ckpt, monkeypatch, tmp_path, broken)
        assert str(broken) in line and (name in line or name == "vocab.json"), line


def test_missing_or_malformed_metadata_names_the_file(fake, monkeypatch, tmp_path):
    ckpt, proc = fake
    for case in ("missing", "garbage", "no_min", "other_tag"):
        broken = copy_of(ckpt, tmp_path / case)
        meta = broken / "experiment_cfg" / "metadata.json"
        if case == "missing":
            meta.unlink()
        elif case == "garbage":
            meta.write_text("[1, 2")
        elif case == "no_min":
            data = json.loads(meta.read_text())
            del data["new_embodiment"]["statistics"]["action"]["gripper"]["min"]
            meta.write_text(json.dumps(data))
        else:
            data = json.loads(meta.read_text())
            meta.write_text(json.dumps({"gr1": data["new_embodiment"], "so100": data["new_embodiment"]}))
        line = one_line_error(broken, monkeypatch, tmp_path, proc)
        assert "metadata.json" in line, line
        if case == "no_min":
            assert "action.gripper" in line and "min" in line
        if case == "other_tag":
            assert "embodiment" in line and "gr1" in line


def test_a_script_reports_missing_eagle_files_in_one_line(fake, tmp_path):
    ckpt, _ = fake
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_LEROBOT_HOME": str(tmp_path / "none"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "flow_sde_ppo.py"), "--env", "metaworld-button-press-topdown-v3",
                           "--checkpoint", str(ckpt), "--run-root", str(tmp_path / "runs")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr[-3000:]
    assert "Eagle" in errors[0] and eagle.EAGLE_DIR_ENV in errors[0]


# ---------------------------------------------------------------------------------------------- a LeRobot 0.5.1 dir
LEROBOT_DIR = FIX / "lerobot"        # LeRobot's own config.json + processor files (tools/peers/groot_eagle_fixtures.py)
PRE_STATE = "policy_preprocessor_step_2_groot_pack_inputs_v3.safetensors"
POST_STATE = "policy_postprocessor_step_0_groot_action_unpack_unnormalize_v1.safetensors"


@pytest.fixture(scope="module")
def lerobot_ref():
    return load_file(str(FIX / "lerobot_reference.safetensors")), json.loads((FIX / "lerobot_reference.json").read_text())


@pytest.fixture(scope="module")
def lerobot_ckpt(tmp_path_factory, fake):
    """A LeRobot-layout GR00T dir: LeRobot's committed files, the fake's tiny weights under LeRobot's
    `_groot_model.` prefix, config.json's base_model_path pointed at the fake's Isaac-GR00T dir (the head's config);
    no experiment_cfg/metadata.json."""
    ckpt, proc = fake
    d = copy_of(LEROBOT_DIR, tmp_path_factory.mktemp("lerobot_layout") / "ckpt")
    save_file({"_groot_model." + k: v for k, v in load_file(str(ckpt / "model.safetensors")).items()}, str(d / "model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["type"] == "groot"
    (d / "config.json").write_text(json.dumps({**cfg, "base_model_path": str(ckpt)}, indent=4))
    return d, proc


def test_a_lerobot_dir_runs_with_its_own_stats_as_lerobot_does(lerobot_ckpt, lerobot_ref, monkeypatch):
    from common.groot import EMBODIMENTS
    from common.run import load_checkpoint
    d, proc = lerobot_ckpt
    r, meta = lerobot_ref
    assert not (d / eagle.METADATA).exists()
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    policy, processor = load_checkpoint(str(d))
    c = policy.config
    assert isinstance(processor, eagle.EagleProcessor) and processor.tag == meta["embodiment_tag"] == "so100"
    assert c.embodiment == EMBODIMENTS["so100"] and c.num_cameras == meta["cameras"] == 2
    assert c.state_dim == meta["max_state_dim"] and c.action_dim == meta["max_action_dim"]
    B = r["raw_state"].shape[0]
    images = np.random.default_rng(0).integers(0, 256, (B, 2, 32, 32, 3), dtype=np.uint8)
    obs = processor.observation({"images": images, "state": r["raw_state"].numpy(), "instruction": ["open the drawer"] * B}, "cpu")
    peer = r["state"].reshape(B, -1)              # LeRobot's pack step, loaded back from the files: (B, max_state_dim)
    assert obs.state.shape == peer.shape == (B, meta["max_state_dim"])
    assert torch.allclose(obs.state, peer, atol=1e-6, rtol=0), (obs.state - peer).abs().max()
    # the check has teeth: LeRobot's numbers are far from the raw state and from [-1, 1]-clipped ones
    assert (peer[:, :meta["env_state_dim"]] - r["raw_state"]).abs().max() > 0.1 and peer.abs().max() > 1.05
    ours = processor.actions_to_env(r["model_actions"], meta["env_action_dim"])
    assert np.allclose(ours, r["post_actions"].numpy(), atol=1e-6, rtol=0), np.abs(ours - r["post_actions"].numpy()).max()
    assert np.abs(r["post_actions"].numpy() - r["model_actions"][:, :meta["env_action_dim"]].numpy()).max() > 0.1
    # and it acts end to end
    noise = torch.randn(B, c.action_horizon, c.action_dim, generator=torch.Generator().manual_seed(0))
    actions = processor.actions_to_env(policy.sample_actions(obs, noise=noise), meta["env_action_dim"])
    assert actions.shape == (B, c.action_horizon, meta["env_action_dim"]) and np.isfinite(actions).all()


def test_a_lerobot_dir_with_a_missing_or_broken_state_file_names_it(lerobot_ckpt, monkeypatch, tmp_path):
    d, proc = lerobot_ckpt
    cases = {"missing": (PRE_STATE, None), "garbage": (POST_STATE, b"\x00not safetensors"),
             "no_min": (PRE_STATE, "observation.state.min"), "no_action": (POST_STATE, "action.max")}
    for case, (name, change) in cases.items():
        broken = copy_of(d, tmp_path / case)
        if change is None:
            (broken / name).unlink()
        elif isinstance(change, bytes):
            (broken / name).write_bytes(change)
        else:
            st = load_file(str(broken / name))
            del st[change]
            save_file(st, str(broken / name))
        line = one_line_error(broken, monkeypatch, tmp_path, proc)
        assert str(broken / name) in line, (case, line)
        if case.startswith("no_"):
            assert change.rsplit(".", 1)[0] in line, line
    # a pipeline file without the pack step is named too
    broken = copy_of(d, tmp_path / "no_step")
    pre = json.loads((broken / "policy_preprocessor.json").read_text())
    pre["steps"] = [s for s in pre["steps"] if s.get("registry_name") != "groot_pack_inputs_v3"]
    (broken / "policy_preprocessor.json").write_text(json.dumps(pre))
    line = one_line_error(broken, monkeypatch, tmp_path, proc)
    assert "policy_preprocessor.json" in line and "groot_pack_inputs_v3" in line, line


# ---------------------------------------------------------------------------------------------- cameras by name
def lerobot_with_cameras(src: Path, dst: Path, names: list) -> Path:
    """A copy of the LeRobot GR00T dir whose config.json lists image features `names`, in that order."""
    d = copy_of(src, dst)
    cfg = json.loads((d / "config.json").read_text())
    feats = cfg["input_features"]
    cams = {f"observation.images.{n}": feats["observation.images.cam0"] for n in names}
    cfg["input_features"] = {**cams, "observation.state": feats["observation.state"]}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def libero_obs(n=2, seed=0, size=40):
    """raw_obs with LIBERO's two cameras: agent view, then wrist."""
    images = np.random.default_rng(seed + 1).integers(0, 256, (n, 2, size, size, 3), dtype=np.uint8)
    return {**raw_obs(n, seed, size), "images": images}


def test_a_lerobot_groots_cameras_feed_its_images_by_name(lerobot_ckpt, monkeypatch, tmp_path, capsys):
    """A LeRobot GR00T whose cameras sort wrist first ('cam_wrist' < 'top': LeRobot 0.5.1 stacks the image keys
    sorted), listed either way in config.json, gets LIBERO's wrist camera as its first image: what it sees equals the
    env-order input with the two cameras swapped."""
    from common.conventions import camera_order
    from common.run import load_checkpoint
    d, proc = lerobot_ckpt
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    raw = libero_obs()
    swapped = {**raw, "images": raw["images"][:, ::-1]}
    for names in (["top", "cam_wrist"], ["cam_wrist", "top"]):
        _, processor = load_checkpoint(str(lerobot_with_cameras(d, tmp_path / "_".join(names), names)))
        processor.camera_order = camera_order(processor, "libero-spatial")
        assert processor.camera_order == (1, 0)
        ours = processor.observation(raw, "cpu")
        processor.camera_order = None   # by position, as before issue 25
        assert torch.equal(ours.images, processor.observation(swapped, "cpu").images)
        assert not torch.equal(ours.images, processor.observation(raw, "cpu").images)
    assert capsys.readouterr().out.count("unused") == 0


def test_a_lerobot_groot_naming_one_of_two_env_cameras_sees_that_one_and_fits(lerobot_ckpt, monkeypatch, tmp_path,
                                                                                capsys):
    """A one-camera LeRobot GR00T ('image': LIBERO's agent view) on LIBERO: the wrist camera unused (one line), the
    model sees the agent view alone and fits the env."""
    from common.conventions import camera_order
    from common.evaluate import check_policy_fits_env
    from common.run import load_checkpoint
    d, proc = lerobot_ckpt
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    policy, processor = load_checkpoint(str(lerobot_with_cameras(d, tmp_path / "one", ["image"])))
    assert policy.config.num_cameras == 1
    processor.camera_order = camera_order(processor, "libero-spatial")
    assert processor.camera_order == (0,) and "robot0_eye_in_hand_image unused" in capsys.readouterr().out
    libero = SimpleNamespace(state_dim=6, action_dim=processor.action_norm.dim, num_cameras=2)
    check_policy_fits_env(policy, processor, libero, 256, "libero-spatial")
    raw = libero_obs()
    ours = processor.observation(raw, "cpu")
    processor.camera_order = None
    alone = processor.observation({**raw, "images": raw["images"][:, :1]}, "cpu")
    assert torch.equal(ours.images, alone.images) and torch.equal(ours.tokens, alone.tokens)


# Isaac-GR00T's layout: experiment_cfg/metadata.json names its dataset's cameras (modalities.video, in its
# meta/modality.json's order); its model took them in its data config's video_keys order, which is not on file
def isaac_with_cameras(src: Path, dst: Path, names: list) -> Path:
    """A copy of the Isaac-GR00T layout fake whose metadata.json lists video keys `names`, in that order."""
    d = copy_of(src, dst)
    meta = d / "experiment_cfg" / "metadata.json"
    data = json.loads(meta.read_text())
    video = data["new_embodiment"]["modalities"]["video"]
    data["new_embodiment"]["modalities"]["video"] = {n: video["cam0"] for n in names}
    meta.write_text(json.dumps(data))
    return d


def test_an_isaac_groot_naming_one_of_two_env_cameras_sees_that_one_and_fits(fake, monkeypatch, tmp_path, capsys):
    """A one-camera Isaac-GR00T checkpoint on LIBERO sees the camera its metadata.json names ('image': the agent
    view, 'wrist_image': the wrist), the other unused in one line, and fits the env (by position it did not: two
    cameras in the env, one in the model)."""
    from common.conventions import camera_order
    from common.evaluate import check_policy_fits_env
    from common.run import load_checkpoint
    ckpt, proc = fake
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    raw = libero_obs()
    for name, cam, other in (("image", 0, "robot0_eye_in_hand_image"), ("wrist_image", 1, "agentview_image")):
        policy, processor = load_checkpoint(str(isaac_with_cameras(ckpt, tmp_path / name, [name])))
        assert processor.provenance.source_format == "isaac-gr00t" and policy.config.num_cameras == 1
        processor.camera_order = camera_order(processor, "libero-spatial")
        out = capsys.readouterr().out.splitlines()
        assert processor.camera_order == (cam,), processor.camera_order
        assert len(out) == 1 and f"{other} unused" in out[0] and "metadata.json" in out[0] and name in out[0], out
        libero = SimpleNamespace(state_dim=6, action_dim=processor.action_norm.dim, num_cameras=2)
        check_policy_fits_env(policy, processor, libero, 256, "libero-spatial")
        ours = processor.observation(raw, "cpu")
        processor.camera_order = None
        alone = processor.observation({**raw, "images": raw["images"][:, cam:cam + 1]}, "cpu")
        assert torch.equal(ours.images, alone.images) and torch.equal(ours.tokens, alone.tokens)
        with pytest.raises(UsageError) as err:   # by position, as before: refused
            check_policy_fits_env(policy, processor, libero, 256, "libero-spatial")
        assert "2 camera(s) in the env but 1 in the model" in str(err.value)
    # RLinf's GR00T ManiSkill camera (its data config's video.ego_view) is a scene camera: MetaWorld's corner2 feeds it
    _, processor = load_checkpoint(str(isaac_with_cameras(ckpt, tmp_path / "ego", ["ego_view"])))
    assert camera_order(processor, "metaworld-drawer-open-v3") == (0,) and capsys.readouterr().out == ""
    from common.conventions import _camera_role   # the data configs' own spelling, video.<name>, reads the same
    assert [_camera_role(f"video.{n}") for n in ("image", "wrist_image", "ego_view")] == ["scene", "wrist", "scene"]


def test_an_isaac_groot_in_the_envs_order_sees_both_cameras_in_it(fake, monkeypatch, tmp_path, capsys):
    """metadata.json's 'image', 'wrist_image' (Isaac-GR00T's LIBERO example names, its data config's order) on LIBERO:
    both cameras, in the env's order, nothing said."""
    from common.conventions import camera_order
    from common.run import load_checkpoint
    ckpt, proc = fake
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    policy, processor = load_checkpoint(str(isaac_with_cameras(ckpt, tmp_path / "two", ["image", "wrist_image"])))
    assert policy.config.num_cameras == 2
    processor.camera_order = camera_order(processor, "libero-goal")
    assert processor.camera_order == (0, 1) and capsys.readouterr().out == ""
    raw = libero_obs()
    ours = processor.observation(raw, "cpu")
    processor.camera_order = None
    assert torch.equal(ours.images, processor.observation(raw, "cpu").images)


def test_an_isaac_groot_sees_its_data_configs_crop_renders_at_its_resolution_and_keeps_both(fake, monkeypatch, tmp_path,
                                                                                              capsys):
    """An Isaac-GR00T checkpoint with no data config named: Isaac's data configs' 95% center crop and bilinear resize
    before Eagle's processor (said in one line), the env rendered at metadata.json's resolution; a pirl save records
    the choice and loads back with it; --data-config pirl feeds the render as it is."""
    from common.checkpoint import save_policy
    from common.run import load_for_env
    ckpt, proc = fake
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    env = "metaworld-drawer-open-v3"
    policy, processor, _ = load_for_env(str(ckpt), env)
    assert processor.data_config.name == "isaac_gr00t" and "isaac_gr00t_no_crop" in capsys.readouterr().out
    assert processor.data_config.env_options(env, policy.config.image_size)["image_size"] == 224   # metadata.json's
    raw = raw_obs(size=224)
    cropped = processor.observation(raw, "cpu").images
    size = policy.config.image_size   # the tile: VideoResize's 224 at N1.5's size
    expect = processor.images(eagle.isaac_eval_video(raw["images"][:, 0], 0.95, size))
    assert torch.equal(cropped[:, 0], expect)
    assert not torch.equal(cropped[:, 0], processor.images(raw["images"][:, 0]))   # the crop changed the input
    save_policy(tmp_path / "saved", policy, processor)
    _, again, _ = load_for_env(str(tmp_path / "saved"), env)
    assert again.data_config.name == "isaac_gr00t" and torch.equal(again.observation(raw, "cpu").images, cropped)
    _, plain, _ = load_for_env(str(ckpt), env, "pirl")
    assert torch.equal(plain.observation(raw, "cpu").images[:, 0], processor.images(raw["images"][:, 0]))


def test_isaac_eval_video_is_a_center_crop_then_a_bilinear_resize():
    """Closed forms: a scale-1 crop to the same size is the identity; a constant image stays constant (up to the
    truncation); the 95% crop of 256 px keeps rows / columns 6..248 (torchvision's round((256 - 243) / 2) = 6)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    assert np.array_equal(eagle.isaac_eval_video(img, 1.0, 224), img)
    flat = eagle.isaac_eval_video(np.full((1, 256, 256, 3), 200, np.uint8), 0.95, 224)
    assert set(np.unique(flat)) <= {199, 200}   # VideoToNumpy truncates x * 255
    marked = np.zeros((1, 256, 256, 3), np.uint8)
    marked[:, 6:249, 6:249] = 255   # exactly the crop window: all white after the crop
    assert (eagle.isaac_eval_video(marked, 0.95, 224) >= 254).all()
    marked[:, 6, :] = 0   # a black row inside the window shows
    assert eagle.isaac_eval_video(marked, 0.95, 224)[:, 0].max() < 200


def test_an_isaac_groot_named_wrist_first_stops_the_run_in_one_line_instead_of_a_guess(fake, monkeypatch, tmp_path):
    """A two-camera Isaac-GR00T checkpoint whose metadata.json lists the wrist camera first: its model took its
    cameras in its data config's order, which the checkpoint does not record, so neither the env's order (a silent
    swap if the data config was wrist first) nor metadata.json's (a silent swap if it was not) is taken: the run
    stops in one line naming both sides."""
    from common.run import load_for_env
    ckpt, proc = fake
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    wrist_first = isaac_with_cameras(ckpt, tmp_path / "wrist_first", ["wrist_image", "image"])
    with pytest.raises(UsageError) as err:
        load_for_env(str(wrist_first), "libero-spatial")
    line = str(err.value)
    assert "\n" not in line and "video_keys" in line and "['wrist_image', 'image']" in line, line
    assert "['agentview_image', 'robot0_eye_in_hand_image']" in line and "metadata.json" in line, line


def test_an_isaac_groot_camera_name_that_cannot_be_matched_is_one_error_line(fake, monkeypatch, tmp_path):
    """The fake's own 'cam0' (no role) and a wrist camera on MetaWorld (none there; GR00T has no image masks) stop
    the run in one line naming the checkpoint's keys and the env's cameras, where by position both ran."""
    from common.run import load_for_env
    ckpt, proc = fake
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    for d, env, name in ((ckpt, "libero-spatial", "cam0"),
                         (isaac_with_cameras(ckpt, tmp_path / "wrist", ["wrist_image"]), "metaworld-drawer-open-v3",
                          "wrist_image")):
        with pytest.raises(UsageError) as err:
            load_for_env(str(d), env)
        line = str(err.value)
        assert "\n" not in line and f"['{name}']" in line and "metadata.json" in line and "Isaac-GR00T" in line, line
        assert "agentview_image" in line if env.startswith("libero") else "corner2" in line, line



def test_one_camera_whose_name_tells_no_role_feeds_an_env_with_one_camera(fake, lerobot_ckpt, monkeypatch, tmp_path,
                                                                           capsys):
    """One camera on each side leaves nothing to match: the fake's 'cam0' (Isaac-GR00T layout) and a LeRobot GR00T's
    observation.images.cam0 take MetaWorld's one camera, where on LIBERO (two cameras) 'cam0' is refused (above)."""
    from common.run import load_for_env
    ckpt, proc = fake
    monkeypatch.setenv(eagle.EAGLE_DIR_ENV, str(proc))
    _, isaac, _ = load_for_env(str(ckpt), "metaworld-drawer-open-v3")
    assert isaac.provenance.source_format == "isaac-gr00t" and isaac.camera_order == (0,)
    lerobot_dir = lerobot_with_cameras(lerobot_ckpt[0], tmp_path / "lerobot_cam0", ["cam0"])
    _, lerobot, _ = load_for_env(str(lerobot_dir), "metaworld-drawer-open-v3")
    assert lerobot.provenance.source_format == "lerobot" and lerobot.camera_order == (0,)
    assert capsys.readouterr().out.count("unused") == 0
    with pytest.raises(UsageError, match="cannot tell which libero-spatial camera"):
        load_for_env(str(lerobot_dir), "libero-spatial")