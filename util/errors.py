"""User-facing errors: one line that names the file and what is wrong.

`EEGKitError` is raised for bad input anywhere in the kit. Command-line entry
points wrap their `main` with `run_cli`, which prints ``error: <message>`` on
stderr and exits with status 2 instead of showing a traceback. `run_cli` also
turns what slips through into one line: OS errors (permission, missing folder,
disk full; the path comes from ``error.filename``), decoding errors,
`RecursionError` and `MemoryError`. Every CLI honours ``--debug`` (taken out of
the arguments by `run_cli`) or ``EEGKIT_DEBUG=1``: then the full traceback is shown. Boolean
environment variables are read by `env_flag` (1/true/yes/on, 0/false/no/off; anything else refused).
"""
from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_HELP = (f"common flag: {DEBUG_FLAG}  show the full traceback of an error instead of one line "
              "(same as EEGKIT_DEBUG=1)")


class EEGKitError(Exception):
    """A problem with the user's input or files; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force a single line


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe(error: BaseException) -> str | None:
    """The one-line message for an error that is not an `EEGKitError` (None: a real bug)."""
    if isinstance(error, OSError):
        path = error.filename if error.filename is not None else None
        what = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                errno.ENOENT: "no such file or folder", errno.ENOSPC: "no space left on the device",
                errno.EROFS: "read-only file system", errno.EISDIR: "is a folder, expected a file",
                errno.ENOTDIR: "a path component is not a folder", errno.EDQUOT: "disk quota exceeded",
                errno.ENAMETOOLONG: "file name too long"}.get(error.errno, error.strerror or type(error).__name__)
        if path is None:
            return f"{what} ({type(error).__name__})"
        extra = f" -> {error.filename2}" if getattr(error, "filename2", None) else ""
        return f"{path}{extra}: {what}"
    if isinstance(error, UnicodeError):
        return f"cannot decode text input ({_one_line(error)}); expected UTF-8"
    if isinstance(error, RecursionError):
        return "input nested too deeply to read (RecursionError); is a JSON/YAML file crafted or corrupt?"
    if isinstance(error, MemoryError):
        return "out of memory while reading or processing the input (MemoryError); is an input far larger than expected?"
    return None


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """A boolean environment variable: 1/true/yes/on or 0/false/no/off (any case; unset or empty: false).

    Anything else is one `EEGKitError` line naming the variable (``EEGKIT_DEBUG=maybe`` is not silently true).
    """
    raw = os.environ.get(name, "")
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise EEGKitError(f"environment variable {name}={raw!r}: expected one of {', '.join(TRUE_WORDS[:2])} or "
                      f"{', '.join(FALSE_WORDS[1:3])} (also yes/no, on/off)")


def debug_enabled(argv: list[str]) -> bool:
    """``--debug`` among the arguments, or ``EEGKIT_DEBUG`` true (`env_flag`)."""
    return DEBUG_FLAG in argv or env_flag("EEGKIT_DEBUG")


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush into a closed pipe stays silent."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def flag_first(message: str) -> str:
    """argparse's ``argument --seed: must be ..., got '-1'`` in the kit's form ``--seed '-1': must be ...``
    (the flag and its value first, as every other refusal of a flag); other messages unchanged."""
    import re

    match = re.match(r"argument (-[^\s:]+): (.*), got (.+)$", message)  # names: "--seed" or "-s/--seed"
    return f"{match[1].split('/')[-1]} {match[3]}: {match[2]}" if match else message


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)`` and turn `EEGKitError` (and OS/decoding/recursion/memory errors) into one line, exit 2.

    ``--debug`` is removed from the arguments; with it (or ``EEGKIT_DEBUG=1``) errors show their traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        debug = debug_enabled(args)
    except EEGKitError as error:  # EEGKIT_DEBUG=maybe
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    args = [a for a in args if a != DEBUG_FLAG]
    wants_help = any(a in ("-h", "--help") for a in args)
    import argparse

    def parse_error(parser, message):  # argparse prints usage + "prog: error: ..." on two lines
        raise EEGKitError(f"{flag_first(message)} (see {parser.prog} --help)")

    plain_error, argparse.ArgumentParser.error = argparse.ArgumentParser.error, parse_error
    try:
        code = main(args)
    except EEGKitError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("error: interrupted; files already finished were kept, unfinished ones were discarded "
              "(every write is atomic; prediction folders are replaced only when complete)", file=sys.stderr)
        sys.exit(130)
    except SystemExit as done:
        if wants_help and done.code in (0, None):
            try:
                print(f"\n{DEBUG_HELP}")
            except BrokenPipeError:  # `--help | head`: the reader left; nothing more to say
                _stdout_to_devnull()
        raise
    except BrokenPipeError:  # output piped into a reader that closed early (`| head`): stop quietly
        _stdout_to_devnull()
        sys.exit(1)
    except (OSError, UnicodeError, RecursionError, MemoryError) as error:
        message = describe(error)
        if debug or message is None:
            raise
        print(f"error: {_one_line(message)}", file=sys.stderr)
        sys.exit(2)
    finally:
        argparse.ArgumentParser.error = plain_error
    sys.exit(code or 0)
