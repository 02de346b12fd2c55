"""Audio decoding from shard bytes, in the official order: decode (any libsndfile format), mono
downmix by channel mean, peak-normalise clipped audio, (training) random crop at the file's own
rate, then resample to 16 kHz with torchaudio's algorithm (xares-llm ``preprocess_audio``)."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import torch

from ..constants import SAMPLE_RATE
from .resample import resample

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus", "sox", "m4a", "wma")


def decode_audio(
    data: bytes,
    target_rate: int = SAMPLE_RATE,
    crop_seconds: float | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, bool]:
    """Decode bytes to float32 mono at ``target_rate``; returns the audio and whether it was cropped.

    ``crop_seconds`` (training): a random window of at most that many seconds, taken before
    resampling as officially (``int(crop_seconds * rate)`` samples at the file's rate).
    """
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    audio = samples.mean(axis=1, dtype=np.float32)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:  # official normalize_clipped=True (drop_clipped is False)
        audio = audio / peak
    cropped = False
    if crop_seconds is not None:
        if rng is None:
            raise ValueError("a random crop needs rng")
        window = int(crop_seconds * rate)
        cropped = audio.shape[-1] > window
        audio = random_crop(audio, window, rng)
    if rate != target_rate:
        audio = resample(torch.from_numpy(np.ascontiguousarray(audio)), int(rate), int(target_rate)).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32), cropped


def random_crop(audio: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly placed window of at most ``max_samples`` (official ``_random_crop_audio``)."""
    if audio.shape[-1] <= max_samples:
        return audio
    start = int(rng.integers(0, audio.shape[-1] - max_samples + 1))
    return audio[start : start + max_samples]
