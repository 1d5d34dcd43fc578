"""Conv-TasNet temporal convolutional network pieces used by NeuroSpex.

``ChannelLayerNorm`` normalises the channels of each frame (per-frame channel
LayerNorm); ``TCNBlock`` is one 1-D conv block (1x1 B->H, PReLU, norm,
dilated depthwise conv, PReLU, norm, 1x1 H->B) with a residual connection and
no skip output; ``TCNStack`` is X blocks with dilations 1, 2, ..., 2^(X-1).
`forward` takes channel-first tensors (batch, channels, frames) (``nn.Conv1d``: ``model.conv_impl:
native``); `forward_cl` computes the same with the same parameters on channel-last tensors
(batch, frames, channels) (``conv_impl: gemm``): the 1x1 convs are one GEMM each (``F.linear``), the
channel LayerNorm needs no transposes, the dilated depthwise conv is k shifted multiply-adds and the
PReLUs are `util.prelu.prelu` (hand-written backwards for both: torch's are slow on CPU).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from util.prelu import prelu


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (batch, channels, frames) tensor, per frame."""

    def __init__(self, n_channels: int, eps: float = 1e-8):
        super().__init__()
        self.n_channels = n_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_channels))
        self.bias = nn.Parameter(torch.zeros(n_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, channels, frames); layer_norm acts on the last axis
        return F.layer_norm(x.transpose(1, 2), (self.n_channels,), self.weight, self.bias,
                            self.eps).transpose(1, 2)


def _side_taps(kernel: int, dilation: int, frames: int):
    """(j, out_rows, in_rows) for every non-centre tap j that reaches a frame: out[out_rows] += x[in_rows] w_j."""
    centre = kernel // 2
    for j in range(kernel):
        offset = (j - centre) * dilation
        if j == centre or abs(offset) >= frames:
            continue
        if offset < 0:  # out[t] += x[t - |o|] w_j
            yield j, slice(-offset, None), slice(None, frames + offset)
        else:  # out[t] += x[t + o] w_j
            yield j, slice(None, frames - offset), slice(offset, None)


class _DepthwiseCL(torch.autograd.Function):
    """Dilated depthwise 'same' conv on channel-last x (batch, frames, C) as k shifted multiply-adds, with a
    hand-written backward (autograd of the in-place slice adds costs 2.5x more: copies of every slice)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dilation: int):
        # x: (batch, frames, C); weight: (C, k) in x's dtype; bias: (C,) or None
        out = x * weight[:, weight.shape[1] // 2]  # (batch, frames, C)
        if bias is not None:
            out.add_(bias)
        for j, out_rows, in_rows in _side_taps(weight.shape[1], dilation, x.shape[1]):
            out[:, out_rows].addcmul_(x[:, in_rows], weight[:, j])
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.has_bias = dilation, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()  # (batch, frames, C)
        centre = weight.shape[1] // 2
        grad_x = grad * weight[:, centre]  # (batch, frames, C)
        grad_w = torch.zeros_like(weight)  # (C, k); a tap that reaches no frame keeps 0
        grad_w[:, centre] = (grad * x).sum((0, 1))
        for j, out_rows, in_rows in _side_taps(weight.shape[1], ctx.dilation, x.shape[1]):
            grad_x[:, in_rows].addcmul_(grad[:, out_rows], weight[:, j])  # x[in_rows] fed out[out_rows]
            grad_w[:, j] = (grad[:, out_rows] * x[:, in_rows]).sum((0, 1))
        grad_b = grad.sum((0, 1)) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


def depthwise_conv_cl(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Depthwise 'same' ``conv`` (groups = channels, odd kernel) on channel-last x (batch, frames, C)."""
    weight = conv.weight[:, 0, :].to(x.dtype)  # (C, k)
    bias = conv.bias.to(x.dtype) if conv.bias is not None else None
    return _DepthwiseCL.apply(x, weight, bias, conv.dilation[0])  # (batch, frames, C)


def pointwise_cl(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """1x1 ``conv`` on channel-last x (batch, frames, C_in) -> (batch, frames, C_out): one GEMM."""
    return F.linear(x, conv.weight[:, :, 0], conv.bias)


class TCNBlock(nn.Module):
    """One Conv-TasNet 1-D conv block with a residual connection (no skip sum)."""

    def __init__(self, bottleneck: int, hidden: int, kernel_size: int, dilation: int):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"TCN kernel_size P must be odd (non-causal same padding), got {kernel_size}")
        self.in_conv = nn.Conv1d(bottleneck, hidden, 1)
        self.in_activation = nn.PReLU()
        self.in_norm = ChannelLayerNorm(hidden)
        self.depthwise_conv = nn.Conv1d(hidden, hidden, kernel_size, dilation=dilation,
                                        padding=dilation * (kernel_size - 1) // 2, groups=hidden)
        self.depthwise_activation = nn.PReLU()
        self.depthwise_norm = ChannelLayerNorm(hidden)
        self.out_conv = nn.Conv1d(hidden, bottleneck, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, B, frames)
        y = self.in_norm(self.in_activation(self.in_conv(x)))  # (batch, H, frames)
        y = self.depthwise_norm(self.depthwise_activation(self.depthwise_conv(y)))  # (batch, H, frames)
        return x + self.out_conv(y)  # (batch, B, frames)

    def forward_cl(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, frames, B), channel-last; the same block as `forward`
        norm = self.in_norm
        y = F.layer_norm(prelu(pointwise_cl(x, self.in_conv), self.in_activation.weight), (norm.n_channels,),
                         norm.weight, norm.bias, norm.eps)  # (batch, frames, H)
        norm = self.depthwise_norm
        y = F.layer_norm(prelu(depthwise_conv_cl(y, self.depthwise_conv), self.depthwise_activation.weight),
                         (norm.n_channels,), norm.weight, norm.bias, norm.eps)  # (batch, frames, H)
        return x + pointwise_cl(y, self.out_conv)  # (batch, frames, B)


class TCNStack(nn.Module):
    """X TCN blocks with exponentially growing dilation (one 'repeat')."""

    def __init__(self, bottleneck: int, hidden: int, kernel_size: int, n_blocks: int):
        super().__init__()
        self.blocks = nn.Sequential(*(TCNBlock(bottleneck, hidden, kernel_size, 2 ** index)
                                      for index in range(n_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)  # (batch, B, frames)

    def forward_cl(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block.forward_cl(x)
        return x  # (batch, frames, B)
