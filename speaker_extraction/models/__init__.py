"""Speaker-extraction models: ``build_model(model_cfg)`` dispatches on ``model_cfg['type']``.

Every model is called as ``model(mixture (batch, samples), eeg (batch, time, C))``
and returns the estimate ``(batch, samples)`` with the mixture's length.
"""
from __future__ import annotations

from torch import nn

from speaker_extraction.models.neurospex import NeuroSpex, build_neurospex
from speaker_extraction.models.neurospex_published import NeuroSpexPublished, build_neurospex_published
from util.errors import EEGKitError

MODEL_BUILDERS = {"neurospex": build_neurospex, "neurospex_published": build_neurospex_published}
# each type's class: its constructor's signature and CONFIG_RANGES check the ``model:`` options
MODEL_CLASSES = {"neurospex": NeuroSpex, "neurospex_published": NeuroSpexPublished}


def check_model_config(model_cfg: dict) -> dict:
    """The ``model:`` section checked against its model's constructor (`util.config.check_options`)."""
    from util.config import check_options

    model_type = model_cfg.get("type", "neurospex")
    if not isinstance(model_type, str) or model_type not in MODEL_BUILDERS:
        raise EEGKitError(f"config: unknown speaker-extraction model type {model_type!r}; "
                          f"known: {', '.join(sorted(MODEL_BUILDERS))}")
    options = {k: v for k, v in model_cfg.items() if k != "type"}
    model_class = MODEL_CLASSES[model_type]
    return check_options("model", options, model_class.__init__, getattr(model_class, "CONFIG_RANGES", {}))


def build_model(model_cfg: dict) -> nn.Module:
    """Build a model from the YAML ``model:`` section (requires a known ``type``)."""
    model_type = model_cfg.get("type", "neurospex")
    check_model_config(model_cfg)
    try:
        return MODEL_BUILDERS[model_type](model_cfg)
    except (TypeError, ValueError, AssertionError, RuntimeError) as error:  # bad option in the config
        raise EEGKitError(f"config: model: {error}") from None


__all__ = ["NeuroSpex", "NeuroSpexPublished", "build_model", "check_model_config", "build_neurospex",
           "build_neurospex_published", "MODEL_BUILDERS", "MODEL_CLASSES"]
