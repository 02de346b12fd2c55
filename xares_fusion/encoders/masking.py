"""Small helpers shared by the built-in encoders: lengths, masks and frame pooling."""

from __future__ import annotations

import torch


def sample_lengths(audio: torch.Tensor, audio_attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Valid samples per clip ([B] long); every sample counts when no mask is given."""
    if audio_attention_mask is None:
        return torch.full((audio.shape[0],), audio.shape[-1], dtype=torch.long, device=audio.device)
    return audio_attention_mask.long().sum(-1)


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """[B, max_length] long mask, 1 for the first ``lengths[b]`` positions."""
    return (torch.arange(max_length, device=lengths.device)[None] < lengths[:, None]).long()


def pool_frames(features: torch.Tensor, mask: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every ``factor`` adjacent frames, over valid frames only (a partly valid last group
    averages its valid frames). Returns pooled features and mask with ceil(T / factor) frames."""
    if factor == 1:
        return features, mask
    b, t, d = features.shape
    pad = (-t) % factor
    weights = mask.to(features.dtype)
    features = torch.nn.functional.pad(features * weights[..., None], (0, 0, 0, pad))
    weights = torch.nn.functional.pad(weights, (0, pad))
    summed = features.view(b, -1, factor, d).sum(2)
    counts = weights.view(b, -1, factor).sum(2)
    return summed / counts.clamp(min=1)[..., None], (counts > 0).long()
