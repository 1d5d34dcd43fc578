"""A Task 2 run config checked without its data: `check_config` (train.py, and every checkpoint's stored config).

The defaults live in ``configs/defaults.yaml``, the rules in ``configs/schema.yaml`` (`util.config`);
`check_config` adds the task's own: the submitted target among the trained ones, the ``model:``
section (`task2_regression.models.check_model_config`, its size on the meta device), a loss term that
acts on the trained targets, and windows at least as long as the model's taps. `task2_regression.train`
adds the checks that need the data (stimulus audio, subjects); `task2_regression.predict` runs a
checkpoint's stored config through `check_config` (`util.config.stored_config`).
"""
from __future__ import annotations

from pathlib import Path

from util import config as config_util
from util.errors import EEGKitError
from util.features import BANDS, FS_TASK2 as FS
from util.windowing import seconds_to_samples

SUBMITTED_TARGETS = ("mel", "envelope")
DEFAULTS_PATH = Path(__file__).resolve().parent / "configs" / "defaults.yaml"
SCHEMA_PATH = Path(__file__).resolve().parent / "configs" / "schema.yaml"


def check_config(config: dict) -> dict:
    """The data-free checks of a run config; returns the resolved copy (also for a checkpoint's stored config).

    `util.config.resolve` against configs/defaults.yaml and configs/schema.yaml, the targets, the
    ``model:`` section (`task2_regression.models.check_model_config` and its size on the meta device),
    and the rules that tie keys together: a loss term that acts on the trained targets, windows at
    least as long as the model's taps.
    """
    from task2_regression.models import MODELS, check_model_config

    cfg = config_util.resolve(config, config_util.load_defaults(DEFAULTS_PATH), config_util.load_schema(SCHEMA_PATH))
    target = cfg["target"]
    if target not in SUBMITTED_TARGETS:
        raise EEGKitError(f"config: target must be 'mel' or 'envelope', got {target!r}")
    targets = list(cfg["targets"] or [target])
    unknown = [t for t in targets if t not in BANDS]
    if unknown:
        raise EEGKitError(f"config: unknown targets {unknown} (known: {list(BANDS)})")
    if target not in targets:
        raise EEGKitError(f"config: the submitted target {target!r} is not in targets {targets} "
                          f"(add it, e.g. 'targets=[{', '.join([target] + targets)}]', or leave targets out to "
                          f"train [target] alone)")
    if "type" not in cfg["model"]:
        raise EEGKitError("config: missing model.type")
    options = check_model_config(cfg["model"])
    model_class = MODELS[cfg["model"]["type"]]
    config_util.check_model_size("model", lambda: model_class(targets={t: BANDS[t] for t in targets}, **options),
                                 options, model_class.__init__)
    loss = cfg["loss"]
    if float(loss["pearson"]) == 0 and float(loss["l1"]) == 0 and "mel" not in targets \
            and cfg["model"]["type"] != "ridge":
        raise EEGKitError(f"config: loss.kl acts on the mel target only, and targets {targets} have none: with "
                          f"loss.pearson and loss.l1 at 0 there is nothing to train on")
    taps = options.get("n_taps")
    if isinstance(taps, int):
        for key in ("window_s", "val_window_s"):
            frames = seconds_to_samples(float(cfg["data"][key]), FS, name=f"data.{key}")
            if frames < taps:
                raise EEGKitError(f"config: data.{key}={cfg['data'][key]:g} s is {frames} frames, shorter than "
                                  f"model.n_taps={taps}; use a longer window or fewer taps")
    return cfg
