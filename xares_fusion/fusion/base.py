"""The fusion front-end: several encoders in, one ``(features, mask)`` stream out.

A fusion is an encoder (docs/design.md): registered, checked and benchmarked like one, and
fusable again. It implements the front-end interface (:class:`~xares_fusion.frontend.FrontEnd`),
whose two steps let the frozen part be cached:

* :meth:`FusionFrontEnd.encode_streams` runs every frozen sub-encoder under ``no_grad`` in eval
  mode, or reads it from the feature cache (a sub-encoder a stage trains, e.g. with LoRA, is left
  for the next step);
* :meth:`FusionFrontEnd.fuse` runs the trainable sub-encoders, aligns the streams in time,
  combines them (:meth:`combine`, one per fusion), adds the optional STFT branch, and leaves its
  auxiliary losses in ``aux_losses`` and its routing statistics in ``stats``.
"""

from __future__ import annotations

import abc
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from ..constants import SAMPLE_RATE
from ..encoders.contract import build_encoder, declared_extras, frozen_stream, run_encoder
from ..encoders.masking import sample_lengths
from ..encoders.spectral import LogMelEncoder, StftEncoder
from ..frontend import FrontEnd, FusionContext, Stream, StreamCache
from .streams import align_streams

if TYPE_CHECKING:
    from ..data.shards import ClipRef


class RoutingStats:
    """Sums of per-row statistics grouped by task; ``summary()`` gives the means.

    Collected only in eval mode, so the record describes how the trained model routes the test
    set (the heatmaps of MoE-Adapter Fig. 3 and PaM Fig. 3 are tables of these means).
    """

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        self._counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(
        self, name: str, values: torch.Tensor, tasks: list[str] | None, weights: torch.Tensor | None = None
    ) -> None:
        """``values`` [B, ...] per row; ``weights`` [B] (e.g. valid frames) weight the mean."""
        values = values.detach().float().cpu()
        weights = torch.ones(values.shape[0]) if weights is None else weights.detach().float().cpu()
        for i, task in enumerate(tasks or ["all"] * values.shape[0]):
            total = self._sums[task].get(name)
            row = values[i] * weights[i]
            self._sums[task][name] = row if total is None else total + row
            self._counts[task][name] += float(weights[i])

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for task, sums in self._sums.items():
            out[task] = {}
            for name, total in sums.items():
                mean = total / max(self._counts[task][name], 1e-12)
                out[task][name] = round(float(mean), 6) if mean.dim() == 0 else [round(float(v), 6) for v in mean]
        return out

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()


class RoutingStatsMixin:
    """``record`` per-row statistics in eval mode; ``routing_stats`` / ``reset_stats`` for the runner,
    which collects them per evaluated task into the result record."""

    stats: RoutingStats
    training: bool

    def record(
        self, name: str, values: torch.Tensor, context: FusionContext | None, weights: torch.Tensor | None = None
    ) -> None:
        if not self.training:
            self.stats.add(name, values, context.tasks if context else None, weights)

    def routing_stats(self) -> dict[str, Any]:
        """``{"per_task": {task: {statistic: mean}}}`` since the last ``reset_stats`` (fusions may
        add global entries, e.g. PaM's layer weights)."""
        return {"per_task": self.stats.summary()}

    def reset_stats(self) -> None:
        self.stats.reset()


def _build_sub_encoder(spec: Any, index: int) -> torch.nn.Module:
    if isinstance(spec, str):
        return build_encoder(spec)
    if isinstance(spec, dict) and "name" in spec:
        unknown = set(spec) - {"name", "args"}
        if unknown:
            raise ValueError(f"encoders[{index}]: unknown field(s) {sorted(unknown)}; use {{name: ..., args: {{...}}}}")
        return build_encoder(spec["name"], spec.get("args") or {})
    raise ValueError(f"encoders[{index}]: expected a name or {{name: ..., args: {{...}}}}, got {spec!r}")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid frames: [B, T, D], [B, T] -> [B, D]."""
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


class StftBranch(torch.nn.Module):
    """Signal-level residual (Dual-Encoder Fusion eqs. 7-8): s_t = W_s S_t; z_t <- z_t + gamma s_t.

    S is the log-magnitude STFT (``n_mels`` given: log-mel, as in the paper's settings
    n_fft = win = 1024, hop 640, 128 mel) at SAMPLE_RATE / hop frames/s, aligned to the fusion's frames;
    gamma is a learnable scalar initialised small (1e-2).
    """

    def __init__(
        self, dim: int, n_fft: int = 1024, hop_length: int = 640, n_mels: int | None = 128, gamma_init: float = 1e-2
    ) -> None:
        super().__init__()
        self.spectrum = (
            LogMelEncoder(n_mels=n_mels, n_fft=n_fft, hop_length=hop_length)
            if n_mels
            else StftEncoder(n_fft=n_fft, hop_length=hop_length)
        )
        self.proj = torch.nn.Linear(self.spectrum.output_dim, dim)
        self.gamma = torch.nn.Parameter(torch.tensor(float(gamma_init)))

    def forward(
        self,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        reference: Stream,
        seconds: torch.Tensor,
        interpolate: bool,
    ) -> torch.Tensor:
        with torch.no_grad():
            spec, mask = self.spectrum(audio, audio_mask)
        stream = Stream(spec, mask, self.spectrum.frame_rate)
        (_, aligned), _ = align_streams([reference, stream], 0, seconds, interpolate, ["reference", "stft branch"])
        return self.gamma * self.proj(aligned.features)


class FusionFrontEnd(RoutingStatsMixin, FrontEnd):
    """Base of every fusion: sub-encoders, alignment, STFT branch, aux losses and statistics.

    Args:
        encoders: sub-encoder specs, each a registered name / file / dotted path, or
            ``{name: ..., args: {...}}``; a spec may itself name a fusion.
        dim: size d of the fused features (the projector maps d to the LLM width).
        reference: index of the stream whose frame rate and length the others are aligned to.
        interpolate: allow linear interpolation between non-integer frame-rate ratios.
        stft: ``{}`` or the StftBranch arguments to add the STFT residual branch; None: no branch.
    """

    trainable = True
    needs_hidden_states = False  # combine reads every layer's output (Stream.hidden_states)

    def __init__(
        self,
        encoders: list[Any],
        dim: int = 512,
        reference: int = 0,
        interpolate: bool = False,
        stft: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("a fusion needs at least one entry in 'encoders'")
        if not 0 <= reference < len(encoders):
            raise ValueError(f"reference={reference} but there are {len(encoders)} encoders")
        self.encoders = torch.nn.ModuleList(_build_sub_encoder(spec, i) for i, spec in enumerate(encoders))
        self.encoder_names = [spec if isinstance(spec, str) else spec["name"] for spec in encoders]
        for encoder in self.encoders:
            declared = declared_extras(encoder)
            if not declared.trainable:
                encoder.requires_grad_(False)
            if self.needs_hidden_states:
                if not declared.offers_hidden_states:
                    raise ValueError(
                        f"{type(self).__name__} needs every layer's output, but encoder "
                        f"{type(encoder).__name__} offers no 'hidden_states'."
                    )
                encoder.output_hidden_states = True
        self.output_dim, self.reference, self.interpolate = dim, reference, interpolate
        self.frame_rate = declared_extras(self.encoders[reference]).frame_rate
        self.stft_branch = StftBranch(dim, **stft) if stft is not None else None
        self.stats = RoutingStats()

    @property
    def dims(self) -> list[int]:
        return [int(e.output_dim) for e in self.encoders]

    def sub_encoders(self) -> torch.nn.ModuleList:
        return self.encoders

    # -- the frozen step ---------------------------------------------------------------------
    def encode_streams(
        self,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        cache: StreamCache | None = None,
        clips: list[ClipRef | None] | None = None,
        train_mode: bool = False,
    ) -> list[Stream | None]:
        """Outputs of the frozen sub-encoders (None where a sub-encoder trains), read from and
        written to ``cache`` when given, unless this fusion needs every layer's output (the cache
        keeps the last). Sub-encoders always run in eval mode: ``train_mode`` concerns a single
        encoder only."""
        return [
            None
            if declared_extras(encoder).trainable
            else frozen_stream(encoder, audio, audio_mask, cache, clips, hidden_states=self.needs_hidden_states)
            for encoder in self.encoders
        ]

    # -- the trainable step ------------------------------------------------------------------
    def fuse(
        self,
        streams: list[Stream | None],
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        context: FusionContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Complete, align and combine the streams; returns fused features [B, T, dim] and mask."""
        streams = [
            s if s is not None else run_encoder(e, audio, audio_mask, self.needs_hidden_states)
            for s, e in zip(streams, self.encoders)
        ]
        seconds = sample_lengths(audio, audio_mask).float() / SAMPLE_RATE
        aligned, mask = align_streams(streams, self.reference, seconds, self.interpolate, self.encoder_names)
        self.aux_losses = {}
        context = context or FusionContext()
        fused, mask = self.combine(aligned, mask, context)
        if self.stft_branch is not None:
            fused = fused + self.stft_branch(
                audio, audio_mask, Stream(fused, mask, self.frame_rate), seconds, self.interpolate
            )
        return fused * mask[..., None].to(fused.dtype), mask

    @abc.abstractmethod
    def combine(
        self, streams: list[Stream], mask: torch.Tensor, context: FusionContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned streams (same T, features zero on padded frames) -> fused [B, T', dim] and its
        mask (T' = T except for fusions that resample, e.g. the windowed Q-Former)."""
