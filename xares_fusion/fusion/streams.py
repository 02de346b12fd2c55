"""Encoder output streams and their alignment in time.

Encoders run at different frame rates (Whisper 50 fps, Dasheng 25, log-mel 100, pooled variants in
between). A fusion combines them frame by frame, so every stream is first brought to the frame rate
and length of a reference stream: integer ratios pool (mask-weighted mean, never averaging padding)
or repeat frames; any other ratio needs linear interpolation, which is opt-in because it blends
neighbouring frames. The common mask keeps a frame only where every stream has valid data.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..encoders.masking import pool_frames
from ..errors import EncoderError
from ..frontend import Stream


class AlignmentError(EncoderError, ValueError):
    """Streams whose frame rates cannot be reconciled; the message says which and how to fix it."""


def measured_frame_rate(stream: Stream, seconds: torch.Tensor) -> float:
    """Frames per second measured from the longest clip (valid frames / its duration), rounded to
    0.5 fps; used for encoders that declare no ``frame_rate``."""
    longest = int(seconds.argmax())
    rate = float(stream.mask[longest].sum()) / float(seconds[longest])
    return round(rate * 2) / 2


def _ratio(src: float, dst: float) -> tuple[int, int] | None:
    """(down, up) integer factors with src / down * up == dst, or None when not an integer ratio."""
    if src >= dst and math.isclose(src / dst, round(src / dst), rel_tol=1e-3):
        return round(src / dst), 1
    if dst > src and math.isclose(dst / src, round(dst / src), rel_tol=1e-3):
        return 1, round(dst / src)
    return None


def _fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Pad with zeros or cut the frame axis (dim 1) to ``length`` (encoders differ by a frame or two
    in how they round the last frame)."""
    if x.shape[1] >= length:
        return x[:, :length]
    pad = [0, 0] * (x.dim() - 2) + [0, length - x.shape[1]]
    return torch.nn.functional.pad(x, pad)


def _resample(
    x: torch.Tensor, mask: torch.Tensor, src: float, dst: float, length: int, interpolate: bool, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    ratio = _ratio(src, dst)
    if ratio is not None:
        down, up = ratio
        x, mask = pool_frames(x, mask, down)
        if up > 1:
            x, mask = x.repeat_interleave(up, dim=1), mask.repeat_interleave(up, dim=1)
    elif interpolate:
        frames = max(1, round(x.shape[1] * dst / src))
        x = torch.nn.functional.interpolate(
            (x * mask[..., None]).transpose(1, 2), size=frames, mode="linear", align_corners=False
        ).transpose(1, 2)
        valid = torch.ceil(mask.sum(-1).float() * dst / src).long()
        mask = (torch.arange(frames, device=mask.device)[None] < valid[:, None]).long()
    else:
        raise AlignmentError(
            f"{name} runs at {src:g} frames/s and the reference stream at {dst:g}: not an integer ratio. "
            f"Fix: pool one encoder so that the rates divide (e.g. encoder arg 'pool'), choose another "
            f"'reference' stream, or set 'interpolate: true' in the fusion's arguments."
        )
    return _fit_length(x, length), _fit_length(mask, length)


def align_streams(
    streams: list[Stream],
    reference: int,
    seconds: torch.Tensor,
    interpolate: bool = False,
    names: list[str] | None = None,
) -> tuple[list[Stream], torch.Tensor]:
    """Bring every stream to the frame rate and length of ``streams[reference]``.

    ``seconds`` are the clips' true durations, used for streams that declare no frame rate.
    Returns the aligned streams (features zeroed outside their own mask; hidden states aligned
    the same way) and the common mask, 1 where every stream is valid.
    """
    names = names or [f"stream {i}" for i in range(len(streams))]
    rates = [s.frame_rate or measured_frame_rate(s, seconds) for s in streams]
    ref = streams[reference]
    length, ref_rate = ref.features.shape[1], rates[reference]
    aligned = []
    common = ref.mask.long()
    for stream, rate, name in zip(streams, rates, names):
        features, mask = _resample(stream.features, stream.mask.long(), rate, ref_rate, length, interpolate, name)
        hidden = None
        if stream.hidden_states is not None:
            hidden = [
                _resample(h, stream.mask.long(), rate, ref_rate, length, interpolate, name)[0]
                for h in stream.hidden_states
            ]
        common = common * mask
        aligned.append(replace(stream, features=features, mask=mask, frame_rate=ref_rate, hidden_states=hidden))
    for stream in aligned:
        stream.features = stream.features * common[..., None].to(stream.features.dtype)
    return aligned, common
