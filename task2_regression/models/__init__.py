"""Task 2 model registry: `build_model(model_cfg, targets) -> nn.Module`.

`model_cfg` is the `model:` section of a run config (docs/DESIGN.md); its `type`
selects the model and every other key is passed to the constructor:

  linear       LinearConv    (task2_regression/models/linear.py)
  ridge        RidgeDecoder  (closed form; `model.closed_form` is True)
  vlaai        VLAAI         (task2_regression/models/vlaai.py)
  dprnn        DPRNN         (task2_regression/models/dprnn.py)
  cat_wavenet  CATWaveNet    (task2_regression/models/cat_wavenet.py)
  cat_wavenet_published  CATWaveNetPublished  (the authors' MTWAVE exactly, 30-s windows;
               task2_regression/models/cat_wavenet_published.py)

`targets` maps target names to band counts, e.g. {'mel': 10} or {'envelope': 1}.
Every model maps eeg (batch, time, 64) to {target: (batch, time_out, bands)}.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from task2_regression.models.cat_wavenet import CATWaveNet
from task2_regression.models.cat_wavenet_published import CATWaveNetPublished
from task2_regression.models.contract import check_targets
from task2_regression.models.dprnn import DPRNN
from task2_regression.models.linear import LinearConv, RidgeDecoder
from task2_regression.models.vlaai import VLAAI
from util.config import check_options
from util.errors import EEGKitError

MODELS: dict[str, type[nn.Module]] = {
    "linear": LinearConv,
    "ridge": RidgeDecoder,
    "vlaai": VLAAI,
    "dprnn": DPRNN,
    "cat_wavenet": CATWaveNet,
    "cat_wavenet_published": CATWaveNetPublished,
}
MODEL_TYPES = tuple(MODELS)


def check_model_config(model_cfg: Mapping[str, Any]) -> dict:
    """The ``model:`` section checked against the constructor of its ``type`` (`util.config.check_options`:
    known keys, types of the defaults, finite numbers, sizes >= 1); returns the checked options."""
    cfg = dict(model_cfg or {})
    model_type = cfg.pop("type", None)
    if not isinstance(model_type, str) or model_type not in MODELS:
        raise EEGKitError(f"config: model.type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    return check_options("model", cfg, MODELS[model_type].__init__, getattr(MODELS[model_type], "CONFIG_RANGES", None))


def build_model(model_cfg: Mapping[str, Any], targets: Mapping[str, int]) -> nn.Module:
    """Build the model named by `model_cfg['type']` with the remaining keys as constructor kwargs.

    A bad type or option is one `EEGKitError` line (the CLIs print it without a traceback).
    """
    cfg = check_model_config(model_cfg)
    model_type = model_cfg["type"]
    try:
        return MODELS[model_type](targets=check_targets(targets), **cfg)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:  # bad option in the config
        raise EEGKitError(f"config: model.type {model_type}: bad model options {sorted(cfg)}: {error}") from None


__all__ = ["build_model", "check_model_config", "check_targets", "MODELS", "MODEL_TYPES"]
