"""Run plumbing of the three RL scripts, none of it algorithm logic: the start of a run (check_flags, resume, start_policy,
resolve_flags, called in that order by each script), the run directory, seeding and RNG state, checkpoints that are atomic
and never hold a non-finite number, resume, the finite guard, and the main loop's held-out eval and rollout counts.

A checkpoint is a folder, published whole (a crash leaves at most a hidden `.tmp_*` folder):
    checkpoints/iter_XXXXXX/
        policy/          the policy in the user's checkpoint format (common/checkpoint.save_policy)
        train_state.pt   optimizer, iteration, global_step, args and the script's own modules (critic, θ')
        rng_rank<r>.pt   every random number generator of rank r
"""

import json
import math
import os
import pickle
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import distributed, hub
from common.errors import UsageError, check_writable, fail
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
    """The checkpoint dir that --resume names: the newest readable, finite checkpoints/iter_* of a run dir, or the
    iter_* dir itself. A checkpoint that cannot be read (a truncated file) or holds a non-finite number is never picked."""
    path = Path(resume)
    if (path / "checkpoints").is_dir():
        found = sorted((path / "checkpoints").glob("iter_*"), reverse=True)
        if not found:
            raise UsageError(f"--resume {resume}: no checkpoints/iter_* in that run")
        for candidate in found:
            problem = checkpoint_problem(candidate)
            if problem is None:
                return candidate
            print(f"--resume: skipping {candidate}: {problem}")
        raise UsageError(f"--resume {resume}: no checkpoint of that run is readable and finite; start a new run")
    if not (path / "train_state.pt").is_file():
        raise UsageError(f"--resume {resume}: expected a run dir or a checkpoints/iter_* dir holding train_state.pt")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise UsageError(f"--resume {resume}: {problem}; resume from an earlier one")
    return path


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why --resume cannot continue from this checkpoint (a file it cannot read, a non-finite value), or None."""
    try:
        bad = non_finite_in_checkpoint(checkpoint)
        for rng_file in sorted(checkpoint.glob("rng_rank*.pt")):
            torch.load(rng_file, weights_only=False)
    except Exception as err:   # truncated or corrupt: torch.load's RuntimeError / EOFError / UnpicklingError, SafetensorError
        return f"it cannot be read ({str(err).splitlines()[0][:160] if str(err) else type(err).__name__})"
    return f"it holds non-finite values ({bad[0]})" if bad else None


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

    def __init__(self, is_main: bool, last_good: Path | None = None):
        self.is_main, self.last_good = is_main, last_good   # last_good: the newest checkpoint written (or resumed from)

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
                    guard: FiniteGuard) -> Path:
    """checkpoints/iter_XXXXXX/{policy/, train_state.pt, rng_rank*.pt}, published atomically by rank 0. With LoRA,
    policy/ holds the merged weights W + BA (the user's format), train_state["lora"] the adapters for --resume, and the
    adapters alone are exported beside them (common/lora.py). Refuses (through the guard) to write anything non-finite."""
    from common import lora

    train_state["lora"] = lora.train_state(policy)   # None without LoRA
    with lora.merged(policy, enabled=distributed.rank() == 0):
        return _save_checkpoint(run_dir, iteration, policy, processor, train_state, rng, guard,
                                export=lambda folder: lora.export_adapters(train_state["lora"], folder))


def _save_checkpoint(run_dir: Path, iteration: int, policy, processor, train_state: dict, rng: dict,
                     guard: FiniteGuard, export) -> Path:
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
RULES = {">= 1": lambda v: v >= 1, ">= 0": lambda v: v >= 0, "> 0": lambda v: v > 0, "in [0, 1]": lambda v: 0 <= v <= 1}
RANGE_OF = {**dict.fromkeys(AT_LEAST_ONE + ("max_episode_steps",), ">= 1"), **dict.fromkeys(NOT_NEGATIVE, ">= 0"),
            **dict.fromkeys(POSITIVE, "> 0"), **dict.fromkeys(IN_UNIT_INTERVAL, "in [0, 1]")}


def check_flag_ranges(args) -> None:
    """The range of every numeric flag of the script's Args that is set (None: filled from a preset later), before
    anything is built."""
    for field in fields(args):
        value, rule = getattr(args, field.name), RANGE_OF.get(field.name)
        if rule is not None and value is not None and not RULES[rule](value):
            raise UsageError(f"--{field.name.replace('_', '-')} must be {rule}, got {value}")
    if args.checkpoint is not None:   # a local dir or a Hub id (org/name[@revision]); nothing is downloaded yet
        hub.check_checkpoint_spec(args.checkpoint)


def check_fsdp(args, world_size: int, policy) -> None:
    """--fsdp shards a trained VLM over torchrun's ranks; every other combination is one `error:` line."""
    if not args.fsdp:
        return
    if world_size < 2:
        raise UsageError("--fsdp shards the policy over torchrun's ranks: launch with torchrun --nproc_per_node N, N >= 2")
    if not args.train_vlm:
        raise UsageError("--fsdp is for --train-vlm (a frozen VLM, with or without LoRA, fits one GPU: bench/memory.py)")
    if policy.config.variant == "groot":
        raise UsageError("--fsdp shards π0 / π0.5 (PaliGemma + Gemma expert) only, not GR00T")


def load_checkpoint(path: str, flag: str = "--checkpoint", **kwargs):
    """common.checkpoint.load_policy of a dir or a Hub id, with a broken checkpoint reported as one line naming the flag and it."""
    from safetensors import SafetensorError

    from common.checkpoint import load_policy

    path = str(hub.resolve_checkpoint(path, flag))   # a Hub id (org/name[@revision]) -> its snapshot in the HF cache
    try:
        return load_policy(path, **kwargs)
    except UsageError:
        raise
    except SafetensorError as err:
        raise UsageError(f"{flag} {path}: a .safetensors file there is truncated or not safetensors ({err})") from None
    except (FileNotFoundError, ValueError, KeyError, EOFError, RuntimeError, OSError, pickle.UnpicklingError) as err:
        raise UsageError(f"{flag} {path}: cannot load it: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def load_for_env(spec: str, env: str, data_config: str | None = None, flag: str = "--checkpoint",
                 context: str | None = None, **kwargs):
    """A checkpoint (local dir or Hub id) made ready for `env`: (policy, processor, its local dir). The processor gets
    the checkpoint's data conventions (conventions.resolve_data_config: what its files record, else `data_config`, else
    a paper Hub id's own, else an unambiguous default) and which env camera feeds each image slot (camera_order)."""
    from common.conventions import camera_order, resolve_data_config

    data_config = data_config or hub.known_data_config(spec)   # a paper checkpoint's own
    path = str(hub.resolve_checkpoint(spec, flag, context))    # a Hub id: rank 0 downloads it, into the HF cache
    policy, processor = load_checkpoint(path, flag, **kwargs)
    processor.data_config = resolve_data_config(data_config, processor, env, path)
    processor.camera_order = camera_order(processor, env)   # a LeRobot / Isaac-GR00T model's image slots, by camera name
    return policy, processor, path


# ---- the start of a run: each script calls these in this order ----------------------------------
def check_flags(args) -> None:
    """What the command line alone can get wrong, one `error:` line before torch.distributed, the model's code or a
    simulator: --env, the range of every numeric flag, a scripted expert and one of pirl's data configs for the embedded default,
    a writable --run-root (and --cache-dir, where the embedded default is made), and wandb for --track."""
    import importlib.util

    from common.conventions import check_embedded_data_config
    from common.envs import check_env_name
    from common.sft import check_checkpoint_or_expert, default_cache_dir

    check_env_name(args.env)
    check_flag_ranges(args)
    # no --checkpoint: the paper's SFT checkpoint for --env x --model (common/hub.py), else demos -> SFT -> this run
    paper = hub.default_checkpoint(args.env, args.model) if args.resume is None and args.checkpoint is None else None
    embedded_default = args.model in (None, "tiny", "tiny-groot") and paper is None
    if args.resume is None and args.checkpoint is None and embedded_default:
        check_checkpoint_or_expert(None, args.env)   # the embedded default needs a scripted expert
        check_embedded_data_config(args.data_config)   # and is trained under one of pirl's rows
        check_writable(args.cache_dir or default_cache_dir(), "--cache-dir")   # where its demos and SFT policy are cached
    check_writable(args.run_root, "--run-root")
    if args.track and importlib.util.find_spec("wandb") is None:
        raise UsageError("--track logs to Weights & Biases, which is not installed: pip install wandb")


@dataclass
class Resumed:
    """What --resume continues from."""
    checkpoint: Path    # the run's newest readable, finite checkpoints/iter_* dir
    args: Any           # the run's saved flags, except those given on this command line
    train_state: dict   # optimizer, iteration, global_step, the script's own modules (critic, θ')


def resume(args, args_cls) -> Resumed:
    """--resume: the checkpoint, the flags and the train state the run continues from (resume_checkpoint, resumed_args)."""
    checkpoint = resume_checkpoint(args.resume)
    resumed, saved = resumed_args(args_cls, args, checkpoint, argv=sys.argv[1:])
    before = saved["args"].get("total_iterations")
    if resumed.anneal_lr and before != resumed.total_iterations and distributed.rank() == 0:
        print(f"--resume: --total-iterations {before} -> {resumed.total_iterations} stretches the cosine LR schedule "
              f"(--anneal-lr) over the new length from iteration {saved['iteration'] + 1} on")
    return Resumed(checkpoint, resumed, saved)


def start_policy(args, device: torch.device):
    """The policy (and its processor) the run starts from: --checkpoint, the resumed run's checkpoint (resumed_args
    points --checkpoint at its policy/), or the embedded default's few-shot SFT policy, built by rank 0 and cached."""
    from common.checkpoint import vlm_dtype   # the model's code (transformers): imported once the flags are good
    from common.sft import make_default_sft_policy

    paper = hub.default_checkpoint(args.env, args.model) if args.checkpoint is None else None
    if args.checkpoint is None and paper is None:   # the embedded default
        args.checkpoint = str(make_default_sft_policy(args.env, cache_dir=args.cache_dir, seed=0,
                                                      preset="tiny-groot" if args.model == "tiny-groot" else "tiny",
                                                      data_config=args.data_config))
    # else a local dir, or a Hub id (the paper's, without --checkpoint) downloaded by rank 0 into the HF cache
    policy, processor, args.checkpoint = load_for_env(
        args.checkpoint or paper, args.env, args.data_config, context=hub.paper_context(args.env, args.model) if paper else None,
        device=device, asset_id=args.asset_id, embodiment=args.embodiment, dtype=vlm_dtype(args.vlm_dtype, device, args.train_vlm))
    args.data_config = processor.data_config.name   # what the run used (args.json)
    return policy, processor


PAPER_VISION_WIDTH = 1152   # SigLIP So400m: the vision tower of π0, π0.5 and GR00T N1.5 alike


def model_family(config) -> str:
    """Whose presets a loaded policy takes, read from its config: a model with the paper's vision tower -> its variant
    (pi0, pi05, groot); the CPU presets' narrow test-size models (tiny, tiny-pi05, tiny-groot) -> tiny."""
    return config.variant if config.vision_width >= PAPER_VISION_WIDTH else "tiny"


def resolve_flags(args, policy, world_size: int, preset, check_args, resolve_args=None):
    """Every flag left at None from the script's `preset` for --env x --model (--model: the policy's family when
    omitted; `resolve_args(args, family)` where a script fills more than fill_from_preset does), --lora-preset on top,
    then the script's flag combinations (`check_args`) and --fsdp."""
    from common.lora import resolve_preset

    family = model_family(policy.config)
    try:
        resolve_preset(args, preset(args.env, args.model or family))   # --lora-preset first: it sets LR / epochs
        if resolve_args is None:
            fill_from_preset(args, family, preset)
        else:
            args = resolve_args(args, family)
        check_args(args, world_size, policy.config.action_horizon)
    except ValueError as err:   # a bad flag combination: say which, no stack trace
        raise UsageError(str(err)) from None
    check_fsdp(args, world_size, policy)   # --fsdp: --train-vlm under torchrun, π0 / π0.5
    return args


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


def report(logger, before: float | None, after: float, world: int, in_sync: bool, run_dir: Path, run_root: str) -> None:
    """The end of a run on rank 0 (the one with a logger): the held-out success before and after RL, the learning curve,
    where the run lives."""
    if logger is None:
        return
    plot = logger.plot_learning_curve()
    if before is not None:
        print(f"held-out success: before RL {before:.1%} -> after RL {after:.1%} ({(after - before) * 100:+.1f} points)")
    else:
        print(f"held-out success after RL: {after:.1%}")
    print(f"weights identical on all {world} ranks: {in_sync}")
    print(f"run: {run_dir}  (tensorboard --logdir {run_root}; curve: {plot})")
    logger.close()


class EpisodeCounts:
    """The PPO scripts' training episodes of one iteration, for rollout_charts: the success and length of every finished
    episode, and whether each env's first episode of a rollout epoch was solved (one still running at its end: not)."""

    def __init__(self):
        self.success, self.lengths, self.first_success, self.env_reward = [], [], [], 0.0
        self.first_done = np.zeros(0, dtype=bool)   # per env: its first episode of the current epoch has ended

    def start_epoch(self, num_envs: int) -> None:
        self.first_done = np.zeros(num_envs, dtype=bool)

    def step(self, reward: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, info: dict) -> None:
        self.env_reward += float(np.sum(reward))
        for i in np.flatnonzero(terminated | truncated):
            self.success.append(float(info["success"][i] or terminated[i]))
            self.lengths.append(int(info["episode_length"][i]))
            if not self.first_done[i]:
                self.first_done[i] = True
                self.first_success.append(float(info["success"][i] or terminated[i]))

    def end_epoch(self) -> None:
        self.first_success += [0.0] * int((~self.first_done).sum())

    @staticmethod
    def warn_if_unrewarded(totals: dict, iteration: int) -> None:
        """One line when no training episode of the iteration earned any reward: its update had nothing to learn from."""
        if totals["env_reward"] == 0:
            from tqdm import tqdm

            tqdm.write(f"warning: iteration {iteration}: no episode earned any reward, so this update had no success "
                       "signal to learn from (longer episodes, more envs or a better SFT start would help)")

    def totals(self, steps_per_second: float, device) -> dict:
        """The counts summed over ranks (rollout_charts' input)."""
        return distributed.all_reduce_sum({"episodes": len(self.success), "solved": sum(self.success),
                                           "lengths": sum(self.lengths), "first": len(self.first_success),
                                           "first_solved": sum(self.first_success), "env_reward": self.env_reward,
                                           "steps_per_second": steps_per_second}, device)


# ---- the main loop's plumbing ---------------------------------------------------------------------
def rollout_decisions(num_envs: int, interaction_steps: int, replan_steps: int, rollout_epochs: int = 1) -> int:
    """The policy decisions (action chunks) one rollout collects: the PPO batch the minibatches split."""
    return num_envs * rollout_epochs * (interaction_steps // replan_steps)


def check_batch_sizes(args, world_size: int, action_horizon: int) -> None:
    """The rollout and minibatch sizes of every script (each script's check_args adds its own): ValueError naming the flags."""
    if args.replan_steps < 1 or args.replan_steps > action_horizon:
        raise ValueError(f"--replan-steps must be in 1..{action_horizon} (the model's action horizon H), got {args.replan_steps}")
    if args.interaction_steps % args.replan_steps:
        raise ValueError(f"--interaction-steps ({args.interaction_steps}) must be a multiple of --replan-steps ({args.replan_steps})")
    if args.num_envs % world_size:
        raise ValueError(f"--num-envs ({args.num_envs}) must be divisible by the number of ranks ({world_size})")
    if args.minibatch_size % world_size or (args.minibatch_size // world_size) % args.micro_batch_size:
        raise ValueError(f"--minibatch-size ({args.minibatch_size}) must split into {world_size} ranks x whole "
                         f"micro-batches of --micro-batch-size ({args.micro_batch_size})")
    batch = rollout_decisions(args.num_envs, args.interaction_steps, args.replan_steps, args.rollout_epochs)
    if batch % args.minibatch_size:
        raise ValueError(f"the rollout batch (num_envs x rollout_epochs x interaction_steps / replan_steps = {batch}) "
                         f"must be a multiple of --minibatch-size ({args.minibatch_size})")
    if args.denoise_steps < 1:
        raise ValueError(f"--denoise-steps must be >= 1, got {args.denoise_steps}")


def held_out_eval(policy, processor, envs, args, run_dir: Path, logger, global_step: int, iteration: int,
                  final: bool = False) -> float:
    """The held-out success rate of the deterministic ODE policy (common/evaluate.py) on the training envs, borrowed
    without autoreset (every rollout epoch starts with a reset anyway); rank 0 logs it under eval/ and writes its summary
    to eval/iter_XXXXXX.json, and the final one saves --num-videos episodes."""
    from common.evaluate import evaluate, policy_act_fn

    act_fn = policy_act_fn(distributed.unsharded(policy), processor, num_steps=args.denoise_steps, replan_steps=args.replan_steps)
    autoreset, envs.autoreset = envs.autoreset, False
    summary = evaluate(act_fn, args.env, num_episodes_per_task=args.eval_episodes_per_task, envs=envs, seed=args.seed,
                       video_dir=str(run_dir / "eval" / "videos") if final and logger else None,
                       num_videos=args.num_videos if final else 0)
    envs.autoreset = autoreset
    if logger:
        logger.log(global_step, {"eval/success_rate": summary["success_rate"], "eval/episode_length": summary["episode_length"]})
        (run_dir / "eval").mkdir(parents=True, exist_ok=True)
        (run_dir / "eval" / f"iter_{iteration:06d}.json").write_text(json.dumps(summary, indent=2))
    return summary["success_rate"]


def restore(resume_dir: Path, saved: dict, optimizer, modules: dict, sampler_gen: torch.Generator,
            np_rng: np.random.Generator) -> tuple[int, int]:
    """--resume: the script's own modules (all of `modules` but the policy, which start_policy loaded), the optimizer,
    this rank's RNGs. Returns the iteration to continue from and the global step."""
    for name, module in modules.items():
        if name != "policy":
            module.load_state_dict(saved[name])
    distributed.load_optimizer_state(optimizer, modules, saved["optimizer"])
    set_rng_state(torch.load(resume_dir / f"rng_rank{distributed.rank()}.pt", weights_only=False), sampler_gen, np_rng)
    return saved["iteration"] + 1, saved["global_step"]


def check_in_sync(device, *modules) -> bool:
    """True when every rank ends with the same weights; a RuntimeError (a broken all-reduce or seeding) otherwise."""
    if not all(distributed.parameters_in_sync(m, device) for m in modules):
        raise RuntimeError("ranks ended with different weights: gradient all-reduce or seeding is broken")
    return True


def fill_from_preset(args, checkpoint_family: str | None, preset) -> None:
    """--model (the checkpoint's family when omitted; a full-size checkpoint must match it), then every flag left at None
    from preset(--env, --model)."""
    if args.model is None:
        args.model = checkpoint_family or "tiny"
    if checkpoint_family is not None and checkpoint_family != "tiny" and args.model != checkpoint_family:
        raise ValueError(f"--model {args.model} does not match the checkpoint, which holds a {checkpoint_family} model")
    for key, value in preset(args.env, args.model).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def select_obs(raw_obs: dict, rows) -> dict:
    """Rows of a raw observation dict (images, state, instruction, task_id)."""
    rows = np.asarray(rows)
    return {"images": raw_obs["images"][rows], "state": raw_obs["state"][rows],
            "instruction": [raw_obs["instruction"][i] for i in rows], "task_id": raw_obs["task_id"][rows]}
