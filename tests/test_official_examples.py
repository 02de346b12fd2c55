"""The official XARES-LLM example encoders (examples/xares-llm/, unchanged) run as they are.

Whisper-Base comes from `export-model whisper-base-offline` (no hub): the official file passes
check-encoder and gives exactly the features of the built-in `whisper-base` in its
official-example mode; the official DummyEncoder is refused with what to return instead; a hub
id that cannot load offline fails in one line naming the model and the fixes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xares_fusion.cli import main
from xares_fusion.encoders import build_encoder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "xares-llm"


@pytest.fixture(scope="module")
def exported_whisper_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("export") / "whisper-base"
    assert main(["export-model", "whisper-base-offline", str(directory)]) == 0
    return directory


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three clips of 1.0, 2.5 and 4.0 s (noise plus a tone), zero-padded, with their sample mask."""
    lengths = [16000, 40000, 64000]
    generator = torch.Generator().manual_seed(0)
    audio, mask = torch.zeros(3, max(lengths)), torch.zeros(3, max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        t = torch.arange(n) / 16000
        audio[i, :n] = 0.05 * torch.randn(n, generator=generator) + 0.3 * torch.sin(2 * torch.pi * 220 * (i + 1) * t)
        mask[i, :n] = 1
    return audio, mask


def test_export_model_writes_a_hugging_face_directory(
    exported_whisper_base: Path, capsys: pytest.CaptureFixture
) -> None:
    from transformers import WhisperModel, WhisperProcessor

    names = {p.name for p in exported_whisper_base.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= names
    processor = WhisperProcessor.from_pretrained(exported_whisper_base)
    assert processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|en|>"]) == [50258, 50259]
    model = WhisperModel.from_pretrained(exported_whisper_base)
    assert (model.config.d_model, model.config.encoder_layers, model.config.vocab_size) == (512, 6, 51865)
    assert main(["export-model", "whisper-base-offline", str(exported_whisper_base)]) == 2  # not empty
    assert "exists and is not an empty directory" in capsys.readouterr().err


def test_official_whisper_example_equals_builtin_official_example_mode(
    exported_whisper_base: Path, capsys: pytest.CaptureFixture
) -> None:
    example = str(EXAMPLES / "whisper_base.py")
    assert main(["check-encoder", example, "--encoder-args", f'{{"model_name": "{exported_whisper_base}"}}']) == 0
    assert "output_dim=512, valid frames for 1 s / 2 s clips = [25, 50]" in capsys.readouterr().out
    official = build_encoder(example, {"model_name": str(exported_whisper_base)}).eval()
    builtin = build_encoder(
        "whisper-base", {"model_name": str(exported_whisper_base), "trim": "official-example"}
    ).eval()
    true_length = build_encoder("whisper-base", {"model_name": str(exported_whisper_base)}).eval()
    audio, mask = _batch()
    with torch.no_grad():
        expected, expected_mask = official(audio, mask)
        features, feature_mask = builtin(audio, mask)
        full, full_mask = true_length(audio, mask)
    # Mel frames 100/250/400 -> the example keeps 25/63/100 frames of the 50/125/200 valid ones.
    assert expected_mask.sum(-1).tolist() == [25, 63, 100] == feature_mask.sum(-1).tolist()
    assert features.shape == expected.shape == (3, 100, 512)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)  # padding frames included
    assert full_mask.sum(-1).tolist() == [50, 125, 200]
    torch.testing.assert_close(full[2, :100], expected[2], rtol=0, atol=1e-5)  # the same frames, then more


def test_official_dummy_encoder_is_refused_with_what_to_return(capsys: pytest.CaptureFixture) -> None:
    assert main(["check-encoder", str(EXAMPLES / "dummyencoder.py")]) == 5  # EncoderError
    err = capsys.readouterr().err
    assert "mask has 32000 entries but the features have 10 frames" in err
    assert "Fix: return None (every frame valid) or a frame-level [B, T] mask" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "example,model,fix",
    [
        ("whisper_base.py", "openai/whisper-base", "`xares-fusion export-model whisper-base-offline DIR`"),
        ("dasheng_base.py", "mispeech/dasheng-base", "`xares-fusion export-model NAME DIR`"),
    ],
)
def test_official_example_without_hub_fails_in_one_line(tmp_path: Path, example: str, model: str, fix: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty_cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "xares_fusion.cli", "check-encoder", str(EXAMPLES / example)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 5 and "Traceback" not in proc.stderr  # EncoderError
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert f"could not load {model!r}: HF_HUB_OFFLINE is set" in lines[0]
    assert fix in lines[0] and "--encoder-args" in lines[0] and "download it once" in lines[0]
