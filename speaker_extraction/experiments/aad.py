"""Stimulus-reconstruction auditory attention decoding (AAD): per-window correlations and the AAD report.

It lives in experiments/ because it combines both tasks: the KUL data of speaker extraction and the
Task 2 envelope decoders (the layer rule of `util/layers.py`: a task never imports the other).

    python -m speaker_extraction.experiments.aad --data DIR --model {ridge,linear,vlaai_small} --out OUTDIR \
        [--windows 1,2,5,10,20,30,60] [--fs 64] [--band 1,9] [--lags-ms 0,250] [--epochs N] \
        [--split-from-run RUN] [--overwrite] [--no-progress] [--no-controls] [--n-shifts 100] [--seed 0]

A backward model reconstructs the attended speech envelope from the EEG; in every decision window
the talker whose envelope correlates better with the reconstruction is declared attended
(``../shared/reference/aad.md``). Outputs in OUTDIR: ``correlations.csv`` (one row per decision
window: ``subject,window_s,r_attended,r_unattended,trial,model,start_s``), ``trials.csv`` (whole
held-out trials with the chosen regulariser / training summary), ``report.json`` and ``report.png``
(through the scorer ``evaluation.aad``) and ``COMMAND.txt``. Every file is written atomically.

Data (detected from DIR)
- KU Leuven AAD layout (``S1.mat`` ... + ``stimuli/part{p}_track{t}_{dry|hrtf}.wav``; the synthetic
  KUL data has it too): trials read with ``kul_format.read_subject_mat``, repetition trials left
  out (as ``speaker_extraction.data`` does by default); the attended / competing wavs are paired with
  ``data._dry_pair`` and read with ``util.features.load_audio``; both envelopes are the kit's gammatone
  envelope (``util.features.gammatone_envelope``, 64 Hz) resampled to the working rate.
- The cocktail-party sample (``trial_1.mat`` + ``F_env.mat``; ``speaker_extraction.cocktail``):
  128-channel EEG and the envelopes given at 128 Hz, paired as its README says.

Working rate: the EEG is band-passed at its own rate (``data.bandpass_eeg``, Butterworth order 4,
zero phase; ``--band``, default 1-9 Hz, the band of the linear AAD decoders on the KUL data), then
EEG and envelopes are resampled to ``--fs`` (default 64 Hz) and the envelopes get the same band-pass
there; each trial is cut to the common length of EEG and both envelopes.

Evaluation: leave-one-trial-out within each subject (whole trials; never windows of one trial on
both sides), or with ``--split-from-run RUN`` the trial split stored in a NeuroSpex run
(``speaker_extraction.train``: the checkpoint's ``data.split`` config, replayed with
``data.make_split``): train on its train+val trials, test on its test trials, so the numbers sit on
the NeuroSpex test trials. Decision windows of each length are cut without overlap from the start
of each held-out trial; a window longer than a trial is skipped there (said once).

Models
- ``ridge``: backward decoder ``prediction(t) = sum_{c,l} w(c,l) eeg(t + l, c)`` for lags
  ``--lags-ms`` (default 0-250 ms = 0..16 samples at 64 Hz), fitted with
  ``task2_regression.models.linear.RidgeDecoder`` on EEG and envelope z-scored per channel with the
  statistics of the fold's training trials (the held-out trial is z-scored with them too). The
  regulariser lambda = alpha * trace(Cxx) / D (alpha relative to the mean eigenvalue of the
  covariance) is chosen from ``ALPHAS`` (half-decade log grid 1e-5..1e3) by an inner
  leave-one-training-trial-out cross-validation over the fold's training trials only (score = mean
  Pearson r on the inner validation trial). The inner CV runs on per-trial covariance sums: every
  trial's lagged-design sums are computed once; an inner fold adds those of its training trials,
  z-scores them in closed form (the centred covariance of z-scored data is ``Cxx / (s s^T)``), and
  one eigendecomposition gives the weights for the whole grid. The inner training set of (outer h,
  inner k) is "all trials but h and k", the same as (outer k, inner h), so it is decomposed once
  (its z-scoring uses that inner training set's statistics: strictly nested). ``inner_cv_scores``
  gives the same numbers as ``RidgeDecoder.select_alpha`` on explicitly z-scored data (tested).
  Predictions cover the whole trial: the z-scored EEG is padded with zeros (its training mean) for
  the last max-lag samples.
- ``linear`` / ``vlaai_small``: the kit's Task 2 envelope models, trained by the kit's training
  engine ``task2_regression.train.train`` with ``task2_regression/configs/{linear,vlaai_small}.yaml``
  and the overrides ``target=envelope`` (trains [envelope]), ``model.n_channels`` = the data's
  channel count (64 KUL, 128 cocktail), ``data.window_s`` / ``data.hop_s`` cut to the shortest
  training trial when the config's window is longer. Each fold is written as a split_data folder
  under ``OUTDIR/.aad_tmp`` (deleted after use):
  ``derivatives/split_data/{train|val}_-_{subject}_-_trial{NNN}_-_{eeg|envelope}.npy`` (float32,
  time first, EEG (T, C), envelope (T, 1)). Every trial is its own recording (stimulus name
  ``trialNNN``), so split_data's "z-score each recording with its own train-part statistics" makes
  each training trial z-scored with its own statistics; the validation trial (val split, used only
  for early stopping; in leave-one-trial-out the trial after the held-out one) has no train part and
  falls back to its own statistics, the same per-trial normalisation (the loader's warning about it
  is silenced here). The held-out trial is never written: it is predicted afterwards with
  ``task2_regression.predict.predict_segments``, which z-scores it with its own statistics as well.
  So all three are normalised alike, from their own EEG only (no labels, available at test time),
  and nothing of the held-out trial reaches training. The split_data loader checks every EEG file
  against the config's ``model.n_channels`` (64 KUL, 128 cocktail). ``--epochs`` overrides
  ``train.epochs``.

Reconstruction r and controls (on by default; ``--no-controls``): per held-out trial and as the mean
over trials, r of the reconstruction with the attended AND the unattended envelope over the whole
trial, beside three controls of r(attended), in ``report.json`` (``reconstruction``: ``per_trial``,
means, Holm significance across trials; top-level ``controls`` / ``score_above_noise`` /
``warnings``, the keys of every scorer, see ``evaluation.controls``) and in the printout:
  * noise EEG: the fold's model on Gaussian EEG with the trial's per-channel mean and std;
  * circular shift: the reconstruction against the attended envelope shifted circularly by >= 2 s,
    ``--n-shifts`` times (mean, 95th percentile, permutation p); the overall null's draw k is the
    mean of the trials' draws k;
  * mismatched EEG: the fold's model on another trial's EEG (the same subject's next trial,
    cyclically; another stimulus in both layouts), against this trial's attended envelope.
  That other trial is usually a training trial of the fold. A high mismatched r means that the
  reconstruction carries structure shared by trials (e.g. the onset at a trial's start), not this
  trial's stimulus.

Library API: ``run_aad(...) -> dict``, ``load_trials``, ``loto_folds``, ``folds_from_run``,
``ridge_fold``, ``inner_cv_scores``, ``window_rows``, ``main(argv)``.
"""
from __future__ import annotations
if not __package__:  # run by path (python speaker_extraction/experiments/aad.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])  # noqa: E401,E702

import argparse
import contextlib
import copy
import csv
import io
import math
import re
import shlex
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from evaluation.aad import DECISION_WINDOWS_S, parse_windows
from util.atomic import atomic_save_npy, atomic_write_text
from util.errors import EEGKitError, run_cli
from util.features import FS_TASK2, gammatone_envelope, load_audio, resample
from util.config import int_arg, seed_arg

# torch and the modules that import it (speaker_extraction.data, task2_regression, util.metrics) are
# imported inside the functions that need them, so argument errors are reported without loading torch.

__all__ = ["DEFAULT_WINDOWS", "MODELS", "ALPHAS", "Trial", "Fold", "Lags", "load_trials", "loto_folds",
           "folds_from_run", "ridge_fold", "inner_cv_scores", "window_rows", "run_aad", "main"]

DEFAULT_WINDOWS = DECISION_WINDOWS_S
MODELS = ("ridge", "linear", "vlaai_small")
ENGINE_MODELS = ("linear", "vlaai_small")
ALPHAS = tuple(float(10.0 ** e) for e in np.arange(-5.0, 3.01, 0.5))  # lambda / mean eigenvalue
DEFAULT_BAND = (1.0, 9.0)
DEFAULT_LAGS_MS = (0.0, 250.0)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "task2_regression" / "configs"
TMP_NAME = ".aad_tmp"
CSV_COLUMNS = ("subject", "window_s", "r_attended", "r_unattended", "trial", "model", "start_s")
_KUL_RE = re.compile(r"S(\d+)\.mat")


# --------------------------------------------------------------------------- data
@dataclass
class Trial:
    """One trial at the working rate: EEG ``(T, C)`` and both envelopes ``(T,)``."""

    subject: str                 # "S1"
    trial: int                   # TrialID (KUL) or trial number (cocktail)
    eeg: np.ndarray              # (T, C) float32, band-passed, at fs
    attended: np.ndarray         # (T,) float64
    unattended: np.ndarray       # (T,) float64
    fs: int
    source: str = ""             # the file it came from (for messages)

    @property
    def key(self) -> tuple[str, int]:
        return (self.subject, self.trial)

    @property
    def name(self) -> str:
        return f"{self.subject} trial {self.trial}"

    @property
    def n_channels(self) -> int:
        return int(self.eeg.shape[1])


@dataclass
class Fold:
    """Training, validation (early stopping of the engine models; pooled into training for ridge) and test trials."""

    train: list
    val: list
    test: list

    @property
    def name(self) -> str:
        return ", ".join(t.name for t in self.test)


def detect_layout(data_dir: Path) -> str:
    """'kul' or 'cocktail' (EEGKitError naming the folder otherwise)."""
    from speaker_extraction.cocktail import is_cocktail_dir

    if not data_dir.is_dir():
        raise EEGKitError(f"{data_dir}: data folder not found (--data)")
    if is_cocktail_dir(data_dir):
        return "cocktail"
    if any(_KUL_RE.fullmatch(p.name) for p in data_dir.glob("S*.mat")):
        return "kul"
    raise EEGKitError(f"{data_dir}: neither the KU Leuven AAD layout (S1.mat, ... + stimuli/) nor the "
                      f"cocktail-party sample (trial_1.mat + F_env.mat) (--data)")


def bandpass_eeg(eeg: np.ndarray, fs: float, band) -> np.ndarray:
    """``speaker_extraction.data.bandpass_eeg`` (zero-phase Butterworth order 4), imported lazily."""
    from speaker_extraction.data import bandpass_eeg as _bandpass

    return _bandpass(eeg, fs, band)


def pearson_np(pred, target):
    """``util.metrics.pearson_np`` (the kit's one Pearson), imported lazily."""
    from util.metrics import pearson_np as _pearson

    return _pearson(pred, target)


def _filter_envelope(envelope: np.ndarray, fs: int, band) -> np.ndarray:
    return bandpass_eeg(envelope[:, None], fs, band)[:, 0].astype(np.float64)  # (T,)


def _to_working_rate(eeg: np.ndarray, fs_eeg: float, envelopes: Sequence[np.ndarray], fs_env: float, fs: int,
                     band, names: Sequence[str], max_mismatch_s: float = 1.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Band-pass EEG at its rate, resample EEG and envelopes to ``fs``, filter the envelopes, cut to a common length."""
    eeg = bandpass_eeg(eeg, fs_eeg, band)  # (T_in, C)
    eeg = np.asarray(resample(eeg, fs_eeg, fs), dtype=np.float32)  # (T, C)
    out = [_filter_envelope(np.asarray(resample(np.asarray(e, np.float64), fs_env, fs), np.float64), fs, band)
           for e in envelopes]
    for name, envelope in zip(names[1:], out):
        if len(envelope) < len(eeg) - max_mismatch_s * fs:
            raise EEGKitError(f"{name}: stimulus envelope ({len(envelope) / fs:.2f} s) is shorter than the EEG of "
                              f"{names[0]} ({len(eeg) / fs:.2f} s)")
    n = min([len(eeg)] + [len(e) for e in out])
    return np.ascontiguousarray(eeg[:n]), [e[:n] for e in out]


def _read_kul(data_dir: Path, fs: int, band, include_repetitions: bool, progress: bool) -> list[Trial]:
    from speaker_extraction.data import _dry_pair  # the NeuroSpex loader's attended/competing pairing, reused
    from speaker_extraction.kul_format import read_subject_mat

    files = sorted((int(m[1]), p) for p in data_dir.glob("S*.mat") if (m := _KUL_RE.fullmatch(p.name)))
    stimuli_dir = data_dir / "stimuli"
    envelopes: dict[str, tuple[np.ndarray, int]] = {}  # wav name -> (gammatone envelope (T,), 64 Hz)
    trials = []
    for number, path in tqdm(files, desc="reading subjects", disable=not progress, leave=False):
        for raw in read_subject_mat(path):
            if raw.repetition and not include_repetitions:
                continue
            wav_names = _dry_pair(raw.stimuli, raw.part, raw.attended_track)  # (attended, competing)
            pair = []
            for wav_name in wav_names:
                if wav_name not in envelopes:
                    wav_path = stimuli_dir / wav_name
                    if not wav_path.is_file():
                        raise EEGKitError(f"{wav_path}: stimulus file not found (needed by {path.name} trial "
                                          f"{raw.trial_id})")
                    audio, fs_audio = load_audio(wav_path, np.float64)  # (samples,)
                    envelopes[wav_name] = (gammatone_envelope(audio, fs_audio)[:, 0].astype(np.float64), FS_TASK2)
                pair.append(envelopes[wav_name][0])
            eeg = np.asarray(raw.eeg, dtype=np.float64)
            if not np.isfinite(eeg).all():
                raise EEGKitError(f"{path}: trial {raw.trial_id}: EEG contains NaN or Inf")
            eeg, (attended, unattended) = _to_working_rate(
                eeg, raw.fs, pair, FS_TASK2, fs, band,
                [f"{path} trial {raw.trial_id}"] + [str(stimuli_dir / w) for w in wav_names])
            trials.append(Trial(f"S{number}", int(raw.trial_id), eeg, attended, unattended, fs, f"{path}"))
    if not trials:
        raise EEGKitError(f"{data_dir}: no (non-repetition) trials in the subject files")
    return trials


def _read_cocktail_trials(data_dir: Path, fs: int, band) -> list[Trial]:
    from speaker_extraction.cocktail import read_cocktail

    trials = []
    for raw in read_cocktail(data_dir):
        eeg, (attended, unattended) = _to_working_rate(
            raw.eeg, raw.fs, [raw.attended, raw.unattended], raw.fs, fs, band,
            [raw.eeg_file, f"{data_dir / raw.attended_ref}", f"{data_dir / raw.unattended_ref}"])
        trials.append(Trial("cocktail", raw.trial, eeg, attended, unattended, fs, raw.eeg_file))
    return trials


def load_trials(data_dir, fs: int = FS_TASK2, band=DEFAULT_BAND, include_repetitions: bool = False,
                progress: bool = False) -> tuple[str, list[Trial]]:
    """(layout, trials at the working rate) of a KUL-layout or cocktail-sample folder."""
    data_dir = Path(data_dir)
    layout = detect_layout(data_dir)
    native = 128  # both layouts record at 128 Hz (KUL: checked per trial below)
    if fs > native:
        raise EEGKitError(f"--fs {fs}: above the {native} Hz rate of the EEG in {data_dir}")
    if layout == "cocktail":
        return layout, _read_cocktail_trials(data_dir, fs, band)
    return layout, _read_kul(data_dir, fs, band, include_repetitions, progress)


# --------------------------------------------------------------------------- folds
def _by_subject(trials: Sequence[Trial]) -> dict[str, list[Trial]]:
    groups: dict[str, list[Trial]] = {}
    for trial in sorted(trials, key=lambda t: (t.subject, t.trial)):
        groups.setdefault(trial.subject, []).append(trial)
    return groups


def loto_folds(trials: Sequence[Trial]) -> list[Fold]:
    """Leave-one-trial-out within each subject; validation = the next trial (cyclically), training = the rest."""
    folds = []
    for subject, group in _by_subject(trials).items():
        if len(group) < 3:
            raise EEGKitError(f"{group[0].source}: {subject} has {len(group)} trial(s); leave-one-trial-out needs "
                              f"at least 3 (2 for training and its inner cross-validation, 1 held out)")
        for i, held_out in enumerate(group):
            val = group[(i + 1) % len(group)]
            folds.append(Fold([t for t in group if t is not held_out and t is not val], [val], [held_out]))
    return folds


def folds_from_run(run, data_dir, trials: Sequence[Trial], progress: bool = False) -> tuple[list[Fold], dict]:
    """Folds on the trial split stored in a NeuroSpex run (per subject for protocol 'trial', one pooled fold else)."""
    from speaker_extraction.data import KULCorpus, make_split
    from speaker_extraction.predict import resolve_checkpoint
    from speaker_extraction.train import resolve_config
    from util.training import load_checkpoint

    checkpoint = resolve_checkpoint(run)
    config = resolve_config(load_checkpoint(checkpoint, task="speaker_extraction")["config"])
    corpus = KULCorpus(data_dir, config["data"], progress=progress)
    split = make_split(corpus)
    index = {t.key: t for t in trials}
    parts: dict[str, list[Trial]] = {}
    for name in ("train", "val", "test"):
        parts[name] = []
        for subject, trial in split[name]:
            key = (f"S{subject}", int(trial))
            if key not in index:
                raise EEGKitError(f"--split-from-run {run}: trial {trial} of S{subject}.mat (its {name} split) is not "
                                  f"among the trials read from {data_dir}")
            parts[name].append(index[key])
    if not parts["test"]:
        raise EEGKitError(f"--split-from-run {run}: the run's split has no test trials")
    protocol = config["data"]["split"]["protocol"]
    if protocol == "trial":
        folds = []
        for subject in sorted({t.subject for t in parts["test"]}):
            pick = {name: [t for t in parts[name] if t.subject == subject] for name in parts}
            folds.append(Fold(pick["train"], pick["val"], pick["test"]))
    else:  # loso: the test subject has no trials of its own in training: one subject-independent fold
        folds = [Fold(parts["train"], parts["val"], parts["test"])]
    info = {"run": str(run), "checkpoint": str(checkpoint), "split": copy.deepcopy(config["data"]["split"]),
            "test_trials": [list(t.key) for t in parts["test"]]}
    return folds, info


# --------------------------------------------------------------------------- ridge
@dataclass(frozen=True)
class Lags:
    """Decoder lags in samples: EEG at t + lo .. t + hi predicts the envelope at t."""

    lo: int
    hi: int

    @property
    def n_taps(self) -> int:
        return self.hi - self.lo + 1

    @classmethod
    def from_ms(cls, lags_ms: Sequence[float], fs: int) -> "Lags":
        lo, hi = (int(round(float(v) * fs / 1000.0)) for v in lags_ms)
        return cls(lo, hi)


def _design(eeg: np.ndarray, lags: Lags) -> np.ndarray:
    """Lagged design ``(T - hi, n_taps * C)`` float64: row t = [eeg[t + lo], ..., eeg[t + hi]]."""
    import torch

    from task2_regression.models.linear import lagged_design

    shifted = torch.from_numpy(np.ascontiguousarray(eeg[lags.lo:], dtype=np.float64))[None]  # (1, T - lo, C)
    return lagged_design(shifted, lags.n_taps)[0].numpy()


@dataclass
class _TrialSums:
    """Raw (un-normalised) sums of one trial: lagged design rows and EEG channels."""

    n: int                       # design rows
    sum_x: np.ndarray            # (D,)
    xtx: np.ndarray              # (D, D)
    sum_y: float
    xty: np.ndarray              # (D,)
    n_eeg: int                   # EEG samples
    ch_sum: np.ndarray           # (C,)
    ch_sumsq: np.ndarray         # (C,)


def _channel_stats(trials: Sequence[Trial]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all samples of the trials' EEG (the training statistics)."""
    n = sum(len(t.eeg) for t in trials)
    total = sum(t.eeg.sum(axis=0, dtype=np.float64) for t in trials)
    total_sq = sum(np.square(t.eeg, dtype=np.float64).sum(axis=0) for t in trials)
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean ** 2, 0.0))
    return mean, np.where(std > 1e-12, std, 1.0)


class _RidgeCV:
    """Per-trial covariance sums and the grid weights of inner training sets (cached by trial set)."""

    def __init__(self, lags: Lags, alphas: Sequence[float]):
        self.lags = lags
        self.alphas = np.asarray(alphas, dtype=np.float64)
        self._sums: dict[tuple, _TrialSums] = {}
        self._weights: dict[frozenset, np.ndarray] = {}

    def sums(self, trial: Trial) -> _TrialSums:
        if trial.key not in self._sums:
            x = _design(trial.eeg, self.lags)  # (T - hi, D)
            y = trial.attended[: len(x)]
            eeg = trial.eeg.astype(np.float64)
            self._sums[trial.key] = _TrialSums(len(x), x.sum(axis=0), x.T @ x, float(y.sum()), x.T @ y, len(eeg),
                                               eeg.sum(axis=0), np.square(eeg).sum(axis=0))
        return self._sums[trial.key]

    def grid_weights(self, trials: Sequence[Trial]) -> np.ndarray:
        """(D, n_alphas) weights on the RAW lagged EEG of ridge fits on the trials z-scored with their statistics.

        Equivalent (up to the intercept, which Pearson ignores) to RidgeDecoder fitted on the z-scored
        trials and solved at each alpha.
        """
        key = frozenset(t.key for t in trials)
        if key not in self._weights:
            parts = [self.sums(t) for t in trials]
            n = sum(p.n for p in parts)
            sum_x = sum(p.sum_x for p in parts)
            sum_y = sum(p.sum_y for p in parts)
            cxx = sum(p.xtx for p in parts) - np.outer(sum_x, sum_x) / n  # centred (D, D)
            cxy = sum(p.xty for p in parts) - sum_x * sum_y / n  # (D,)
            n_eeg = sum(p.n_eeg for p in parts)
            mean = sum(p.ch_sum for p in parts) / n_eeg
            std = np.sqrt(np.maximum(sum(p.ch_sumsq for p in parts) / n_eeg - mean ** 2, 0.0))
            std = np.where(std > 1e-12, std, 1.0)
            scale = np.tile(std, self.lags.n_taps)  # (D,) feature = lag * C + channel
            cxx = cxx / np.outer(scale, scale)  # covariance of the z-scored design
            cxy = cxy / scale
            eigval, eigvec = np.linalg.eigh(cxx)
            eigval = np.maximum(eigval, 0.0)
            mean_eig = float(np.trace(cxx)) / cxx.shape[0]
            projected = eigvec.T @ cxy  # (D,)
            weights = eigvec @ (projected[:, None] / (eigval[:, None] + self.alphas[None, :] * mean_eig))
            self._weights[key] = weights / scale[:, None]  # (D, n_alphas) on the raw design
        return self._weights[key]

    def score(self, weights: np.ndarray, trial: Trial) -> np.ndarray:
        """(n_alphas,) Pearson r of each grid prediction with the trial's attended envelope."""
        x = _design(trial.eeg, self.lags)  # (T', D)
        pred = x @ weights  # (T', n_alphas)
        target = np.repeat(trial.attended[: len(x), None], pred.shape[1], axis=1)
        return pearson_np(pred, target)


def inner_cv_scores(train: Sequence[Trial], lags: Lags, alphas: Sequence[float] = ALPHAS,
                    cv: _RidgeCV | None = None) -> np.ndarray:
    """(n_alphas,) mean Pearson r over the inner leave-one-training-trial-out folds of ``train`` only."""
    if len(train) < 2:
        raise EEGKitError(f"{train[0].source if train else 'ridge'}: the inner cross-validation needs at least 2 "
                          f"training trials, got {len(train)}")
    cv = cv or _RidgeCV(lags, alphas)
    scores = [cv.score(cv.grid_weights([t for t in train if t is not val]), val) for val in train]
    return np.mean(scores, axis=0)


def _predict_ridge(model, eeg_z: np.ndarray, lags: Lags) -> np.ndarray:
    """(T,) reconstruction over the whole trial: the z-scored EEG padded with ``hi`` zeros at the end."""
    import torch

    padded = np.concatenate([eeg_z, np.zeros((lags.hi, eeg_z.shape[1]), eeg_z.dtype)])[lags.lo:]
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None])["envelope"]
    return out[0, :, 0].double().numpy()  # (T,)


def ridge_fold(fold: Fold, lags: Lags, alphas: Sequence[float] = ALPHAS, cv: _RidgeCV | None = None,
               extra: dict | None = None) -> tuple:
    """Fit on the fold's training trials (train + val pooled) and reconstruct its test trials.

    ``extra``: {name: EEG (T, C)} also reconstructed by the fold's model (z-scored with the same
    training statistics as a test trial), returned in ``info["extra"]`` (the controls' EEG).
    Returns ({test trial key: (T,) reconstruction}, info with the chosen alpha and the inner CV scores).
    """
    from task2_regression.models.linear import RidgeDecoder

    cv = cv or _RidgeCV(lags, alphas)
    train = list(fold.train) + list(fold.val)
    scores = inner_cv_scores(train, lags, alphas, cv)
    best = int(np.argmax(scores))
    alpha = float(cv.alphas[best])
    mean, std = _channel_stats(train)
    env = np.concatenate([t.attended for t in train])
    env_mean, env_std = float(env.mean()), float(env.std()) or 1.0
    model = RidgeDecoder({"envelope": 1}, n_channels=train[0].n_channels, n_taps=lags.n_taps, alpha=alpha)
    for trial in train:
        eeg_z = (trial.eeg - mean) / std  # (T, C)
        model.partial_fit(eeg_z[lags.lo:], ((trial.attended - env_mean) / env_std)[: len(eeg_z) - lags.lo, None])
    model.solve(alpha)
    predictions = {t.key: _predict_ridge(model, ((t.eeg - mean) / std).astype(np.float32), lags) for t in fold.test}
    extra_out = {name: _predict_ridge(model, ((eeg - mean) / std).astype(np.float32), lags)
                 for name, eeg in (extra or {}).items()}
    edge = best in (0, len(cv.alphas) - 1)
    return predictions, {"alpha": alpha, "inner_cv_r": float(scores[best]), "alpha_at_grid_edge": edge,
                         "inner_cv_scores": {format(a, "g"): float(s) for a, s in zip(cv.alphas, scores)},
                         "extra": extra_out}


# --------------------------------------------------------------------------- engine models
def engine_config(model_name: str, n_channels: int, train_trials: Sequence[Trial]) -> dict:
    """The model's Task 2 config with the envelope target, the channel count and windows that fit the trials."""
    from util.config import load_config

    config = load_config(CONFIG_DIR / f"{model_name}.yaml")
    config["target"] = "envelope"  # the one override that switches a Task 2 config to the envelope
    config.setdefault("model", {})["n_channels"] = int(n_channels)
    data = config.setdefault("data", {})
    shortest_s = min(len(t.eeg) for t in train_trials) / FS_TASK2
    data["window_s"] = min(float(data.get("window_s", 5.0)), shortest_s)
    data["hop_s"] = min(float(data.get("hop_s", 1.0)), data["window_s"])
    return config


def engine_fold(fold: Fold, model_name: str, work_dir: Path, epochs: int | None = None,
                extra: dict | None = None) -> tuple:
    """Train the engine model on the fold (split_data layout, see the module docstring) and reconstruct its test trials.

    ``extra``: {name: EEG (T, C)} also reconstructed (each z-scored on its own, like a test trial),
    returned in ``info["extra"]``.
    """
    from task2_regression.predict import load_run_model, predict_segments
    from task2_regression.train import train

    if not fold.val:
        raise EEGKitError(f"{fold.name}: the {model_name} model needs a validation trial (early stopping)")
    split_dir = work_dir / "data" / "derivatives" / "split_data"
    for split, trials in (("train", fold.train), ("val", fold.val)):
        for t in trials:
            stem = f"{split}_-_{t.subject}_-_trial{t.trial:03d}"
            atomic_save_npy(split_dir / f"{stem}_-_eeg.npy", t.eeg.astype(np.float32))  # (T, C)
            atomic_save_npy(split_dir / f"{stem}_-_envelope.npy", t.attended.astype(np.float32)[:, None])  # (T, 1)
    n_channels = fold.train[0].n_channels
    config = engine_config(model_name, n_channels, fold.train)
    run_dir = work_dir / "run"
    log_path = work_dir / "train.log"
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no train part.*")
        try:
            result = train(config, work_dir / "data", run_dir, epochs=epochs)
        except Exception:
            log.flush()
            tail = log_path.read_text().splitlines()[-15:]
            sys.__stderr__.write("\n".join(["training log (last lines):"] + tail) + "\n")
            raise
    model, run_config = load_run_model(run_dir)
    predictions = predict_segments(model, run_config.get("target", "envelope"), [t.eeg for t in fold.test])
    out = {t.key: p[:, 0].astype(np.float64) for t, p in zip(fold.test, predictions)}
    names = list(extra or {})
    extra_pred = predict_segments(model, run_config.get("target", "envelope"), [extra[n] for n in names]) if names else []
    best_val = result.get("best_val")
    return out, {"best_val_r": None if best_val is None or not math.isfinite(best_val) else float(best_val),
                 "epochs_run": int(result.get("epochs_run", 0)), "val_trials": [t.name for t in fold.val],
                 "window_s": config["data"]["window_s"],
                 "extra": {n: p[:, 0].astype(np.float64) for n, p in zip(names, extra_pred)}}


# --------------------------------------------------------------------------- decision windows
def window_rows(trial: Trial, reconstruction: np.ndarray, windows: Sequence[float], model: str,
                skipped: set | None = None) -> list[dict]:
    """One row per non-overlapping decision window of each length inside the trial (longer windows skipped)."""
    rows = []
    n = min(len(reconstruction), len(trial.attended))
    for window_s in windows:
        length = int(round(window_s * trial.fs))
        count = n // length
        if count == 0:
            if skipped is not None:
                skipped.add(window_s)
            continue
        cut = slice(0, count * length)
        recon = reconstruction[cut].reshape(count, length, 1)  # (windows, L, 1)
        r_att = pearson_np(recon, trial.attended[cut].reshape(count, length, 1))[:, 0]  # (windows,)
        r_unatt = pearson_np(recon, trial.unattended[cut].reshape(count, length, 1))[:, 0]
        for k in range(count):
            rows.append({"subject": trial.subject, "window_s": format(window_s, "g"), "r_attended": float(r_att[k]),
                         "r_unattended": float(r_unatt[k]), "trial": trial.trial, "model": model,
                         "start_s": k * length / trial.fs})
    return rows


def _csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) and k not in ("window_s", "start_s") else v)
                         for k, v in row.items()})
    return buffer.getvalue()


# --------------------------------------------------------------------------- argument checks
def _pair(text, flag: str, example: str) -> tuple[float, float]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        raise EEGKitError(f"{flag} {text}: expected two numbers LOW,HIGH (e.g. {example})") from None
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise EEGKitError(f"{flag} {text}: expected two numbers LOW,HIGH (e.g. {example})")
    return values


def parse_band(text, fs: int):
    if text is None or (isinstance(text, str) and text.strip().lower() == "none"):
        return None
    low, high = _pair(text, "--band", "1,9")
    if not 0 < low < high:
        raise EEGKitError(f"--band {text}: need 0 < LOW < HIGH Hz")
    if high >= fs / 2:
        raise EEGKitError(f"--band {text}: HIGH must be below half the working rate (--fs {fs}: {fs / 2:g} Hz)")
    return (low, high)


def parse_lags(text, fs: int) -> tuple[tuple[float, float], Lags]:
    lo, hi = _pair(text, "--lags-ms", "0,250")
    if not 0 <= lo <= hi:
        raise EEGKitError(f"--lags-ms {text}: need 0 <= LOW <= HIGH (the EEG follows the stimulus)")
    return (lo, hi), Lags.from_ms((lo, hi), fs)


def _check_out(out: Path, overwrite: bool, inputs=()) -> None:
    from util.outdir import check_out_dir

    if out.exists() and not out.is_dir():
        raise EEGKitError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EEGKitError(f"--out {out}: folder is not empty (pass --overwrite to replace its results)")
    check_out_dir(out, "--out", overwrite=overwrite, inputs=inputs)  # the one rule: never an input, a run, ...


# --------------------------------------------------------------------------- pipeline
def run_aad(data, model: str = "ridge", out=None, windows=DEFAULT_WINDOWS, fs: int = FS_TASK2, band=DEFAULT_BAND,
            lags_ms=None, epochs: int | None = None, split_from_run=None, overwrite: bool = False,
            progress: bool = True, alphas: Sequence[float] = ALPHAS, command: str | None = None,
            say: Callable[[str], None] | None = None, controls: bool = True, n_shifts: int = 100,
            seed: int = 0) -> dict:
    """Run the pipeline (module docstring); returns {"rows", "trials", "report", "out", "layout"}.

    ``controls``: the reconstruction r with the attended and the unattended envelope per held-out
    trial and overall, beside the noise-EEG, circular-shift and mismatched-EEG controls
    (``n_shifts`` shifts, ``seed`` for the noise and the shifts); see `_trial_controls`.

    Every argument is checked and the data read before anything is created under ``out``.
    """
    from evaluation.aad import format_report, load_correlations, score_correlations, write_report

    say = say or (lambda message: print(message, flush=True))
    progress = bool(progress) and sys.stderr.isatty()
    if model not in MODELS:
        raise EEGKitError(f"--model {model}: unknown model (choose from {', '.join(MODELS)})")
    windows = parse_windows(windows)
    fs = int(fs)
    if fs < 8:
        raise EEGKitError(f"--fs {fs}: the working rate must be at least 8 Hz")
    if model in ENGINE_MODELS and fs != FS_TASK2:
        raise EEGKitError(f"--fs {fs}: the {model} model runs at the Task 2 rate {FS_TASK2} Hz")
    if lags_ms is not None and model != "ridge":
        raise EEGKitError(f"--lags-ms: only for --model ridge (the {model} model has its own receptive field)")
    if epochs is not None and model == "ridge":
        raise EEGKitError("--epochs: only for the trained models (linear, vlaai_small); ridge is closed form")
    if epochs is not None and int(epochs) < 1:
        raise EEGKitError(f"--epochs {epochs}: must be >= 1")
    if int(n_shifts) < 1:
        raise EEGKitError(f"--n-shifts {n_shifts}: must be >= 1")
    band = parse_band(band, fs)
    lags_ms, lags = parse_lags(DEFAULT_LAGS_MS if lags_ms is None else lags_ms, fs)
    for window_s in windows:
        if round(window_s * fs) < 2:
            raise EEGKitError(f"--windows: {window_s:g} s is less than 2 samples at --fs {fs}")
    data = Path(data)
    out = Path(out) if out is not None else None
    if out is not None:
        _check_out(out, overwrite, inputs=[data, split_from_run])
    if split_from_run is not None and not Path(split_from_run).exists():
        raise EEGKitError(f"--split-from-run {split_from_run}: run folder not found")

    layout = detect_layout(data)
    if split_from_run is not None and layout != "kul":
        raise EEGKitError(f"--split-from-run: only for the KUL layout (a NeuroSpex run's split names KUL trials), "
                          f"{data} is the cocktail-party sample")
    include_reps = False
    if split_from_run is not None:
        from speaker_extraction.predict import resolve_checkpoint
        from speaker_extraction.train import resolve_config
        from util.training import load_checkpoint

        run_config = resolve_config(load_checkpoint(resolve_checkpoint(split_from_run), task="speaker_extraction")["config"])
        include_reps = bool(run_config["data"].get("include_repetitions", False))
    _, trials = load_trials(data, fs, band, include_reps, progress)
    if model == "ridge" and lags.hi >= min(len(t.eeg) for t in trials) // 2:
        raise EEGKitError(f"--lags-ms {lags_ms[0]:g},{lags_ms[1]:g}: the largest lag is too long for trials of "
                          f"{min(len(t.eeg) for t in trials) / fs:.1f} s")
    if split_from_run is not None:
        folds, split_info = folds_from_run(split_from_run, data, trials, progress)
        evaluation = f"held-out trials of run {split_from_run}"
    else:
        folds, split_info = loto_folds(trials), None
        evaluation = "leave-one-trial-out within each subject"
    n_channels = {t.n_channels for t in trials}
    say(f"{data}: {layout} layout, {len(trials)} trials of {len({t.subject for t in trials})} subject(s), "
        f"{trials[0].n_channels} EEG channels at {fs} Hz (band {'none' if band is None else f'{band[0]:g}-{band[1]:g} Hz'}); "
        f"{model}, {evaluation}, {len(folds)} fold(s)")
    if len(n_channels) != 1:
        raise EEGKitError(f"{data}: trials have different channel counts {sorted(n_channels)}")

    created = out is not None and not out.exists()
    work_root = None
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        cv = _RidgeCV(lags, alphas) if model == "ridge" else None
        rows: list[dict] = []
        trial_rows: list[dict] = []
        skipped: set = set()
        bar = tqdm(folds, desc=f"{model} folds", unit="fold", disable=not progress)
        donors = _mismatched_donors(trials)
        trial_controls: dict = {}
        for index, fold in enumerate(bar):
            extra = _control_eeg(fold, donors, seed) if controls else {}
            if model == "ridge":
                predictions, info = ridge_fold(fold, lags, alphas, cv, extra=extra)
            else:
                if out is None:
                    raise EEGKitError(f"--out: the {model} model needs an output folder for its fold training")
                work_root = out / TMP_NAME
                work_dir = work_root / f"fold{index:03d}"
                if work_dir.exists():
                    shutil.rmtree(work_dir)
                predictions, info = engine_fold(fold, model, work_dir, epochs, extra=extra)
                shutil.rmtree(work_dir)
            for trial in fold.test:
                recon = predictions[trial.key]
                r_att = float(pearson_np(recon, trial.attended))
                r_unatt = float(pearson_np(recon, trial.unattended))
                if controls:
                    trial_controls[trial.name] = _trial_controls(trial, recon, info["extra"], donors, n_shifts, seed,
                                                                 r_att, r_unatt)
                trial_rows.append({"subject": trial.subject, "trial": trial.trial, "model": model,
                                   "duration_s": len(trial.attended) / fs, "r_attended": r_att,
                                   "r_unattended": r_unatt, "correct": int(r_att > r_unatt),
                                   "alpha": info.get("alpha", ""), "inner_cv_r": info.get("inner_cv_r", ""),
                                   "best_val_r": info.get("best_val_r", ""), "epochs_run": info.get("epochs_run", ""),
                                   "train_trials": " ".join(str(t.trial) for t in list(fold.train) + list(fold.val)
                                                            if t.subject == trial.subject)})
                rows += window_rows(trial, recon, windows, model, skipped)
                if model == "ridge":
                    detail = (f"lambda {info['alpha']:g} x mean eigenvalue (inner CV r {info['inner_cv_r']:.3f}"
                              f"{', at the grid edge' if info['alpha_at_grid_edge'] else ''})")
                else:
                    best = info["best_val_r"]
                    detail = (f"{info['epochs_run']} epoch(s), best val r "
                              f"{'n/a' if best is None else f'{best:.3f}'} on {', '.join(info['val_trials'])}")
                line = f"{trial.name}: r(attended) {r_att:+.3f}  r(unattended) {r_unatt:+.3f}  {detail}"
                if controls:
                    block = trial_controls[trial.name]
                    shift = block["controls"]["circular_shift"]
                    line += (f"\n  controls: noise EEG {_fmt_r(block['controls']['noise_eeg']['score'])}  "
                             f"circular shift mean {_fmt_r(shift and shift['mean'])} p95 {_fmt_r(shift and shift['p95'])}"
                             f" p {_fmt_r(shift and shift['p_value'], '{:.3f}')}  mismatched EEG "
                             f"{_fmt_r(block['controls']['mismatched_eeg']['score'])}")
                if bar.disable:
                    say(line)
                else:
                    bar.write(line)
        if skipped:
            shortest = min(len(t.attended) for f in folds for t in f.test) / fs
            say(f"windows {', '.join(format(w, 'g') for w in sorted(skipped))} s are longer than some held-out "
                f"trials (shortest {shortest:.1f} s): skipped there")
        if not rows:
            raise EEGKitError(f"--windows: every window is longer than every held-out trial of {data}")

        csv_text = _csv_text(rows, CSV_COLUMNS)
        if out is None:
            tmp_csv = None
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                tmp_csv = Path(tmp) / "correlations.csv"
                tmp_csv.write_text(csv_text)
                report = score_correlations(load_correlations(tmp_csv))
        else:
            atomic_write_text(out / "correlations.csv", csv_text)
            report = score_correlations(load_correlations(out / "correlations.csv"))
        if controls:
            report.update(_overall_controls(trial_controls, n_shifts, report.get("warnings", [])))
        report["pipeline"] = {
            "model": model, "data": str(data), "layout": layout, "fs": fs,
            "band_hz": None if band is None else list(band), "evaluation": evaluation,
            "lags_ms": list(lags_ms) if model == "ridge" else None,
            "lags_samples": [lags.lo, lags.hi] if model == "ridge" else None,
            "alphas": [float(a) for a in alphas] if model == "ridge" else None,
            "epochs": epochs, "split_from_run": split_info, "windows_s": [format(w, "g") for w in windows],
            "skipped_windows_s": [format(w, "g") for w in sorted(skipped)], "trials": trial_rows,
        }
        say(format_report(report))
        if controls:
            say(format_reconstruction(report))
        if out is not None:
            atomic_write_text(out / "trials.csv", _csv_text(trial_rows, list(trial_rows[0])))
            write_report(report, out / "report.json", plot=out / "report.png")
            atomic_write_text(out / "COMMAND.txt", (command or f"run_aad(data={str(data)!r}, model={model!r})") + "\n")
            say(f"wrote {out / 'correlations.csv'}, trials.csv, report.json, report.png, COMMAND.txt")
        return {"rows": rows, "trials": trial_rows, "report": report, "out": None if out is None else str(out),
                "layout": layout}
    except BaseException:
        if created and out is not None and out.exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if work_root is not None and work_root.exists():
            shutil.rmtree(work_root, ignore_errors=True)


# --------------------------------------------------------------------------- controls
def _mismatched_donors(trials: Sequence[Trial]) -> dict:
    """{trial key: the Trial whose EEG is its mismatched control}: another trial of the same subject
    (the next one, cyclically: another stimulus in both layouts), or None for a subject's only trial."""
    from evaluation.controls import mismatched_pairs

    ordered = sorted(trials, key=lambda t: (t.subject, t.trial))
    pairs = mismatched_pairs([(t.subject, t.trial) for t in ordered])
    return {t.key: (None if j is None else ordered[j]) for t, j in zip(ordered, pairs)}


def _control_eeg(fold: Fold, donors: dict, seed: int) -> dict:
    """The controls' EEG of the fold's test trials: {"noise|S|trial": Gaussian EEG with the trial's
    per-channel mean and std, "mismatched|S|trial": the donor trial's EEG}."""
    from evaluation.controls import noise_eeg

    extra = {}
    for trial in fold.test:
        rng = np.random.default_rng([int(seed), int(trial.trial), sum(map(ord, trial.subject))])
        extra[f"noise|{trial.subject}|{trial.trial}"] = noise_eeg(trial.eeg, rng)
        donor = donors.get(trial.key)
        if donor is not None:
            extra[f"mismatched|{trial.subject}|{trial.trial}"] = donor.eeg
    return extra


def _trial_controls(trial: Trial, recon: np.ndarray, extra_pred: dict, donors: dict, n_shifts: int, seed: int,
                    r_att: float, r_unatt: float) -> dict:
    """r with both envelopes and the controls of one held-out trial (the block of `evaluation.controls`).

    The controls are on r(attended): noise EEG (the fold's model on Gaussian EEG), circular shift
    (the reconstruction against the attended envelope shifted by >= 2 s), mismatched EEG (the
    reconstruction from another trial's EEG against this trial's attended envelope, cut to the
    shorter of the two). ``_null`` keeps the null draws for the overall null (not for JSON).
    """
    from evaluation.controls import circular_shift_null, control_report

    noise = extra_pred.get(f"noise|{trial.subject}|{trial.trial}")
    mismatched = extra_pred.get(f"mismatched|{trial.subject}|{trial.trial}")
    noise_r = None if noise is None else float(pearson_np(noise, trial.attended))
    mismatched_r = None
    if mismatched is not None:
        n = min(len(mismatched), len(trial.attended))
        mismatched_r = float(pearson_np(mismatched[:n], trial.attended[:n]))
    n = min(len(recon), len(trial.attended))
    rng = np.random.default_rng([int(seed), 1, int(trial.trial), sum(map(ord, trial.subject))])
    try:
        null = circular_shift_null(recon[:n], trial.attended[:n], trial.fs, n_shifts=n_shifts, rng=rng,
                                   observed=r_att)
    except ValueError:  # shorter than two 2-s shifts
        null = None
    block = control_report(r_att, noise_r, null, mismatched_r)
    donor = donors.get(trial.key)
    return {"r_attended": r_att, "r_unattended": r_unatt, **block,
            "mismatched_trial": None if donor is None else donor.name, "_null": null}


def _overall_controls(trial_controls: dict, n_shifts: int, warnings: Sequence[str]) -> dict:
    """Mean r(attended) / r(unattended) over the held-out trials with the controls of the mean.

    The overall null's draw k is the mean of the trials' draws k (`evaluation.controls.combine_nulls`);
    significance per trial is Holm-corrected across the trials.
    """
    from evaluation.controls import combine_nulls, control_report, significance_block

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    blocks = list(trial_controls.values())
    r_att = mean([b["r_attended"] for b in blocks])
    nulls = [b["_null"] for b in blocks if b["_null"] is not None]
    overall = control_report(r_att, mean([b["controls"]["noise_eeg"]["score"] for b in blocks]),
                             combine_nulls(nulls, r_att) if nulls else None,
                             mean([b["controls"]["mismatched_eeg"]["score"] for b in blocks]))
    significance = significance_block({name: (b["_null"] or {}).get("p_value")
                                       for name, b in trial_controls.items()}, n_shifts)
    significance["unit"] = "held-out trial"
    per_trial = {name: {k: v for k, v in b.items() if k != "_null"} for name, b in trial_controls.items()}
    for name, block in per_trial.items():
        overall["warnings"] += [f"{name}: {w}" for w in block["warnings"]]
    overall["warnings"] += significance.pop("warnings")
    reconstruction = {"r_attended": r_att, "r_unattended": mean([b["r_unattended"] for b in blocks]),
                      "n_trials": len(blocks), **overall, "per_trial": per_trial, "significance": significance,
                      "n_shifts": int(n_shifts)}
    return {"reconstruction": reconstruction, "controls": overall["controls"],
            "score_above_noise": overall["score_above_noise"],
            "warnings": list(warnings) + [w for w in overall["warnings"] if w not in warnings]}


def _fmt_r(value, fmt: str = "{:+.3f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def format_reconstruction(report: dict) -> str:
    """The printout of the reconstruction r per trial and overall, with the three controls."""
    rec = report["reconstruction"]
    lines = ["envelope reconstruction (r over each whole held-out trial; controls on r(attended)):",
             f"{'trial':<22}{'r att':>8}{'r unatt':>9}{'noise EEG':>11}{'shift mean':>12}{'shift p95':>11}"
             f"{'p':>7}{'mismatched':>12}"]
    rows = list(rec["per_trial"].items()) + [("mean over trials", rec)]
    for name, block in rows:
        shift = block["controls"]["circular_shift"] or {}
        lines.append(f"{name:<22}{_fmt_r(block['r_attended']):>8}{_fmt_r(block['r_unattended']):>9}"
                     f"{_fmt_r(block['controls']['noise_eeg']['score']):>11}{_fmt_r(shift.get('mean')):>12}"
                     f"{_fmt_r(shift.get('p95')):>11}{_fmt_r(shift.get('p_value'), '{:.3f}'):>7}"
                     f"{_fmt_r(block['controls']['mismatched_eeg']['score']):>12}")
    sig = rec["significance"]
    lines.append(f"r(attended) above its circular-shift null (p < {sig['alpha']:g}, {sig['correction']} over "
                 f"{sig['n_subjects']} trials, {rec['n_shifts']} shifts): {', '.join(sig['significant']) or 'none'}")
    lines.append(f"score above noise: {_fmt_r(rec['score_above_noise'])}")
    lines += [f"WARNING: {w}" for w in rec["warnings"]]
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line EEGKitErrors (exit 2 through run_cli)."""

    def error(self, message: str):
        raise EEGKitError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m speaker_extraction.experiments.aad",
                     description="Stimulus-reconstruction auditory attention decoding: reconstruct the attended "
                                 "envelope from EEG, correlate it with both talkers' envelopes in decision windows, "
                                 "and score accuracy per window length and the MESD (evaluation.aad).")
    parser.add_argument("--data", required=True,
                        help="KU Leuven AAD folder (S1.mat ... + stimuli/*.wav; also the synthetic KUL data) or the "
                             "cocktail-party sample (trial_1.mat + F_env.mat); the layout is detected")
    parser.add_argument("--model", required=True, choices=MODELS,
                        help="ridge: closed-form backward decoder, lambda by inner cross-validation on the training "
                             "trials; linear / vlaai_small: the Task 2 envelope models trained by the kit's engine "
                             "(task2_regression.train) on the attended envelope")
    parser.add_argument("--out", required=True,
                        help="output folder for correlations.csv, trials.csv, report.json, report.png, COMMAND.txt "
                             "(must be empty or new unless --overwrite)")
    parser.add_argument("--windows", default=",".join(format(w, "g") for w in DEFAULT_WINDOWS),
                        help="decision-window lengths in seconds, comma-separated (default 1,2,5,10,20,30,60); "
                             "windows are cut without overlap inside each held-out trial")
    parser.add_argument("--fs", type=int, default=FS_TASK2,
                        help=f"working rate in Hz for EEG and envelopes (default {FS_TASK2}, the rate of the kit's "
                             f"envelope and of the Task 2 models, which need it)")
    parser.add_argument("--band", default=",".join(format(b, "g") for b in DEFAULT_BAND),
                        help="band-pass LOW,HIGH in Hz applied to the EEG (at its own rate) and the envelopes (at "
                             "--fs), zero-phase Butterworth order 4; 'none' to skip (default 1,9)")
    parser.add_argument("--lags-ms", default=None,
                        help="ridge only: decoder lags LOW,HIGH in ms, EEG at t+LOW..t+HIGH predicts the envelope "
                             "at t (default 0,250)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="linear / vlaai_small only: override train.epochs of the model config")
    parser.add_argument("--split-from-run", default=None, metavar="RUN",
                        help="a NeuroSpex run folder (speaker_extraction/train.py): use the trial split stored in its "
                             "checkpoint (train on its train+val trials, test on its test trials) instead of "
                             "leave-one-trial-out; KUL layout only")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out folder (files are replaced)")
    parser.add_argument("--no-controls", action="store_true",
                        help="leave out the controls of r(attended): noise EEG, circular shift, mismatched EEG "
                             "(another trial's EEG); on by default")
    parser.add_argument("--n-shifts", type=int_arg(1, 100000), default=100,
                        help="circular shifts (>= 2 s) of the null per held-out trial (default 100)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise EEG and the shifts (default 0)")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars (they are also hidden when stderr is not a terminal)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    run_aad(args.data, args.model, args.out, windows=args.windows, fs=args.fs, band=args.band,
            lags_ms=args.lags_ms, epochs=args.epochs, split_from_run=args.split_from_run, overwrite=args.overwrite,
            progress=not args.no_progress, command="python -m speaker_extraction.experiments.aad " + shlex.join(argv),
            controls=not args.no_controls, n_shifts=args.n_shifts, seed=args.seed)
    return 0


if __name__ == "__main__":
    run_cli(main)
