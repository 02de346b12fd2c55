"""The fusion front-end: several encoders in, one ``(features, mask)`` stream out.

A fusion is an encoder (DESIGN §4): registered, checked and benchmarked like one, and fusable
again. Its work is split in two so that the frozen part can be cached (DESIGN §7):

* :meth:`FusionFrontEnd.encode_streams` runs every frozen sub-encoder under ``no_grad`` in eval
  mode (a sub-encoder a stage trains, e.g. with LoRA, is left for the next step);
* :meth:`FusionFrontEnd.fuse` runs the trainable sub-encoders, aligns the streams in time,
  combines them (:meth:`combine`, one per fusion), adds the optional STFT branch, and leaves its
  auxiliary losses in ``aux_losses`` and its routing statistics in ``stats``.
"""

from __future__ import annotations

import abc
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from ..encoders.contract import build_encoder
from ..encoders.masking import sample_lengths
from ..encoders.spectral import LogMelEncoder, StftEncoder
from .streams import SAMPLE_RATE, Stream, align_streams


@dataclass
class FusionContext:
    """What some fusions need beyond the audio, passed explicitly (never through globals).

    ``tasks``: the task name of every row (routing statistics per task, PaM's task targets);
    ``prompt_states``: [B, H] LLM hidden state of each row's prompt (PaM's router input);
    ``task_vocab``: the training tasks in a fixed order (PaM maps a task to a routed expert).
    """

    tasks: list[str] | None = None
    prompt_states: torch.Tensor | None = None
    task_vocab: list[str] = field(default_factory=list)


class RoutingStats:
    """Sums of per-row statistics grouped by task; ``summary()`` gives the means.

    Collected only in eval mode, so the record describes how the trained model routes the test
    set (the heatmaps of seed 003 Fig. 3 and seed 002 Fig. 3 are tables of these means).
    """

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        self._counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, name: str, values: torch.Tensor, tasks: list[str] | None, weights: torch.Tensor | None = None) -> None:
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

    def record(self, name: str, values: torch.Tensor, context: FusionContext | None,
               weights: torch.Tensor | None = None) -> None:
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
    """Signal-level residual (seed 000 eqs. 7-8): s_t = W_s S_t; z_t <- z_t + gamma s_t.

    S is the log-magnitude STFT (``n_mels`` given: log-mel, as in the paper's settings
    n_fft = win = 1024, hop 640, 128 mel) at 16000 / hop frames/s, aligned to the fusion's frames;
    gamma is a learnable scalar initialised small (1e-2).
    """

    def __init__(self, dim: int, n_fft: int = 1024, hop_length: int = 640, n_mels: int | None = 128,
                 gamma_init: float = 1e-2) -> None:
        super().__init__()
        self.spectrum = (LogMelEncoder(n_mels=n_mels, n_fft=n_fft, hop_length=hop_length) if n_mels
                         else StftEncoder(n_fft=n_fft, hop_length=hop_length))
        self.proj = torch.nn.Linear(self.spectrum.output_dim, dim)
        self.gamma = torch.nn.Parameter(torch.tensor(float(gamma_init)))

    def forward(self, audio: torch.Tensor, audio_mask: torch.Tensor | None, reference: Stream,
                seconds: torch.Tensor, interpolate: bool) -> torch.Tensor:
        with torch.no_grad():
            spec, mask = self.spectrum(audio, audio_mask)
        stream = Stream(spec, mask, self.spectrum.frame_rate)
        (_, aligned), _ = align_streams([reference, stream], 0, seconds, interpolate, ["reference", "stft branch"])
        return self.gamma * self.proj(aligned.features)


class FusionFrontEnd(RoutingStatsMixin, torch.nn.Module, abc.ABC):
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
    needs_hidden_states = False
    needs_prompt_state = False
    default_aux_weights: dict[str, float] = {}  # the papers' loss weights; the recipe's win

    def __init__(self, encoders: list[Any], dim: int = 512, reference: int = 0, interpolate: bool = False,
                 stft: dict[str, Any] | None = None) -> None:
        super().__init__()
        if not encoders:
            raise ValueError("a fusion needs at least one entry in 'encoders'")
        if not 0 <= reference < len(encoders):
            raise ValueError(f"reference={reference} but there are {len(encoders)} encoders")
        self.encoders = torch.nn.ModuleList(_build_sub_encoder(spec, i) for i, spec in enumerate(encoders))
        self.encoder_names = [spec if isinstance(spec, str) else spec["name"] for spec in encoders]
        for encoder in self.encoders:
            if not getattr(encoder, "trainable", False):
                encoder.requires_grad_(False)
            if self.needs_hidden_states:
                if not hasattr(encoder, "output_hidden_states"):
                    raise ValueError(f"{type(self).__name__} needs every layer's output, but encoder "
                                     f"{type(encoder).__name__} offers no 'hidden_states'.")
                encoder.output_hidden_states = True
        self.output_dim, self.reference, self.interpolate = dim, reference, interpolate
        self.frame_rate = getattr(self.encoders[reference], "frame_rate", None)
        self.stft_branch = StftBranch(dim, **stft) if stft is not None else None
        self.aux_losses: dict[str, torch.Tensor] = {}
        self.stats = RoutingStats()

    @property
    def dims(self) -> list[int]:
        return [int(e.output_dim) for e in self.encoders]

    # -- the frozen step ---------------------------------------------------------------------
    def _run_encoder(self, encoder: torch.nn.Module, audio: torch.Tensor, audio_mask: torch.Tensor | None) -> Stream:
        features, mask = encoder(audio, audio_mask)
        if mask is None:
            mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
        hidden = getattr(encoder, "hidden_states", None) if self.needs_hidden_states else None
        return Stream(features, mask.long(), getattr(encoder, "frame_rate", None),
                      list(hidden) if hidden is not None else None)

    def encode_streams(self, audio: torch.Tensor, audio_mask: torch.Tensor | None, cache: Any = None,
                       cacheable: list[bool] | None = None) -> list[Stream | None]:
        """Outputs of the frozen sub-encoders (None where a sub-encoder trains), read from and
        written to ``cache`` (a :class:`~xares_fusion.feature_cache.FeatureCache`) when given,
        unless this fusion needs every layer's output (the cache keeps the last)."""
        streams: list[Stream | None] = []
        for encoder in self.encoders:
            if getattr(encoder, "trainable", False):
                streams.append(None)
                continue
            if cache is not None and not self.needs_hidden_states:
                streams.append(cache.encode(encoder, audio, audio_mask, cacheable))
                continue
            encoder.eval()
            with torch.no_grad():
                streams.append(self._run_encoder(encoder, audio, audio_mask))
        return streams

    # -- the trainable step ------------------------------------------------------------------
    def fuse(self, streams: list[Stream | None], audio: torch.Tensor, audio_mask: torch.Tensor | None,
             context: FusionContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Complete, align and combine the streams; returns fused features [B, T, dim] and mask."""
        streams = [s if s is not None else self._run_encoder(e, audio, audio_mask)
                   for s, e in zip(streams, self.encoders)]
        seconds = sample_lengths(audio, audio_mask).float() / SAMPLE_RATE
        aligned, mask = align_streams(streams, self.reference, seconds, self.interpolate, self.encoder_names)
        self.aux_losses = {}
        context = context or FusionContext()
        fused, mask = self.combine(aligned, mask, context)
        if self.stft_branch is not None:
            fused = fused + self.stft_branch(audio, audio_mask, Stream(fused, mask, self.frame_rate), seconds,
                                             self.interpolate)
        return fused * mask[..., None].to(fused.dtype), mask

    @abc.abstractmethod
    def combine(self, streams: list[Stream], mask: torch.Tensor, context: FusionContext
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Aligned streams (same T, features zero on padded frames) -> fused [B, T', dim] and its
        mask (T' = T except for fusions that resample, e.g. the windowed Q-Former)."""

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None,
                context: FusionContext | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fuse(self.encode_streams(audio, audio_attention_mask), audio, audio_attention_mask, context)

