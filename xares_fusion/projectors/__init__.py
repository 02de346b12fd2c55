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
    """One linear layer from the encoder's output_dim to the LLM width (the official projector).

    ``standardize=True`` (not official; a recipe that sets it departs, and says so in its record)
    first standardises each feature dimension, as BatchNorm without its affine part does: by the
    batch's valid frames while training, by running averages (``momentum``) in evaluation. An
    encoder whose frames share an offset larger than their differences, or whose dimensions differ
    in scale by orders of magnitude (Whisper's last layer: one dimension averages 18 where the
    typical spread is 0.5), otherwise leaves a short training most of its steps to learn to cancel
    them.
    """

    def __init__(self, in_dim: int, out_dim: int, standardize: bool = False, momentum: float = 0.1) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.proj = torch.nn.Linear(in_dim, out_dim)
        self.standardize, self.momentum = standardize, momentum
        if standardize:
            self.register_buffer("running_mean", torch.zeros(in_dim))
            self.register_buffer("running_var", torch.ones(in_dim))

    def _standardized(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-dimension standardisation over valid frames; masked sums rather than boolean
        indexing, so that it costs no host synchronisation."""
        x = features.float()
        if self.training:
            weight = mask[..., None].to(x.dtype)
            count = weight.sum().clamp(min=1.0)
            mean = (x * weight).sum((0, 1)) / count
            var = ((x - mean) ** 2 * weight).sum((0, 1)) / count
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * count / (count - 1).clamp(min=1.0), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return ((x - mean) * torch.rsqrt(var + 1e-5)).to(features.dtype)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.standardize:
            features = self._standardized(features, mask)
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
