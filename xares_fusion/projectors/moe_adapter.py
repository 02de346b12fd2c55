"""The projector of "MoE Adapter for Large Audio Language Models" and its dense FFN baseline of equal
parameter count."""

from __future__ import annotations

import torch

from ..frontend import FusionContext
from ..fusion.base import RoutingStats, RoutingStatsMixin, masked_mean
from ..fusion.layers import load_balance_loss, mix_experts, top_k_mask
from ..registry import register_projector
from .base import Projector


class _Expert(torch.nn.Sequential):
    """E_i(x) = W_e2 SiLU(W_e1 LN(x)) (MoE-Adapter eq. 2)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(
            torch.nn.LayerNorm(dim), torch.nn.Linear(dim, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, dim)
        )


class _Aggregation(torch.nn.Sequential):
    """The post-routing aggregation block: LN -> MLP (Table 4)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(
            torch.nn.LayerNorm(dim), torch.nn.Linear(dim, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, dim)
        )


@register_projector("moe-adapter")
class MoEAdapterProjector(RoutingStatsMixin, Projector):
    """Sparse MoE projector, MoE-Adapter eqs. 1-10.

    Routed experts E_i (2); gate G(x) = softmax(T_k(x W_g)) over the top-k logits only (3);
    h = sum_{i in top-k} G_i E_i(x) (4) plus the always-on shared experts; y = LN(W_P h) (5) to the
    LLM width; then the aggregation block. Aux loss ``moe_adapter_balance`` =
    |E_R| sum_e P_e f_e over valid tokens (8-10), P_e the mean of G(x)_e and f_e the fraction of
    tokens routing to e; weighted by lambda in the recipe (6).
    """

    uses_context = True
    has_conditional_parameters = True  # top-k routing: an expert no token picks gets no gradient
    default_aux_weights = {"moe_adapter_balance": 1e-2}  # lambda is not given in MoE-Adapter; the usual 1e-2

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_experts: int = 8,
        top_k: int = 4,
        num_shared: int = 0,
        expert_hidden: int = 1280,
        aggregation_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be within 1..num_experts={num_experts}")
        self.top_k = top_k
        self.gate = torch.nn.Linear(in_dim, num_experts, bias=False)
        self.experts = torch.nn.ModuleList(_Expert(in_dim, expert_hidden) for _ in range(num_experts))
        self.shared = torch.nn.ModuleList(_Expert(in_dim, expert_hidden) for _ in range(num_shared))
        self.out = torch.nn.Linear(in_dim, out_dim)
        self.out_norm = torch.nn.LayerNorm(out_dim)
        self.aggregation = _Aggregation(out_dim, aggregation_hidden or 4 * out_dim)
        self.stats = RoutingStats()

    def gating(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(x) [N, E] with exactly k non-zero entries per token, top-k indicator [N, E])."""
        logits = self.gate(tokens)
        selected = top_k_mask(logits, self.top_k)
        return torch.softmax(logits.masked_fill(selected == 0, float("-inf")), dim=-1), selected

    def forward(
        self, features: torch.Tensor, mask: torch.Tensor, context: FusionContext | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = features.shape
        tokens = features.reshape(b * t, d)
        gates, selected = self.gating(tokens)
        h = mix_experts(tokens, self.experts, gates)
        for expert in self.shared:
            h = h + expert(tokens)
        y = self.aggregation(self.out_norm(self.out(h)))
        valid = mask.reshape(-1).bool()
        self.aux_losses = {"moe_adapter_balance": load_balance_loss(gates[valid], selected[valid])}
        self.record("expert_load", masked_mean(selected.view(b, t, -1), mask) / self.top_k, context, mask.sum(-1))
        return y.view(b, t, -1), mask


@register_projector("dense-ffn")
class DenseFFNProjector(Projector):
    """Dense adapter baseline, MoE-Adapter eq. 1: y = LN(W_d2 SiLU(W_d1 LN(x))).

    ``match_moe``: the arguments of a ``moe-adapter``; the hidden width is then chosen so that the
    total parameter count equals that MoE-Adapter's (to one hidden unit), as in the paper's
    controlled comparison.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None = None, match_moe: dict | None = None) -> None:
        super().__init__()
        if (hidden is None) == (match_moe is None):
            raise ValueError("give exactly one of 'hidden' or 'match_moe'")
        if match_moe is not None:
            target = sum(p.numel() for p in MoEAdapterProjector(in_dim, out_dim, **match_moe).parameters())
            # params = LN(in) + in*h + h + h*out + out + LN(out) = 2in + 3out + h(in + out + 1)
            hidden = max(1, round((target - 2 * in_dim - 3 * out_dim) / (in_dim + out_dim + 1)))
        self.net = torch.nn.Sequential(
            torch.nn.LayerNorm(in_dim),
            torch.nn.Linear(in_dim, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, out_dim),
            torch.nn.LayerNorm(out_dim),
        )

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(features), mask
