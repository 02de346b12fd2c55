"""A fixed random-projection encoder: the floor a learnt encoder must beat."""

from __future__ import annotations

import torch

from ..constants import SAMPLE_RATE
from ..registry import register_encoder
from .masking import lengths_to_mask, pool_frames, sample_lengths


@register_encoder("random")
class RandomProjectionEncoder(torch.nn.Module):
    """Raw waveform windows (25 ms, hop 20 ms: 50 frames/s, or 50 / ``pool``) times a fixed seeded
    Gaussian matrix.

    It keeps only what a linear map of the waveform keeps, with no learnt structure; the matrix is
    a buffer, so it is identical for every run with the same seed and never trained.
    """

    def __init__(
        self, output_dim: int = 256, seed: int = 0, window: int = 400, hop_length: int = 320, pool: int = 1
    ) -> None:
        super().__init__()
        self.output_dim, self.window, self.hop_length, self.pool = output_dim, window, hop_length, pool
        self.frame_rate = SAMPLE_RATE / hop_length / pool
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(window, output_dim, generator=generator) / window**0.5)

    def forward(
        self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        padded = torch.nn.functional.pad(audio.float(), (0, self.window - self.hop_length))
        frames = padded.unfold(-1, self.window, self.hop_length)  # [B, T, window]
        features = frames @ self.projection
        valid = (sample_lengths(audio, audio_attention_mask) // self.hop_length).clamp(min=1)
        features, mask = pool_frames(features, lengths_to_mask(valid, features.shape[1]), self.pool)
        return features * mask[..., None], mask
