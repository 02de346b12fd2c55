"""PaM: "Prompt-Aware Mixture of Audio Encoders"."""

from __future__ import annotations

from typing import Any

import torch

from ..constants import SAMPLE_RATE
from ..frontend import FusionContext, Stream
from ..registry import register_encoder
from .base import FusionFrontEnd
from .layers import FeedForward


class PaMExpert(torch.nn.Module):
    """One expert: k fused states h^fused_k = sum_{i,j} w^k_{i,j} h_{i,j} over every non-last layer
    of every encoder (eq. 5), concatenated with each encoder's last layer (eq. 6), FFN to d.

    Eq. 5 sums j = 1..L_i - 1 while the text and Fig. 2 use h^0..h^{L_i - 1}; we follow the text
    (the embeddings h^0 carry the acoustic detail the fusion is meant to reach).
    """

    def __init__(self, num_layers: int, num_encoders: int, num_fused: int, dim: int) -> None:
        super().__init__()
        self.layer_weights = torch.nn.Parameter(torch.full((num_fused, num_layers), 1.0 / num_layers))
        self.ffn = FeedForward((num_encoders + num_fused) * dim, dim, dim)

    def forward(self, layers: torch.Tensor, lasts: list[torch.Tensor]) -> torch.Tensor:
        """layers [L, B, T, d] (all non-last states), lasts: each encoder's last state [B, T, d]."""
        fused = torch.einsum("kl,lbtd->kbtd", self.layer_weights, layers)
        return self.ffn(torch.cat([*lasts, *fused], dim=-1))


@register_encoder("pam")
class PaMFusion(FusionFrontEnd):
    """Prompt-aware mixture, PaM eqs. 3-10.

    Every layer of encoder i goes through its pre-fusion FFN_i to d (eq. 2). H_audio =
    Expert_share(H) + sum_j G_j Expert_j(H) (3), where G is the top-1 of
    P(task | H_prompt) = softmax(FFN(H_prompt)) (7-9) computed from the prompt's LLM hidden state
    (``context.prompt_states``). The router trains on the cross-entropy ``pam_task`` against the
    expert of each row's task (10): ``task_routes`` maps a task name to an expert index; tasks not
    listed take their position in ``context.task_vocab`` modulo ``num_routed``.
    Without a prompt state (e.g. ``check-encoder``) only the shared expert contributes.
    """

    needs_hidden_states = True
    needs_prompt_state = True
    has_conditional_parameters = True  # top-1 routed experts, and a router unused without prompt states
    default_aux_weights = {"pam_task": 1.0}  # eq. 10: plain sum of the two cross-entropies

    def __init__(
        self,
        encoders: list[Any],
        dim: int = 512,
        num_routed: int = 3,
        num_fused: int = 3,
        prompt_dim: int | None = None,
        task_routes: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoders, dim, **kwargs)
        self.num_routed, self.task_routes = num_routed, dict(task_routes or {})
        self.adapters = torch.nn.ModuleList(FeedForward(d, dim, dim) for d in self.dims)
        num_layers = sum(n - 1 for n in self._layer_counts())
        self.experts = torch.nn.ModuleList(
            PaMExpert(num_layers, len(self.encoders), num_fused, dim) for _ in range(num_routed + 1)
        )
        self.router: torch.nn.Module | None = None
        if prompt_dim is not None:
            self.bind_prompt_dim(prompt_dim)

    def _layer_counts(self) -> list[int]:
        """Hidden states per encoder (embeddings included), from one probe of 1 s of silence."""
        streams = self.encode_streams(torch.zeros(1, SAMPLE_RATE), None)
        return [len(s.hidden_states) for s in streams]

    def bind_prompt_dim(self, prompt_dim: int) -> None:
        """Create the router FFN for prompt states of the LLM's width (called by the model, which
        knows the LLM; a recipe may also give ``prompt_dim``)."""
        if self.router is None:
            self.router = FeedForward(prompt_dim, self.output_dim, self.num_routed)

    def task_targets(self, context: FusionContext) -> torch.Tensor | None:
        if not context.tasks:
            return None
        targets = []
        for task in context.tasks:
            if task in self.task_routes:
                targets.append(self.task_routes[task])
            elif task in context.task_vocab:
                targets.append(context.task_vocab.index(task) % self.num_routed)
            else:
                return None  # an evaluation-only task: no routing target
        return torch.tensor(targets)

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        states = [[adapter(h) for h in s.hidden_states] for adapter, s in zip(self.adapters, streams)]
        layers = torch.stack([h for s in states for h in s[:-1]])
        lasts = [s[-1] for s in states]
        out = self.experts[0](layers, lasts)
        if context.prompt_states is not None and self.router is not None:
            logits = self.router(context.prompt_states.to(out.dtype))
            probs = torch.softmax(logits, dim=-1)
            choice = probs.argmax(-1)
            for j in range(self.num_routed):
                rows = (choice == j).nonzero().squeeze(-1)
                if rows.numel():
                    routed = self.experts[j + 1](layers[:, rows], [h[rows] for h in lasts])
                    out = out.index_add(0, rows, routed)
            targets = self.task_targets(context)
            if targets is not None and self.training:
                self.aux_losses["pam_task"] = torch.nn.functional.cross_entropy(logits, targets.to(logits.device))
            self.record("routed_expert", torch.nn.functional.one_hot(choice, self.num_routed).float(), context)
        return out, mask

    def routing_stats(self) -> dict[str, Any]:
        stats = super().routing_stats()
        stats["layer_weights"] = {
            ("shared" if i == 0 else f"expert_{i}"): [
                [round(float(w), 6) for w in row] for row in e.layer_weights.detach().cpu()
            ]
            for i, e in enumerate(self.experts)
        }
        return stats
