"""A new fusion front-end: a learned weighted sum of the projected streams (a "scalar mix").

    x_i = W_i H_i                  each aligned stream projected to the fused width d
    a   = softmax(w)               one learned weight per stream, shared by every frame
    z   = LayerNorm(sum_i a_i x_i)

A fusion subclasses ``FusionFrontEnd`` and implements ``combine``. The base class builds the
sub-encoders (frozen, run without gradients, cacheable), aligns their streams to the frame rate
of the ``reference`` stream, calls ``combine`` with the aligned streams and the common mask, adds
the optional STFT branch and zeroes the padding frames. A fusion is an encoder: registered with
``register_encoder``, checked by the same checker, and usable wherever an encoder name is.

    xares-fusion check-encoder examples/extending/my_fusion.py:ScalarMixFusion \\
        --encoder-args '{"encoders": ["logmel", "random"], "dim": 256}'
"""

from __future__ import annotations

from typing import Any

import torch

from xares_fusion.fusion import FusionContext, FusionFrontEnd, Stream
from xares_fusion.registry import register_encoder


@register_encoder("scalar-mix")
class ScalarMixFusion(FusionFrontEnd):
    """Softmax-weighted sum of the projected streams.

    Auxiliary loss ``mix_balance`` = KL(a || uniform), which keeps every stream in use; the
    trainer adds it with the weight of ``default_aux_weights`` unless the recipe's
    ``model.aux_loss_weights`` says otherwise. In evaluation the weights are recorded per task
    (``tasks[i].routing`` of the result record).
    """

    default_aux_weights = {"mix_balance": 1e-2}

    def __init__(self, encoders: list[Any], dim: int = 512, **kwargs: Any) -> None:
        super().__init__(encoders, dim, **kwargs)  # sub-encoders, reference, interpolate, stft
        self.projs = torch.nn.ModuleList(torch.nn.Linear(d, dim) for d in self.dims)
        self.mix = torch.nn.Parameter(torch.zeros(len(self.dims)))
        self.norm = torch.nn.LayerNorm(dim)

    def combine(
        self, streams: list[Stream], mask: torch.Tensor, context: FusionContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # streams: one per sub-encoder, all with the reference's frame count T, zero where `mask`
        # is 0; mask [B, T]: 1 where every stream has a valid frame.
        weights = torch.softmax(self.mix, dim=0)
        mixed = sum(w * proj(s.features) for w, proj, s in zip(weights, self.projs, streams))
        self.aux_losses["mix_balance"] = (weights * (weights * len(weights)).log()).sum()
        self.record("mix_weights", weights.detach().expand(mask.shape[0], -1), context)
        return self.norm(mixed), mask
