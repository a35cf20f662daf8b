"""Few-shot SFT of π0 / π0.5 on scripted-expert demonstrations; writes an openpi-layout checkpoint.

    python tools/sft.py                                   # the embedded default (tiny preset, CPU)
    python tools/sft.py --preset tiny --steps 2000 --num-demos 16 --out runs/sft_tiny
    python tools/sft.py --init-from /ckpt/pi0_base --device cuda --out runs/sft_pi0   # from a checkpoint
    torchrun --standalone --nproc_per_node=2 tools/sft.py ...   # gradient all-reduce, rank 0 saves

From a checkpoint, the demonstrations are rendered as the RL scripts and tools/evaluate.py render the env for it (its
data config's render size, MetaWorld view and ManiSkill client: common/sft.py demo_rendering), and the checkpoint
written records the same data config.

A bad flag, an env without a scripted expert or an unwritable --out ends in one `error: ...` line, exit 2,
before any demonstration is collected; the checkpoint is written atomically, only after training.
"""
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Optional
from pathlib import Path

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import sft  # noqa: E402
from common.cli import few_shot, unset  # noqa: E402
from common.errors import UsageError, check_writable, main_errors  # noqa: E402


@dataclass
class Args:
    env: str = sft.DEFAULT_ENV
    """env name with a scripted expert (metaworld-*, maniskill-PushCube-v1 / PullCube-v1 / PickCube-v1)"""
    num_demos: Annotated[Optional[int], tyro.conf.DisallowNone, few_shot("num_demos")] = None
    """successful expert episodes"""
    demo_seed: int = 0
    """seed of the demonstrations' init states"""
    image_size: Annotated[Optional[int], tyro.conf.DisallowNone, few_shot("image_size")] = None
    """render size of the demonstrations (pixels); with --init-from the checkpoint's own: what RL and evals render
    for it (its data config's render size, else the model's)"""
    preset: str = "tiny"
    """model preset for training from scratch: tiny | tiny-pi05 (pi0 / pi05 need --init-from)"""
    init_from: Annotated[str | None, unset("train from scratch (--preset)")] = None
    """checkpoint to fine-tune: a local dir, or a Hugging Face Hub id org/name[@revision]
    (downloaded into the HF cache: HF_HOME, HF_HUB_OFFLINE, HF_TOKEN apply)"""
    asset_id: Annotated[str | None, unset("the only one")] = None
    """with --init-from: which norm stats of an openpi / RLinf checkpoint holding several (assets/<id>/)"""
    data_config: Annotated[str | None, unset("what the checkpoint records, else a paper Hub id's own, else the one its "
                                             "format and --env imply; an openpi / RLinf π0 on LIBERO must name it")] = None
    """with --init-from: the checkpoint's training data conventions where its files do not record them (common/conventions.py):
    pi0_libero (openpi / RLinf π0 on LIBERO: actions relative to the state), pi05_libero (absolute; the default for
    an openpi π0.5 on LIBERO), both in openpi's LIBERO client; rlinf_pi0_libero, rlinf_pi05_libero (the same in
    RLinf's LIBERO env: the paper's checkpoints; the default for an RLinf-saved π0.5), pi0_libero_horizon10, lerobot,
    rlinf_maniskill, rlinf_metaworld, isaac_gr00t (the default for an Isaac-GR00T N1.5: its 95% center crop),
    isaac_gr00t_no_crop, rlinf_gr00t_libero (RLinf's GR00T N1.5 on LIBERO: the paper's), pirl. From scratch:
    pirl (the default) or pirl_lerobot_view (demos rendered in LeRobot's MetaWorld camera view and prompts); the
    checkpoint records it, so that RL and evals of it render that view"""
    action_horizon: int = sft.DEFAULT_ACTION_HORIZON
    """model action horizon H (from scratch only)"""
    steps: Annotated[Optional[int], tyro.conf.DisallowNone, few_shot("sft_steps")] = None
    """optimizer steps"""
    batch_size: int = 32
    """batch size per rank"""
    lr: float = 3e-4
    """peak learning rate (warm-up then cosine decay)"""
    seed: int = 0
    """model init and batch sampling seed"""
    device: str = "auto"
    """auto | cpu | cuda"""
    out: Annotated[str | None, unset("<cache root>/sft/<key>, which names the --init-from checkpoint")] = None
    """output checkpoint directory"""
    cache_dir: Annotated[str | None, unset("$PIRL_CACHE, else runs/cache")] = None
    """cache root"""


def check_args(args: Args):
    """Every flag checked before anything is built (UsageError: one `error:` line)."""
    from common.policy import PRESETS

    sft.check_expert(args.env)
    # flags left out: the embedded default's setting for this env (a checkpoint's render size: once it is loaded)
    args.num_demos, args.steps, image_size = sft.few_shot_setting(args.env, args.num_demos, args.steps, args.image_size)
    if args.init_from is None:
        args.image_size = image_size
    for flag, value in (("--num-demos", args.num_demos), ("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--image-size", args.image_size), ("--action-horizon", args.action_horizon)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1 (got {value})")
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0 (got {args.lr})")
    if args.preset not in PRESETS:
        raise UsageError(f"--preset {args.preset}: unknown; use one of {', '.join(PRESETS)}")
    if args.init_from is None and not args.preset.startswith("tiny"):
        choices = ", ".join(p for p in PRESETS if p.startswith("tiny"))
        raise UsageError(f"--preset {args.preset} from scratch needs PaliGemma's tokenizer and weights: pass "
                         f"--init-from DIR (a {args.preset} checkpoint), or use --preset {choices}")
    if args.init_from is not None:   # a local dir or a Hub id; downloaded (rank 0) when loaded
        from common.hub import check_checkpoint_spec
        check_checkpoint_spec(args.init_from, "--init-from")
    else:   # from scratch: pirl's own pipeline, in one of its views
        from common.conventions import check_embedded_data_config
        check_embedded_data_config(args.data_config)
    check_writable(args.cache_dir or sft.default_cache_dir(), "--cache-dir")
    if args.out is not None:
        check_writable(args.out, "--out")
        out = Path(args.out)
        if out.is_file() or out.is_symlink():
            raise UsageError(f"--out {args.out}: a file is there; the checkpoint is a folder: pick a new path")
        if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():   # it would be replaced whole
            raise UsageError(f"--out {args.out}: that folder holds files and no checkpoint (no config.json), and would "
                             "be replaced whole: pick a new or empty folder")


def default_out(args: Args, view: str | None, init_spec: str | None) -> Path:
    """<cache root>/sft/<key> (common/sft.py sft_checkpoint_dir: the embedded default's key from scratch); from a
    checkpoint the key names it in the preset's place, so that the RL scripts never take it for their embedded default."""
    source = args.preset
    if init_spec is not None:   # a local dir by its name, a Hub id whole
        source = "from-" + (Path(init_spec).name if Path(init_spec).is_dir() else init_spec.replace("/", "--").replace("@", "--"))
    return sft.sft_checkpoint_dir(args.env, args.num_demos, args.demo_seed, source, args.steps, args.image_size,
                                  args.action_horizon, args.cache_dir, view)


def main(args: Args):
    from common.checkpoint import save_policy
    from common.conventions import check_embedded_data_config
    from common.distributed import barrier, setup_distributed

    check_args(args)
    d = setup_distributed(args.device)
    init_from, init_spec = None, args.init_from
    if args.init_from is not None:   # loaded before any demonstration: a broken dir is one line, now
        from common.run import load_for_env   # its data conventions and cameras; a broken dir is one line naming it
        init_policy, init_processor, args.init_from = load_for_env(args.init_from, args.env, args.data_config,
                                                                   flag="--init-from", device=d.device, asset_id=args.asset_id)
        init_from = (init_policy, init_processor)
        # the demos rendered as RL and evals will render the env for this checkpoint
        conventions = init_processor.data_config
        rendering = sft.demo_rendering(conventions, args.env, init_policy.config.image_size, args.image_size)
        args.image_size = rendering["image_size"]
    else:   # from scratch: pirl's pipeline, in the row's MetaWorld view
        conventions = check_embedded_data_config(args.data_config)
        rendering = sft.demo_rendering(conventions, args.env, args.image_size)
    demos = sft.collect_demos(args.env, args.num_demos, args.demo_seed, cache_dir=args.cache_dir, progress=d.is_main,
                              **rendering) if d.is_main else None
    barrier()  # rank 0 wrote the cache; the others read it
    if demos is None:
        demos = sft.collect_demos(args.env, args.num_demos, args.demo_seed, cache_dir=args.cache_dir, **rendering)
    t0 = time.time()
    overrides = dict(sft.DEFAULT_CONFIG_OVERRIDES) if args.init_from is None and args.preset.startswith("tiny") else {}
    policy, processor, losses = sft.train_sft(
        demos, args.preset, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=d.device,
        init_from=init_from, action_horizon=None if args.init_from else args.action_horizon,
        progress=d.is_main, config_overrides=overrides, cache_dir=args.cache_dir)
    out = args.out or default_out(args, rendering["view"], init_spec)
    processor.data_config = conventions   # recorded in config.json "data_config"
    if d.is_main:
        save_policy(out, policy, processor, extra={"sft": {
            "env_name": args.env, "num_demos": args.num_demos, "steps": args.steps, "losses": losses,
            "seconds": round(time.time() - t0, 1), "world_size": d.world_size}})
        print(json.dumps({"checkpoint": str(out), "first_loss": losses[0][1], "final_loss": losses[-1][1]}))
    barrier()


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
