"""Cross-attention fusion of the EEG embedding into the speech features.

Before every TCN repeat NeuroSpex fuses the EEG into the speech stream
(reference section 2): the EEG embedding (already interpolated to the speech
frame rate) is the query, the speech features are key and value (``n_heads``
heads, embed ``eeg_dim``, kdim = vdim = B).  The result is
``LayerNorm(eeg + attn)``, concatenated with the EEG (2 * eeg_dim channels),
concatenated with the speech features and mixed by a 1x1 conv back to B.
The attention uses the fused scaled-dot-product kernel and never
materialises the (frames x frames) weight map itself.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CrossAttention(nn.Module):
    """Multi-head attention with query dim ``embed_dim`` and key/value dim ``kv_dim``."""

    def __init__(self, embed_dim: int, kv_dim: int, n_heads: int):
        super().__init__()
        if embed_dim % n_heads != 0:
            raise ValueError(f"cross-attention embed {embed_dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.query_proj = nn.Linear(embed_dim, embed_dim)
        self.key_proj = nn.Linear(kv_dim, embed_dim)
        self.value_proj = nn.Linear(kv_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        return x.view(batch, frames, self.n_heads, dim // self.n_heads).transpose(1, 2)  # (batch, heads, frames, hd)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor) -> torch.Tensor:
        # query: (batch, frames_q, embed_dim); key_value: (batch, frames_kv, kv_dim)
        batch, frames_q, embed_dim = query.shape
        attended = F.scaled_dot_product_attention(
            self._split_heads(self.query_proj(query)),
            self._split_heads(self.key_proj(key_value)),
            self._split_heads(self.value_proj(key_value)))  # (batch, heads, frames_q, head_dim)
        attended = attended.transpose(1, 2).reshape(batch, frames_q, embed_dim)
        return self.out_proj(attended)  # (batch, frames_q, embed_dim)


class CrossAttentionFusion(nn.Module):
    """Fuse an EEG embedding (query) into speech features (key/value); output B channels."""

    def __init__(self, bottleneck: int, eeg_dim: int = 64, n_heads: int = 2):
        super().__init__()
        self.cross_attention = CrossAttention(eeg_dim, bottleneck, n_heads)
        self.attention_norm = nn.LayerNorm(eeg_dim)
        self.fuse_conv = nn.Conv1d(bottleneck + 2 * eeg_dim, bottleneck, 1)

    def forward(self, speech: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        # speech: (batch, B, frames); eeg: (batch, frames, eeg_dim) at the speech frame rate
        speech_time_first = speech.transpose(1, 2)  # (batch, frames, B)
        attended = self.attention_norm(eeg + self.cross_attention(eeg, speech_time_first))  # (batch, frames, eeg_dim)
        eeg_features = torch.cat([attended, eeg], dim=2).transpose(1, 2)  # (batch, 2*eeg_dim, frames)
        return self.fuse_conv(torch.cat([speech, eeg_features], dim=1))  # (batch, B, frames)

    def forward_cl(self, speech: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        # speech: (batch, frames, B) channel-last; eeg: (batch, frames, eeg_dim); the same as `forward`
        attended = self.attention_norm(eeg + self.cross_attention(eeg, speech))  # (batch, frames, eeg_dim)
        fused = torch.cat([speech, attended.to(speech.dtype), eeg.to(speech.dtype)], dim=2)  # (batch, frames, B + 2 eeg_dim)
        return F.linear(fused, self.fuse_conv.weight[:, :, 0], self.fuse_conv.bias)  # (batch, frames, B)
