"""Task 2's view of ``split_data``: `util.split_data` plus the targets computed from the stimulus audio.

Discovery, validation, lazy loading, normalisation and the subject helpers live in
`util.split_data` (Task 1 reads the same files); the names are re-exported here, so
``task2_regression.data.load_recordings`` etc. keep working. What is Task 2's own:
``mel80``/``mag`` targets, computed from the stimulus audio under ``stimulus_audio_dir`` and
cached in ``cache_dir`` (`task2_regression.stimulus_targets`), which `load_recordings` hands to
the split_data loader through its ``derived_paths`` hook.
"""
from __future__ import annotations

from task2_regression import stimulus_targets
from util.features import FS_TASK2
from util.split_data import (N_EEG_CHANNELS, NORMALIZE_MODES, SEP, SPLITS, FeatureSource, Recording,  # noqa: F401
                             check_feature_header, check_finite_source, chunked_stats, common_length, discover,
                             parse_name, resolve_split_dir, split_offsets_of, stimuli_of, summarize,
                             whole_recordings, zscore_time)
from util import split_data as _split_data

STIMULUS_FEATURES = stimulus_targets.STIMULUS_FEATURES  # computed from the stimulus audio: mel80, mag, audio
RAW_FEATURES = (stimulus_targets.AUDIO_FEATURE,)  # the 16-kHz audio rows: never normalised


def load_recordings(split_dir, split: str, features=("eeg", "mel"), stimulus_audio_dir=None, cache_dir=None,
                    normalize: str = "recording", length_tolerance: int = FS_TASK2, check_finite: bool = True,
                    subjects=None, progress: bool = False, groups: dict | None = None,
                    n_channels: int = N_EEG_CHANNELS) -> list:
    """`util.split_data.load_recordings`, where ``features`` may also include ``mel80``/``mag``/``audio``.

    Those are computed from the stimulus audio under ``stimulus_audio_dir`` and cached in ``cache_dir``
    (default ``<dataset>/derivatives/stimulus_targets``; see ``task2_regression.stimulus_targets``).
    ``audio`` (the 16-kHz audio as rows of 250 samples per 64-Hz frame) is never normalised.
    """
    def derived_paths(stimuli, wanted):
        return stimulus_targets.ensure_stimulus_targets(
            stimuli, stimulus_audio_dir, cache_dir or stimulus_targets.default_cache_dir(resolve_split_dir(split_dir)),
            wanted)

    return _split_data.load_recordings(split_dir, split, features=features, normalize=normalize,
                                       length_tolerance=length_tolerance, check_finite=check_finite,
                                       subjects=subjects, progress=progress, groups=groups, n_channels=n_channels,
                                       derived_features=STIMULUS_FEATURES, derived_paths=derived_paths,
                                       raw_features=RAW_FEATURES)
