"""Small builders shared by the data tests: FLAC bytes, tar shards, encoder-like features."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from webdataset import TarWriter


def flac_bytes(audio: np.ndarray, rate: int) -> bytes:
    """``audio`` encoded as a FLAC file."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="FLAC")
    return buffer.getvalue()


def write_shard(path: Path, samples: list[dict]) -> Path:
    """A WebDataset tar of ``samples`` (each a dict with ``__key__`` and its members)."""
    with TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


def padded_features(frames: list[int], dim: int = 80, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random encoder outputs for clips of ``frames`` frames each, zero beyond each clip, and the mask."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.zeros(len(frames), max(frames), dim)
    mask = torch.zeros(len(frames), max(frames), dtype=torch.long)
    for i, n in enumerate(frames):
        features[i, :n] = torch.randn(n, dim, generator=gen)
        mask[i, :n] = 1
    return features, mask


# The recipe of the end-to-end tests: logmel + toy LLM learning the synthetic tone task in 100 steps.
TONES_RECIPE = """
name: tones-smoke
model:
  encoder: logmel
  llm: {name_or_path: toy-llama}
data:
  mixture: [{task: tones}]
  shuffle_buffer: 16
optim:
  max_steps: 100
  lr: 3.0e-3
  warmup_steps: 10
  batch_size: 8
  save_steps: 20
  log_steps: 10
"""
