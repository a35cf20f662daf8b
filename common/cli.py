"""What --help says of a flag left out, for the tools/ and bench/ scripts' tyro Args (the RL scripts keep their
own `tiny` / `unset`, so each reads on its own).

    num_demos: Annotated[Optional[int], tyro.conf.DisallowNone, few_shot("num_demos")] = None
    out: Annotated[Optional[str], unset("printed only")] = None
"""
from __future__ import annotations

import tyro


def unset(meaning: str):
    """--help says what leaving the flag out does, not tyro's "(default: None)"."""
    return tyro.conf.arg(help_behavior_hint=f"(default: {meaning})")


def few_shot(key: str):
    """A flag left to the env's few-shot default (common/sft.py few_shot_defaults[key]): --help shows it per simulator."""
    from common.sft import few_shot_help

    return tyro.conf.arg(help_behavior_hint=lambda _: few_shot_help(key))
