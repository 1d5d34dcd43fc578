"""Extract the attended talker from a mixture wav of any length using the listener's EEG.

    python -m speaker_extraction.predict --run RUN --mixture MIX.wav --eeg EEG.npy --out OUT.wav
    python -m speaker_extraction.predict --run RUN --arrays IN.npz --out OUT.npz

- RUN is a training run folder (``best.pt`` inside, else ``last.pt``) or a
  checkpoint file; the checkpoint holds the model and data config.
- Every rate, window and preprocessing setting comes from the checkpoint's
  (fully resolved) config: ``data.fs_audio`` (8 kHz by default), ``data.fs_eeg``
  (128 Hz), ``data.window_s``, ``data.band``, ``data.normalize``, ``data.channels``.
- MIX.wav: any sampling rate, mono or multi-channel (averaged to mono),
  resampled to ``data.fs_audio``.
- EEG.npy: ``(time, channels)`` at ``data.fs_eeg``, raw (before the kit's EEG
  preprocessing); it must cover the same span as the audio (within
  ``--max-mismatch-s``); the small difference is cut or edge-padded.
- The model runs on windows of ``data.window_s`` (the training window) with a 50 % hop; the
  per-window estimates are cross-faded with strictly positive Hann weights and
  normalised by the summed weights (overlap-add). The end is zero-padded to a
  whole window and trimmed again, so the output has exactly the input length.
- The mixture is brought to the training level before the model; each
  window's estimate is then given the level of one of the two talkers in that
  window's mixture (RMS / sqrt 2; the sign that correlates with the mixture),
  because the scale-invariant SI-SDR loss leaves the output scale free. The
  output is limited to [-1, 1].
- OUT.wav is written atomically at ``data.fs_audio``, float32 or 16-bit PCM (``--pcm16``).

Array mode (``--arrays IN.npz``), for preprocessed arrays and checks against other code: IN.npz holds
``mixture`` (batch, samples) and ``eeg`` (batch, time, channels), given to the model as they are (no
preprocessing, resampling, windowing, level change or rescaling; cast to float32), ``--batch-size`` rows
per call; OUT.npz (atomic) holds ``estimate`` (batch, samples), the model's output as it is. A missing
key, wrong ranks, a batch mismatch, a wrong channel count, NaN/Inf, an object array or a shape the model
refuses (``neurospex_published``: 4-s windows only) is one line naming IN.npz, and nothing is written.

Library API: `load_run(run) -> (model, config)`, `read_mixture_wav(path)`,
`read_eeg_npy(path, n_channels)`, `match_eeg_length(eeg, n_audio, path, max_mismatch_s)`,
`extract_long(model, mixture, eeg, config)`, `write_wav(path, audio, fs, pcm16)`,
`read_arrays(path, n_channels)`, `predict_arrays(model, mixture, eeg, where, batch_size, device)`.
"""
from __future__ import annotations
if not __package__:  # run by path (python speaker_extraction/predict.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import io
from math import gcd
from pathlib import Path
from typing import Sequence


import numpy as np
import scipy.io.wavfile
import torch
from scipy.signal import resample_poly

from util.atomic import atomic_write_bytes
from util.errors import EEGKitError, run_cli

RAW_EEG_CHANNELS = 64  # BioSemi-64, before any channel selection of the run config


def resolve_checkpoint(run: str | Path) -> Path:
    """A run folder (best.pt, else last.pt) or a checkpoint file -> the checkpoint path."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise EEGKitError(f"{run}: run folder or checkpoint not found")
    for name in ("best.pt", "last.pt"):
        if (run / name).is_file():
            return run / name
    raise EEGKitError(f"{run}: no best.pt or last.pt in this run folder")


def load_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Build the model from the checkpoint's config and load its weights (eval mode)."""
    from speaker_extraction.models import build_model
    from util.trainer import restore_model
    from util.training import load_checkpoint

    path = resolve_checkpoint(run)
    state = load_checkpoint(path, map_location=device, task="speaker_extraction")
    from speaker_extraction.train import resolve_config
    from util.config import stored_config

    config = stored_config(path, state["config"], resolve_config)  # the schema of train.py, keys since added filled in
    if "model" not in config:
        raise EEGKitError(f"{path}: checkpoint config has no model section")
    model = restore_model(build_model(config["model"]), state, path, config.get("train", {}).get("precision", "fp32"))
    return model.to(device), config


def read_mixture_wav(path: str | Path, fs_out: int) -> np.ndarray:
    """Read a wav (any rate, int or float, any channels) as float32 mono at ``fs_out``: (samples,)."""
    from util.features import load_audio

    path = Path(path)
    if not path.exists():  # a FIFO or a device is refused by load_audio (util.inputs.open_regular), never read
        raise EEGKitError(f"{path}: mixture wav not found")
    audio, fs_in = load_audio(path, np.float64, channels="mean")  # (samples,): channels averaged, finite, not silent
    if fs_in != fs_out:
        divisor = gcd(int(fs_in), int(fs_out))
        audio = resample_poly(audio, fs_out // divisor, int(fs_in) // divisor)
    return audio.astype(np.float32)


def read_eeg_npy(path: str | Path, n_channels: int) -> np.ndarray:
    """Read raw EEG (time, channels) float32; errors for wrong shape, channel count or NaN/Inf."""
    from util.npy import load_npy

    path = Path(path)
    if not path.exists():
        raise EEGKitError(f"{path}: EEG file not found")
    eeg = load_npy(path)  # a regular file under the array cap, no pickle, the header's shape checked first
    from util.inputs import check_array

    check_array(eeg, str(path), ndim=2, columns=n_channels, min_rows=2, refuse_constant=True, what="EEG",
                shape_hint=f"(time, {n_channels}) (the model expects {n_channels} channels)")
    return eeg.astype(np.float32)


def match_eeg_length(eeg: np.ndarray, n_audio: int, path: str | Path, max_mismatch_s: float,
                     audio_fs: int, eeg_fs: int) -> np.ndarray:
    """Cut or edge-pad the EEG to the audio's span; error when they differ by more than ``max_mismatch_s``."""
    n_eeg = int(round(n_audio * eeg_fs / audio_fs))
    difference_s = (eeg.shape[0] - n_eeg) / eeg_fs
    if abs(difference_s) > max_mismatch_s:
        relation = "longer" if difference_s > 0 else "shorter"
        raise EEGKitError(
            f"{path}: EEG ({eeg.shape[0] / eeg_fs:.2f} s at {eeg_fs} Hz) is {abs(difference_s):.2f} s {relation} "
            f"than the mixture ({n_audio / audio_fs:.2f} s); allowed mismatch {max_mismatch_s} s"
        )
    if eeg.shape[0] >= n_eeg:
        return eeg[:n_eeg]
    return np.pad(eeg, ((0, n_eeg - eeg.shape[0]), (0, 0)), mode="edge")


def preprocess_eeg(eeg: np.ndarray, config: dict) -> np.ndarray:
    """The training EEG preprocessing: band-pass, per-channel z-score over the recording, channel subset.

    ``eeg`` (time, 64) raw -> (time, C) float32, using `speaker_extraction.data`'s
    `bandpass_eeg` and `zscore_per_channel` with the run's data config.
    """
    from speaker_extraction.data import bandpass_eeg, zscore_per_channel
    from speaker_extraction.kul_format import BIOSEMI64

    data_cfg = config["data"]  # checkpoints store the resolved config
    eeg = bandpass_eeg(eeg, data_cfg["fs_eeg"], data_cfg["band"], int(data_cfg["filter_order"]))  # (time, 64)
    if data_cfg["normalize"] == "trial":
        eeg = zscore_per_channel(eeg)
    channels = data_cfg["channels"]
    if channels is not None:
        lookup = {name.lower(): index for index, name in enumerate(BIOSEMI64)}
        index = [int(c) if isinstance(c, (int, np.integer)) else lookup[str(c).lower()] for c in channels]
        eeg = eeg[:, index]
    return np.ascontiguousarray(eeg, dtype=np.float32)


def crossfade_weights(length: int) -> np.ndarray:
    """Strictly positive Hann weights (length,): zero-free so single-window edges stay defined."""
    return np.hanning(length + 2)[1:-1].astype(np.float64)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Window starts covering [0, n_samples): 0, hop, 2 hop, ... until a window reaches the end."""
    starts = [0]
    while starts[-1] + window < n_samples:
        starts.append(starts[-1] + hop)
    return starts


@torch.no_grad()
def extract_long(model: torch.nn.Module, mixture: np.ndarray, eeg: np.ndarray, config: dict,
                 batch_size: int = 4, hop_fraction: float = 0.5, progress: bool = False,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """Run the model over a long mixture (samples,) with preprocessed EEG (time, C); returns (samples,).

    ``eeg`` must already span the mixture (``round(samples * fs_eeg / fs_audio)`` rows). Rates, window
    and level come from ``config['data']`` (the checkpoint's resolved config).
    """
    from tqdm import tqdm

    fs_audio, fs_eeg = int(config["data"]["fs_audio"]), int(config["data"]["fs_eeg"])
    window_s = float(config["data"]["window_s"])
    audio_window = int(round(window_s * fs_audio))
    eeg_window = int(round(window_s * fs_eeg))
    hop_s = window_s * hop_fraction
    # e.g. 8000 / 128 = 62.5 audio samples per EEG sample: an even EEG hop keeps both hops whole numbers.
    hop_eeg = max(2, int(round(hop_s * fs_eeg)))
    hop_eeg += hop_eeg % 2
    hop_audio = hop_eeg * fs_audio // fs_eeg
    n_samples = mixture.shape[0]
    starts = window_starts(n_samples, audio_window, hop_audio)
    padded_audio = starts[-1] + audio_window
    # The model saw mixtures of two talkers at level_rms each: bring the input to that level.
    mixture_rms = float(np.sqrt(np.mean(np.square(mixture, dtype=np.float64)))) if n_samples else 0.0
    training_rms = float(config["data"]["level_rms"]) * np.sqrt(2.0)
    gain = training_rms / mixture_rms if mixture_rms > 1e-12 else 1.0
    mixture_padded = np.zeros(padded_audio, dtype=np.float32)  # (padded,)
    mixture_padded[:n_samples] = mixture * gain
    padded_eeg = starts[-1] * fs_eeg // fs_audio + eeg_window
    eeg_padded = np.zeros((max(padded_eeg, eeg.shape[0]), eeg.shape[1]), dtype=np.float32)  # (time, C)
    eeg_padded[: eeg.shape[0]] = eeg
    if eeg.shape[0] < padded_eeg and eeg.shape[0] > 0:
        eeg_padded[eeg.shape[0]:] = eeg[-1]
    weights = crossfade_weights(audio_window)  # (window,)
    output = np.zeros(padded_audio, dtype=np.float64)
    weight_sum = np.zeros(padded_audio, dtype=np.float64)
    batches = [starts[i:i + batch_size] for i in range(0, len(starts), batch_size)]
    for batch_starts in tqdm(batches, desc="extract", unit="batch", disable=not progress):
        mixture_batch = np.stack([mixture_padded[s:s + audio_window] for s in batch_starts])  # (batch, window)
        eeg_batch = np.stack(
            [eeg_padded[s * fs_eeg // fs_audio: s * fs_eeg // fs_audio + eeg_window] for s in batch_starts]
        )  # (batch, eeg_window, C)
        estimate = model(torch.from_numpy(mixture_batch).to(device), torch.from_numpy(eeg_batch).to(device))
        estimate = estimate.detach().cpu().numpy().astype(np.float64)  # (batch, window)
        for row, start in enumerate(batch_starts):
            segment = rescale_to_mixture(estimate[row], mixture_batch[row].astype(np.float64))
            output[start:start + audio_window] += weights * segment
            weight_sum[start:start + audio_window] += weights
    result = output[:n_samples] / weight_sum[:n_samples] / gain  # back to the input's level
    return result.astype(np.float32)


def rescale_to_mixture(estimate: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """Give ``estimate`` the level of one of two equal talkers in ``mixture`` (RMS / sqrt 2).

    The sign is chosen so that the estimate correlates positively with the
    mixture (SI-SDR training leaves both scale and sign free).
    """
    estimate_rms = float(np.sqrt(np.mean(np.square(estimate))))
    if estimate_rms <= 1e-12:
        return estimate
    talker_rms = float(np.sqrt(np.mean(np.square(mixture)))) / np.sqrt(2.0)
    sign = -1.0 if float(np.dot(estimate, mixture)) < 0 else 1.0
    return estimate * (sign * talker_rms / estimate_rms)


def read_arrays(path: str | Path, n_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Array mode's input: ``mixture`` (batch, samples) and ``eeg`` (batch, time, n_channels), float32, checked."""
    from util.inputs import NpzReader, check_array

    path = Path(path)
    if not path.exists():  # a FIFO or a device: NpzReader's one line (util.inputs.open_regular), never read
        raise EEGKitError(f"{path}: arrays file not found")
    with NpzReader(path) as reader:
        mixture, eeg = reader["mixture"], reader["eeg"]
    check_array(mixture, f"{path}: entry 'mixture'", ndim=2, what="mixture", shape_hint="(batch, samples)")
    check_array(eeg, f"{path}: entry 'eeg'", ndim=3, what="EEG", shape_hint="(batch, time, channels)")
    if eeg.shape[0] != mixture.shape[0]:
        raise EEGKitError(f"{path}: 'mixture' has {mixture.shape[0]} rows (batch) but 'eeg' has {eeg.shape[0]}; "
                          f"one EEG per mixture")
    if eeg.shape[2] != n_channels:
        raise EEGKitError(f"{path}: entry 'eeg' must be (batch, time, {n_channels}) for this run, found "
                          f"{eeg.shape[2]} channels (shape {eeg.shape})")
    return mixture.astype(np.float32), eeg.astype(np.float32)


@torch.no_grad()
def predict_arrays(model: torch.nn.Module, mixture: np.ndarray, eeg: np.ndarray, where: str | Path,
                   batch_size: int = 4, device: str | torch.device = "cpu") -> np.ndarray:
    """The model on ``mixture`` (batch, samples) and ``eeg`` (batch, time, C) as they are -> estimate (batch, samples)."""
    parts = []
    for begin in range(0, mixture.shape[0], batch_size):
        rows = slice(begin, begin + batch_size)
        try:
            estimate = model(torch.from_numpy(mixture[rows]).to(device), torch.from_numpy(eeg[rows]).to(device))
        except EEGKitError as error:
            raise EEGKitError(f"{where}: {error}") from None
        except (ValueError, RuntimeError) as error:
            raise EEGKitError(f"{where}: the model refused these arrays ({str(error).splitlines()[0]})") from None
        parts.append(estimate.detach().float().cpu().numpy())  # (rows, samples)
    estimate = np.concatenate(parts)
    if not np.isfinite(estimate).all():
        raise EEGKitError(f"{where}: the model's estimate contains NaN/Inf; nothing written")
    return estimate


def write_wav(path: str | Path, audio: np.ndarray, fs: int, pcm16: bool = False) -> Path:
    """Atomically write mono audio (samples,) clipped to [-1, 1] as float32 or 16-bit PCM wav."""
    audio = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    data = (np.round(audio * 32767.0)).astype(np.int16) if pcm16 else audio.astype(np.float32)
    buffer = io.BytesIO()
    scipy.io.wavfile.write(buffer, fs, data)
    return atomic_write_bytes(path, buffer.getvalue())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Extract the attended talker from a two-talker mixture wav using the listener's EEG.")
    parser.add_argument("--run", required=True, help="training run folder (uses best.pt, else last.pt) or a .pt checkpoint")
    parser.add_argument("--mixture", help="mixture wav file (any sampling rate; multi-channel is averaged to mono)")
    parser.add_argument("--eeg",
                        help="raw EEG .npy of shape (time, 64) at the run's data.fs_eeg (128 Hz) covering the mixture's span")
    parser.add_argument("--arrays",
                        help="array mode instead of --mixture/--eeg: an .npz with 'mixture' (batch, samples) and 'eeg' "
                             "(batch, time, channels), given to the model as they are; --out is then an .npz holding "
                             "'estimate' (batch, samples)")
    parser.add_argument("--out", required=True,
                        help="output wav (mono, at the run's data.fs_audio), or with --arrays an .npz; written atomically")
    parser.add_argument("--pcm16", action="store_true", help="write 16-bit PCM instead of 32-bit float samples")
    parser.add_argument("--max-mismatch-s", type=float, default=1.0,
                        help="largest allowed difference between EEG and audio duration in seconds (default 1.0)")
    parser.add_argument("--batch-size", type=int, default=4, help="windows (with --arrays: rows) per model call (default 4)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT.wav (or OUT.npz)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import math

    from util.distributed import check_device
    from util.outdir import check_out_file

    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise EEGKitError(f"--batch-size {args.batch_size}: must be >= 1")
    if not math.isfinite(args.max_mismatch_s) or args.max_mismatch_s < 0:
        raise EEGKitError(f"--max-mismatch-s {args.max_mismatch_s}: must be a finite number >= 0")
    if args.arrays is not None:
        if args.mixture is not None or args.eeg is not None:
            raise EEGKitError("--arrays: give either --arrays or --mixture with --eeg, not both")
        if args.pcm16:
            raise EEGKitError("--pcm16: only for wav output (--mixture mode); --arrays writes an .npz")
        return main_arrays(args)
    if args.mixture is None or args.eeg is None:
        raise EEGKitError(f"--{'mixture' if args.mixture is None else 'eeg'}: required (or --arrays IN.npz)")
    check_out_file(args.out, overwrite=args.overwrite, inputs=[args.mixture, args.eeg, args.run])
    check_device(args.device)
    model, config = load_run(args.run, device=args.device)
    fs_audio, fs_eeg = int(config["data"]["fs_audio"]), int(config["data"]["fs_eeg"])
    mixture = read_mixture_wav(args.mixture, fs_audio)  # (samples,)
    eeg = read_eeg_npy(args.eeg, RAW_EEG_CHANNELS)  # (time, 64) at fs_eeg
    eeg = match_eeg_length(eeg, mixture.shape[0], args.eeg, args.max_mismatch_s, fs_audio, fs_eeg)
    eeg = preprocess_eeg(eeg, config)
    estimate = extract_long(model, mixture, eeg, config, batch_size=args.batch_size, progress=True,
                            device=args.device)
    if not np.isfinite(estimate).all():
        raise EEGKitError(f"{args.run}: the model's estimate for {args.mixture} contains NaN/Inf; nothing written")
    write_wav(args.out, estimate, fs_audio, pcm16=args.pcm16)
    print(f"wrote {args.out} ({estimate.shape[0] / fs_audio:.2f} s at {fs_audio} Hz)")
    return 0


def main_arrays(args: argparse.Namespace) -> int:
    """Array mode: IN.npz (mixture, eeg) -> the model as is -> OUT.npz (estimate)."""
    from util.atomic import atomic_savez
    from util.distributed import check_device
    from util.outdir import check_out_file

    check_out_file(args.out, overwrite=args.overwrite, inputs=[args.arrays, args.run])
    check_device(args.device)
    model, config = load_run(args.run, device=args.device)
    n_channels = int(config["model"].get("eeg_channels", RAW_EEG_CHANNELS))
    mixture, eeg = read_arrays(args.arrays, n_channels)  # (batch, samples), (batch, time, C)
    estimate = predict_arrays(model, mixture, eeg, args.arrays, args.batch_size, args.device)  # (batch, samples)
    atomic_savez(args.out, estimate=estimate.astype(np.float32))
    print(f"wrote {args.out} (estimate {estimate.shape[0]} x {estimate.shape[1]})")
    return 0


if __name__ == "__main__":
    run_cli(main)
