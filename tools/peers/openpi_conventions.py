"""Peer fixtures of openpi's LIBERO data conventions (issue 25), computed by openpi's OWN transform code:
what its `pi0_libero` / `pi05_libero` output transforms send to the env for one model output chunk, and what its
input transforms make of env actions (the SFT targets), on 12 LIBERO-like states. tests/test_conventions.py
compares common/processor.py (with common/conventions.py's data configs) to them.

Runs in its own venv (never the project's): numpy, pydantic + numpydantic (openpi's normalize.py), einops
(openpi's libero_policy.py), and openpi's source:

    python3 -m venv /work/peers/openpi-venv
    /work/peers/openpi-venv/bin/pip install numpy pydantic numpydantic einops
    git --git-dir=<openpi git dir> --work-tree=/work/peers/openpi-src checkout HEAD -- src/openpi
    /work/peers/openpi-venv/bin/python tools/peers/openpi_conventions.py --openpi-src /work/peers/openpi-src/src

openpi's code, unmodified: transforms.py (Group.push, LiberoInputs' and the config's DeltaActions /
AbsoluteActions(make_bool_mask(6, -1)), Normalize / Unnormalize, PadStatesAndActions), policies/libero_policy.py
(LiberoInputs / LiberoOutputs), shared/normalize.py (NormStats). Each config's `extra_delta_transform` and the
model type are read from training/config.py's own source (its TrainConfig(name=...) calls, by ast), and the
transforms are composed as LeRobotLiberoDataConfig.create, policy_config.create_trained_policy and Policy.infer
compose them (inference: outputs = {"state": the transformed input's state, "actions": the model's}).
Stand-ins for modules transforms.py imports but these transforms do not use (jax and flax are not installed):
  * `jax`: `jax.tree.map` (RepackTransform only) as a recursive map over dicts / lists;
  * `flax.traverse_util`: flatten_dict / unflatten_dict with `sep` (apply_tree), written out here;
  * `openpi_client.image_tools` (ResizeImages only), `openpi.models.tokenizer` (TokenizePrompt only): empty;
  * `openpi.shared.array_typing`: the PyTree / Array type aliases (subscripting gives typing.Any);
  * `openpi.models.model`: its ModelType enum only (taken from model.py's source by ast).
"""
import argparse
import ast
import enum
import sys
import types
import typing
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "peers" / "openpi_conventions"
CONFIGS = ("pi0_libero", "pi05_libero")
N, H, D, A, S = 12, 10, 32, 7, 8   # states, horizon, the model's padded action dim, LIBERO action / state dims


def _stub(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


def _flatten_dict(tree, sep="/", prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten_dict(v, sep, prefix + (k,)))
        else:
            out[sep.join(prefix + (k,))] = v
    return out


def _unflatten_dict(flat, sep="/"):
    tree = {}
    for key, v in flat.items():
        *parents, leaf = key.split(sep)
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def _tree_map(f, tree, *rest):
    if isinstance(tree, dict):
        return {k: _tree_map(f, v, *(r[k] for r in rest)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_tree_map(f, v, *(r[i] for r in rest)) for i, v in enumerate(tree))
    return f(tree, *rest)


def import_openpi(src: Path):
    _stub("jax", tree=types.SimpleNamespace(map=_tree_map))
    _stub("flax")
    sys.modules["flax"].traverse_util = _stub("flax.traverse_util", flatten_dict=_flatten_dict,
                                              unflatten_dict=_unflatten_dict)
    _stub("openpi_client")
    sys.modules["openpi_client"].image_tools = _stub("openpi_client.image_tools")
    sys.path.insert(0, str(src))
    import openpi   # noqa: F401  (the package's own __init__)
    import openpi.models
    import openpi.shared
    openpi.models.tokenizer = _stub("openpi.models.tokenizer", PaligemmaTokenizer=object, FASTTokenizer=object)
    model_type = stub_array_typing_and_model(src)
    from openpi import transforms
    from openpi.policies import libero_policy
    from openpi.shared import normalize
    return transforms, libero_policy, normalize, model_type


def stub_array_typing_and_model(src: Path):
    """openpi.shared.array_typing (jaxtyping) and openpi.models.model (jax / flax) as stand-ins, the latter holding
    only ModelType, run from openpi's own source; returns ModelType. Call after `import openpi.models, openpi.shared`."""
    import openpi.models
    import openpi.shared
    any_of = type("AnyOf", (), {"__class_getitem__": classmethod(lambda cls, item: typing.Any)})   # PyTree[str]
    openpi.shared.array_typing = _stub("openpi.shared.array_typing", PyTree=any_of, Array=any_of, KeyArrayLike=any_of)
    model_src = (src / "openpi" / "models" / "model.py").read_text()
    node = next(n for n in ast.parse(model_src).body if isinstance(n, ast.ClassDef) and n.name == "ModelType")
    ns = {"enum": enum}
    exec(compile(ast.Module([node], []), "openpi/models/model.py", "exec"), ns)
    openpi.models.model = _stub("openpi.models.model", ModelType=ns["ModelType"])
    return ns["ModelType"]


def find_train_config(source: str, name: str, where: str) -> ast.Call:
    """The TrainConfig(name=...) call in a training config's source (openpi's training/config.py, RLinf's
    dataconfig/__init__.py); KeyError naming `where` if there is none."""
    for call in ast.walk(ast.parse(source)):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "TrainConfig":
            kw = {k.arg: k.value for k in call.keywords}
            if isinstance(kw.get("name"), ast.Constant) and kw["name"].value == name:
                return call
    raise KeyError(f"no TrainConfig(name={name!r}) in {where}")


def train_config_flags(src: Path, name: str) -> dict:
    """extra_delta_transform and the model type of TrainConfig(name=...) in openpi's training/config.py."""
    call = find_train_config((src / "openpi" / "training" / "config.py").read_text(), name, "openpi's config.py")
    kw = {k.arg: k.value for k in call.keywords}
    data = {k.arg: k.value for k in kw["data"].keywords}
    model = {k.arg: k.value for k in kw["model"].keywords}
    pi05 = "pi05" in model and ast.literal_eval(model["pi05"])
    return {"extra_delta_transform": ast.literal_eval(data["extra_delta_transform"]),
            "data_factory": kw["data"].func.id, "pi05": bool(pi05)}


def libero_states(rng) -> np.ndarray:
    """(N, 8) float64 LIBERO-like states (examples/libero/main.py: eef pos, axis-angle, gripper qpos), the first
    LIBERO's start (eef z 1.17, roll ~pi)."""
    pos = np.stack([rng.uniform(-0.25, 0.15, N), rng.uniform(-0.3, 0.3, N), rng.uniform(0.9, 1.25, N)], 1)
    axis_angle = np.concatenate([rng.uniform(2.9, 3.2, (N, 1)), rng.uniform(-0.3, 0.3, (N, 2))], 1)
    qpos = np.stack([rng.uniform(0.0, 0.04, N), -rng.uniform(0.0, 0.04, N)], 1)
    states = np.concatenate([pos, axis_angle, qpos], 1)
    states[0, :6] = [-0.21, 0.0, 1.17, 3.14, 0.0, 0.0]
    return states


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--openpi-src", type=Path, required=True, help="openpi's src/ folder")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    transforms, libero_policy, normalize, ModelType = import_openpi(args.openpi_src)
    rng = np.random.default_rng(25)
    states = libero_states(rng)                                                    # (N, 8) float64
    model_out = rng.standard_normal((H, D)).astype(np.float32)                     # one normalised chunk, 32-D
    env_actions = np.concatenate([rng.uniform(-1, 1, (N, H, A - 1)), rng.choice([-1.0, 1.0], (N, H, 1))], -1)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in CONFIGS:
        flags = train_config_flags(args.openpi_src, name)
        assert flags["data_factory"] == "LeRobotLiberoDataConfig", flags
        model_type = ModelType.PI05 if flags["pi05"] else ModelType.PI0
        use_quantiles = model_type != ModelType.PI0   # DataConfigFactory.create_base_config
        # norm stats as the config's pipeline computed them: on the model-space (delta or not) actions
        delta = flags["extra_delta_transform"]
        mask = np.asarray(transforms.make_bool_mask(6, -1))
        model_space = env_actions.copy()
        if delta:
            model_space[..., :6] -= states[:, None, :6]
        flat_a, flat_s = model_space.reshape(-1, A), states
        stats = {k: normalize.NormStats(mean=x.mean(0), std=x.std(0) + 0.05, q01=np.quantile(x, 0.01, 0),
                                        q99=np.quantile(x, 0.99, 0))
                 for k, x in (("state", flat_s), ("actions", flat_a))}
        # LeRobotLiberoDataConfig.create
        data_transforms = transforms.Group(inputs=[libero_policy.LiberoInputs(model_type=model_type)],
                                           outputs=[libero_policy.LiberoOutputs()])
        if delta:
            data_transforms = data_transforms.push(inputs=[transforms.DeltaActions(transforms.make_bool_mask(6, -1))],
                                                   outputs=[transforms.AbsoluteActions(transforms.make_bool_mask(6, -1))])
        # policy_config.create_trained_policy (inference) / data_loader.transform_dataset (training), minus the
        # image and prompt model transforms (ResizeImages, TokenizePrompt), which touch neither state nor actions
        infer_in = transforms.compose([*data_transforms.inputs, transforms.Normalize(stats, use_quantiles=use_quantiles),
                                       transforms.PadStatesAndActions(D)])
        infer_out = transforms.compose([transforms.Unnormalize(stats, use_quantiles=use_quantiles),
                                        *data_transforms.outputs])
        img = np.zeros((4, 4, 3), np.uint8)
        to_env, targets = [], []
        for i in range(N):
            obs = {"observation/image": img, "observation/wrist_image": img, "observation/state": states[i].copy(),
                   "prompt": "pick up the black bowl"}
            inputs = infer_in(obs)   # Policy.infer
            out = infer_out({"state": inputs["state"], "actions": model_out.copy()})
            to_env.append(out["actions"])
            sample = {**obs, "observation/state": states[i].copy(), "actions": env_actions[i].copy()}
            targets.append(infer_in(sample)["actions"])   # what the model is trained to output (SFT targets)
        np.savez_compressed(
            args.out / f"{name}.npz", states=states, model_out=model_out, env_actions=env_actions,
            to_env=np.stack(to_env), targets=np.stack(targets), delta_mask=mask if delta else np.zeros(0, bool),
            use_quantiles=use_quantiles, **{f"{k}_{s}": getattr(v, s) for k, v in stats.items()
                                            for s in ("mean", "std", "q01", "q99")})
        print(f"{name}: extra_delta_transform={delta} quantiles={use_quantiles} to_env {np.stack(to_env).shape} "
              f"targets {np.stack(targets).shape} -> {args.out / (name + '.npz')}")


if __name__ == "__main__":
    main()
