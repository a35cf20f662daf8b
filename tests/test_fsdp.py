"""--fsdp (FSDP2 fully_shard over torchrun, common/distributed.py), on CPU with gloo and 2 processes: the sharded
update computes what the unsharded one does, clipping sees the global norm, the finite guard stops every rank
when one rank's shard goes bad, checkpoints hold the full weights in the user's format, and resume is exact.

Tolerance of the FSDP vs plain-torchrun comparison: FSDP averages each micro-batch's gradients by reduce-scatter
and then accumulates the shards, the plain run accumulates the micro-batches first and averages with one
all-reduce: the same sums in another order, so the weights differ by float32 rounding (3e-8 measured after
2 iterations) where one Adam step moves them by ~lr = 5e-5. atol 1e-6 is 50x the rounding and 1/50 of a step:
a gradient left unreduced, reduced twice or clipped with a per-rank norm would be far outside it."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from test_failures import REWARD_SOME_ACTIONS, run_cli
from test_scripts_e2e import ROOT, TINY_FLAGS, make_tiny_checkpoint, metrics, only_run

ENV = "metaworld-button-press-topdown-v3"
FLAGS = [*TINY_FLAGS[: TINY_FLAGS.index("--num-videos")], *TINY_FLAGS[TINY_FLAGS.index("--num-videos") + 2:],
         "--num-videos", "0", "--env", ENV, "--train-vlm"]
ATOL = 1e-6

WORKER = textwrap.dedent('''
    import sys
    import torch
    sys.path.insert(0, {root!r})
    from common import distributed, run
    from common.policy import PI0Policy, make_config
    sys.path.insert(0, {tests!r})
    from helpers import random_observation

    torch.set_num_threads(1)
    d = distributed.setup_distributed("cpu")
    config = make_config("tiny")

    def build():
        torch.manual_seed(0)
        return PI0Policy(config)

    ref, pol = build(), distributed.shard_policy(build(), d.device)
    assert distributed.is_sharded(pol) and not distributed.is_sharded(ref)
    obs = random_observation(config, 3, seed=10 + d.rank)   # each rank its own rows
    gen = torch.Generator().manual_seed(d.rank)
    x = torch.randn(3, config.action_horizon, config.action_dim, generator=gen)
    t = torch.rand(3, generator=gen).clamp_min(0.1)
    opts = {{m: torch.optim.AdamW(m.parameters(), lr=1e-3) for m in (ref, pol)}}  # a step moves weights by ~1e-3
    norms = {{ref: [], pol: []}}
    for step in range(2):
        for m in (ref, pol):
            opts[m].zero_grad()
            for micro in range(2):                              # gradient accumulation, as the scripts do
                v, f = m.velocity(m.encode(obs), x * (micro + 1), t)
                (v.square().mean() + f.mean()).backward()
            if m is ref:
                distributed.all_reduce_gradients(list(ref.parameters()))
            else:                                               # skips the DTensor shards: nothing to do
                distributed.all_reduce_gradients(list(pol.parameters()))
            norms[m].append(distributed.clip_grad_norm(list(m.parameters()), 1.0))
            opts[m].step()
    full = distributed.unsharded(pol)
    result = {{"norms_ref": norms[ref], "norms_fsdp": norms[pol],
              "weights": max((a - b).abs().max().item() for a, b in zip(ref.state_dict().values(), full.state_dict().values())),
              "keys": list(ref.state_dict()) == list(full.state_dict()),
              "tied": full.paligemma_with_expert.paligemma.lm_head.weight is full._vlm.embed_tokens.weight,
              "in_sync": distributed.parameters_in_sync(pol, d.device)}}
    with torch.no_grad():
        result["actions"] = (ref.sample_actions(obs, noise=x, num_steps=2) - full.sample_actions(obs, noise=x, num_steps=2)).abs().max().item()
    saved = distributed.full_policy_copy(pol)
    result["copy_on_rank0_only"] = (saved is not None) == (d.rank == 0)
    # optimizer state: gathered full, loaded into a fresh optimizer, the same shards come back
    state = distributed.optimizer_state(opts[pol], {{"policy": pol}})
    state = [state]
    torch.distributed.broadcast_object_list(state, src=0)
    pol.zero_grad(set_to_none=True)                        # as on --resume: no gradients yet
    fresh = torch.optim.AdamW(pol.parameters(), lr=1e-3)
    distributed.load_optimizer_state(fresh, {{"policy": pol}}, state[0])
    result["optimizer"] = all(torch.equal(distributed.local_tensor(opts[pol].state[p][k]), distributed.local_tensor(fresh.state[p][k]))
                              for p in pol.parameters() if p in opts[pol].state for k in ("exp_avg", "exp_avg_sq"))
    # the finite guard: a NaN in rank 1's shard only stops BOTH ranks
    guard = run.FiniteGuard(d.rank == 0)
    guard.check_weights(1, pol)
    if d.rank == 1:
        distributed.local_tensor(pol.action_out_proj.weight).data.view(-1)[0] = float("nan")
    try:
        guard.check_weights(2, pol)
        result["guard"] = "no stop"
    except SystemExit as stop:
        result["guard"] = stop.code
    # one file per rank: two ranks printing to the one stdout torchrun merges can interleave their lines
    with open({out!r} + "/result" + str(d.rank) + ".json", "w") as f:
        __import__("json").dump(result, f)
''')


def torchrun(script: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_sharded_update_equals_the_all_reduced_one_and_global_clip_norm_and_guard_on_one_rank(tmp_path):
    """2 processes, tiny π0, 2 AdamW steps of 2 accumulated micro-batches: FSDP's weights (gathered) = the plain
    all-reduce's within float rounding, the same clip norm on both ranks (the global one), the gathered copy keeps
    keys and the lm_head tie, the optimizer state round-trips, a NaN in one rank's shard stops both ranks."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(root=str(ROOT), tests=str(ROOT / "tests"), out=str(tmp_path)))
    proc = torchrun(worker)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = {f"RESULT{rank}": json.loads((tmp_path / f"result{rank}.json").read_text()) for rank in (0, 1)}
    for r in results.values():
        assert r["keys"] and r["tied"] and r["in_sync"] and r["optimizer"] and r["copy_on_rank0_only"]
        assert r["weights"] < 0.02 * 1e-3 and r["actions"] < 1e-5, r
        assert r["norms_ref"] == pytest.approx(r["norms_fsdp"], rel=1e-5) and r["norms_ref"][0] > 1.0  # clipped
        assert r["guard"] == 2, r
    assert results["RESULT0"]["norms_fsdp"] == results["RESULT1"]["norms_fsdp"]  # the global norm, not a shard's
    assert proc.stderr.count("error: iteration 2: non-finite 1 weight tensors") == 1  # one line, from rank 0


def test_fsdp_flag_rules():
    """--fsdp needs torchrun with >= 2 ranks and --train-vlm (LoRA excludes --train-vlm: common/lora.py), π0 / π0.5."""
    from common.errors import UsageError
    from common.run import check_fsdp

    pi0 = SimpleNamespace(config=SimpleNamespace(variant="pi0"))
    check_fsdp(SimpleNamespace(fsdp=False, train_vlm=False), 1, pi0)
    check_fsdp(SimpleNamespace(fsdp=True, train_vlm=True), 2, pi0)
    for args, world, policy, words in [(SimpleNamespace(fsdp=True, train_vlm=True), 1, pi0, "torchrun"),
                                       (SimpleNamespace(fsdp=True, train_vlm=False), 2, pi0, "--train-vlm"),
                                       (SimpleNamespace(fsdp=True, train_vlm=True), 2,
                                        SimpleNamespace(config=SimpleNamespace(variant="groot")), "GR00T")]:
        with pytest.raises(UsageError, match=words):
            check_fsdp(args, world, policy)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(ENV, tmp_path_factory.mktemp("fsdp"))


def run(tmp: Path, name: str, args: list[str], ckpt: Path | None = None) -> Path:
    flags = [*FLAGS, "--checkpoint", str(ckpt)] if ckpt is not None else []
    proc = run_cli("flow_sde_ppo", [*flags, *args, "--run-root", str(tmp / name)], prelude=REWARD_SOME_ACTIONS, nproc=2)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "weights identical on all 2 ranks: True" in proc.stdout
    return only_run(tmp / name)


@pytest.fixture(scope="module")
def fsdp_run(ckpt, tmp_path_factory):
    return run(tmp_path_factory.mktemp("fsdp_runs"), "fsdp", ["--fsdp", "--total-iterations", "2", "--save-every", "1"], ckpt)


def weights(run_dir: Path, iteration: int) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / f"iter_{iteration:06d}" / "policy" / "model.safetensors"))


@pytest.mark.slow
def test_fsdp_run_is_finite_in_sync_and_saves_a_loadable_policy(fsdp_run, ckpt):
    from safetensors.torch import load_file

    from common.checkpoint import load_policy

    rows = [r for r in metrics(fsdp_run) if "charts/iteration" in r]
    assert [r["charts/iteration"] for r in rows] == [1, 2]
    assert all(r["charts/env_reward"] > 0 for r in rows)  # the prelude's reward: the update has a signal
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items() if k != "losses/explained_variance")
    saved = fsdp_run / "checkpoints" / "iter_000002" / "policy"
    policy, _ = load_policy(saved)
    start = load_file(str(ckpt / "model.safetensors"))
    final = weights(fsdp_run, 2)
    assert list(final) == list(start)  # the user's format: the same keys (the tied lm_head written once, as before)
    assert all(torch.isfinite(v).all() for v in final.values())
    assert max((final[k] - start[k]).abs().max().item() for k in final) > 1e-5  # the update moved the weights
    assert json.loads((saved / "config.json").read_text()).keys() == json.loads((ckpt / "config.json").read_text()).keys()
    assert all(torch.equal(p, final[k]) for k, p in policy.state_dict().items() if k in final)


@pytest.mark.slow
def test_fsdp_weights_equal_the_plain_torchrun_run(fsdp_run, ckpt, tmp_path):
    plain = run(tmp_path, "plain", ["--total-iterations", "2", "--save-every", "1"], ckpt)
    for iteration in (1, 2):
        a, b = weights(fsdp_run, iteration), weights(plain, iteration)
        assert list(a) == list(b)
        diff = max((a[k] - b[k]).abs().max().item() for k in a)
        assert diff < ATOL, (iteration, diff)
    a, b = [[r["losses/grad_norm"] for r in metrics(d) if "losses/grad_norm" in r] for d in (fsdp_run, plain)]
    assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.slow
def test_fsdp_resume_is_exact(fsdp_run, ckpt, tmp_path):
    """--resume from the run's iteration-1 checkpoint (in a copy of the run) to 2: the same weights, AdamW moments
    and critic, bit for bit, as 2 iterations in one go."""
    first = tmp_path / fsdp_run.name
    shutil.copytree(fsdp_run, first)
    shutil.rmtree(first / "checkpoints" / "iter_000002")
    proc = run_cli("flow_sde_ppo", ["--resume", str(first / "checkpoints" / "iter_000001"), "--total-iterations", "2"],
                   prelude=REWARD_SOME_ACTIONS, nproc=2)
    assert proc.returncode == 0 and "weights identical on all 2 ranks: True" in proc.stdout, proc.stderr[-4000:]
    a, b = weights(fsdp_run, 2), weights(first, 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (torch.load(d / "checkpoints" / "iter_000002" / "train_state.pt", weights_only=False) for d in (fsdp_run, first))
    assert sa["optimizer"]["state"].keys() == sb["optimizer"]["state"].keys()
    assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(sb["optimizer"]["state"][k][n]))
               for k, s in sa["optimizer"]["state"].items() for n, v in s.items())
    assert all(torch.equal(v, sb["critic"][k]) for k, v in sa["critic"].items())


ONE_RANK_KEEPS_NOTHING = """
import os
import numpy as np
from common import envs as _envs
_step = _envs.ChunkVecEnv.step_chunk
def _solved(self, actions):  # rank 0: one of each group of 2 solves; rank 1: all do (groups dropped: no signal)
    obs, reward, terminated, truncated, info = _step(self, actions)
    lucky = np.ones(len(reward), bool) if os.environ.get("RANK") == "1" else np.arange(len(reward)) % 2 == 0
    return obs, reward + lucky.astype(np.float32), terminated | lucky, truncated, info
_envs.ChunkVecEnv.step_chunk = _solved
"""


@pytest.mark.slow
def test_fsdp_grpo_when_one_rank_keeps_no_row(ckpt, tmp_path):
    """flow_sde_grpo --fsdp where rank 1's groups are all dropped: it runs weight-0 padding passes so that both ranks
    take part in every FSDP collective (no hang), and the run ends in sync with the weights moved by rank 0's rows
    (measured by hand: equal to the same run without --fsdp within 1.5e-8)."""
    flags = [*FLAGS, "--num-envs", "4", "--minibatch-size", "8", "--group-size", "2", "--checkpoint", str(ckpt)]
    proc = run_cli("flow_sde_grpo", [*flags, "--fsdp", "--total-iterations", "2", "--save-every", "2",
                                     "--run-root", str(tmp_path / "grpo")], prelude=ONE_RANK_KEEPS_NOTHING, nproc=2, timeout=600)
    assert proc.returncode == 0 and "weights identical on all 2 ranks: True" in proc.stdout, proc.stderr[-4000:]
    run_dir = only_run(tmp_path / "grpo")
    assert [r["charts/groups_kept"] for r in metrics(run_dir) if "charts/groups_kept" in r] == [0.5, 0.5]
    from safetensors.torch import load_file

    start, final = load_file(str(ckpt / "model.safetensors")), weights(run_dir, 2)
    assert max((final[k] - start[k]).abs().max().item() for k in final) > 1e-5
