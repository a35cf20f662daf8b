"""Expected failures end in ONE line on stderr and exit code 2; unexpected ones keep their traceback.

    from common.errors import UsageError, fail, main_errors

    if args.num_steps < 1:
        fail(f"--num-steps must be >= 1 (got {args.num_steps})")
    with main_errors():            # UsageError, a missing file, a full or read-only disk -> "error: ..."
        main(args)

Raise UsageError (or call fail) for anything the user can fix: a bad flag, a missing or corrupt
checkpoint, a model that does not fit the env, an env without a scripted expert. Its message names
the flag or file and says what would work.
"""
from __future__ import annotations

import errno
import sys
from contextlib import contextmanager
from typing import NoReturn

EXIT_CODE = 2  # what argparse / tyro use for a bad command line


class UsageError(Exception):
    """A failure the user can fix; its message is the whole error line (without the 'error: ')."""


def fail(message: str) -> NoReturn:
    """Print `error: message` to stderr and exit 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CODE)


def _os_error_line(e: OSError) -> str | None:
    """The one line for an OSError the user can fix, or None for an unexpected one."""
    path = e.filename if e.filename is not None else "?"
    if e.errno == errno.ENOSPC:
        return f"no space left on device: {path}"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {e.strerror}; pick a writable directory"
    if isinstance(e, FileNotFoundError):
        return f"no such file or directory: {path}"
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
    except RuntimeError as e:
        line = _write_error_line(e)
        if line is None:
            raise
        fail(line)
