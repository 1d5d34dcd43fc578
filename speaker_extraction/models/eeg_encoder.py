"""EEG encoder of NeuroSpex: a pre-convolution followed by AdC blocks.

An AdC (attention + depthwise convolution) block, as in reference section 2:

    x = norm1(x + self_attention(x))          # multi-head, over time
    x = norm2(x + prelu(depthwise_conv(x)))   # kernel 9, groups = eeg_dim

Both norms are LayerNorms over the channels of each time step, so the encoder
accepts any EEG length (the released code normalises over exactly 512 time
samples, which ties it to 4-s windows at 128 Hz).  With ``adc_blocks=0`` the
encoder is only the pre-convolution, i.e. a linear projection of the EEG
(the "direct EEG input" point of the AdC-depth ablation).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over time using the fused SDPA kernel.

    Never materialises or returns the attention weights.
    """

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"attention dim {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.qkv_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, dim = x.shape  # (batch, time, dim)
        qkv = self.qkv_proj(x).view(batch, time, 3, self.n_heads, dim // self.n_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (batch, heads, time, head_dim)
        attended = F.scaled_dot_product_attention(query, key, value)  # (batch, heads, time, head_dim)
        attended = attended.transpose(1, 2).reshape(batch, time, dim)  # (batch, time, dim)
        return self.out_proj(attended)


class AdCBlock(nn.Module):
    """Self-attention + depthwise conv block with residuals and per-step LayerNorm."""

    def __init__(self, dim: int = 64, n_heads: int = 1, kernel_size: int = 9):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"AdC kernel_size must be odd, got {kernel_size}")
        self.attention = MultiHeadSelfAttention(dim, n_heads)
        self.attention_norm = nn.LayerNorm(dim)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.activation = nn.PReLU()
        self.conv_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (batch, time, dim)
        x = self.attention_norm(x + self.attention(x))
        conv_out = self.activation(self.depthwise_conv(x.transpose(1, 2))).transpose(1, 2)  # (batch, time, dim)
        return self.conv_norm(x + conv_out)


class EEGEncoder(nn.Module):
    """Pre-convolution (kernel 3, same padding) + ``adc_blocks`` AdC blocks.

    Input eeg (batch, time, eeg_channels) -> embedding (batch, time, eeg_dim).
    """

    def __init__(self, eeg_channels: int = 64, eeg_dim: int = 64, adc_blocks: int = 6,
                 eeg_heads: int = 1, adc_kernel: int = 9, preconv_kernel: int = 3):
        super().__init__()
        if adc_blocks < 0:
            raise ValueError(f"adc_blocks must be >= 0, got {adc_blocks}")
        self.eeg_channels = eeg_channels
        self.pre_conv = nn.Conv1d(eeg_channels, eeg_dim, preconv_kernel, padding="same")
        self.blocks = nn.ModuleList(AdCBlock(eeg_dim, eeg_heads, adc_kernel) for _ in range(adc_blocks))

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        if eeg.dim() != 3 or eeg.shape[-1] != self.eeg_channels:
            raise ValueError(f"eeg must be (batch, time, {self.eeg_channels}), got {tuple(eeg.shape)}")
        x = self.pre_conv(eeg.transpose(1, 2)).transpose(1, 2)  # (batch, time, eeg_dim)
        for block in self.blocks:
            x = block(x)
        return x
