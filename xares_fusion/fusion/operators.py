"""Fusion operators of "Dual-Encoder Fusion with Explicit and Implicit Injection" (for the AECC)
and the averaging baseline of PaM: concat, average, softmax-gated residual, MoE-concat / MoE-proj,
explicit injection.

Every operator accepts any number of streams where the equations generalise (the papers use two:
Whisper then Dasheng); explicit injection is defined for exactly two.
"""

from __future__ import annotations

from typing import Any

import torch

from ..frontend import FusionContext, Stream
from ..registry import register_encoder
from .base import FusionFrontEnd, masked_mean
from .layers import FeedForward, load_balance_loss, mix_experts, top_k_mask


def _valid(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1).bool()


@register_encoder("concat")
class ConcatFusion(FusionFrontEnd):
    """Concatenation baseline (Dual-Encoder Fusion §2.2): H_cat = [H_1; ...; H_N], linear to d."""

    def __init__(self, encoders: list[Any], dim: int = 512, **kwargs: Any) -> None:
        super().__init__(encoders, dim, **kwargs)
        self.proj = torch.nn.Linear(sum(self.dims), dim)

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        return self.proj(torch.cat([s.features for s in streams], dim=-1)), mask


@register_encoder("average")
class AverageFusion(FusionFrontEnd):
    """Averaging after projection (the "Average" baseline of PaM): mean_i W_i H_i."""

    def __init__(self, encoders: list[Any], dim: int = 512, **kwargs: Any) -> None:
        super().__init__(encoders, dim, **kwargs)
        self.projs = torch.nn.ModuleList(torch.nn.Linear(d, dim) for d in self.dims)

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        return torch.stack([p(s.features) for p, s in zip(self.projs, streams)]).mean(0), mask


class GatedResidual(torch.nn.Module):
    """Token-wise softmax-gated residual fusion, Dual-Encoder Fusion eqs. 3-6, for N inputs:
    x_i = W_i H_i (3); a = softmax(W_g [x_1; ...; x_N] + b_g) (4); m = sum_i a_i x_i (5);
    z = LN(LN(m) + sum_i x_i) (6)."""

    def __init__(self, in_dims: list[int], dim: int) -> None:
        super().__init__()
        self.projs = torch.nn.ModuleList(torch.nn.Linear(d, dim) for d in in_dims)
        self.gate = torch.nn.Linear(len(in_dims) * dim, len(in_dims))
        self.inner_norm = torch.nn.LayerNorm(dim)
        self.outer_norm = torch.nn.LayerNorm(dim)

    def forward(self, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns z [B, T, dim] and the gate a [B, T, N]."""
        xs = [p(h) for p, h in zip(self.projs, inputs)]
        gate = torch.softmax(self.gate(torch.cat(xs, dim=-1)), dim=-1)
        mixed = (torch.stack(xs, dim=-1) * gate[..., None, :]).sum(-1)
        return self.outer_norm(self.inner_norm(mixed) + sum(xs)), gate


@register_encoder("gated")
class GatedFusion(FusionFrontEnd):
    """Softmax-gated residual fusion (Dual-Encoder Fusion eqs. 3-6), the paper's backbone; add the STFT
    branch (eqs. 7-8) with ``stft: {}``. Records the mean gate per stream and task."""

    def __init__(self, encoders: list[Any], dim: int = 512, **kwargs: Any) -> None:
        super().__init__(encoders, dim, **kwargs)
        self.gated = GatedResidual(self.dims, dim)

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        fused, gate = self.gated([s.features for s in streams])
        self.record("mean_gate", masked_mean(gate, mask), context, mask.sum(-1))
        return fused, mask


@register_encoder("moe")
class MoEFusion(FusionFrontEnd):
    """Sparse MoE fusion (Dual-Encoder Fusion eq. 2): router logits r_t = g(x_t), p_t = softmax(r_t), top-k
    experts K_t, y_t = sum_{e in K_t} p_{t,e} f_e(x_t), z_t = W_o y_t; load-balancing loss
    ``moe_balance`` over valid frames.

    ``input='concat'``: x_t = [H_1,t; ...; H_N,t] (MoE-concat); ``input='proj'``: each stream first
    projected to d, x_t = [W_1 H_1,t; ...] (MoE-proj). Experts are 2-layer FFNs on x_t.
    """

    default_aux_weights = {"moe_balance": 1e-2}  # Dual-Encoder Fusion §3.1: balance weight 1e-2
    # Unrouted experts get no gradient on a step: DDP must be told (find_unused_parameters).
    has_conditional_parameters = True

    def __init__(
        self,
        encoders: list[Any],
        dim: int = 512,
        input: str = "concat",
        num_experts: int = 8,
        top_k: int = 2,
        expert_hidden: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoders, dim, **kwargs)
        if input not in ("concat", "proj"):
            raise ValueError(f"input must be 'concat' or 'proj', got {input!r}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be within 1..num_experts={num_experts}")
        self.input, self.top_k = input, top_k
        self.projs = torch.nn.ModuleList(torch.nn.Linear(d, dim) for d in self.dims) if input == "proj" else None
        in_dim = sum(self.dims) if input == "concat" else dim * len(self.dims)
        self.router = torch.nn.Linear(in_dim, num_experts)
        self.experts = torch.nn.ModuleList(FeedForward(in_dim, expert_hidden or dim, dim) for _ in range(num_experts))
        self.out = torch.nn.Linear(dim, dim)

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        parts = [s.features for s in streams]
        if self.projs is not None:
            parts = [p(h) for p, h in zip(self.projs, parts)]
        x = torch.cat(parts, dim=-1)
        b, t, _ = x.shape
        tokens = x.reshape(b * t, -1)
        probs = torch.softmax(self.router(tokens), dim=-1)
        selected = top_k_mask(probs, self.top_k)
        y = mix_experts(tokens, self.experts, probs * selected)
        valid = _valid(mask)
        self.aux_losses["moe_balance"] = load_balance_loss(probs[valid], selected[valid])
        self.record("expert_load", masked_mean(selected.view(b, t, -1), mask) / self.top_k, context, mask.sum(-1))
        self.record(
            "router_entropy",
            masked_mean(-torch.special.xlogy(probs, probs).sum(-1).view(b, t, 1), mask)[:, 0],
            context,
            mask.sum(-1),
        )
        return self.out(y).view(b, t, -1), mask


@register_encoder("explicit")
class ExplicitInjectionFusion(FusionFrontEnd):
    """Explicit injection (Dual-Encoder Fusion eqs. 9-13) of stream B (Dasheng) into stream A (Whisper):
    H^_B = H_A W_{A->B} (9); R_B = H_B - H^_B (10); z = gated residual fusion of A with the projected
    residual (eqs. 3-6 on (H_A, R_B)); aux losses over valid frames only:
    ``recon`` = mean_t ||R_B,t||^2 (11) and ``decor`` = ||C||_F^2 with C the cross-covariance of
    u_t = P_w(H_A,t) and v_t = P_r(R_B,t) (12); weighted by the recipe as lambda_recon, lambda_decor (13).
    The paper gives no lambda values; both default to 1.
    """

    default_aux_weights = {"recon": 1.0, "decor": 1.0}

    def __init__(self, encoders: list[Any], dim: int = 512, decor_dim: int = 128, **kwargs: Any) -> None:
        super().__init__(encoders, dim, **kwargs)
        if len(self.encoders) != 2:
            raise ValueError(f"explicit injection fuses exactly two encoders (A, then B), got {len(self.encoders)}")
        dim_a, dim_b = self.dims
        self.predict = torch.nn.Linear(dim_a, dim_b, bias=False)
        self.gated = GatedResidual([dim_a, dim_b], dim)
        self.decor_a = torch.nn.Linear(dim_a, decor_dim, bias=False)
        self.decor_r = torch.nn.Linear(dim_b, decor_dim, bias=False)

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        h_a, h_b = streams[0].features, streams[1].features
        residual = h_b - self.predict(h_a)
        fused, gate = self.gated([h_a, residual])
        valid = _valid(mask)
        r = residual.reshape(-1, residual.shape[-1])[valid]
        u = self.decor_a(h_a.reshape(-1, h_a.shape[-1])[valid])
        v = self.decor_r(r)
        cov = (u - u.mean(0)).T @ (v - v.mean(0)) / max(1, u.shape[0])
        self.aux_losses["recon"] = r.pow(2).sum(-1).mean()
        self.aux_losses["decor"] = cov.pow(2).sum()
        self.record("mean_gate", masked_mean(gate, mask), context, mask.sum(-1))
        self.record(
            "residual_energy", masked_mean(residual.pow(2).sum(-1, keepdim=True), mask)[:, 0], context, mask.sum(-1)
        )
        return fused, mask
