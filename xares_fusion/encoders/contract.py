"""The encoder contract (XARES-LLM compatible) and the checker that enforces it.

An encoder is a ``torch.nn.Module`` with an ``output_dim`` attribute and

    forward(audio: [B, S] float, 16 kHz mono, audio_attention_mask: [B, S] | None)
        -> (features: [B, T, D], feature_attention_mask: [B, T] | None)

masks being 1 = keep, 0 = padding, and ``D == output_dim``. Optional extras, declared by attribute
and read by :func:`declared_extras` alone: ``frame_rate`` (frames/s), ``trainable``,
``output_hidden_states`` with ``hidden_states`` (all layer outputs of the last call).

Such an encoder reaches the audio LLM through :func:`as_front_end`, and a fusion runs its
sub-encoders through :func:`frozen_stream` and :func:`run_encoder`: the one implementation of
"run a frozen encoder into a stream, or read the stream from the feature cache".
"""

from __future__ import annotations

import inspect
import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..constants import SAMPLE_RATE
from ..errors import EncoderError
from ..frontend import FrontEnd, FusionContext, Stream, StreamCache
from ..registry import RegistryError, encoder_display_name, resolve_encoder_factory
from .whisper_ct2 import OFFLINE_WHISPER

if TYPE_CHECKING:
    from ..data.shards import ClipRef


class EncoderContractError(EncoderError, ValueError):
    """The encoder breaks the contract; the message says what is wrong and how to fix it."""


def build_encoder(ref: str, args: dict[str, Any] | None = None) -> torch.nn.Module:
    """Instantiate an encoder from a reference (name, file, dotted path) and constructor kwargs."""
    factory = resolve_encoder_factory(ref)
    args = dict(args or {})
    try:
        return factory(**args)
    except (TypeError, ValueError) as err:  # a wrong or out-of-range argument
        raise EncoderContractError(
            f"encoder {ref!r}: constructing it with arguments {json.dumps(args)} failed: {err}. "
            f"Fix --encoder-args / model.encoder_args to match its __init__."
        ) from err
    except OSError as err:  # from_pretrained of a hub id that is neither cached nor reachable
        raise EncoderContractError(_offline_load_message(ref, err)) from err


def _offline_load_message(ref: str, err: OSError) -> str:
    """One line for an encoder whose weights could not be loaded: which model, why, the fixes.
    (transformers reports a missing hub model as a multi-line OSError naming it in quotes.)"""
    quoted = re.search(r"'([^'\s]+)'", str(err))  # the first quoted token without spaces
    model = quoted.group(1) if quoted else "its model"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    why = (
        "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
        if offline
        else "it is not in the local Hugging Face cache and the hub could not be reached (no network?)"
    )
    offline_copy = next((name for name, source in OFFLINE_WHISPER.items() if source.hub_id == model), None)
    export = (
        f"`xares-fusion export-model {offline_copy} DIR` writes it without a hub"
        if offline_copy
        else "`xares-fusion export-model NAME DIR` writes one for the models that ship offline"
    )
    return (
        f"encoder {ref!r}: could not load {model!r}: {why}. Fix: give a local model directory with "
        f'--encoder-args \'{{"model_name": "DIR"}}\' (the argument your encoder uses for it) -- {export} '
        f"-- or download it once where the hub is reachable{' (unset HF_HUB_OFFLINE)' if offline else ''} "
        f"so that it is cached."
    )


def _check_static(encoder: Any, name: str) -> None:
    if not isinstance(encoder, torch.nn.Module):
        raise EncoderContractError(
            f"{name}: is a {type(encoder).__name__}, not a torch.nn.Module. "
            f"Fix: subclass torch.nn.Module and call super().__init__() in __init__."
        )
    dim = getattr(encoder, "output_dim", None)
    if dim is None:
        raise EncoderContractError(
            f"{name}: has no attribute 'output_dim'. Fix: set self.output_dim = <feature size D> in __init__."
        )
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise EncoderContractError(f"{name}: output_dim must be a positive int, got {dim!r}.")
    try:
        inspect.signature(encoder.forward).bind(torch.zeros(1, 1), torch.ones(1, 1))
    except TypeError as err:
        raise EncoderContractError(
            f"{name}: forward{inspect.signature(encoder.forward)} does not take (audio, audio_attention_mask). "
            f"Fix: define 'def forward(self, audio, audio_attention_mask=None)'."
        ) from err


def check_output(
    name: str, encoder: torch.nn.Module, output: Any, batch: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate one forward output for a batch of ``batch`` different clips on ``device``; returns
    (features, mask) with a mask filled in when None.

    Beyond types and shapes it refuses what would fail (or silently train on nothing) later:
    features or a mask on another device than the input (e.g. 'meta'), features that are not
    floating point, mask values other than 0 and 1, a clip without a valid frame, NaN/Inf, and
    features that do not depend on the audio (the same for two different clips).
    """
    if not (isinstance(output, (tuple, list)) and len(output) == 2):
        raise EncoderContractError(
            f"{name}: forward returned {type(output).__name__}, expected a pair (features, mask). "
            f"Fix: 'return features, mask' (mask may be None)."
        )
    features, mask = output
    if not isinstance(features, torch.Tensor):
        raise EncoderContractError(f"{name}: features are a {type(features).__name__}, not a torch.Tensor.")
    if features.dim() != 3:
        raise EncoderContractError(
            f"{name}: features have shape {tuple(features.shape)} (rank {features.dim()}); expected rank 3 "
            f"[batch, frames, dim]. Fix: return last_hidden_state-like [B, T, D] (unsqueeze a frame axis "
            f"for clip-level embeddings)."
        )
    b, t, d = features.shape
    if b != batch:
        raise EncoderContractError(
            f"{name}: got a batch of {batch} clips but returned features for {b}. Fix: keep the batch "
            f"axis first and process every clip."
        )
    if d != encoder.output_dim:
        raise EncoderContractError(
            f"{name}: features have D={d} but output_dim={encoder.output_dim}. Fix: set output_dim to {d} "
            f"or project the features to output_dim."
        )
    if t < 1:
        raise EncoderContractError(f"{name}: returned zero frames for a batch of 1-2 s clips.")
    if features.device != device:
        raise EncoderContractError(
            f"{name}: features are on device '{features.device}' but the input audio is on '{device}'. "
            f"Fix: return features on the input's device (audio.device)"
            + (
                "; a 'meta' tensor holds no values: build the module with real weights (not under "
                "init_empty_weights or device='meta') and compute the features from the audio."
                if features.device.type == "meta"
                else "."
            )
        )
    if not features.is_floating_point():
        raise EncoderContractError(
            f"{name}: features have dtype {features.dtype}; the projector needs floating point. "
            f"Fix: return float features (e.g. features.float())."
        )
    if mask is None:
        mask = torch.ones(b, t, dtype=torch.long, device=features.device)
    elif not isinstance(mask, torch.Tensor):
        raise EncoderContractError(f"{name}: mask is a {type(mask).__name__}; return a tensor [B, T] or None.")
    elif tuple(mask.shape) != (b, t):
        entries = mask.shape[-1] if mask.dim() else 0
        looks_like_input = entries > t and mask.dim() == 2
        raise EncoderContractError(
            f"{name}: mask has {entries} entries but the features have {t} frames (mask shape "
            f"{tuple(mask.shape)}, expected [{b}, {t}])"
            + (": it looks like the sample-level audio_attention_mask passed through" if looks_like_input else "")
            + ". Fix: return None (every frame valid) or a frame-level [B, T] mask, 1 = valid frame, "
            "e.g. from each clip's length in frames (the official checker lets this through and "
            "training fails later)."
        )
    _check_mask(name, mask, device)
    if not torch.isfinite(features).all():
        bad = (~torch.isfinite(features)).sum().item()
        raise EncoderContractError(
            f"{name}: features contain {bad} NaN/Inf values. Fix: check for log(0), division by zero, or "
            f"half precision overflow (keep feature front-ends in fp32)."
        )
    _check_varies(name, features, mask.bool())
    return features, mask


def _check_mask(name: str, mask: torch.Tensor, device: torch.device) -> None:
    """A frame mask on the input's device, of 0s and 1s, with at least one valid frame per clip
    (the model reads it as ``mask.long()``: a soft 0.5 would silently drop every frame)."""
    if mask.device != device:
        raise EncoderContractError(
            f"{name}: the mask is on device '{mask.device}' but the input audio is on '{device}'. "
            f"Fix: return the mask on the input's device (audio.device)."
        )
    binary = (mask == 0) | (mask == 1)
    if not binary.all():
        odd = sorted({round(float(v), 4) for v in mask[~binary].flatten()[:5]})
        raise EncoderContractError(
            f"{name}: the mask holds values other than 0 and 1 (e.g. {odd}, dtype {mask.dtype}); it is read as "
            f"mask.long(), so they would count as padding. Fix: return a bool or integer mask, 1 = valid frame, "
            f"0 = padding."
        )
    valid = mask.long().sum(-1)
    empty = (valid == 0).nonzero().flatten().tolist()
    if empty:
        raise EncoderContractError(
            f"{name}: clip(s) {empty} of the batch have no valid frame (mask all 0) although every clip "
            f"holds 1-2 s of audio. Fix: mark each clip's frames 1 up to its length in frames, or return None."
        )


def _check_varies(name: str, features: torch.Tensor, valid: torch.Tensor) -> None:
    """Refuse features that do not depend on the audio: one value everywhere (e.g. all zeros), or
    the same frames for two different random clips. The model would train on a constant."""
    values = features[valid]
    if (values == values.flatten()[0]).all():
        raise EncoderContractError(
            f"{name}: every feature value is {values.flatten()[0].item()} for different random clips: the output "
            f"does not depend on the audio. Fix: return the encoder's features computed from the input audio "
            f"(not a placeholder such as torch.zeros)."
        )
    if features.shape[0] >= 2:
        first, second = features[0][valid[0]], features[1][valid[1]]
        n = min(len(first), len(second))
        if torch.equal(first[:n], second[:n]):
            raise EncoderContractError(
                f"{name}: two different random clips give the same features (their first {n} valid frames "
                f"are equal): the output does not depend on the audio. Fix: compute the features from the "
                f"input audio."
            )


def check_encoder(
    ref: str,
    args: dict[str, Any] | None = None,
    seconds: tuple[float, float] = (1.0, 2.0),
    encoder: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Build (unless given) and run an encoder once on a padded batch; raise on any contract breach.

    Returns a summary: output_dim, frames per clip, frame rate (declared and measured).
    """
    name = f"encoder {encoder_display_name(ref)!r}"
    if encoder is None:
        try:
            encoder = build_encoder(ref, args)
        except RegistryError as err:
            raise EncoderContractError(str(err)) from err
    _check_static(encoder, name)
    lengths = [int(s * SAMPLE_RATE) for s in seconds]
    generator = torch.Generator().manual_seed(0)
    audio = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        audio[i, :n] = 0.1 * torch.randn(n, generator=generator)
        mask[i, :n] = 1
    encoder.eval()
    with torch.no_grad():
        try:
            output = encoder(audio, mask)
        except Exception as err:
            raise EncoderContractError(
                f"{name}: forward failed on a batch of {len(lengths)} clips {list(seconds)} s "
                f"(audio [B, S] float32 at 16 kHz, mask [B, S]): {type(err).__name__}: {err}"
            ) from err
    features, feature_mask = check_output(name, encoder, output, len(lengths), audio.device)
    valid = feature_mask.long().sum(-1).tolist()
    return {
        "encoder": ref,
        "output_dim": encoder.output_dim,
        "frames": valid,
        "frame_rate_declared": declared_extras(encoder).frame_rate,
        "frame_rate_measured": valid[-1] / seconds[-1],
    }


@dataclass(frozen=True)
class DeclaredExtras:
    """The contract's optional attributes of one encoder, as it declares them at one moment."""

    frame_rate: float | None = None  # frames/s; None: measured where needed
    trainable: bool = False  # a recipe trains it: run with gradients, never cached
    offers_hidden_states: bool = False  # it has an ``output_hidden_states`` switch
    hidden_states: list[torch.Tensor] | None = None  # every layer's output of its last call
    # Samples per frame of a frame-local encoder whose frame j depends on samples [j*hop, (j+1)*hop)
    # alone: the features of a crop starting and ending on that grid are the whole clip's frames
    # there, so the feature cache crops cached whole clips. None (the default; any encoder with
    # attention, global context or overlapping windows, e.g. Whisper, Dasheng): crops are uncached.
    crop_hop: int | None = None


def declared_extras(encoder: torch.nn.Module) -> DeclaredExtras:
    """Read the optional attributes a contract encoder declares (each may be absent).

    The only place that reads them: everything else asks this function, so a user's module is
    probed in one spot and the rest of the package works with explicit fields. Read again after
    each call for ``hidden_states``, and wherever a stage may have changed ``trainable`` (LoRA).
    """
    return DeclaredExtras(
        frame_rate=getattr(encoder, "frame_rate", None),
        trainable=bool(getattr(encoder, "trainable", False)),
        offers_hidden_states=hasattr(encoder, "output_hidden_states"),
        hidden_states=getattr(encoder, "hidden_states", None),
        crop_hop=getattr(encoder, "crop_hop", None),
    )


def run_encoder(
    encoder: torch.nn.Module, audio: torch.Tensor, audio_mask: torch.Tensor | None, hidden_states: bool = False
) -> Stream:
    """One forward pass as a stream (a None mask means every frame is valid); with
    ``hidden_states``, the stream carries every layer's output of this call. Runs in the
    caller's grad mode and in the encoder's current train/eval mode."""
    features, mask = encoder(audio, audio_mask)
    if mask is None:
        mask = torch.ones(features.shape[:2], dtype=torch.long, device=features.device)
    declared = declared_extras(encoder)
    layers = list(declared.hidden_states) if hidden_states and declared.hidden_states is not None else None
    return Stream(features, mask.long(), declared.frame_rate, layers)


def frozen_stream(
    encoder: torch.nn.Module,
    audio: torch.Tensor,
    audio_mask: torch.Tensor | None,
    cache: StreamCache | None = None,
    clips: list[ClipRef | None] | None = None,
    *,
    train_mode: bool = False,
    hidden_states: bool = False,
) -> Stream:
    """The frozen step of one encoder: its stream read from (and stored in) ``cache`` when given,
    else computed without gradients in eval mode, or in train mode with ``train_mode`` (the
    official single-encoder training behaviour). A stream with every layer's output bypasses the
    cache, which keeps the last layer only."""
    if cache is not None and not hidden_states:
        return cache.encode(encoder, audio, audio_mask, clips)
    encoder.train(train_mode)
    with torch.no_grad():
        return run_encoder(encoder, audio, audio_mask, hidden_states)


class EncoderFrontEnd(FrontEnd):
    """A contract encoder as a front end: one stream, no fusion. Its fields are the encoder's
    declared extras; ``aux_losses`` stays empty (the contract declares none)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        declared = declared_extras(encoder)
        self.encoder = encoder
        self.output_dim = encoder.output_dim
        self.frame_rate = declared.frame_rate
        self.trainable = declared.trainable

    def encode_streams(
        self,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        cache: StreamCache | None = None,
        clips: list[ClipRef | None] | None = None,
        train_mode: bool = False,
    ) -> list[Stream | None]:
        if self.trainable:
            return [None]
        return [frozen_stream(self.encoder, audio, audio_mask, cache, clips, train_mode=train_mode)]

    def fuse(
        self,
        streams: list[Stream | None],
        audio: torch.Tensor | None,
        audio_mask: torch.Tensor | None,
        context: FusionContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        stream = streams[0] if streams[0] is not None else run_encoder(self.encoder, audio, audio_mask)
        return stream.features, stream.mask


def as_front_end(encoder: torch.nn.Module) -> FrontEnd:
    """The front-end interface of ``encoder``: a fusion (or any :class:`FrontEnd`) itself, a plain
    contract encoder through :class:`EncoderFrontEnd`."""
    return encoder if isinstance(encoder, FrontEnd) else EncoderFrontEnd(encoder)
