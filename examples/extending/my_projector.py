"""A new projector: stack k adjacent frames, then a two-layer MLP to the LLM width.

Stacking divides the number of audio tokens the LLM reads by k (SLAM-LLM and SALMONN-2 use 5,
WavLLM 4); the official projector is one linear layer on every frame, so any other projector is
listed as a departure in the run's parity record.

A projector subclasses ``xares_fusion.projectors.Projector``, is built as
``MyProjector(in_dim, out_dim, **args)`` -- in_dim the front end's ``output_dim``, out_dim the
LLM's hidden size, args from the recipe's ``model.projector.args`` -- and maps
``(features [B, T, in_dim], mask [B, T])`` to ``(embeddings [B, T', out_dim], mask [B, T'])``.
It may leave named losses in ``self.aux_losses`` (added to the LLM loss with the weights of
``default_aux_weights`` or the recipe's ``model.aux_loss_weights``), and set ``uses_context = True``
to receive the batch's ``FusionContext`` (task names) as a third argument.
"""

from __future__ import annotations

import torch

from xares_fusion.projectors import Projector
from xares_fusion.registry import register_projector


@register_projector("stack-mlp")
class StackMLPProjector(Projector):
    """[B, T, D] -> [B, ceil(T / k), H]: k frames concatenated, Linear(k D, hidden), GELU,
    Linear(hidden, H). A stacked frame is valid if any of its k frames is."""

    def __init__(self, in_dim: int, out_dim: int, stack: int = 4, hidden: int | None = None) -> None:
        super().__init__()
        if stack < 1:
            raise ValueError(f"stack must be >= 1, got {stack}")
        self.stack = stack
        hidden = hidden or out_dim
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(stack * in_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, out_dim)
        )

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = features.shape
        pad = (-t) % self.stack
        features = torch.nn.functional.pad(features * mask[..., None].to(features.dtype), (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad))
        stacked = features.reshape(b, -1, self.stack * d)
        stacked_mask = mask.reshape(b, -1, self.stack).amax(-1)
        return self.mlp(stacked), stacked_mask
