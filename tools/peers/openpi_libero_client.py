"""Peer fixtures of openpi's LIBERO client (issue 25), written by openpi's OWN examples/libero/main.py: the
observation dict its eval loop sends to the policy server (both images after its flip + resize_with_pad to 224 +
convert_to_uint8, the 8-D state, the prompt) for the first N init states of libero_spatial task 0.
tests/test_peer_envs.py builds pirl's LIBERO env on the same scenes and compares.

    bash tools/peers/openpi_libero_envs.sh        # or, with openpi_client importable (PyPI openpi-client 0.1.2):
    PYTHONPATH=<openpi_client dir> LIBERO_CONFIG_PATH=.sims/libero .venv/bin/python tools/peers/openpi_libero_client.py

Runs main.py's `eval_libero(Args(...))` unmodified from openpi's source (examples/libero/main.py at 15a9616), with
openpi_client's own image_tools, in the project's venv for LIBERO itself (hf-libero 0.1.4 + the offline assets of
tools/setup_sims.sh; LIBERO cannot be installed twice here). Stand-ins, and only these:
  * openpi_client.websocket_client_policy.WebsocketClientPolicy: no server; its `infer(element)` records the
    element and raises, which main.py's own `except Exception` turns into the end of the episode (so each
    episode stops at its first policy query, right after the 10 settle steps);
  * the suite main.py iterates: task 0 only and `num_trials_per_task` = N (benchmark's suite object wrapped so
    that n_tasks = 1);
  * imageio.mimwrite (the replay video): not written.
Observed, not changed: numpy's global RNG state right before each `env.reset()` (LIBERO places its fixtures from
it; main.py seeds it once with env.seed(7) when the task's env is built), stored so that pirl's env can be put in
the same scene.
"""
import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "peers" / "openpi_libero"


class _EndEpisode(Exception):
    pass


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--openpi-src", type=Path, default=Path("/work/peers/openpi-src"), help="openpi's checkout")
    p.add_argument("--num-init-states", type=int, default=10)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    import imageio
    import openpi_client
    from openpi_client import image_tools  # noqa: F401  (openpi's own, imported by main.py)
    from libero.libero import benchmark
    from libero.libero.envs import OffScreenRenderEnv

    sys.path.insert(0, str(ROOT))
    import common.envs as E   # the offline LIBERO assets path only (as pirl's own env finds them)
    assets = E._libero_assets_dir()
    if assets is not None:
        import libero.libero as ll
        ll._assets_path_cache = assets

    elements, rng_states = [], []

    class RecordingClient:
        def __init__(self, host, port):
            pass

        def infer(self, element):
            elements.append({k: np.array(v, copy=True) for k, v in element.items()})
            raise _EndEpisode("fixture recorded")

    ws = types.ModuleType("openpi_client.websocket_client_policy")
    ws.WebsocketClientPolicy = RecordingClient
    sys.modules["openpi_client.websocket_client_policy"] = ws
    openpi_client.websocket_client_policy = ws
    imageio.mimwrite = lambda *a, **k: None

    spec = importlib.util.spec_from_file_location("openpi_libero_main", args.openpi_src / "examples/libero/main.py")
    main_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main_mod)

    class ObservedEnv(OffScreenRenderEnv):
        def reset(self):
            rng_states.append(np.random.get_state())   # ("MT19937", key (624,), pos, has_gauss, cached_gaussian)
            return super().reset()

    main_mod.OffScreenRenderEnv = ObservedEnv
    real_dict = benchmark.get_benchmark_dict

    def one_task_suites():
        suites = real_dict()

        def make(name=args_suite):
            suite = suites[name]()
            wrapped = types.SimpleNamespace(n_tasks=1, get_task=suite.get_task,
                                            get_task_init_states=suite.get_task_init_states)
            return wrapped
        return {args_suite: make}

    args_suite = "libero_spatial"
    main_mod.benchmark = types.SimpleNamespace(get_benchmark_dict=one_task_suites)
    main_mod.eval_libero(main_mod.Args(task_suite_name=args_suite, num_trials_per_task=args.num_init_states,
                                       video_out_path=str(Path("/tmp") / "openpi_libero_videos")))
    assert len(elements) == args.num_init_states == len(rng_states), (len(elements), len(rng_states))
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out / "libero_spatial_task0.npz",
        image=np.stack([e["observation/image"] for e in elements]),              # (N, 224, 224, 3) uint8
        wrist_image=np.stack([e["observation/wrist_image"] for e in elements]),  # (N, 224, 224, 3) uint8
        state=np.stack([e["observation/state"] for e in elements]),              # (N, 8) float64
        prompt=np.array(str(elements[0]["prompt"])),
        rng_keys=np.stack([s[1] for s in rng_states]).astype(np.uint32),       # (N, 624) MT19937 keys
        rng_pos=np.array([s[2] for s in rng_states]), rng_has_gauss=np.array([s[3] for s in rng_states]),
        rng_cached_gaussian=np.array([s[4] for s in rng_states]))
    import importlib.metadata as md
    import hashlib
    main_py = args.openpi_src / "examples/libero/main.py"
    meta = {"openpi_main_py_sha256": hashlib.sha256(main_py.read_bytes()).hexdigest(),   # = openpi 15a9616's
            "openpi_client": md.version("openpi-client") if has_dist("openpi-client") else openpi_client.__file__,
            "hf_libero": md.version("hf-libero"), "robosuite": md.version("robosuite"), "mujoco": md.version("mujoco"),
            "pillow": md.version("pillow"), "suite": args_suite, "task_id": 0,
            "init_states": list(range(args.num_init_states)), "seed": 7}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta), [str(e["prompt"]) for e in elements[:1]], elements[0]["observation/state"])


def has_dist(name: str) -> bool:
    """Whether the distribution `name` is installed (openpi_client may come as a bare package folder instead)."""
    import importlib.metadata as md
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
