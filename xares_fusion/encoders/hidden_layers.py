"""Which hidden states an encoder keeps: ``output_hidden_states`` is False (none), True (every
layer's output, as before) or a list of layer indices (0 = the embeddings, -1 = the last layer).
Keeping only the layers a fusion reads saves memory: every layer of Whisper-Large at evaluation
batch 128 is about 32 GB."""

from __future__ import annotations

from typing import TypeAlias

import torch

LayerRequest: TypeAlias = bool | list[int] | tuple[int, ...]


def requested_layers(request: LayerRequest, count: int) -> list[int]:
    """The indices in ``range(count)`` of the states to keep, in the order requested."""
    if request is True:
        return list(range(count))
    if request is False:
        return []
    for index in request:
        if not -count <= index < count:
            raise ValueError(f"output_hidden_states asks for layer {index}, but the encoder has {count} states")
    return [index % count for index in request]


def keep_layers(states: list[torch.Tensor], request: LayerRequest) -> list[torch.Tensor] | None:
    """The requested states of ``states`` (None when none is asked for)."""
    return [states[i] for i in requested_layers(request, len(states))] if request is not False else None
