"""Padding clips into batches with sample-level masks (1 = audio, 0 = padding)."""

from __future__ import annotations

import numpy as np
import torch


def pad_audio(clips: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad clips to the longest; returns audio [B, S] float32 and mask [B, S] long."""
    length = max(c.shape[-1] for c in clips)
    audio = torch.zeros(len(clips), length, dtype=torch.float32)
    mask = torch.zeros(len(clips), length, dtype=torch.long)
    for i, clip in enumerate(clips):
        audio[i, : clip.shape[-1]] = torch.from_numpy(clip)
        mask[i, : clip.shape[-1]] = 1
    return audio, mask
