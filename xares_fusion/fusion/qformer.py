"""Window-level Q-Former over the concatenated streams (the SALMONN baseline compared in PaM)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from ..frontend import FusionContext, Stream
from ..registry import register_encoder
from .base import FusionFrontEnd


@register_encoder("qformer")
class WindowQFormerFusion(FusionFrontEnd):
    """The streams are concatenated per frame and cut into windows of ``window`` frames; in each
    window ``num_queries`` learnt queries cross-attend to its frames through a BERT-style Q-Former
    (the BLIP-2 Q-Former of ``transformers``), then a linear layer maps them to d. The output runs at
    frame_rate * num_queries / window (SALMONN: 17 frames of 50 fps, one query -> ~2.9 tokens/s);
    a window with no valid frame is masked.
    """

    def __init__(
        self,
        encoders: list[Any],
        dim: int = 512,
        window: int = 17,
        num_queries: int = 1,
        hidden_size: int = 256,
        num_layers: int = 2,
        num_heads: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoders, dim, **kwargs)
        self.window, self.num_queries = window, num_queries
        config = Blip2QFormerConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=4 * hidden_size,
            encoder_hidden_size=sum(self.dims),
            cross_attention_frequency=1,
        )
        self.qformer = Blip2QFormerModel(config)
        self.queries = torch.nn.Parameter(torch.randn(1, num_queries, hidden_size) * config.initializer_range)
        self.out = torch.nn.Linear(hidden_size, dim)
        if self.frame_rate is not None:
            self.frame_rate = self.frame_rate * num_queries / window

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        x = torch.cat([s.features for s in streams], dim=-1)
        b, t, d = x.shape
        pad = (-t) % self.window
        x = torch.nn.functional.pad(x, (0, 0, 0, pad)).view(-1, self.window, d)
        frame_mask = torch.nn.functional.pad(mask, (0, pad)).view(-1, self.window)
        out = self.qformer(
            query_embeds=self.queries.expand(x.shape[0], -1, -1),
            encoder_hidden_states=x,
            encoder_attention_mask=frame_mask,
        ).last_hidden_state  # [B*W, Q, H]
        windows = (t + pad) // self.window
        features = self.out(out).reshape(b, windows * self.num_queries, -1)
        window_mask = (frame_mask.sum(-1) > 0).long().view(b, windows).repeat_interleave(self.num_queries, dim=1)
        return features, window_mask
