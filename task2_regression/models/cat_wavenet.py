"""CAT-guided WaveNet: coarse-to-fine multi-stage EEG -> stimulus-feature regressor.

`CATWaveNet(targets, **model_kwargs)`; `targets` is an ordered dict of stage
targets, coarse to fine, e.g. {"envelope": 1, "mel": 10, "mel80": 80, "mag": 257}.
One stage per target:
  stage 1 input  = the EEG (64 channels);
  stage k>1 input = CrossAttentionBlock(stage k-1 prediction, EEG): the fused
                   `attention_dim`-channel features (see cross_attention.py);
  every stage    = WaveNetRegressor(input -> that target's bands) (see wavenet.py).
With a single target (Ablation-1, "WaveNet mel10 stage alone") there is no attention.
Gradients flow through every stage's prediction into the next stage.

Forward: `model(eeg)` with eeg (batch, time, 64) returns
{target: (batch, time, bands)} for every stage, same length as the input, float32.

Width: every stage uses `residual_channels` / `skip_channels`, except the stage
whose target is `wide_stage` (default "mag", the paper's last stage) which uses
`last_stage_channels` for both. With wide_stage=None the last stage of whatever
targets are given is the wide one. Dropping mag (no stimulus audio) therefore
does not silently turn the mel stage into a 512-channel stage.

Speed switches (all keep the same parameters and the same outputs):
  fast=True       fused gated activation + attention_impl 'auto' (SDPA, or the explicit softmax for
                  short local chunks where it is faster; fast=False: plain paths);
  fused_gate / attention_impl override `fast` individually (benchmark ablation);
  attention_chunk local attention window in samples (None = full window);
  bf16=True       runs the forward under CPU/CUDA bfloat16 autocast (outputs float32);
  conv_impl       auto | native | gemm: how the WaveNet stages run their convs (util/conv.py;
                  auto = GEMMs under CPU bf16 autocast, nn.Conv1d in fp32 and on CUDA: wavenet.py);
  fold_weight_norm() removes the weight-norm parametrisation for inference.

Parameter count of the paper configuration (configs/cat_wavenet.yaml, counted on the
real module in tests/test_cat_wavenet.py): 90,468,664 = 3 x ~4.77 M (128-channel stages)
+ 75.81 M (512-channel mag stage) + 3 x ~0.12 M (attention blocks). The authors' released model
has 93,991,284 (model type ``cat_wavenet_published``, task2_regression/models/cat_wavenet_published.py,
which computes their function exactly and loads their checkpoints; docs/published_models.md compares
the two). The difference, counted on both modules (tests/test_published_cat.py):
  - WaveNet stages: the same layers and widths. The published regressors also hold parameters their
    forward never reads (a Linear(R, R) `proj1` and the last block's residual conv, +625,280), and the
    kit weight-normalises the output conv too (-348 gains).
  - Attention (+2,897,688): a different function, not a larger projection. The published blocks attend
    over the 64 EEG channels, each channel's whole 1920-sample series being one token (64 x 64 scores,
    temperature fixed at sqrt(1920)), so they compute 30-s windows only; here attention runs over time
    (tokens are frames), any window length. Each published stage runs three two-layer, two-way blocks:
    one on the projected previous prediction with itself, one on the EEG with itself, one fusing the
    two; every one-head attention takes Q, K and V from depthwise-separable conv blocks 64 -> 128 -> 64
    (360,664 parameters per block, 99,072 of them in `skip_out` convs that are never used). Here one
    block per stage: a self-attention per modality on `attention_dim` channels, then `attention_depth`
    two-way cross-attentions. The published block output concatenates four streams (the summed audio
    side, the prediction, the EEG side, the EEG: 256 channels) and a kernel-3 conv brings them back to
    64 channels; here a 1x1 conv fuses the two streams.
Without the parameters the published forward never reads (1,516,928) it has 92,474,356.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from task2_regression.models.cross_attention import CrossAttentionBlock
from task2_regression.models.wavenet import WaveNetRegressor, fold_weight_norm
from util.conv import conv_impl


class CATWaveNet(nn.Module):
    """Multi-stage WaveNet with cross-attention guidance between stages."""

    CONFIG_RANGES = {"conv_impl": {"choices": ["auto", "native", "gemm"]},
                     "attention_impl": {"choices": ["auto", "sdpa", "plain"], "nullable": True}}

    def __init__(self, targets: dict[str, int], layers: int = 36, dilation_cycle: int = 12,
                 residual_channels: int = 128, skip_channels: int | None = None,
                 last_stage_channels: int = 512, wide_stage: str | None = "mag",
                 kernel_size: int = 3, eeg_channels: int = 64, attention_dim: int = 64,
                 attention_heads: int = 4, attention_depth: int = 2,
                 attention_conv_kernel: int = 3, attention_chunk: int | None = None,
                 weight_norm: bool = True, fast: bool = True, fused_gate: bool | None = None,
                 attention_impl: str | None = None, bf16: bool = False, conv_impl: str = "auto"):
        super().__init__()
        if not targets:
            raise ValueError("CATWaveNet needs at least one target")
        for name, bands in targets.items():
            if int(bands) < 1:
                raise ValueError(f"target {name!r} has {bands} bands; need >= 1")
        self.targets = {str(name): int(bands) for name, bands in targets.items()}
        self.eeg_channels = eeg_channels
        self.bf16 = bool(bf16)
        skip_channels = residual_channels if skip_channels is None else skip_channels
        names = list(self.targets)
        wide_name = names[-1] if wide_stage is None else wide_stage

        self.stages = nn.ModuleList()
        self.attention = nn.ModuleList()
        for index, name in enumerate(names):
            wide = name == wide_name
            stage_in = eeg_channels if index == 0 else attention_dim
            self.stages.append(WaveNetRegressor(
                stage_in, self.targets[name], layers=layers, dilation_cycle=dilation_cycle,
                residual_channels=last_stage_channels if wide else residual_channels,
                skip_channels=last_stage_channels if wide else skip_channels,
                kernel_size=kernel_size, weight_norm=weight_norm))
            if index > 0:
                self.attention.append(CrossAttentionBlock(
                    self.targets[names[index - 1]], eeg_channels, attention_dim,
                    attention_heads, attention_depth, attention_conv_kernel))
        self.set_conv_impl(conv_impl)
        self.set_speed(fused_gate=fast if fused_gate is None else fused_gate,
                       attention_impl=("auto" if fast else "plain") if attention_impl is None
                       else attention_impl,
                       attention_chunk=attention_chunk)

    def set_speed(self, fused_gate: bool, attention_impl: str, attention_chunk: int | None) -> None:
        """Switch implementations in place (same parameters, same outputs)."""
        if attention_impl not in ("auto", "sdpa", "plain"):
            raise ValueError(f"attention_impl must be 'auto', 'sdpa' or 'plain', got {attention_impl!r}")
        if attention_chunk is not None and int(attention_chunk) < 1:
            raise ValueError(f"attention_chunk must be >= 1 or None, got {attention_chunk}")
        self.fused_gate = bool(fused_gate)
        self.attention_impl = attention_impl
        self.attention_chunk = None if attention_chunk is None else int(attention_chunk)
        for stage in self.stages:
            stage.set_fused_gate(self.fused_gate)
        for block in self.attention:
            block.configure(attention_impl, self.attention_chunk)

    def set_conv_impl(self, name: str) -> None:
        """``auto | native | gemm`` for every WaveNet stage (same parameters, same outputs)."""
        conv_impl(name)  # validates
        self.conv_impl = name
        for stage in self.stages:
            stage.conv_impl = name

    def fold_weight_norm(self) -> int:
        """Bake weight norm into plain weights (for inference); returns the number folded.

        Load a training checkpoint into a fresh (weight-normed) model first, then fold.
        """
        return fold_weight_norm(self)

    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        if eeg.dim() != 3 or eeg.shape[-1] != self.eeg_channels:
            raise ValueError(f"expected eeg of shape (batch, time, {self.eeg_channels}), "
                             f"got {tuple(eeg.shape)}")
        eeg_cf = eeg.transpose(1, 2)  # (batch, 64, time)
        autocast = (torch.autocast(eeg.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        outputs: dict[str, torch.Tensor] = {}
        with autocast:
            prediction = None  # (batch, bands of previous stage, time)
            for index, (name, stage) in enumerate(zip(self.targets, self.stages)):
                stage_input = eeg_cf if index == 0 else self.attention[index - 1](prediction, eeg_cf)
                prediction = stage(stage_input)  # (batch, bands, time)
                outputs[name] = prediction.transpose(1, 2).float()  # (batch, time, bands)
        return outputs
