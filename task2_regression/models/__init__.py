"""Task 2 model registry: `build_model(model_cfg, targets) -> nn.Module`.

`model_cfg` is the `model:` section of a run config (docs/DESIGN.md); its `type`
selects the model and every other key is passed to the constructor:

  linear       LinearConv    (task2_regression/models/linear.py)
  ridge        RidgeDecoder  (closed form; `model.closed_form` is True)
  vlaai        VLAAI         (task2_regression/models/vlaai.py)
  dprnn        DPRNN         (task2_regression/models/dprnn.py)
  cat_wavenet  CAT-guided WaveNet (task2_regression/models/cat_wavenet.py, imported lazily)

`targets` maps target names to band counts, e.g. {'mel': 10} or {'envelope': 1}.
Every model maps eeg (batch, time, 64) to {target: (batch, time_out, bands)}.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from torch import nn

MODEL_TYPES = ("linear", "ridge", "vlaai", "dprnn", "cat_wavenet")


def _linear(kwargs: dict, targets: dict) -> nn.Module:
    from .linear import LinearConv

    return LinearConv(targets=targets, **kwargs)


def _ridge(kwargs: dict, targets: dict) -> nn.Module:
    from .linear import RidgeDecoder

    return RidgeDecoder(targets=targets, **kwargs)


def _vlaai(kwargs: dict, targets: dict) -> nn.Module:
    from .vlaai import VLAAI

    return VLAAI(targets=targets, **kwargs)


def _dprnn(kwargs: dict, targets: dict) -> nn.Module:
    from .dprnn import DPRNN

    return DPRNN(targets=targets, **kwargs)


def _cat_wavenet(kwargs: dict, targets: dict) -> nn.Module:
    from . import cat_wavenet  # owned by the cat-wavenet engineer

    for name in ("build_cat_wavenet", "build_model"):
        builder = getattr(cat_wavenet, name, None)
        if callable(builder):
            params = inspect.signature(builder).parameters
            if "model_cfg" in params or "cfg" in params:
                return builder(dict(kwargs), targets)
            return builder(targets=targets, **kwargs)
    return cat_wavenet.CATWaveNet(targets=targets, **kwargs)


_BUILDERS: dict[str, Callable[[dict, dict], nn.Module]] = {
    "linear": _linear,
    "ridge": _ridge,
    "vlaai": _vlaai,
    "dprnn": _dprnn,
    "cat_wavenet": _cat_wavenet,
}


def build_model(model_cfg: Mapping[str, Any], targets: Mapping[str, int]) -> nn.Module:
    """Build the model named by `model_cfg['type']` with the remaining keys as constructor kwargs."""
    cfg = dict(model_cfg or {})
    model_type = cfg.pop("type", None)
    if model_type not in _BUILDERS:
        raise ValueError(f"model.type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    targets = {str(name): int(bands) for name, bands in dict(targets).items()}
    try:
        return _BUILDERS[model_type](cfg, targets)
    except TypeError as error:  # unknown kwarg in the config
        raise ValueError(f"model.type {model_type}: bad model options {sorted(cfg)}: {error}") from error


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (unique) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["build_model", "count_parameters", "MODEL_TYPES"]
