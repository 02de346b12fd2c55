"""Built-in encoder families on tiny random configs (no downloads): valid frames, masks, hidden states."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model, WavLMConfig, WavLMModel

import xares_fusion.encoders
from xares_fusion.encoders import as_front_end, build_encoder, check_encoder
from xares_fusion.encoders.masking import pool_frames
from xares_fusion.frontend import FrontEnd


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
        assert torch.all(features[0, expected_frames[0] :] == 0)  # padding frames carry nothing
    return features


def test_whisper_50_fps_masks_and_hidden_states(tiny_whisper: str) -> None:
    encoder = build_encoder("whisper", {"model_name": tiny_whisper, "output_hidden_states": True})
    _check(encoder, [50, 350])  # (L - 1) // 2 + 1 with L = 100, 700
    assert encoder.frame_rate == 50 and len(encoder.hidden_states) == 3  # embeddings + 2 layers
    assert all(h.shape == (2, 350, 32) for h in encoder.hidden_states)
    pooled = build_encoder("whisper", {"model_name": tiny_whisper, "pool": 2})
    _check(pooled, [25, 175])
    short = build_encoder("whisper", {"model_name": tiny_whisper, "pad_to_30s": False})
    _check(short, [50, 350])


def test_whisper_official_example_trim_keeps_half_the_frames(tiny_whisper: str) -> None:
    """The official example halves the mel length twice: 25 'frames/s' of a 50 frames/s output."""
    _check(
        build_encoder("whisper-base", {"model_name": tiny_whisper, "trim": "official-example"}),
        [25, 175],
        zero_padding=False,
    )
    with pytest.raises(ValueError, match="trim must be one of true-length, official-example"):
        build_encoder("whisper-base", {"model_name": tiny_whisper, "trim": "half"})


@pytest.mark.parametrize(
    "name,config_cls,model_cls,norm,uses_mask",
    [
        ("wavlm", WavLMConfig, WavLMModel, "layer", True),
        ("wav2vec2", Wav2Vec2Config, Wav2Vec2Model, "group", False),
        ("hubert", HubertConfig, HubertModel, "group", False),
    ],
)
def test_ssl_families(tmp_path: Path, name: str, config_cls, model_cls, norm: str, uses_mask: bool) -> None:
    torch.manual_seed(0)
    model_cls(
        config_cls(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
            feat_extract_norm=norm,
        )
    ).save_pretrained(tmp_path)
    encoder = build_encoder(name, {"model_name": str(tmp_path), "output_hidden_states": True})
    # conv stack (10/5, then 3/2 x4, then 2/2 x2) over 16 000 and 112 000 samples
    _check(encoder, [49, 349])
    assert encoder.uses_attention_mask is uses_mask and len(encoder.hidden_states) == 3


@pytest.mark.parametrize(
    "name,args,frames",
    [
        ("logmel", {}, [101, 701]),  # centred STFT: n // 160 + 1
        ("logmel", {"pool": 8}, [13, 88]),
        ("stft", {}, [26, 176]),  # hop 640: 25 frames/s
        ("random", {}, [50, 350]),
        ("random", {"pool": 4}, [13, 88]),
    ],
)
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


class _PlainEncoder(torch.nn.Module):
    """A user's encoder that follows the XARES-LLM contract and declares nothing optional."""

    output_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(160, 4)

    def forward(self, audio, audio_attention_mask=None):
        return self.proj(audio[:, : audio.shape[1] // 160 * 160].view(audio.shape[0], -1, 160)), None


class _RatedTrainableEncoder(_PlainEncoder):
    frame_rate = 100.0
    trainable = True


def test_plain_encoder_without_extras_adapts_to_a_frozen_front_end() -> None:
    encoder = _PlainEncoder()
    front_end = as_front_end(encoder)
    assert isinstance(front_end, FrontEnd) and front_end.encoder is encoder
    assert (front_end.output_dim, front_end.frame_rate, front_end.trainable, front_end.needs_prompt_state) == (
        4,
        None,
        False,
        False,
    )
    assert front_end.trainable_parameters() == [] and len(front_end.sub_encoders()) == 0
    assert front_end.routing_stats() is None and front_end.aux_losses == {} and front_end.default_aux_weights == {}
    audio, mask = _batch((0.5, 1.0))
    (stream,) = front_end.encode_streams(audio, mask, train_mode=True)
    assert encoder.training and not stream.features.requires_grad  # the official mode, no gradients
    assert stream.frame_rate is None and stream.mask.dtype == torch.long and stream.mask.all()  # None mask: all valid
    features, feature_mask = front_end.fuse([stream], audio, mask)
    assert features is stream.features and feature_mask is stream.mask


def test_plain_encoder_with_frame_rate_and_trainable_flag_adapts_to_a_trainable_front_end() -> None:
    encoder = _RatedTrainableEncoder()
    front_end = as_front_end(encoder)
    assert (front_end.frame_rate, front_end.trainable) == (100.0, True)
    assert {id(p) for p in front_end.trainable_parameters()} == {id(p) for p in encoder.parameters()}
    audio, mask = _batch((0.5, 1.0))
    assert front_end.encode_streams(audio, mask) == [None]  # it runs in the trainable step
    features, feature_mask = front_end.fuse([None], audio, mask)
    assert features.requires_grad and features.shape == (2, 100, 4) and feature_mask.shape == (2, 100)


def test_a_fusion_is_its_own_front_end() -> None:
    fusion = build_encoder("concat", {"encoders": ["logmel", "random"], "dim": 8})
    assert as_front_end(fusion) is fusion and list(fusion.sub_encoders()) == list(fusion.encoders)


def test_no_encoder_module_imports_the_fusion_package() -> None:
    """The layers run one way: fusions build on encoders, never the reverse."""
    for path in sorted(Path(xares_fusion.encoders.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (
                    importlib.util.resolve_name("." * node.level + (node.module or ""), "xares_fusion.encoders")
                    if node.level
                    else node.module
                )
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            assert not any(t == "xares_fusion.fusion" or t.startswith("xares_fusion.fusion.") for t in targets), (
                f"{path.name} imports {targets}"
            )
    code = (
        "import sys, xares_fusion.encoders as e; assert 'xares_fusion.fusion' not in sys.modules; "
        "assert type(e.build_encoder('gated', {'encoders': ['logmel'], 'dim': 4})).__name__ == 'GatedFusion'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["logmel", "stft"])
def test_spectral_encoders_stay_fp32_under_fp16_autocast(name: str) -> None:
    """Under fp16 autocast the mel product and log would underflow: padding frames became -inf and
    NaN once masked. The spectral front ends compute in fp32 whatever the run's precision."""
    encoder = build_encoder(name)
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    mask = torch.ones(2, 16000, dtype=torch.long)
    audio[1, 8000:], mask[1, 8000:] = 0, 0
    reference, ref_mask = encoder(audio, mask)
    with torch.autocast("cpu", dtype=torch.float16):
        features, features_mask = encoder(audio, mask)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    assert torch.equal(features, reference) and torch.equal(features_mask, ref_mask)


def test_logmel_offset_shifts_every_valid_frame_and_keeps_whisper_scaling_by_default() -> None:
    """(log10(mel) + offset) / 4: offset 4 is Whisper's scaling (the default); another offset moves
    every valid frame by (offset - 4) / 4 and leaves padding at zero."""
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(1)) * 0.1
    mask = torch.ones(2, 16000, dtype=torch.long)
    audio[1, 8000:], mask[1, 8000:] = 0, 0
    default, valid = build_encoder("logmel")(audio, mask)
    centred, centred_valid = build_encoder("logmel", {"offset": 2.6})(audio, mask)
    assert torch.equal(valid, centred_valid)
    expected = (default - 0.35) * valid[..., None]
    torch.testing.assert_close(centred, expected, atol=1e-6, rtol=0)
    mel = torch.einsum(
        "fm,bft->btm",
        build_encoder("logmel").filters,
        torch.stft(
            audio, 400, 160, window=torch.hann_window(400), center=True, pad_mode="constant", return_complex=True
        ).abs()
        ** 2,
    )
    torch.testing.assert_close(default[0], (mel[0].clamp(min=1e-10).log10() + 4.0) / 4.0, atol=1e-5, rtol=0)
