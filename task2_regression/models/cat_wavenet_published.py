"""The published CAT-guided WaveNet (the authors' `MTWAVE`), exactly: model type ``cat_wavenet_published``.

Section 1 of ../shared/reference/published_models.md, built from the blocks of `published_blocks.py`:

    env   = eeg2envblock(eeg)      # WaveNet 64 -> 1, res/skip = residual_channels/skip_channels
    mel   = block1(env, eeg)       # proj 1 -> 64, 3 two-layer channel cross-attentions, WaveNet 64 -> 10
    mel80 = block2(mel, eeg)       # proj 10 -> 64, ..., WaveNet 64 -> 80
    mag   = block3(mel80, eeg)     # proj 80 -> 64, ..., WaveNet 64 -> 257, width last_stage_channels

`CATWaveNetPublished(targets, ...)` follows the kit's model contract: eeg (batch, 1920, 64) ->
{"envelope": (batch, 1920, 1), "mel": (.., 10), "mel80": (.., 80), "mag": (.., 257)}, float32; the targets
must be exactly these four (the published model has four fixed stages). Its state-dict keys are the authors'
(``eeg2envblock.*``, ``block{1,2,3}.{Fast1,crossattn1,proj1,crossattn2,crossattn3}.*``), in their order, so a
checkpoint of theirs loads key for key (`task2_regression.import_checkpoint`).

30-s windows only: the attention runs over the 64 channels with each channel's whole series as one
token and the fixed temperature sqrt(1920), so a window of another length is refused in one line
(`WINDOW_FRAMES`). The input must already be z-scored per window (the data config does that).

Unused parameters (`UNUSED_PARAMETERS`, reported by the importer): every regressor's ``proj1``, every
DepthConv1d's ``skip_out`` and each regressor's last ``res_conv``. They are in the state dict (so the
93,991,284 of the paper size includes them) but never read; they are created with ``requires_grad=False``,
which trains exactly as the authors' Adam does (a parameter without a gradient is never updated) and keeps
DistributedDataParallel from waiting for their gradients. `parameter_counts()` gives both totals.

``conv_impl`` (auto | native | gemm) switches how the four WaveNet regressors run their convs
(`util.conv`, as in the kit's own CAT-WaveNet: auto = GEMMs under CPU bf16 autocast, nn.Conv1d in fp32);
same parameters, same function.

Parameter counts (tests/test_published_cat.py): paper size (configs/cat_wavenet_published.yaml)
93,991,284 with every key, 92,474,356 without the 1,516,928 unused ones; the golden small model
(res 16, 2 layers, mag stage 512) 8,165,396.
"""
from __future__ import annotations

import torch
from torch import nn

from task2_regression.models.published_blocks import PublishedWaveNet, WaveCrossBlock
from util.checkpoint_import import unused_keys
from util.conv import conv_impl as check_conv_impl
from util.errors import EEGKitError

STAGES = (("envelope", 1), ("mel", 10), ("mel80", 80), ("mag", 257))  # the published stages, coarse to fine
WINDOW_FRAMES = 1920  # 30 s at 64 Hz: the only window length the published attention computes


class CATWaveNetPublished(nn.Module):
    """The authors' four-stage CAT-guided WaveNet; keys and function as published (module docstring)."""

    CONFIG_RANGES = {"conv_impl": {"choices": ["auto", "native", "gemm"]},
                     "eeg_channels": {"choices": [64]},
                     "skip_channels": {"nullable": True, "ge": 1}}
    WINDOW_FRAMES = WINDOW_FRAMES

    def __init__(self, targets: dict[str, int], residual_channels: int = 128, skip_channels: int | None = None,
                 last_stage_channels: int = 512, layers: int = 36, dilation_cycle: int = 12,
                 eeg_channels: int = 64, conv_impl: str = "auto"):
        super().__init__()
        given = [(str(name), int(bands)) for name, bands in dict(targets).items()]
        if given != list(STAGES):
            raise ValueError(f"cat_wavenet_published has the four published stages "
                             f"{', '.join(f'{n} ({b})' for n, b in STAGES)}, in this order; got targets "
                             f"{[n for n, _ in given]} (set 'targets: [envelope, mel, mel80, mag]'; mel80/mag need "
                             f"the stimulus audio)")
        if eeg_channels != 64:
            raise ValueError(f"cat_wavenet_published works on 64 EEG channels, got eeg_channels={eeg_channels}")
        skip_channels = residual_channels if skip_channels is None else skip_channels
        self.targets = dict(STAGES)
        self.eeg_channels = eeg_channels
        self.eeg2envblock = PublishedWaveNet(eeg_channels, residual_channels, skip_channels, 1, layers,
                                             dilation_cycle)
        self.block1 = WaveCrossBlock(1, 10, residual_channels, layers, dilation_cycle, eeg_channels)
        self.block2 = WaveCrossBlock(10, 80, residual_channels, layers, dilation_cycle, eeg_channels)
        self.block3 = WaveCrossBlock(80, 257, last_stage_channels, layers, dilation_cycle, eeg_channels)
        last = int(layers) - 1
        self.UNUSED_PARAMETERS = {  # regex on state-dict keys -> what they are (util.checkpoint_import)
            r"(eeg2envblock|block\d\.Fast1)\.proj1\.(weight|bias)": "each regressor's proj1",
            r"block\d\.crossattn\d\.(audio|spike)_encoder\.\d+\.w_[qkv]s\.skip_out\.(weight|bias)":
                "every DepthConv1d's skip_out",
            rf"(eeg2envblock|block\d\.Fast1)\.residual_layer\.residual_blocks\.{last}\.res_conv\.(bias|weight_g|weight_v)":
                "each regressor's last res_conv",
        }
        frozen = set(unused_keys(self))
        for name, parameter in self.named_parameters():
            if name in frozen:
                parameter.requires_grad_(False)  # never read by the forward: no gradient, never updated
        self.set_conv_impl(conv_impl)

    def regressors(self) -> list[PublishedWaveNet]:
        return [self.eeg2envblock, self.block1.Fast1, self.block2.Fast1, self.block3.Fast1]

    def set_conv_impl(self, name: str) -> None:
        """``auto | native | gemm`` for the four WaveNet regressors (same parameters, same function)."""
        check_conv_impl(name)  # validates
        self.conv_impl = name
        for regressor in self.regressors():
            regressor.conv_impl = name

    def parameter_counts(self) -> dict[str, int]:
        """{'all': every state-dict parameter, 'unused': those the forward never reads, 'used': the rest}."""
        total = sum(p.numel() for p in self.parameters())
        unused = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        return {"all": total, "unused": unused, "used": total - unused}

    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        # eeg: (batch, 1920, 64), z-scored per window
        if eeg.dim() != 3 or eeg.shape[-1] != self.eeg_channels:
            raise EEGKitError(f"cat_wavenet_published: expected eeg of shape (batch, {WINDOW_FRAMES}, "
                              f"{self.eeg_channels}), got {tuple(eeg.shape)}")
        if eeg.shape[1] != WINDOW_FRAMES:
            raise EEGKitError(f"cat_wavenet_published: needs 30-s windows of {WINDOW_FRAMES} frames (its channel "
                              f"attention has the fixed temperature sqrt({WINDOW_FRAMES})), got {eeg.shape[1]} frames; "
                              f"use 30-s windows (data.window_s / data.val_window_s: 30, evaluate --segment-s 30)")
        eeg_cf = eeg.transpose(1, 2)  # (batch, 64, time)
        envelope = self.eeg2envblock(eeg_cf).transpose(1, 2)  # (batch, time, 1)
        mel = self.block1(envelope, eeg_cf).transpose(1, 2)  # (batch, time, 10)
        mel80 = self.block2(mel, eeg_cf).transpose(1, 2)  # (batch, time, 80)
        mag = self.block3(mel80, eeg_cf).transpose(1, 2)  # (batch, time, 257)
        return {"envelope": envelope.float(), "mel": mel.float(), "mel80": mel80.float(), "mag": mag.float()}
