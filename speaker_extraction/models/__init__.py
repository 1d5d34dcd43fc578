"""Speaker-extraction models: ``build_model(model_cfg)`` dispatches on ``model_cfg['type']``.

Every model is called as ``model(mixture (batch, samples), eeg (batch, time, C))``
and returns the estimate ``(batch, samples)`` with the mixture's length.
"""
from __future__ import annotations

from torch import nn

from speaker_extraction.models.neurospex import NeuroSpex, build_neurospex
from util.errors import EEGKitError

MODEL_BUILDERS = {"neurospex": build_neurospex}


def build_model(model_cfg: dict) -> nn.Module:
    """Build a model from the YAML ``model:`` section (requires a known ``type``)."""
    model_type = model_cfg.get("type", "neurospex")
    if model_type not in MODEL_BUILDERS:
        raise EEGKitError(f"config: unknown speaker-extraction model type {model_type!r}; "
                          f"known: {', '.join(sorted(MODEL_BUILDERS))}")
    try:
        return MODEL_BUILDERS[model_type](model_cfg)
    except (TypeError, ValueError) as error:  # unknown or bad option in the config
        raise EEGKitError(f"config: model: {error}") from None


__all__ = ["NeuroSpex", "build_model", "build_neurospex", "MODEL_BUILDERS"]
