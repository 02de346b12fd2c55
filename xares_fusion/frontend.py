"""The front-end interface: all the audio LLM sees of an encoder or a fusion of encoders.

A front end turns a batch of 16 kHz audio into the features the projector reads, in two steps so
that the frozen part can be cached (docs/design.md):

* the frozen step, :meth:`FrontEnd.encode_streams`: every frozen encoder's output as a
  :class:`Stream`, computed without gradients or read from the feature cache, None for an encoder
  that trains;
* the trainable step, :meth:`FrontEnd.fuse`: those streams (and the audio, for the encoders that
  train) -> features [B, T, output_dim] and mask [B, T].

Every optional capability is an explicit field or method with a default here, so the model calls
the interface and never probes attributes. A fusion implements it directly
(:class:`~xares_fusion.fusion.base.FusionFrontEnd`); a plain encoder that follows the XARES-LLM
contract is adapted by :func:`xares_fusion.encoders.contract.as_front_end`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

if TYPE_CHECKING:
    from .data.shards import ClipRef


class StreamCache(Protocol):
    """What the frozen step needs of a feature cache (``feature_cache.FeatureCache`` is the one we
    ship): a frozen encoder's stream for a batch, read where stored, computed otherwise. Declared
    here so that the core and the encoders do not import the cache's implementation."""

    def encode(
        self,
        encoder: torch.nn.Module,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        clips: list[ClipRef | None] | None = None,
    ) -> Stream: ...


@dataclass
class Stream:
    """One encoder's output: features [B, T, D], mask [B, T] (1 = valid), frames per second
    (None if unknown) and, when the fusion asked for them, every layer's output."""

    features: torch.Tensor
    mask: torch.Tensor
    frame_rate: float | None = None
    hidden_states: list[torch.Tensor] | None = None


def nonfinite_rows(streams: list[Stream | None]) -> list[int]:
    """Batch rows where any stream holds NaN or Inf in a valid frame (padding frames do not count):
    an encoder that overflows on some clips, found before it turns into empty answers or a NaN loss."""
    bad: set[int] = set()
    for stream in streams:
        if stream is not None:
            finite = torch.isfinite(stream.features).all(-1) | (stream.mask == 0)
            bad.update(torch.nonzero(~finite.all(-1)).flatten().tolist())
    return sorted(bad)


@dataclass
class FusionContext:
    """What some front ends and projectors need beyond the audio, passed explicitly (never
    through globals).

    ``tasks``: the task name of every row (routing statistics per task, PaM's task targets);
    ``prompt_states``: [B, H] LLM hidden state of each row's prompt (PaM's router input);
    ``task_vocab``: the training tasks in a fixed order (PaM maps a task to a routed expert).
    """

    tasks: list[str] | None = None
    prompt_states: torch.Tensor | None = None
    task_vocab: list[str] = field(default_factory=list)


class FrontEnd(torch.nn.Module, abc.ABC):
    """The one interface between the audio LLM and its audio front end.

    Fields (class defaults, overridden by the front ends that differ):
        output_dim: size of the features :meth:`fuse` returns (set by every front end).
        frame_rate: frames per second of those features; None when unknown.
        trainable: the trainable step has weights of its own that train (the recipe part
            ``front_end``); False leaves the whole front end frozen.
        needs_prompt_state: :meth:`fuse` routes on ``context.prompt_states``; the model then
            calls :meth:`bind_prompt_dim` with the LLM's width and computes those states.
        has_conditional_parameters: a training step may leave some trainable weights without a
            gradient (routed experts or routers a batch does not use); multi-process training
            then has DDP look for them every step (``find_unused_parameters``), which costs time.
        default_aux_weights: the weight of each auxiliary loss the papers give (a recipe's
            ``model.aux_loss_weights`` wins).
        aux_losses: named auxiliary losses of the last :meth:`fuse` call, unweighted.
    """

    output_dim: int
    frame_rate: float | None = None
    trainable: bool = False
    needs_prompt_state: bool = False
    has_conditional_parameters: bool = False
    default_aux_weights: ClassVar[dict[str, float]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.aux_losses: dict[str, torch.Tensor] = {}

    @abc.abstractmethod
    def encode_streams(
        self,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        cache: StreamCache | None = None,
        clips: list[ClipRef | None] | None = None,
        train_mode: bool = False,
    ) -> list[Stream | None]:
        """The frozen step: one stream per encoder, None where the encoder trains (it runs in
        :meth:`fuse`). ``cache`` serves and stores the rows ``clips`` names (None rows are computed);
        ``train_mode`` runs a frozen single encoder that is computed here in train mode, as the
        official pipeline does during training (the model's ``frozen_encoder_mode``)."""

    @abc.abstractmethod
    def fuse(
        self,
        streams: list[Stream | None],
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        context: FusionContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The trainable step: the streams of :meth:`encode_streams` -> features [B, T, output_dim]
        and mask [B, T]; runs the encoders that train on ``audio`` and leaves ``aux_losses``."""

    def forward(
        self,
        audio: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
        context: FusionContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both steps at once, without a cache: the encoder contract's ``forward``."""
        return self.fuse(self.encode_streams(audio, audio_attention_mask), audio, audio_attention_mask, context)

    def bind_prompt_dim(self, prompt_dim: int) -> None:
        """Build what routes on prompt states of width ``prompt_dim`` (the LLM's hidden size);
        called by the model when ``needs_prompt_state``. Nothing to build by default."""

    def sub_encoders(self) -> torch.nn.ModuleList:
        """The encoders a fusion combines, in recipe order (where a stage attaches LoRA to one);
        empty for a single encoder."""
        return torch.nn.ModuleList()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The weights of the recipe part ``front_end``: when ``trainable``, every weight outside
        the sub-encoders (their LoRA adapters are the part ``encoder_lora``); otherwise none."""
        if not self.trainable:
            return []
        inside = {id(p) for p in self.sub_encoders().parameters()}
        return [p for p in self.parameters() if id(p) not in inside]

    def routing_stats(self) -> dict[str, Any] | None:
        """Routing/gating statistics since the last :meth:`reset_stats`; None: it keeps none."""
        return None

    def reset_stats(self) -> None:
        """Forget the routing statistics collected so far (none by default)."""
