"""Audio decoding from shard bytes: any libsndfile format, mono, resampled to 16 kHz."""

from __future__ import annotations

import io
from math import gcd

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

AUDIO_EXTENSIONS = ("flac", "wav", "mp3", "ogg", "opus", "sox", "m4a", "wma")


def decode_audio(data: bytes, target_rate: int = 16000) -> np.ndarray:
    """Decode bytes to float32 mono at ``target_rate``; clipped float audio is peak-normalised
    (as the official loader does)."""
    samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    audio = samples.mean(axis=1)
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak
    if rate != target_rate:
        g = gcd(int(rate), int(target_rate))
        audio = resample_poly(audio, target_rate // g, int(rate) // g).astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def random_crop(audio: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of at most ``max_samples`` (training-time crop to 30 s)."""
    if audio.shape[-1] <= max_samples:
        return audio
    start = int(rng.integers(0, audio.shape[-1] - max_samples + 1))
    return audio[start:start + max_samples]
