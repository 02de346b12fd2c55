"""Weight-free log-mel encoder: runs with no download, the control every benchmark needs."""

from __future__ import annotations

import torch
from transformers.audio_utils import mel_filter_bank

from ..registry import register_encoder


def frames_from_samples(num_samples: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Frames of a centred STFT (torch.stft(center=True)) over ``num_samples`` samples."""
    return num_samples // hop_length + 1


@register_encoder("logmel")
class LogMelEncoder(torch.nn.Module):
    """Log-mel spectrogram frames (Whisper-style log10 scaling), 100 frames/s by default.

    Args:
        n_mels: mel bands (= output_dim).
        n_fft, hop_length: STFT size and hop in samples at 16 kHz.
    """

    def __init__(self, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160) -> None:
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.output_dim = n_mels
        self.frame_rate = 16000 / hop_length
        filters = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels,
                                  min_frequency=0.0, max_frequency=8000.0, sampling_rate=16000,
                                  norm="slaney", mel_scale="slaney")
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        spec = torch.stft(audio.float(), self.n_fft, self.hop_length, window=self.window,
                          center=True, return_complex=True).abs() ** 2          # [B, F, T]
        mel = torch.einsum("ft,bfn->bnt", self.filters, spec)                      # [B, T, M]
        features = (torch.clamp(mel, min=1e-10).log10() + 4.0) / 4.0
        if audio_attention_mask is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], device=audio.device)
        else:
            lengths = audio_attention_mask.long().sum(-1)
        valid = frames_from_samples(lengths, self.hop_length)
        mask = (torch.arange(features.shape[1], device=audio.device)[None] < valid[:, None]).long()
        return features * mask[..., None], mask
