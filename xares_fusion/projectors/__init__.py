"""Projectors from audio features [B, T, D] to LLM embeddings [B, T', H] (registered by name)."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..registry import PROJECTORS, RegistryError, register_projector
from . import moe_adapter  # noqa: F401  (registers 'moe-adapter', 'dense-ffn')
from .base import Projector


@register_projector("linear")
class LinearProjector(Projector):
    """One linear layer from the encoder's output_dim to the LLM width (the official projector)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(in_dim, out_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proj(features), mask


def build_projector(name: str, in_dim: int, out_dim: int, args: dict[str, Any] | None = None) -> Projector:
    """Instantiate a registered projector (a :class:`Projector`)."""
    try:
        projector = PROJECTORS.get(name)(in_dim, out_dim, **(args or {}))
    except (TypeError, ValueError) as err:  # a wrong or out-of-range argument
        raise ConfigError(
            f"projector {name!r}: model.projector.args {args or {}} do not fit it: {err}. Fix model.projector.args."
        ) from err
    if not isinstance(projector, Projector):
        raise RegistryError(
            f"projector {name!r}: {type(projector).__name__} is not a projector. Fix: subclass "
            f"xares_fusion.projectors.Projector (it declares uses_context, aux_losses and "
            f"default_aux_weights)."
        )
    return projector


__all__ = ["LinearProjector", "Projector", "build_projector"]
