"""Audio encoder: waveform → log-mel (VTLP in training; optionally cepstrally smoothed) → SpecAugment
(training) → conv subsampling ×4 → torchaudio Conformer."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn
from torchaudio.models.conformer import ConformerLayer

from mmr1.config import AudioConfig
from mmr1.encoders.output import EncoderOutput, masked_mean


def _halve(n: torch.Tensor) -> torch.Tensor:
    """Output length of a kernel-3, stride-2 convolution without padding (0 when the input is too short)."""
    return ((n - 3) // 2 + 1).clamp(min=0)


def _zero_past(waveform: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero the samples of waveform [B, S] at or past each clip's length."""
    return waveform * (torch.arange(waveform.shape[1], device=waveform.device) < lengths[:, None])


def warp_frequencies(spectrogram: torch.Tensor, alpha: torch.Tensor, knee: float = 0.6) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton, 2013) of a spectrogram [B, F, T] whose F bins span 0 to
    Nyquist, by factor alpha [B]: the output bin at frequency g reads the input at g·α below a knee, then along a
    line that keeps Nyquist at Nyquist (linear interpolation between bins). The knee is at `knee` × Nyquist
    × min(α, 1) / α (4.8 kHz at 16 kHz sampling for α ≤ 1, as in the paper)."""
    B, F, _ = spectrogram.shape
    bins = torch.linspace(0, 1, F, device=spectrogram.device)  # [F] frequency as a fraction of Nyquist
    a = alpha.to(spectrogram)[:, None]  # [B, 1]
    start = knee * a.clamp(max=1) / a  # [B, 1] where the line starts
    line = 1 - (1 - start * a) / (1 - start) * (1 - bins)  # [B, F]
    source = torch.where(bins <= start, bins * a, line).clamp(0, 1) * (F - 1)  # [B, F] fractional input bins
    low = source.floor().long().clamp(max=F - 2)  # [B, F]
    frac = (source - low)[..., None]  # [B, F, 1]
    below = spectrogram.gather(1, low[..., None].expand_as(spectrogram))
    above = spectrogram.gather(1, (low + 1)[..., None].expand_as(spectrogram))
    return below + frac * (above - below)  # [B, F, T]


class Conv2dSubsampling(nn.Module):
    """Two 3×3 stride-2 convolutions over (time, mel) then a Linear: [B, T, n_mels] → [B, T', width], T' ≈ T/4."""

    def __init__(self, n_mels: int, width: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2), nn.ReLU(),
        )
        n_freq = int(_halve(_halve(torch.tensor(n_mels))))
        self.out = nn.Linear(width * n_freq, width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.conv(features[:, None])  # [B, C, T', F']
        return self.out(x.transpose(1, 2).flatten(2))  # [B, T', C * F'] → [B, T', D]

    @staticmethod
    def output_lengths(frame_lengths: torch.Tensor) -> torch.Tensor:
        return _halve(_halve(frame_lengths))


def _conformer_layer(layer: ConformerLayer, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`ConformerLayer.forward` on x [B, T, D], zeroing padded frames before its depthwise convolution.

    torchaudio's layer lets padded frames leak into the last valid ones through that convolution;
    ESPnet and WeNet mask them there, and so does this. Weights stay torchaudio's.
    """
    x = x + 0.5 * layer.ffn1(x)
    h = layer.self_attn_layer_norm(x).transpose(0, 1).contiguous()  # [T, B, D]; MultiheadAttention rounds a
    # non-contiguous input differently when its weights need no grad
    h, _ = layer.self_attn(h, h, h, key_padding_mask=~mask, need_weights=False)
    x = x + layer.self_attn_dropout(h.transpose(0, 1))
    conv = layer.conv_module
    h = conv.sequential[:2](conv.layer_norm(x).transpose(1, 2))  # pointwise conv + GLU: [B, D, T]
    h = conv.sequential[2:](h * mask[:, None])  # depthwise conv ... pointwise conv: [B, D, T]
    x = x + h.transpose(1, 2)
    x = x + 0.5 * layer.ffn2(x)
    return layer.final_layer_norm(x)


class AudioEncoder(nn.Module):
    """Encodes a batch of waveforms of different lengths; a length of 0 means no audio for that sample."""

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.width: int = cfg.width
        # Zero padding (not reflection) so that frames never see past a clip's end differently when it is padded.
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
            pad_mode="constant",
        )
        masks = []
        if cfg.freq_mask > 0:
            masks.append(torchaudio.transforms.FrequencyMasking(cfg.freq_mask, iid_masks=True))
        if cfg.time_mask > 0:
            masks.append(torchaudio.transforms.TimeMasking(cfg.time_mask, iid_masks=True))
        self.spec_augment = nn.Sequential(*masks)
        if cfg.cepstra:  # [n_mels, n_mels] projection onto the first `cepstra` orthonormal DCT-II bases
            dct = torchaudio.functional.create_dct(cfg.cepstra, cfg.n_mels, norm="ortho")  # [n_mels, cepstra]
            self.register_buffer("lifter", dct @ dct.T, persistent=False)
        self.subsample = Conv2dSubsampling(cfg.n_mels, cfg.width)
        self.conformer = torchaudio.models.Conformer(
            input_dim=cfg.width, num_heads=cfg.n_heads, ffn_dim=cfg.ffn_dim, num_layers=cfg.depth,
            depthwise_conv_kernel_size=cfg.conv_kernel, dropout=cfg.dropout,
        )

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor, sample_rate: int | None = None) -> EncoderOutput:
        """waveform [B, S] float; lengths [B] in samples (0 = absent); sample_rate defaults to the config's."""
        return self.forward_features(*self.log_mel(waveform, lengths, sample_rate))

    def log_mel(
        self, waveform: torch.Tensor, lengths: torch.Tensor, sample_rate: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [B, T, n_mels]: resampled log-mel (liftered to its first cfg.cepstra DCT coefficients if
        set), normalised per utterance (or per mel band with cfg.normalize="mel": cepstral mean and variance
        normalisation, which removes a fixed channel or speaker spectral tilt), 0 past each clip; frame
        lengths [B]."""
        cfg = self.cfg
        sample_rate = cfg.sample_rate if sample_rate is None else sample_rate
        self._check_waveform(waveform, lengths, sample_rate)
        waveform = _zero_past(waveform.float(), lengths)  # a clip reads the same however much it is padded
        if sample_rate != cfg.sample_rate:
            waveform = torchaudio.functional.resample(waveform, sample_rate, cfg.sample_rate)  # [B, S']
            lengths = -(-lengths * cfg.sample_rate // sample_rate)  # ceil, as resample sizes its output
            waveform = _zero_past(waveform, lengths)  # the filter rings past each clip's end
        if self.training and cfg.vtlp > 0:  # each clip's frequencies warped by its own factor
            alpha = 1 + cfg.vtlp * (2 * torch.rand(waveform.shape[0], device=waveform.device) - 1)  # [B]
            power = self.mel.mel_scale(warp_frequencies(self.mel.spectrogram(waveform), alpha))  # [B, n_mels, T]
        else:
            power = self.mel(waveform)  # [B, n_mels, T]
        features = torch.log(power + 1e-6).transpose(1, 2)  # [B, T, n_mels]
        if cfg.cepstra:
            features = features @ self.lifter  # [B, T, n_mels]: the envelope of each frame, harmonics smoothed
        frame_lengths = self.frame_lengths(lengths)
        mask = torch.arange(features.shape[1], device=features.device) < frame_lengths[:, None]  # [B, T]
        weights = mask[..., None].float()  # [B, T, 1]
        per_band = cfg.normalize == "mel"
        dims = (1,) if per_band else (1, 2)  # statistics over the frames of each band, or of the whole clip
        count = (weights.sum(dim=1, keepdim=True) * (1 if per_band else cfg.n_mels)).clamp(min=1)  # [B, 1, 1]
        mean = (features * weights).sum(dim=dims, keepdim=True) / count  # [B, 1, n_mels] or [B, 1, 1]
        var = ((features - mean) ** 2 * weights).sum(dim=dims, keepdim=True) / count
        features = (features - mean) / torch.sqrt(var + 1e-5) * weights
        return features, frame_lengths

    def forward_features(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> EncoderOutput:
        """Encode log-mel features [B, T, n_mels] with frame_lengths [B] (what `log_mel` returns)."""
        self._check_features(features, frame_lengths)
        if self.training:
            features = self.spec_augment(features.transpose(1, 2)).transpose(1, 2)  # masks on [B, n_mels, T]
        x = self.subsample(features)  # [B, T', D]
        token_lengths = self.subsample.output_lengths(frame_lengths)  # [B]
        mask = torch.arange(x.shape[1], device=x.device) < token_lengths[:, None]  # [B, T']
        # Attention needs one key per row: an absent row attends to its first frame, then is masked out.
        attend = mask.clone()
        attend[:, 0] = True
        for layer in self.conformer.conformer_layers:
            x = _conformer_layer(layer, x, attend)
        tokens = torch.where(mask[..., None], x, torch.zeros_like(x))  # [B, T', D]
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Mel frames for clips of `lengths` samples at the config rate (centred STFT); 0 stays 0."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop_length
        frames = (lengths + 2 * (n_fft // 2) - n_fft) // hop + 1
        return torch.where(lengths > 0, frames, torch.zeros_like(frames))

    def _check_waveform(self, waveform: torch.Tensor, lengths: torch.Tensor, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate: must be positive, got {sample_rate}")
        longest = int(self.cfg.max_seconds * sample_rate)
        shape_ok = waveform.ndim == 2 and waveform.shape[0] > 0 and waveform.shape[1] <= longest
        if not shape_ok or not waveform.is_floating_point():
            raise ValueError(
                f"waveform: expected float [B, S] with B > 0 and S <= {longest} ({self.cfg.max_seconds} s at "
                f"{sample_rate} Hz), got {waveform.dtype} {list(waveform.shape)}"
            )
        B, S = waveform.shape
        resampled = torch.tensor(-(-S * self.cfg.sample_rate // sample_rate))
        if self.subsample.output_lengths(self.frame_lengths(resampled)) < 1:
            raise ValueError(f"waveform: {S} samples at {sample_rate} Hz are too short to give one audio token")
        if lengths.shape != (B,) or lengths.is_floating_point() or lengths.dtype == torch.bool:
            raise ValueError(f"lengths: expected integer [{B}], got {lengths.dtype} {list(lengths.shape)}")
        if lengths.min() < 0 or lengths.max() > S:
            raise ValueError(f"lengths: expected values in [0, {S}] (waveform has {S} samples), got {lengths.tolist()}")

    def _check_features(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> None:
        n_mels = self.cfg.n_mels
        if features.ndim != 3 or features.shape[0] == 0 or features.shape[1] < 7 or features.shape[2] != n_mels:
            raise ValueError(f"features: expected [B, T, {n_mels}] with B > 0 and T >= 7, got {list(features.shape)}")
        B, T = features.shape[:2]
        if frame_lengths.shape != (B,) or frame_lengths.min() < 0 or frame_lengths.max() > T:
            raise ValueError(f"frame_lengths: expected [{B}] with values in [0, {T}], got {frame_lengths.tolist()}")
