"""Building blocks shared by the fusions and the MoE-Adapter projector."""

from __future__ import annotations

import torch


class FeedForward(torch.nn.Sequential):
    """Two linear layers with an activation between them (the papers' 2-layer FFN expert)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, activation: str = "gelu") -> None:
        act = {"gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "relu": torch.nn.ReLU}[activation]
        super().__init__(torch.nn.Linear(in_dim, hidden), act(), torch.nn.Linear(hidden, out_dim))


def load_balance_loss(probs: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """|E| * sum_e P_e * f_e over the given tokens (MoE-Adapter eqs. 8-10; Dual-Encoder Fusion's "standard"
    load-balancing loss): P_e is the mean routing probability of expert e, f_e the fraction of
    tokens whose top-k includes e. ``probs`` and ``selected`` (0/1) are [N, E]."""
    num_experts = probs.shape[-1]
    return num_experts * (probs.mean(0) * selected.to(probs.dtype).mean(0)).sum()


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 tensor marking the k largest entries of the last axis (exactly k per row)."""
    index = logits.topk(k, dim=-1).indices
    return torch.zeros_like(logits).scatter(-1, index, 1.0)


def mix_experts(x: torch.Tensor, experts: torch.nn.ModuleList, weights: torch.Tensor) -> torch.Tensor:
    """sum_e weights[:, e] * expert_e(x) over tokens x [N, in], running each expert only on the
    tokens that give it a non-zero weight (sparse routing)."""
    out = None
    for e, expert in enumerate(experts):
        rows = weights[:, e].nonzero().squeeze(-1)
        if rows.numel() == 0:
            continue
        y = expert(x[rows]) * weights[rows, e, None]
        if out is None:
            out = x.new_zeros(x.shape[0], y.shape[-1])
        out = out.index_add(0, rows, y)
    if out is None:  # no token routed anywhere (all weights zero): a zero contribution
        out = x.new_zeros(x.shape[0], experts[0](x[:1]).shape[-1])
    return out


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """-sum p log p with 0 log 0 = 0 (routing vectors kept sparse by top-1 have exact zeros).
    Written with a masked log rather than ``xlogy``, whose gradient at 0 is -inf and turns the
    zero entries' gradients into NaN."""
    safe = p.clamp_min(torch.finfo(p.dtype).tiny)
    return -torch.where(p > 0, p * safe.log(), torch.zeros_like(p)).sum(dim)
