"""Run plumbing of the three RL scripts, none of it algorithm logic: the run directory, seeding and RNG
state, checkpoints that are atomic and never hold a non-finite number, resume, and the finite guard.

A checkpoint is a folder, published whole (a crash leaves at most a hidden `.tmp_*` folder):
    checkpoints/iter_XXXXXX/
        policy/          the policy in the user's checkpoint format (common/checkpoint.save_policy)
        train_state.pt   optimizer, iteration, global_step, args and the script's own modules (critic, θ')
        rng_rank<r>.pt   every random number generator of rank r
"""

import math
import os
import pickle
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from common import distributed
from common.errors import UsageError, fail
from common.logger import atomic_torch_save, publish_dir


# ---- start of a run -------------------------------------------------------------------------------
def seed_everything(seed: int, rank: int, device: torch.device, deterministic: bool):
    """Seed python / numpy / torch (same weights on every rank, per-rank environments and sampling noise).
    deterministic: CleanRL's torch_deterministic: deterministic kernels, so that the same seed and flags
    give the same numbers on the same machine. Returns the sampler's torch.Generator and the numpy RNG."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be deterministic
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    sampler_gen = torch.Generator(device=device).manual_seed(seed * 1000 + rank)
    return sampler_gen, np.random.default_rng(seed * 1000 + rank)


def rng_state(generator: torch.Generator, np_rng: np.random.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": np_rng.bit_generator.state, "python": random.getstate(), "sampler": generator.get_state()}


def set_rng_state(state: dict, generator: torch.Generator, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_rng.bit_generator.state = state["numpy"]
    random.setstate(state["python"])
    generator.set_state(state["sampler"])


def new_run_dir(run_root: str, env: str, exp_name: str, seed: int) -> Path:
    """runs/<env>__<exp_name>__<seed>__<unix time>, rank 0's clock shared by every rank."""
    stamp = [int(time.time())]
    if distributed.world_size() > 1:
        torch.distributed.broadcast_object_list(stamp, src=0)
    return Path(run_root) / f"{env}__{exp_name}__{seed}__{stamp[0]}"


# ---- resume ---------------------------------------------------------------------------------------
def resume_checkpoint(resume: str) -> Path:
    """The checkpoint dir that --resume names: the newest finite checkpoints/iter_* of a run dir, or the
    iter_* dir itself. A checkpoint holding a non-finite number is never picked."""
    path = Path(resume)
    if (path / "checkpoints").is_dir():
        found = sorted((path / "checkpoints").glob("iter_*"), reverse=True)
        if not found:
            raise UsageError(f"--resume {resume}: no checkpoints/iter_* in that run")
        for candidate in found:
            bad = non_finite_in_checkpoint(candidate)
            if not bad:
                return candidate
            print(f"--resume: skipping {candidate}: it holds non-finite values ({bad[0]})")
        raise UsageError(f"--resume {resume}: every checkpoint of that run holds non-finite values; start a new run")
    if not (path / "train_state.pt").is_file():
        raise UsageError(f"--resume {resume}: expected a run dir or a checkpoints/iter_* dir holding train_state.pt")
    bad = non_finite_in_checkpoint(path)
    if bad:
        raise UsageError(f"--resume {resume}: that checkpoint holds non-finite values ({bad[0]}); resume from an earlier one")
    return path


def flags_on_command_line(argv: list[str], names) -> set[str]:
    """The Args fields among `names` that argv sets (tyro's spelling: --time-limit X, --time-limit=X, --no-progress)."""
    tokens = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {n for n in names if {f"--{n.replace('_', '-')}", f"--no-{n.replace('_', '-')}", f"--{n}"} & tokens}


def resumed_args(args_cls, args, checkpoint: Path, argv: list[str] | None = None):
    """The saved flags of the run, except those given on this command line (e.g. a larger --total-iterations),
    and the saved train state (optimizer, counters, the script's own modules). A flag counts as given when it
    differs from its default or appears in argv (the command line: `--time-limit bootstrap` overrides a saved
    `terminal` although bootstrap is the default)."""
    saved = torch.load(checkpoint / "train_state.pt", map_location="cpu", weights_only=False)
    on_command_line = flags_on_command_line(argv or [], asdict(args))
    given = {k: v for k, v in asdict(args).items() if v != getattr(args_cls(), k) or k in on_command_line}
    args = args_cls(**{**saved["args"], **given})
    args.checkpoint = str(checkpoint / "policy")
    return args, saved


# ---- the finite guard -----------------------------------------------------------------------------
def non_finite_names(named_values) -> list[str]:
    """Names whose value (a number, a tensor, or a nested dict / list of them) holds NaN or ±inf."""
    bad = []
    for name, value in named_values:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, float):
            if not math.isfinite(value):
                bad.append(name)
        elif isinstance(value, dict):
            bad += non_finite_names((f"{name}.{k}", v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            bad += non_finite_names((f"{name}[{i}]", v) for i, v in enumerate(value))
    return bad


def non_finite_in_checkpoint(checkpoint: Path) -> list[str]:
    """Non-finite tensors of a saved checkpoint: its policy weights and its train state."""
    from safetensors import safe_open

    bad = []
    for weights in sorted((checkpoint / "policy").glob("*.safetensors")):
        with safe_open(str(weights), "pt") as f:
            bad += [f"{weights.name}:{k}" for k in f.keys() if non_finite_names([(k, f.get_tensor(k))])]
    state = torch.load(checkpoint / "train_state.pt", map_location="cpu", weights_only=False)
    return bad + non_finite_names((k, v) for k, v in state.items() if k != "args")


class FiniteGuard:
    """Stops the run at the first non-finite loss, gradient norm or weight, with one line naming the
    iteration, the quantity and the last good checkpoint; nothing is saved after it.
    Check values that are equal on every rank (all-reduced ones, weights): every rank then stops together."""

    def __init__(self, is_main: bool):
        self.is_main, self.last_good = is_main, None

    def check(self, iteration: int, values: dict) -> None:
        bad = non_finite_names(values.items())
        if bad:
            self._stop(iteration, f"{bad[0]} = {values[bad[0]]}")

    def check_weights(self, iteration: int, *modules: torch.nn.Module) -> None:
        """Every rank checks what it holds: an FSDP policy's own shards, whose verdicts are then combined (any
        rank's non-finite shard stops every rank)."""
        for module in modules:
            bad = non_finite_names((n, distributed.local_tensor(p)) for n, p in module.named_parameters())
            if distributed.is_sharded(module):
                device = distributed.local_tensor(next(module.parameters())).device
                if distributed.any_rank(bool(bad), device) and not bad:
                    bad = ["a shard on another rank"]
            if bad:
                self._stop(iteration, f"{len(bad)} weight tensors after the update (e.g. {bad[0]})")

    def _stop(self, iteration: int, what: str) -> None:
        last = f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint was written"
        message = (f"iteration {iteration}: non-finite {what}; the run stops here, nothing is saved after it and "
                   f"{last} (try a smaller --actor-lr)")
        if self.is_main:
            fail(message)
        raise SystemExit(2)


# ---- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(run_dir: Path, iteration: int, policy, processor, train_state: dict, rng: dict,
                    guard: FiniteGuard, export=None) -> Path:
    """checkpoints/iter_XXXXXX/{policy/, train_state.pt, rng_rank*.pt}, published atomically by rank 0.
    export(folder), if given, writes more files into the checkpoint before it is published (LoRA adapters).
    Refuses (through the guard) to write anything non-finite."""
    from common.checkpoint import save_policy

    guard.check_weights(iteration, policy)
    guard.check(iteration, {f"train_state.{k}": v for k, v in train_state.items() if k != "args"})
    is_main, rank = distributed.rank() == 0, distributed.rank()
    final_dir = run_dir / "checkpoints" / f"iter_{iteration:06d}"
    tmp_dir = final_dir.with_name(f".tmp_{final_dir.name}")
    if is_main:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
    distributed.barrier()
    atomic_torch_save(rng, tmp_dir / f"rng_rank{rank}.pt")
    # an FSDP policy (collective): its full weights gathered into a plain CPU copy on rank 0, saved as without FSDP
    full = distributed.full_policy_copy(policy) if distributed.is_sharded(policy) else policy
    distributed.barrier()
    if is_main:
        try:
            save_policy(tmp_dir / "policy", full, processor)
            atomic_torch_save(train_state, tmp_dir / "train_state.pt")
            if export is not None:
                export(tmp_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)  # a full disk leaves no half-written checkpoint
            raise
        publish_dir(tmp_dir, final_dir)
    distributed.barrier()
    guard.last_good = final_dir
    return final_dir


# ---- flags ----------------------------------------------------------------------------------------
AT_LEAST_ONE = ("total_iterations", "num_envs", "interaction_steps", "rollout_epochs", "minibatch_size", "micro_batch_size",
                "update_epochs", "denoise_steps", "replan_steps", "save_every", "eval_episodes_per_task", "group_size")
NOT_NEGATIVE = ("eval_every", "num_videos", "max_grad_norm", "vf_coef", "kl_coef", "entropy_coef")
POSITIVE = ("actor_lr", "critic_lr", "clip_coef", "critic_hidden", "noise_hidden")
IN_UNIT_INTERVAL = ("gamma", "gae_lambda")


def check_flag_ranges(args) -> None:
    """The range of every numeric flag that is set (None: filled from a preset later), before anything is built."""
    def bad(name, rule):
        raise UsageError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(args, name)}")

    for name in AT_LEAST_ONE:
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            bad(name, ">= 1")
    for name in NOT_NEGATIVE:
        if getattr(args, name, None) is not None and getattr(args, name) < 0:
            bad(name, ">= 0")
    for name in POSITIVE:
        if getattr(args, name, None) is not None and not getattr(args, name) > 0:
            bad(name, "> 0")
    for name in IN_UNIT_INTERVAL:
        if getattr(args, name, None) is not None and not 0.0 <= getattr(args, name) <= 1.0:
            bad(name, "in [0, 1]")
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        bad("max_episode_steps", ">= 1")
    if args.checkpoint is not None and not Path(args.checkpoint).is_dir():
        raise UsageError(f"--checkpoint {args.checkpoint}: no such directory (a local SFT checkpoint dir: openpi, LeRobot or RLinf)")


def check_fsdp(args, world_size: int, policy) -> None:
    """--fsdp shards a trained VLM over torchrun's ranks; every other combination is one `error:` line."""
    if not getattr(args, "fsdp", False):
        return
    if world_size < 2:
        raise UsageError("--fsdp shards the policy over torchrun's ranks: launch with torchrun --nproc_per_node N, N >= 2")
    if not args.train_vlm:
        raise UsageError("--fsdp is for --train-vlm (a frozen VLM, with or without LoRA, fits one GPU: bench/memory.py)")
    if policy.config.variant == "groot":
        raise UsageError("--fsdp shards π0 / π0.5 (PaliGemma + Gemma expert) only, not GR00T")


def load_checkpoint(path: str, flag: str = "--checkpoint", **kwargs):
    """common.checkpoint.load_policy, with a broken checkpoint dir reported as one line naming the flag and it."""
    from safetensors import SafetensorError

    from common.checkpoint import load_policy

    try:
        return load_policy(path, **kwargs)
    except UsageError:
        raise
    except SafetensorError as err:
        raise UsageError(f"{flag} {path}: a .safetensors file there is truncated or not safetensors ({err})") from None
    except (FileNotFoundError, ValueError, KeyError, EOFError, RuntimeError, OSError, pickle.UnpicklingError) as err:
        raise UsageError(f"{flag} {path}: cannot load it: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def start(args, args_cls, preset, resolve_args, check_args):
    """The three scripts' start, everything that can fail before a simulator is built, in this order: the
    flags (before the model's code is even imported), the embedded default's scripted expert, --run-root,
    torch.distributed, --resume (its saved flags, overridden by those given now), the checkpoint (or the
    embedded default's few-shot SFT policy, built by rank 0 and cached), the script's presets for --env x
    --model (`preset`, `resolve_args`), its flag combinations (`check_args`) and --fsdp.
    Returns (args, saved train state | None, resume checkpoint dir | None, Dist, policy, processor)."""
    from common.envs import check_env_name
    from common.errors import check_writable
    from common.lora import resolve_preset
    from common.sft import check_checkpoint_or_expert, make_default_sft_policy

    check_env_name(args.env)
    check_flag_ranges(args)
    embedded_default = args.model in (None, "tiny", "tiny-groot")   # no --checkpoint: demos -> SFT -> this run
    if args.resume is None and embedded_default:
        check_checkpoint_or_expert(args.checkpoint, args.env)   # the embedded default needs a scripted expert
    check_writable(args.run_root, "--run-root")
    dist_info = distributed.setup_distributed(args.device)
    from common.checkpoint import vlm_dtype   # the model's code (transformers): imported once the flags are good

    resume_dir = resume_checkpoint(args.resume) if args.resume is not None else None
    saved = None
    if resume_dir is not None:
        args, saved = resumed_args(args_cls, args, resume_dir, argv=sys.argv[1:])
    elif args.checkpoint is None and embedded_default:
        args.checkpoint = str(make_default_sft_policy(args.env, cache_dir=args.cache_dir, seed=0,
                                                      preset="tiny-groot" if args.model == "tiny-groot" else "tiny"))
    elif args.checkpoint is None:
        raise UsageError(f"--model {args.model} needs --checkpoint DIR (a local SFT checkpoint: nothing is downloaded); "
                         "without --checkpoint only --model tiny / tiny-groot (the embedded default) runs")
    policy, processor = load_checkpoint(args.checkpoint, device=dist_info.device, asset_id=args.asset_id,
                                        dtype=vlm_dtype(args.vlm_dtype, dist_info.device, args.train_vlm),
                                        embodiment=args.embodiment)
    family = policy.config.variant if sum(p.numel() for p in policy.parameters()) > 1e8 else "tiny"
    try:
        resolve_preset(args, preset(args.env, args.model or family))   # --lora-preset first: it sets LR / epochs
        args = resolve_args(args, family)
        check_args(args, dist_info.world_size, policy.config.action_horizon)
    except ValueError as err:   # a bad flag combination: say which, no stack trace
        raise UsageError(str(err)) from None
    check_fsdp(args, dist_info.world_size, policy)   # --fsdp: --train-vlm under torchrun, π0 / π0.5
    return args, saved, resume_dir, dist_info, policy, processor


# ---- logging --------------------------------------------------------------------------------------
def rollout_charts(totals: dict) -> dict:
    """Charts of the training rollouts (SDE sampler, training initial states: not the held-out eval/success_rate),
    from counts summed over ranks. rollout_success_rate counts the first episode of every env in each rollout
    epoch (solved inside the window or not), so it does not favour short, successful episodes as the rate over
    all finished episodes (rollout_success_finished_episodes) does."""
    nan = float("nan")
    episodes = totals["episodes"]
    return {"charts/rollout_success_rate": totals["first_solved"] / totals["first"] if totals["first"] else nan,
            "charts/rollout_success_finished_episodes": totals["solved"] / episodes if episodes else nan,
            "charts/episodes": episodes,
            "charts/episode_length": totals["lengths"] / episodes if episodes else nan,
            "charts/env_reward": totals["env_reward"],
            "charts/env_steps_per_second": totals["steps_per_second"]}
