"""Scripted experts for demonstration generation (few-shot SFT data).

    env = make_envs("metaworld-pick-place-v3", num_envs=8)
    expert = make_expert("metaworld-pick-place-v3")
    obs = env.reset()
    for _ in range(env.max_episode_steps):
        action = expert.act(env)                      # (N, A) float32, one step per env
        record(obs, action)
        obs, reward, terminated, truncated, info = env.step_chunk(action[:, None])

The expert reads privileged simulator state through `env.call(...)`, so it runs in the very
ChunkVecEnv the policy will use (same observation layout, autoreset, workers, and for ManiSkill on
CUDA the batched ManiSkillBatchedEnv). Experts: every metaworld-* task (MetaWorld's own policies),
maniskill-PickCube-v1 (the waypoints of ManiSkill's motion-planning solution, see below) and maniskill-PushCube-v1 /
PullCube-v1 (one straight push from a fixed start line, the ManiSkill embedded default's demonstrations).
"""
from __future__ import annotations

import numpy as np

from common.errors import UsageError


class NoExpertError(UsageError, ValueError):
    """The env has no scripted expert, so no demonstrations (and no embedded default policy) for it."""


class MetaWorldExpert:
    """MetaWorld's hand-written per-task policies (metaworld.policies), one per env's task."""

    def __init__(self, tasks: list[str]):
        from metaworld.policies import ENV_POLICY_MAP
        missing = [t for t in tasks if t not in ENV_POLICY_MAP]
        if missing:
            raise ValueError(f"no MetaWorld scripted policy for {missing}")
        self.tasks = tasks
        self.policies = {t: ENV_POLICY_MAP[t]() for t in tasks}

    def act(self, env) -> np.ndarray:
        """env: a MetaWorld ChunkVecEnv. Returns (N, 4) float32 actions for the current step."""
        full_obs = env.call("expert_obs")  # 39-D MetaWorld observations (goal visible)
        actions = [self.policies[self.tasks[t]].get_action(o) for t, o in zip(env._task, full_obs)]
        return np.clip(np.asarray(actions, dtype=np.float32), -1.0, 1.0)


def _yaw_of_axis(v) -> float:
    return float(np.arctan2(v[1], v[0]))


def _rotation_matrix(q) -> np.ndarray:  # unit quaternion [w, x, y, z] (ManiSkill / SAPIEN order)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


class ManiSkillPickCubeExpert:
    """PickCube-v1 with the waypoints of ManiSkill's motion-planning solution, tracked closed-loop.

    ManiSkill's `motionplanning.panda.solutions.solvePickCube` grasps the cube top-down with the
    fingers closing along the cube face nearest to the gripper's current closing axis: reach 5 cm
    above the grasp pose, descend, close the gripper, move the TCP to the goal. We keep exactly these
    waypoints but do not call it, because
      - it drives the env itself through whole open-loop trajectories in `pd_joint_pos` (mplib screw
        plans), while our policy acts step by step in `pd_ee_delta_pose` (7-D actions, <= D=8):
        replaying a plan would need a second env and a joint -> ee-delta conversion that can drift;
      - its planner, mplib 0.1.1 (the version mani_skill 3.0.1 requires), segfaults in
        `mplib.Planner(...)` with numpy >= 2 (ManiSkill issues #1100, #1359); 0.2.x changed the API.
    Instead each step reads privileged state (`env.call("expert_obs")`: TCP / cube poses, goal,
    grasp flag) and emits the ee-delta action towards the current waypoint, so the expert runs in the
    very ChunkVecEnv the policy uses and recovers from slips (a lost grasp sends it back to the cube).
    Which waypoint is current follows from the state alone (no per-env memory), so partial resets
    need no bookkeeping.
    """

    OPEN, CLOSED = 1.0, -1.0        # gripper_pd_joint_pos, normalised
    POS_SCALE, ROT_SCALE = 0.1, 0.1  # pd_ee_delta_pose: action 1.0 = 0.1 m / 0.1 rad (panda.py)
    REACH_HEIGHT = 0.05             # solvePickCube: reach pose = grasp pose 5 cm back along the approach
    GAIN = 1.5                      # > 1: the PD arm covers only part of each commanded delta per step

    def act(self, env) -> np.ndarray:
        """env: a maniskill-PickCube-v1 ChunkVecEnv. Returns (N, 7) float32 actions for the current step."""
        return np.stack([self.act_one(o) for o in env.call("expert_obs")]).astype(np.float32)

    def act_one(self, o: dict) -> np.ndarray:
        tcp, cube = o["tcp_pose"][:3], o["obj_pose"][:3]
        if o["is_grasped"]:
            target, gripper = o["goal_pos"], self.CLOSED
        else:
            offset = cube - tcp
            if np.linalg.norm(offset[:2]) > 0.02:   # not above the cube yet: reach pose
                target, gripper = cube + [0.0, 0.0, self.REACH_HEIGHT], self.OPEN
            elif np.linalg.norm(offset) > 0.015:    # above it: descend to the grasp pose
                target, gripper = cube, self.OPEN
            else:                                   # at the grasp pose: close (grasp flag flips)
                target, gripper = cube, self.CLOSED
        # yaw: turn the fingers' closing axis (TCP y axis) onto the nearest cube face normal (x / y
        # axes, 90° symmetric), so the wrapped error lies in [-45°, 45°]; a rotation about the world z
        # is a rotation about the root z (root_aligned_body_rotation frame: q' = dq * q)
        closing = _rotation_matrix(o["tcp_pose"][3:])[:, 1]
        face = _rotation_matrix(o["obj_pose"][3:])[:, 0]
        yaw_err = (_yaw_of_axis(face) - _yaw_of_axis(closing) + np.pi / 4) % (np.pi / 2) - np.pi / 4
        if o["is_grasped"]:
            yaw_err = 0.0                           # holding it: keep the wrist still
        pos = self.GAIN * (target - tcp) / self.POS_SCALE
        rot = np.array([0.0, 0.0, self.GAIN * yaw_err / self.ROT_SCALE])
        return np.clip(np.concatenate([pos, rot, [gripper]]), -1.0, 1.0)


class ManiSkillPushCubeExpert:
    """PushCube-v1 (PullCube-v1 with DIRECTION = -1): push the cube along +x (pull it along -x) onto the target.

    The target sits at the cube's start + DIRECTION * 0.2 m in x and counts the cube on it within 0.1 m (xy), so one
    straight push of a bit over 0.1 m solves it. The expert does the same thing in every scene, so that a few
    demonstrations teach one motion: fingers closed (one flat pusher), it moves to a start LINE behind the whole cube
    region (x = -DIRECTION * LINE, the same for every scene) at the cube's y and HOVER height, descends to PUSH_HEIGHT
    there, then drives along the push direction through the cube, keeping its y on the cube's, until the cube is on
    the target (the episode ends there). Only the cube's y is to be read from the image; where along x the push meets
    the cube needs no decision. The phase follows from the state alone (no per-env memory). Each step's motion is
    capped at MAX_STEP (action units, 1.0 = 0.1 m), so the demonstrations are smooth and unsaturated.
    """

    DIRECTION = 1.0                  # +1: push along +x (PushCube); -1: pull along -x (PullCube)
    CLOSED = -1.0
    POS_SCALE = 0.1                  # pd_ee_delta_pose: action 1.0 = 0.1 m
    HALF = 0.02                      # the cube's half size (its xy is drawn in [-0.1, 0.1]^2)
    LINE = 0.15                      # the start line: |x| of the TCP behind the cube region
    HOVER, PUSH_HEIGHT = 0.06, 0.02  # TCP heights: clear of the cube; at the cube's centre
    GAIN = 1.5                       # > 1: the PD arm covers only part of each commanded delta per step
    MAX_STEP = 0.5                   # cap on each step's position action (0.05 m)

    def act(self, env) -> np.ndarray:
        """env: a maniskill-PushCube-v1 / PullCube-v1 ChunkVecEnv. Returns (N, 7) float32 actions for the current step."""
        return np.stack([self.act_one(o) for o in env.call("expert_obs")]).astype(np.float32)

    def act_one(self, o: dict) -> np.ndarray:
        d = self.DIRECTION
        tcp, cube = o["tcp_pose"][:3], o["obj_pose"][:3]
        back = d * (cube[0] - tcp[0])             # how far the TCP is behind the cube's centre, along the push
        dy = abs(cube[1] - tcp[1])
        line = -d * self.LINE
        if tcp[2] < self.PUSH_HEIGHT + 0.015 and back > self.HALF and dy < 0.03:
            target = np.array([cube[0] + d * 0.1, cube[1], self.PUSH_HEIGHT])   # low, behind it: push through it
        elif d * (tcp[0] - line) > 0.02:                                       # not at the start line yet: go there
            target = np.array([line, cube[1], self.HOVER])
            if back < self.HALF and tcp[2] < self.HOVER - 0.015:
                target = np.array([tcp[0], tcp[1], self.HOVER])                 # low beside / past the cube: up first
        else:
            target = np.array([line, cube[1], self.PUSH_HEIGHT])                # at the line: descend, y on the cube
        pos = self.GAIN * (target - tcp) / self.POS_SCALE
        norm = np.linalg.norm(pos)
        if norm > self.MAX_STEP:
            pos *= self.MAX_STEP / norm
        return np.concatenate([pos, [0.0, 0.0, 0.0, self.CLOSED]])


class ManiSkillPullCubeExpert(ManiSkillPushCubeExpert):
    DIRECTION = -1.0


# which env names have a scripted expert (besides every metaworld-* task)
MANISKILL_EXPERTS = {"PickCube-v1": ManiSkillPickCubeExpert, "PushCube-v1": ManiSkillPushCubeExpert,
                     "PullCube-v1": ManiSkillPullCubeExpert}


def has_expert(env_name: str) -> bool:
    """Whether make_expert(env_name) has a scripted expert, from the name alone (imports no simulator)."""
    return env_name.startswith("metaworld-") or env_name.removeprefix("maniskill-") in MANISKILL_EXPERTS


def check_expert(env_name: str, hint: str = ""):
    """Raise UnknownEnvError / NoExpertError (UsageErrors) unless env_name has a scripted expert."""
    from common.envs import check_env_name
    check_env_name(env_name)
    if not has_expert(env_name):
        have = ["metaworld-*"] + [f"maniskill-{t}" for t in MANISKILL_EXPERTS]
        raise NoExpertError(f"--env {env_name} has no scripted expert here (LIBERO ships human demonstrations, "
                            f"not a scripted policy); experts exist for: {', '.join(have)}" + (f"; {hint}" if hint else ""))


def make_expert(env_name: str):
    """Scripted expert for `env_name` (a common.envs.ENV_NAMES entry)."""
    from common.envs import METAWORLD_MT10, metaworld_task_names
    check_expert(env_name)
    if env_name.startswith("metaworld-"):
        task = env_name.removeprefix("metaworld-")
        tasks = METAWORLD_MT10 if task == "mt10" else metaworld_task_names() if task == "mt50" else [task]
        return MetaWorldExpert(tasks)
    return MANISKILL_EXPERTS[env_name.removeprefix("maniskill-")]()
