"""The one evaluation protocol: a fixed, seeded list of held-out episodes, success rate per task.

    act_fn = policy_act_fn(policy, processor, num_steps=10, replan_steps=4)
    summary = evaluate(act_fn, "metaworld-button-press-topdown-v3", num_episodes_per_task=50,
                       num_envs=4, seed=0, image_size=64)

Episodes are (task_id, init_id) pairs from the env's eval_init_ids (LIBERO: all 50 init states;
MetaWorld / ManiSkill: a held-out range never used by demos or training). The policy samples with
the deterministic Euler ODE (no exploration noise); each episode's initial noise comes from a generator of its
own, seeded by (`seed`, the episode's place in the list), so the summary is the same whatever --num-envs, the
world size or the other episodes of its wave, and two policies evaluated with one seed meet the same noise.
Under torchrun each rank runs a disjoint slice of the episode list and the results are gathered.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from common.errors import UsageError

PALIGEMMA_VOCAB = 257152  # full-size π0 / π0.5: openpi's 3 camera slots (absent ones masked), renders resized to R


def eval_episodes(eval_init_ids, num_tasks: int, num_episodes_per_task: int | None, seed: int) -> list:
    """[(task_id, init_id)], task-major. None takes every eval id once (LIBERO's 50); fewer: a seeded subset; more:
    every id n // len(ids) times, then a seeded subset for the rest (MetaWorld's 50 held-out scenes, 100 episodes:
    each scene twice, with other initial noise: the ±5 points of 100 episodes, not the ±7 of 50)."""
    ids = list(eval_init_ids)
    if num_episodes_per_task is not None and num_episodes_per_task < 1:
        raise ValueError(f"num_episodes_per_task must be >= 1 or None (all eval init ids), got {num_episodes_per_task}")
    episodes = []
    for task in range(num_tasks):
        n = len(ids) if num_episodes_per_task is None else num_episodes_per_task
        rng = np.random.default_rng([seed, task])  # the subset is the same for every policy evaluated with this seed
        chosen = ids * (n // len(ids)) + [ids[i] for i in np.sort(rng.choice(len(ids), n % len(ids), replace=False))]
        episodes += [(task, int(i)) for i in chosen]
    return episodes


def evaluate(act_fn, env_name: str, num_episodes_per_task: int | None, num_envs: int = 1, seed: int = 0,
             image_size: int | None = None, video_dir=None, num_videos: int = 0, envs=None,
             json_path=None, progress: bool = False) -> dict:
    """Run act_fn on the eval episodes of `env_name`; returns (and optionally writes) a summary dict.

    act_fn(raw_obs) -> (N, H', A) float32 env actions; if it has `reset(seed)`, it is called once first.
    envs: an existing ChunkVecEnv made with autoreset=False (the RL scripts keep one for all their
    evals); then num_envs / image_size are taken from it. Otherwise one is made here and closed after.
    video_dir / num_videos: mp4 of the first episodes (rank 0), one frame per executed chunk.
    """
    from common.envs import make_envs

    own = envs is None
    if own:
        envs = make_envs(env_name, num_envs=num_envs, seed=seed, image_size=image_size, autoreset=False)
    elif envs.autoreset:
        raise ValueError("evaluate(envs=...): pass a ChunkVecEnv made with autoreset=False (a finished "
                         "episode must stay finished, not restart on a train init state)")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    if hasattr(act_fn, "reset"):
        act_fn.reset(seed)
    all_eps = eval_episodes(envs.eval_init_ids, envs.num_tasks, num_episodes_per_task, seed)
    mine = all_eps[rank::world]                     # disjoint slices; together they cover all episodes
    my_ids = list(range(len(all_eps)))[rank::world]  # each episode's place in the whole list: its noise's seed
    results, frames = [], {}
    n = envs.num_envs
    try:
        waves = range(0, len(mine), n)
        if progress and rank == 0:
            from tqdm import tqdm
            waves = tqdm(waves, desc=f"eval {env_name}")
        for start in waves:
            wave, ids = mine[start:start + n], my_ids[start:start + n]
            real = len(wave)
            wave, ids = wave + [wave[-1]] * (n - real), ids + [ids[-1]] * (n - real)   # pad the last wave; padded envs are ignored
            record = [start + i for i in range(real) if rank == 0 and start + i < num_videos]
            results += run_wave(envs, act_fn, wave, real, record, frames, episode_ids=ids)
    finally:
        if own:
            envs.close()
    if world > 1:  # gather (task_id, success, length) from every rank
        gathered = [None] * world
        dist.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    summary = _summarise(results, envs.task_descriptions, env_name, seed)
    if rank == 0:
        if video_dir is not None and frames:
            _write_videos(frames, Path(video_dir), env_name)
        if json_path is not None:   # whole or not at all (a full disk leaves no half-written summary)
            from common.logger import atomic_write_text
            atomic_write_text(json_path, json.dumps(summary, indent=2))
    return summary


def check_policy_fits_env(policy, processor, envs, image_size: int, env_name: str = "the env",
                          checkpoint: str = "the checkpoint", replan_steps: int | None = None):
    """Raise a UsageError naming both sides when the model cannot see or drive `envs` (rendered at
    `image_size`) as it was trained to: such a pair would otherwise run, silently, at 0% success.
    `envs` needs only state_dim, action_dim and num_cameras; replan_steps (H', if given) must be in 1..H.

    Models we train from scratch (tiny presets) are sized to their demonstrations, so cameras and render
    size must match exactly; full-size openpi models have fixed camera slots (absent cameras are masked)
    and resize any render to their R, as openpi does. States and actions must fit the model's D and the
    checkpoint's norm stats.
    """
    c = policy.config
    S, A, n_cam = envs.state_dim, envs.action_dim, envs.num_cameras
    if processor.camera_order is not None:   # a LeRobot / Isaac-GR00T model's cameras, by name: it sees only those
        n_cam = sum(i is not None for i in processor.camera_order)
    # ours (pirl) are sized to their demos; openpi-format models of any size have fixed, maskable camera slots
    sized_to_demos = processor.provenance.source_format == "pirl" and c.vocab_size != PALIGEMMA_VOCAB
    problems = []
    if n_cam > c.num_cameras or (sized_to_demos and n_cam != c.num_cameras):
        problems.append(f"{n_cam} camera(s) in the env but {c.num_cameras} in the model")
    if sized_to_demos and image_size != c.image_size:
        problems.append(f"renders of {image_size} px but the model was trained on {c.image_size} px "
                        f"(use --image-size {c.image_size})")
    state_width = c.state_dim or c.action_dim   # LeRobot π0 / GR00T: a padded state width of its own
    if S > state_width or A > c.action_dim:
        problems.append(f"{S}-D states / {A}-D actions but the model takes {state_width}-D states / "
                        f"{c.action_dim}-D actions")
    stats = processor.norm_stats["norm_stats"]
    s_len, a_len = (len(next(v for v in stats[k].values() if v is not None)) for k in ("state", "actions"))
    if s_len < S or a_len < A:
        problems.append(f"{S}-D states / {A}-D actions but norm stats for {s_len}-D states / {a_len}-D actions")
    if replan_steps is not None and not 1 <= replan_steps <= c.action_horizon:
        raise UsageError(f"--replan-steps {replan_steps}: {checkpoint} has action horizon H={c.action_horizon}; "
                         f"use 1..{c.action_horizon}")
    if problems:
        raise UsageError(f"{checkpoint} does not fit {env_name}: {'; '.join(problems)}; "
                         "use a checkpoint trained on this env")


def sampling_defaults(processor, env: str | None = None) -> dict:
    """The evaluation settings a checkpoint's own files or data config record, for flags the user left out:
    {"replan_steps": LeRobot config.json n_action_steps, else the data config's peer evaluation's on `env` (openpi's
    LIBERO client: 5; RLinf's: 5, libero-long 10); "num_steps": LeRobot config.json num_inference_steps}, each only
    where recorded."""
    replan = processor.data_config.replan_steps_on(env)
    out = {"replan_steps": replan} if replan else {}
    config = processor.provenance.source_files.get("config.json")   # a LeRobot checkpoint's, kept as it came
    meta = json.loads(config) if config is not None else {}
    out.update({ours: meta[theirs] for ours, theirs in (("replan_steps", "n_action_steps"),
                                                         ("num_steps", "num_inference_steps")) if meta.get(theirs)})
    if out:
        print(f"evaluation defaults from the checkpoint: {out}")
    return out


def run_wave(envs, act_fn, wave, real, record, frames, episode_ids=None) -> list:
    """One episode per env until all are done (autoreset=False freezes finished envs). episode_ids: one int per env,
    passed to act_fn.start_episodes (policy_act_fn: the seed of that env's noise) where act_fn has it."""
    if episode_ids is not None and hasattr(act_fn, "start_episodes"):
        act_fn.start_episodes(episode_ids)
    obs = envs.reset(wave)
    n = envs.num_envs
    done, success = np.zeros(n, bool), np.zeros(n, bool)
    length = np.zeros(n, np.int64)
    for i, ep in enumerate(record):
        frames[ep] = [obs["images"][i, 0]]
    while not done.all():
        actions = np.asarray(act_fn(obs), dtype=np.float32)        # (N, H', A)
        obs, _, terminated, truncated, info = envs.step_chunk(actions)
        ended = ~done & (terminated | truncated)
        success |= ~done & info["success"]
        length[ended] = info["episode_length"][ended]
        for i, ep in enumerate(record):
            if not done[i]:
                last = info["final_obs"]["images"][i, 0] if ended[i] else obs["images"][i, 0]
                frames[ep].append(last)
        done |= ended
    return [(int(wave[i][0]), bool(success[i]), int(length[i])) for i in range(real)]


def _summarise(results, task_descriptions, env_name, seed) -> dict:
    per_task = {}
    for t, desc in enumerate(task_descriptions):
        s = [ok for task, ok, _ in results if task == t]
        if s:
            per_task[desc] = float(np.mean(s))
    return {"env_name": env_name, "seed": seed, "num_episodes": len(results),
            "success_rate": float(np.mean([ok for _, ok, _ in results])) if results else 0.0,
            "per_task": per_task,
            "episode_length": float(np.mean([n for _, _, n in results])) if results else 0.0}


def _write_videos(frames: dict, video_dir: Path, env_name: str):
    import imageio
    video_dir.mkdir(parents=True, exist_ok=True)
    for ep, images in frames.items():
        # macro_block_size=1: small renders (e.g. 64 px) are written as they are
        imageio.mimsave(video_dir / f"{env_name}_episode{ep:03d}.mp4", np.stack(images), fps=5, macro_block_size=1)


class policy_act_fn:
    """act_fn for evaluate(): Euler-ODE sampling (policy.sample_actions), first `replan_steps` actions.

    No exploration noise: the ODE is deterministic given its initial noise x_1, which each env draws from a
    generator of its own seeded by (reset's seed, its episode id from start_episodes), or is all zeros with
    zero_noise=True. Called without start_episodes, env i draws as episode i.
    """

    def __init__(self, policy, processor, num_steps: int = 10, replan_steps: int | None = None,
                 action_dim: int | None = None, zero_noise: bool = False):
        H = policy.config.action_horizon
        replan_steps = H if replan_steps is None else replan_steps   # 0 is an error, not "all of H"
        if not 1 <= replan_steps <= H:
            raise ValueError(f"replan_steps must be in [1, action_horizon={H}], got {replan_steps}")
        self.policy, self.processor = policy, processor
        self.num_steps, self.replan_steps, self.zero_noise = num_steps, replan_steps, zero_noise
        # env action dim A: the length of the action stats (they were computed on env actions)
        self.action_dim = action_dim or len(processor.norm_stats["norm_stats"]["actions"]["mean"])
        self.device = next(policy.parameters()).device
        self.seed = 0
        self.generators: list[torch.Generator] = []   # one per env of the current wave

    def reset(self, seed: int):
        self.seed, self.generators = seed, []

    def start_episodes(self, episode_ids):
        """A generator per env for the episodes now starting: the same episode gets the same noise in any wave."""
        self.generators = [torch.Generator(device=self.device).manual_seed(
            int(np.random.SeedSequence([self.seed, int(e)]).generate_state(1)[0])) for e in episode_ids]

    @torch.no_grad()
    def __call__(self, raw_obs: dict) -> np.ndarray:
        obs = self.processor.observation(raw_obs, self.device)
        c = self.policy.config
        N = obs.state.shape[0]
        if len(self.generators) != N:
            self.start_episodes(range(N))
        if self.zero_noise:
            noise = torch.zeros((N, c.action_horizon, c.action_dim), device=self.device)
        else:                                                                              # (N, H, D) x_1
            noise = torch.stack([torch.randn((c.action_horizon, c.action_dim), generator=g, device=self.device)
                                 for g in self.generators])
        actions = self.policy.sample_actions(obs, noise=noise, num_steps=self.num_steps)   # (N, H, D)
        return self.processor.actions_to_env(actions[:, : self.replan_steps], self.action_dim, state=raw_obs["state"])  # (N, H', A)


class expert_act_fn:
    """The env's scripted expert as an act_fn (one step per chunk): the harness's upper bound."""

    def __init__(self, env_name: str, envs):
        from common.experts import make_expert
        self.expert, self.envs = make_expert(env_name), envs

    def __call__(self, raw_obs: dict) -> np.ndarray:
        return self.expert.act(self.envs)[:, None]                                        # (N, 1, A)


class random_act_fn:
    """Uniform actions in [-1, 1]: the harness's lower bound."""

    def __init__(self, action_dim: int, chunk: int = 4, seed: int = 0):
        self.action_dim, self.chunk = action_dim, chunk
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def __call__(self, raw_obs: dict) -> np.ndarray:
        n = len(raw_obs["state"])
        return self.rng.uniform(-1, 1, (n, self.chunk, self.action_dim)).astype(np.float32)
