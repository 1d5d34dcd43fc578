"""Task 1 model registry: `build_model(model_cfg) -> nn.Module`.

`model_cfg` is the `model:` section of a run config; its `type` selects the model and every other
key is passed to the constructor (train.py sets ``stimulus_bands`` from ``data.feature``: 1 for the
envelope, 10 for mel):

  dilated_conv  DilatedConvModel    the baseline (task1_match_mismatch/models/dilated_conv.py)
  vlaai         VLAAIMatchMismatch  the kit's VLAAI stack as the EEG branch (models/kit_encoder.py)
  ridge         RidgeMatchMismatch  the linear baseline: ridge backward decoder + Pearson r
                                    (models/ridge.py; closed form, `model.closed_form` is True)

Every model maps ``eeg (batch, T, 64), stimuli (batch, K, T, bands) -> logits (batch, K)``.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from task1_match_mismatch.models.dilated_conv import DilatedConvModel
from task1_match_mismatch.models.kit_encoder import VLAAIMatchMismatch
from task1_match_mismatch.models.ridge import RidgeMatchMismatch
from util.config import check_options
from util.errors import EEGKitError

MODELS: dict[str, type[nn.Module]] = {
    "dilated_conv": DilatedConvModel,
    "vlaai": VLAAIMatchMismatch,
    "ridge": RidgeMatchMismatch,
}
MODEL_TYPES = tuple(MODELS)


def check_model_config(model_cfg: Mapping[str, Any]) -> dict:
    """The ``model:`` section checked against its constructor (`util.config.check_options`); the options."""
    cfg = dict(model_cfg or {})
    model_type = cfg.pop("type", None)
    if not isinstance(model_type, str) or model_type not in MODELS:
        raise EEGKitError(f"config: model.type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    return check_options("model", cfg, MODELS[model_type].__init__)


def build_model(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Build the model named by ``model_cfg['type']``; a bad type or option is one `EEGKitError` line."""
    cfg = check_model_config(model_cfg)
    model_type = model_cfg["type"]
    try:
        return MODELS[model_type](**cfg)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:
        raise EEGKitError(f"config: model.type {model_type}: bad model options {sorted(cfg)}: {error}") from None


__all__ = ["build_model", "check_model_config", "MODELS", "MODEL_TYPES"]
