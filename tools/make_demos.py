"""Scripted-expert demonstrations for few-shot SFT (cached; see common/sft.py for the format).

    python tools/make_demos.py --env metaworld-button-press-topdown-v3 --num-demos 8 --image-size 64
    python tools/make_demos.py --data-config pirl_lerobot_view     # rendered in LeRobot's MetaWorld camera view
"""
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Optional

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import sft  # noqa: E402
from common.cli import few_shot, unset  # noqa: E402
from common.conventions import check_embedded_data_config  # noqa: E402
from common.errors import UsageError, check_writable, main_errors  # noqa: E402


@dataclass
class Args:
    env: str = sft.DEFAULT_ENV
    """env name with a scripted expert (metaworld-*, maniskill-PushCube-v1 / PullCube-v1 / PickCube-v1)"""
    num_demos: Annotated[Optional[int], tyro.conf.DisallowNone, few_shot("num_demos")] = None
    """successful episodes to keep"""
    seed: int = 0
    """seed of the train init states the demos start from"""
    image_size: Annotated[Optional[int], tyro.conf.DisallowNone, few_shot("image_size")] = None
    """square render size in pixels"""
    num_envs: int = 1
    """parallel env workers"""
    data_config: Annotated[Optional[str], unset("pirl")] = None
    """whose rendering: pirl (pirl's MetaWorld view) or pirl_lerobot_view (LeRobot's MetaWorld camera view and
    prompts): the embedded default's rows (common/conventions.py EMBEDDED_DEFAULT_CONFIGS)"""
    cache_dir: Annotated[Optional[str], unset("$PIRL_CACHE, else runs/cache")] = None
    """cache root"""
    overwrite: bool = False
    """regenerate even if cached"""


def check_args(args: Args):
    """Every flag checked before any simulator is built (UsageError: one `error:` line); returns the data config."""
    sft.check_expert(args.env)
    # flags left out: the embedded default's setting for this env
    args.num_demos, _, args.image_size = sft.few_shot_setting(args.env, args.num_demos, image_size=args.image_size)
    for flag, value in (("--num-demos", args.num_demos), ("--image-size", args.image_size), ("--num-envs", args.num_envs)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1 (got {value})")
    conventions = check_embedded_data_config(args.data_config)
    check_writable(args.cache_dir or sft.default_cache_dir(), "--cache-dir")
    return conventions


def main(args: Args):
    view = check_args(args).metaworld_view
    demos = sft.collect_demos(args.env, args.num_demos, args.seed, args.image_size, args.num_envs,
                              args.cache_dir, use_cache=not args.overwrite, view=view)
    path = sft.demo_cache_path(args.env, args.num_demos, args.seed, args.image_size, args.cache_dir, view)
    if args.overwrite:
        demos.save(path)
    lengths = [int((demos.episode == e).sum()) for e in range(demos.num_episodes)]
    print(f"{demos.num_episodes} episodes, {len(demos.actions)} steps (mean length {sum(lengths) / len(lengths):.1f}) -> "
          f"{path}")


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
