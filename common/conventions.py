"""A checkpoint's data conventions, in one place: what its training pipeline did to the simulator's
observations and actions, which a policy must see again to score what it scored for its owner.

The weights do not record these (issue 25): openpi's `pi0_libero` and `pi05_libero` write the same files, but
π0 was trained on `action - state` on the first 6 dims (`extra_delta_transform=True`) and π0.5 on the actions
as the env takes them. `resolve_data_config` picks the row for a loaded checkpoint: what its files record
(pirl's own saves: config.json "data_config"; LeRobot: config.json `use_relative_actions`), else the user's
`--data-config NAME`, else one `error:` line where the choice matters and the files cannot tell.

Applied by pirl today: `delta_mask` (common/processor.py actions_to_env / actions_to_model, everywhere), and
`render_size`, `metaworld_view`, `maniskill_client` and `libero_client` (DataConfig.env_options: make_envs in the RL
scripts, their held-out evals and tools/evaluate.py; `maniskill_client="rlinf"` applies all of rlinf_maniskill's
fields: its render and resize, prompt, gripper, state and episode length; `libero_client="rlinf"` RLinf's 15 settle
steps and its episode lengths, rlinf_pi0_libero / rlinf_pi05_libero's `episode_steps`), and `replan_steps` as
tools/evaluate.py's default (common/evaluate.py sampling_defaults). A LeRobot or Isaac-GR00T model's cameras are
matched to its image slots by name (camera_order, below). A GR00T N1.5 with Eagle inputs gets Isaac-GR00T's video
transforms (`isaac_video_crop`: common/eagle.py EagleProcessor.observation, the render at its metadata.json
resolution) and, for RLinf's LIBERO checkpoints, its gripper mapping (`gripper_from_unit`: both processors'
actions_to_env / actions_to_model). The other fields record what the peer's client does (resize,
prompt, gripper, state, episode lengths) as the reference for the envs; pirl's LIBERO envs do not switch on the
openpi / LeRobot episode lengths (they run the paper's, common/envs.py LIBERO_SUITES).

Facts read at openpi 15a9616 (src/openpi/training/config.py, src/openpi/transforms.py,
src/openpi/policies/libero_policy.py, examples/libero/main.py), RLinf a3816b5
(rlinf/models/embodiment/openpi/dataconfig/__init__.py + libero_dataconfig.py, examples/embodiment/config/
model/pi0.yaml + pi0_5.yaml, env/libero_*.yaml, rlinf/envs/libero/libero_env.py) and LeRobot 7427f31
(policies/pi0{,5}/configuration_pi0{,5}.py `use_relative_actions: bool = False`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import UsageError


def make_bool_mask(*dims: int) -> tuple[bool, ...]:
    """openpi's transforms.make_bool_mask: make_bool_mask(6, -1) == (True,) * 6 + (False,)."""
    return tuple(b for d in dims for b in ([d > 0] * abs(d)))


@dataclass(frozen=True)
class DataConfig:
    name: str
    """the --data-config name (openpi / RLinf's TrainConfig name where the row is theirs)"""
    source: str
    """whose training pipeline: openpi, RLinf, LeRobot, pirl"""
    simulator: str
    """libero | metaworld | maniskill | any"""
    delta_mask: tuple[bool, ...] = ()
    """the dims trained as `action - state` (openpi DeltaActions / AbsoluteActions); () = absolute actions"""
    cameras: tuple[str, ...] = ()
    """the env camera feeding each image slot, in the model's slot order"""
    render_sizes: dict = field(default_factory=dict)
    """pixels the env renders before the model's resize, by simulator (absent: the model's image size, pirl's default)"""
    resize: str = "resize_with_pad"
    """how the render becomes the model's image"""
    prompt: str = ""
    """where the instruction comes from"""
    gripper: str = ""
    """what the model's gripper action means to the env"""
    state: str = ""
    """the raw state vector's layout (what DeltaActions subtracts on its mask)"""
    episode_steps: dict = field(default_factory=dict)
    """max env steps per episode, by suite (the peer's evaluation)"""
    replan_steps: int | None = None
    """actions executed per chunk in the peer's evaluation"""
    replan_steps_by_env: dict = field(default_factory=dict)
    """replan_steps on these envs instead (RLinf's libero-long: 10 actions per chunk)"""
    metaworld_view: str = "fast"
    """MetaWorld camera pose, visuals and prompts: common/envs.py METAWORLD_VIEWS (make_envs(metaworld_view=...))"""
    maniskill_client: str = "pirl"
    """ManiSkill render, state, gripper and episode length: common/envs.py MANISKILL_CLIENTS (make_envs(maniskill_client))"""
    libero_client: str = "openpi"
    """LIBERO settle steps after reset and episode lengths: common/envs.py LIBERO_CLIENTS (make_envs(libero_client))"""
    gripper_from_unit: bool = False
    """the model's gripper action is in [0, 1] (1: open); the env takes sign(1 - 2 g) (RLinf's GR00T N1.5 LIBERO:
    simulation_io.py normalize_gripper_action(binarize=True)); SFT targets map the env's +-1 back to (1 - a) / 2"""
    isaac_video_crop: float | None = None
    """GR00T with Eagle inputs: Isaac-GR00T's evaluation video transforms with this VideoCrop scale (a center crop of
    int(H s) x int(W s), a bilinear antialiased resize to the model's size, truncated to uint8: common/eagle.py
    isaac_eval_video) before Eagle's processor; None: the render goes to Eagle's processor as it is (LeRobot's GR00T)"""

    def env_options(self, env: str, model_size: int) -> dict:
        """make_envs' keyword args for a policy of this config on `env`: the render size and MetaWorld view its
        peer trained it on (the embedded default's: the model's size, pirl's fast MetaWorld view); on ManiSkill and
        LIBERO, the env client its peer ran."""
        options = {"image_size": render_size(self, env, model_size), "metaworld_view": self.metaworld_view}
        if env.startswith("maniskill"):
            options["maniskill_client"] = self.maniskill_client
        if env.startswith("libero"):
            options["libero_client"] = self.libero_client
        return options

    def replan_steps_on(self, env: str | None) -> int | None:
        """Actions executed per chunk in the peer's evaluation of `env` (None: not recorded)."""
        return self.replan_steps_by_env.get(env, self.replan_steps)

    @property
    def delta(self) -> bool:
        return any(self.delta_mask)

    def _state_on_mask(self, state, like: np.ndarray) -> np.ndarray:
        """(..., S) raw state -> (..., 1, n) its masked dims (0 elsewhere), broadcast over the chunk's horizon."""
        if state is None:
            raise ValueError(f"data config {self.name!r} trains on actions relative to the state "
                             f"(mask {self.delta_mask}): pass the raw env state of that decision")
        n = len(self.delta_mask)
        state = np.asarray(state.detach().cpu() if hasattr(state, "detach") else state, dtype=np.float32)
        if state.shape[-1] < n or state.shape[:-1] != like.shape[:-2]:
            raise ValueError(f"state {state.shape} does not fit actions {like.shape} (expected {like.shape[:-2]} + (>= {n},))")
        return np.expand_dims(np.where(np.asarray(self.delta_mask), state[..., :n], 0.0), axis=-2).astype(np.float32)

    def to_absolute(self, actions: np.ndarray, state) -> np.ndarray:
        """openpi AbsoluteActions: (..., H, A) unnormalised model actions + state on the mask -> env actions."""
        if not self.delta:
            return actions
        n = len(self.delta_mask)
        out = np.array(actions, dtype=np.float32, copy=True)
        out[..., :n] += self._state_on_mask(state, out)
        return out

    def gripper_to_env(self, actions: np.ndarray) -> np.ndarray:
        """(..., A) env-space actions, the gripper (last dim) as the env takes it (gripper_from_unit)."""
        if not self.gripper_from_unit:
            return actions
        out = np.array(actions, dtype=np.float32, copy=True)
        out[..., -1] = np.sign(1.0 - 2.0 * out[..., -1])
        return out

    def gripper_to_model(self, actions: np.ndarray) -> np.ndarray:
        """gripper_to_env's inverse on the env's +-1 gripper (demonstrations -> SFT targets)."""
        if not self.gripper_from_unit:
            return actions
        out = np.array(actions, dtype=np.float32, copy=True)
        out[..., -1] = (1.0 - out[..., -1]) / 2.0
        return out

    def to_delta(self, actions: np.ndarray, state) -> np.ndarray:
        """openpi DeltaActions: (..., H, A) env actions - state on the mask (the chunk's first state) -> model's."""
        if not self.delta:
            return actions
        n = len(self.delta_mask)
        out = np.array(actions, dtype=np.float32, copy=True)
        out[..., :n] -= self._state_on_mask(state, out)
        return out


# ---- the known configs ----------------------------------------------------------------------------
# openpi's LIBERO client (examples/libero/main.py)
_LIBERO = dict(
    simulator="libero", cameras=("agentview_image", "robot0_eye_in_hand_image"), render_sizes={"libero": 256},
    resize="flip both axes, resize_with_pad to 224",
    prompt="LIBERO task.language", gripper="as the env takes it (-1 open, +1 close)",
    state="eef pos (3) + axis-angle of the eef quaternion (3) + gripper qpos (2)",
    episode_steps={"libero-spatial": 220, "libero-object": 280, "libero-goal": 300, "libero-long": 520, "libero-90": 400},
    replan_steps=5)
# RLinf's own LIBERO env (rlinf/envs/libero/libero_env.py LiberoEnv, examples/embodiment/config/env/libero_*.yaml and
# libero_{spatial,object,goal,10}_ppo_openpi{,_pi05}.yaml), where the paper's π0 / π0.5 LIBERO checkpoints were
# RL-trained and evaluated: openpi's observations (256 px renders flipped on both axes, the same 8-D state and
# task.language, openpi's ResizeImages to 224) after 15 settle steps, not 10 (tests/test_peer_rlinf_libero.py runs it)
_RLINF_LIBERO = dict(
    _LIBERO, libero_client="rlinf",
    resize="flip both axes, resize_with_pad to 224 (openpi's ResizeImages); 15 steps of [0] * 6 + [-1] after each reset",
    episode_steps={"libero-spatial": 240, "libero-object": 240, "libero-goal": 320, "libero-long": 480,
                   "libero-90": 512},   # = common/envs.py RLINF_LIBERO_MAX_STEPS
    replan_steps_by_env={"libero-long": 10})   # actor.model.num_action_chunks: 5, libero_10_*_openpi*.yaml: 10

# pirl's own pipeline: the embedded default's demos, SFT and RL
_PIRL = dict(
    source="pirl", simulator="any", resize="resize_with_pad to the model's image size", prompt="the env's instruction",
    gripper="as the env takes it", state="the env's state vector",
    episode_steps={"libero-spatial": 240, "libero-object": 320, "libero-goal": 320, "libero-long": 480,
                   "libero-90": 400})   # the paper's Table 7 (common/envs.py LIBERO_SUITES)

DATA_CONFIGS: dict[str, DataConfig] = {c.name: c for c in (
    DataConfig("pirl", **_PIRL),   # MetaWorld in pirl's "fast" view: corner2 at its default pose, "drawer open"
    # the same, with MetaWorld seen as LeRobot and RLinf see it (their corner2 pose, skybox and task descriptions) but
    # rendered fast (no shadows, reflections or multisampling): common/envs.py's "lerobot-fast" view. For the embedded
    # default, `--data-config pirl_lerobot_view` renders its demos, SFT and RL in that view (make_default_sft_policy)
    DataConfig("pirl_lerobot_view", **_PIRL, metaworld_view="lerobot-fast"),
    # openpi config.py: pi0_libero (and RLinf dataconfig/__init__.py's pi0_libero, pi0_libero_horizon10):
    # LeRobotLiberoDataConfig(extra_delta_transform=True) -> DeltaActions / AbsoluteActions(make_bool_mask(6, -1))
    DataConfig("pi0_libero", "openpi / RLinf π0", delta_mask=make_bool_mask(6, -1), **_LIBERO),
    DataConfig("pi0_libero_horizon10", "RLinf π0", delta_mask=make_bool_mask(6, -1), **_LIBERO),
    # openpi / RLinf pi05_libero: extra_delta_transform=False
    DataConfig("pi05_libero", "openpi / RLinf π0.5", **_LIBERO),
    # the same two training configs (RLinf model/pi0.yaml config_name pi0_libero, model/pi0_5.yaml pi05_libero) in
    # RLinf's LIBERO env: the paper's checkpoints (common/hub.py PAPER_CHECKPOINTS) and RLinf's RL outputs
    DataConfig("rlinf_pi0_libero", "RLinf π0", delta_mask=make_bool_mask(6, -1), **_RLINF_LIBERO),
    DataConfig("rlinf_pi05_libero", "RLinf π0.5", **_RLINF_LIBERO),
    # LeRobot: absolute unless config.json says use_relative_actions (refused at load, common/checkpoint.py)
    # (envs/configs.py LiberoEnv observation_height 360; envs/libero.py TASK_SUITE_MAX_STEPS)
    # LeRobot's own render sizes: MetaWorld's default 480 (its env never overrides it), LIBERO's env config 360
    DataConfig("lerobot", "LeRobot", "any", render_sizes={"metaworld": 480, "libero": 360},
               resize="LeRobot's resize_with_pad (no antialias); its LIBERO env renders 360 px",
               prompt="the task + newline (π0)", gripper="as the env takes it", state="the env's state vector",
               metaworld_view="lerobot",
               episode_steps={"libero-spatial": 280, "libero-object": 280, "libero-goal": 300, "libero-long": 520,
                              "libero-90": 400}),
    # RLinf pi0_/pi05_maniskill, pi0_/pi05_metaworld: extra_delta_transform=False (absolute)
    # (rlinf/envs/maniskill/maniskill_env.py ManiskillEnv, examples/embodiment/config/maniskill_ppo_openpi{,_pi05}.yaml
    # + env/maniskill_put_on_plate_in_scene_25_main.yaml): all applied by common/envs.py's "rlinf" ManiSkill client
    DataConfig("rlinf_maniskill", "RLinf π0 / π0.5", "maniskill", cameras=("3rd_view_camera",),
               resize="a 640x480 render (SIMPLER: rgb+segmentation, green-screened by mani_skill), default shader, "
                      "resize_with_pad to the model's size",
               prompt="env.get_language_instruction()",
               gripper="WidowX (SIMPLER): 2 * (g > 0.5) - 1; Panda: as the model outputs it (rlinf/envs/action_utils.py "
                       "prepare_actions_for_maniskill)", state="agent.robot.get_qpos() (ManiskillEnv._wrap_obs)",
               episode_steps={"simpler": 80}, maniskill_client="rlinf"),
    # Isaac-GR00T N1.5's data configs evaluate each camera as VideoToTensor -> VideoCrop(scale=0.95) (eval: a center
    # crop) -> VideoResize(224, 224, "linear") -> VideoToNumpy, then Eagle's processor (gr00t/experiment/data_config.py
    # at 091e495: So100, So100DualCam, UnitreeG1, ...; RLinf's GR00T LIBERO and ManiSkill configs alike, rlinf/models/
    # embodiment/gr00t/gr00t_n1d5/modality_config.py), and VideoToTensor takes only the dataset's resolution
    # (metadata.json modalities.video.<key>.resolution: the render size, filled in by resolve_data_config). A few
    # configs have the crop commented out (FourierGr1ArmsOnlyDataConfig at 091e495): isaac_gr00t_no_crop.
    # (tests/test_peer_isaac_video.py runs Isaac-GR00T's own video.py: tools/peers/isaac_gr00t_video.py)
    DataConfig("isaac_gr00t", "Isaac-GR00T / RLinf GR00T N1.5", "any", isaac_video_crop=0.95,
               resize="render at metadata.json's video resolution; center crop 95%, bilinear antialiased resize to "
                      "224, truncated to uint8 (VideoCrop + VideoResize); then Eagle's processor",
               prompt="the env's instruction", gripper="as the env takes it", state="metadata.json's state keys"),
    DataConfig("isaac_gr00t_no_crop", "Isaac-GR00T N1.5", "any", isaac_video_crop=1.0,
               resize="render at metadata.json's video resolution; bilinear antialiased resize to 224, truncated to "
                      "uint8 (VideoResize); then Eagle's processor",
               prompt="the env's instruction", gripper="as the env takes it", state="metadata.json's state keys"),
    # RLinf's GR00T N1.5 LIBERO checkpoints (the paper's appendix C start, common/hub.py): its LiberoFrankaDataConfig
    # (modality_config.py: video.image, video.wrist_image through Isaac's transforms above; x, y, z, roll, pitch, yaw,
    # gripper state and action keys), fed by RLinf's own LIBERO env (libero_client "rlinf"; examples/embodiment/config/
    # libero_*_ppo_gr00t.yaml: 240 / 240 / 320 / 480 steps, 5 actions per chunk, 10 on libero_10), and its action
    # output: simulation_io.py convert_to_libero_action_n1d5, the gripper's [0, 1] sent as sign(1 - 2 g)
    DataConfig("rlinf_gr00t_libero", "RLinf GR00T N1.5", "libero", isaac_video_crop=0.95, gripper_from_unit=True,
               cameras=("agentview_image", "robot0_eye_in_hand_image"), render_sizes={"libero": 256},
               libero_client="rlinf",
               resize="RLinf's LIBERO renders (256, flipped on both axes, 15 settle steps); center crop 95%, bilinear "
                      "resize to 224 (Isaac-GR00T's VideoCrop + VideoResize); then Eagle's processor",
               prompt="LIBERO task.language", gripper="model [0, 1] (1: open) -> env sign(1 - 2 g)",
               state="eef pos (3) + axis-angle (3) + gripper qpos (2), metadata.json's keys x ... gripper",
               episode_steps={"libero-spatial": 240, "libero-object": 240, "libero-goal": 320, "libero-long": 480},
               replan_steps=5, replan_steps_by_env={"libero-long": 10}),
    DataConfig("rlinf_metaworld", "RLinf π0 / π0.5", "metaworld", cameras=("corner2",), render_sizes={"metaworld": 480},
               resize="corner2 moved to (0.75, 0.075, 0.7), MuJoCo's default visuals; 16 zero actions after each reset",
               prompt="LeRobot's metaworld_config.json description", gripper="as the env takes it",
               metaworld_view="rlinf"),
)}
assert all(DATA_CONFIGS[n].delta for n in ("pi0_libero", "pi0_libero_horizon10", "rlinf_pi0_libero"))
# the rows the embedded default can be trained under (make_default_sft_policy): pirl's own pipeline, one per view
EMBEDDED_DEFAULT_CONFIGS = tuple(name for name, c in DATA_CONFIGS.items() if c.source == "pirl")


def check_embedded_data_config(flag: str | None) -> DataConfig:
    """The row the embedded default is trained under: --data-config left out -> pirl; one of EMBEDDED_DEFAULT_CONFIGS;
    else a UsageError (the other rows describe checkpoints their owners trained, which pirl's demos and SFT are not)."""
    name = flag or "pirl"
    if name not in EMBEDDED_DEFAULT_CONFIGS:
        raise UsageError(f"--data-config {name}: the embedded default (no --checkpoint) is trained by pirl, under "
                         f"{' or '.join(EMBEDDED_DEFAULT_CONFIGS)}; the other rows are for a --checkpoint their owners trained")
    return DATA_CONFIGS[name]


def render_size(data_config: DataConfig, env: str, model_size: int) -> int:
    """Pixels to render `env` at for a policy of this data config: its peer's (openpi LIBERO 256, LeRobot LIBERO 360,
    LeRobot / RLinf MetaWorld 480; the processor then resizes with pad to the model's size), else the model's size."""
    return data_config.render_sizes.get(env.split("-")[0], model_size)


def recorded_data_config(checkpoint) -> str | None:
    """The name pirl's save_policy recorded in config.json ("data_config"), or None."""
    f = Path(checkpoint) / "config.json" if checkpoint is not None else None
    if f is None or not f.is_file():
        return None
    return json.loads(f.read_text()).get("data_config")


def resolve_data_config(flag: str | None, processor, env: str, checkpoint=None) -> DataConfig:
    """The data config of a loaded checkpoint (its processor, the run's --env), in this order: what its files
    record, the user's --data-config, an unambiguous default; otherwise one UsageError listing the choices. An
    Isaac-GR00T row renders at the resolution the checkpoint's metadata.json records (isaac_render_size)."""
    row = _pick_data_config(flag, processor, env, checkpoint)
    if row.isaac_video_crop is None:
        return row
    size = isaac_render_size(processor)
    return row if size is None else replace(row, render_sizes={sim: size for sim in ("libero", "metaworld", "maniskill")})


def isaac_render_size(processor) -> int | None:
    """The one square resolution of a GR00T checkpoint's metadata.json cameras (modalities.video.<key>.resolution,
    [width, height]): what Isaac-GR00T's VideoToTensor accepts. None where none is recorded; a UsageError where the
    cameras differ (its VideoCrop refuses that too) or the image is not square (pirl's envs render square ones)."""
    videos = (getattr(processor, "entry", None) or {}).get("modalities", {}).get("video") or {}
    sizes = {tuple(v["resolution"]) for v in videos.values() if isinstance(v, dict) and v.get("resolution")}
    if not sizes:
        return None
    (width, height), *others = sorted(sizes)
    if others or width != height:
        raise UsageError(f"the checkpoint's metadata.json records its cameras at {sorted(sizes)} (width, height): "
                         "pirl renders one square size for every camera; Isaac-GR00T's video transforms take only "
                         "that resolution (--data-config pirl feeds the model's size without them)")
    return width


def _pick_data_config(flag: str | None, processor, env: str, checkpoint=None) -> DataConfig:
    if flag is not None and flag not in DATA_CONFIGS:
        raise UsageError(f"--data-config {flag}: unknown; known: {', '.join(DATA_CONFIGS)}")
    if flag is not None and DATA_CONFIGS[flag].simulator not in ("any", env.split("-")[0]):
        raise UsageError(f"--data-config {flag} is for {DATA_CONFIGS[flag].simulator} envs, not --env {env}; known: "
                         f"{', '.join(DATA_CONFIGS)}")
    recorded = recorded_data_config(checkpoint)
    if recorded is not None:   # pirl's own saves
        if recorded not in DATA_CONFIGS:
            raise UsageError(f"{checkpoint}/config.json: data_config {recorded!r} is not one of {', '.join(DATA_CONFIGS)}")
        if flag is not None and flag != recorded:
            raise UsageError(f"--data-config {flag}: the checkpoint records {recorded!r} (config.json data_config); "
                             "leave the flag out")
        return DATA_CONFIGS[recorded]
    source, variant = processor.provenance.source_format, processor.config.variant
    groot = variant == "groot"
    eagle_inputs = groot and source in ("isaac-gr00t", "lerobot")   # a real GR00T N1.5 (pirl's tiny has its own tokenizer)
    if flag is not None and DATA_CONFIGS[flag].isaac_video_crop is not None and not eagle_inputs:
        raise UsageError(f"--data-config {flag}: Isaac-GR00T's video transforms are for a GR00T N1.5 checkpoint with "
                         "Eagle inputs (Isaac-GR00T's or LeRobot's layout); leave the flag out")
    if groot and source == "isaac-gr00t" and flag is None:   # its data config (a Python class) is not on file
        if env.startswith("libero") and getattr(processor, "tag", None) == "libero_franka":   # RLinf's own tag (groot.py)
            print("data config: rlinf_gr00t_libero (metadata.json's embodiment libero_franka: RLinf's GR00T N1.5 "
                  "LIBERO checkpoints, the paper's); pass --data-config isaac_gr00t if yours takes the gripper as "
                  "LIBERO does")
            return DATA_CONFIGS["rlinf_gr00t_libero"]
        print("data config: isaac_gr00t (Isaac-GR00T's and RLinf's GR00T data configs: each camera center-cropped to "
              "95%, then resized to 224); pass --data-config isaac_gr00t_no_crop if yours was trained without "
              "VideoCrop, or --data-config pirl to feed the render as it is")
        return DATA_CONFIGS["isaac_gr00t"]
    if source in ("lerobot", "pirl") or groot:   # absolute: LeRobot's config.json says use_relative_actions false
        name = flag or ("lerobot" if source == "lerobot" else "pirl")   # (true is refused at load); ours trained so
        if DATA_CONFIGS[name].delta:
            who = "GR00T" if groot else "LeRobot" if source == "lerobot" else "pirl-trained"
            raise UsageError(f"--data-config {flag}: a {who} checkpoint's actions are absolute; leave the flag out")
        return DATA_CONFIGS[name]
    if flag is not None:
        return DATA_CONFIGS[flag]
    # an openpi / RLinf checkpoint: the action space lives in its training config only
    if env.startswith("libero"):
        rlinf = "rlinf_" if source == "rlinf" else ""   # RLinf's own saves ran in RLinf's LIBERO env
        if variant == "pi05":   # openpi and RLinf ship one π0.5 LIBERO config, pi05_libero (absolute)
            print(f"data config: {rlinf}pi05_libero (openpi / RLinf's π0.5 LIBERO config, absolute actions"
                  f"{', RLinf' if rlinf else ', openpi'}'s LIBERO client); pass --data-config {rlinf}pi0_libero if "
                  "yours was trained with extra_delta_transform=True")
            return DATA_CONFIGS[f"{rlinf}pi05_libero"]
        raise UsageError(f"an {source} π0 checkpoint on {env}: name its training config: --data-config pi0_libero "
                         "(delta actions: openpi / RLinf's pi0_libero, in openpi's LIBERO client) or "
                         "--data-config rlinf_pi0_libero (the same, in RLinf's LIBERO env: the paper's RLinf-Pi0 "
                         "checkpoints), or --data-config pi05_libero / rlinf_pi05_libero (absolute actions: trained "
                         "with extra_delta_transform=False)")
    if env.startswith("maniskill"):
        return DATA_CONFIGS["rlinf_maniskill"]
    if env.startswith("metaworld"):
        return DATA_CONFIGS["rlinf_metaworld"]
    return DATA_CONFIGS["pirl"]


# ---- which env camera feeds which image slot ------------------------------------------------------
# A LeRobot π0 / π0.5 stacks its config.json's VISUAL input_features in their order (LeRobot 0.5.1 pi0/modeling_pi0.py
# _preprocess_images, l. 1179-1185: the cameras present first, absent ones black and masked after them, none present an
# error) and reads no other camera. Its GR00T N1.5 stacks the batch's observation.images.* keys sorted by name, one
# image each, no masks (0.5.1 groot/processor_groot.py l. 275, GrootPackInputsStep): from its dataset, exactly its
# config's features; its GR00T N1.7 drops the env cameras the config does not name, with a warning (0.6.1
# processor_groot.py l. 1599-1621). pirl feeds both only the cameras their config names. The names, as LeRobot's
# envs and datasets write them: its LIBERO env agentview -> observation.images.image, eye_in_hand ->
# observation.images.image2 (envs/configs.py LiberoEnv.features_map); its MetaWorld env -> observation.image;
# datasets: wrist_image, base, ...
# Isaac-GR00T N1.5 stacks the video keys in its data config's video_keys order (gr00t/data/transform/concat.py
# ConcatTransform.apply, video_concat_order=video_keys in gr00t/experiment/data_config.py; wrist first in e.g.
# BimanualPandaGripperDataConfig), a Python class picked by name at fine-tuning and again at inference
# (scripts/gr00t_finetune.py, scripts/inference_service.py --data-config): the checkpoint does not record it.
# experiment_cfg/metadata.json (gr00t/experiment/runner.py) lists under modalities.video every camera of the
# dataset's meta/modality.json, in that file's order (gr00t/data/dataset.py _get_metadata), whichever the data
# config used; config.json names none. So pirl matches these names to the env's cameras as LeRobot's, and
# refuses a checkpoint whose names come in another order than the env's cameras: which order its model took is
# not on file. (Isaac-GR00T N1.5: dataset.py, runner.py, inference_service.py at 20f28dc, concat.py at 4d2a197,
# data_config.py at 091e495; its LIBERO names image, wrist_image: examples/Libero/custom_data_config.py at 15166e3;
# RLinf's GR00T ManiSkill camera ego_view: rlinf/models/embodiment/gr00t/modality_config.py at dd49440.)
WRIST_NAMES = ("wrist", "hand", "image2")     # a name holding one of these is the wrist camera
SCENE_NAMES = ("image", "top", "base", "front", "agentview", "agentview_image", "base_0_rgb", "scene", "main",
               "ego_view", "corner2", "3rd_view_camera", "base_camera")   # the last three: pirl's MetaWorld / ManiSkill cameras


def _camera_role(name: str) -> str | None:
    """ "wrist" | "scene" for a LeRobot image feature, an Isaac-GR00T video key or an env camera name, None where
    the name does not tell."""
    name = name.removeprefix("observation.images.").removeprefix("observation.").removeprefix("video.")
    if any(w in name for w in WRIST_NAMES):
        return "wrist"
    return "scene" if name in SCENE_NAMES else None


def lerobot_image_slots(processor) -> list[str] | None:
    """A LeRobot checkpoint's image features in the order its model stacks them (above): π0 / π0.5 in config.json's
    order (its empty_camera_* padding left out: never an env's), GR00T sorted by name; None for other sources."""
    config = processor.provenance.source_files.get("config.json")
    meta = json.loads(config) if processor.provenance.source_format == "lerobot" and config is not None else {}
    slots = [k for k, f in meta.get("input_features", {}).items() if f.get("type") == "VISUAL"]
    if meta.get("type") == "groot":
        return sorted(slots)
    return [k for k in slots if "empty_camera" not in k] if meta.get("type") in ("pi0", "pi05") else None


def isaac_video_keys(processor) -> list[str] | None:
    """An Isaac-GR00T checkpoint's camera names: its experiment_cfg/metadata.json modalities.video keys, in the
    file's order (its dataset's, not necessarily its model's: above); None for other sources or none listed."""
    if processor.provenance.source_format != "isaac-gr00t":   # an EagleProcessor, its metadata.json entry read
        return None
    return list(processor.entry.get("modalities", {}).get("video") or {}) or None


def camera_order(processor, env: str) -> tuple[int | None, ...] | None:
    """The env camera (an index into its observation's images) feeding each of a LeRobot or Isaac-GR00T model's
    image slots, matched by name, in the slots' order (lerobot_image_slots, isaac_video_keys): None for a π0 slot
    whose camera the env lacks (black and masked, after the others, as LeRobot does); the env's cameras no slot names
    are left out, as LeRobot leaves them, with one line naming them; one camera on each side whose name tells no role
    (e.g. `cam0`) feeds the one slot. None (the env's order, by position) for other sources. One UsageError listing
    both sides where a name cannot be matched, two slots claim one camera, the env lacks a camera a GR00T names (it
    has no image masks) or every camera a π0 names, or an Isaac-GR00T checkpoint names its cameras in another order
    than the env's (its model's order is not on file: above)."""
    from common.envs import camera_names

    slots, who, where = lerobot_image_slots(processor), "LeRobot", "config.json image features"
    if slots is None:
        slots, who, where = isaac_video_keys(processor), "Isaac-GR00T", "experiment_cfg/metadata.json video keys"
    if slots is None:
        return None
    env_cams = camera_names(env)
    env_roles = [_camera_role(c) for c in env_cams]
    roles = [_camera_role(k) for k in slots]
    if len(slots) == 1 == len(env_cams) and roles[0] is None:   # one camera each, a name that tells nothing: no choice
        return (0,)
    order = [env_roles.index(r) if r in env_roles else None for r in roles]
    used = [i for i in order if i is not None]
    both = (f"its {where} {slots}, the env's cameras {list(env_cams)} (known names: wrist: "
            f"*{'*, *'.join(WRIST_NAMES)}*; scene: {', '.join(SCENE_NAMES)})")
    if None in roles or len(set(used)) != len(used):
        raise UsageError(f"cannot tell which {env} camera feeds each image of this {who} checkpoint by name: {both}")
    if not used or (processor.config.variant == "groot" and None in order):
        missing = [k for k, i in zip(slots, order) if i is None]
        raise UsageError(f"{env} has no camera for {missing}, which this {who} checkpoint needs (GR00T: every "
                         f"camera it names, π0: at least one): {both}")
    if who == "Isaac-GR00T" and used != sorted(used):   # Isaac-GR00T concat.py: the data config's order, not on file
        raise UsageError(f"cannot tell in which order this Isaac-GR00T checkpoint takes {env}'s cameras: its model "
                         f"stacks them in its data config's video_keys order, which the checkpoint does not record; "
                         f"its experiment_cfg/metadata.json lists {slots} (its dataset's order), {env} renders "
                         f"{list(env_cams)} in another; if it was trained on the env's order, list modalities.video "
                         f"in metadata.json in that order")
    unused = [c for i, c in enumerate(env_cams) if i not in used]
    if unused:   # the model sees only the cameras its config names (above)
        print(f"cameras: {env}'s {', '.join(unused)} unused (the checkpoint's {where.split()[0]} names "
              f"{', '.join(slots)})")
    return tuple(order)
