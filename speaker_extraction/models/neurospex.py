"""NeuroSpex: EEG-guided extraction of the attended talker from a mixture.

Architecture (reference section 2, arXiv 2409.02489):

    mixture (batch, samples) --Conv1d(1->N, L, stride L/2)+ReLU--> w (batch, N, frames)
    eeg (batch, time, C) --EEGEncoder--> (batch, time, eeg_dim) --linear interp--> (batch, frames, eeg_dim)
    x = Conv1x1(N->B)(ChannelLayerNorm(w))
    repeat R times: x = TCNStack(CrossAttentionFusion(x, eeg))
    mask = ReLU(Conv1x1(B->N)(x));  estimate = OverlapAdd(Linear(N->L)(w * mask))

The output always has exactly the mixture's length: the mixture is padded at
the end to a whole number of frames and the overlap-added signal is trimmed.
Overlap-add uses ``F.fold``, so the model runs on any device.

Model config keys (the YAML ``model:`` section): ``type: neurospex``, ``N``,
``L``, ``B``, ``H``, ``P``, ``X``, ``R``, ``eeg_channels``, ``eeg_dim``,
``adc_blocks``, ``eeg_heads`` (AdC self-attention heads, default 1),
``attn_heads`` (cross-attention heads, default 2), ``adc_kernel`` (default 9), ``conv_impl``
(``auto | native | gemm``, default auto, see util/conv.py: ``gemm`` runs the bottleneck, the fusions,
the TCN and the mask conv channel-last (batch, frames, C), every 1x1 conv one GEMM, no transposes;
``native`` runs them as ``nn.Conv1d`` channel-first; ``auto`` = gemm on CPU, native on CUDA; same
parameters, same outputs within float tolerance, tested).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from speaker_extraction.models.eeg_encoder import EEGEncoder
from speaker_extraction.models.fusion import CrossAttentionFusion
from speaker_extraction.models.tcn import ChannelLayerNorm, TCNStack, pointwise_cl
from util.conv import conv_impl as resolve_conv_impl

# Defaults = the paper-size model (6 AdC blocks).
DEFAULT_CONFIG = {
    "type": "neurospex", "N": 256, "L": 20, "B": 256, "H": 512, "P": 3, "X": 4, "R": 4,
    "eeg_channels": 64, "eeg_dim": 64, "adc_blocks": 6, "eeg_heads": 1, "attn_heads": 2,
    "adc_kernel": 9, "conv_impl": "auto",
}


class NeuroSpex(nn.Module):
    """EEG-guided speaker extractor; ``forward(mixture, eeg) -> estimate``."""

    # config rules beyond util.config.check_options' defaults (sizes >= 1): the AdC ablation uses 0 blocks
    CONFIG_RANGES = {"adc_blocks": {"ge": 0}, "L": {"ge": 2}, "conv_impl": {"choices": ["auto", "native", "gemm"]}}

    def __init__(self, N: int = 256, L: int = 20, B: int = 256, H: int = 512, P: int = 3,
                 X: int = 4, R: int = 4, eeg_channels: int = 64, eeg_dim: int = 64,
                 adc_blocks: int = 6, eeg_heads: int = 1, attn_heads: int = 2, adc_kernel: int = 9,
                 conv_impl: str = "auto"):
        super().__init__()
        resolve_conv_impl(conv_impl)  # validates
        self.conv_impl = conv_impl
        if L < 2 or L % 2 != 0:
            raise ValueError(f"encoder kernel L must be even and >= 2 (hop is L/2), got {L}")
        self.window = L
        self.hop = L // 2
        self.eeg_channels = eeg_channels
        self.speech_encoder = nn.Conv1d(1, N, L, stride=self.hop, bias=False)
        self.eeg_encoder = EEGEncoder(eeg_channels, eeg_dim, adc_blocks, eeg_heads, adc_kernel)
        self.input_norm = ChannelLayerNorm(N)
        self.bottleneck = nn.Conv1d(N, B, 1)
        self.fusions = nn.ModuleList(CrossAttentionFusion(B, eeg_dim, attn_heads) for _ in range(R))
        self.repeats = nn.ModuleList(TCNStack(B, H, P, X) for _ in range(R))
        self.mask_conv = nn.Conv1d(B, N, 1)
        self.decoder = nn.Linear(N, L, bias=False)

    def _padded_length(self, n_samples: int) -> int:
        """Smallest length >= n_samples (and >= L) that is a whole number of frames."""
        if n_samples <= self.window:
            return self.window
        n_frames = -(-(n_samples - self.window) // self.hop) + 1
        return (n_frames - 1) * self.hop + self.window

    def overlap_add(self, frames: torch.Tensor, length: int) -> torch.Tensor:
        """(batch, frames, L) -> (batch, length) with hop L/2 (device agnostic, via F.fold)."""
        summed = F.fold(frames.transpose(1, 2), output_size=(1, length),
                        kernel_size=(1, self.window), stride=(1, self.hop))  # (batch, 1, 1, length)
        return summed.reshape(frames.shape[0], length)

    def forward(self, mixture: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        if mixture.dim() != 2:
            raise ValueError(f"mixture must be (batch, samples), got {tuple(mixture.shape)}")
        if eeg.dim() != 3 or eeg.shape[0] != mixture.shape[0]:
            raise ValueError(f"eeg must be (batch={mixture.shape[0]}, time, {self.eeg_channels}), "
                             f"got {tuple(eeg.shape)}")
        n_samples = mixture.shape[1]
        padded_length = self._padded_length(n_samples)
        padded = F.pad(mixture, (0, padded_length - n_samples))  # (batch, padded_length)
        encoded = F.relu(self.speech_encoder(padded.unsqueeze(1)))  # (batch, N, frames)
        n_frames = encoded.shape[2]

        eeg_embedding = self.eeg_encoder(eeg)  # (batch, time, eeg_dim)
        eeg_embedding = F.interpolate(eeg_embedding.transpose(1, 2), size=n_frames, mode="linear",
                                      align_corners=False).transpose(1, 2)  # (batch, frames, eeg_dim)

        if resolve_conv_impl(self.conv_impl, mixture.device) == "gemm":
            norm = self.input_norm
            encoded_cl = encoded.transpose(1, 2)  # (batch, frames, N)
            features = pointwise_cl(F.layer_norm(encoded_cl, (norm.n_channels,), norm.weight, norm.bias, norm.eps),
                                    self.bottleneck)  # (batch, frames, B)
            for fusion, repeat in zip(self.fusions, self.repeats):
                features = repeat.forward_cl(fusion.forward_cl(features, eeg_embedding))  # (batch, frames, B)
            mask = F.relu(pointwise_cl(features, self.mask_conv))  # (batch, frames, N)
            frames = self.decoder(encoded_cl * mask)  # (batch, frames, L)
        else:
            features = self.bottleneck(self.input_norm(encoded))  # (batch, B, frames)
            for fusion, repeat in zip(self.fusions, self.repeats):
                features = repeat(fusion(features, eeg_embedding))  # (batch, B, frames)
            mask = F.relu(self.mask_conv(features))  # (batch, N, frames)
            frames = self.decoder((encoded * mask).transpose(1, 2))  # (batch, frames, L)
        return self.overlap_add(frames, padded_length)[:, :n_samples]  # (batch, samples)


def build_neurospex(model_cfg: dict) -> NeuroSpex:
    """Build NeuroSpex from a ``model:`` config dict; unknown keys raise ValueError."""
    cfg = dict(model_cfg)
    model_type = cfg.pop("type", "neurospex")
    if model_type != "neurospex":
        raise ValueError(f"model type {model_type!r} is not neurospex")
    from util.config import check_options

    check_options("model", cfg, NeuroSpex.__init__, NeuroSpex.CONFIG_RANGES)
    return NeuroSpex(**cfg)


# DESIGN.md names ``build_model`` in this module too; the package-level
# ``speaker_extraction.models.build_model`` dispatches on ``type``.
build_model = build_neurospex
