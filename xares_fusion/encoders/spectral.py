"""Weight-free spectral encoders: the controls every benchmark needs, with no download."""

from __future__ import annotations

import abc

import torch
from transformers.audio_utils import mel_filter_bank

from ..constants import SAMPLE_RATE
from ..registry import register_encoder
from .masking import lengths_to_mask, pool_frames, sample_lengths


class _SpectralEncoder(torch.nn.Module, abc.ABC):
    """Centred STFT power frames (SAMPLE_RATE / hop frames/s), masked to each clip's length."""

    def __init__(self, n_fft: int, hop_length: int, output_dim: int, pool: int) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.output_dim, self.pool = n_fft, hop_length, output_dim, pool
        self.frame_rate = SAMPLE_RATE / hop_length / pool
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @abc.abstractmethod
    def _frames(self, power: torch.Tensor) -> torch.Tensor:
        """[B, F, T] power spectrum -> [B, T, output_dim] features."""

    def forward(
        self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Zero (not reflect) padding at the edges: a clip's frames are then the same alone as in a
        # batch, where zeros follow it, which is what lets a feature cache reproduce uncached runs.
        # fp32 whatever the run's precision: under fp16 autocast the mel product underflows and
        # log10(0) turns padding frames into -inf (NaN once masked); see docs/footguns.md.
        with torch.autocast(device_type=audio.device.type, enabled=False):
            spec = (
                torch.stft(
                    audio.float(),
                    self.n_fft,
                    self.hop_length,
                    window=self.window,
                    center=True,
                    pad_mode="constant",
                    return_complex=True,
                ).abs()
                ** 2
            )
            features = self._frames(spec)
        # a centred STFT over n samples has n // hop + 1 frames
        mask = lengths_to_mask(sample_lengths(audio, audio_attention_mask) // self.hop_length + 1, features.shape[1])
        features, mask = pool_frames(features, mask, self.pool)
        return features * mask[..., None], mask


@register_encoder("logmel")
class LogMelEncoder(_SpectralEncoder):
    """Log-mel frames ``(log10(mel) + offset) / 4``, 100 frames/s by default (``pool`` averages that
    many adjacent frames).

    ``offset`` 4 is Whisper's scaling; it leaves typical audio at a mean of about +0.34 in every
    bin, a common offset larger than the differences between bins. A linear projector must first
    learn to cancel it, which costs a short (CPU-sized) training most of its steps; ``offset``
    2.6 centres such audio instead (an affine change the projector could learn, so the information
    is the same).
    """

    def __init__(
        self, n_mels: int = 80, n_fft: int = 400, hop_length: int = 160, pool: int = 1, offset: float = 4.0
    ) -> None:
        super().__init__(n_fft, hop_length, n_mels, pool)
        self.offset = offset
        filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=SAMPLE_RATE / 2,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", torch.from_numpy(filters).float(), persistent=False)

    def _frames(self, power: torch.Tensor) -> torch.Tensor:
        mel = torch.einsum("fm,bft->btm", self.filters, power)
        return (torch.clamp(mel, min=1e-10).log10() + self.offset) / 4.0


@register_encoder("stft")
class StftEncoder(_SpectralEncoder):
    """Log-magnitude STFT frames (n_fft // 2 + 1 bins); 25 frames/s with the default hop of 640,
    the frame rate of the fusion paper's STFT branch (n_fft = window = 1024)."""

    def __init__(self, n_fft: int = 1024, hop_length: int = 640, pool: int = 1) -> None:
        super().__init__(n_fft, hop_length, n_fft // 2 + 1, pool)

    def _frames(self, power: torch.Tensor) -> torch.Tensor:
        return torch.log(power.clamp(min=1e-10)).transpose(1, 2) / 10.0
