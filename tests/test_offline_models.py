"""The real offline components: converted Whisper tiny.en, SmolLM2 from GGUF, eSpeak NG, the mini suite,
and the model cache they are built into."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jiwer
import pytest
import torch
from transformers import PreTrainedTokenizerFast, WhisperFeatureExtractor, WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

import xares_fusion
from xares_fusion.config import LLMSpec
from xares_fusion.constants import SAMPLE_RATE
from xares_fusion.data.mini import MiniSizes, make_mini
from xares_fusion.data.speech import Espeak
from xares_fusion.encoders.whisper_ct2 import converted_whisper
from xares_fusion.llm import load_llm
from xares_fusion.paths import built_model, installed_package_dir

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "please open the window before you leave",
    "my favourite colour is green",
    "we will meet at the station tomorrow morning",
    "the weather is cold and windy today",
    "he bought three apples and a loaf of bread",
    "turn left at the next traffic light",
    "the children are playing in the garden",
    "music makes everyone feel better",
    "i forgot my keys at the office",
]
SOT, NO_TIMESTAMPS, EOT = 50257, 50362, 50256


def _transcribe(model, extractor, tokenizer, audio) -> str:
    """Greedy decoding with the English-only prompt <|startoftranscript|><|notimestamps|>."""
    features = extractor(
        [audio.numpy() if hasattr(audio, "numpy") else audio], sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    ids = torch.tensor([[SOT, NO_TIMESTAMPS]])
    with torch.no_grad():
        encoded = BaseModelOutput(last_hidden_state=model.model.encoder(features).last_hidden_state)
        for _ in range(40):
            token = int(model(encoder_outputs=encoded, decoder_input_ids=ids).logits[0, -1].argmax())
            if token == EOT:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    return tokenizer.decode(ids[0, 2:], skip_special_tokens=True)


def test_converted_whisper_transcribes_espeak_speech() -> None:
    directory = converted_whisper("whisper-tiny.en-offline")
    model = WhisperForConditionalGeneration.from_pretrained(directory).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(directory)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    errors = []
    for i, text in enumerate(SENTENCES):
        audio = Espeak.get().say(text, "en-us", rate=160, seed=i)
        hypothesis = jiwer.RemovePunctuation()(_transcribe(model, extractor, tokenizer, audio).lower())
        errors.append(jiwer.wer(text, hypothesis.strip()))
    assert len(errors) >= 10 and sum(errors) / len(errors) < 0.5, errors


def test_offline_smollm2_knows_the_capital_of_france() -> None:
    model, tokenizer = load_llm(LLMSpec(name_or_path="smollm2-135m-instruct-offline"))
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert all(not p.requires_grad for p in model.parameters())


def test_espeak_speaks_several_languages() -> None:
    engine = Espeak.get()
    for voice, text in (("en-us", "hello world"), ("de", "guten morgen"), ("fr", "bonjour"), ("cmn", "你好")):
        audio = engine.say(text, voice, seed=1)
        assert audio.dtype.name == "float32" and audio.shape[0] > 3000 and 0.05 < abs(audio).max() <= 1.0


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.tar"))}


def test_make_mini_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    sizes = MiniSizes(train_shards=1, per_shard=3, test=3)
    first = _digest(make_mini(tmp_path / "a", seed=3, sizes=sizes))
    second = _digest(make_mini(tmp_path / "b", seed=3, sizes=sizes))
    assert len(first) == 20 and first == second
    assert _digest(make_mini(tmp_path / "c", seed=4, sizes=sizes)) != first


def test_built_model_builds_once_and_keeps_a_concurrent_finishers_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XARES_FUSION_CACHE", str(tmp_path))
    calls = []

    def build(directory: Path) -> None:
        calls.append(directory)
        (directory / "config.json").write_text("{}")

    target = built_model("thing-v1", build)
    assert target == tmp_path / "models" / "thing-v1" and (target / "config.json").is_file()
    assert built_model("thing-v1", build) == target and len(calls) == 1

    def loses_the_race(directory: Path) -> None:
        (directory / "config.json").write_text('{"winner": false}')
        winner = tmp_path / "models" / "race-v1"  # another process renames its copy in first
        winner.mkdir()
        (winner / "config.json").write_text('{"winner": true}')

    target = built_model("race-v1", loses_the_race)
    assert json.loads((target / "config.json").read_text()) == {"winner": True}
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["race-v1", "thing-v1"]  # no staging left


def test_installed_package_dir_finds_a_package_without_importing_it() -> None:
    assert installed_package_dir("xares_fusion") == Path(xares_fusion.__file__).parent
    assert installed_package_dir("no_such_package_xyz") is None


def test_a_first_use_build_leaves_the_callers_random_streams_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting a checkpoint constructs a model, which draws random initial weights before loading.
    A run that triggers the build must then draw the same trainable initial weights as a run on a
    machine where the model was already built (the demo's Whisper column differed between the two)."""
    import random

    import numpy as np
    import torch

    monkeypatch.setenv("XARES_FUSION_CACHE", str(tmp_path))

    def drawing_build(directory: Path) -> None:
        torch.randn(1000), np.random.rand(10), random.random()
        (directory / "config.json").write_text("{}")

    def draws() -> tuple:
        return torch.randn(3).tolist(), np.random.rand(3).tolist(), random.random()

    for name in ("first-use-v1", "first-use-v1"):  # built on the first call, reused on the second
        torch.manual_seed(0), np.random.seed(0), random.seed(0)
        built_model(name, drawing_build)
        after = draws()
        torch.manual_seed(0), np.random.seed(0), random.seed(0)
        assert after == draws()
