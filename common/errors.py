"""Expected failures end in ONE line on stderr and exit code 2; unexpected ones keep their traceback.

    from common.errors import UsageError, check_writable, fail, main_errors

    if args.num_steps < 1:
        fail(f"--num-steps must be >= 1 (got {args.num_steps})")
    check_writable(args.out, "--out")   # before any work: a bad --out costs nothing
    with main_errors():            # UsageError, a missing file, a full or read-only disk -> "error: ..."
        main(args)

Raise UsageError (or call fail) for anything the user can fix: a bad flag, a missing or corrupt
checkpoint, a model that does not fit the env, an env without a scripted expert. Its message names
the flag or file and says what would work.
"""
from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

EXIT_CODE = 2  # what argparse / tyro use for a bad command line


class UsageError(Exception):
    """A failure the user can fix; its message is the whole error line (without the 'error: ')."""


def fail(message: str) -> NoReturn:
    """Print `error: message` to stderr and exit 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CODE)


def check_at_least(low, **flags):
    """UsageError naming the first flag below `low` (None skipped; a list must be non-empty, each value >= low):
    check_at_least(1, num_envs=args.num_envs, steps=args.steps)  ->  "--num-envs must be >= 1 (got 0)"."""
    for name, value in flags.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if value is not None and (not values or min(values) < low):
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low} (got {value})")


def check_writable(path, flag: str):
    """UsageError unless `path` (a file or folder to be made) could be written: its nearest existing
    ancestor is a writable folder. Call it before any work, so that a bad --out costs nothing."""
    p = Path(path).absolute()
    base = p
    while not base.exists():
        base = base.parent
    if base != p and not base.is_dir():
        raise UsageError(f"{flag} {path}: {base} is a file, not a folder; pick another path")
    if not base.is_dir():  # an existing file, replaced: its folder must be writable
        base = base.parent
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: cannot write {base} (permission denied or read-only); pick a writable folder")


def _os_error_line(e: OSError) -> str | None:
    """The one line for an OSError the user can fix, or None for an unexpected one."""
    if e.filename is None:  # raised by our own checks with a full message, e.g. FileNotFoundError("...")
        return str(e) if isinstance(e, FileNotFoundError) else None
    if e.errno == errno.ENOSPC:
        return f"no space left on device: {e.filename}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {e.filename}: {e.strerror}; pick a writable directory"
    if isinstance(e, FileNotFoundError):
        return f"no such file or directory: {e.filename}"
    return None


def _write_error_line(e: Exception) -> str | None:
    """torch.save / safetensors on a full disk raise RuntimeError-like errors without an errno."""
    text = str(e)
    if "No space left on device" in text or "os error 28" in text:
        return f"no space left on device ({text.splitlines()[0][:200]})"
    if "PytorchStreamWriter failed writing" in text or "file write failed" in text:
        return "writing a checkpoint failed (is the disk full?): " + text.splitlines()[0][:200]
    return None


@contextmanager
def main_errors():
    """Turn expected failures raised inside the block into `error: ...` + exit 2 (see module doc)."""
    try:
        yield
    except UsageError as e:
        fail(str(e))
    except OSError as e:
        line = _os_error_line(e)
        if line is None:
            raise
        fail(line)
    except Exception as e:  # torch.save's RuntimeError, safetensors' SafetensorError on a full disk
        line = _write_error_line(e)
        if line is None:
            raise
        fail(line)
