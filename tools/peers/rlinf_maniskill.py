"""Peer fixtures of RLinf's ManiSkill action conventions (issue 25), computed by RLinf's OWN code: what its π0 / π0.5
ManiSkill pipeline sends to the env for one batch of model output chunks. tests/test_maniskill_conventions.py
compares common/processor.py actions_to_env + common/envs.py maniskill_env_actions (data config rlinf_maniskill) to
them, to 1e-6.

RLinf's path (a3816b5), unmodified: openpi's Unnormalize (openpi's transforms.py, the same code RLinf's openpi runs)
then RLinf's ManiSkillOutputs (rlinf/models/embodiment/openpi/policies/maniskill_policy.py: the first 7 dims), as
LeRobotManiSkillDataConfig.create composes them (extra_delta_transform read from RLinf's dataconfig/__init__.py, by
ast), the first num_action_chunks = 5 steps (openpi_action_model.py output_transform), then rlinf/envs/action_utils.py
prepare_actions(env_type="maniskill", model_type="openpi", policy=...) -> prepare_actions_for_maniskill, for the
WidowX (policy_setup widowx_bridge, maniskill_ppo_openpi.yaml) and a Panda (panda_wristcam) policy.
Stand-ins for what these files import but do not use here: `rlinf.config` holds only its SupportedModel registry and
`rlinf.envs` only its SupportedEnvType enum (both taken from RLinf's own source by ast: the real modules import ray,
omegaconf and the simulators); openpi's stand-ins are tools/peers/openpi_conventions.py import_openpi's.

Runs in a venv of its own (never the project's): numpy, torch (action_utils.py), pydantic + numpydantic + einops
(openpi's transforms, RLinf's maniskill_policy.py). RLinf's files are read from its git dir (`git show`); the commit
is written into each fixture. bash tools/peers/rlinf_maniskill.sh does all of it.
"""
import argparse
import ast
import dataclasses
import enum
import subprocess
import sys
import types
import typing
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openpi_conventions import find_train_config, import_openpi  # noqa: E402  (openpi's transforms, with its stand-ins)

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "peers" / "rlinf_maniskill"
CONFIGS = {"pi0_maniskill": 8, "pi05_maniskill": 10}   # RLinf TrainConfig name -> action horizon (its yamls' openpi)
N, D, A, S, CHUNK = 12, 32, 7, 8, 5   # chunks, the model's padded action dim, env action / WidowX qpos dims, replan
POLICIES = {"widowx": "widowx_bridge", "panda": "panda_wristcam"}


def git_show(git_dir: Path, path: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], check=True, capture_output=True,
                          text=True).stdout


def exec_nodes(source: str, filename: str, keep, namespace: dict) -> dict:
    """Execute the top-level statements of `source` that `keep(node)` selects, in `namespace`."""
    body = [n for n in ast.parse(source).body if keep(n)]
    exec(compile(ast.Module(body, []), filename, "exec"), namespace)
    return namespace


def _is_class(name):
    return lambda n: isinstance(n, ast.ClassDef) and n.name == name


def _registers_model(n) -> bool:   # SupportedModel.X = SupportedModel.register("x", force=True)
    return (isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Attribute)
            and getattr(n.targets[0].value, "id", None) == "SupportedModel")


def import_rlinf(git_dir: Path, openpi_src: Path):
    """RLinf's action_utils and maniskill_policy modules (their own source), with the stand-ins of the docstring."""
    transforms, _, normalize, model_type = import_openpi(openpi_src)
    config_src = git_show(git_dir, "rlinf/config.py")
    registry = exec_nodes(config_src, "rlinf/config.py", lambda n: _is_class("SupportedModel")(n) or _registers_model(n),
                          {"dataclasses": dataclasses, "ClassVar": typing.ClassVar, "__name__": "rlinf.config"})
    envs_ns = exec_nodes(git_show(git_dir, "rlinf/envs/__init__.py"), "rlinf/envs/__init__.py",
                         _is_class("SupportedEnvType"), {"Enum": enum.Enum, "__name__": "rlinf.envs"})
    for name, attrs in (("rlinf", {}), ("rlinf.config", {"SupportedModel": registry["SupportedModel"]}),
                        ("rlinf.envs", {"SupportedEnvType": envs_ns["SupportedEnvType"]})):
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module

    def load(name: str, path: str) -> types.ModuleType:
        module = types.ModuleType(name)
        module.__file__ = path
        exec(compile(git_show(git_dir, path), path, "exec"), module.__dict__)
        return module

    action_utils = load("rlinf.envs.action_utils", "rlinf/envs/action_utils.py")
    maniskill_policy = load("rlinf.models.embodiment.openpi.policies.maniskill_policy",
                            "rlinf/models/embodiment/openpi/policies/maniskill_policy.py")
    return action_utils, maniskill_policy, transforms, normalize, model_type


def train_config_flags(git_dir: Path, name: str) -> dict:
    """extra_delta_transform, data factory and pi05 of TrainConfig(name=...) in RLinf's openpi dataconfig/__init__.py."""
    call = find_train_config(git_show(git_dir, "rlinf/models/embodiment/openpi/dataconfig/__init__.py"), name,
                             "RLinf's dataconfig/__init__.py")
    kw = {k.arg: k.value for k in call.keywords}
    data = {k.arg: k.value for k in kw["data"].keywords}
    model = {k.arg: k.value for k in kw["model"].keywords}
    return {"extra_delta_transform": ast.literal_eval(data.get("extra_delta_transform", ast.Constant(False))),
            "data_factory": kw["data"].func.id, "pi05": "pi05" in model and bool(ast.literal_eval(model["pi05"]))}


def bridge_like_actions(rng, n: int) -> np.ndarray:
    """(n, 7) WidowX-like env actions: small ee deltas, the gripper in [0, 1] (1 = open), as Bridge data holds them."""
    return np.concatenate([rng.normal(0, 0.02, (n, 6)), rng.choice([0.0, 1.0], (n, 1))], 1)


def gripper_edge_cases(rng) -> np.ndarray:
    """(len, CHUNK, 7) env-dim chunks whose gripper walks the threshold: exactly 0.5 included."""
    g = np.array([-0.5, 0.0, 0.25, 0.4999999, 0.5, 0.5000001, 0.75, 1.0, 1.5, 0.5], np.float32)
    chunks = rng.normal(0, 0.02, (2, CHUNK, A)).astype(np.float32)
    chunks[..., 6] = g.reshape(2, CHUNK)
    return chunks


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rlinf-git", type=Path, required=True, help="RLinf's git dir (bare is fine)")
    p.add_argument("--openpi-src", type=Path, required=True, help="openpi's src/ folder (its transforms.py)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    import torch
    commit = subprocess.run(["git", f"--git-dir={args.rlinf_git}", "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    action_utils, maniskill_policy, transforms, normalize, ModelType = import_rlinf(args.rlinf_git, args.openpi_src)
    rng = np.random.default_rng(25)
    flat_a = bridge_like_actions(rng, 4000)
    flat_s = rng.normal(0, 0.5, (4000, S))
    stats = {k: normalize.NormStats(mean=x.mean(0), std=x.std(0), q01=np.quantile(x, 0.01, 0), q99=np.quantile(x, 0.99, 0))
             for k, x in (("state", flat_s), ("actions", flat_a))}
    edges = gripper_edge_cases(rng)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, horizon in CONFIGS.items():
        flags = train_config_flags(args.rlinf_git, name)
        assert flags["data_factory"] == "LeRobotManiSkillDataConfig" and not flags["extra_delta_transform"], flags
        model_type = ModelType.PI05 if flags["pi05"] else ModelType.PI0
        use_quantiles = model_type != ModelType.PI0   # openpi DataConfigFactory.create_base_config
        # LeRobotManiSkillDataConfig.create's outputs, after the policy's Unnormalize (create_trained_policy)
        infer_out = transforms.compose([transforms.Unnormalize(stats, use_quantiles=use_quantiles),
                                        maniskill_policy.ManiSkillOutputs()])
        model_out = rng.standard_normal((N, horizon, D)).astype(np.float32)   # normalised model chunks
        state = rng.normal(0, 0.5, (N, S)).astype(np.float32)
        raw = np.stack([infer_out({"actions": model_out[i].copy(), "state": state[i].copy()})["actions"]
                        for i in range(N)])[:, :CHUNK]                      # output_transform: [:, :action_chunk]
        fixture = {"model_out": model_out, "state": state, "use_quantiles": use_quantiles, "rlinf_commit": commit,
                   "edge_in": edges, **{f"{k}_{s}": getattr(v, s) for k, v in stats.items()
                                        for s in ("mean", "std", "q01", "q99")}}
        for robot, policy in POLICIES.items():
            for key, chunk in (("to_env", raw), ("edge_out", edges)):
                out = action_utils.prepare_actions(torch.as_tensor(chunk), env_type="maniskill", model_type="openpi",
                                                   num_action_chunks=CHUNK, action_dim=A, policy=policy)
                fixture[f"{key}_{robot}"] = np.asarray(out, dtype=np.float32)
        np.savez_compressed(args.out / f"{name}.npz", **fixture)
        g = fixture["to_env_widowx"][..., 6]
        print(f"{name}: quantiles={use_quantiles} model_out {model_out.shape} -> env {fixture['to_env_widowx'].shape}, "
              f"WidowX grippers open/closed {int((g > 0).sum())}/{int((g < 0).sum())} (RLinf {commit[:9]}) "
              f"-> {args.out / (name + '.npz')}")


if __name__ == "__main__":
    main()
