"""Fusion front-ends checked equation by equation against direct computations on small tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xares_fusion.encoders import build_encoder, check_encoder
from xares_fusion.frontend import FusionContext, Stream
from xares_fusion.fusion import AlignmentError, align_streams
from xares_fusion.fusion.layers import load_balance_loss
from xares_fusion.projectors import build_projector

WEAK = [
    {"name": "random", "args": {"output_dim": 12, "pool": 2}},  # 25 fps
    {"name": "logmel", "args": {"n_mels": 10, "pool": 4}},
]  # 25 fps


def _audio(seconds: tuple[float, ...] = (1.0, 2.0)) -> tuple[torch.Tensor, torch.Tensor]:
    n = [int(s * 16000) for s in seconds]
    gen = torch.Generator().manual_seed(0)
    audio, mask = torch.zeros(len(n), max(n)), torch.zeros(len(n), max(n), dtype=torch.long)
    for i, k in enumerate(n):
        audio[i, :k] = 0.1 * torch.randn(k, generator=gen)
        mask[i, :k] = 1
    return audio, mask


def _stream(lengths: list[int], total: int, dim: int, rate: float | None, seed: int = 0) -> Stream:
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.arange(total)[None] < torch.tensor(lengths)[:, None]).long()
    return Stream(torch.randn(len(lengths), total, dim, generator=gen) * mask[..., None], mask, rate)


# -- time alignment -------------------------------------------------------------------------------


def test_streams_at_100_50_and_25_fps_align_to_the_reference() -> None:
    seconds = torch.tensor([1.0, 2.0])
    ref = _stream([50, 100], 100, 4, 50.0)
    fast = _stream([100, 200], 200, 3, 100.0, seed=1)
    slow = _stream([25, 50], 50, 2, 25.0, seed=2)
    aligned, common = align_streams([ref, fast, slow], 0, seconds)
    assert [s.features.shape for s in aligned] == [(2, 100, 4), (2, 100, 3), (2, 100, 2)]
    assert common.sum(-1).tolist() == [50, 100]
    # 100 fps pooled by 2 (mean of frame pairs); 25 fps repeated twice
    torch.testing.assert_close(aligned[1].features[1, 7], fast.features[1, 14:16].mean(0))
    torch.testing.assert_close(aligned[2].features[1, 9], slow.features[1, 4])
    assert (aligned[1].features[0, 50:] == 0).all()


def test_unknown_frame_rate_is_measured_and_odd_ratios_need_interpolation() -> None:
    seconds = torch.tensor([1.0, 2.0])
    ref = _stream([50, 100], 100, 4, 50.0)
    unknown = _stream([25, 50], 50, 2, None)
    aligned, _ = align_streams([ref, unknown], 0, seconds)
    assert aligned[1].frame_rate == 50.0 and aligned[1].mask.sum(-1).tolist() == [50, 100]
    odd = _stream([30, 60], 60, 2, 30.0)
    with pytest.raises(AlignmentError, match="30 frames/s .* 50: not an integer ratio.*interpolate: true"):
        align_streams([ref, odd], 0, seconds, names=["whisper", "odd"])
    aligned, common = align_streams([ref, odd], 0, seconds, interpolate=True)
    assert aligned[1].features.shape == (2, 100, 2) and common.sum(-1).tolist() == [50, 100]


# -- gated residual, STFT branch --------------------------------------------------------------


def test_gate_sums_to_one_and_zero_gate_gives_the_half_sum_formula() -> None:
    fusion = build_encoder("gated", {"encoders": WEAK, "dim": 8})
    audio, mask = _audio()
    streams = fusion.encode_streams(audio, mask)
    h = [s.features for s in align_streams(streams, 0, torch.tensor([1.0, 2.0]))[0]]
    _, gate = fusion.gated(h)
    torch.testing.assert_close(gate.sum(-1), torch.ones(gate.shape[:2]))
    with torch.no_grad():
        fusion.gated.gate.weight.zero_()
        fusion.gated.gate.bias.zero_()
    z, gate = fusion.gated(h)
    d, w = fusion.gated.projs[0](h[0]), fusion.gated.projs[1](h[1])
    expected = F.layer_norm(F.layer_norm((d + w) / 2, (8,)) + d + w, (8,))  # LN affine is identity at init
    torch.testing.assert_close(gate, torch.full_like(gate, 0.5))
    torch.testing.assert_close(z, expected)


def test_stft_branch_adds_gamma_times_projected_log_mel() -> None:
    plain = build_encoder("gated", {"encoders": WEAK, "dim": 8})
    torch.manual_seed(0)
    with_stft = build_encoder("gated", {"encoders": WEAK, "dim": 8, "stft": {"n_fft": 512, "hop_length": 640}})
    with_stft.gated.load_state_dict(plain.gated.state_dict())
    assert with_stft.stft_branch.gamma.item() == pytest.approx(1e-2)
    audio, mask = _audio()
    base, fmask = plain(audio, mask)
    fused, _ = with_stft(audio, mask)
    spec, smask = with_stft.stft_branch.spectrum(audio, mask)  # 25 fps, like the streams
    expected = (base + 1e-2 * with_stft.stft_branch.proj(spec[:, : base.shape[1]])) * fmask[..., None]
    torch.testing.assert_close(fused, expected)


# -- MoE routing and load balance -------------------------------------------------------------


def test_load_balance_loss_matches_the_formula_on_hand_made_routing() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    assert load_balance_loss(probs, torch.tensor([[1, 0], [0, 1]])).item() == pytest.approx(
        2 * (0.55 * 0.5 + 0.45 * 0.5)
    )
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    assert load_balance_loss(probs, torch.tensor([[1, 0], [1, 0]])).item() == pytest.approx(2 * 0.85)


@pytest.mark.parametrize("mode", ["concat", "proj"])
def test_moe_uses_exactly_k_experts_per_token_weighted_by_router_probability(mode: str) -> None:
    fusion = build_encoder("moe", {"encoders": WEAK, "dim": 8, "input": mode, "num_experts": 4, "top_k": 2})
    audio, mask = _audio()
    streams, _ = align_streams(fusion.encode_streams(audio, mask), 0, torch.tensor([1.0, 2.0]))
    common = streams[0].mask * streams[1].mask
    z, _ = fusion.combine(streams, common, FusionContext())
    parts = [s.features for s in streams]
    if mode == "proj":
        parts = [p(x) for p, x in zip(fusion.projs, parts)]
    x = torch.cat(parts, -1)[1, 10]  # one token, by hand
    p = torch.softmax(fusion.router(x), -1)
    top = p.topk(2).indices
    assert len(top) == 2
    y = sum(p[e] * fusion.experts[e](x) for e in top.tolist())
    torch.testing.assert_close(z[1, 10], fusion.out(y))
    valid = common.reshape(-1).bool()
    tokens = torch.cat(parts, -1).reshape(-1, x.shape[0])[valid]
    probs = torch.softmax(fusion.router(tokens), -1)
    selected = F.one_hot(probs.topk(2).indices, 4).sum(1)
    assert (selected.sum(-1) == 2).all()
    expected = 4 * (probs.mean(0) * selected.float().mean(0)).sum()
    torch.testing.assert_close(fusion.aux_losses["moe_balance"], expected)


# -- explicit injection -----------------------------------------------------------------------


def test_explicit_injection_losses_follow_eqs_11_12_and_ignore_padding() -> None:
    fusion = build_encoder("explicit", {"encoders": WEAK, "dim": 8, "decor_dim": 5})
    a = _stream([10, 20], 20, 12, 25.0, seed=3)
    b = _stream([10, 20], 20, 10, 25.0, seed=4)
    mask = a.mask
    fusion.combine([a, b], mask, FusionContext())
    recon, decor = fusion.aux_losses["recon"], fusion.aux_losses["decor"]
    valid = mask.reshape(-1).bool()
    h_a, h_b = a.features.reshape(-1, 12)[valid], b.features.reshape(-1, 10)[valid]
    r = h_b - h_a @ fusion.predict.weight.T
    assert recon.item() == pytest.approx((r**2).sum(-1).mean().item(), rel=1e-5)
    u, v = fusion.decor_a(h_a), fusion.decor_r(r)
    c = sum(torch.outer(ui - u.mean(0), vi - v.mean(0)) for ui, vi in zip(u, v)) / u.shape[0]
    assert decor.item() == pytest.approx((c**2).sum().item(), rel=1e-4)
    # altering padded frames changes neither loss
    a.features[0, 15:] = 100.0
    b.features[0, 12:] = -7.0
    fusion.combine([a, b], mask, FusionContext())
    assert fusion.aux_losses["recon"].item() == pytest.approx(recon.item(), rel=1e-6)
    assert fusion.aux_losses["decor"].item() == pytest.approx(decor.item(), rel=1e-6)


# -- MoWE -------------------------------------------------------------------------------------


def test_mowe_routing_smoothing_only_in_training_and_loss_formula() -> None:
    pool = WEAK + [{"name": "stft", "args": {"n_fft": 256}}]
    fusion = build_encoder("mowe", {"encoders": pool, "weak_dim": 6})
    with torch.no_grad():
        fusion.w_indep.copy_(torch.tensor([0.1, 0.5]))
    audio, mask = _audio()
    base = _stream([25, 50], 50, 12, 25.0)
    fusion.eval()
    r_indep, r_dep = fusion.routing(base.features, base.mask)
    p_indep = torch.softmax(torch.tensor([0.1, 0.5]), -1)
    torch.testing.assert_close(r_indep, torch.tensor([0.0, p_indep[1].item()]))  # KeepTop1
    assert ((r_dep > 0).sum(-1) == 1).all()
    fusion.train()
    _, smoothed = fusion.routing(base.features, base.mask)
    torch.testing.assert_close(smoothed, 0.9 * r_dep + 0.1 * (0.1 / 2))
    # eqs. 6-9 on the routing of this batch
    features, fmask = fusion(audio, mask)
    assert features.shape[-1] == fusion.output_dim == 12 + 2 * 6
    streams, _ = align_streams(fusion.encode_streams(audio, mask), 0, torch.tensor([1.0, 2.0]))
    r_indep, r_dep = fusion.routing(streams[0].features, streams[0].mask)

    def ent(p: torch.Tensor) -> torch.Tensor:
        return -(p[p > 0] * p[p > 0].log()).sum()

    expected = 0.5 * (ent(r_indep) + (sum(ent(r) for r in r_dep) / 2 + (r_dep.mean(0) * r_dep.mean(0).log()).sum()))
    assert fusion.aux_losses["mowe"].item() == pytest.approx(expected.item(), rel=1e-5)


# -- MoE-Adapter projector --------------------------------------------------------------------


def test_moe_adapter_gates_k_experts_softmax_over_top_k_and_aux_formula() -> None:
    torch.manual_seed(0)
    proj = build_projector("moe-adapter", 6, 10, {"num_experts": 5, "top_k": 2, "num_shared": 1, "expert_hidden": 7})
    x = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    y, _ = proj(x, mask)
    tokens = x.reshape(-1, 6)
    gates, selected = proj.gating(tokens)
    assert ((gates > 0).sum(-1) == 2).all() and torch.allclose(gates.sum(-1), torch.ones(8))
    logits = proj.gate(tokens[3])
    top = logits.topk(2).indices
    torch.testing.assert_close(gates[3, top], torch.softmax(logits[top], -1))
    h = sum(gates[3, e] * proj.experts[e](tokens[3]) for e in top.tolist()) + proj.shared[0](tokens[3])
    torch.testing.assert_close(y[0, 3], proj.aggregation(proj.out_norm(proj.out(h))))
    valid = mask.reshape(-1).bool()
    expected = 5 * sum(gates[valid][:, e].mean() * selected[valid][:, e].mean() for e in range(5))
    torch.testing.assert_close(proj.aux_losses["moe_adapter_balance"], expected)


def test_dense_ffn_baseline_matches_the_moe_adapter_parameter_count() -> None:
    moe_args = {"num_experts": 8, "top_k": 4, "expert_hidden": 40, "aggregation_hidden": 96}

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    moe = build_projector("moe-adapter", 48, 64, moe_args)
    dense = build_projector("dense-ffn", 48, 64, {"match_moe": moe_args})
    assert abs(count(dense) - count(moe)) <= 48 + 64 + 1


# -- every catalogue entry honours the encoder contract -----------------------------------------


@pytest.mark.parametrize(
    "name,args",
    [
        ("concat", {}),
        ("average", {}),
        ("gated", {"stft": {}}),
        ("moe", {"input": "proj", "stft": {}}),
        ("explicit", {"stft": {}}),
        ("mowe", {"weak_dim": 4}),
        ("qformer", {"hidden_size": 16, "window": 5}),
    ],
)
def test_every_fusion_passes_the_encoder_check(name: str, args: dict) -> None:
    encoders = WEAK + ([{"name": "stft", "args": {"n_fft": 256}}] if name == "mowe" else [])
    summary = check_encoder(name, {"encoders": encoders, **({} if name == "mowe" else {"dim": 8}), **args})
    expected = [5, 10] if name == "qformer" else [25, 50]
    assert summary["frames"] == expected


def test_a_fusion_can_be_fused_again() -> None:
    inner = {"name": "gated", "args": {"encoders": WEAK, "dim": 8}}
    summary = check_encoder("concat", {"encoders": [inner, WEAK[1]], "dim": 6})
    assert summary["output_dim"] == 6 and summary["frames"] == [25, 50]
