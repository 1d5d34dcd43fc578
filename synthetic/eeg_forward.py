"""EEG forward model shared by the synthetic Task 2 and KU Leuven generators.

The model turns stimulus drivers (speech envelope, mel bands, ...) into 64-channel
BioSemi EEG at any sampling rate (64 Hz for Task 2, 128 Hz for KUL):

    eeg(t) = CAR[ sum_s  r_s(t) * a_s  +  background(t) ]              # (time, 64)
    r_s(t) = trf_s  (*)  sum_d  w_{d,s} * z_d(t)                          # one source

- Drivers ``z_d`` (time, n_drivers) are z-scored per column (optional), so driver
  gains are comparable across features.
- Sources: three cortical "sources" per subject: a frontocentral auditory
  source (the vertical auditory-cortex dipole seen on the scalp as a FCz-centred
  blob with polarity reversal at the mastoids/temporal rim) and a left and a right
  temporal source. Each scalp pattern ``a_s`` (64,) is a sum of Gaussian bumps in
  3-D over the electrode positions of mne's ``biosemi64`` standard montage; the
  bump centres, widths and weights are jittered per subject.
- Temporal response functions ``trf_s``: a P1-N1-P2 complex, i.e. a sum of three
  Gaussians (+P1 ~50 ms, -N1 ~100 ms, +P2 ~180 ms) with latencies (+-10 % per subject, +-5 % per source),
  widths and amplitudes jittered per subject and source. TRFs are stored as
  parameters and sampled at whatever ``fs`` is requested (0-500 ms support).
- Driver-to-source weights ``w_{d,s}``: caller gains (e.g. band-dependent
  strength, low mel bands stronger) x a per-subject log-normal jitter x a
  per-source positive weight.
- Background (``background_eeg``): spatially correlated 1/f ("pink", exponent
  ~1, high-passed at 0.5 Hz like the challenge preprocessing) noise, mixed with
  an exponential spatial covariance over electrode distance; occipital alpha
  bursts (narrow band around a subject-specific 8.5-11.5 Hz peak, switched on
  and off by a smooth random envelope); frontal blink artefacts (Poisson
  ~0.2/s, 250-ms bumps, Fp-channel pattern decaying backwards); and independent
  sensor white noise. Amplitudes are in microvolts.
- SNR: ``simulate_eeg`` scales the stimulus-driven part so that its power
  (mean over time and channels) is ``snr_db`` relative to the background power.
- A common average reference (CAR) is applied at the end, as in the
  challenge preprocessing.

Public API
----------
``biosemi64_positions() -> (names, xyz (64, 3))``;
``make_subject(seed, fs, n_drivers, driver_gains=None, ...) -> SubjectHead``;
``simulate_eeg(drivers, head, fs, snr_db, rng, driver_gains=None) -> (T, 64) float32``;
``background_eeg(n_samples, fs, rng, head=None, ...) -> (T, 64) float32``;
``stimulus_response(drivers, head, fs, driver_gains=None) -> (T, 64)`` (noise-free part);
``pink_noise(n_samples, n_channels, fs, rng, exponent=1.0, f_min=0.5)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import signal

from util.errors import EEGKitError

__all__ = ["N_CHANNELS", "SubjectHead", "biosemi64_positions", "make_subject", "trf_kernels",
           "stimulus_response", "background_eeg", "simulate_eeg", "pink_noise"]

N_CHANNELS = 64
SOURCE_NAMES = ("frontocentral", "left_temporal", "right_temporal")
TRF_SUPPORT_S = 0.5


@functools.lru_cache(maxsize=1)
def biosemi64_positions() -> tuple[tuple[str, ...], np.ndarray]:
    """Channel names and 3-D positions (metres, head radius ~0.095) of mne's biosemi64 montage."""
    import mne  # imported lazily: ~1 s

    montage = mne.channels.make_standard_montage("biosemi64")
    ch_pos = montage.get_positions()["ch_pos"]
    names = tuple(montage.ch_names)
    xyz = np.array([ch_pos[name] for name in names], dtype=np.float64)  # (64, 3)
    xyz.setflags(write=False)
    return names, xyz


def _channel(name: str) -> np.ndarray:
    names, xyz = biosemi64_positions()
    return xyz[names.index(name)]


def _bump(centre: np.ndarray, width_m: float) -> np.ndarray:
    """Gaussian bump over the electrodes around ``centre`` (3,), ``width_m`` std in metres."""
    _names, xyz = biosemi64_positions()
    dist2 = np.sum((xyz - centre) ** 2, axis=1)  # (64,)
    return np.exp(-dist2 / (2 * width_m ** 2))


def _unit_rms(pattern: np.ndarray) -> np.ndarray:
    pattern = pattern - pattern.mean()  # average reference
    return pattern / np.sqrt(np.mean(pattern ** 2))


@dataclass
class SubjectHead:
    """Everything subject-specific in the forward model (independent of fs)."""

    seed: int
    fs: float                       # rate the subject was created for (simulate_eeg accepts any fs)
    n_drivers: int
    patterns: np.ndarray            # (n_sources, 64) scalp patterns, zero mean, unit RMS
    trf_params: np.ndarray          # (n_sources, 3 peaks, 3) [latency_s, width_s, amplitude]
    driver_mix: np.ndarray          # (n_drivers, n_sources) driver-to-source weights
    alpha_hz: float                 # individual alpha peak frequency
    alpha_pattern: np.ndarray       # (64,) occipital, unit RMS
    blink_pattern: np.ndarray       # (64,) frontal, max 1 at the Fp channels
    noise_mixing: np.ndarray        # (64, 64) square root of the spatial noise covariance
    channel_gain: np.ndarray        # (64,) electrode impedance/gain differences (~1)
    source_names: tuple = field(default=SOURCE_NAMES)


def make_subject(seed: int, fs: float, n_drivers: int, driver_gains=None,
                 latency_jitter: float = 0.1, pattern_jitter_m: float = 0.012,
                 gain_jitter: float = 0.3, noise_length_m: float = 0.035) -> SubjectHead:
    """Draw a subject: scalp patterns, TRFs, driver weights, alpha and noise covariance.

    ``driver_gains`` (n_drivers,) sets the average strength of each driver (default 1);
    ``latency_jitter`` is the relative std of the P1/N1/P2 latencies; ``pattern_jitter_m``
    the std (metres) of the source-centre displacement; ``gain_jitter`` the log-normal
    std of the per-subject driver weights; ``noise_length_m`` the spatial correlation
    length of the background.
    """
    if n_drivers < 1:
        raise EEGKitError(f"eeg_forward: n_drivers must be >= 1, got {n_drivers}")
    gains = np.ones(n_drivers) if driver_gains is None else np.asarray(driver_gains, np.float64)
    if gains.shape != (n_drivers,):
        raise EEGKitError(f"eeg_forward: driver_gains must have shape ({n_drivers},), got {gains.shape}")
    rng = np.random.default_rng(seed)
    names, xyz = biosemi64_positions()

    def jittered(name):
        return _channel(name) + rng.normal(0, pattern_jitter_m, 3)

    fc = _bump(jittered("FCz"), rng.uniform(0.045, 0.06)) \
        - 0.5 * _bump(jittered("TP7"), 0.03) - 0.5 * _bump(jittered("TP8"), 0.03)
    left = _bump(jittered("T7"), rng.uniform(0.03, 0.045)) - 0.3 * _bump(jittered("FC1"), 0.04)
    right = _bump(jittered("T8"), rng.uniform(0.03, 0.045)) - 0.3 * _bump(jittered("FC2"), 0.04)
    patterns = np.stack([_unit_rms(p) for p in (fc, left, right)])  # (3, 64)
    patterns *= np.array([1.0, 0.6, 0.6])[:, None]

    base = np.array([[0.050, 0.015, 0.6], [0.100, 0.025, -1.0], [0.180, 0.040, 0.8]])  # P1, N1, P2
    n_sources = patterns.shape[0]
    trf_params = np.repeat(base[None], n_sources, axis=0)  # (3 sources, 3 peaks, 3)
    subject_shift = np.clip(rng.normal(0, latency_jitter), -2 * latency_jitter, 2 * latency_jitter)  # a subject is globally early or late
    trf_params[:, :, 0] *= np.exp(subject_shift + rng.normal(0, latency_jitter / 2, (n_sources, 3)))
    trf_params[:, :, 1] *= np.exp(rng.normal(0, 0.15, (n_sources, 3)))
    trf_params[:, :, 2] *= np.exp(rng.normal(0, 0.25, (n_sources, 3)))

    driver_mix = gains[:, None] * np.exp(rng.normal(0, gain_jitter, (n_drivers, 1))) \
        * rng.uniform(0.6, 1.0, (n_drivers, n_sources))  # (n_drivers, n_sources)

    alpha = _bump(jittered("Oz"), 0.04) + 0.7 * _bump(jittered("POz"), 0.035)
    blink = _bump(_channel("Fpz") + np.array([0, 0.01, -0.01]), 0.035)
    blink = blink / blink.max()

    dist = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)  # (64, 64)
    cov = np.exp(-dist / noise_length_m)
    evals, evecs = np.linalg.eigh(cov)
    noise_mixing = (evecs * np.sqrt(np.clip(evals, 0, None))) @ evecs.T  # symmetric sqrt

    return SubjectHead(
        seed=int(seed), fs=float(fs), n_drivers=int(n_drivers), patterns=patterns, trf_params=trf_params,
        driver_mix=driver_mix, alpha_hz=float(rng.uniform(8.5, 11.5)), alpha_pattern=_unit_rms(alpha),
        blink_pattern=blink, noise_mixing=noise_mixing,
        channel_gain=np.exp(rng.normal(0, 0.1, N_CHANNELS)),
    )


def trf_kernels(head: SubjectHead, fs: float) -> np.ndarray:
    """TRFs of the subject's sources sampled at ``fs``: (n_lags, n_sources), lags 0..500 ms."""
    lags_s = np.arange(int(round(TRF_SUPPORT_S * fs)) + 1) / fs  # (n_lags,)
    lat, width, amp = (head.trf_params[..., i][None] for i in range(3))  # (1, n_sources, 3)
    peaks = amp * np.exp(-0.5 * ((lags_s[:, None, None] - lat) / width) ** 2)  # (n_lags, n_sources, 3)
    return peaks.sum(axis=-1)


def _standardize(x: np.ndarray) -> np.ndarray:
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)


def stimulus_response(drivers: np.ndarray, head: SubjectHead, fs: float, driver_gains=None,
                      standardize: bool = True) -> np.ndarray:
    """Noise-free stimulus-driven EEG (T, 64) in arbitrary units (before SNR scaling)."""
    drivers = np.asarray(drivers, dtype=np.float64)
    if drivers.ndim == 1:
        drivers = drivers[:, None]
    if drivers.ndim != 2 or drivers.shape[1] != head.n_drivers:
        raise EEGKitError(f"eeg_forward: drivers must be (time, {head.n_drivers}), got {drivers.shape}")
    if standardize:
        drivers = _standardize(drivers)
    mix = head.driver_mix
    if driver_gains is not None:
        mix = mix * np.asarray(driver_gains, np.float64).reshape(-1, 1)
    source_input = drivers @ mix  # (T, n_sources)
    kernels = trf_kernels(head, fs)  # (n_lags, n_sources)
    n_samples = drivers.shape[0]
    sources = signal.fftconvolve(source_input, kernels, mode="full", axes=0)[:n_samples]  # causal, (T, n_src)
    return (sources @ head.patterns) * head.channel_gain  # (T, 64)


def pink_noise(n_samples: int, n_channels: int, fs: float, rng: np.random.Generator,
               exponent: float = 1.0, f_min: float = 0.5) -> np.ndarray:
    """Independent 1/f^exponent noise per channel (power spectrum), zero below ``f_min``; unit std."""
    white = rng.standard_normal((n_samples, n_channels), dtype=np.float32)
    spectrum = np.fft.rfft(white, axis=0)
    freqs = np.fft.rfftfreq(n_samples, 1 / fs)
    shaping = np.zeros_like(freqs)
    keep = freqs >= f_min
    shaping[keep] = freqs[keep] ** (-exponent / 2)  # amplitude ~ f^(-a/2) -> power ~ f^-a
    noise = np.fft.irfft(spectrum * shaping[:, None], n=n_samples, axis=0)
    return (noise / max(float(noise.std()), 1e-12)).astype(np.float32)


def _alpha_bursts(n_samples: int, fs: float, alpha_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Narrow-band alpha (T,) switched by a smooth on/off envelope; unit RMS."""
    nyquist = fs / 2
    if alpha_hz + 2 >= nyquist:  # cannot be represented at this rate
        return np.zeros(n_samples)
    b, a = signal.butter(2, [(alpha_hz - 1) / nyquist, (alpha_hz + 1) / nyquist], btype="band")
    carrier = signal.lfilter(b, a, rng.standard_normal(n_samples + int(fs)))[int(fs):]
    b_env, a_env = signal.butter(2, 0.3 / nyquist)  # ~3-s timescale of bursts
    gate = signal.filtfilt(b_env, a_env, rng.standard_normal(n_samples)) if n_samples > 12 else np.ones(n_samples)
    envelope = 1 / (1 + np.exp(-gate / (gate.std() + 1e-12) * 3))
    alpha = carrier * envelope
    return alpha / max(np.sqrt(np.mean(alpha ** 2)), 1e-12)


def _blinks(n_samples: int, fs: float, rate_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Blink time course (T,): 250-ms raised-cosine bumps at Poisson times, peak ~1."""
    out = np.zeros(n_samples)
    n_blinks = rng.poisson(rate_hz * n_samples / fs)
    width = max(int(round(0.25 * fs)), 3)
    shape = np.hanning(width)  # (width,)
    for onset in rng.integers(0, max(n_samples - width, 1), n_blinks):
        seg = out[onset:onset + width]
        seg += rng.uniform(0.7, 1.3) * shape[:seg.size]
    return out


def background_eeg(n_samples: int, fs: float, rng: np.random.Generator, head: SubjectHead | None = None,
                   pink_uv: float = 10.0, alpha_uv: float = 4.0, blink_uv: float = 40.0,
                   blink_rate_hz: float = 0.2, white_uv: float = 2.0, exponent: float = 1.0) -> np.ndarray:
    """Stimulus-unrelated EEG (T, 64) float32 in microvolts, common-average referenced.

    ``pink_uv``: RMS of the spatially correlated 1/f part; ``alpha_uv``: RMS of the
    occipital alpha source; ``blink_uv`` peak blink amplitude at Fpz (``blink_rate_hz``
    blinks per second); ``white_uv``: RMS of independent sensor noise. Without a
    ``head`` a default subject (seed 0) supplies the spatial structure.
    """
    if n_samples < 1:
        raise EEGKitError(f"eeg_forward: n_samples must be >= 1, got {n_samples}")
    head = head if head is not None else make_subject(0, fs, 1)
    pink = pink_noise(n_samples, N_CHANNELS, fs, rng, exponent=exponent) @ head.noise_mixing  # (T, 64)
    pink *= pink_uv / max(float(np.sqrt(np.mean(pink ** 2))), 1e-12)
    eeg = pink
    if alpha_uv > 0:
        eeg += alpha_uv * _alpha_bursts(n_samples, fs, head.alpha_hz, rng)[:, None] * head.alpha_pattern
    if blink_uv > 0 and blink_rate_hz > 0:
        eeg += blink_uv * _blinks(n_samples, fs, blink_rate_hz, rng)[:, None] * head.blink_pattern
    if white_uv > 0:
        eeg += white_uv * rng.standard_normal((n_samples, N_CHANNELS), dtype=np.float32)
    eeg -= eeg.mean(axis=1, keepdims=True)  # common average reference
    return eeg.astype(np.float32)


def simulate_eeg(drivers: np.ndarray, head: SubjectHead, fs: float, snr_db: float,
                 rng: np.random.Generator, driver_gains=None, standardize: bool = True,
                 **background_kwargs) -> np.ndarray:
    """Stimulus-driven EEG plus background at ``snr_db``: (T, 64) float32, microvolt scale.

    ``drivers`` (T, n_drivers) at ``fs``; ``driver_gains`` (n_drivers,) optionally rescales
    the subject's driver weights for this call; extra keyword arguments go to
    ``background_eeg``. SNR = 10 log10(mean signal power / mean background power).
    """
    response = stimulus_response(drivers, head, fs, driver_gains=driver_gains, standardize=standardize)
    response -= response.mean(axis=1, keepdims=True)  # CAR
    background = background_eeg(response.shape[0], fs, rng, head=head, **background_kwargs)
    signal_power = np.mean(response ** 2)
    noise_power = np.mean(background.astype(np.float64) ** 2)
    if signal_power > 0:
        response *= np.sqrt(noise_power / signal_power * 10 ** (snr_db / 10))
    return (response + background).astype(np.float32)
