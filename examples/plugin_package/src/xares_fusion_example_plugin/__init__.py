"""An example xares-fusion plugin: one encoder, registered by name when the module is imported."""

from __future__ import annotations

import torch

from xares_fusion.registry import register_encoder


@register_encoder("example-mean-pool")
class MeanPoolEncoder(torch.nn.Module):
    """Mean of waveform windows of ``window`` samples (50 frames/s at 16 kHz), projected to ``dim``.

    A contract encoder: ``forward(audio [B, T], mask [B, T]) -> (features [B, T', dim], mask [B, T'])``.
    """

    def __init__(self, dim: int = 64, window: int = 320) -> None:
        super().__init__()
        self.window = window
        self.output_dim = dim
        self.proj = torch.nn.Linear(window, dim)

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        frames = audio.shape[1] // self.window
        windows = audio[:, : frames * self.window].reshape(audio.shape[0], frames, self.window)
        if audio_attention_mask is None:
            return self.proj(windows), None
        # A frame is valid when all its samples are; padding frames are zeroed (the contract).
        mask = audio_attention_mask[:, : frames * self.window].reshape(audio.shape[0], frames, self.window)
        mask = mask.bool().all(-1).long()
        return self.proj(windows) * mask[..., None], mask
