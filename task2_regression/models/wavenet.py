"""Non-causal WaveNet regressor: one stage of the CAT-guided WaveNet.

Architecture (reference section 6):
  1x1 input conv + ReLU
  -> `layers` residual layers, layer i has dilation 2 ** (i % dilation_cycle):
       dilated conv (kernel 3, same padding) R -> 2R channels,
       gated activation tanh(first half) * sigmoid(second half),
       residual 1x1 conv R -> R, new x = (x + residual) * sqrt(0.5),
       skip 1x1 conv R -> S
     (the last layer has no residual conv: its residual output would be unused)
  -> sum of skips * sqrt(1 / layers)
  -> head: 1x1 conv S -> S, ReLU, 1x1 conv S -> out.

Every conv is weight-normalised while training (`weight_norm=True`);
`fold_weight_norm()` removes the parametrisation (weights computed once and
stored plainly) so inference does no weight-norm work per forward call.

Speed switch: `fused_gate` selects the gated activation implementation.
  plain : autograd of tanh(a) * sigmoid(b) (5 kernels forward + backward, a cat
          in backward for the chunk);
  fused : a custom autograd Function; in no-grad mode it works in place on the
          conv output (no temporaries), in grad mode its backward writes both
          halves of the gradient straight into one buffer with the fused aten
          tanh/sigmoid backward kernels (no cat, no intermediate products).
Both compute the same values (tested).

Conv switch: `conv_impl` (``auto | native | gemm``, see util/conv.py). ``native`` runs every conv as
``nn.Conv1d`` in (batch, C, time); ``gemm`` converts the stage input once to flat time-major rows
(time * batch, C) and runs the whole stage as GEMMs (`util.conv.conv1d_tm`) with the same parameters:
under bf16 autocast the activations and the (weight-normed, once per forward) weights are cast to bf16
once and stay bf16 across layers, with autocast off inside the stage (no per-call casts). ``auto``
is ``gemm`` on CPU under bf16 autocast and ``native`` otherwise (fp32, CUDA): in fp32 oneDNN's own conv
beats the fp32 GEMMs (paper-size CAT-WaveNet, 2 threads: training step 4.21 s native against 6.73 s gemm,
inference 1.34 against 2.30 s; results/task2/benchmark_models.txt), while under bf16 oneDNN's conv is the
slow one (the reason the GEMM path exists). Same outputs and gradients within float tolerance (tested).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from util.conv import channel_first, conv1d_tm, conv_impl as _resolve_conv_impl, time_major, weight_taps


class _FusedGate(torch.autograd.Function):
    """tanh(a) * sigmoid(b) for x = cat([a, b], dim=1), with a hand-written backward."""

    @staticmethod
    def forward(ctx, x):  # x: (batch, 2C, time) or time-major rows (rows, 2C)
        half = x.shape[1] // 2
        tanh_a = torch.tanh(x[:, :half])  # (batch, C, time)
        sigmoid_b = torch.sigmoid(x[:, half:])  # (batch, C, time)
        ctx.save_for_backward(tanh_a, sigmoid_b)
        return tanh_a * sigmoid_b

    @staticmethod
    def backward(ctx, grad_out):  # grad_out: (batch, C, time)
        tanh_a, sigmoid_b = ctx.saved_tensors
        shape = list(tanh_a.shape)  # (batch, C, time) or time-major rows (rows, C)
        half = shape[1]
        shape[1] = 2 * half
        grad_x = grad_out.new_empty(shape)
        # d/da = g * s * (1 - t^2); d/db = g * t * s * (1 - s)
        torch.ops.aten.tanh_backward.grad_input(grad_out * sigmoid_b, tanh_a, grad_input=grad_x[:, :half])
        torch.ops.aten.sigmoid_backward.grad_input(grad_out * tanh_a, sigmoid_b, grad_input=grad_x[:, half:])
        return grad_x


def gated_activation(x: torch.Tensor, fused: bool) -> torch.Tensor:
    """x: (batch, 2C, time) -> tanh(x[:, :C]) * sigmoid(x[:, C:]) of shape (batch, C, time).

    Also takes time-major rows (rows, 2C) -> (rows, C) (the channels are axis 1 in both layouts).
    """
    if not fused:
        filter_part, gate_part = x.chunk(2, dim=1)
        return torch.tanh(filter_part) * torch.sigmoid(gate_part)
    if torch.is_grad_enabled() and x.requires_grad:
        return _FusedGate.apply(x)
    # Inference: x is a temporary conv output that nobody else reads; reuse it.
    half = x.shape[1] // 2
    filter_part = torch.tanh_(x[:, :half])
    gate_part = torch.sigmoid_(x[:, half:])
    return filter_part.mul_(gate_part)  # a view on x, (batch, C, time)


def _conv(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
          use_weight_norm: bool = True) -> nn.Conv1d:
    """Conv1d with 'same' padding for odd kernels, optionally weight-normalised."""
    padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation, padding=padding)
    return _weight_norm(conv) if use_weight_norm else conv


class ResidualLayer(nn.Module):
    """One gated residual layer; returns (new residual stream, skip contribution)."""

    def __init__(self, residual_channels: int, skip_channels: int, dilation: int,
                 kernel_size: int = 3, use_weight_norm: bool = True, has_residual: bool = True):
        super().__init__()
        self.dilated_conv = _conv(residual_channels, 2 * residual_channels, kernel_size,
                                  dilation, use_weight_norm)
        # The last layer's residual output is never read: no conv there, so every
        # parameter gets a gradient (DistributedDataParallel requires that).
        self.residual_conv = (_conv(residual_channels, residual_channels, 1, 1, use_weight_norm)
                              if has_residual else None)
        self.skip_conv = _conv(residual_channels, skip_channels, 1, 1, use_weight_norm)
        self.fused_gate = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (batch, R, time)
        gated = gated_activation(self.dilated_conv(x), self.fused_gate)  # (batch, R, time)
        skip = self.skip_conv(gated)  # (batch, S, time)
        if self.residual_conv is None:
            return x, skip
        residual = self.residual_conv(gated)  # (batch, R, time)
        return (x + residual) * math.sqrt(0.5), skip


class WaveNetRegressor(nn.Module):
    """Non-causal WaveNet mapping (batch, in_channels, time) -> (batch, out_channels, time)."""

    def __init__(self, in_channels: int, out_channels: int, layers: int = 36,
                 dilation_cycle: int = 12, residual_channels: int = 128,
                 skip_channels: int = 128, kernel_size: int = 3, weight_norm: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for same padding, got {kernel_size}")
        if layers < 1 or dilation_cycle < 1:
            raise ValueError("layers and dilation_cycle must be >= 1")
        self.n_layers = layers
        self.input_conv = _conv(in_channels, residual_channels, 1, 1, weight_norm)
        self.layers = nn.ModuleList(
            ResidualLayer(residual_channels, skip_channels, 2 ** (i % dilation_cycle),
                          kernel_size, weight_norm, has_residual=i < layers - 1)
            for i in range(layers)
        )
        self.head_hidden = _conv(skip_channels, skip_channels, 1, 1, weight_norm)
        self.head_out = _conv(skip_channels, out_channels, 1, 1, weight_norm)
        self.conv_impl = "native"

    def resolved_conv_impl(self, device: torch.device) -> str:
        """``native`` or ``gemm`` for a forward on ``device`` now (``auto``: gemm only under CPU bf16 autocast)."""
        impl = _resolve_conv_impl(self.conv_impl, device)
        if self.conv_impl == "auto" and impl == "gemm" and not torch.is_autocast_enabled(device.type):
            return "native"
        return impl

    def set_fused_gate(self, enabled: bool) -> None:
        for layer in self.layers:
            layer.fused_gate = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, in_channels, time)
        if self.resolved_conv_impl(x.device) == "gemm":
            return self._forward_gemm(x)
        x = torch.relu(self.input_conv(x))  # (batch, R, time)
        skip_sum = None
        for layer in self.layers:
            x, skip = layer(x)
            skip_sum = skip if skip_sum is None else skip_sum + skip  # (batch, S, time)
        skip_sum = skip_sum * math.sqrt(1.0 / self.n_layers)
        return self.head_out(torch.relu(self.head_hidden(skip_sum)))  # (batch, out, time)


    def _forward_gemm(self, x: torch.Tensor) -> torch.Tensor:
        """The same network as `forward` on flat time-major rows (time * batch, C); see the module docstring."""
        batch, device_type = x.shape[0], x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        with torch.autocast(device_type, enabled=False):

            def conv(module: nn.Conv1d, rows: torch.Tensor) -> torch.Tensor:
                return conv1d_tm(rows, weight_taps(module.weight, dtype), module.bias, batch, module.dilation[0])

            rows = torch.relu(conv(self.input_conv, time_major(x, dtype)))  # (time * batch, R)
            skip_sum = None
            for layer in self.layers:
                gated = gated_activation(conv(layer.dilated_conv, rows), layer.fused_gate)  # (time * batch, R)
                skip = conv(layer.skip_conv, gated)  # (time * batch, S)
                # the skip sum is kept in fp32 (36 bf16 roundings would add up); one cheap pass per layer
                skip_sum = skip.float() if skip_sum is None else skip_sum.add_(skip)
                if layer.residual_conv is not None:
                    rows = (rows + conv(layer.residual_conv, gated)) * math.sqrt(0.5)
            skip_sum = (skip_sum * math.sqrt(1.0 / self.n_layers)).to(dtype)
            out = conv(self.head_out, torch.relu(conv(self.head_hidden, skip_sum)))  # (time * batch, out)
        return channel_first(out, batch)  # (batch, out, time), in the compute dtype


def fold_weight_norm(module: nn.Module) -> int:
    """Replace every weight-norm parametrisation under `module` by its current weight.

    Returns the number of folded tensors. Outputs are unchanged; the state_dict keys
    change from `...parametrizations.weight.original0/1` to `...weight`.
    """
    folded = 0
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
            folded += 1
    return folded
