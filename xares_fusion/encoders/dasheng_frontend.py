"""Dasheng's log-mel front end in plain torch.

The ``dasheng`` package and the hub checkpoints' feature extractor build it from torchaudio
(``MelSpectrogram`` then ``AmplitudeToDB``), which does not install beside our torch; this module
computes the same numbers with ``torch.stft`` and the HTK filter bank of ``transformers``.
"""

from __future__ import annotations

import torch
from transformers.audio_utils import mel_filter_bank

from ..constants import SAMPLE_RATE

AMIN = 1e-10  # torchaudio AmplitudeToDB's floor on the power before the logarithm


def htk_mel_filter_bank(
    n_fft: int, n_mels: int, f_min: float, f_max: float, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """[n_fft // 2 + 1, n_mels] triangular HTK-mel filters without area normalisation (float32),
    the filters torchaudio's ``MelScale`` builds by default (``mel_scale="htk"``, ``norm=None``)."""
    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=f_min,
        max_frequency=f_max,
        sampling_rate=sample_rate,
        norm=None,
        mel_scale="htk",
    )
    return torch.from_numpy(bank).float()


def power_to_db(power: torch.Tensor, top_db: float | None) -> torch.Tensor:
    """torchaudio ``AmplitudeToDB(stype="power", top_db)`` of a [B, n_mels, T] power spectrogram.

    10·log10(max(power, 1e-10)) (the reference 1.0 contributes 10·log10(1) = 0), floored at
    ``top_db`` below the maximum of the WHOLE tensor: torchaudio reads a 3-D input as one
    (channel, freq, time) example, so every clip of a batch shares one floor, set by the loudest.
    """
    db = 10.0 * torch.log10(power.clamp(min=AMIN))
    if top_db is None:
        return db
    return torch.maximum(db, db.amax() - top_db)


class DashengFrontEnd(torch.nn.Module):
    """Waveform [B, S] at 16 kHz -> mel power in dB [B, n_mels, S // hop_size + 1], always in fp32.

    torchaudio's ``MelSpectrogram`` with the arguments the Dasheng code passes and torchaudio's
    defaults for the rest: frames centred on multiples of ``hop_size`` with reflect padding, a
    periodic Hann window of ``win_size`` samples, power 2 (|STFT|²), HTK mel filters without
    normalisation; then :func:`power_to_db`. Autocast is switched off inside: the logarithm of
    half-precision powers gives -inf/NaN (the Dasheng code runs its front end the same way).
    """

    def __init__(
        self,
        n_mels: int = 64,
        n_fft: int = 512,
        win_size: int = 512,
        hop_size: int = 160,
        f_min: float = 0.0,
        f_max: float | None = 8000.0,
        center: bool = True,
        top_db: float | None = 120.0,
    ) -> None:
        super().__init__()
        self.n_fft, self.win_size, self.hop_size, self.center, self.top_db = n_fft, win_size, hop_size, center, top_db
        f_max = SAMPLE_RATE / 2 if f_max is None else f_max  # torchaudio's meaning of f_max=None
        # Not in the state dict: they are fixed by the arguments (a release checkpoint's copies
        # are compared with them when it loads, see `_check_front_end` in dasheng_checkpoints.py).
        self.register_buffer("window", torch.hann_window(win_size), persistent=False)
        self.register_buffer("mel_fb", htk_mel_filter_bank(n_fft, n_mels, f_min, f_max), persistent=False)

    def mel_power(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, S] float32 -> [B, n_mels, T] mel power (before the dB conversion)."""
        spec = (
            torch.stft(
                audio,
                self.n_fft,
                hop_length=self.hop_size,
                win_length=self.win_size,
                window=self.window,
                center=self.center,
                pad_mode="reflect",
                normalized=False,
                onesided=True,
                return_complex=True,
            )
            .abs()
            .pow(2.0)
        )
        return torch.matmul(spec.transpose(-1, -2), self.mel_fb).transpose(-1, -2)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=audio.device.type, enabled=False):
            return power_to_db(self.mel_power(audio.float()), self.top_db)
