"""GR00T N1.5 (tiny, `--model tiny-groot`) through the three unchanged algorithm scripts on a real simulator
(MetaWorld): each script runs end to end and saves a GR00T checkpoint that loads back; a 2-process torchrun
run ends with identical weights; resume is exact. A few lines before each script reward chunks whose first
action dim is > 0 (tests/test_failures.py's prelude): the tiny SFT policy earns no reward in 2 iterations,
and without reward every gradient is 0, so "identical" and "exact" would hold trivially."""
import pytest
import torch
from safetensors.torch import load_file
from test_failures import GROUP, REWARD_SOME_ACTIONS, run_cli
from test_scripts_e2e import TINY_FLAGS, metrics, only_run

from common.checkpoint import load_policy

ENV = "metaworld-drawer-open-v3"
SCRIPTS = ["flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"]


@pytest.fixture(scope="module")
def groot_ckpt(tmp_path_factory):
    """The embedded default's SFT path with the tiny GR00T (2 demos, 5 steps: a policy, not a good one)."""
    from common.sft import make_default_sft_policy
    return make_default_sft_policy(ENV, num_demos=2, sft_steps=5, cache_dir=tmp_path_factory.mktemp("groot_cache"),
                                   preset="tiny-groot", image_size=32, progress=False)


def run_groot(script, ckpt, run_root, *extra, nproc=1):
    flags = ["--env", ENV, "--model", "tiny-groot", "--checkpoint", str(ckpt), "--run-root", str(run_root),
             *TINY_FLAGS, "--num-videos", "0", *GROUP.get(script, []), *extra]
    proc = run_cli(script, flags, prelude=REWARD_SOME_ACTIONS, nproc=nproc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def weights(run_dir, iteration):
    return load_file(str(run_dir / "checkpoints" / f"iter_{iteration:06d}" / "policy" / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_trains_tiny_groot_and_saves_a_groot_checkpoint(script, groot_ckpt, tmp_path):
    proc = run_groot(script, groot_ckpt, tmp_path, "--total-iterations", "2", "--save-every", "2")
    assert "weights identical on all 1 ranks: True" in proc.stdout
    run_dir = only_run(tmp_path)
    assert [r["charts/iteration"] for r in metrics(run_dir) if "charts/iteration" in r] == [1, 2]
    policy, _ = load_policy(run_dir / "checkpoints" / "iter_000002" / "policy")
    assert policy.config.variant == "groot"
    before, after = load_file(str(groot_ckpt / "model.safetensors")), weights(run_dir, 2)
    moved = max((after[k].float() - before[k].float()).abs().max().item() for k in before)
    assert moved > 0   # the update reached GR00T's action head


@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_groot_weights(groot_ckpt, tmp_path):
    proc = run_groot("flow_sde_ppo", groot_ckpt, tmp_path, "--total-iterations", "2", nproc=2)
    assert "weights identical on all 2 ranks: True" in proc.stdout


@pytest.mark.slow
def test_groot_resume_equals_an_uninterrupted_run(groot_ckpt, tmp_path):
    run_groot("flow_sde_ppo", groot_ckpt, tmp_path / "full", "--total-iterations", "2", "--save-every", "1")
    run_groot("flow_sde_ppo", groot_ckpt, tmp_path / "split", "--total-iterations", "1", "--save-every", "1")
    split = only_run(tmp_path / "split")
    proc = run_cli("flow_sde_ppo", ["--resume", str(split), "--total-iterations", "2"], prelude=REWARD_SOME_ACTIONS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = only_run(tmp_path / "full")
    a, b = weights(full, 2), weights(split, 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = weights(full, 1)
    assert any(not torch.equal(a[k], first[k]) for k in a)   # iteration 2 did move the weights
    critic = [torch.load(run / "checkpoints" / "iter_000002" / "train_state.pt", weights_only=False)["critic"]
              for run in (full, split)]
    assert all(torch.equal(v, critic[1][k]) for k, v in critic[0].items())
