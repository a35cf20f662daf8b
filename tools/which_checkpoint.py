"""Dry run of the scripts' checkpoint choice: what --env x --model [--checkpoint] would load, without loading it.

    python tools/which_checkpoint.py --env libero-long                  # the paper's π0 SFT checkpoint for LIBERO-Long
    python tools/which_checkpoint.py --env libero-long --model pi05
    python tools/which_checkpoint.py --env libero-long --checkpoint RLinf/RLinf-Pi0-LIBERO-Long-SFT@main
    python tools/which_checkpoint.py --table                            # every paper checkpoint (common/hub.py)

Prints the Hub id, revision, data config and the local snapshot in the Hugging Face cache, or "not in the cache:
would download N files (X GB) from ..." (asking the Hub for the file list only; HF_HUB_OFFLINE=1: no request).
Weights are never read. A bad flag, or a checkpoint that cannot be had, ends in one `error: ...` line, exit 2.
"""
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import hub  # noqa: E402
from common.cli import unset  # noqa: E402
from common.errors import main_errors  # noqa: E402


@dataclass
class Args:
    env: str = "libero-long"
    """simulator task, as the RL scripts take it (common.envs.ENV_NAMES)"""
    model: Annotated[Optional[Literal["tiny", "pi0", "pi05", "tiny-groot", "groot"]],
                     unset("tiny, or pi0 (the paper's default family) on an env with no scripted expert")] = None
    """as the RL scripts' --model"""
    checkpoint: Annotated[Optional[str], unset("what the RL scripts start from on --env x --model")] = None
    """as the RL scripts' --checkpoint: a local dir or a Hub id org/name[@revision]"""
    table: bool = False
    """print the paper checkpoint table (env, model, Hub id, data config) and stop"""


def main(args: Args):
    if args.table:
        for (env, model), (repo, config) in hub.PAPER_CHECKPOINTS.items():
            print(f"{'metaworld-*' if env == 'metaworld-mt50' else env:24s} {model:5s} {repo:48s} {config}")
        return
    from common.envs import check_env_name

    check_env_name(args.env)
    for line in hub.describe(args.checkpoint, args.env, args.model):
        print(line)


if __name__ == "__main__":
    args = tyro.cli(Args)
    with main_errors():
        main(args)
