"""Flow-SDE + PPO: online RL fine-tuning of a flow-matching VLA (π0 / π0.5), πRL sections 4.2-4.3.

The whole method is in this file, top to bottom: the ODE-to-SDE sampler (eq. 8-9), the two-layer MDP
with hybrid ODE-SDE rollouts (4.2.2-4.2.3), the critic (4.3.2, eq. 16), GAE (eq. 13) and the PPO
update (eq. 14-15). The model, simulators, evaluation, logging and torch.distributed plumbing come
from common/. Options beside the defaults (RLinf's choices, defaults unchanged until measured):
--time-limit terminal (no γV bootstrap at the time limit) and --episode-weighting (each episode, not
each decision, carries equal weight in the losses).

Launch:
    python flow_sde_ppo.py                                   # embedded default: CPU, tiny π0, MetaWorld
    torchrun --nproc_per_node 8 flow_sde_ppo.py --env libero-long   # the paper's setup: its π0 SFT checkpoint (Hub, common/hub.py)
    python flow_sde_ppo.py --env libero-long --checkpoint RLinf/RLinf-Pi0-LIBERO-Long-SFT@main   # a Hub id or a local dir
    python flow_sde_ppo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft        # 1 GPU
    torchrun --standalone --nproc_per_node 8 flow_sde_ppo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft
    torchrun --standalone --nproc_per_node 8 flow_sde_ppo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft \
        --train-vlm --fsdp --micro-batch-size 4   # the VLM trained too, 3B sharded over the GPUs (bench/memory.py)
    # 2 nodes x 8 GPUs (run on each node, node_rank 0 and 1):
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr $HEAD --master_port 29500 \
        flow_sde_ppo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft
    python flow_sde_ppo.py --env libero-long --checkpoint /ckpt/pi0_libero_sft --lora-preset lora-ii  # + LoRA on the VLM (5.5)
    python flow_sde_ppo.py --resume runs/<run_name>          # continue a stopped run exactly

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
import torch.nn as nn
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
    exp_name: str = "flow_sde_ppo"
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
    """environment steps per env per rollout epoch (a multiple of --replan-steps)"""
    rollout_epochs: Annotated[Preset[int], tiny("rollout_epochs")] = None
    """rollout phases (of --interaction-steps each) collected before every update"""
    minibatch_size: Annotated[Preset[int], tiny("minibatch_size")] = None
    """decisions (chunk steps) per gradient step, summed over ranks (the tables' "batch size")"""
    micro_batch_size: Annotated[Preset[int], tiny("micro_batch_size")] = None
    """decisions per forward/backward pass on one rank (gradient accumulation inside a minibatch)"""
    update_epochs: Annotated[Preset[int], tiny("update_epochs")] = None
    """passes over the rollout data per iteration"""
    actor_lr: Annotated[Preset[float], tiny("actor_lr")] = None
    """learning rate of the action expert"""
    critic_lr: Annotated[Preset[float], tiny("critic_lr")] = None
    """learning rate of the critic head"""
    anneal_lr: Annotated[Preset[bool], tiny("anneal_lr")] = None
    """cosine schedule of both learning rates over the iterations"""
    denoise_steps: Annotated[Preset[int], tiny("denoise_steps")] = None
    """K: Euler steps from noise to action (the paper's preset; a LeRobot checkpoint's num_inference_steps is not used)"""
    noise_level: Annotated[Preset[float], tiny("noise_level")] = None
    """a: SDE noise level, σ_t = a sqrt(t / (1 - t)) (eq. 8)"""
    replan_steps: Annotated[Preset[int], tiny("replan_steps")] = None
    """H': actions executed per decision (<= H; the paper's preset, not a LeRobot checkpoint's n_action_steps)"""
    gamma: float = 0.99
    """discount per decision (chunk step)"""
    gae_lambda: float = 0.95
    """GAE λ (eq. 13)"""
    clip_coef: float = 0.2
    """PPO clip ε (eq. 14), also used to clip the value loss"""
    vf_coef: float = 1.0
    """weight of the value loss"""
    max_grad_norm: float = 1.0
    """gradient-norm clip (actor and critic each)"""
    critic_hidden: int = 512
    """width of the critic's 4-layer MLP"""
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
    time_limit: Literal["bootstrap", "terminal"] = "bootstrap"
    """an episode cut by the time limit: `bootstrap` adds γ V(final obs) to its last reward (the limit is no true end),
    `terminal` ends it like a failure, no bootstrap (RLinf's LIBERO / MetaWorld runs: its critic does not see time either)"""
    episode_weighting: bool = False
    """weight every decision's actor and critic loss by 1 / (decisions of its episode in the rollout epoch), normalised to
    mean 1: each episode carries equal weight (RLinf's max_episode_steps / episode length); off: each decision does"""
    critic_steps: Literal["pre-decision", "all"] = "pre-decision"
    """π0 / GR00T: which denoising steps' expert features V(o) averages (eq. 16). `pre-decision`: steps 0..j, up to the SDE
    step j, whose features do not depend on the noise drawn there; `all`: every step of the sampled chain, whose later
    steps see the sampled action (an action-dependent baseline: it biases the policy gradient; RLinf's rollout value)"""


# Presets: the paper's Table 7 (LIBERO) and Table 8 (ManiSkill, SIMPLER tasks); MetaWorld follows
# Table 7's π0 column with 100-step episodes. "Action chunk H" of Table 7 is our --replan-steps.
LIBERO_TABLE7 = {  # suite: (pi0 update_epochs, pi0 actor_lr, pi05 update_epochs, pi05 K, pi05 a, pi05 anneal)
    "spatial": dict(pi0=dict(update_epochs=2, actor_lr=1e-5), pi05=dict(update_epochs=1, denoise_steps=3)),
    "object": dict(pi0=dict(update_epochs=2, actor_lr=5e-6), pi05=dict(update_epochs=1, denoise_steps=5, noise_level=0.3)),
    "goal": dict(pi0=dict(update_epochs=4, actor_lr=5e-6), pi05=dict(update_epochs=3, denoise_steps=5, noise_level=0.3)),
    "long": dict(pi0=dict(update_epochs=4, actor_lr=5e-6), pi05=dict(update_epochs=4, denoise_steps=5, anneal_lr=True)),
}
LIBERO_STEPS = {"spatial": 240, "object": 320, "goal": 320, "long": 480, "90": 480}
GPU_BASE = dict(total_iterations=400, num_envs=64, rollout_epochs=8, minibatch_size=2048, micro_batch_size=32,
                update_epochs=2, actor_lr=5e-6, critic_lr=1e-4, anneal_lr=False, denoise_steps=4,
                noise_level=0.5, replan_steps=5, eval_every=10, eval_episodes_per_task=50)
# Table 8's global batch 2560 = 256 envs x one 50-step episode in chunks of 5 (its 5120 = 320 x 80 / 5, RLinf's
# SIMPLER episodes): one rollout, one minibatch, 4 update epochs.
MANISKILL_TABLE8 = dict(total_iterations=40, num_envs=256, interaction_steps=50, rollout_epochs=1,
                        minibatch_size=2560, update_epochs=4, actor_lr=5.6e-6, critic_lr=1.1e-4,
                        denoise_steps=4, noise_level=0.5, replan_steps=5)
# The embedded default: a tiny π0 on 2 CPU cores. 32 episodes per update for 100 iterations (cosine schedule) keeps what
# it learns where 16 episodes for 200 iterations drifted or collapsed: the same env steps and 4 Adam steps an iteration
# (docs/results.md, "The three defaults, 5 seeds each"). Its evals use 50 episodes per task (bench/compare.py: 100).
TINY_CPU = dict(total_iterations=100, num_envs=32, interaction_steps=100, rollout_epochs=1, minibatch_size=400,
                micro_batch_size=100, update_epochs=2, actor_lr=5e-5, critic_lr=1e-3, anneal_lr=True,
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
            values.update(total_iterations=150, num_envs=320, actor_lr=7.91e-6, critic_lr=1.55e-4,
                          update_epochs=5 if model == "pi05" else 4)
        if env_id == SIMPLER_TASKS["cube"]:   # its RL train steps
            values.update(total_iterations=130 if model == "pi0" else 70)
        steps, replan = values["interaction_steps"], values["replan_steps"]
        values.update(minibatch_size=rollout_decisions(values["num_envs"], steps, replan))
    else:  # metaworld: episodes of 100 steps
        values.update(interaction_steps=100, replan_steps=5)
    return values


def check_args(args: Args, world_size: int, action_horizon: int) -> None:
    """A clear error for every bad flag combination (never a stack trace from deep inside)."""
    from common.run import check_batch_sizes

    check_batch_sizes(args, world_size, action_horizon)  # --replan-steps, --num-envs, --minibatch-size, ... (common/run.py)
    if not 0.0 < args.noise_level < 2.0:
        raise ValueError(f"--noise-level must be in (0, 2), got {args.noise_level}")


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
def sample_hybrid(policy, cache, critic, args: Args, action_dim: int, generator: torch.Generator):
    """Hybrid ODE-SDE rollout (4.2.3): ONE denoise step j, drawn uniformly per env, is the SDE step of
    eq. 9; the other K - 1 steps are the deterministic Euler ODE x <- x - Δ v.

    j is drawn per env (not per batch) so that every minibatch mixes all denoising times and the
    critic and ratio statistics are not tied to one t per iteration.
    Returns actions (B, H, D), x_j (B, H, D), x_{j+1} (B, H, D), j (B,), log-prob (B,) fp32,
    critic inputs (B, K, W) fp32 and values (B,) fp32.
    """
    B, H, D = cache.batch_size, policy.config.action_horizon, policy.config.action_dim
    device, K, dt = cache.state.device, args.denoise_steps, 1.0 / args.denoise_steps
    x = torch.randn(B, H, D, generator=generator, device=device, dtype=torch.float32)  # x at t = 1
    sde_idx = torch.randint(0, K, (B,), generator=generator, device=device)
    x_j, x_next = torch.zeros_like(x), torch.zeros_like(x)
    logprob = torch.zeros(B, device=device)
    expert_feats = []
    for k in range(K):
        t = torch.full((B,), 1.0 - k * dt, device=device)
        v, feats = policy.velocity(cache, x, t)
        expert_feats.append(feats.float().mean(dim=1))  # pooled over the H action tokens: (B, W)
        is_sde = sde_idx == k
        if is_sde.any():
            mean, std = sde_step(x, v, t, dt, args.noise_level)
            x_sde = mean + std * torch.randn(x.shape, generator=generator, device=device)
            x_j[is_sde], x_next[is_sde] = x[is_sde], x_sde[is_sde]
            logprob[is_sde] = transition_logprob(x_sde, mean, std, args.replan_steps, action_dim)[is_sde]
            x = torch.where(is_sde.view(B, 1, 1), x_sde, x - dt * v)
        else:
            x = x - dt * v
    critic_in = critic_inputs(policy, cache, expert_feats)
    return x, x_j, x_next, sde_idx, logprob, critic_in, critic(critic_in, critic_steps(sde_idx, critic_in.shape[1], args.critic_steps))


def critic_inputs(policy, cache, expert_feats: list[torch.Tensor]) -> torch.Tensor:
    """What the value head sees (4.3.2): π0 -> the expert's features at every denoising step (eq. 16
    averages the value over them); π0.5 -> the VLM's prefix output, V_vlm(o). Shape (B, K or 1, W)."""
    if policy.config.variant == "pi05":
        return policy.prefix_features(cache).float().unsqueeze(1)
    return torch.stack(expert_feats, dim=1)


def critic_steps(sde_idx: torch.Tensor, num_steps: int, mode: str) -> torch.Tensor:
    """Which of the num_steps feature rows the value averages, (B, num_steps) bool. `pre-decision`: k <= j. The features of
    steps after j are computed from x_{j+1}, i.e. from the decision being scored: a baseline that sees the decision adds
    -grad E_a[b(o, a)] to the policy gradient (Tucker et al. 2018), which pushes away from the actions the critic rates high."""
    k = torch.arange(num_steps, device=sde_idx.device)                      # (K,)
    if mode == "all" or num_steps == 1:                                     # π0.5: one prefix feature, before any decision
        return torch.ones(len(sde_idx), num_steps, dtype=torch.bool, device=sde_idx.device)
    return k.unsqueeze(0) <= sde_idx.unsqueeze(1)                           # (B, K)


class Critic(nn.Module):
    """4-layer MLP value head. V(o) = mean over the denoising trajectory of head(features) (eq. 16).

    It reads features computed at rollout time and stored (stop-gradient into the model): rollout and
    update then use the very same value function, and the update needs no extra expert passes.
    """

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor, steps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """features (B, K, W), steps (B, K) bool (None: all) -> (B,): eq. 16, the mean over the chosen steps."""
        per_step = self.net(features.float()).squeeze(-1)                   # (B, K)
        if steps is None:
            return per_step.mean(dim=-1)
        return (per_step * steps).sum(dim=-1) / steps.sum(dim=-1)


# ALGO LOGIC: returns
def time_limit_rows(terminated: np.ndarray, truncated: np.ndarray, mode: str) -> np.ndarray:
    """Envs (indices) whose episode hit the time limit in this decision and get γ V(final obs) added to their reward,
    so that eq. 13's δ continues past the limit: none with --time-limit terminal (the limit then ends the episode)."""
    if mode == "terminal":
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(truncated & ~terminated)


def episode_weights(dones: torch.Tensor) -> torch.Tensor:
    """1 / L per decision, L = the decisions of its episode inside this rollout epoch (ended by a done, or still running at
    the end). Σ over an episode's decisions = 1, so every episode counts once (normalised to mean 1 over the batch later).
    dones (T, N) -> (T, N) fp32."""
    episode = torch.cumsum(dones, dim=0) - dones                         # (T, N) episodes ended before decision t
    length = (episode.unsqueeze(0) == episode.unsqueeze(1)).sum(dim=1)   # (T, N) decisions sharing t's episode
    return 1.0 / length.float()


def compute_gae(rewards, values, dones, next_value, gamma: float, lam: float):
    """GAE (eq. 13), A_t = Σ_k (γλ)^k δ_{t+k}, δ_t = R_t + γ V(s_{t+1}) (1 - done_t) - V(s_t).

    rewards, values, dones: (T, N); dones[t] = the episode ended during decision t (with --time-limit
    bootstrap, truncated episodes already carry γ V(final obs) in their reward). next_value: (N,), V of the
    observation after the last decision (ignored where dones[T-1] ends the episode).
    Returns advantages, returns: (T, N).
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        next_v = next_value if t == T - 1 else values[t + 1]
        not_done = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * next_v * not_done - values[t]
        last_gae = delta + gamma * lam * not_done * last_gae
        advantages[t] = last_gae
    return advantages, advantages + values


def ppo_losses(ratio, adv, new_value, old_value, returns, clip_coef: float, weights):
    """Clipped surrogate (eq. 14) and clipped value loss, per decision, then their weighted means over the rows.
    Every input (B,) fp32; weights all 1: the plain means."""
    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip_coef, 1 + clip_coef))
    v_clipped = old_value + (new_value - old_value).clamp(-clip_coef, clip_coef)
    v = 0.5 * torch.max((new_value - returns) ** 2, (v_clipped - returns) ** 2)
    return (weights * pg).mean(), (weights * v).mean()


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
        args = run.resolve_flags(args, policy, dist_info.world_size, preset, check_args)  # None -> the --env x --model preset
        resume_dir, saved = (resumed.checkpoint, resumed.train_state) if resumed else (None, None)
        from common.evaluate import check_policy_fits_env
        from common.logger import RunLogger

        rank, world, device = dist_info.rank, dist_info.world_size, dist_info.device

        # TRY NOT TO MODIFY: seeding (same weights everywhere, per-rank environments)
        sampler_gen, np_rng = run.seed_everything(args.seed, rank, device, args.torch_deterministic)
        if not args.train_vlm:
            policy.freeze_vlm()  # the RL stage trains the action expert only (paper 5.1)
        lora.setup(policy, args, saved)  # --lora-rank: adapters on the frozen VLM (5.5)
        critic_width = policy.vlm_width if policy.config.variant == "pi05" else policy.expert_width
        critic = Critic(critic_width, args.critic_hidden).to(device)
        distributed.broadcast_parameters(policy)
        if args.fsdp:
            distributed.shard_policy(policy, device)  # FSDP2: each rank keeps 1 / world of the weights, grads, AdamW moments
        distributed.broadcast_parameters(critic)
        actor_params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([{"params": actor_params, "lr": args.actor_lr},
                                       {"params": list(critic.parameters()), "lr": args.critic_lr}], eps=1e-5, weight_decay=0.0)

        local_envs = args.num_envs // world
        num_steps = args.interaction_steps // args.replan_steps  # decisions per env per rollout epoch
        local_batch = local_envs * num_steps * args.rollout_epochs
        local_minibatch = args.minibatch_size // world
        env_opts = processor.data_config.env_options(args.env, policy.config.image_size)   # the view it was trained on
        envs = make_envs(args.env, local_envs, seed=args.seed * 1000 + rank, **env_opts,
                         device=str(device), max_episode_steps=args.max_episode_steps)
        check_policy_fits_env(policy, processor, envs, env_opts["image_size"], f"--env {args.env}",
                              f"--checkpoint {args.checkpoint}", args.replan_steps)  # else it would run, silently, at 0%
        action_dim = envs.action_dim

        start_iteration, global_step = 1, 0
        run_dir = run.new_run_dir(args.run_root, args.env, args.exp_name, args.seed)
        if resume_dir is not None:  # --resume: the saved modules, optimizer, counters and RNGs
            start_iteration, global_step = run.restore(resume_dir, saved, optimizer, {"policy": policy, "critic": critic}, sampler_gen, np_rng)
            run_dir = resume_dir.parent.parent
        track = dict(project=args.wandb_project_name, entity=args.wandb_entity) if args.track else None  # --track: W&B too
        logger = RunLogger(run_dir, asdict(args), resume_step=global_step if resume_dir else None, wandb=track) if dist_info.is_main else None
        guard = run.FiniteGuard(dist_info.is_main, last_good=resume_dir)  # stops the run at the first NaN / inf, unsaved

        @torch.no_grad()  # rollout: no graph, even when the VLM is trained
        def act_and_value(raw_obs: dict):
            """One decision for a batch of raw observations: (env actions (B, H', A), stored tensors...)."""
            obs = processor.observation(raw_obs, device)
            cache = actor.encode(obs)
            actions, x_j, x_next, j, logp, c_in, value = sample_hybrid(actor, cache, critic, args, action_dim, sampler_gen)
            env_actions = processor.actions_to_env(actions, action_dim, state=raw_obs["state"])[:, : args.replan_steps]
            return env_actions, x_j, x_next, j, logp, c_in, value

        def run_eval(iteration: int, final: bool = False) -> float:  # held-out success rate, logged under eval/
            return run.held_out_eval(policy, processor, envs, args, run_dir, logger, global_step, iteration, final)

        def save_checkpoint(iteration: int) -> None:
            optimizer_state = distributed.optimizer_state(optimizer, {"policy": policy, "critic": critic})  # --fsdp: gathered, full
            train_state = {"critic": critic.state_dict(), "optimizer": optimizer_state, "iteration": iteration,
                           "global_step": global_step, "args": asdict(args)}
            run.save_checkpoint(run_dir, iteration, policy, processor, train_state, run.rng_state(sampler_gen, np_rng), guard)

        # ALGO LOGIC: rollout storage (per rank), E = rollout epochs, T = decisions per epoch, N = local envs
        E, T, N = args.rollout_epochs, num_steps, local_envs
        H, D = policy.config.action_horizon, policy.config.action_dim
        R, n_cam, S = env_opts["image_size"], envs.num_cameras, envs.state_dim
        K_in = 1 if policy.config.variant == "pi05" else args.denoise_steps
        obs_images = np.zeros((E, T, N, n_cam, R, R, 3), dtype=np.uint8)  # (E, T, N, n_cam, R, R, 3) raw camera images
        obs_states = np.zeros((E, T, N, S), dtype=np.float32)             # (E, T, N, S) raw proprioception
        obs_task_ids = np.zeros((E, T, N), dtype=np.int64)                # (E, T, N)
        obs_instructions = [[None] * T for _ in range(E)]                 # E x T lists of N strings
        x_js = torch.zeros(E, T, N, H, D, device=device)                  # (E, T, N, H, D) fp32 chain state before the SDE step
        x_nexts = torch.zeros(E, T, N, H, D, device=device)               # (E, T, N, H, D) fp32 chain state after the SDE step
        denoise_idxs = torch.zeros(E, T, N, dtype=torch.long, device=device)  # (E, T, N) the SDE step j
        logprobs = torch.zeros(E, T, N, device=device)                    # (E, T, N) fp32 log π(x_{j+1} | o, x_j)
        critic_ins = torch.zeros(E, T, N, K_in, critic_width, device=device)  # (E, T, N, K or 1, W) fp32 critic inputs
        rewards = torch.zeros(E, T, N, device=device)                     # (E, T, N) chunk rewards (+ γV at the time limit: --time-limit)
        dones = torch.zeros(E, T, N, device=device)                       # (E, T, N) episode ended in this decision
        values = torch.zeros(E, T, N, device=device)                      # (E, T, N) V(o_t)
        advantages = torch.zeros(E, T, N, device=device)
        returns = torch.zeros(E, T, N, device=device)
        weights = torch.ones(E, T, N, device=device)                      # (E, T, N) loss weight per decision

        before = run_eval(0) if start_iteration == 1 else None  # held-out success before RL (a resumed run: already known)
        if before is not None and dist_info.is_main:
            print(f"held-out success before RL: {before:.1%}")
        bar = tqdm(range(start_iteration, args.total_iterations + 1), disable=not (args.progress and dist_info.is_main),
                   desc=f"flow_sde_ppo {args.env}", initial=start_iteration - 1, total=args.total_iterations)
        for iteration in bar:
            if args.anneal_lr:  # cosine schedule
                frac = 0.5 * (1.0 + math.cos(math.pi * (iteration - 1) / args.total_iterations))
                optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"] = frac * args.actor_lr, frac * args.critic_lr
            iter_start, episodes = time.time(), run.EpisodeCounts()  # for the charts: successes, lengths, reward
            policy.eval()
            actor = distributed.unsharded(policy)  # --fsdp: the full weights on every rank, for this rollout only
            for e in range(E):
                # each rollout epoch starts from fresh training episodes, seeded by (seed, rank, iteration, epoch)
                next_obs = envs.reset(seed=int(np_rng.integers(2**31)))
                episodes.start_epoch(N)
                for t in range(T):
                    obs_images[e, t], obs_states[e, t] = next_obs["images"], next_obs["state"]
                    obs_task_ids[e, t], obs_instructions[e][t] = next_obs["task_id"], list(next_obs["instruction"])
                    env_actions, x_js[e, t], x_nexts[e, t], denoise_idxs[e, t], logprobs[e, t], critic_ins[e, t], values[e, t] = \
                        act_and_value(next_obs)
                    next_obs, reward, terminated, truncated, info = envs.step_chunk(env_actions)  # partial reset inside
                    global_step += N * args.replan_steps * world  # env steps budgeted, all ranks
                    episodes.step(reward, terminated, truncated, info)
                    reward = torch.as_tensor(reward, dtype=torch.float32, device=device)
                    bootstrap = time_limit_rows(terminated, truncated, args.time_limit)
                    if len(bootstrap):  # --time-limit bootstrap: the limit is not a true end, add γ V(final obs)
                        final_obs = run.select_obs(info["final_obs"], bootstrap)
                        *_, final_value = act_and_value(final_obs)
                        reward[torch.as_tensor(bootstrap, device=device)] += args.gamma * final_value
                    rewards[e, t], dones[e, t] = reward, torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device)
                episodes.end_epoch()  # a first episode still running: not solved in the window
                *_, next_value = act_and_value(next_obs)  # bootstrap the unfinished episodes
                advantages[e], returns[e] = compute_gae(rewards[e], values[e], dones[e], next_value,
                                                         args.gamma, args.gae_lambda)
                if args.episode_weighting:
                    weights[e] = episode_weights(dones[e])
            rollout_time = time.time() - iter_start
            actor = None  # (--fsdp: frees the full copy before the update)

            # flatten the batch: (E, T, N, ...) -> (E*T*N, ...)
            b_x_j, b_x_next = x_js.reshape(-1, H, D), x_nexts.reshape(-1, H, D)
            b_idx, b_logprobs = denoise_idxs.reshape(-1), logprobs.reshape(-1)
            b_critic_in, b_values = critic_ins.reshape(-1, K_in, critic_width), values.reshape(-1)
            b_returns = returns.reshape(-1)
            b_adv, b_weights = advantages.reshape(-1), weights.reshape(-1)
            if args.episode_weighting:  # mean 1 over all ranks' decisions: the loss scale of unweighted decisions
                b_weights = b_weights / distributed.all_reduce_mean({"w": b_weights.mean().item()}, device)["w"]
            adv_stats = distributed.all_reduce_mean({"mean": b_adv.mean().item(), "sq": (b_adv**2).mean().item()}, device)
            b_adv = (b_adv - adv_stats["mean"]) / (math.sqrt(max(adv_stats["sq"] - adv_stats["mean"] ** 2, 0.0)) + 1e-8)
            b_images, b_states = obs_images.reshape(-1, n_cam, R, R, 3), obs_states.reshape(-1, S)
            b_task_ids = obs_task_ids.reshape(-1)
            b_instructions = [s for epoch in obs_instructions for step in epoch for s in step]

            # ALGO LOGIC: PPO update (eq. 14-15) on minibatches, with gradient accumulation over micro-batches
            policy.train()
            stats = {k: [] for k in ("pg_loss", "v_loss", "approx_kl", "clipfrac", "entropy", "grad_norm", "critic_grad_norm", "ratio")}
            for epoch in range(args.update_epochs):
                perm = torch.randperm(local_batch)
                for start in range(0, local_batch, local_minibatch):
                    mb = perm[start : start + local_minibatch]
                    optimizer.zero_grad(set_to_none=True)
                    for micro in mb.split(args.micro_batch_size):
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
                        pg_loss, v_loss = ppo_losses(ratio, mb_adv, critic(b_critic_in[micro], critic_steps(b_idx[micro], K_in, args.critic_steps)),
                                                     b_values[micro], b_returns[micro],
                                                     args.clip_coef, b_weights[micro])
                        loss = (pg_loss + args.vf_coef * v_loss) * (len(micro) / len(mb))
                        loss.backward()
                        with torch.no_grad():
                            stats["pg_loss"].append(pg_loss.item())
                            stats["v_loss"].append(v_loss.item())
                            stats["approx_kl"].append(((ratio - 1) - logratio).mean().item())
                            stats["clipfrac"].append(((ratio - 1.0).abs() > args.clip_coef).float().mean().item())
                            stats["ratio"].append(ratio.mean().item())
                            # entropy proxy: the step-j Gaussian's entropy per executed action dim
                            stats["entropy"].append((0.5 * math.log(2 * math.pi * math.e) + torch.log(std)).mean().item())
                    distributed.all_reduce_gradients(actor_params + list(critic.parameters()))
                    # clip actor and critic separately: the fresh critic's large gradients must not shrink the actor's step
                    stats["grad_norm"].append(distributed.clip_grad_norm(actor_params, args.max_grad_norm))
                    stats["critic_grad_norm"].append(nn.utils.clip_grad_norm_(critic.parameters(), args.max_grad_norm).item())
                    guard.check(iteration, {"losses/grad_norm": stats["grad_norm"][-1], "losses/critic_grad_norm": stats["critic_grad_norm"][-1]})
                    optimizer.step()
            guard.check_weights(iteration, policy, critic)

            # TRY NOT TO MODIFY: record statistics
            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
            scalars = {f"losses/{k}": float(np.mean(v)) for k, v in stats.items()}
            scalars["losses/explained_variance"] = float(explained_var)
            scalars = distributed.all_reduce_mean(scalars, device)  # every rank holds the same number of decisions
            guard.check(iteration, {k: v for k, v in scalars.items() if k != "losses/explained_variance"})
            totals = episodes.totals(N * E * T * args.replan_steps / rollout_time, device)
            scalars.update(run.rollout_charts(totals))
            scalars.update({"charts/actor_lr": optimizer.param_groups[0]["lr"], "charts/iteration_seconds": time.time() - iter_start,
                            "charts/iteration": iteration})
            if logger:
                logger.log(global_step, scalars)
                bar.set_postfix(rollout_success=f"{scalars['charts/rollout_success_rate']:.2f}", kl=f"{scalars['losses/approx_kl']:.4f}")
                episodes.warn_if_unrewarded(totals, iteration)
            if args.eval_every and iteration % args.eval_every == 0 and iteration != args.total_iterations:
                run_eval(iteration)
            if iteration % args.save_every == 0 or iteration == args.total_iterations:
                save_checkpoint(iteration)

        in_sync = run.check_in_sync(device, policy, critic)  # every rank ends with the same weights
        after = run_eval(args.total_iterations, final=True)
        run.report(logger, before, after, world, in_sync, run_dir, args.run_root)  # rank 0: before -> after, the curve
        envs.close()
        distributed.cleanup()
