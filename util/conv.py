"""The kit's one fast 1-D convolution: `conv1d_tm`, a dilated 'same' conv as k GEMMs in time-major layout.

Layout: activations are time-major and flat, ``(time * batch, channels)`` (row ``t * batch + b``), so
the k taps of a dilated conv are *contiguous row slices* of the same buffer: tap j with offset
``o = (j - k // 2) * dilation`` reads rows ``(t + o) * batch + b``. The conv is then k plain 2-D GEMMs
that accumulate in place into row slices of the output (``addmm_``), and its backward is 2k GEMMs
(input gradient into row slices, weight gradient per tap) plus one column sum for the bias. There is no
padding, no im2col copy and no cat: the zero padding of ``nn.Conv1d(padding=dilation * (k - 1) // 2)``
is the rows a shifted tap does not reach. With ``k == 1`` it is one ``addmm`` (a 1x1 conv / linear).

Why: on this CPU (avx512_bf16) a bf16 GEMM runs ~4x faster than an fp32 one, but ``nn.Conv1d`` under
bf16 autocast is *slower* than fp32 (oneDNN's bf16 conv path plus per-call casts). Kept in bf16
across layers (cast once per step, see `time_major` / `weight_taps`) the GEMM formulation runs at
matmul speed. In fp32 it computes what ``nn.Conv1d`` computes (same sums, different order: tested to
1e-5 relative in tests/test_conv.py, outputs and gradients); in bf16 the accumulation across taps is
rounded to bf16 after each tap (relative error ~1e-2, the size of bf16's own rounding).

`conv_impl(name, device)` resolves the ``model.conv_impl`` setting ``auto | native | gemm``: ``auto`` is
``gemm`` on CPU and ``native`` (cuDNN) elsewhere.
"""
from __future__ import annotations

import torch

CONV_IMPLS = ("auto", "native", "gemm")


def conv_impl(name: str, device: torch.device | str | None = None) -> str:
    """``auto`` -> ``gemm`` on CPU, ``native`` on other devices; ``native`` / ``gemm`` unchanged."""
    if name not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}, got {name!r}")
    if name != "auto":
        return name
    device_type = torch.device(device).type if device is not None else "cpu"
    return "gemm" if device_type == "cpu" else "native"


def _taps(kernel_size: int, dilation: int) -> list[int]:
    return [(j - kernel_size // 2) * dilation for j in range(kernel_size)]


class _ConvTM(torch.autograd.Function):
    """y[t] = bias + sum_j x[t + o_j] @ w[j] on flat time-major rows (zero outside [0, time))."""

    @staticmethod
    def forward(ctx, x, weight, bias, batch: int, dilation: int):
        # x: (time * batch, C_in); weight: (k, C_in, C_out); bias: (C_out,) or None
        kernel = weight.shape[0]
        offsets = _taps(kernel, dilation)
        rows = x.shape[0]
        centre = kernel // 2
        if bias is not None:
            y = torch.addmm(bias.to(x.dtype), x, weight[centre])  # (time * batch, C_out)
        else:
            y = torch.mm(x, weight[centre])
        for j, offset in enumerate(offsets):
            shift = abs(offset) * batch
            if j == centre or shift >= rows:
                continue
            if offset < 0:  # y[t] += x[t - |o|] w_j for t >= |o|
                y[shift:].addmm_(x[:rows - shift], weight[j])
            else:  # y[t] += x[t + o] w_j for t < time - o
                y[:rows - shift].addmm_(x[shift:], weight[j])
        ctx.save_for_backward(x, weight)
        ctx.batch, ctx.dilation, ctx.has_bias = batch, dilation, bias is not None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        kernel = weight.shape[0]
        offsets = _taps(kernel, ctx.dilation)
        rows = x.shape[0]
        centre = kernel // 2
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(grad_y, weight[centre].t())  # (time * batch, C_in)
            for j, offset in enumerate(offsets):
                shift = abs(offset) * ctx.batch
                if j == centre or shift >= rows:
                    continue
                if offset < 0:  # x[s] fed y[s + |o|]
                    grad_x[:rows - shift].addmm_(grad_y[shift:], weight[j].t())
                else:  # x[s] fed y[s - o]
                    grad_x[shift:].addmm_(grad_y[:rows - shift], weight[j].t())
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)  # (k, C_in, C_out), in weight's (strided) layout
            for j, offset in enumerate(offsets):
                shift = abs(offset) * ctx.batch
                if shift >= rows:
                    grad_w[j].zero_()
                elif offset < 0:
                    torch.mm(x[:rows - shift].t(), grad_y[shift:], out=grad_w[j])
                elif offset > 0:
                    torch.mm(x[shift:].t(), grad_y[:rows - shift], out=grad_w[j])
                else:
                    torch.mm(x.t(), grad_y, out=grad_w[j])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # summed in grad_y's dtype (CPU accumulates bf16 sums in fp32; the result is rounded once, like
            # the bf16 GEMMs' weight gradients); a dtype= sum would first copy all of grad_y to fp32
            grad_b = grad_y.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None


def conv1d_tm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, batch: int,
              dilation: int = 1) -> torch.Tensor:
    """Dilated 'same' conv on flat time-major rows: x (time * batch, C_in) -> (time * batch, C_out).

    ``weight`` is (k, C_in, C_out) in the compute dtype (see `weight_taps`); ``bias`` (C_out,) may stay fp32
    (its gradient is returned in fp32). Equals ``nn.Conv1d(C_in, C_out, k, dilation=d, padding=d*(k-1)//2)``.
    """
    if x.dim() != 2 or weight.dim() != 3 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv1d_tm: expected x (rows, C_in) and weight (k, C_in, C_out), "
                         f"got {tuple(x.shape)} and {tuple(weight.shape)}")
    if weight.shape[0] % 2 != 1:
        raise ValueError(f"conv1d_tm: kernel size must be odd for 'same' padding, got {weight.shape[0]}")
    if weight.shape[0] == 1:  # a 1x1 conv is a linear layer; autograd's addmm is as good
        return torch.addmm(bias.to(x.dtype), x, weight[0]) if bias is not None else x @ weight[0]
    return _ConvTM.apply(x.contiguous(), weight, bias, int(batch), int(dilation))


class _Taps(torch.autograd.Function):
    """Conv1d weight (C_out, C_in, k) -> tap rows (C_in * k, C_out) in ``dtype``, and back for the gradient.

    Both directions are a cast plus one 2-D transpose of the flat (C_out, C_in * k) matrix. The obvious
    ``weight.permute(2, 1, 0).contiguous()`` is a 3-D transpose with the k taps innermost, several times
    slower on this CPU, above all its backward (an fp32 copy that weight norm needs contiguous) in the
    512-channel stage of the paper-size CAT-WaveNet (benchmarks/task2_models.py times the whole step).
    """

    @staticmethod
    def forward(ctx, weight, dtype):
        ctx.weight_dtype, ctx.shape = weight.dtype, weight.shape
        flat = weight.reshape(weight.shape[0], -1)  # (C_out, C_in * k)
        return flat.to(dtype).t().contiguous()  # (C_in * k, C_out)

    @staticmethod
    def backward(ctx, grad):  # grad: (C_in * k, C_out)
        return grad.t().to(ctx.weight_dtype).contiguous().view(ctx.shape), None


def weight_taps(conv_weight: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``nn.Conv1d`` weight (C_out, C_in, k) -> GEMM taps (k, C_in, C_out) in ``dtype`` (differentiable).

    The taps are a strided view of one (C_in, k, C_out) buffer: each tap ``[j]`` is a (C_in, C_out) matrix
    with unit column stride, which the GEMMs read (and their gradients are written) in place.
    """
    c_out, c_in, kernel = conv_weight.shape
    rows = _Taps.apply(conv_weight, conv_weight.dtype if dtype is None else dtype)  # (C_in * k, C_out)
    return rows.view(c_in, kernel, c_out).transpose(0, 1)  # (k, C_in, C_out)


def time_major(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(batch, C, time) -> flat time-major rows (time * batch, C), contiguous, in ``dtype``."""
    batch, channels, time = x.shape
    out = x.permute(2, 0, 1) if dtype is None else x.permute(2, 0, 1).to(dtype)
    return out.reshape(time * batch, channels)


def channel_first(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """Flat time-major rows (time * batch, C) -> (batch, C, time) (a view; call .contiguous() if needed)."""
    time = rows.shape[0] // batch
    return rows.view(time, batch, rows.shape[1]).permute(1, 2, 0)
