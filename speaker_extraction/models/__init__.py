"""Speaker-extraction models: ``build_model(model_cfg)`` dispatches on ``model_cfg['type']``.

Every model is called as ``model(mixture (batch, samples), eeg (batch, time, C))``
and returns the estimate ``(batch, samples)`` with the mixture's length.
"""
from __future__ import annotations

from torch import nn

from speaker_extraction.models.neurospex import NeuroSpex, build_neurospex, count_parameters

MODEL_BUILDERS = {"neurospex": build_neurospex}


def build_model(model_cfg: dict) -> nn.Module:
    """Build a model from the YAML ``model:`` section (requires a known ``type``)."""
    model_type = model_cfg.get("type", "neurospex")
    if model_type not in MODEL_BUILDERS:
        raise ValueError(f"unknown speaker-extraction model type {model_type!r}; "
                         f"known: {', '.join(sorted(MODEL_BUILDERS))}")
    return MODEL_BUILDERS[model_type](model_cfg)


__all__ = ["NeuroSpex", "build_model", "build_neurospex", "count_parameters", "MODEL_BUILDERS"]
