"""Everything the CPU box cannot test, in one call on a CUDA machine (about 5 minutes on one GPU, 8 at most).

    python tools/gpu_check.py                 # prints one summary table; exit 1 if any check failed
    python tools/gpu_check.py --skip-memory   # without the 3B-size update (needs ~50 GB of GPU memory)
    python tools/gpu_check.py --dry-run-cpu   # checks 2 and 5 on the CPU with the tiny model: the code runs

  1. the CUDA-only tests (pytest -k cuda: ManiSkill's GPU-batched envs) and tests/test_lora.py
  2. grouped-query attention on CUDA: the stride-0 KV view gives the repeated-KV numbers (tiny π0 / π0.5,
     fp32 and bf16), and which SDPA kernel the 3B-shaped attention runs (a math fallback would be a regression)
  3. a 2-iteration bf16 run (--device cuda, VLM bf16) of each of the three scripts, with and without LoRA,
     at tiny settings on MetaWorld (six runs side by side)
  4. 2-process NCCL torchruns of flow_sde_ppo.py, when two GPUs are present: with LoRA, and full --train-vlm
     sharded with FSDP2 (--fsdp) against the same run unsharded (final weights within 1e-5)
  5. the live peak memory (torch.cuda.max_memory_allocated) of one 3B π0 update step with random weights,
     VLM bf16 + expert fp32, against bench/memory.py's prediction: frozen VLM with grouped and with
     repeated KV at micro-batch 32, LoRA r = 32 at micro-batch 8
Without a CUDA device it prints one line and exits 0.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("flow_sde_ppo", "flow_noise_ppo", "flow_sde_grpo")
ENV = "metaworld-drawer-open-v3"
LORA_FLAGS = ["--lora-rank", "8", "--lora-vision"]
DRY = "--dry-run-cpu" in sys.argv   # the same code on the CPU with the tiny model (no timings, no memory figures)
DEV = "cpu" if DRY else "cuda"
rows = []   # (check, ok, detail, seconds)


def record(check: str, ok: bool, detail: str, start: float):
    rows.append((check, ok, detail, time.time() - start))
    print(f"[gpu_check] {'ok  ' if ok else 'FAIL'} {check}: {detail}", flush=True)


def run(cmd, timeout, env=None):
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as err:
        return 124, f"timed out after {timeout} s: {(err.stdout or b'')[-2000:]!r}"


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-160:] if lines else ""


def check_tests():
    start = time.time()
    rc, out = run([sys.executable, "-m", "pytest", "-q", "-x", "tests/test_envs.py", "-k", "cuda", "-p", "no:cacheprovider"], 300)
    record("pytest -k cuda (tests/test_envs.py)", rc == 0, last_line(out), start)
    start = time.time()
    rc, out = run([sys.executable, "-m", "pytest", "-q", "-x", "tests/test_lora.py", "-p", "no:cacheprovider"], 300)
    record("pytest tests/test_lora.py", rc == 0, last_line(out), start)


def check_grouped_attention():
    import torch.nn.functional as F

    import common.policy as policy_module
    from common.policy import PI0Policy, make_config
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import random_observation

    start = time.time()
    worst, ok = 0.0, True
    for preset in ("tiny", "tiny-pi05"):
        for dtype in (None, torch.bfloat16):
            torch.manual_seed(0)
            m = PI0Policy(make_config(preset)).to(DEV)
            if dtype is not None:
                m.set_vlm_dtype(dtype)
            obs = random_observation(m.config, 3)
            obs = type(obs)(**{k: v.to(DEV) for k, v in vars(obs).items()})
            x = torch.randn(3, m.config.action_horizon, m.config.action_dim, device=DEV)
            t = torch.full((3,), 0.6, device=DEV)
            outs = []
            for grouped in (True, False):
                policy_module.GROUPED_KV = grouped
                v, _ = m.velocity(m.encode(obs), x, t)
                outs.append(v.detach())
            policy_module.GROUPED_KV = True
            err = (outs[0] - outs[1]).abs().max().item()
            worst = max(worst, err)
            ok &= err <= (1e-5 if dtype is None else 2e-2)
    # the kernel SDPA picks for the expert's attention at the 3B shapes (8 heads, 1 KV head, hd 256, float mask)
    q = torch.randn(4, 8, 51, 256, device=DEV, requires_grad=True)
    k = torch.randn(4, 1, 867, 256, device=DEV, requires_grad=True)
    bias = torch.zeros(4, 1, 51, 867, device=DEV)
    kernels = {}
    for name, kk in (("grouped", k.expand(-1, 8, -1, -1)), ("repeated", k.repeat_interleave(8, 1))):
        out = F.scaled_dot_product_attention(q, kk, kk, attn_mask=bias)
        kernels[name] = out.grad_fn.name() if out.grad_fn is not None else "none"
    same_kernel = kernels["grouped"] == kernels["repeated"]
    record("grouped KV == repeated KV on CUDA", ok and same_kernel,
           f"max |Δv| {worst:.2e}; SDPA kernel grouped {kernels['grouped']}, repeated {kernels['repeated']}", start)


def check_scripts(tmp: Path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_scripts_e2e import TINY_FLAGS, make_tiny_checkpoint

    start = time.time()
    ckpt = make_tiny_checkpoint(ENV, tmp / "ckpt")
    procs = {}
    for script in SCRIPTS:
        for lora in (False, True):
            extra = ["--group-size", "2"] if script == "flow_sde_grpo" else []
            cmd = [sys.executable, f"{script}.py", "--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "2",
                   "--device", "cuda", "--vlm-dtype", "bfloat16", "--run-root", str(tmp / f"{script}_{lora}"),
                   *TINY_FLAGS, "--num-videos", "0", *extra, *(LORA_FLAGS if lora else [])]
            log = open(tmp / f"{script}_{lora}.log", "w")
            procs[(script, lora)] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                                      env={**os.environ, "OMP_NUM_THREADS": "2"}), log)
    for (script, lora), (p, log) in procs.items():
        try:
            rc = p.wait(timeout=max(10, 360 - (time.time() - start)))
        except subprocess.TimeoutExpired:
            p.kill()
            rc = 124
        log.close()
        text = (tmp / f"{script}_{lora}.log").read_text()
        ok = rc == 0 and "held-out success" in text
        record(f"{script} 2 iterations, cuda bf16{', LoRA r=8 + vision' if lora else ''}", ok,
               f"rc {rc}; " + last_line(text), start)


def check_torchrun(tmp: Path):
    start = time.time()
    if torch.cuda.device_count() < 2:
        record("torchrun 2 ranks NCCL", True, f"skipped: {torch.cuda.device_count()} GPU", start)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from test_scripts_e2e import TINY_FLAGS, make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(ENV, tmp / "ckpt2")
    rc, out = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "flow_sde_ppo.py",
                   "--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "2", "--device", "cuda",
                   "--run-root", str(tmp / "torchrun"), *TINY_FLAGS, "--num-videos", "0", *LORA_FLAGS], 300)
    ok = rc == 0 and "weights identical on all 2 ranks: True" in out
    record("torchrun 2 ranks NCCL, flow_sde_ppo + LoRA", ok, f"rc {rc}; " + last_line(out), start)
    from safetensors.torch import load_file

    final = {}
    for mode in ("fsdp", "plain"):  # full --train-vlm, sharded (FSDP2 over NCCL) and not: the same update
        start = time.time()
        rc, out = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "flow_sde_ppo.py",
                       "--env", ENV, "--checkpoint", str(ckpt), "--total-iterations", "2", "--device", "cuda", "--train-vlm",
                       "--run-root", str(tmp / f"torchrun_{mode}"), *TINY_FLAGS, "--num-videos", "0",
                       *(["--fsdp"] if mode == "fsdp" else [])], 300)
        ok = rc == 0 and "weights identical on all 2 ranks: True" in out
        saved = sorted((tmp / f"torchrun_{mode}").glob("*/checkpoints/iter_000002/policy/model.safetensors"))
        final[mode] = load_file(str(saved[-1])) if ok and saved else None
        record(f"torchrun 2 ranks NCCL, flow_sde_ppo --train-vlm{' --fsdp' if mode == 'fsdp' else ''}", ok,
               f"rc {rc}; " + last_line(out), start)
    if final["fsdp"] is not None and final["plain"] is not None:
        diff = max((final["fsdp"][k].float() - final["plain"][k].float()).abs().max().item() for k in final["plain"])
        record("--fsdp weights == unsharded weights (NCCL)", diff < 1e-5, f"max |Δw| {diff:.2e} after 2 iterations", time.time())


def check_memory():
    """One update step of the 3B π0 (random weights) as flow_sde_ppo.py runs it: encode, step_logprob at
    random SDE steps, PPO-style loss + a critic loss, backward, AdamW; the peak of the second step."""
    sys.path.insert(0, str(ROOT / "bench"))
    import memory as bench_memory

    import common.policy as policy_module
    from common.lora import apply_lora
    from common.policy import Observation, PI0Policy, make_config
    from flow_sde_ppo import Args as PPOArgs
    from flow_sde_ppo import Critic, step_logprob

    start = time.time()
    c = make_config("tiny" if DRY else "pi0")
    with torch.device(DEV):
        policy = PI0Policy(c)
        critic = Critic(c.expert_width, 512)
    policy.set_vlm_dtype(torch.bfloat16)
    policy.freeze_vlm()
    args = PPOArgs(denoise_steps=4, noise_level=0.5, replan_steps=5)
    record("3B π0 built on CUDA (random weights)", True, f"{sum(p.numel() for p in policy.parameters()) / 1e9:.2f} B parameters", start)

    def batch(M):
        g = torch.Generator(device=DEV).manual_seed(0)
        obs = Observation(images=torch.rand(M, c.num_cameras, 3, c.image_size, c.image_size, device=DEV, generator=g) * 2 - 1,
                          image_masks=torch.ones(M, c.num_cameras, dtype=torch.bool, device=DEV),
                          tokens=torch.randint(4, c.vocab_size - 1, (M, c.max_token_len), device=DEV, generator=g),
                          token_masks=torch.ones(M, c.max_token_len, dtype=torch.bool, device=DEV),
                          state=torch.randn(M, c.action_dim, device=DEV, generator=g))
        x_j = torch.randn(M, c.action_horizon, c.action_dim, device=DEV, generator=g)
        return obs, x_j, torch.randn_like(x_j), torch.randint(0, 4, (M,), device=DEV, generator=g)

    def step(optimizer, M, lora):
        obs, x_j, x_next, j = batch(M)
        optimizer.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(lora):
            cache = policy.encode(obs)
        logp, _ = step_logprob(policy, cache, x_j, x_next, j, args, 7)
        value = critic(torch.randn(M, 4, c.expert_width, device=DEV))
        (-(logp - logp.detach()).exp().mean() + value.square().mean()).backward()
        optimizer.step()

    def measure(label, M, lora, grouped, rank=0):
        t0 = time.time()
        policy_module.GROUPED_KV = grouped
        params = [p for p in policy.parameters() if p.requires_grad] + list(critic.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-7)
        try:
            step(optimizer, M, lora)            # allocates gradients and AdamW moments (static memory)
            if DRY:
                step(optimizer, M, lora)
                record(f"update step, {label}, micro-batch {M}", True, "dry run on the CPU: the step runs", t0)
                return None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            step(optimizer, M, lora)
            torch.cuda.synchronize()
            live = torch.cuda.max_memory_allocated()
            predicted = bench_memory.predicted_update_peak("pi0", "vlm-bf16", M, lora_rank=rank, grouped=grouped)
            ok = abs(live / predicted - 1) < 0.25
            record(f"3B update peak, {label}, micro-batch {M}", ok,
                   f"live {live / 1e9:.2f} GB vs bench/memory.py {predicted / 1e9:.2f} GB ({predicted / live - 1:+.0%})", t0)
            return live
        except torch.OutOfMemoryError as err:
            record(f"3B update peak, {label}, micro-batch {M}", False, f"out of memory: {str(err)[:100]}", t0)
        finally:
            policy_module.GROUPED_KV = True
            del optimizer
            for p in list(policy.parameters()) + list(critic.parameters()):
                p.grad = None
            if not DRY:
                torch.cuda.empty_cache()

    grouped = measure("frozen VLM, grouped KV", 32, False, True)
    repeated = measure("frozen VLM, repeated KV (before)", 32, False, False)
    if grouped and repeated:
        rows.append(("GQA saving at micro-batch 32 (live)", True, f"{(repeated - grouped) / 1e9:.2f} GB "
                     f"({(repeated - grouped) / 32 / 1e6:.0f} MB per sample)", 0.0))
    apply_lora(policy, 32)
    measure("LoRA r=32, grouped KV", 8, True, True, rank=32)


def main():
    if not torch.cuda.is_available() and not DRY:
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing was run")
        return 0
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    t0 = time.time()
    print(f"[gpu_check] {'CPU dry run' if DRY else torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, "
          f"torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        for fn, arg in ((check_grouped_attention, None), (check_scripts, tmp), (check_torchrun, tmp), (check_tests, None),
                        (check_memory, None)):
            if (fn is check_memory and "--skip-memory" in sys.argv) or (DRY and fn not in (check_grouped_attention, check_memory)):
                continue
            try:
                fn(arg) if arg is not None else fn()
            except Exception as err:  # a crashed check is a failed row, the others still run
                record(fn.__name__, False, f"{type(err).__name__}: {str(err)[:200]}", t0)
    print("\n| check | result | detail | s |\n|---|---|---|---|")
    for check, ok, detail, seconds in rows:
        print(f"| {check} | {'ok' if ok else 'FAIL'} | {detail.replace('|', '/')} | {seconds:.0f} |")
    print(f"\n{sum(ok for _, ok, _, _ in rows)} of {len(rows)} ok in {time.time() - t0:.0f} s")
    return 0 if all(ok for _, ok, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
