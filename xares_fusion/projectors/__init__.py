"""Projectors from audio features [B, T, D] to LLM embeddings [B, T', H] (registered by name)."""

from __future__ import annotations

from typing import Any

import torch

from ..registry import PROJECTORS, register_projector


@register_projector("linear")
class LinearProjector(torch.nn.Module):
    """One linear layer from the encoder's output_dim to the LLM width (the official projector)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(features), mask


from . import moe_adapter  # noqa: E402,F401  (registers 'moe-adapter', 'dense-ffn')


def build_projector(name: str, in_dim: int, out_dim: int, args: dict[str, Any] | None = None) -> torch.nn.Module:
    """Instantiate a registered projector. Projectors take and return (features, mask) so that
    downsampling projectors can shorten the mask with the frames; they may expose ``aux_losses``."""
    return PROJECTORS.get(name)(in_dim, out_dim, **(args or {}))


__all__ = ["LinearProjector", "build_projector"]
