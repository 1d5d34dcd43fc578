"""User-facing errors: one line that names the file and what is wrong.

`EEGKitError` is raised for bad input anywhere in the kit. Command-line entry
points wrap their `main` with `run_cli`, which prints ``error: <message>`` on
stderr and exits with status 2 instead of showing a traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class EEGKitError(Exception):
    """A problem with the user's input or files; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force a single line


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run ``main(argv)`` and turn `EEGKitError` into a one-line message and exit status 2."""
    try:
        code = main(argv)
    except EEGKitError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted (no partial output was written)", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
