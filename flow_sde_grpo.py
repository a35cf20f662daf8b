"""Flow-SDE + GRPO: online RL fine-tuning of a flow-matching VLA (π0 / π0.5), πRL 4.2 and appendix A.

flow_sde_ppo.py with the critic and GAE replaced by group-normalised episode scores (eq. 17): every
rollout epoch starts G envs from the same initial condition (task, init state), runs one episode per
env, and each episode's binary success, normalised within its group, is the advantage of all its
decisions. The sampler (eq. 8-9), hybrid ODE-SDE rollouts (4.2.3) and the clipped update (eq. 14-15)
are those of flow_sde_ppo.py, written out again here on purpose (one algorithm, one file). The
model, simulators, evaluation, logging and torch.distributed plumbing come from common/. Options beside
the defaults (RLinf's choices, defaults unchanged until measured): --loss-normalisation all (a mean over
every row, dropped ones adding zeros), --episode-weighting, and --num-groups (initial conditions per
rollout epoch; the tiny preset has 4 groups of 8 per iteration, RLinf's LIBERO runs 64).

Launch:
    python flow_sde_grpo.py                                  # embedded default: CPU, tiny π0, MetaWorld
    torchrun --nproc_per_node 8 flow_sde_grpo.py --env libero-long   # the paper's setup: its π0 SFT checkpoint (Hub, common/hub.py)
    python flow_sde_grpo.py --env libero-long --checkpoint RLinf/RLinf-Pi0-LIBERO-Long-SFT@main   # a Hub id or a local dir
    python flow_sde_grpo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft        # 1 GPU
    torchrun --standalone --nproc_per_node 8 flow_sde_grpo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft
    torchrun --standalone --nproc_per_node 8 flow_sde_grpo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft \
        --train-vlm --fsdp --micro-batch-size 4   # the VLM trained too, 3B sharded over the GPUs (bench/memory.py)
    # 2 nodes x 8 GPUs (run on each node, node_rank 0 and 1):
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr $HEAD --master_port 29500 \
        flow_sde_grpo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft
    python flow_sde_grpo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft --lora-preset lora-ii  # + LoRA on the VLM (5.5)
    python flow_sde_grpo.py --resume runs/<run_name>         # continue a stopped run exactly

Time convention (openpi, used by every checkpoint we load): t = 1 is pure noise, t = 0 is the action,
x_t = t * noise + (1 - t) * action and the network predicts v = noise - action. Denoising walks
t_k = 1 - k / K for k = 0..K-1 with Δ = 1 / K, so the ODE (Euler) step is x <- x - Δ v.
The paper's τ is 1 - t (τ = 0 noise, τ = 1 action) for the ODE of eq. 6 and the Euler step of section
3.2; its eq. 8 however borrows Flow-GRPO's score identity ∇log q = -(x + (1 - t) v) / t, which is
only true in *our* convention (t the noise level, v = noise - action). We therefore write eq. 8-9
entirely in openpi time; tests/test_flow_sde_ppo.py shows that this keeps the ODE's marginals and
that reading the same formulas in the other convention does not.
"""

import math
import time
from dataclasses import asdict, dataclass
from typing import Annotated, Literal, Optional, TypeVar

import numpy as np
import torch
import tyro


# A flag left at None takes the preset of --env x --model (the paper's Tables 7-8: `preset` below); --help shows its tiny value.
T = TypeVar("T")
Preset = Annotated[Optional[T], tyro.conf.DisallowNone]   # --flag VALUE (never None on the command line)


def tiny(name: str):
    return tyro.conf.arg(help_behavior_hint=lambda _: f"(default: from the --env x --model preset; tiny: {TINY_CPU[name]})")


def unset(meaning: str):   # --help says what leaving the flag out does, not "(default: None)"
    return tyro.conf.arg(help_behavior_hint=f"(default: {meaning})")


@dataclass
class Args:
    # --- experiment ---
    env: str = "metaworld-drawer-open-v3"
    """simulator task: libero-{spatial,object,goal,long,90}, maniskill-<Task-v1>, metaworld-<task-v3>, metaworld-mt10, metaworld-mt50"""
    model: Annotated[Optional[Literal["tiny", "pi0", "pi05", "tiny-groot", "groot"]],
                     unset("the --checkpoint's family; without one `tiny`, or `pi0` on an env with no scripted expert "
                           "(LIBERO, maniskill-put-on-plate)")] = None
    """preset family: `tiny` (the embedded default), `pi0` (the paper's default family), `pi05`,
    `tiny-groot`: the embedded default with a tiny GR00T N1.5; `groot`: GR00T N1.5 (π0's presets, appendix C)"""
    checkpoint: Annotated[Optional[str], unset("the paper's SFT checkpoint for --env x --model; the embedded tiny SFT policy "
                                               "(made or reused) with --model tiny / tiny-groot, or no --model on an env "
                                               "with a scripted expert")] = None
    """a local SFT checkpoint dir (openpi / LeRobot / RLinf) or a Hugging Face Hub id org/name[@revision]: rank 0
    downloads it into the HF cache (HF_HOME, HF_HUB_OFFLINE, HF_TOKEN, HF_ENDPOINT apply).
    The paper's SFT checkpoints (common/hub.py; tools/which_checkpoint.py --table):
    π0: RLinf/RLinf-Pi0-LIBERO-Spatial-Object-Goal-SFT (libero-spatial, -object, -goal), RLinf/RLinf-Pi0-LIBERO-Long-SFT;
    π0.5: RLinf/RLinf-Pi05-LIBERO-SFT (the four LIBERO suites);
    RLinf/RLinf-Pi0-ManiSkill-25Main-SFT, RLinf/RLinf-Pi05-ManiSkill-25Main-SFT (maniskill-put-on-plate);
    RLinf/RLinf-Pi0-MetaWorld-SFT, RLinf/RLinf-Pi05-MetaWorld-SFT (metaworld-*);
    GR00T N1.5 (--model groot): RLinf/RLinf-Gr00t-SFT-Spatial, RLinf/RLinf-Gr00t-SFT-Object, RLinf/RLinf-Gr00t-SFT-Goal,
    RLinf/RLinf-Gr00t-SFT-10 (libero-long)"""
    asset_id: Annotated[Optional[str], unset("the only one")] = None
    """openpi / RLinf checkpoints with several norm stats (assets/<id>/): which one"""
    data_config: Annotated[Optional[str], unset("what the checkpoint records, else a paper Hub id's own, else the one its "
                                                "format and --env imply; an openpi / RLinf π0 on LIBERO must name it")] = None
    """the checkpoint's training data conventions (common/conventions.py), where its files do not record them:
    pi0_libero (openpi / RLinf π0 on LIBERO: actions relative to the state), pi05_libero (absolute; the default for
    an openpi π0.5 on LIBERO), both in openpi's LIBERO client; rlinf_pi0_libero, rlinf_pi05_libero (the same in
    RLinf's LIBERO env: the paper's checkpoints; the default for an RLinf-saved π0.5), pi0_libero_horizon10, lerobot,
    rlinf_maniskill, rlinf_metaworld, isaac_gr00t (the default for an Isaac-GR00T N1.5: its 95% center crop),
    isaac_gr00t_no_crop, rlinf_gr00t_libero (RLinf's GR00T N1.5 on LIBERO: the paper's), pirl (pirl's own: the
    embedded default's), pirl_lerobot_view (the same in LeRobot's MetaWorld camera view and prompts; without
    --checkpoint the embedded default is made, and runs, in that view)"""
    embodiment: Annotated[Optional[str], unset("the checkpoint's own")] = None
    """GR00T: which per-embodiment state / action heads, by tag (new_embodiment, gr1, so100, ...) or id"""
    resume: Annotated[Optional[str], unset("a new run")] = None
    """a run dir (runs/<name>) or one of its checkpoints/iter_* dirs: continue that run exactly"""
    exp_name: str = "flow_sde_grpo"
    """name of this experiment (part of the run name)"""
    seed: int = 1
    """seed of the run (each rank adds its rank for its environments)"""
    torch_deterministic: bool = True
    """deterministic torch kernels: the same seed and flags give the same metrics on the same machine"""
    device: str = "auto"
    """auto | cpu | cuda"""
    run_root: str = "runs"
    """folder that holds the runs (TensorBoard logs, checkpoints, evals, plot)"""
    cache_dir: Annotated[Optional[str], unset("$PIRL_CACHE, else the project's runs/cache")] = None
    """where the embedded default's demonstrations and SFT policy are cached"""
    eval_every: Annotated[Preset[int], tiny("eval_every")] = None
    """evaluate every this many iterations (0: only before and after training)"""
    eval_episodes_per_task: Annotated[Preset[int], tiny("eval_episodes_per_task")] = None
    """held-out eval episodes per task (LIBERO: 50 = all fixed init states)"""
    save_every: int = 10
    """write a checkpoint every this many iterations (and at the end)"""
    num_videos: int = 2
    """eval episodes to save as mp4 in the final evaluation (0: none)"""
    progress: bool = True
    """show a tqdm progress bar"""
    track: bool = False
    """log to Weights & Biases as well as TensorBoard (CleanRL's --track; `pip install wandb`; WANDB_MODE=offline: local only)"""
    wandb_project_name: str = "pirl"
    """the Weights & Biases project of --track"""
    wandb_entity: Annotated[Optional[str], unset("your default entity")] = None
    """the Weights & Biases team or user of --track"""
    max_episode_steps: Annotated[Optional[int], unset("the benchmark's")] = None
    """episode length (quick looks and tests)"""
    # --- algorithm (None = the preset of --env x --model, from the paper's Tables 7-8) ---
    total_iterations: Annotated[Preset[int], tiny("total_iterations")] = None
    """PPO iterations (the tables' "train epochs"): one rollout phase + one update phase each"""
    num_envs: Annotated[Preset[int], tiny("num_envs")] = None
    """parallel environments, summed over all ranks"""
    interaction_steps: Annotated[Preset[int], tiny("interaction_steps")] = None
    """environment steps per env per rollout epoch, a multiple of --replan-steps (ONE episode per env: one still running at the end scores 0)"""
    rollout_epochs: Annotated[Preset[int], tiny("rollout_epochs")] = None
    """rollout phases (of --interaction-steps each, one episode per env) collected before every update"""
    group_size: Annotated[Preset[int], tiny("group_size")] = None
    """G: episodes per group, all started from the same initial condition (must divide the envs per rank)"""
    num_groups: Annotated[Optional[int], unset("--num-envs / --group-size")] = None
    """initial conditions (groups) per rollout epoch, summed over ranks: --num-envs = num_groups x group_size;
    groups per iteration = num_groups x rollout_epochs (the tiny preset: 4; RLinf's LIBERO runs: 64)"""
    minibatch_size: Annotated[Preset[int], tiny("minibatch_size")] = None
    """decisions (chunk steps) per gradient step, summed over ranks (the tables' "batch size")"""
    micro_batch_size: Annotated[Preset[int], tiny("micro_batch_size")] = None
    """decisions per forward/backward pass on one rank (gradient accumulation inside a minibatch)"""
    update_epochs: Annotated[Preset[int], tiny("update_epochs")] = None
    """passes over the rollout data per iteration"""
    actor_lr: Annotated[Preset[float], tiny("actor_lr")] = None
    """learning rate of the action expert"""
    anneal_lr: Annotated[Preset[bool], tiny("anneal_lr")] = None
    """cosine schedule of the learning rate over the iterations"""
    denoise_steps: Annotated[Preset[int], tiny("denoise_steps")] = None
    """K: Euler steps from noise to action (the paper's preset; a LeRobot checkpoint's num_inference_steps is not used)"""
    noise_level: Annotated[Preset[float], tiny("noise_level")] = None
    """a: SDE noise level, σ_t = a sqrt(t / (1 - t)) (eq. 8)"""
    replan_steps: Annotated[Preset[int], tiny("replan_steps")] = None
    """H': actions executed per decision (<= H; the paper's preset, not a LeRobot checkpoint's n_action_steps)"""
    clip_coef: float = 0.2
    """PPO clip ε (eq. 14)"""
    max_grad_norm: float = 1.0
    """gradient-norm clip"""
    train_vlm: bool = False
    """also train the VLM (the paper freezes it in the RL stage, section 5.1)"""
    fsdp: bool = False
    """with --train-vlm under torchrun: shard the policy over the ranks with FSDP2 (3B with the VLM trained outgrows one 80 GB
    GPU: bench/memory.py); the update runs sharded, rollout and eval on a gathered full copy; checkpoints are saved whole"""
    vlm_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """dtype of the VLM weights; auto: bfloat16 on CUDA while the VLM is frozen (the expert, heads and log-probs stay fp32)"""
    lora_rank: int = 0
    """LoRA rank on the frozen VLM's language model, trained with the action expert (paper 5.5; 0: off; common/lora.py)"""
    lora_alpha: Annotated[Optional[float], unset("α = rank")] = None
    """LoRA α: the adapters' update is scaled by α / rank"""
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    """comma-separated linears of every Gemma layer of the VLM that get adapters"""
    lora_vision: bool = False
    """also adapt every linear of the SigLIP vision tower"""
    lora_preset: Literal["none", "lora-i", "lora-ii"] = "none"
    """paper 5.5: lora-i = r = α = 32 with the preset's LR and update epochs; lora-ii = also 1/5 of the actor LR, half the epochs"""
    # --- options beside the paper's method: RLinf's choices and ablations (docs/results.md: which were measured) ---
    filter_groups: bool = True
    """drop groups whose mean success is outside [0.1, 0.9] (all fail / all succeed: no signal)"""
    loss_normalisation: Literal["kept", "all"] = "kept"
    """the minibatch loss is a mean over the decisions the update uses (`kept`) or over all its rows, dropped groups and
    steps after an episode's end adding zeros (`all`, RLinf: a step shrinks with the signal instead of being renormalised)"""
    episode_weighting: bool = False
    """weight each decision by T / (decisions of its episode), T = decisions per rollout epoch: each episode carries equal
    weight (RLinf's max_episode_steps / episode length); off: each decision does"""
    kl_coef: float = 0.0
    """weight of a KL penalty to the initial policy (0: none, as the paper's runs)"""
    # --- filled in at runtime ---
    init_checkpoint: Annotated[Optional[str], unset("--checkpoint")] = None
    """the checkpoint the run started from (kept across --resume: the reference of --kl-coef)"""


# Presets: the paper's Table 7 (LIBERO) and Table 8 (ManiSkill, SIMPLER tasks); its GRPO runs (Table 5,
# appendix A) use the same settings, without the critic. MetaWorld follows Table 7's π0 column with
# 100-step episodes. "Action chunk H" of Table 7 is our --replan-steps. Table 7's interaction steps are the
# LIBERO episode lengths: one episode per env per rollout epoch.
LIBERO_TABLE7 = {  # suite: (pi0 update_epochs, pi0 actor_lr, pi05 update_epochs, pi05 K, pi05 a, pi05 anneal)
    "spatial": dict(pi0=dict(update_epochs=2, actor_lr=1e-5), pi05=dict(update_epochs=1, denoise_steps=3)),
    "object": dict(pi0=dict(update_epochs=2, actor_lr=5e-6), pi05=dict(update_epochs=1, denoise_steps=5, noise_level=0.3)),
    "goal": dict(pi0=dict(update_epochs=4, actor_lr=5e-6), pi05=dict(update_epochs=3, denoise_steps=5, noise_level=0.3)),
    "long": dict(pi0=dict(update_epochs=4, actor_lr=5e-6), pi05=dict(update_epochs=4, denoise_steps=5, anneal_lr=True)),
}
LIBERO_STEPS = {"spatial": 240, "object": 320, "goal": 320, "long": 480, "90": 480}
GPU_BASE = dict(total_iterations=400, num_envs=64, rollout_epochs=8, minibatch_size=2048, micro_batch_size=32,
                update_epochs=2, actor_lr=5e-6, anneal_lr=False, denoise_steps=4, group_size=8,
                noise_level=0.5, replan_steps=5, eval_every=10, eval_episodes_per_task=50)
# Table 8's global batch 2560 = 256 envs x one 50-step episode in chunks of 5 (its 5120 = 320 x 80 / 5, RLinf's
# SIMPLER episodes): one rollout, one minibatch, 4 update epochs.
MANISKILL_TABLE8 = dict(total_iterations=40, num_envs=256, interaction_steps=50, rollout_epochs=1,
                        minibatch_size=2560, update_epochs=4, actor_lr=5.6e-6,
                        denoise_steps=4, noise_level=0.5, replan_steps=5)
FILTER_RANGE = (0.1, 0.9)  # --filter-groups keeps groups whose mean success lies in this range
# The embedded default: a tiny π0 on 2 CPU cores, Flow-SDE PPO's recipe: 4 groups of 8 per update for 100 iterations
# (cosine schedule). 2 groups per update dipped 11-15 points below the start on 2 of 5 seeds before recovering, 4 never
# fell below it (docs/results.md, "The three defaults, 5 seeds each").
TINY_CPU = dict(total_iterations=100, num_envs=32, interaction_steps=100, rollout_epochs=1, minibatch_size=400,
                micro_batch_size=100, update_epochs=2, actor_lr=5e-5, anneal_lr=True, group_size=8,
                denoise_steps=4, noise_level=0.5, replan_steps=4, eval_every=25, eval_episodes_per_task=50)


def preset(env: str, model: str) -> dict:
    """The hyper-parameters of the paper's tables for env x model (filled into flags left at None)."""
    if model in ("tiny-groot", "groot"):  # GR00T N1.5 (appendix C): π0's hyper-parameters, unchanged
        model = "tiny" if model == "tiny-groot" else "pi0"
    if model == "tiny":
        values = dict(TINY_CPU)
        if env.startswith("libero-"):  # the suite's episodes in chunks of 5; 2 minibatches an epoch, as on MetaWorld
            from common.run import rollout_decisions

            steps = LIBERO_STEPS[env.split("-", 1)[1]]
            batch = rollout_decisions(values["num_envs"], steps, replan_steps=5)
            values.update(interaction_steps=steps, replan_steps=5, minibatch_size=batch // 2, micro_batch_size=batch // 8)
        return values
    values = dict(GPU_BASE)
    if env.startswith("libero-"):
        suite = env.split("-", 1)[1]
        values.update(interaction_steps=LIBERO_STEPS[suite], replan_steps=10 if suite in ("long", "90") else 5)
        values.update(LIBERO_TABLE7.get(suite, LIBERO_TABLE7["long"])[model])
    elif env.startswith("maniskill-"):  # Table 8: its global batch is one rollout of one episode per env (one minibatch)
        from common.envs import SIMPLER_TASKS, maniskill_env_id
        from common.run import rollout_decisions

        values.update(MANISKILL_TABLE8)
        env_id = maniskill_env_id(env)
        if env_id in SIMPLER_TASKS.values():   # SIMPLER scenes: RLinf's episodes of 80 steps
            values.update(interaction_steps=80)
        if env_id == SIMPLER_TASKS["put-on-plate"]:   # the generalisation column: 320 envs x 16 chunks = its 5120
            values.update(total_iterations=150, num_envs=320, actor_lr=7.91e-6,
                          update_epochs=5 if model == "pi05" else 4)
        if env_id == SIMPLER_TASKS["cube"]:   # its RL train steps
            values.update(total_iterations=130 if model == "pi0" else 70)
        steps, replan = values["interaction_steps"], values["replan_steps"]
        values.update(minibatch_size=rollout_decisions(values["num_envs"], steps, replan))
    else:  # metaworld: episodes of 100 steps
        values.update(interaction_steps=100, replan_steps=5)
    return values


def resolve_args(args: Args, checkpoint_family: Optional[str]) -> Args:
    """Fill every flag left at None from the preset of --env x --model (--model defaults to the
    checkpoint's family: tiny, pi0 or pi05)."""
    if args.model is None:
        args.model = checkpoint_family or "tiny"
    if checkpoint_family is not None and checkpoint_family != "tiny" and args.model != checkpoint_family:
        raise ValueError(f"--model {args.model} does not match the checkpoint, which holds a {checkpoint_family} model")
    values = preset(args.env, args.model)
    if args.num_groups is not None and args.num_envs is None:  # --num-groups alone sizes the envs
        args.num_envs = args.num_groups * (args.group_size or values["group_size"])
    for key, value in values.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.num_groups is None:
        args.num_groups = args.num_envs // max(args.group_size, 1)
    return args


def check_args(args: Args, world_size: int, action_horizon: int) -> None:
    """A clear error for every bad flag combination (never a stack trace from deep inside)."""
    from common.run import check_batch_sizes

    check_batch_sizes(args, world_size, action_horizon)  # --replan-steps, --num-envs, --minibatch-size, ... (common/run.py)
    if args.group_size < 1 or (args.num_envs // world_size) % args.group_size:
        raise ValueError(f"--group-size ({args.group_size}) must be >= 1 and divide the envs per rank (--num-envs "
                         f"{args.num_envs} / {world_size} ranks = {args.num_envs // world_size}): groups never straddle ranks")
    if args.num_groups * args.group_size != args.num_envs:
        raise ValueError(f"--num-groups ({args.num_groups}) x --group-size ({args.group_size}) must equal --num-envs ({args.num_envs})")
    if not 0.0 < args.noise_level < 2.0:
        raise ValueError(f"--noise-level must be in (0, 2), got {args.noise_level}")
    if args.kl_coef < 0:
        raise ValueError(f"--kl-coef must be >= 0, got {args.kl_coef}")


# ALGO LOGIC: the SDE sampler (eq. 8-9, openpi time: t = 1 noise, t = 0 action)
def sde_step(x_t: torch.Tensor, v_t: torch.Tensor, t: torch.Tensor, dt: float, noise_level: float):
    """Mean and std of the Gaussian transition x_t -> x_{t - dt} of the marginal-preserving SDE (eq. 9).

    σ_t = a sqrt(t / (1 - t)); the score is ∇log q_t(x) = -(x + (1 - t) v) / t, so the reverse-time
    SDE step is  mean = x - dt [v + σ_t² / (2t) (x + (1 - t) v)],  std = σ_t sqrt(dt).
    σ_t is infinite at t = 1 (the first step): we evaluate 1 - t no closer to 0 than dt, i.e. at the
    next grid point, which gives std = a at t = 1 (a finite, marginal-keeping first step; see tests).
    x_t, v_t: (B, H, D) fp32; t: (B,) fp32 in (0, 1]. Returns mean (B, H, D), std (B, 1, 1).
    """
    t = t.to(torch.float32).view(-1, 1, 1)
    sigma = noise_level * torch.sqrt(t / (1.0 - t).clamp_min(dt))
    mean = x_t - dt * (v_t + sigma**2 / (2.0 * t) * (x_t + (1.0 - t) * v_t))
    std = sigma * math.sqrt(dt)
    return mean, std


def transition_logprob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, replan_steps: int, action_dim: int):
    """log N(x_next; mean, std²) summed over the executed chunk (H') x env action dims (A), in fp32: (B,)."""
    x_next, mean = x_next[:, :replan_steps, :action_dim].float(), mean[:, :replan_steps, :action_dim].float()
    std = std.float().expand_as(mean)
    logp = -0.5 * ((x_next - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return logp.sum(dim=(1, 2))


def step_logprob(policy, cache, x_j, x_next, denoise_idx, args: Args, action_dim: int):
    """Log-prob of the stored SDE transition x_j -> x_{j+1} (eq. 10, 15): one expert pass at step j."""
    dt = 1.0 / args.denoise_steps
    t = 1.0 - denoise_idx.float() * dt
    v, _ = policy.velocity(cache, x_j, t)
    mean, std = sde_step(x_j, v, t, dt, args.noise_level)
    return transition_logprob(x_next, mean, std, args.replan_steps, action_dim), std


@torch.no_grad()
def sample_hybrid(policy, cache, args: Args, action_dim: int, generator: torch.Generator):
    """Hybrid ODE-SDE rollout (4.2.3): ONE denoise step j, drawn uniformly per env, is the SDE step of
    eq. 9; the other K - 1 steps are the deterministic Euler ODE x <- x - Δ v.

    j is drawn per env (not per batch) so that every minibatch mixes all denoising times and the
    ratio statistics are not tied to one t per iteration.
    Returns actions (B, H, D), x_j (B, H, D), x_{j+1} (B, H, D), j (B,) and log-prob (B,) fp32.
    """
    B, H, D = cache.batch_size, policy.config.action_horizon, policy.config.action_dim
    device, K, dt = cache.state.device, args.denoise_steps, 1.0 / args.denoise_steps
    x = torch.randn(B, H, D, generator=generator, device=device, dtype=torch.float32)  # x at t = 1
    sde_idx = torch.randint(0, K, (B,), generator=generator, device=device)
    x_j, x_next = torch.zeros_like(x), torch.zeros_like(x)
    logprob = torch.zeros(B, device=device)
    for k in range(K):
        t = torch.full((B,), 1.0 - k * dt, device=device)
        v, _ = policy.velocity(cache, x, t)
        is_sde = sde_idx == k
        if is_sde.any():
            mean, std = sde_step(x, v, t, dt, args.noise_level)
            x_sde = mean + std * torch.randn(x.shape, generator=generator, device=device)
            x_j[is_sde], x_next[is_sde] = x[is_sde], x_sde[is_sde]
            logprob[is_sde] = transition_logprob(x_sde, mean, std, args.replan_steps, action_dim)[is_sde]
            x = torch.where(is_sde.view(B, 1, 1), x_sde, x - dt * v)
        else:
            x = x - dt * v
    return x, x_j, x_next, sde_idx, logprob


# ALGO LOGIC: groups and their advantages (appendix A, eq. 17)
def group_episodes(rng: np.random.Generator, num_groups: int, group_size: int, num_tasks: int, train_init_ids) -> list:
    """num_groups TRAIN initial conditions (task_id, init_id), each repeated group_size times on
    contiguous envs: [(a), (a), ..., (b), (b), ...]. Drawn from our own seeded RNG (exact resume)."""
    episodes = []
    for _ in range(num_groups):
        task = int(rng.integers(num_tasks))
        init = int(train_init_ids[int(rng.integers(len(train_init_ids)))])
        episodes += [(task, init)] * group_size
    return episodes


def episode_scores(dones: torch.Tensor, successes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One episode per env: valid[t] = the episode had not ended before decision t (the decision that
    ends it counts; the frozen steps after it are masked out), score = its binary success (= the sum of
    its binary reward until the first done; an episode still running after T decisions scores 0).
    dones, successes: (T, N) with the episode ended / was solved in decision t. Returns (N,), (T, N)."""
    ended_before = torch.cumsum(dones, dim=0) - dones
    valid = (ended_before == 0).float()
    scores = (successes * valid).sum(dim=0).clamp(max=1.0)
    return scores, valid


def group_advantages(scores: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """eq. 17: A_i = (R_i - mean_G(R)) / (std_G(R) + ε) within each group of group_size CONTIGUOUS
    scores (N,) -> (N,). std is the sample std (as in GRPO implementations); a group whose scores are
    all equal (or G = 1) gets zero advantages, never NaN."""
    groups = scores.float().view(-1, group_size)
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    return ((groups - mean) / (std + eps)).view(-1)


def episode_weights(valid: torch.Tensor) -> torch.Tensor:
    """T / L per decision, L = its episode's decisions (RLinf's max_episode_steps / episode length, in decisions): each
    episode's weights sum to T, so each episode counts equally. valid (T, N) from episode_scores -> (T, N), 0 where invalid."""
    return valid * (valid.shape[0] / valid.sum(dim=0).clamp_min(1.0))


def loss_denominator(kept_weight: float, num_rows: int, mode: str) -> float:
    """Z of the minibatch loss Σ_kept w_i l_i / Z: Σ_kept w_i (`kept`: the weighted mean over the decisions used) or the
    minibatch's row count (`all`: every row counts, rows left out add zeros; RLinf's masked_mean_ratio)."""
    return float(num_rows) if mode == "all" else kept_weight


def groups_kept(scores: torch.Tensor, group_size: int, low: float, high: float) -> torch.Tensor:
    """Per env (N,) bool: its group's mean success lies in [low, high] (else no learning signal)."""
    mean = scores.float().view(-1, group_size).mean(dim=1)
    return ((mean >= low) & (mean <= high)).repeat_interleave(group_size)


if __name__ == "__main__":
    from tqdm import tqdm

    from common import distributed, lora, run
    from common.envs import make_envs
    from common.errors import main_errors

    args = tyro.cli(Args)
    with main_errors():  # an expected failure (bad flag, broken checkpoint, full disk, ...) ends in one `error:` line
        # TRY NOT TO MODIFY: the start (common/run.py), each step one `error:` line if it fails, before any simulator is built
        run.check_flags(args)                                               # --env, flag ranges, writable --run-root, ...
        dist_info = distributed.setup_distributed(args.device)              # torchrun's ranks (one without torchrun)
        resumed = run.resume(args, Args) if args.resume is not None else None   # --resume: the run's newest good checkpoint
        args = resumed.args if resumed else args                            # (its saved flags, except those given now)
        policy, processor = run.start_policy(args, dist_info.device)        # --checkpoint, the resumed one, or a default one
        args = run.resolve_flags(args, policy, dist_info.world_size, preset, check_args, resolve_args)  # None -> the preset
        resume_dir, saved = (resumed.checkpoint, resumed.train_state) if resumed else (None, None)
        from common.checkpoint import vlm_dtype
        from common.evaluate import check_policy_fits_env
        from common.logger import RunLogger

        rank, world, device = dist_info.rank, dist_info.world_size, dist_info.device
        args.init_checkpoint = args.init_checkpoint or args.checkpoint
        vlm_weights_dtype = vlm_dtype(args.vlm_dtype, device, args.train_vlm)  # the KL reference is loaded as the policy

        # TRY NOT TO MODIFY: seeding (same weights everywhere, per-rank environments)
        sampler_gen, np_rng = run.seed_everything(args.seed, rank, device, args.torch_deterministic)
        if not args.train_vlm:
            policy.freeze_vlm()  # the RL stage trains the action expert only (paper 5.1)
        lora.setup(policy, args, saved)  # --lora-rank: adapters on the frozen VLM (5.5)
        distributed.broadcast_parameters(policy)
        if args.fsdp:
            distributed.shard_policy(policy, device)  # FSDP2: each rank keeps 1 / world of the weights, grads, AdamW moments
        actor_params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": actor_params, "lr": args.actor_lr}], eps=1e-5, weight_decay=0.0)
        ref_policy = None  # the initial policy, frozen: the KL reference (only loaded when asked for)
        if args.kl_coef > 0:
            ref_policy = run.load_checkpoint(args.init_checkpoint, device=device, dtype=vlm_weights_dtype, asset_id=args.asset_id)[0].eval().requires_grad_(False)

        local_envs = args.num_envs // world
        G = args.group_size
        num_steps = args.interaction_steps // args.replan_steps  # decisions per env per rollout epoch
        local_batch = local_envs * num_steps * args.rollout_epochs
        local_minibatch = args.minibatch_size // world
        # autoreset=False: an env that finishes freezes until the next reset (one episode per env per epoch)
        env_opts = processor.data_config.env_options(args.env, policy.config.image_size)   # the view it was trained on
        envs = make_envs(args.env, local_envs, seed=args.seed * 1000 + rank, **env_opts,
                         autoreset=False, device=str(device), max_episode_steps=args.max_episode_steps)
        check_policy_fits_env(policy, processor, envs, env_opts["image_size"], f"--env {args.env}",
                              f"--checkpoint {args.checkpoint}", args.replan_steps)  # else it would run, silently, at 0%
        action_dim = envs.action_dim

        start_iteration, global_step = 1, 0
        run_dir = run.new_run_dir(args.run_root, args.env, args.exp_name, args.seed)
        if resume_dir is not None:  # --resume: the saved modules, optimizer, counters and RNGs
            start_iteration, global_step = run.restore(resume_dir, saved, optimizer, {"policy": policy}, sampler_gen, np_rng)
            run_dir = resume_dir.parent.parent
        track = dict(project=args.wandb_project_name, entity=args.wandb_entity) if args.track else None  # --track: W&B too
        logger = RunLogger(run_dir, asdict(args), resume_step=global_step if resume_dir else None, wandb=track) if dist_info.is_main else None
        guard = run.FiniteGuard(dist_info.is_main, last_good=resume_dir)  # stops the run at the first NaN / inf, unsaved

        @torch.no_grad()  # rollout: no graph, even when the VLM is trained
        def act(raw_obs: dict):
            """One decision for a batch of raw observations: (env actions (B, H', A), stored tensors...)."""
            obs = processor.observation(raw_obs, device)
            cache = actor.encode(obs)
            actions, x_j, x_next, j, logp = sample_hybrid(actor, cache, args, action_dim, sampler_gen)
            env_actions = processor.actions_to_env(actions, action_dim, state=raw_obs["state"])[:, : args.replan_steps]
            return env_actions, x_j, x_next, j, logp

        def run_eval(iteration: int, final: bool = False) -> float:  # held-out success rate, logged under eval/
            return run.held_out_eval(policy, processor, envs, args, run_dir, logger, global_step, iteration, final)

        def save_checkpoint(iteration: int) -> None:
            optimizer_state = distributed.optimizer_state(optimizer, {"policy": policy})  # --fsdp: gathered, full
            train_state = {"optimizer": optimizer_state, "iteration": iteration, "global_step": global_step,
                           "args": asdict(args)}
            run.save_checkpoint(run_dir, iteration, policy, processor, train_state, run.rng_state(sampler_gen, np_rng), guard)

        # ALGO LOGIC: rollout storage (per rank), E = rollout epochs, T = decisions per epoch, N = local envs
        E, T, N = args.rollout_epochs, num_steps, local_envs
        H, D = policy.config.action_horizon, policy.config.action_dim
        R, n_cam, S = env_opts["image_size"], envs.num_cameras, envs.state_dim
        obs_images = np.zeros((E, T, N, n_cam, R, R, 3), dtype=np.uint8)  # (E, T, N, n_cam, R, R, 3) raw camera images
        obs_states = np.zeros((E, T, N, S), dtype=np.float32)             # (E, T, N, S) raw proprioception
        obs_task_ids = np.zeros((E, T, N), dtype=np.int64)                # (E, T, N)
        obs_instructions = [[[""] * N] * T for _ in range(E)]             # E x T lists of N strings ("": skipped steps)
        x_js = torch.zeros(E, T, N, H, D, device=device)                  # (E, T, N, H, D) fp32 chain state before the SDE step
        x_nexts = torch.zeros(E, T, N, H, D, device=device)               # (E, T, N, H, D) fp32 chain state after the SDE step
        denoise_idxs = torch.zeros(E, T, N, dtype=torch.long, device=device)  # (E, T, N) the SDE step j
        logprobs = torch.zeros(E, T, N, device=device)                    # (E, T, N) fp32 log π(x_{j+1} | o, x_j)
        dones = torch.zeros(E, T, N, device=device)                       # (E, T, N) episode ended in this decision
        successes = torch.zeros(E, T, N, device=device)                   # (E, T, N) episode solved in this decision
        scores = torch.zeros(E, N, device=device)                         # (E, N) episode success R^(i)
        masks = torch.zeros(E, T, N, device=device)                       # (E, T, N) 1: decision used by the update
        advantages = torch.zeros(E, T, N, device=device)                  # (E, T, N) eq. 17, constant along an episode
        weights = torch.ones(E, T, N, device=device)                      # (E, T, N) loss weight per decision

        if start_iteration == 1:
            before = run_eval(0)
            if dist_info.is_main:
                print(f"held-out success before RL: {before:.1%}; {args.num_groups} groups of {G} per rollout epoch, "
                      f"{args.num_groups * E} per iteration")
        else:
            before = None
        bar = tqdm(range(start_iteration, args.total_iterations + 1), disable=not (args.progress and dist_info.is_main),
                   desc=f"flow_sde_grpo {args.env}", initial=start_iteration - 1, total=args.total_iterations)
        for iteration in bar:
            if args.anneal_lr:  # cosine schedule
                frac = 0.5 * (1.0 + math.cos(math.pi * (iteration - 1) / args.total_iterations))
                optimizer.param_groups[0]["lr"] = frac * args.actor_lr
            iter_start, ep_lengths, kept = time.time(), [], []
            policy.eval()
            actor = distributed.unsharded(policy)  # --fsdp: the full weights on every rank, for this rollout only
            for e in range(E):
                # N / G initial conditions, each on G contiguous envs, drawn by (seed, rank, iteration, epoch)
                episodes = group_episodes(np_rng, N // G, G, envs.num_tasks, envs.train_init_ids)
                next_obs = envs.reset(episodes=episodes)
                dones[e], successes[e] = 0.0, 0.0
                length = np.full(N, T * args.replan_steps)  # an unfinished episode: the whole epoch
                for t in range(T):
                    obs_images[e, t], obs_states[e, t] = next_obs["images"], next_obs["state"]
                    obs_task_ids[e, t], obs_instructions[e][t] = next_obs["task_id"], list(next_obs["instruction"])
                    env_actions, x_js[e, t], x_nexts[e, t], denoise_idxs[e, t], logprobs[e, t] = act(next_obs)
                    next_obs, _, terminated, truncated, info = envs.step_chunk(env_actions)  # done envs freeze
                    global_step += N * args.replan_steps * world  # env steps budgeted, all ranks
                    dones[e, t] = torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)
                    successes[e, t] = torch.as_tensor(terminated, dtype=torch.float32, device=device)
                    length[terminated | truncated] = info["episode_length"][terminated | truncated]
                    if bool((dones[e, : t + 1].sum(0) > 0).all()):  # every episode over: skip the frozen steps
                        global_step += N * args.replan_steps * world * (T - 1 - t)
                        break
                ep_lengths += length.tolist()
                scores[e], valid = episode_scores(dones[e], successes[e])
                keep = groups_kept(scores[e], G, *FILTER_RANGE) if args.filter_groups else torch.ones(N, dtype=torch.bool, device=device)
                kept.append(keep.float().mean().item())
                masks[e] = valid * keep.float()  # steps after the first done, and dropped groups, are left out
                advantages[e] = group_advantages(scores[e], G).view(1, N) * masks[e]  # broadcast over the episode
                if args.episode_weighting:
                    weights[e] = episode_weights(valid)
            rollout_time = time.time() - iter_start
            actor = None  # (--fsdp: frees the full copy before the update)

            # flatten the batch: (E, T, N, ...) -> (E*T*N, ...)
            b_x_j, b_x_next = x_js.reshape(-1, H, D), x_nexts.reshape(-1, H, D)
            b_idx, b_logprobs = denoise_idxs.reshape(-1), logprobs.reshape(-1)
            b_adv, b_mask, b_weights = advantages.reshape(-1), masks.reshape(-1).cpu(), weights.reshape(-1)
            b_images, b_states = obs_images.reshape(-1, n_cam, R, R, 3), obs_states.reshape(-1, S)
            b_task_ids = obs_task_ids.reshape(-1)
            b_instructions = [s for epoch in obs_instructions for step in epoch for s in step]

            # ALGO LOGIC: clipped update (eq. 14-15) on minibatches, with gradient accumulation over micro-batches;
            # only the kept decisions enter; the loss is Σ w l / Z over all ranks (Z: --loss-normalisation)
            policy.train()
            sums = {k: 0.0 for k in ("pg_loss", "kl_ref", "approx_kl", "clipfrac", "entropy", "ratio")}
            num_used, grad_norms = 0, []
            for epoch in range(args.update_epochs):
                perm = torch.randperm(local_batch)
                for start in range(0, local_batch, local_minibatch):
                    mb = perm[start : start + local_minibatch]
                    mb = mb[b_mask[mb] > 0]
                    used = distributed.all_reduce_mean({"n": len(mb), "w": b_weights[mb.to(device)].sum().item()}, device)
                    if round(used["n"] * world) == 0:  # nothing kept in this minibatch on any rank: no step
                        continue
                    denom = loss_denominator(used["w"] * world, args.minibatch_size, args.loss_normalisation)
                    optimizer.zero_grad(set_to_none=True)
                    micros = [m for m in mb.split(args.micro_batch_size) if len(m)]  # none where this rank kept no row
                    real = len(micros)  # --fsdp: every rank runs as many passes (its collectives), padded with weight-0 ones
                    micros += [perm[:1]] * ((distributed.max_over_ranks(real, device) if args.fsdp else real) - real)
                    for pass_idx, micro in enumerate(micros):
                        micro_np = micro.numpy()
                        raw = {"images": b_images[micro_np], "state": b_states[micro_np], "task_id": b_task_ids[micro_np],
                               "instruction": [b_instructions[i] for i in micro_np]}
                        micro = micro.to(device)
                        obs = processor.observation(raw, device)
                        with torch.set_grad_enabled(args.train_vlm or args.lora_rank > 0):
                            cache = policy.encode(obs)  # prefix pass (frozen VLM: no graph)
                        new_logprob, std = step_logprob(policy, cache, b_x_j[micro], b_x_next[micro], b_idx[micro], args, action_dim)
                        logratio = new_logprob - b_logprobs[micro]
                        ratio = logratio.exp()
                        mb_adv = b_adv[micro]
                        pg_rows = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef))
                        kl_rows = torch.zeros_like(pg_rows)
                        if ref_policy is not None:  # k3 estimator of KL(π_θ || π_ref) on the same transition
                            with torch.no_grad():
                                ref_logprob, _ = step_logprob(ref_policy, ref_policy.encode(obs), b_x_j[micro], b_x_next[micro],
                                                              b_idx[micro], args, action_dim)
                            kl_rows = (ref_logprob - new_logprob).exp() - (ref_logprob - new_logprob) - 1
                        # all_reduce_gradients averages over ranks: x world makes it Σ over all ranks' rows / Z
                        loss = (b_weights[micro] * (pg_rows + args.kl_coef * kl_rows)).sum() * (world / denom)
                        pg_loss, kl_ref = pg_rows.mean(), kl_rows.mean()
                        pad = pass_idx >= real  # an --fsdp padding pass: no gradient, no statistics
                        (loss * (0.0 if pad else 1.0)).backward()
                        if pad:
                            continue
                        with torch.no_grad():
                            n = len(micro)
                            num_used += n
                            sums["pg_loss"] += pg_loss.item() * n
                            sums["kl_ref"] += kl_ref.item() * n
                            sums["approx_kl"] += ((ratio - 1) - logratio).sum().item()
                            sums["clipfrac"] += ((ratio - 1.0).abs() > args.clip_coef).float().sum().item()
                            sums["ratio"] += ratio.sum().item()
                            # entropy proxy: the step-j Gaussian's entropy per executed action dim
                            sums["entropy"] += (0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).sum().item()
                    distributed.all_reduce_gradients(actor_params)
                    grad_norms.append(distributed.clip_grad_norm(actor_params, args.max_grad_norm))
                    guard.check(iteration, {"losses/grad_norm": grad_norms[-1]})
                    optimizer.step()
            guard.check_weights(iteration, policy)

            # TRY NOT TO MODIFY: record statistics
            totals = distributed.all_reduce_mean({**sums, "n": num_used}, device)  # ranks may use different counts
            scalars = {f"losses/{k}": totals[k] / totals["n"] for k in sums} if totals["n"] > 0 else {}
            if grad_norms:
                scalars["losses/grad_norm"] = float(np.mean(grad_norms))
            guard.check(iteration, scalars)
            solved = scores.sum().item()  # one episode per env per epoch: every episode is a first episode
            counts = distributed.all_reduce_sum({"episodes": E * N, "solved": solved, "lengths": float(sum(ep_lengths)),
                                                 "first": E * N, "first_solved": solved, "env_reward": solved,
                                                 "steps_per_second": N * E * T * args.replan_steps / rollout_time}, device)
            scalars.update(run.rollout_charts(counts))
            scalars.update(distributed.all_reduce_mean({"charts/groups_kept": float(np.mean(kept)),
                                                        "charts/decisions_used": b_mask.mean().item()}, device))
            scalars.update({"charts/actor_lr": optimizer.param_groups[0]["lr"], "charts/iteration_seconds": time.time() - iter_start,
                            "charts/iteration": iteration})
            if logger:
                logger.log(global_step, scalars)
                bar.set_postfix(rollout_success=f"{scalars['charts/rollout_success_rate']:.2f}",
                                kept=f"{scalars['charts/groups_kept']:.2f}", kl=f"{scalars.get('losses/approx_kl', 0.0):.4f}")
                if totals["n"] == 0:
                    tqdm.write(f"warning: iteration {iteration}: every group's episodes all succeeded or all failed, so every "
                               "advantage is 0 and this update did not change the policy (more envs per group would help)")
            if args.eval_every and iteration % args.eval_every == 0 and iteration != args.total_iterations:
                run_eval(iteration)
            if iteration % args.save_every == 0 or iteration == args.total_iterations:
                save_checkpoint(iteration)

        in_sync = run.check_in_sync(device, policy)  # every rank ends with the same weights
        after = run_eval(args.total_iterations, final=True)
        run.report(logger, before, after, world, in_sync, run_dir, args.run_root)  # rank 0: before -> after, the curve
        envs.close()
        distributed.cleanup()
