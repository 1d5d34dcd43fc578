"""Reader for the cocktail-party EEG sample (``../shared/data/cocktail_party_sample``).

Real 128-channel BioSemi EEG of one listener attending one of two simultaneous talkers
(Lalor lab cocktail-party dataset, Power et al. 2012; as excerpted by E. Teoh, 2019). Layout
(the folder's README):

- ``trial_{i}.mat``: ``eeg`` (7680, 128) float32 at 128 Hz, time first (and ``mast`` (7680, 2), the
  mastoids, not used: the EEG is taken as stored, no re-reference);
- ``F_env.mat`` / ``M_env.mat``: ``stim1``, a (1, 40) cell array of (7680, 1) speech envelopes
  (128 Hz) of the female / male talker's 40 segments;
- ``competing_speaker_order.mat``: ``blk1_M_Order`` (1, 20): for block-1 trial i the 1-based
  index into ``M_env`` of the competing male segment.

Pairing (block 1, 1-based as in MATLAB): trial i -> EEG ``trial_i.mat``, attended envelope
``F_env.stim1{i}`` (the female talker), unattended envelope ``M_env.stim1{blk1_M_Order(i)}``.
In 0-based numpy indexing: ``F[0, i - 1]`` and ``M[0, blk1_M_Order[0, i - 1] - 1]``.

EEG and envelopes are cut to their common length; a difference of more than ``max_mismatch_s``
(1 s) is an error naming both files. Every shape, index and value is checked and a problem gives
one EEGKitError line naming the file.

Public API: ``is_cocktail_dir(path)``, ``read_cocktail(root) -> list[CocktailTrial]``,
``FS`` (128), ``N_CHANNELS`` (128).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from util.errors import EEGKitError
from util.inputs import check_array

__all__ = ["CocktailTrial", "is_cocktail_dir", "read_cocktail", "FS", "N_CHANNELS"]

FS = 128          # EEG and envelope rate of the sample
N_CHANNELS = 128  # BioSemi-128
_TRIAL_RE = re.compile(r"trial_(\d+)\.mat")


@dataclass
class CocktailTrial:
    """One block-1 trial: EEG ``(T, 128)`` and the two envelopes ``(T,)``, all at 128 Hz."""

    trial: int                 # 1-based trial number i (trial_i.mat)
    eeg: np.ndarray            # (T, 128) float32
    attended: np.ndarray       # (T,) float64, F_env.stim1{i}
    unattended: np.ndarray     # (T,) float64, M_env.stim1{blk1_M_Order(i)}
    fs: int = FS
    eeg_file: str = ""
    attended_ref: str = ""     # e.g. "F_env.mat stim1{3}"
    unattended_ref: str = ""   # e.g. "M_env.mat stim1{36}"


def is_cocktail_dir(path) -> bool:
    """True when ``path`` looks like the sample (``trial_1.mat`` and ``F_env.mat``)."""
    path = Path(path)
    return (path / "trial_1.mat").is_file() and (path / "F_env.mat").is_file()


def _loadmat(path: Path) -> dict:
    from speaker_extraction.kul_format import load_mat

    if not path.exists():
        raise EEGKitError(f"{path}: file not found")
    return load_mat(path)  # the kit's bounded .mat reader: regular file, size and inflate caps, one-line errors


def _variable(content: dict, name: str, path: Path):
    if name not in content:
        found = sorted(key for key in content if not key.startswith("__"))
        raise EEGKitError(f"{path}: no variable {name!r} (found: {', '.join(found) or 'nothing'})")
    return content[name]


def _cells(path: Path) -> np.ndarray:
    """``stim1`` of an envelope file as a flat object array of cells."""
    stim = _variable(_loadmat(path), "stim1", path)
    if not isinstance(stim, np.ndarray) or stim.dtype != object or stim.size == 0:
        raise EEGKitError(f"{path}: 'stim1' must be a non-empty cell array, found "
                          f"{getattr(stim, 'dtype', type(stim).__name__)} of shape {getattr(stim, 'shape', None)}")
    return stim.reshape(-1)


def _envelope(cells: np.ndarray, index: int, path: Path) -> np.ndarray:
    """Cell ``index`` (1-based) as a finite (T,) float64 envelope."""
    if not 1 <= index <= cells.size:
        raise EEGKitError(f"{path}: stim1{{{index}}} requested but 'stim1' has {cells.size} cells")
    value = np.asarray(cells[index - 1])
    if value.dtype.kind not in "biuf" or value.ndim not in (1, 2) or (value.ndim == 2 and 1 not in value.shape):
        raise EEGKitError(f"{path}: stim1{{{index}}} must be a (T, 1) numeric envelope, found "
                          f"{value.dtype} of shape {value.shape}")
    value = value.reshape(-1).astype(np.float64)
    if value.size < 2:
        raise EEGKitError(f"{path}: stim1{{{index}}} has {value.size} samples")
    check_array(value, f"{path}: stim1{{{index}}}", ndim=1, refuse_constant=True, what="envelope")
    return value


def _read_eeg(path: Path) -> np.ndarray:
    eeg = np.asarray(_variable(_loadmat(path), "eeg", path))
    if eeg.ndim != 2 or eeg.dtype.kind not in "biuf":
        raise EEGKitError(f"{path}: 'eeg' must be a (time, {N_CHANNELS}) numeric matrix, found "
                          f"{eeg.dtype} of shape {eeg.shape}")
    if eeg.shape[1] != N_CHANNELS:
        hint = " (looks channels-first; expected time first)" if eeg.shape[0] == N_CHANNELS else ""
        raise EEGKitError(f"{path}: 'eeg' must have {N_CHANNELS} channels as (time, {N_CHANNELS}), "
                          f"found shape {eeg.shape}{hint}")
    if eeg.shape[0] < 2 * FS:
        raise EEGKitError(f"{path}: 'eeg' has {eeg.shape[0]} samples, less than 2 s at {FS} Hz")
    check_array(eeg, f"{path}: 'eeg'", ndim=2, columns=N_CHANNELS, refuse_constant=True, what="EEG")  # finite, not flat
    return eeg.astype(np.float32)


def read_cocktail(root, max_mismatch_s: float = 1.0) -> list[CocktailTrial]:
    """All ``trial_i.mat`` of the folder, paired with their envelopes (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise EEGKitError(f"{root}: cocktail-party folder not found")
    numbers = sorted(int(m[1]) for p in root.glob("trial_*.mat") if (m := _TRIAL_RE.fullmatch(p.name)))
    if not numbers:
        raise EEGKitError(f"{root}: no trial_1.mat, trial_2.mat, ... found")
    f_path, m_path = root / "F_env.mat", root / "M_env.mat"
    order_path = root / "competing_speaker_order.mat"
    f_cells, m_cells = _cells(f_path), _cells(m_path)
    order = np.asarray(_variable(_loadmat(order_path), "blk1_M_Order", order_path))
    if order.dtype.kind not in "iuf" or order.size == 0:
        raise EEGKitError(f"{order_path}: 'blk1_M_Order' must be a numeric (1, n) array, found "
                          f"{order.dtype} of shape {order.shape}")
    order = order.reshape(-1)
    trials = []
    for i in numbers:
        eeg_path = root / f"trial_{i}.mat"
        if i > order.size:
            raise EEGKitError(f"{eeg_path}: trial {i} has no entry in {order_path.name} blk1_M_Order "
                              f"({order.size} entries)")
        m_index = float(order[i - 1])
        if m_index != int(m_index):
            raise EEGKitError(f"{order_path}: blk1_M_Order({i}) = {m_index:g} is not an integer index")
        m_index = int(m_index)
        eeg = _read_eeg(eeg_path)  # (T, 128)
        attended = _envelope(f_cells, i, f_path)
        unattended = _envelope(m_cells, m_index, m_path)
        lengths = {eeg_path.name: eeg.shape[0], f"{f_path.name} stim1{{{i}}}": attended.size,
                   f"{m_path.name} stim1{{{m_index}}}": unattended.size}
        shortest, longest = min(lengths, key=lengths.get), max(lengths, key=lengths.get)
        if lengths[longest] - lengths[shortest] > max_mismatch_s * FS:
            raise EEGKitError(f"{root / longest.split(' ')[0]}: {longest} has {lengths[longest]} samples but "
                              f"{shortest} has {lengths[shortest]} (differ by more than {max_mismatch_s:g} s)")
        n = lengths[shortest]
        trials.append(CocktailTrial(trial=i, eeg=eeg[:n], attended=attended[:n], unattended=unattended[:n],
                                    eeg_file=str(eeg_path), attended_ref=f"{f_path.name} stim1{{{i}}}",
                                    unattended_ref=f"{m_path.name} stim1{{{m_index}}}"))
    return trials
