"""Peer fixtures of openpi's π0.5 on LIBERO (issue 25): what openpi's `pi05_libero` policy makes of the
observations its LIBERO client sends, and what it sends back to the env, computed by openpi's OWN transforms.
tests/test_peer_openpi_pi05.py compares pirl's Processor with DATA_CONFIGS["pi05_libero"] to them.

    bash tools/peers/openpi_pi05_libero.sh      # or, in openpi's venv (numpy, pydantic, numpydantic, einops,
    # sentencepiece, pillow; tools/peers/openpi_conventions.py), after tools/peers/tokens_peer.sh's prepare step:
    /work/peers/openpi-venv/bin/python tools/peers/openpi_pi05_libero.py --openpi-src /work/peers/openpi-src/src

Inputs: the 10 observations openpi's examples/libero/main.py sent to its policy server (libero_spatial task 0,
init states 0..9: tests/fixtures/peers/openpi_libero, tools/peers/openpi_libero_client.py; main.py builds the same
element whatever the model, so a π0.5 server receives these), and the shared tiny PaliGemma-like tokenizer
(tests/fixtures/peers/tokens/paligemma_tiny.model). The policy, as policy_config.create_trained_policy and
Policy.infer compose it for the config's TrainConfig (read from training/config.py by ast: LeRobotLiberoDataConfig,
extra_delta_transform False, Pi0Config(pi05=True, action_horizon=10, discrete_state_input=False), so
max_token_len 200 and quantile normalisation):
  inputs   InjectDefaultPrompt(None), LiberoInputs(PI05), Normalize(use_quantiles=True), then the PI05 model
           transforms: ResizeImages(224, 224) (openpi_client 0.1.2's image_tools), TokenizePrompt(
           PaligemmaTokenizer(200), discrete_state_input=False), PadStatesAndActions(32); then Observation.from_dict's
           uint8 -> [-1, 1] conversion (model.py), applied here to the 256 levels (`level_to_float`);
  outputs  {"state": the input's state, "actions": a model chunk (10, 32)} -> Unnormalize(use_quantiles=True),
           LiberoOutputs (the first 7 dims).
Norm stats (openpi's NormStats, asset physical-intelligence/libero's layout): made up around the recorded states,
q01 / q99 from samples. Stand-ins: those of tools/peers/tokens_peer.py's import_openpi (the gs:// tokenizer path
answered with the local model; jax.tree.map, flax.traverse_util, array_typing, ModelType; empty orbax /
transformers / fsq_tokenizer), none in the transforms themselves.
"""
import argparse
import ast
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "tests" / "fixtures" / "peers"
OUT = PEERS / "openpi_pi05_libero"
CONFIG = "pi05_libero"
D = 32   # openpi's Pi0Config.action_dim: PadStatesAndActions


def train_config(src: Path, name: str) -> dict:
    """The TrainConfig(name=...) call of training/config.py: its data factory and keyword literals, the model's."""
    from openpi_conventions import find_train_config
    call = find_train_config((src / "openpi" / "training" / "config.py").read_text(), name, "openpi's config.py")
    kw = {k.arg: k.value for k in call.keywords}
    data = {k.arg: ast.literal_eval(k.value) for k in kw["data"].keywords if isinstance(k.value, ast.Constant)}
    model = {k.arg: ast.literal_eval(k.value) for k in kw["model"].keywords}
    return {"data_factory": kw["data"].func.id, "model_class": ast.unparse(kw["model"].func), "data": data, "model": model}


def image_digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--openpi-src", type=Path, default=Path("/work/peers/openpi-src/src"), help="openpi's src/")
    p.add_argument("--openpi-client", type=Path, default=Path("/work/peers/openpi-client-pkg"),
                   help="a folder holding PyPI openpi-client 0.1.2's openpi_client package")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from tokens_peer import MODEL, import_openpi
    tokenizer_mod, transforms, normalize, ModelType, asked = import_openpi(
        args.openpi_src, PEERS / "tokens" / MODEL, client_dir=args.openpi_client)
    from openpi.policies import libero_policy
    import openpi_client

    cfg = train_config(args.openpi_src, CONFIG)
    assert cfg["data_factory"] == "LeRobotLiberoDataConfig" and cfg["model_class"] == "pi0_config.Pi0Config", cfg
    assert cfg["data"]["extra_delta_transform"] is False and cfg["model"]["pi05"] is True, cfg
    discrete = cfg["model"]["discrete_state_input"]                       # False for pi05_libero
    horizon = cfg["model"]["action_horizon"]                              # 10
    max_len = cfg["model"].get("max_token_len", 200)                      # Pi0Config.__post_init__: 200 for π0.5
    model_type = ModelType.PI05
    use_quantiles = model_type != ModelType.PI0                           # DataConfigFactory.create_base_config

    client = np.load(PEERS / "openpi_libero" / "libero_spatial_task0.npz")
    n = len(client["state"])
    rng = np.random.default_rng(505)
    recorded = client["state"].astype(np.float64)                         # (n, 8)
    s = rng.uniform(recorded.min(0) - 0.1, recorded.max(0) + 0.1, (500, 8))
    a = np.concatenate([rng.normal(0, 0.4, (500, 6)), rng.choice([-1.0, 1.0], (500, 1))], 1)
    stats = {k: normalize.NormStats(mean=x.mean(0), std=x.std(0), q01=np.quantile(x, 0.01, 0),
                                    q99=np.quantile(x, 0.99, 0)) for k, x in (("state", s), ("actions", a))}
    model_out = rng.standard_normal((n, horizon, D)).astype(np.float32)   # one normalised chunk per observation

    # policy_config.create_trained_policy(pi05_libero): no repack at inference, InjectDefaultPrompt(None)
    infer_in = transforms.compose([
        transforms.InjectDefaultPrompt(None),
        libero_policy.LiberoInputs(model_type=model_type),                 # LeRobotLiberoDataConfig.create
        transforms.Normalize(stats, use_quantiles=use_quantiles),
        transforms.InjectDefaultPrompt(None),                              # ModelTransformFactory, PI05 case
        transforms.ResizeImages(224, 224),
        transforms.TokenizePrompt(tokenizer_mod.PaligemmaTokenizer(max_len), discrete_state_input=discrete),
        transforms.PadStatesAndActions(D)])
    infer_out = transforms.compose([transforms.Unnormalize(stats, use_quantiles=use_quantiles),
                                    libero_policy.LiberoOutputs()])
    keys = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
    rows = []
    for i in range(n):
        element = {"observation/image": client["image"][i], "observation/wrist_image": client["wrist_image"][i],
                   "observation/state": client["state"][i], "prompt": str(client["prompt"])}   # main.py's element
        inputs = infer_in({k: np.array(v, copy=True) for k, v in element.items()})   # Policy.infer's copy, then
        out = infer_out({"state": inputs["state"], "actions": model_out[i].copy()})
        rows.append((inputs, out))
    # model.py Observation.from_dict: uint8 images -> [-1, 1] float32, on every level
    levels = np.arange(256, dtype=np.uint8)
    level_to_float = levels.astype(np.float32) / 255.0 * 2.0 - 1.0
    model_py = (args.openpi_src / "openpi" / "models" / "model.py").read_text()
    assert "astype(np.float32) / 255.0 * 2.0 - 1.0" in model_py
    assert all(r[0]["image"][k].dtype == np.uint8 for r in rows for k in keys)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / f"{CONFIG}.npz",
        image_sha256=np.array([image_digest(np.stack([r[0]["image"][k] for r in rows])) for k in keys]),
        image_shapes=np.array([r[0]["image"][k].shape for r in rows[:1] for k in keys]),
        level_to_float=level_to_float,
        image_masks=np.array([[bool(r[0]["image_mask"][k]) for k in keys] for r in rows]),       # (n, 3)
        state=np.stack([r[0]["state"] for r in rows]),                                            # (n, 32)
        tokens=np.stack([r[0]["tokenized_prompt"] for r in rows]).astype(np.int64),               # (n, 200)
        token_masks=np.stack([r[0]["tokenized_prompt_mask"] for r in rows]).astype(bool),
        model_out=model_out, to_env=np.stack([r[1]["actions"] for r in rows]),                    # (n, 10, 7)
        **{f"{k}_{f}": getattr(v, f) for k, v in stats.items() for f in ("mean", "std", "q01", "q99")})
    import importlib.metadata as md
    from openpi_libero_client import has_dist
    client_version = md.version("openpi-client") if has_dist("openpi-client") else openpi_client.__version__
    meta = {"peer": "openpi", "commit": "15a9616", "config": CONFIG, "train_config": cfg, "max_token_len": max_len,
            "use_quantiles": use_quantiles, "openpi_client": client_version, "pillow": md.version("pillow"),
            "sentencepiece": md.version("sentencepiece"), "tokenizer_urls": sorted(set(asked)),
            "observations": "tests/fixtures/peers/openpi_libero/libero_spatial_task0.npz",
            "transforms_py_sha256": hashlib.sha256((args.openpi_src / "openpi/transforms.py").read_bytes()).hexdigest(),
            "libero_policy_py_sha256": hashlib.sha256(
                (args.openpi_src / "openpi/policies/libero_policy.py").read_bytes()).hexdigest()}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{CONFIG}: {n} observations, tokens {rows[0][0]['tokenized_prompt'].shape} "
          f"({int(rows[0][0]['tokenized_prompt_mask'].sum())} used), state {rows[0][0]['state'].shape}, "
          f"image masks {[bool(rows[0][0]['image_mask'][k]) for k in keys]}, to_env {rows[0][1]['actions'].shape}")


if __name__ == "__main__":
    main()
