"""Few-shot supervised fine-tuning: scripted-expert demonstrations -> flow-matching SFT -> checkpoint.

    demos = collect_demos("metaworld-button-press-topdown-v3", num_demos=8, seed=0, image_size=64)
    policy, processor, losses = train_sft(demos, preset="tiny", steps=1500)
    save_policy("runs/sft", policy, processor)

or everything at once, cached (what the RL scripts call for their embedded default):

    ckpt_dir = make_default_sft_policy()     # demos -> SFT of the tiny preset -> openpi-layout checkpoint

Demonstrations are stored per step (images, state, env action, episode / task ids) in one .npz;
action chunks of any horizon H are cut from them at training time (`action_chunks`).
The loss is openpi's flow matching (policy.sft_loss): t=1 noise, t=0 action,
x_t = t·noise + (1-t)·a, target u = noise - a, t ~ Beta(1.5, 1)·0.999 + 0.001.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist

from common.experts import NoExpertError, check_expert  # noqa: F401  (NoExpertError: re-exported for the scripts)

DEMO_FORMAT_VERSION = 1
# The embedded default (README main command): one MetaWorld task, 64 px, one camera, H=8, H'=4.
DEFAULT_ENV = "metaworld-drawer-open-v3"
DEFAULT_IMAGE_SIZE = 64
DEFAULT_ACTION_HORIZON = 8       # H: the model's chunk
DEFAULT_REPLAN_STEPS = 4         # H': actions executed per chunk
# Few-shot setting (tiny preset, 2-core CPU): 10 demos + 400 steps of batch 32 leave a policy that solves about half of
# the held-out episodes, its failures partly chance (some initial states succeed with some noise seeds and not others:
# bench/per_state.py), so RL has room and signal. On button-press-topdown the same recipe's failures are tied to the
# scene and RL did not lift it (docs/results.md).
DEFAULT_NUM_DEMOS = 10
DEFAULT_SFT_STEPS = 400
# ManiSkill (--env maniskill-<task>, no --checkpoint): its own few-shot setting (issue 28, bench/maniskill_start.py).
# PushCube-v1 is the ManiSkill task whose start lands in 20-80%: 100 demos + 1000 SFT steps leave 28% of 50 held-out
# episodes (the RL scripts' iteration-0 eval, seed 1) and 20% of 100 others; 10 / 20 / 50 demos at 400 steps 12-16%;
# 200 demos + 2000 steps no better (32% / 17%) at twice the cost. PickCube-v1 stays at 0% (10 or 50 demos): its goal is
# hidden from the camera (mani_skill hides goal_site) and is not in pirl's state.
MANISKILL_DEFAULT_ENV = "maniskill-PushCube-v1"
MANISKILL_NUM_DEMOS = 100
MANISKILL_SFT_STEPS = 1000
MANISKILL_IMAGE_SIZE = 64
# tiny-preset changes for the default: a 9-token prompt needs no 32 slots
DEFAULT_CONFIG_OVERRIDES = {"max_token_len": 16}


def default_cache_dir() -> Path:
    """$PIRL_CACHE, else runs/cache in the project (no hidden state in the user's home by default)."""
    return Path(os.environ.get("PIRL_CACHE", Path(__file__).resolve().parents[1] / "runs" / "cache"))


def _is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


# ----------------------------------------------------------------------------- demonstrations
@dataclass
class Demos:
    """T steps from successful expert episodes, flattened (episode-major, time-minor)."""
    images: np.ndarray        # (T, n_cam, R, R, 3) uint8, upright
    state: np.ndarray         # (T, S) float32
    actions: np.ndarray       # (T, A) float32, the expert's env action at that step
    episode: np.ndarray       # (T,) int64, episode index 0..num_episodes-1
    task_id: np.ndarray       # (T,) int64
    task_descriptions: list   # instruction per task id
    env_name: str = ""

    @property
    def num_episodes(self) -> int:
        return int(self.episode.max()) + 1 if len(self.episode) else 0

    def instructions(self, idx) -> list[str]:
        return [self.task_descriptions[t] for t in self.task_id[idx]]

    def save(self, path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, images=self.images, state=self.state, actions=self.actions,
                            episode=self.episode, task_id=self.task_id,
                            meta=json.dumps({"version": DEMO_FORMAT_VERSION, "env_name": self.env_name,
                                             "task_descriptions": list(self.task_descriptions)}))
        os.replace(tmp, path)  # atomic: a crashed run never leaves a half-written cache entry

    @classmethod
    def load(cls, path) -> "Demos":
        with np.load(path) as f:
            meta = json.loads(str(f["meta"]))
            if meta.get("version") != DEMO_FORMAT_VERSION:
                raise ValueError(f"{path}: demo format version {meta.get('version')} != {DEMO_FORMAT_VERSION}; delete it")
            return cls(f["images"], f["state"], f["actions"], f["episode"], f["task_id"],
                       meta["task_descriptions"], meta["env_name"])


def action_chunks(demos: Demos, horizon: int) -> np.ndarray:
    """(T, H, A): the H actions starting at each step; past the episode end the last action repeats
    (openpi/LeRobot pad the same way; after success the robot only has to stay put)."""
    T = len(demos.actions)
    idx = np.arange(T)[:, None] + np.arange(horizon)[None]               # (T, H)
    last = np.zeros(T, np.int64)                                         # last step of each step's episode
    ends = np.flatnonzero(np.r_[demos.episode[1:] != demos.episode[:-1], True])
    starts = np.r_[0, ends[:-1] + 1]
    for s, e in zip(starts, ends):
        last[s:e + 1] = e
    return demos.actions[np.minimum(idx, last[:, None])]


def few_shot_defaults(env_name: str) -> dict:
    """The embedded default's few-shot setting on `env_name`: {"num_demos", "sft_steps", "image_size"} (per simulator)."""
    if env_name.startswith("maniskill-"):
        return {"num_demos": MANISKILL_NUM_DEMOS, "sft_steps": MANISKILL_SFT_STEPS, "image_size": MANISKILL_IMAGE_SIZE}
    return {"num_demos": DEFAULT_NUM_DEMOS, "sft_steps": DEFAULT_SFT_STEPS, "image_size": DEFAULT_IMAGE_SIZE}


def few_shot_setting(env_name: str, num_demos: int | None = None, sft_steps: int | None = None,
                     image_size: int | None = None) -> tuple[int, int, int]:
    """(num_demos, sft_steps, image_size): the values given, and the env's few-shot default for those left at None."""
    defaults = few_shot_defaults(env_name)
    return (defaults["num_demos"] if num_demos is None else num_demos,
            defaults["sft_steps"] if sft_steps is None else sft_steps,
            defaults["image_size"] if image_size is None else image_size)


def few_shot_help(key: str) -> str:
    """--help's default for a flag left to few_shot_defaults[key]: '(default: MetaWorld 10, ManiSkill 100)'."""
    metaworld, maniskill = few_shot_defaults("metaworld-")[key], few_shot_defaults("maniskill-")[key]
    return f"(default: MetaWorld {metaworld}, ManiSkill {maniskill}; common/sft.py few_shot_defaults)"


def render_tag(env_name: str, view: str | None = None, maniskill_client: str = "pirl") -> str:
    """How the demos are rendered, as part of a cache key: the MetaWorld view (None: common/envs.py
    METAWORLD_DEFAULT_VIEW), a ManiSkill client other than pirl's; "" otherwise. Demos and SFT policies cached under one
    rendering are never reused under another."""
    from common.envs import METAWORLD_DEFAULT_VIEW
    if env_name.startswith("metaworld-"):
        return f"__{view or METAWORLD_DEFAULT_VIEW}-view"
    if env_name.startswith("maniskill-") and maniskill_client != "pirl":
        return f"__{maniskill_client}-client"
    return ""


def demo_cache_path(env_name: str, num_demos: int, seed: int, image_size: int, cache_dir=None,
                    view: str | None = None, maniskill_client: str = "pirl") -> Path:
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = render_tag(env_name, view, maniskill_client)
    return cache_dir / "demos" / f"{env_name}__n{num_demos}__seed{seed}__{image_size}px{tag}.npz"


def demo_rendering(data_config, env_name: str, model_size: int, image_size: int | None = None) -> dict:
    """How to render a checkpoint's demonstrations: as RL and evals render `env_name` for it (DataConfig.env_options:
    its peer's render size, MetaWorld view and ManiSkill client), so that SFT and RL feed the model the same images.
    Returns collect_demos' keyword args (image_size, view, maniskill_client). `image_size` (a user's --image-size)
    must agree: else one UsageError naming the size that would."""
    from common.errors import UsageError

    options = data_config.env_options(env_name, model_size)
    if image_size is not None and image_size != options["image_size"]:
        raise UsageError(f"--image-size {image_size}: RL and evals of this checkpoint render {env_name} at "
                         f"{options['image_size']} px (data config {data_config.name}), and its demonstrations are "
                         f"rendered the same way: drop --image-size (or pass {options['image_size']})")
    return {"image_size": options["image_size"], "view": options["metaworld_view"],
            "maniskill_client": options.get("maniskill_client", "pirl")}


def collect_demos(env_name: str, num_demos: int, seed: int = 0, image_size: int = DEFAULT_IMAGE_SIZE,
                  num_envs: int = 1, cache_dir=None, use_cache: bool = True, progress: bool = True,
                  max_attempts: int | None = None, view: str | None = None, maniskill_client: str = "pirl") -> Demos:
    """Roll out the env's scripted expert on TRAIN initial states and keep `num_demos` successful episodes.

    Cached by (env, num_demos, seed, image_size, rendering) under cache_dir/demos. Episodes use init ids drawn
    with `seed` from env.train_init_ids, never the eval ids. `view`: the MetaWorld view they are rendered in
    (common/envs.py METAWORLD_VIEWS; None: METAWORLD_DEFAULT_VIEW); `maniskill_client`: whose ManiSkill client
    renders them (common/envs.py MANISKILL_CLIENTS). Raises a ValueError naming the env
    (and the envs that have an expert) when it has no scripted expert: NoExpertError, a UsageError.
    """
    from common.envs import METAWORLD_DEFAULT_VIEW, make_envs
    from common.experts import make_expert

    if num_demos < 1:
        raise ValueError(f"num_demos must be >= 1, got {num_demos}")
    path = demo_cache_path(env_name, num_demos, seed, image_size, cache_dir, view, maniskill_client)
    if use_cache and path.is_file():
        return Demos.load(path)
    expert = make_expert(env_name)  # fails early, with the env's name, when there is no expert
    envs = make_envs(env_name, num_envs=num_envs, seed=seed, image_size=image_size, autoreset=False,
                     metaworld_view=view or METAWORLD_DEFAULT_VIEW, maniskill_client=maniskill_client)
    max_attempts = max_attempts or 3 * num_demos + 10
    rng = np.random.default_rng(seed)
    train_ids = envs.train_init_ids
    kept, attempts = [], 0
    bar = _progress(num_demos, f"demos {env_name}", progress)
    try:
        while len(kept) < num_demos and attempts < max_attempts:
            # (task, init) pairs round-robin over tasks; init ids drawn from the TRAIN range only
            wave = [(int((attempts + i) % envs.num_tasks), int(train_ids[int(rng.integers(len(train_ids)))]))
                    for i in range(envs.num_envs)]
            attempts += envs.num_envs
            for episode in _expert_episodes(envs, expert, wave):
                if episode["success"] and len(kept) < num_demos:
                    kept.append(episode)
                    bar.update(1)
    finally:
        envs.close()
        bar.close()
    if len(kept) < num_demos:
        raise RuntimeError(f"{env_name}: the scripted expert succeeded in only {len(kept)} of {attempts} "
                           f"episodes (< num_demos={num_demos}); raise max_attempts or pick another task")
    demos = Demos(images=np.concatenate([e["images"] for e in kept]),
                  state=np.concatenate([e["state"] for e in kept]),
                  actions=np.concatenate([e["actions"] for e in kept]),
                  episode=np.concatenate([np.full(len(e["actions"]), i, np.int64) for i, e in enumerate(kept)]),
                  task_id=np.concatenate([np.full(len(e["actions"]), e["task_id"], np.int64) for e in kept]),
                  task_descriptions=list(envs.task_descriptions), env_name=env_name)
    if use_cache and _is_main():
        demos.save(path)
    return demos


def _expert_episodes(envs, expert, wave) -> list[dict]:
    """Run one episode per env with the expert, one action per step_chunk; returns per-env records."""
    obs = envs.reset(wave)
    n = envs.num_envs
    rec = [{"images": [], "state": [], "actions": [], "task_id": wave[i][0], "success": False} for i in range(n)]
    done = np.zeros(n, bool)
    while not done.all():
        action = expert.act(envs)                                         # (N, A)
        for i in np.flatnonzero(~done):
            rec[i]["images"].append(obs["images"][i])
            rec[i]["state"].append(obs["state"][i])
            rec[i]["actions"].append(action[i])
        obs, _, terminated, truncated, info = envs.step_chunk(action[:, None])
        for i in np.flatnonzero(~done & (terminated | truncated)):
            rec[i]["success"] = bool(terminated[i])
        done |= terminated | truncated
    for r in rec:
        for k in ("images", "state", "actions"):
            r[k] = np.stack(r[k])
    return rec


class _progress:
    """tqdm when available and wanted, else a no-op."""

    def __init__(self, total, desc, enabled):
        self.bar = None
        if enabled and _is_main():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc)

    def update(self, n=1):
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix(self, **kw):
        if self.bar is not None:
            self.bar.set_postfix(**kw)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- SFT
def build_policy(demos: Demos, preset: str = "tiny", init_from=None, device="cpu", seed: int = 0,
                 cache_dir=None, **config_overrides):
    """A policy + Processor whose norm stats come from the demonstrations.

    From scratch: make_config(preset, **overrides), a tiny SentencePiece model trained on the demo
    instructions (tiny presets), random init with `seed`. From a checkpoint: its weights and tokenizer.
    """
    from common.checkpoint import load_policy
    from common.processor import Processor, compute_norm_stats
    from common.tokenizer import train_tiny_tokenizer

    if init_from is not None:   # a checkpoint dir, or its (policy, processor) already loaded
        policy, old = load_policy(init_from, device=device) if isinstance(init_from, (str, Path)) else init_from
        stats = sft_norm_stats(demos, old.data_config, policy.config.action_horizon)
        return policy, old.with_stats(stats)  # the checkpoint's conventions (LeRobot / openpi), the demos' stats
    stats = compute_norm_stats(demos.state, demos.actions)   # pirl's own models: absolute actions
    make_config, policy_class = _model_family(preset)
    config = make_config(preset, **config_overrides)
    if config.vocab_size != 257152:  # tiny presets: our own SentencePiece model on the prompts
        tokenizer_path = Path(cache_dir or default_cache_dir()) / "tokenizers" / f"{demos.env_name}_{config.vocab_size}.model"
        tokenizer = train_tiny_tokenizer(demos.task_descriptions, tokenizer_path, vocab_size=config.vocab_size)
    else:
        raise ValueError(f"preset={preset!r} from scratch needs PaliGemma's tokenizer: pass init_from=<checkpoint>")
    torch.manual_seed(seed)
    policy = policy_class(config).to(device)
    return policy, Processor.from_stats(stats, tokenizer, config)


def sft_norm_stats(demos: Demos, data_config, horizon: int) -> dict:
    """The demos' norm stats as the model sees its data: for a delta data config the action stats are those of the
    (T, H, A) chunks relative to each chunk's first state, over every step of every chunk (openpi's
    compute_norm_stats.py reads the data after its DeltaActions transform); else those of the actions."""
    from common.processor import compute_norm_stats

    if not data_config.delta:
        return compute_norm_stats(demos.state, demos.actions)
    return compute_norm_stats(demos.state, data_config.to_delta(action_chunks(demos, horizon), demos.state))


def _model_family(preset: str):
    """(make_config, policy class) of a preset: GR00T N1.5 ("groot", "tiny-groot") or π0 / π0.5."""
    if preset.endswith("groot"):
        from common.groot import GrootPolicy, make_config
        return make_config, GrootPolicy
    from common.policy import PI0Policy, make_config
    return make_config, PI0Policy


def demo_batch(demos: Demos, chunks: np.ndarray, idx: np.ndarray, processor, device):
    """Observation and normalised, padded action chunks (B, H, D) for demo steps `idx`."""
    raw = {"images": demos.images[idx], "state": demos.state[idx], "instruction": demos.instructions(idx),
           "task_id": demos.task_id[idx]}
    return processor.observation(raw, device), processor.actions_to_model(chunks[idx], state=raw["state"]).to(device)


def train_sft(demos: Demos, preset: str = "tiny", steps: int = DEFAULT_SFT_STEPS, batch_size: int = 32,
              lr: float = 3e-4, weight_decay: float = 1e-4, warmup_steps: int = 100, grad_clip: float = 1.0,
              seed: int = 0, device="cpu", init_from=None, action_horizon: int | None = None,
              image_size: int | None = None, num_cameras: int | None = None, progress: bool = True,
              log_every: int = 50, policy=None, processor=None, distributed: bool = True,
              config_overrides: dict | None = None, cache_dir=None) -> tuple:
    """Flow-matching SFT (policy.sft_loss) with AdamW, linear warm-up and cosine decay.

    Under torchrun every rank draws its own batches (seed + rank) and gradients are averaged with one
    all-reduce (common.distributed.all_reduce_gradients); ranks start from rank 0's weights.
    Returns (policy, processor, losses) with losses a list of (step, loss) every `log_every` steps.
    """
    from common.distributed import all_reduce_gradients, broadcast_parameters

    from common.evaluate import check_policy_fits_env

    if steps < 1 or batch_size < 1:
        raise ValueError(f"train_sft needs steps >= 1 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    device = torch.device(device)
    S, A = demos.state.shape[-1], demos.actions.shape[-1]
    if policy is None:
        overrides = {k: v for k, v in dict(action_horizon=action_horizon, image_size=image_size,
                                           num_cameras=num_cameras).items() if v is not None}
        overrides.update(config_overrides or {})
        if init_from is None:  # sized to the demos: cameras, render size, and D >= S, A (openpi pads both to D)
            overrides.setdefault("num_cameras", demos.images.shape[1])
            overrides.setdefault("image_size", demos.images.shape[2])
            overrides.setdefault("action_dim", max(_model_family(preset)[0](preset).action_dim, S, A))
        elif overrides:
            raise ValueError(f"init_from (a checkpoint) fixes the model config; drop {sorted(overrides)}")
        policy, processor = build_policy(demos, preset, init_from, device, seed, cache_dir, **overrides)
    # a checkpoint must see the demos' cameras / render size and fit their S, A (else SFT trains a model
    # that can never work on this env): one UsageError naming both
    check_policy_fits_env(policy, processor, SimpleNamespace(state_dim=S, action_dim=A, num_cameras=demos.images.shape[1]),
                          demos.images.shape[2], demos.env_name or "the demonstrations",
                          "the init_from checkpoint" if init_from is not None else "the model")
    distributed = distributed and dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    if distributed:
        broadcast_parameters(policy)
    chunks = action_chunks(demos, policy.config.action_horizon)            # (T, H, A)
    params = [p for p in policy.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed + rank)
    gen = torch.Generator(device=device).manual_seed(seed + rank)  # flow noise and time per rank
    beta = torch.distributions.Beta(torch.tensor(policy.config.time_beta_alpha), torch.tensor(policy.config.time_beta_beta))
    losses, running = [], []
    bar = _progress(steps, "sft", progress)
    policy.train()
    for step in range(steps):
        # lr schedule: linear warm-up then cosine to 10% (openpi: warm-up + cosine decay)
        frac = min(1.0, (step + 1) / max(1, warmup_steps))
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, steps))))
        for g in opt.param_groups:
            g["lr"] = lr * frac * (0.1 + 0.9 * cos)
        idx = rng.integers(len(chunks), size=batch_size)
        obs, actions = demo_batch(demos, chunks, idx, processor, device)
        noise = torch.randn(actions.shape, generator=gen, device=device)
        t = (beta.sample((batch_size,)) * 0.999 + 0.001).to(device)
        loss = policy.sft_loss(obs, actions, noise=noise, time=t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if distributed:
            all_reduce_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        running.append(loss.item())
        if (step + 1) % log_every == 0 or step == steps - 1:
            losses.append((step + 1, float(np.mean(running))))
            bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
            running = []
        bar.update(1)
    bar.close()
    policy.eval()
    return policy, processor, losses


def sft_checkpoint_dir(env_name, num_demos, seed, preset, steps, image_size, action_horizon, cache_dir=None,
                       view: str | None = None) -> Path:
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return cache_dir / "sft" / (f"{env_name}__n{num_demos}__seed{seed}__{preset}__{steps}steps__{image_size}px"
                                f"__H{action_horizon}{render_tag(env_name, view)}")


def check_checkpoint_or_expert(checkpoint, env_name: str, flag: str = "--checkpoint"):
    """Before anything is built: `checkpoint` is a folder or a Hub id, or (None) env_name has a scripted expert so that
    the embedded default can be made; else a UsageError (NoExpertError) that says what to pass."""
    if checkpoint is not None:
        from common.hub import check_checkpoint_spec
        check_checkpoint_spec(checkpoint, flag)   # a local dir or a Hub id (org/name[@revision])
        return
    check_expert(env_name, hint=f"without a scripted expert the embedded default cannot make its demonstrations: "
                                f"pass {flag} DIR (a local SFT checkpoint of that env)")


def make_default_sft_policy(env_name: str = DEFAULT_ENV, num_demos: int | None = None, seed: int = 0,
                            sft_steps: int | None = None, cache_dir=None, preset: str = "tiny",
                            image_size: int | None = None, action_horizon: int = DEFAULT_ACTION_HORIZON,
                            device: str = "cpu", progress: bool = True, data_config: str | None = None) -> Path:
    """demos -> SFT -> checkpoint dir (openpi layout, load with common.checkpoint.load_policy); cached by
    (env, num_demos, seed, preset, steps, image size, horizon, MetaWorld view). num_demos / sft_steps / image_size
    left at None: the env's few-shot default (few_shot_defaults). data_config: the --data-config it is trained under
    (common/conventions.py EMBEDDED_DEFAULT_CONFIGS; None: pirl): its MetaWorld view renders the demos, and the
    checkpoint records it, so that RL and evals render that view too. Under torchrun rank 0 builds it while the other
    ranks wait at a barrier, then every rank gets the same path."""
    from common.checkpoint import save_policy
    from common.conventions import check_embedded_data_config

    conventions = check_embedded_data_config(data_config)
    num_demos, sft_steps, image_size = few_shot_setting(env_name, num_demos, sft_steps, image_size)
    check_checkpoint_or_expert(None, env_name)
    rendering = demo_rendering(conventions, env_name, image_size)   # as RL and evals will render the env for it
    out = sft_checkpoint_dir(env_name, num_demos, seed, preset, sft_steps, image_size, action_horizon, cache_dir,
                             rendering["view"])
    if _is_main() and not (out / "model.safetensors").is_file():
        t0 = time.time()
        demos = collect_demos(env_name, num_demos, seed, cache_dir=cache_dir, progress=progress, **rendering)
        t1 = time.time()
        # rank 0 alone: no gradient all-reduce (the other ranks are waiting at the barrier below)
        policy, processor, losses = train_sft(demos, preset, sft_steps, seed=seed, device=device,
                                              action_horizon=action_horizon, progress=progress, distributed=False,
                                              cache_dir=cache_dir,
                                              config_overrides=DEFAULT_CONFIG_OVERRIDES if preset.startswith("tiny") else None)
        processor.data_config = conventions   # recorded in config.json "data_config": the view it was trained in
        save_policy(out, policy, processor, extra={"sft": {
            "env_name": env_name, "num_demos": num_demos, "demo_steps": len(demos.actions), "seed": seed,
            "steps": sft_steps, "final_loss": losses[-1][1], "demo_seconds": round(t1 - t0, 1),
            "sft_seconds": round(time.time() - t1, 1)}})
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return out
