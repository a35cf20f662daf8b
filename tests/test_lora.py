"""common/lora.py: LoRA on the VLM (paper 5.5) with PEFT: what trains, step 0, merged checkpoints,
exact resume and two ranks; and tools/gpu_check.py's no-GPU path."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common import lora
from common.checkpoint import load_policy, save_policy
from common.policy import PI0Policy, make_config
from common.processor import Processor, compute_norm_stats
from common.tokenizer import train_tiny_tokenizer
from helpers import random_observation

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TASKS = ["open the drawer", "push the button", "pick up the cube"]


def write_base(folder: Path, preset: str) -> Path:
    """A random tiny policy in our (openpi) layout: the 'SFT checkpoint' LoRA starts from."""
    c = make_config(preset)
    torch.manual_seed(0)
    policy = PI0Policy(c)
    rng = np.random.default_rng(0)
    stats = compute_norm_stats(rng.normal(size=(64, 5)).astype(np.float32), rng.normal(size=(64, 4)).astype(np.float32))
    tok = train_tiny_tokenizer(TASKS, folder / "tok.model", c.vocab_size)
    save_policy(folder / "base", policy, Processor.from_stats(stats, tok, c))
    return folder / "base"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = write_base(tmp_path_factory.mktemp(preset), preset)
        return cache[preset]
    return get


def load_frozen(path, dtype=None):
    policy, processor = load_policy(path, dtype=dtype)
    policy.freeze_vlm()
    return policy.eval(), processor


def noise_for(c, B=2, seed=3):
    return torch.randn(B, c.action_horizon, c.action_dim, generator=torch.Generator().manual_seed(seed))


def randomise_adapters(policy, seed=1):
    """Stand-in for training: B != 0, so that the adapters change the policy."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora.lora_parameters(policy):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
@pytest.mark.parametrize("vision", [False, True])
def test_only_adapter_and_expert_parameters_receive_gradients(preset, vision, bases):
    policy, _ = load_frozen(bases(preset))
    c = policy.config
    trainable_before = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trainable_before and not any(n.startswith("paligemma_with_expert.paligemma.") for n in trainable_before)
    lora.apply_lora(policy, rank=4, alpha=8, vision=vision)
    adapters = {n for n, p in policy.named_parameters() if ".lora_" in n}
    assert len(adapters) == 2 * (7 * c.depth + (6 * c.vision_depth if vision else 0))   # A and B per linear
    assert any("vision_tower" in n for n in adapters) == vision
    assert all(".gemma_expert." not in n for n in adapters)          # the expert is trained in full, not adapted
    assert all(isinstance(m.lora_dropout[lora.ADAPTER], torch.nn.Identity) for _, m in lora.lora_layers(policy))
    obs = random_observation(c, 2)
    cache = policy.encode(obs)                                        # the prefix pass WITH a graph
    v, _ = policy.velocity(cache, noise_for(c), torch.full((2,), 0.6))
    v.square().mean().backward()
    got = {n for n, p in policy.named_parameters() if p.grad is not None}
    # the expert reads the VLM only through its per-layer keys / values: in the last VLM layer only k_proj and
    # v_proj reach the actions (its q, o and MLP feed the pooled prefix features alone, which no loss here uses)
    last = f"language_model.layers.{c.depth - 1}."
    unreached = {n for n in adapters if last in n and not any(f"{m}.lora_" in n for m in ("k_proj", "v_proj"))}
    assert len(unreached) == 2 * 5
    assert got == (adapters - unreached) | trainable_before
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == adapters | trainable_before
    b_grads = [p.grad.abs().sum() for n, p in policy.named_parameters() if ".lora_B." in n and n not in unreached]
    assert all(g > 0 for g in b_grads)   # B = 0 at init: A's gradient is 0, B's is not


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_zero_initialised_B_leaves_the_actions_unchanged_at_step_0(preset, dtype, bases):
    policy, _ = load_frozen(bases(preset), dtype=dtype)
    obs, noise = random_observation(policy.config, 2), noise_for(policy.config)
    before = policy.sample_actions(obs, noise, num_steps=4)
    lora.apply_lora(policy, rank=8, vision=True)
    assert all(p.dtype == torch.float32 for p in lora.lora_parameters(policy))   # fp32 adapters on a bf16 base
    assert torch.equal(policy.sample_actions(obs, noise, num_steps=4), before)


@pytest.mark.parametrize("preset", ["tiny", "tiny-pi05"])
def test_merged_save_then_load_gives_the_adapted_actions(preset, bases, tmp_path):
    policy, processor = load_frozen(bases(preset))
    lora.apply_lora(policy, rank=4, alpha=4, vision=True, base=str(bases(preset)))
    randomise_adapters(policy)
    obs, noise = random_observation(policy.config, 2), noise_for(policy.config)
    adapted = policy.sample_actions(obs, noise, num_steps=4)
    base_policy, _ = load_frozen(bases(preset))
    assert not torch.allclose(base_policy.sample_actions(obs, noise, num_steps=4), adapted, atol=1e-4)  # adapters matter
    state_before = {k: v.clone() for k, v in policy.state_dict().items()}
    lora_state = lora.train_state(policy)
    with lora.merged(policy):
        save_policy(tmp_path / "policy", policy, processor)
        lora.export_adapters(lora_state, tmp_path)  # inside the block, as the scripts do (before publishing)
    # in memory: the LoRA layers are back and bit-identical (training continues exactly)
    assert {k: v for k, v in policy.state_dict().items()}.keys() == state_before.keys()
    assert all(torch.equal(v, state_before[k]) for k, v in policy.state_dict().items())
    assert torch.equal(policy.sample_actions(obs, noise, num_steps=4), adapted)
    # on disk: the model's own keys (the user's format), the adapted actions
    loaded, _ = load_frozen(tmp_path / "policy")
    assert not any(".lora_" in k or "base_layer" in k for k in loaded.state_dict())
    torch.testing.assert_close(loaded.sample_actions(obs, noise, num_steps=4), adapted, rtol=1e-5, atol=1e-5)
    from safetensors.torch import load_file
    exported = load_file(str(tmp_path / "adapters.safetensors"))
    assert exported.keys() == lora.adapter_state_dict(policy).keys()
    info = json.loads((tmp_path / "adapters.json").read_text())
    assert (info["rank"], info["alpha"], info["dropout"], info["vision"]) == (4, 4.0, 0.0, True)



def test_ratio_is_one_before_any_update_with_lora(bases):
    """No dropout anywhere: the update's log-prob of a stored SDE transition (prefix pass WITH a graph
    through the adapters) equals the rollout's (no graph), so the PPO ratio starts at exactly 1."""
    from helpers import load_script

    ppo = load_script("flow_sde_ppo")
    policy, _ = load_frozen(bases("tiny"))
    lora.apply_lora(policy, rank=4, vision=True)
    randomise_adapters(policy)
    policy.train()   # the update runs in train mode: nothing may behave differently
    c = policy.config
    args = ppo.Args(denoise_steps=4, noise_level=0.5, replan_steps=4)
    critic = ppo.Critic(c.expert_width, 16)
    obs = random_observation(c, 3)
    with torch.no_grad():
        _, x_j, x_next, j, logp, _, _ = ppo.sample_hybrid(policy, policy.encode(obs), critic, args, 7,
                                                          torch.Generator().manual_seed(0))
    new_logp, _ = ppo.step_logprob(policy, policy.encode(obs), x_j, x_next, j, args, 7)
    assert new_logp.requires_grad
    torch.testing.assert_close(new_logp.detach(), logp, rtol=0, atol=1e-5)

def _train(policy, optimizer, steps: int, seed: int):
    """A few optimizer steps on a flow-matching loss with gradient through the adapted prefix pass."""
    c = policy.config
    for s in range(steps):
        obs = random_observation(c, 2, seed=seed + s)
        g = torch.Generator().manual_seed(100 + seed + s)
        actions = torch.randn(2, c.action_horizon, c.action_dim, generator=g)
        loss = policy.sft_loss(obs, actions, noise=torch.randn(actions.shape, generator=g), time=torch.full((2,), 0.7))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_resume_restores_base_weights_adapters_and_optimizer_exactly(dtype, bases, tmp_path):
    """Train 2 steps, checkpoint the way the scripts do (merged policy/ + train_state with the optimizer and
    lora.train_state), train 2 more: a fresh process that loads the checkpoint and trains the same 2 steps
    ends with bit-identical weights, adapters and AdamW moments."""
    base = bases("tiny")
    args = type("A", (), dict(lora_rank=4, lora_alpha=8.0, lora_targets=",".join(lora.LM_TARGETS), lora_vision=True,
                              train_vlm=False, checkpoint=str(base)))()
    torch.manual_seed(0)
    policy, processor = load_frozen(base, dtype)
    assert lora.setup(policy, args)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    _train(policy, opt, 2, seed=0)
    with lora.merged(policy):
        save_policy(tmp_path / "policy", policy, processor)
    torch.save({"optimizer": opt.state_dict(), "lora": lora.train_state(policy)}, tmp_path / "train_state.pt")
    _train(policy, opt, 2, seed=2)
    uninterrupted = policy.state_dict()

    torch.manual_seed(123)   # a different process: other random LoRA init, overwritten by the restore
    saved = torch.load(tmp_path / "train_state.pt", weights_only=False)
    resumed, _ = load_frozen(tmp_path / "policy", dtype)
    assert lora.setup(resumed, args, saved)
    opt2 = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-2)
    opt2.load_state_dict(saved["optimizer"])
    _train(resumed, opt2, 2, seed=2)
    assert resumed.state_dict().keys() == uninterrupted.keys()
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, uninterrupted[k]), k
    for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


def test_resume_refuses_a_missing_or_different_base(bases, tmp_path):
    base = bases("tiny")
    policy, processor = load_frozen(base)
    lora.apply_lora(policy, rank=4, base=str(tmp_path / "moved"))
    randomise_adapters(policy)
    with lora.merged(policy):
        save_policy(tmp_path / "policy", policy, processor)
    state = lora.train_state(policy)
    with pytest.raises(FileNotFoundError, match="base checkpoint"):
        lora.restore(load_frozen(tmp_path / "policy")[0], state)
    other = write_base(tmp_path, "tiny-pi05").parent / "other"
    torch.manual_seed(7)
    save_policy(other, PI0Policy(make_config("tiny")), processor)   # same shapes, other weights
    state["spec"]["base"] = str(other)
    with pytest.raises(ValueError, match="not the one"):
        lora.restore(load_frozen(tmp_path / "policy")[0], state)


def test_presets_are_the_papers_lora_i_and_lora_ii_and_explicit_flags_win():
    from helpers import load_script

    table = load_script("flow_sde_ppo").preset("libero-long", "pi0")
    assert (table["actor_lr"], table["update_epochs"]) == (5e-6, 4)   # the paper's frozen-VLM baseline (Fig. 15)

    def resolved(name, **given):
        args = type("A", (), dict(lora_preset=name, lora_rank=0, lora_alpha=None, actor_lr=None, update_epochs=None))()
        for k, v in given.items():
            setattr(args, k, v)
        lora.resolve_preset(args, table)
        return args.lora_rank, args.lora_alpha, args.actor_lr, args.update_epochs

    assert resolved("lora-i") == (32, 32.0, 5e-6, 4)
    assert resolved("lora-ii") == (32, 32.0, pytest.approx(1e-6), 2)
    assert resolved("lora-ii", lora_rank=16, actor_lr=3e-6) == (16, None, 3e-6, 2)
    assert resolved("none") == (0, None, None, None)


def test_bad_lora_settings_are_clear_errors(bases):
    policy, _ = load_frozen(bases("tiny"))
    with pytest.raises(ValueError, match="allowed: q_proj"):
        lora.apply_lora(policy, rank=4, targets=["qkv"])
    with pytest.raises(ValueError, match="rank must be >= 1"):
        lora.apply_lora(policy, rank=0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        lora.apply_lora(policy, rank=4, alpha=0)
    args = type("A", (), dict(lora_rank=4, lora_alpha=None, lora_targets="q_proj", lora_vision=False, train_vlm=True,
                              checkpoint=str(bases("tiny"))))()
    from common.errors import UsageError
    with pytest.raises(UsageError, match="exclude each other"):
        lora.setup(policy, args)


TWO_RANKS = r"""
import sys, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from common import distributed, lora
from common.checkpoint import load_policy
from helpers import random_observation
d = distributed.setup_distributed("cpu")
torch.manual_seed(0 if d.rank == 0 else 1)   # different LoRA init per rank: the broadcast must fix it
policy, _ = load_policy({base!r})
policy.freeze_vlm()
lora.apply_lora(policy, rank=4, vision=True)
distributed.broadcast_parameters(policy)
params = [p for p in policy.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-2)
for step in range(2):
    obs = random_observation(policy.config, 2, seed=10 * d.rank + step)   # each rank its own data
    actions = torch.randn(2, policy.config.action_horizon, policy.config.action_dim)
    opt.zero_grad(set_to_none=True)
    policy.sft_loss(obs, actions, time=torch.full((2,), 0.5)).backward()
    distributed.all_reduce_gradients(params)
    opt.step()
B = [p for n, p in policy.named_parameters() if ".lora_B." in n]
moved = sum(bool(p.abs().sum() > 0) for p in B) == len(B) - 5   # all but the last VLM layer's q, o, MLP (unreached)
in_sync = distributed.parameters_in_sync(policy, d.device)
sys.stdout.write(f"rank {{d.rank}}: adapters trained {{moved}}, in sync {{in_sync}}\n")  # one write: ranks share the pipe
distributed.cleanup()
"""


def test_two_ranks_with_lora_end_with_identical_weights(bases, tmp_path):
    """Adapters are policy parameters with requires_grad: broadcast at start, in the one flattened gradient
    all-reduce and in parameters_in_sync's checksum (2 gloo ranks, different data and LoRA init per rank)."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS.format(root=str(ROOT), tests=str(ROOT / "tests"), base=str(bases("tiny"))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert f"rank {rank}: adapters trained True, in sync True" in proc.stdout


def test_gpu_check_without_cuda_exits_cleanly_with_one_line():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: tools/gpu_check.py would run the checks")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]


# ---- the three scripts with LoRA (real simulator, tiny settings) ------------------------------------
LORA = ["--lora-rank", "4", "--lora-alpha", "8", "--lora-vision"]


@pytest.fixture(scope="module")
def script_checkpoint(tmp_path_factory):
    from test_scripts_e2e import ENVS, make_tiny_checkpoint

    return ENVS[0], make_tiny_checkpoint(ENVS[0], tmp_path_factory.mktemp("metaworld"))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo"])
def test_script_with_lora_resumes_exactly_and_saves_merged_and_adapters(script, script_checkpoint, tmp_path):
    """3 iterations in one go == 2, then --resume to 3: the same merged weights, adapters (with their
    AdamW moments, through the optimizer state), critic and counters; policy/ loads as a plain policy and
    adapters.safetensors holds the adapters alone."""
    from safetensors.torch import load_file
    from test_scripts_e2e import TINY_FLAGS, load_state, metrics, only_run, run_script

    env_name, ckpt = script_checkpoint
    # constant LR: the cosine schedule (the tiny default) depends on --total-iterations, so a run of 2 extended to 3
    # takes its 2nd step at another LR than a run of 3 (Flow-Noise's entropy bonus moves its noise head even here)
    flags = ["--env", env_name, "--checkpoint", str(ckpt), "--save-every", "1", *TINY_FLAGS, "--num-videos", "0", *LORA,
             "--no-anneal-lr"]
    run_script(script, [*flags, "--total-iterations", "3", "--run-root", str(tmp_path / "full")])
    run_script(script, [*flags, "--total-iterations", "2", "--run-root", str(tmp_path / "split")])
    split_run = only_run(tmp_path / "split")
    run_script(script, ["--resume", str(split_run), "--total-iterations", "3"])
    full_dir = only_run(tmp_path / "full") / "checkpoints" / "iter_000003"
    full_w, full_s = load_state(full_dir)
    split_w, split_s = load_state(split_run / "checkpoints" / "iter_000003")
    assert full_w.keys() == split_w.keys() and not any(".lora_" in k for k in full_w)
    for k in full_w:
        assert torch.equal(full_w[k], split_w[k]), k
    full_a, split_a = full_s["lora"]["adapters"], split_s["lora"]["adapters"]
    assert full_a.keys() == split_a.keys() and len(full_a) > 0
    assert all(torch.equal(full_a[k], split_a[k]) for k in full_a)
    for k, v in full_s.get("critic", {}).items():
        assert torch.equal(v, split_s["critic"][k]), k
    for a, b in zip(full_s["optimizer"]["state"].values(), split_s["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert [r["charts/iteration"] for r in metrics(split_run) if "charts/iteration" in r] == [1, 2, 3]
    exported = load_file(str(full_dir / "adapters.safetensors"))
    assert all(torch.equal(exported[k], full_a[k]) for k in full_a)
    # NB these 4-step episodes earn no reward: advantages are 0 and the actor (expert and adapters: B stays 0)
    # does not move, so this proves the plumbing; exactness with adapters that do move is proven by
    # test_resume_restores_base_weights_adapters_and_optimizer_exactly above
    policy, _ = load_policy(full_dir / "policy")   # the user's format: a plain policy, adapters merged
    assert not any("lora" in k for k in policy.state_dict())
    args = json.loads((split_run / "args.json").read_text())
    assert (args["lora_rank"], args["lora_alpha"], args["lora_vision"]) == (4, 8.0, True)


@pytest.mark.slow
def test_torchrun_two_ranks_with_lora_end_with_identical_weights(script_checkpoint, tmp_path):
    from test_scripts_e2e import TINY_FLAGS, run_script

    env_name, ckpt = script_checkpoint
    proc = run_script("flow_sde_ppo", ["--env", env_name, "--checkpoint", str(ckpt), "--total-iterations", "2",
                                       "--run-root", str(tmp_path), *TINY_FLAGS, "--num-videos", "0", *LORA], nproc=2)
    assert "weights identical on all 2 ranks: True" in proc.stdout
