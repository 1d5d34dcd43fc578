"""The one rule for output paths (``--out``) of every CLI, and whole-folder writes.

- `check_out_dir(path, flag, overwrite, resume, inputs)`: before anything is written. Refused (one
  line naming the flag and path): an existing file where a folder is wanted, a folder that is not
  empty unless ``--overwrite`` or ``--resume`` is given, a path that is one of the inputs or holds
  one (realpaths compared), and a path whose nearest existing folder is not writable.
- `check_out_file(path, flag, overwrite, inputs)`: the same for a single output file (an existing
  file is refused unless ``--overwrite``).
- `prepare_out_dir(path)`: after validation: create the folder, write the kit's marker file
  (`MARKER`) into it and remove stale temporary files of the kit's own naming
  (``.<name>.tmp-*``, `util.atomic`) left by a killed run.
- `staged_dir(path)`: write a whole folder into a temporary sibling ``.<name>.tmp-*``; on success
  it replaces ``path`` in one rename (the old folder is removed only after), so an interrupted run
  leaves the old folder untouched.
- `is_kit_folder(path)` / `remove_kit_folder(path)`: ``demo.py --fresh`` deletes only folders that
  carry the marker.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from util.errors import EEGKitError

MARKER = ".eegkit-output"  # written into every folder the kit creates for its outputs
TMP_TAG = ".tmp-"  # util.atomic names its temporary files ".<name>.tmp-XXXX<suffix>"


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


def _check_not_input(path: Path, flag: str, inputs: Iterable, folder: bool) -> None:
    out = _real(path)
    for item in inputs:
        if item is None:
            continue
        src = _real(item)
        if out == src:
            raise EEGKitError(f"{flag} {path}: is also an input ({item}); refusing to write onto an input")
        if folder and out in src.parents:
            raise EEGKitError(f"{flag} {path}: holds an input ({item}); refusing to write over an input")


def _kit_temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") and TMP_TAG in p.name] if folder.is_dir() else []


def check_out_dir(path: str | os.PathLike, flag: str = "--out", overwrite: bool = False, resume: bool = False,
                  inputs: Iterable = (), resumable: bool = False) -> Path:
    """Validate an output folder before anything is written (see the module docstring); returns it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EEGKitError(f"{flag} {path}: exists and is a file, not a folder")
    _check_not_input(path, flag, inputs, folder=True)
    if path.is_dir():
        try:
            entries = [p for p in path.iterdir() if p.name != MARKER and p not in _kit_temporaries(path)]
        except OSError as error:
            raise EEGKitError(f"{flag} {path}: cannot list the folder ({error.strerror})") from None
        if entries and not (overwrite or resume):
            hint = " or --resume to continue the run" if resumable else ""
            raise EEGKitError(f"{flag} {path}: folder is not empty ({len(entries)} entries); pass --overwrite to "
                              f"replace its contents{hint}")
    _check_writable(path, flag)
    return path


def check_out_file(path: str | os.PathLike, flag: str = "--out", overwrite: bool = False,
                   inputs: Iterable = ()) -> Path:
    """Validate an output file before anything is written; returns it."""
    path = Path(path)
    if path.is_dir():
        raise EEGKitError(f"{flag} {path}: is a folder, expected a file name")
    _check_not_input(path, flag, inputs, folder=False)
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


def clean_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove stale ``.<name>.tmp-*`` files/folders of the kit's own naming in ``folder``; returns them."""
    removed = []
    for entry in _kit_temporaries(Path(folder)):
        with contextlib.suppress(OSError):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
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


@contextlib.contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path``; on success it replaces ``path`` whole."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{path.name}{TMP_TAG}*"):  # left by a killed earlier run of this output
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_TAG}", dir=parent))
    try:
        yield tmp
        write_marker(tmp)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_TAG}old-", dir=parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
