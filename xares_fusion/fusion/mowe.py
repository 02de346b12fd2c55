"""MoWE: a strong base encoder plus a pool of weak encoders chosen by routers ("MoWE-Audio")."""

from __future__ import annotations

from typing import Any

import torch

from ..frontend import FusionContext, Stream
from ..registry import register_encoder
from .base import FusionFrontEnd, masked_mean
from .layers import entropy


def keep_top1(p: torch.Tensor) -> torch.Tensor:
    """KeepTop1 (MoWE-Audio, after eq. 3): the largest entry kept, every other set to 0."""
    return p * torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)


@register_encoder("mowe")
class MoWEFusion(FusionFrontEnd):
    """Mixture of weak encoders, MoWE-Audio eqs. 1-9. ``encoders[0]`` is the base, the rest the pool.

    r_indep = KeepTop1(softmax(w_indep)) (2), z_indep = sum_k r_indep[k] E_k(a) (3);
    r_dep = KeepTop1(softmax(mean_t(z_base) W_dep)) (4), z_dep = sum_k r_dep[k] E_k(a) (5), smoothed in
    training only as r_dep <- 0.9 r_dep + 0.1 eps, eps = 0.1 / M (as the paper writes it);
    output z = z_base (+) z_dep (+) z_indep on the feature axis, so the frame count is unchanged.
    Aux loss ``mowe`` = 1/2 [L_indep-ent + (L_dep-ent + L_dep-div)] (6-9), weighted 0.1 in the
    paper (eq. 1): set ``model.aux_loss_weights.mowe``.

    Weak encoders of different widths are summed, so each is first mapped to ``weak_dim`` by its
    own linear layer (the paper's pool shares one width; this makes any pool usable).
    """

    default_aux_weights = {"mowe": 0.1}  # eq. 1

    def __init__(self, encoders: list[Any], weak_dim: int = 256, smoothing: float = 0.1, **kwargs: Any) -> None:
        if len(encoders) < 2:
            raise ValueError("MoWE needs a base encoder and at least one weak encoder")
        kwargs.pop("dim", None)
        kwargs.setdefault("reference", 0)
        super().__init__(encoders, dim=0, **kwargs)
        num_weak = len(self.encoders) - 1
        self.weak_projs = torch.nn.ModuleList(torch.nn.Linear(d, weak_dim) for d in self.dims[1:])
        self.w_indep = torch.nn.Parameter(torch.zeros(num_weak))
        self.w_dep = torch.nn.Linear(self.dims[0], num_weak, bias=False)
        self.smoothing, self.eps = smoothing, 0.1 / num_weak
        self.output_dim = self.dims[0] + 2 * weak_dim
        if self.stft_branch is not None:
            raise ValueError(
                "the STFT branch is defined for the d-dimensional fusions of Dual-Encoder Fusion, not for MoWE"
            )

    def routing(self, base: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_indep [M], r_dep [B, M]) with the training-time smoothing applied in train mode."""
        r_indep = keep_top1(torch.softmax(self.w_indep, dim=-1))
        r_dep = keep_top1(torch.softmax(self.w_dep(masked_mean(base, mask)), dim=-1))
        if self.training:
            r_dep = (1 - self.smoothing) * r_dep + self.smoothing * self.eps
        return r_indep, r_dep

    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext):
        base = streams[0].features
        weak = torch.stack([p(s.features) for p, s in zip(self.weak_projs, streams[1:])], dim=-1)  # [B,T,W,M]
        r_indep, r_dep = self.routing(base, mask)
        z_indep = (weak * r_indep).sum(-1)
        z_dep = (weak * r_dep[:, None, None, :]).sum(-1)
        mean_dep = r_dep.mean(0)
        self.aux_losses["mowe"] = 0.5 * (entropy(r_indep) + (entropy(r_dep).mean() - entropy(mean_dep)))
        self.record("dep_choice", torch.nn.functional.one_hot(r_dep.argmax(-1), r_dep.shape[-1]).float(), context)
        self.record(
            "indep_choice",
            torch.nn.functional.one_hot(r_indep.argmax(-1), r_indep.shape[-1]).float().expand(base.shape[0], -1),
            context,
        )
        return torch.cat([base, z_dep, z_indep], dim=-1), mask
