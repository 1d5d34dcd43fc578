"""The one Task 2 model contract: ``model(eeg (batch, time, 64)) -> {target: (batch, time_out, bands)}``.

`check_targets` validates the ``{target_name: bands}`` mapping every model is built with (it lives in
`util.ridge`, beside the ridge decoder that Task 1 shares).
"""
from __future__ import annotations

from util.ridge import check_targets  # noqa: F401
