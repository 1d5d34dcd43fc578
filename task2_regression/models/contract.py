"""The one Task 2 model contract: ``model(eeg (batch, time, 64)) -> {target: (batch, time_out, bands)}``.

`check_targets` validates the ``{target_name: bands}`` mapping every model is built with.
"""
from __future__ import annotations

from typing import Mapping


def check_targets(targets: Mapping[str, int]) -> dict[str, int]:
    """Validate a {target_name: bands} mapping (used by every model's constructor)."""
    out = {str(name): int(bands) for name, bands in dict(targets).items()}
    if not out:
        raise ValueError("targets must name at least one target, e.g. {'mel': 10}")
    for name, bands in out.items():
        if bands < 1:
            raise ValueError(f"target {name!r} must have >= 1 band, got {bands}")
    return out
