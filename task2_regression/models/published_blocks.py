"""The building blocks of the published CAT-guided WaveNet (`MTWAVE`), computing what the authors' code computes.

Implemented from the description in ../shared/reference/published_models.md, section 1 (no code copied).
Attribute names are the authors' state-dict key parts, so a checkpoint of theirs loads key for key
(`task2_regression.import_checkpoint`); tensors are channel first, (batch, channels, time), inside.

- `WNConv1d`: a Conv1d under the classic weight norm: parameters ``bias``, ``weight_g`` (out, 1, 1),
  ``weight_v`` (out, in, k) in that order; weight = g * v / ||v|| (norm over every axis but the output
  channel), recomputed at every call; 'same' zero padding (dilation * (k - 1) / 2).
- `PublishedWaveNet` (1.1): ``init_conv.0.conv`` + ReLU, ``residual_layer.residual_blocks.{n}`` (gated,
  dilation 2 ** (n % cycle)), sum of skips * sqrt(1 / L), ``final_conv.0.conv`` + ReLU + ``final_conv.2``
  (plain Conv1d); ``proj1`` Linear(res, res) exists and is never used; the last block's ``res_conv``
  exists and its output is never used (not computed here: the result does not depend on it).
- `DepthConv1d` (1.2): 1x1 64 -> 128, PReLU, GN, depthwise k=3, PReLU, GN, ``res_out`` 1x1 128 -> 64;
  ``skip_out`` exists and is never used (not computed). PReLU comes *before* GroupNorm.
- `ConvCrossAttention` (1.3): one head over the 64 *channels* (each channel's whole series is one token),
  fixed temperature sqrt(1920), dropout 0.1 twice, + the value input, GN(64).
- `MultiLayerCrossAttention` (1.4): two rounds audio <-> spike, four-stream concatenation, Conv1d 256 -> 64
  (k 3, 'same'), GN(64).
- `WaveCrossBlock` (1.5): ``proj1`` Linear(P -> 64) on the previous prediction, ``crossattn2``
  (prediction self-attention), ``crossattn3`` (EEG self-attention), ``crossattn1`` (fusion), ``Fast1``
  (a `PublishedWaveNet` 64 -> O).

GN is ``GroupNorm(1, C, eps=1e-8)`` with affine weights throughout.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from task2_regression.models.wavenet import gated_activation
from util.conv import channel_first, conv1d_tm, conv_impl as resolve_conv_impl, time_major, weight_taps
from util.prelu import prelu

GN_EPS = 1e-8
ATTENTION_FRAMES = 1920  # T_ref of the published attention: its temperature is sqrt(1920) whatever T is
ATTENTION_DROPOUT = 0.1


def depthwise_same(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(x)`` for a depthwise 'same' ``conv`` (groups = channels, odd k, dilation 1) as k multiply-adds.

    x: (batch, C, time) -> (batch, C, time). The same sums as ``nn.Conv1d`` (zero padding), an order of
    magnitude faster on CPU than its grouped-conv kernel at these sizes (tests/test_published_cat.py).
    """
    weight = conv.weight[:, 0, :]  # (C, k)
    kernel, centre = weight.shape[1], weight.shape[1] // 2
    out = torch.addcmul(conv.bias[:, None], x, weight[:, centre:centre + 1])  # (batch, C, time)
    for tap in range(kernel):
        shift = tap - centre  # out[t] += w[tap] * x[t + shift]
        if shift < 0:
            out[:, :, -shift:].addcmul_(x[:, :, :shift], weight[:, tap:tap + 1])
        elif shift > 0:
            out[:, :, :-shift].addcmul_(x[:, :, shift:], weight[:, tap:tap + 1])
    return out


def conv_same(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(x)`` for a dense 'same' ``conv`` (odd k, dilation 1) as one matrix product per tap.

    x: (batch, C_in, time) -> (batch, C_out, time); the same sums as ``nn.Conv1d`` (zero padding).
    """
    kernel, centre = conv.weight.shape[2], conv.weight.shape[2] // 2
    out = torch.matmul(conv.weight[:, :, centre], x)  # (batch, C_out, time)
    if conv.bias is not None:
        out = out + conv.bias[:, None]
    for tap in range(kernel):
        shift = tap - centre
        if shift < 0:
            out[:, :, -shift:] += torch.matmul(conv.weight[:, :, tap], x[:, :, :shift])
        elif shift > 0:
            out[:, :, :-shift] += torch.matmul(conv.weight[:, :, tap], x[:, :, shift:])
    return out


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm(1, C, eps=1e-8): one group, affine (the published ``reg*``, ``layer_norm``, ``Layernorm*``)."""
    return nn.GroupNorm(1, channels, eps=GN_EPS)


class WNConv1d(nn.Module):
    """Conv1d with the classic weight norm: keys ``bias``, ``weight_g`` (out, 1, 1), ``weight_v`` (out, in, k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.dilation, self.padding = int(dilation), int(dilation) * (kernel_size - 1) // 2
        plain = nn.Conv1d(in_channels, out_channels, kernel_size)  # the usual initialisation, then g = ||v||
        self.bias = nn.Parameter(plain.bias.detach().clone())
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(plain.weight.detach(), dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(plain.weight.detach().clone())

    def weight(self) -> torch.Tensor:
        """g * v / ||v|| (norm over the input and kernel axes): (out, in, k)."""
        v = self.weight_v
        return v * (self.weight_g / torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, in, time) -> (batch, out, time)
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, dilation=self.dilation)

    def forward_rows(self, rows: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
        """The same conv on flat time-major rows (time * batch, in) -> (time * batch, out) (`util.conv`)."""
        return conv1d_tm(rows, weight_taps(self.weight(), dtype), self.bias, batch, self.dilation)


class ConvLayer(nn.Module):
    """A `WNConv1d` held as ``.conv`` (the published ``init_conv.0``, ``dilated_conv_layer``, ``final_conv.0``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = WNConv1d(in_channels, out_channels, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResidualBlock(nn.Module):
    """Gated residual block: keys ``dilated_conv_layer.conv``, ``res_conv``, ``skip_conv``."""

    def __init__(self, residual_channels: int, skip_channels: int, dilation: int):
        super().__init__()
        self.dilated_conv_layer = ConvLayer(residual_channels, 2 * residual_channels, 3, dilation)
        self.res_conv = WNConv1d(residual_channels, residual_channels, 1)
        self.skip_conv = WNConv1d(residual_channels, skip_channels, 1)


class ResidualGroup(nn.Module):
    """``residual_blocks.{n}`` (a ModuleList), dilation 2 ** (n % cycle)."""

    def __init__(self, residual_channels: int, skip_channels: int, layers: int, dilation_cycle: int):
        super().__init__()
        self.residual_blocks = nn.ModuleList(
            ResidualBlock(residual_channels, skip_channels, 2 ** (n % dilation_cycle)) for n in range(layers))


class PublishedWaveNet(nn.Module):
    """The published WaveNet regressor (1.1): (batch, in, time) -> (batch, out, time), channel first."""

    def __init__(self, in_channels: int, residual_channels: int, skip_channels: int, out_channels: int,
                 layers: int, dilation_cycle: int):
        super().__init__()
        if layers < 1 or dilation_cycle < 1:
            raise ValueError(f"layers and dilation_cycle must be >= 1, got {layers} and {dilation_cycle}")
        self.n_layers = int(layers)
        self.init_conv = nn.Sequential(ConvLayer(in_channels, residual_channels, 1), nn.ReLU())
        self.residual_layer = ResidualGroup(residual_channels, skip_channels, layers, dilation_cycle)
        self.final_conv = nn.Sequential(ConvLayer(skip_channels, skip_channels, 1), nn.ReLU(),
                                        nn.Conv1d(skip_channels, out_channels, 1))
        self.proj1 = nn.Linear(residual_channels, residual_channels)  # in the published state dict; never used
        self.conv_impl = "native"
        self.fused_gate = True

    def resolved_conv_impl(self, device: torch.device) -> str:
        """``native`` or ``gemm`` now (``auto``: gemm only under CPU bf16 autocast, as the kit's own WaveNet)."""
        impl = resolve_conv_impl(self.conv_impl, device)
        if self.conv_impl == "auto" and impl == "gemm" and not torch.is_autocast_enabled(device.type):
            return "native"
        return impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, in, time)
        if self.resolved_conv_impl(x.device) == "gemm":
            return self._forward_rows(x)
        blocks = self.residual_layer.residual_blocks
        x = self.init_conv(x)  # (batch, R, time)
        skip_sum = None
        for n, block in enumerate(blocks):
            gated = gated_activation(block.dilated_conv_layer(x), self.fused_gate)  # (batch, R, time)
            skip = block.skip_conv(gated)  # (batch, S, time)
            skip_sum = skip if skip_sum is None else skip_sum + skip
            if n < len(blocks) - 1:  # the last block's residual output is never read
                x = (x + block.res_conv(gated)) * math.sqrt(0.5)
        return self.final_conv(skip_sum * math.sqrt(1.0 / self.n_layers))  # (batch, out, time)

    def _forward_rows(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` as GEMMs on flat time-major rows (`util.conv.conv1d_tm`; the kit's bf16 CPU path)."""
        batch, device_type = x.shape[0], x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        blocks = self.residual_layer.residual_blocks
        with torch.autocast(device_type, enabled=False):
            rows = torch.relu(self.init_conv[0].conv.forward_rows(time_major(x, dtype), batch, dtype))  # (T*B, R)
            skip_sum = None
            for n, block in enumerate(blocks):
                gated = gated_activation(block.dilated_conv_layer.conv.forward_rows(rows, batch, dtype),
                                         self.fused_gate)  # (time * batch, R)
                skip = block.skip_conv.forward_rows(gated, batch, dtype)  # (time * batch, S)
                skip_sum = skip.float() if skip_sum is None else skip_sum.add_(skip)  # fp32 sum of the skips
                if n < len(blocks) - 1:
                    rows = (rows + block.res_conv.forward_rows(gated, batch, dtype)) * math.sqrt(0.5)
            skip_sum = (skip_sum * math.sqrt(1.0 / self.n_layers)).to(dtype)
            hidden = torch.relu(self.final_conv[0].conv.forward_rows(skip_sum, batch, dtype))
            head = self.final_conv[2]
            out = conv1d_tm(hidden, weight_taps(head.weight, dtype), head.bias, batch)  # (time * batch, out)
        return channel_first(out, batch)  # (batch, out, time)


class DepthConv1d(nn.Module):
    """Depthwise-separable block (1.2) on (batch, 64, time): keys in the published order."""

    def __init__(self, channels: int = 64, hidden: int = 128, kernel_size: int = 3):
        super().__init__()
        self.conv1d = nn.Conv1d(channels, hidden, 1)
        self.dconv1d = nn.Conv1d(hidden, hidden, kernel_size, padding=(kernel_size - 1) // 2, groups=hidden)
        self.res_out = nn.Conv1d(hidden, channels, 1)
        self.nonlinearity1 = nn.PReLU()
        self.nonlinearity2 = nn.PReLU()
        self.reg1 = group_norm(hidden)
        self.reg2 = group_norm(hidden)
        self.skip_out = nn.Conv1d(hidden, channels, 1)  # in the published state dict; its output is thrown away

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, 64, time) -> (batch, 64, time)
        # the PReLUs as util.prelu (F.prelu forward; a backward that is fast on CPU)
        x = self.reg1(prelu(self.conv1d(x), self.nonlinearity1.weight))  # (batch, 128, time); PReLU before GN
        x = self.reg2(prelu(depthwise_same(x, self.dconv1d), self.nonlinearity2.weight))
        return self.res_out(x)


class ConvCrossAttention(nn.Module):
    """One-head attention over the channels (1.3): ``forward(q, k, v)``, each (batch, 64, time)."""

    def __init__(self, channels: int = 64, hidden: int = 128, kernel_size: int = 3):
        super().__init__()
        self.w_qs = DepthConv1d(channels, hidden, kernel_size)
        self.w_ks = DepthConv1d(channels, hidden, kernel_size)
        self.w_vs = DepthConv1d(channels, hidden, kernel_size)
        self.layer_norm = group_norm(channels)
        self.attention_dropout = nn.Dropout(ATTENTION_DROPOUT)
        self.output_dropout = nn.Dropout(ATTENTION_DROPOUT)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        residual = v  # the value input, before its projection
        q, k, v = self.w_qs(q), self.w_ks(k), self.w_vs(v)  # (batch, 64, time) each
        scores = torch.matmul(q / math.sqrt(ATTENTION_FRAMES), k.transpose(1, 2))  # (batch, 64, 64)
        weights = self.attention_dropout(torch.softmax(scores, dim=-1))
        out = self.output_dropout(torch.matmul(weights, v))  # (batch, 64, time)
        return self.layer_norm(out + residual)


class MultiLayerCrossAttention(nn.Module):
    """Two-way cross-attention (1.4): ``forward(a, s)``, each (batch, 64, time) -> (batch, 64, time)."""

    def __init__(self, channels: int = 64, layers: int = 2, kernel_size: int = 3):
        super().__init__()
        self.audio_encoder = nn.ModuleList(ConvCrossAttention(channels, 2 * channels, kernel_size)
                                           for _ in range(layers))
        self.spike_encoder = nn.ModuleList(ConvCrossAttention(channels, 2 * channels, kernel_size)
                                           for _ in range(layers))
        self.projection = nn.Conv1d(4 * channels, channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.LayernormList_audio = nn.ModuleList(group_norm(channels) for _ in range(layers))  # noqa: N815
        self.LayernormList_spike = nn.ModuleList(group_norm(channels) for _ in range(layers))  # noqa: N815
        self.layernorm_out = group_norm(channels)

    def forward(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out_a, out_s, res_a, res_s, skip_a = a, s, a, s, None
        for audio, spike, norm_a, norm_s in zip(self.audio_encoder, self.spike_encoder,
                                                self.LayernormList_audio, self.LayernormList_spike):
            out_a = audio(out_s, out_a, out_a)
            out_s = spike(out_a, out_s, out_s)  # queries with the new out_a
            out_a = norm_a(out_a + res_a)
            out_s = norm_s(out_s + res_s)
            res_a, res_s = out_a, out_s
            skip_a = out_a if skip_a is None else skip_a + out_a
        fused = torch.cat([skip_a, a, out_s, s], dim=1)  # (batch, 256, time)
        return self.layernorm_out(conv_same(fused, self.projection))  # (batch, 64, time)


class WaveCrossBlock(nn.Module):
    """One published stage after the first (1.5): (prediction (batch, time, P), EEG (batch, 64, time)) -> (batch, O, time)."""

    def __init__(self, previous_bands: int, out_bands: int, channels: int, layers: int, dilation_cycle: int,
                 eeg_channels: int = 64):
        super().__init__()
        self.Fast1 = PublishedWaveNet(eeg_channels, channels, channels, out_bands, layers, dilation_cycle)  # noqa: N815
        self.crossattn1 = MultiLayerCrossAttention(eeg_channels)
        self.proj1 = nn.Linear(previous_bands, eeg_channels)
        self.crossattn2 = MultiLayerCrossAttention(eeg_channels)
        self.crossattn3 = MultiLayerCrossAttention(eeg_channels)

    def forward(self, previous: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        p = self.proj1(previous).transpose(1, 2)  # (batch, time, P) -> (batch, 64, time)
        p = self.crossattn2(p, p)  # self-attention of the projected prediction
        e = self.crossattn3(eeg, eeg)  # self-attention of the EEG
        return self.Fast1(self.crossattn1(p, e))  # fused (batch, 64, time) -> (batch, O, time)
