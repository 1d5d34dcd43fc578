"""The one rule for output paths (``--out``, ``--plot``, ``--json``, ...) of every CLI, and whole-folder writes.

One call per CLI, before anything is read or written (each refusal is one line naming the flag and path):

- `check_out_file(path, flag, overwrite, inputs)` for a single output file, `check_out_files` for several;
- `check_out_dir(path, flag, overwrite, resume, inputs, resumable, own)` for an output folder.

What ``--overwrite`` may replace: only an earlier output of the same tool. Never, with or without it:

- a path that is one of the ``inputs``, holds one, or lies inside one (realpaths: symlinks resolved);
  the one exception is a new name in an input that is a training run folder (a report or prediction
  folder beside its run, ``--out RUN/heldout.json``), never one of the run's own files (`RUN_OWN`);
- a run's checkpoint: a ``*.pt``/``*.pth`` file, anything in a run's ``checkpoints/`` folder, a run
  folder itself (``best.pt``/``last.pt``/``averaged.pt``/``checkpoints/`` in it) unless the tool is
  the trainer (``resumable``);
- a path that exists and is not a regular file or folder: a FIFO, a character device (``/dev/null``),
  a socket (`util.atomic.check_replaceable` refuses the same at the rename);
- for a tool that replaces its whole output folder (``own``: the names it writes there, as
  ``fnmatch`` patterns), a folder that holds anything else (a user's files).

Writing (after the checks):

- `prepare_out_dir(path)`: create the folder, write the kit's marker file (`MARKER`) and remove the
  kit's own stale temporaries (`util.atomic.is_stale_temp`: the mark only the kit writes, and the
  writing process gone); a user's ``.keep.tmp-thesis`` is never touched.
- `staged_dir(path, flag, overwrite)`: write a whole folder into a temporary sibling; on success it
  replaces ``path`` in one rename (the old folder is removed only after), so an interrupted or failed
  run (disk full) leaves the old folder, or nothing, and a regenerated folder holds nothing of the old one.
- `out_lock(path, flag, wait_s)`: the lock file ``.<name>.eegkit-lock`` beside ``path`` (``flock``;
  released by the kernel if the process dies, removed on release). A second writer to the same output
  waits up to ``wait_s`` and is then refused naming the process that holds it. `staged_dir` and
  `writing_into` hold it while they write.
- `writing_into(path, flag, wait_s)`: lock, `prepare_out_dir`, and on failure remove the folder again
  when this run created it and nothing but the kit's own files is in it (no partial folder).
- `is_kit_folder(path)`: ``demo.py --fresh`` deletes only folders that carry the marker.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from util.atomic import TMP_MARK, is_stale_temp, non_regular, parse_temp, temp_name
from util.errors import EEGKitError

MARKER = ".eegkit-output"  # written into every folder the kit creates for its outputs
TMP_TAG = TMP_MARK  # util.atomic's mark in every temporary name (kept under its old name)
LOCK_SUFFIX = ".eegkit-lock"  # ".<name>.eegkit-lock" beside the output it guards
CHECKPOINT_NAMES = ("best.pt", "last.pt", "averaged.pt")
CHECKPOINT_FOLDER = "checkpoints"
CHECKPOINT_SUFFIXES = (".pt", ".pth")
# what a training run folder holds (util.trainer, per-subject parents): never written by another tool
RUN_OWN = (*CHECKPOINT_NAMES, CHECKPOINT_FOLDER, "config.yaml", "log.csv", "curves.png", "per_subject.json")


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def _nearest_existing(path: Path) -> Path:
    path = _real(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(path: Path, flag: str) -> None:
    anchor = _nearest_existing(path)
    if not anchor.is_dir():
        raise EEGKitError(f"{flag} {path}: {anchor} is a file, not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise EEGKitError(f"{flag} {path}: {anchor} is not writable (permission denied)")
    try:  # access() says yes to root even on read-only places: probe with a real (removed) file
        fd, probe = tempfile.mkstemp(prefix=".eegkit-probe-", dir=anchor)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise EEGKitError(f"{flag} {path}: {anchor} is not writable ({error.strerror})") from None


def _beside_a_run(out: Path, run: Path) -> bool:
    """``out`` is a new name in the run folder ``run`` (a report beside its run), not one of the run's own files."""
    first = out.relative_to(run).parts[0]
    return is_run_folder(run) and first not in RUN_OWN and Path(first).suffix not in CHECKPOINT_SUFFIXES


def _check_not_input(path: Path, flag: str, inputs: Iterable, folder: bool) -> None:
    out = _real(path)
    for item in inputs:
        if item is None:
            continue
        src = _real(item)
        if out == src:
            raise EEGKitError(f"{flag} {path}: is also an input ({item}); refusing to write onto an input")
        if src in out.parents and not _beside_a_run(out, src):
            raise EEGKitError(f"{flag} {path}: lies inside an input ({item}); refusing to write into an input")
        if folder and out in src.parents:
            raise EEGKitError(f"{flag} {path}: holds an input ({item}); refusing to write over an input")


def _check_regular(path: Path, flag: str, folder: bool) -> None:
    kind = non_regular(path)
    if kind is None or (folder and kind == "a folder"):
        return
    if kind == "a folder":
        raise EEGKitError(f"{flag} {path}: is a folder, expected a file name")
    what = "exists and is a file, not a folder" if folder and path.is_file() else f"is {kind}, not a regular file"
    raise EEGKitError(f"{flag} {path}: {what}; refusing to write to it")


def is_run_folder(path: str | os.PathLike) -> bool:
    """A training run's folder: it holds ``best.pt``, ``last.pt``, ``averaged.pt`` or ``checkpoints/``."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in (*CHECKPOINT_NAMES, CHECKPOINT_FOLDER))


def _checkpoint_reason(path: Path) -> str | None:
    """Why an output file path would hit a run's checkpoint (None: it would not)."""
    real = _real(path)
    if real.name in CHECKPOINT_NAMES and (real.exists() or is_run_folder(real.parent)):
        return f"is a run's checkpoint ({real.name})"
    if real.parent.name == CHECKPOINT_FOLDER:
        return f"lies in a run's {CHECKPOINT_FOLDER}/ folder"
    if real.suffix in CHECKPOINT_SUFFIXES and real.exists():
        return f"is a checkpoint file ({real.suffix})"
    return None


def is_kit_file(name: str) -> bool:
    """The kit's marker, one of its temporaries or a lock file (not counted as a folder's contents)."""
    return name == MARKER or parse_temp(name) is not None or (name.startswith(".") and name.endswith(LOCK_SUFFIX))


def _entries(path: Path, flag: str) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if not is_kit_file(p.name))
    except OSError as error:
        raise EEGKitError(f"{flag} {path}: cannot list the folder ({error.strerror})") from None


def check_out_dir(path: str | os.PathLike, flag: str = "--out", overwrite: bool = False, resume: bool = False,
                  inputs: Iterable = (), resumable: bool = False, own: Sequence[str] | None = None) -> Path:
    """Validate an output folder before anything is written (see the module docstring); returns it.

    ``resumable``: the trainer's run folder (``--resume`` is offered, and its own checkpoints may be
    replaced). ``own``: the tool replaces the whole folder; with ``--overwrite`` every entry in it must
    match one of these patterns (what the tool writes there).
    """
    path = Path(path)
    _check_regular(path, flag, folder=True)
    _check_not_input(path, flag, inputs, folder=True)
    real = _real(path)
    if real.name == CHECKPOINT_FOLDER and is_run_folder(real.parent):
        raise EEGKitError(f"{flag} {path}: is a run's {CHECKPOINT_FOLDER}/ folder; refusing to write into it")
    if path.is_dir():
        entries = _entries(path, flag)
        if entries and not (overwrite or resume):
            hint = " or --resume to continue the run" if resumable else ""
            raise EEGKitError(f"{flag} {path}: folder is not empty ({len(entries)} entries); pass --overwrite to "
                              f"replace its contents{hint}")
        if entries and not resumable and is_run_folder(path):
            raise EEGKitError(f"{flag} {path}: is a training run's folder (checkpoints); --overwrite replaces only "
                              f"this tool's earlier outputs, never a run")
        if entries and own is not None:
            foreign = [p.name for p in entries if not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in own)]
            if foreign:
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise EEGKitError(f"{flag} {path}: holds {foreign[0]!r}{more}, which this tool did not write; "
                                  f"--overwrite replaces only its own earlier output folder (expected only "
                                  f"{', '.join(own)}); move them away or choose another {flag}")
    _check_writable(path, flag)
    return path


def check_out_file(path: str | os.PathLike, flag: str = "--out", overwrite: bool = False,
                   inputs: Iterable = ()) -> Path:
    """Validate an output file before anything is written (see the module docstring); returns it."""
    path = Path(path)
    _check_regular(path, flag, folder=False)
    _check_not_input(path, flag, inputs, folder=False)
    reason = _checkpoint_reason(path)
    if reason is not None:
        raise EEGKitError(f"{flag} {path}: {reason}; refusing to write over a checkpoint")
    if path.exists() and not overwrite:
        raise EEGKitError(f"{flag} {path}: file exists; pass --overwrite to replace it")
    _check_writable(path.parent if str(path.parent) else Path("."), flag)
    return path


def check_out_files(outputs: Iterable[tuple[str, object]], overwrite: bool = False, inputs: Iterable = ()) -> None:
    """`check_out_file` for each ``(flag, path)`` given (None: not asked for); no two outputs may be one file."""
    taken = list(inputs)
    for flag, path in outputs:
        if path is not None:
            check_out_file(path, flag, overwrite=overwrite, inputs=taken)
            taken.append(path)


def _remove(entry: Path) -> None:
    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def clean_temporaries(folder: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Remove the kit's stale temporaries in ``folder`` (of the final name ``target``, if given); returns them.

    Only names that carry the kit's mark (`util.atomic.parse_temp`) and whose writing process is gone.
    """
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if is_stale_temp(entry.name, target):
            with contextlib.suppress(OSError):
                _remove(entry)
                removed.append(entry)
    return removed


def write_marker(folder: str | os.PathLike) -> None:
    marker = Path(folder) / MARKER
    if not marker.exists():
        marker.write_text("written by eegkit; demo.py --fresh may delete this folder\n")


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder (after validation), mark it as the kit's and remove stale temporaries."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    clean_temporaries(path)
    write_marker(path)
    return path


def is_kit_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / MARKER).is_file()


# --------------------------------------------------------------------------- lock files
_HELD: dict[str, list] = {}  # lock path -> [fd, depth]: re-entrant within one process


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file guarding the output ``path``: ``.<name>.eegkit-lock`` in its (real) parent folder."""
    real = _real(path)
    return real.parent / f".{real.name}{LOCK_SUFFIX}"


def _holder(lock: Path) -> str:
    with contextlib.suppress(OSError, UnicodeError):
        text = lock.read_text(encoding="utf-8").split("\n")[0].strip()
        if text:
            return f" ({text[:160]})"
    return ""


@contextlib.contextmanager
def out_lock(path: str | os.PathLike, flag: str = "--out", wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the lock file of the output ``path`` (see the module docstring); yields the lock file's path."""
    lock = lock_path(path)
    key = str(lock)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield lock
        finally:
            _HELD[key][1] -= 1
        return
    made = []  # folders created for the lock file: removed again on release if they stay empty
    folder = lock.parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(float(wait_s), 0.0)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            _remove_empty(made)
            raise EEGKitError(f"{flag} {path}: another eegkit process is writing to it{_holder(lock)}; lock file "
                              f"{lock}; wait for it to finish or choose another {flag}") from None
        except OSError:  # a file system without flock (some network mounts): the lock file alone
            pass
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: take the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}: {' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])[:200]}\n".encode())
    _HELD[key] = [fd, 1]
    try:
        yield lock
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)
        _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


@contextlib.contextmanager
def writing_into(path: str | os.PathLike, flag: str = "--out", wait_s: float = 0.0) -> Iterator[Path]:
    """Lock ``path``, `prepare_out_dir` it and yield it; on failure a folder this run created is removed
    again when it holds nothing but the kit's own files (no partial output folder is left)."""
    path = Path(path)
    with out_lock(path, flag, wait_s):
        created = not path.exists()
        prepare_out_dir(path)
        try:
            yield path
        except BaseException:
            if created and not _entries(path, flag):
                shutil.rmtree(path, ignore_errors=True)
            raise


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike, flag: str = "--out", overwrite: bool | None = None) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path``; on success it replaces ``path`` whole.

    Holds `out_lock` from start to rename. ``overwrite`` False: ``path`` must still be absent or empty
    when the lock is taken (another process may have written it since the checks); None: not checked.
    """
    path = _real(path)  # a symlinked output folder: write beside its target, keep the link
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    with out_lock(path, flag):
        if overwrite is False and path.is_dir() and _entries(path, flag):
            raise EEGKitError(f"{flag} {path}: another process wrote this folder since the checks; pass "
                              f"--overwrite to replace it")
        clean_temporaries(parent, target=path.name)  # left by a killed earlier run of this output
        tmp = parent / temp_name(path.name)
        tmp.mkdir()
        old = None
        try:
            yield tmp
            write_marker(tmp)
            if path.exists():
                old = parent / temp_name(path.name, "-old")
                os.replace(path, old)
            os.replace(tmp, path)
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and old.exists() and not path.exists():
                os.replace(old, path)  # the new folder could not take its place: the old one goes back
            if isinstance(error, OSError) and str(error.filename or "").startswith(f"{tmp}{os.sep}"):
                # name the file as the user will know it (the temporary folder is gone)
                raise type(error)(error.errno, error.strerror, str(path) + str(error.filename)[len(str(tmp)):]) \
                    from None
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
