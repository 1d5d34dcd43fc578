"""The published NeuroSpex: the function of the authors' released ``ConvTasNet_dConv_MHA_Net``, exactly.

Written from the description in ``../shared/reference/published_models.md`` section 2 (no code of
the authors' repository is in the kit). Parameter names are the authors' state-dict keys, one for
one, so an authors' checkpoint loads with ``load_state_dict`` (``speaker_extraction.import_checkpoint``)
and ``state_dict()`` lists the same 284 keys in the same order at paper size.

    mixture (batch, S) --speech_encoder: Conv1d(1->N, L, stride L/2), no padding, ReLU--> w (batch, N, K)
    eeg (batch, 512, 64) --eeg_encoder: pre_conv + d_Conv_Att_block x adc_blocks--> (batch, 64, 512)
    separator: x = bottleneck_conv1x1(LayerNorm_N(w))                               # (batch, B, K)
               e = interpolate(eeg embedding, K frames, linear)                   # once, every repeat
               for r: y = LayerNorm_64(e + MHA(q=e, k=v=x)); x = fusion_r([x; y; e]); x = tcn_r(x)
               mask = ReLU(mask_conv1x1(x))                                        # (batch, N, K)
    speech_decoder: Linear(N->L)((w * mask)^T), overlap-add hop L/2, zero-padded at the end to S

Where the kit's own ``neurospex`` (speaker_extraction/models/neurospex.py) differs on purpose:
the EEG encoder's second LayerNorm here is over the 512 *time* frames (``layernorm_depth_conv``,
normalized_shape 512), which ties this model to 4-s EEG windows at 128 Hz; the authors' code uses
4 encoder blocks (the paper says 6); the speech encoder and decoder have biases; the fusion conv is
bias-free; norms use eps 1e-5 / 1e-6 as listed per module below.

This model therefore takes 4-s windows only: mixture ``(batch, samples)`` with ``samples`` = 32000
(4 s at 8 kHz) and EEG ``(batch, eeg_frames, eeg_channels)`` = ``(batch, 512, 64)`` (4 s at 128 Hz);
any other shape is refused with one `EEGKitError` line. The kit's ``predict.extract_long`` and
``evaluate`` cut whole trials into windows of the run's ``data.window_s`` (4 s) and stitch them,
so whole trials work too.

Model config keys (``model:`` with ``type: neurospex_published``): ``N``, ``L``, ``B``, ``H``, ``P``,
``X``, ``R`` (the authors' constructor), ``adc_blocks`` (EEG-encoder blocks, released code: 4),
``eeg_channels`` (64: fixed by the authors' code), ``eeg_frames`` (512: the time LayerNorm's size) and
``samples`` (32000: the mixture length of one window). Parameters with more than one axis start from
``xavier_normal_``, as in the authors' code.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from util.errors import EEGKitError

EEG_DIM = 64  # the authors' EEG width: pre_conv 64 -> 64 and every attention's embed size


class SpeechEncoder(nn.Module):
    """``conv1d_U``: Conv1d(1 -> N, kernel L, stride L/2), no padding, then ReLU."""

    def __init__(self, N: int, L: int):
        super().__init__()
        self.conv1d_U = nn.Conv1d(1, N, L, stride=L // 2)

    def forward(self, mixture: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1d_U(mixture.unsqueeze(1)))  # (batch, N, K)


class DConvAttBlock(nn.Module):
    """One ``d_Conv_Att_block``: self-attention over time + LayerNorm over channels, then a depthwise
    conv + PReLU branch + LayerNorm over the *time* axis (``eeg_frames`` long)."""

    def __init__(self, eeg_frames: int, kernel: int = 9):
        super().__init__()
        # registration order = the authors' state-dict order
        self.depthwise_conv = nn.Conv1d(EEG_DIM, EEG_DIM, kernel, padding=kernel // 2, groups=EEG_DIM)
        self.prelu = nn.PReLU()
        self.layernorm_depth_conv = nn.LayerNorm(eeg_frames, eps=1e-6)
        self.attention = nn.MultiheadAttention(EEG_DIM, 1, batch_first=True)
        self.layernorm_att = nn.LayerNorm(EEG_DIM, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.transpose(1, 2)  # (batch, T, 64)
        attended, _ = self.attention(frames, frames, frames, need_weights=False)  # (batch, T, 64)
        x = self.layernorm_att(frames + attended).transpose(1, 2)  # (batch, 64, T)
        y = self.prelu(self.depthwise_conv(x))  # (batch, 64, T)
        return self.layernorm_depth_conv(x + y)  # normalised over T: (batch, 64, T)


class EEGEncoder(nn.Module):
    """``pre_conv`` Conv1d(64, 64, 3, padding 1), then ``d_Conv_Att_block.{i}``; (batch, T, 64) -> (batch, 64, T)."""

    def __init__(self, adc_blocks: int, eeg_frames: int):
        super().__init__()
        self.pre_conv = nn.Conv1d(EEG_DIM, EEG_DIM, 3, padding=1)
        self.d_Conv_Att_block = nn.ModuleList(DConvAttBlock(eeg_frames) for _ in range(adc_blocks))

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        x = self.pre_conv(eeg.transpose(1, 2))  # (batch, 64, T)
        for block in self.d_Conv_Att_block:
            x = block(x)
        return x  # (batch, 64, T)


class TCNBlock(nn.Module):
    """``tcn.{j}``: 1x1 B->H, PReLU, channel LayerNorm, dilated depthwise conv, PReLU, channel LayerNorm,
    1x1 H->B; the caller adds the residual."""

    def __init__(self, B: int, H: int, P: int, dilation: int):
        super().__init__()
        self.conv1x1 = nn.Conv1d(B, H, 1)
        self.prelu1 = nn.PReLU()
        self.lnorm1 = nn.LayerNorm(H, eps=1e-5)
        self.lnorm2 = nn.LayerNorm(H, eps=1e-5)
        self.dconv = nn.Conv1d(H, H, P, dilation=dilation, padding=dilation * (P - 1) // 2, groups=H)
        self.prelu2 = nn.PReLU()
        self.sconv = nn.Conv1d(H, B, 1)

    @staticmethod
    def _channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x.transpose(1, 2)).transpose(1, 2)  # per frame over the channels: (batch, C, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._channel_norm(self.lnorm1, self.prelu1(self.conv1x1(x)))  # (batch, H, K)
        y = self._channel_norm(self.lnorm2, self.prelu2(self.dconv(y)))  # (batch, H, K)
        return self.sconv(y)  # (batch, B, K)


class TCNRepeat(nn.Module):
    """``tcn.{r}``: X blocks with dilations 1, 2, ..., 2^(X-1), each ``x = x + block(x)``."""

    def __init__(self, B: int, H: int, P: int, X: int):
        super().__init__()
        self.tcn = nn.ModuleList(TCNBlock(B, H, P, 2 ** j) for j in range(X))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.tcn:
            x = x + block(x)
        return x  # (batch, B, K)


class CrossAttention(nn.Module):
    """``cross_attn.{r}``: MHA(64, 2 heads, kdim = vdim = B), query the EEG, key = value the speech;
    returns ``cat([LayerNorm_64(eeg + attn), eeg])`` (batch, K, 128)."""

    def __init__(self, B: int):
        super().__init__()
        self.cross_attention = nn.MultiheadAttention(EEG_DIM, 2, kdim=B, vdim=B, batch_first=True)
        self.layernorm = nn.LayerNorm(EEG_DIM, eps=1e-6)

    def forward(self, eeg: torch.Tensor, speech: torch.Tensor) -> torch.Tensor:
        # eeg: (batch, K, 64); speech: (batch, K, B)
        attended, _ = self.cross_attention(eeg, speech, speech, need_weights=False)  # (batch, K, 64)
        return torch.cat([self.layernorm(eeg + attended), eeg], dim=2)  # (batch, K, 128)


class Separator(nn.Module):
    """``separator``: the mask (batch, N, K) from the encoded mixture and the EEG embedding."""

    def __init__(self, N: int, B: int, H: int, P: int, X: int, R: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(N, eps=1e-5)
        self.bottleneck_conv1x1 = nn.Conv1d(N, B, 1)
        self.tcn = nn.ModuleList(TCNRepeat(B, H, P, X) for _ in range(R))
        self.mask_conv1x1 = nn.Conv1d(B, N, 1)
        self.cross_attn = nn.ModuleList(CrossAttention(B) for _ in range(R))
        self.fusion = nn.ModuleList(nn.Conv1d(B + 2 * EEG_DIM, B, 1, bias=False) for _ in range(R))

    def forward(self, encoded: torch.Tensor, eeg_embedding: torch.Tensor) -> torch.Tensor:
        # encoded: (batch, N, K); eeg_embedding: (batch, 64, T)
        n_frames = encoded.shape[2]
        x = self.bottleneck_conv1x1(self.layer_norm(encoded.transpose(1, 2)).transpose(1, 2))  # (batch, B, K)
        eeg = F.interpolate(eeg_embedding, size=n_frames, mode="linear",
                            align_corners=False).transpose(1, 2)  # (batch, K, 64), the same for every repeat
        for cross_attn, fusion, repeat in zip(self.cross_attn, self.fusion, self.tcn):
            guide = cross_attn(eeg, x.transpose(1, 2)).transpose(1, 2)  # (batch, 128, K)
            x = repeat(fusion(torch.cat([x, guide], dim=1)))  # (batch, B, K)
        return F.relu(self.mask_conv1x1(x))  # (batch, N, K)


class SpeechDecoder(nn.Module):
    """``basis_signals`` Linear(N -> L) per frame, overlap-add with hop L/2, zero-padded at the end to S."""

    def __init__(self, N: int, L: int):
        super().__init__()
        self.window, self.hop = L, L // 2
        self.basis_signals = nn.Linear(N, L)

    def forward(self, masked: torch.Tensor, n_samples: int) -> torch.Tensor:
        frames = self.basis_signals(masked.transpose(1, 2))  # (batch, K, L)
        length = (frames.shape[1] - 1) * self.hop + self.window
        summed = F.fold(frames.transpose(1, 2), output_size=(1, length), kernel_size=(1, self.window),
                        stride=(1, self.hop)).reshape(frames.shape[0], length)  # (batch, length)
        return F.pad(summed, (0, max(0, n_samples - length)))  # (batch, S)


class NeuroSpexPublished(nn.Module):
    """``ConvTasNet_dConv_MHA_Net``: ``forward(mixture (batch, 32000), eeg (batch, 512, 64)) -> (batch, 32000)``."""

    CONFIG_RANGES = {"L": {"ge": 2}, "eeg_channels": {"choices": [EEG_DIM]}}

    def __init__(self, N: int = 256, L: int = 20, B: int = 256, H: int = 512, P: int = 3, X: int = 4,
                 R: int = 4, adc_blocks: int = 4, eeg_channels: int = EEG_DIM, eeg_frames: int = 512,
                 samples: int = 32000):
        super().__init__()
        if L < 2 or L % 2:
            raise ValueError(f"encoder kernel L must be even and >= 2 (stride L/2), got {L}")
        if P % 2 != 1:
            raise ValueError(f"TCN kernel P must be odd (padding dilation (P-1)/2 keeps the length), got {P}")
        if eeg_channels != EEG_DIM:
            raise ValueError(f"eeg_channels must be {EEG_DIM} (the authors' EEG encoder is 64 wide), got {eeg_channels}")
        if samples < L:
            raise ValueError(f"samples {samples} is shorter than one encoder frame (L = {L})")
        self.eeg_frames, self.samples, self.eeg_channels = eeg_frames, samples, eeg_channels
        self.speech_encoder = SpeechEncoder(N, L)
        self.eeg_encoder = EEGEncoder(adc_blocks, eeg_frames)
        self.separator = Separator(N, B, H, P, X, R)
        self.speech_decoder = SpeechDecoder(N, L)
        for parameter in self.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_normal_(parameter)

    def check_inputs(self, mixture: torch.Tensor, eeg: torch.Tensor) -> None:
        """One `EEGKitError` line unless mixture (batch, samples) and eeg (batch, eeg_frames, 64) fit."""
        want = (f"mixture (batch, {self.samples}) and eeg (batch, {self.eeg_frames}, {self.eeg_channels}): "
                f"4-s windows at 8 kHz / 128 Hz")
        fits = (mixture.dim() == 2 and eeg.dim() == 3 and mixture.shape[0] == eeg.shape[0]
                and mixture.shape[1] == self.samples and tuple(eeg.shape[1:]) == (self.eeg_frames, self.eeg_channels))
        if not fits:
            raise EEGKitError(f"neurospex_published: needs {want} (the released model's time LayerNorm is "
                              f"{self.eeg_frames} frames long: in a run, data.window_s = {self.eeg_frames} / "
                              f"data.fs_eeg and train.crop_s 0); got mixture {tuple(mixture.shape)} and eeg "
                              f"{tuple(eeg.shape)}")

    def forward(self, mixture: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        self.check_inputs(mixture, eeg)
        encoded = self.speech_encoder(mixture)  # (batch, N, K)
        mask = self.separator(encoded, self.eeg_encoder(eeg))  # (batch, N, K)
        return self.speech_decoder(encoded * mask, mixture.shape[1])  # (batch, S)


def build_neurospex_published(model_cfg: dict) -> NeuroSpexPublished:
    """Build the published NeuroSpex from a ``model:`` config dict; unknown keys refused."""
    from util.config import check_options

    cfg = dict(model_cfg)
    model_type = cfg.pop("type", "neurospex_published")
    if model_type != "neurospex_published":
        raise ValueError(f"model type {model_type!r} is not neurospex_published")
    check_options("model", cfg, NeuroSpexPublished.__init__, NeuroSpexPublished.CONFIG_RANGES)
    return NeuroSpexPublished(**cfg)
