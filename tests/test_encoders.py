"""Built-in encoder families on tiny random configs (no downloads): valid frames, masks, hidden states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

from xares_fusion.encoders import build_encoder, check_encoder
from xares_fusion.encoders.masking import pool_frames


def _batch(seconds: tuple[float, ...] = (1.0, 7.0)) -> tuple[torch.Tensor, torch.Tensor]:
    n = [int(s * 16000) for s in seconds]
    audio, mask = torch.zeros(len(n), max(n)), torch.zeros(len(n), max(n), dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    for i, k in enumerate(n):
        audio[i, :k] = 0.1 * torch.randn(k, generator=gen)
        mask[i, :k] = 1
    return audio, mask


def _check(encoder: torch.nn.Module, expected_frames: list[int], zero_padding: bool = True) -> torch.Tensor:
    encoder.eval()
    with torch.no_grad():
        features, mask = encoder(*_batch())
    assert mask.sum(-1).tolist() == expected_frames
    assert features.shape == (2, max(expected_frames), encoder.output_dim)
    if zero_padding:
        assert torch.all(features[0, expected_frames[0]:] == 0)     # padding frames carry nothing
    return features


def test_whisper_50_fps_masks_and_hidden_states(tiny_whisper: str) -> None:
    encoder = build_encoder("whisper", {"model_name": tiny_whisper, "output_hidden_states": True})
    _check(encoder, [50, 350])                                   # (L - 1) // 2 + 1 with L = 100, 700
    assert encoder.frame_rate == 50 and len(encoder.hidden_states) == 3   # embeddings + 2 layers
    assert all(h.shape == (2, 350, 32) for h in encoder.hidden_states)
    pooled = build_encoder("whisper", {"model_name": tiny_whisper, "pool": 2})
    _check(pooled, [25, 175])
    short = build_encoder("whisper", {"model_name": tiny_whisper, "pad_to_30s": False})
    _check(short, [50, 350])


def test_whisper_official_example_trim_keeps_half_the_frames(tiny_whisper: str) -> None:
    """The official example halves the mel length twice: 25 'frames/s' of a 50 frames/s output."""
    _check(build_encoder("whisper-base", {"model_name": tiny_whisper, "trim": "official-example"}), [25, 175],
           zero_padding=False)
    with pytest.raises(ValueError, match="trim must be one of true-length, official-example"):
        build_encoder("whisper-base", {"model_name": tiny_whisper, "trim": "half"})


@pytest.mark.parametrize("name,config_cls,model_cls,norm,uses_mask", [
    ("wavlm", WavLMConfig, WavLMModel, "layer", True),
    ("wav2vec2", Wav2Vec2Config, Wav2Vec2Model, "group", False),
    ("hubert", HubertConfig, HubertModel, "group", False),
])
def test_ssl_families(tmp_path: Path, name: str, config_cls, model_cls, norm: str, uses_mask: bool) -> None:
    torch.manual_seed(0)
    model_cls(config_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                         feat_extract_norm=norm)).save_pretrained(tmp_path)
    encoder = build_encoder(name, {"model_name": str(tmp_path), "output_hidden_states": True})
    # conv stack (10/5, then 3/2 x4, then 2/2 x2) over 16 000 and 112 000 samples
    _check(encoder, [49, 349])
    assert encoder.uses_attention_mask is uses_mask and len(encoder.hidden_states) == 3


@pytest.mark.parametrize("name,args,frames", [
    ("logmel", {}, [101, 701]),                       # centred STFT: n // 160 + 1
    ("logmel", {"pool": 8}, [13, 88]),
    ("stft", {}, [26, 176]),                          # hop 640: 25 frames/s
    ("random", {}, [50, 350]),
    ("random", {"pool": 4}, [13, 88]),
])
def test_weight_free_encoders(name: str, args: dict, frames: list[int]) -> None:
    _check(build_encoder(name, args), frames)
    assert check_encoder(name, args)["frame_rate_declared"] == pytest.approx(frames[1] / 7, rel=0.02)


def test_random_projection_is_fixed_by_its_seed() -> None:
    a, b, c = (build_encoder("random", {"seed": s}) for s in (0, 0, 1))
    assert torch.equal(a.projection, b.projection) and not torch.equal(a.projection, c.projection)


def test_pool_frames_averages_valid_frames_only() -> None:
    features = torch.arange(5.0).view(1, 5, 1)
    pooled, mask = pool_frames(features, torch.tensor([[1, 1, 1, 0, 0]]), 2)
    assert pooled.view(-1).tolist() == [0.5, 2.0, 0.0] and mask.tolist() == [[1, 1, 0]]
