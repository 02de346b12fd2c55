"""The projector interface: what the audio LLM sees of the module between front end and LLM."""

from __future__ import annotations

from typing import Any, ClassVar

import torch


class Projector(torch.nn.Module):
    """Base of every projector: ``forward(features [B, T, D], mask [B, T])`` ->
    ``(embeddings [B, T', H], mask [B, T'])``; a downsampling projector shortens the mask with
    the frames. Built as ``Projector(in_dim, out_dim, **args)`` (D = the front end's
    ``output_dim``, H = the LLM's hidden size).

    Fields (class defaults, overridden by the projectors that differ):
        uses_context: ``forward`` takes a third argument, the batch's
            :class:`~xares_fusion.frontend.FusionContext` (e.g. for routing statistics per task).
        has_conditional_parameters: a training step may leave some weights without a gradient
            (routed experts a batch does not use); multi-process training then has DDP look for
            them every step (``find_unused_parameters``), which costs time.
        default_aux_weights: the weight of each auxiliary loss the papers give (a recipe's
            ``model.aux_loss_weights`` wins).
        aux_losses: named auxiliary losses of the last ``forward`` call, unweighted.
    """

    uses_context: ClassVar[bool] = False
    has_conditional_parameters: ClassVar[bool] = False
    default_aux_weights: ClassVar[dict[str, float]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.aux_losses: dict[str, torch.Tensor] = {}

    def routing_stats(self) -> dict[str, Any] | None:
        """Routing statistics since the last :meth:`reset_stats`; None: it keeps none."""
        return None

    def reset_stats(self) -> None:
        """Forget the routing statistics collected so far (none by default)."""
