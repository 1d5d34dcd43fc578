"""Dual-path RNN (Luo et al. 2020) regression baseline for Task 2.

Pipeline (any input length):
  eeg (batch, time, 64) -> Conv1d(64 -> feature_dim, 1x1) -> LayerNorm
  -> cut into overlapping chunks of `chunk_size` frames with hop chunk_size // 2
     (zero padding at both ends so every frame is covered by exactly two chunks)
     giving (batch, feature_dim, n_chunks, chunk_size)
  -> n_blocks x [intra-chunk BiLSTM over the chunk axis, inter-chunk BiLSTM over the
     chunk-index axis]; each path = BiLSTM -> Linear(2*hidden -> feature_dim) ->
     LayerNorm -> residual add
  -> overlap-add back to (batch, feature_dim, time) (padding removed)
  -> PReLU -> one Linear(feature_dim -> bands) head per target.
Output length equals input length; frame i aligns with target frame i.
Defaults are "paper-ish" (feature 64, hidden 128, 6 blocks) with a 1-s chunk at 64 Hz;
the small CPU variant is configs/dprnn_small.yaml.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from task2_regression.models.contract import check_targets


class PathRNN(nn.Module):
    """BiLSTM along dim 1 of (batch', length, features) + projection + LayerNorm + residual."""

    def __init__(self, feature_dim: int, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.rnn = nn.LSTM(feature_dim, hidden_size, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden_size, feature_dim)
        self.norm = nn.LayerNorm(feature_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch', length, features)
        y, _ = self.rnn(x)  # (batch', length, 2*hidden)
        return x + self.dropout(self.norm(self.proj(y)))


class DPRNNBlock(nn.Module):
    """Intra-chunk path then inter-chunk path on (batch, n_chunks, chunk_size, features)."""

    def __init__(self, feature_dim: int, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.intra = PathRNN(feature_dim, hidden_size, dropout)
        self.inter = PathRNN(feature_dim, hidden_size, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_chunks, chunk_size, features = x.shape
        x = self.intra(x.reshape(batch * n_chunks, chunk_size, features))  # within each chunk
        x = x.reshape(batch, n_chunks, chunk_size, features).transpose(1, 2)  # (batch, chunk, n_chunks, f)
        x = self.inter(x.reshape(batch * chunk_size, n_chunks, features))  # across chunks
        return x.reshape(batch, chunk_size, n_chunks, features).transpose(1, 2).contiguous()


class DPRNN(nn.Module):
    """DPRNN regressor: EEG (batch, time, 64) -> {target: (batch, time, bands)}."""

    def __init__(
        self,
        targets: Mapping[str, int],
        n_channels: int = 64,
        feature_dim: int = 64,
        hidden_size: int = 128,
        n_blocks: int = 6,
        chunk_size: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.targets = check_targets(targets)
        if chunk_size < 2 or chunk_size % 2:
            raise ValueError(f"chunk_size must be an even number >= 2, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        self.hop = self.chunk_size // 2
        self.input_proj = nn.Conv1d(int(n_channels), int(feature_dim), kernel_size=1)
        self.input_norm = nn.LayerNorm(int(feature_dim))
        self.blocks = nn.ModuleList([DPRNNBlock(int(feature_dim), int(hidden_size), dropout) for _ in range(n_blocks)])
        self.output_act = nn.PReLU()
        self.heads = nn.ModuleDict({name: nn.Linear(int(feature_dim), bands) for name, bands in self.targets.items()})

    def _chunk(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(batch, f, time) -> (batch, n_chunks, chunk_size, f) and the padded length."""
        time = x.shape[-1]
        # pad the end so (time + rest) is a multiple of hop, then hop on both sides
        rest = (self.hop - time % self.hop) % self.hop
        x = F.pad(x, (self.hop, rest + self.hop))  # (batch, f, padded)
        padded = x.shape[-1]
        chunks = x.unfold(-1, self.chunk_size, self.hop)  # (batch, f, n_chunks, chunk_size)
        return chunks.permute(0, 2, 3, 1).contiguous(), padded

    def _overlap_add(self, chunks: torch.Tensor, padded: int, time: int) -> torch.Tensor:
        """(batch, n_chunks, chunk_size, f) -> (batch, f, time)."""
        batch, n_chunks, chunk_size, features = chunks.shape
        cols = chunks.permute(0, 3, 2, 1).reshape(batch, features * chunk_size, n_chunks)
        seq = F.fold(cols, output_size=(1, padded), kernel_size=(1, chunk_size), stride=(1, self.hop))
        return seq.reshape(batch, features, padded)[..., self.hop : self.hop + time]

    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        time = eeg.shape[1]
        x = self.input_proj(eeg.transpose(1, 2))  # (batch, f, time)
        x = self.input_norm(x.transpose(1, 2)).transpose(1, 2)
        chunks, padded = self._chunk(x)  # (batch, n_chunks, chunk, f)
        for block in self.blocks:
            chunks = block(chunks)
        seq = self._overlap_add(chunks, padded, time).transpose(1, 2)  # (batch, time, f)
        seq = self.output_act(seq)
        return {name: head(seq) for name, head in self.heads.items()}  # (batch, time, bands)
