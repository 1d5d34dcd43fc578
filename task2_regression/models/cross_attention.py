"""Length-agnostic cross-attention (CAT) block that guides stages 2..n of the CAT-WaveNet.

The published code attends over the 64 *channels*, each channel's whole
1920-sample series being the feature vector, which ties the model to 30-s
windows. Here every attention attends over *time*: tokens are time frames,
features are the `dim` channels, split into `heads` heads. Any window length
works (tested 320, 1920, 3840 samples).

Block (inputs and output channels first, (batch, channels, time)):
  prev  = 1x1 conv(previous stage prediction, bands -> dim)
  eeg   = 1x1 conv(EEG, 64 -> dim)
  prev  = SelfAttention(prev); eeg = SelfAttention(eeg)
  repeat `depth` times (both directions from the same inputs):
      prev, eeg = ConvCrossAttention(query=prev, context=eeg),
                  ConvCrossAttention(query=eeg, context=prev)
  fused = 1x1 conv(cat([prev, eeg]), 2 dim -> dim)       # the stage's WaveNet input
Each attention: output projection, residual add, GroupNorm.
ConvCrossAttention takes Q from a depthwise-separable conv block (depthwise conv
kernel `conv_kernel` + pointwise conv) of the query modality and K, V from two
such blocks of the context modality (BASEN style).

Attention kernel (`attention_impl`):
  "sdpa"  : torch.nn.functional.scaled_dot_product_attention (fused; no T x T
            weight matrix is materialised by this code);
  "plain" : explicit softmax(Q K^T / sqrt(d)) V, the reference path;
  "auto"  : "plain" for local chunks of <= AUTO_PLAIN_SPAN frames (several chunks per window,
            where CPU SDPA's per-call overhead dominates: 3x slower than plain at 40 chunks x 2 heads x
            64 frames x 8 dims, forward + backward), "sdpa" otherwise.
`chunk` (samples, optional): local attention inside non-overlapping chunks of
that many frames (the tail chunk is padded and its padding masked), making the
cost linear in the window length; None = full attention over the whole window.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


AUTO_PLAIN_SPAN = 128


def _attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int,
            impl: str, chunk: int | None) -> torch.Tensor:
    """Multi-head attention over time.

    query, key, value: (batch, dim, time) -> (batch, dim, time).
    """
    batch, dim, time = query.shape
    head_dim = dim // heads
    pad = 0
    key_mask = None
    if chunk is not None and chunk < time:
        pad = (-time) % chunk
        if pad:
            query, key, value = (F.pad(t, (0, pad)) for t in (query, key, value))
        n_chunks = (time + pad) // chunk
        span = chunk
        if pad:
            valid = torch.ones(n_chunks, chunk, dtype=torch.bool, device=query.device)
            valid[-1, chunk - pad:] = False
            # (batch * n_chunks, 1, 1, chunk): keys allowed per chunk
            key_mask = valid.repeat(batch, 1)[:, None, None, :]
    else:
        n_chunks, span = 1, time

    def split(t: torch.Tensor) -> torch.Tensor:
        # (batch, dim, n_chunks*span) -> (batch*n_chunks, heads, span, head_dim)
        # contiguous: CPU SDPA takes its flash kernel only for a unit-stride last axis; on this view
        # (stride `time` along head_dim) it falls back to the math path (4.5x slower fwd + bwd at 1920 frames)
        t = t.reshape(batch, heads, head_dim, n_chunks, span)
        return t.permute(0, 3, 1, 4, 2).reshape(batch * n_chunks, heads, span, head_dim).contiguous()

    q, k, v = split(query), split(key), split(value)
    if impl == "auto":
        impl = "plain" if n_chunks > 1 and span <= AUTO_PLAIN_SPAN else "sdpa"
    if impl == "sdpa":
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
    elif impl == "plain":
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)  # (B*n, h, span, span)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
    else:
        raise ValueError(f"attention_impl must be 'auto', 'sdpa' or 'plain', got {impl!r}")
    # (batch*n_chunks, heads, span, head_dim) -> (batch, dim, time)
    out = out.reshape(batch, n_chunks, heads, span, head_dim).permute(0, 2, 4, 1, 3)
    out = out.reshape(batch, dim, n_chunks * span)
    return out[:, :, :time] if pad else out


def _group_norm(dim: int) -> nn.GroupNorm:
    groups = 8 if dim % 8 == 0 else 1
    return nn.GroupNorm(groups, dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention over time + residual + GroupNorm; (batch, dim, time) in/out."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv1d(dim, 3 * dim, 1)
        self.out = nn.Conv1d(dim, dim, 1)
        self.norm = _group_norm(dim)
        self.impl = "sdpa"
        self.chunk: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(x).chunk(3, dim=1)  # each (batch, dim, time)
        attended = _attend(query, key, value, self.heads, self.impl, self.chunk)
        return self.norm(x + self.out(attended))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise conv (same padding) + pointwise conv; (batch, dim, time) in/out."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pointwise = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ConvCrossAttention(nn.Module):
    """Queries from one modality, keys/values from the other; residual on the query side."""

    def __init__(self, dim: int, heads: int, conv_kernel: int = 3):
        super().__init__()
        self.heads = heads
        self.query_conv = DepthwiseSeparableConv(dim, conv_kernel)
        self.key_conv = DepthwiseSeparableConv(dim, conv_kernel)
        self.value_conv = DepthwiseSeparableConv(dim, conv_kernel)
        self.out = nn.Conv1d(dim, dim, 1)
        self.norm = _group_norm(dim)
        self.impl = "sdpa"
        self.chunk: int | None = None

    def forward(self, query_x: torch.Tensor, context_x: torch.Tensor) -> torch.Tensor:
        # query_x, context_x: (batch, dim, time)
        attended = _attend(self.query_conv(query_x), self.key_conv(context_x),
                           self.value_conv(context_x), self.heads, self.impl, self.chunk)
        return self.norm(query_x + self.out(attended))


class CrossAttentionBlock(nn.Module):
    """Fuse the previous stage's prediction with the EEG: returns (batch, dim, time)."""

    def __init__(self, prev_channels: int, eeg_channels: int = 64, dim: int = 64,
                 heads: int = 4, depth: int = 2, conv_kernel: int = 3):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"attention_dim {dim} must be divisible by attention_heads {heads}")
        self.prev_proj = nn.Conv1d(prev_channels, dim, 1)
        self.eeg_proj = nn.Conv1d(eeg_channels, dim, 1)
        self.prev_self = SelfAttention(dim, heads)
        self.eeg_self = SelfAttention(dim, heads)
        self.prev_from_eeg = nn.ModuleList(ConvCrossAttention(dim, heads, conv_kernel) for _ in range(depth))
        self.eeg_from_prev = nn.ModuleList(ConvCrossAttention(dim, heads, conv_kernel) for _ in range(depth))
        self.fuse = nn.Conv1d(2 * dim, dim, 1)

    def configure(self, impl: str, chunk: int | None) -> None:
        for module in self.modules():
            if isinstance(module, (SelfAttention, ConvCrossAttention)):
                module.impl, module.chunk = impl, chunk

    def forward(self, prev: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        # prev: (batch, bands, time); eeg: (batch, 64, time)
        prev = self.prev_self(self.prev_proj(prev))  # (batch, dim, time)
        eeg = self.eeg_self(self.eeg_proj(eeg))  # (batch, dim, time)
        for prev_layer, eeg_layer in zip(self.prev_from_eeg, self.eeg_from_prev):
            prev, eeg = prev_layer(prev, eeg), eeg_layer(eeg, prev)
        return self.fuse(torch.cat([prev, eeg], dim=1))  # (batch, dim, time)
