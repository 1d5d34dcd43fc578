"""Atomic file writes: write to a temporary file in the same folder, fsync, rename.

An interrupted run therefore never leaves a half-written checkpoint,
prediction or submission: either the old file (or nothing) or the complete new
file is there.

Temporary names carry a mark only the kit writes (`temp_name`):
``.<name>.eegkit-tmp-<pid>-<token><check><suffix>``, where ``token`` is 16 random hex digits and
``check`` the first 8 hex digits of ``sha256("eegkit-tmp:<pid>:<token>")``. `parse_temp` accepts a name
only when the check matches, and `is_stale_temp` only when the writing process (``pid``) is gone, so the
stale-temporary cleanup (`util.outdir.clean_temporaries`) never takes a user's ``.thesis.tmp-backup``
nor the temporary of a writer that is still running.

A write that fails (disk full, ``ulimit -f``, read-only) raises an `OSError` that names the final
path, removes its temporary and leaves the previous file in place; checkpoints are serialised in
memory first, so torch's writer never meets the disk (its own errors would be a ``RuntimeError``).
A final path that exists and is not a regular file (FIFO, device, socket, folder) is never replaced.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from util.errors import EEGKitError

TMP_MARK = ".eegkit-tmp-"  # in every temporary name the kit writes (see the module docstring)
_TEMP = re.compile(r"\.(?P<name>.+)\.eegkit-tmp-(?P<pid>\d{1,10})-(?P<token>[0-9a-f]{16})(?P<check>[0-9a-f]{8})"
                   r"(?P<suffix>.*)", re.DOTALL)


def _check(pid: int, token: str) -> str:
    return hashlib.sha256(f"eegkit-tmp:{pid}:{token}".encode()).hexdigest()[:8]


def temp_name(name: str, suffix: str = "", pid: int | None = None) -> str:
    """A fresh kit temporary name for the final file/folder ``name`` (``pid``: the writer, default this process)."""
    pid = os.getpid() if pid is None else int(pid)
    token = secrets.token_hex(8)
    return f".{name}{TMP_MARK}{pid}-{token}{_check(pid, token)}{suffix}"


def parse_temp(name: str) -> tuple[str, int] | None:
    """``(final name, writer pid)`` of a kit temporary name, None for any other name (a user's file)."""
    match = _TEMP.fullmatch(name)
    if match is None or _check(int(match["pid"]), match["token"]) != match["check"]:
        return None
    return match["name"], int(match["pid"])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (a permission error means it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def is_stale_temp(name: str, target: str | None = None) -> bool:
    """A kit temporary (of the final name ``target``, when given) whose writer is gone."""
    parsed = parse_temp(name)
    if parsed is None or (target is not None and parsed[0] != target):
        return False
    return parsed[1] != os.getpid() and not pid_alive(parsed[1])


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None: a regular file)."""
    for test, word in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return word
    return None if stat.S_ISREG(mode) else "not a regular file"


def non_regular(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists (symlinks followed) and is not a regular file; None otherwise."""
    try:
        return _kind(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse a final path that exists and is not a regular file (a FIFO, a device such as /dev/null, ...)."""
    kind = non_regular(path)
    if kind is not None:
        raise EEGKitError(f"{path}: is {kind}, not a regular file; refusing to replace it")


def _named(error: OSError, path: Path, tmp: Path) -> OSError:
    """The same OSError, naming the final path instead of the temporary (or nothing)."""
    if error.filename is not None and str(error.filename) != str(tmp):
        return error
    named = type(error)(error.errno, error.strerror or str(error), str(path))
    named.__cause__ = error
    return named


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    The temporary file keeps the final suffix (``suffix`` or the target's) so
    libraries that look at extensions (numpy, matplotlib) behave.
    """
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = suffix if suffix is not None else "".join(path.suffixes)
    while True:
        tmp = path.parent / temp_name(path.name, ending)
        try:  # created with the usual permissions (0666 less the umask)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        check_replaceable(path)  # it may have been swapped for a FIFO or a device meanwhile
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(error, OSError):
            raise _named(error, path, tmp) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_savez(path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npz") as tmp:
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` into memory, then one atomic write: a full disk or ``ulimit -f`` is a plain `OSError`."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **kwargs)
    return path
