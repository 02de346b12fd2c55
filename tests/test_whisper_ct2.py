"""The CTranslate2 -> `transformers` Whisper conversion, checked against CTranslate2 itself.

For both offline Whisper models (English-only tiny.en, multilingual Base with fp16 weights split
over two packages) the converted `transformers` model must compute what the shipped CTranslate2
model computes: the same encoder states (up to op-order rounding) on real speech, and the same
greedy token ids on the mini-asr clips. CTranslate2 runs the shipped model.bin directly, so it is
an independent reference: a wrong split of a fused projection, a lost bias or a wrong special
token shows up here and nowhere else as clearly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor
from transformers.modeling_outputs import BaseModelOutput

from xares_fusion.constants import SAMPLE_RATE
from xares_fusion.encoders.whisper_ct2 import OFFLINE_WHISPER, CT2FormatError, converted_whisper, read_ct2

# The weights are fp16 on both sides and both run in fp32, so what differs is only the order of
# operations (GEMM blocking, fused softmax / GELU / LayerNorm kernels). A faithful conversion must
# therefore agree to better than one fp16 step at the activation scale: |diff| <= 2**-10 * max|value|.
# Measured (8 clips per model: 6 mini-asr eval clips + 2 longer eSpeak sentences): tiny.en max
# |diff| 7.6e-4 at max|value| 12.8 (bound 1.25e-2); Base 8.6e-4 at max|value| 24.4 (bound 2.4e-2).
# Deliberately broken conversions land far outside: q|k split swapped 16 / 27, one LayerNorm bias
# dropped 6 to 28, and even all weights rounded to bfloat16 0.14 to 4.5.
FP16_EPS = 2.0**-10
MINI_CLIPS = 6  # mini-asr eval clips compared (the full test split has 24; CPU time is the limit)
SENTENCES = ["the quick brown fox jumps over the lazy dog", "we will meet at the station tomorrow morning"]


@dataclass
class Engines:
    """One offline Whisper, converted (`transformers`) and as shipped (CTranslate2)."""

    name: str
    hf: WhisperForConditionalGeneration
    processor: WhisperProcessor
    ct2: ctranslate2.models.Whisper
    prompt: list[int]  # <|startoftranscript|> [<|en|> <|transcribe|>] <|notimestamps|>
    eos: int

    def features(self, clips: list[np.ndarray]) -> np.ndarray:
        """Log-mel features, padded to 30 s, float32 [batch, mels, 3000] for both engines."""
        feats = self.processor.feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        return np.ascontiguousarray(feats, dtype=np.float32)


@pytest.fixture(scope="module")
def mini_asr_clips(isolated_homes: dict[str, Path]) -> list[tuple[str, np.ndarray]]:
    """(reference text, audio) of the first mini-asr eval clips, read from the task's own shards.

    The shards are written as the runner writes them (the whole mini suite: eSpeak NG carries
    state from one utterance to the next, so only the full build gives the task's real audio).
    """
    from xares_fusion.config import load_task
    from xares_fusion.data.generators import GENERATORS
    from xares_fusion.data.samples import SkipCounter, iter_samples
    from xares_fusion.data.shards import require_shards, shard_base

    task = load_task("mini-asr")
    spec = task.split("eval")
    GENERATORS.get(spec.generator)(shard_base(spec))
    clips = []
    for sample in iter_samples(require_shards(spec, task.name, "eval"), task.key_for("eval"), SkipCounter()):
        clips.append((sample.texts[0], sample.audio))
        if len(clips) == MINI_CLIPS:
            break
    assert len(clips) == MINI_CLIPS
    return clips


@pytest.fixture(scope="module")
def espeak_clips() -> list[np.ndarray]:
    """Longer sentences than mini-asr's four words, at a fixed voice and rate."""
    from xares_fusion.data.speech import Espeak

    return [Espeak.get().say(text, "en-us", rate=160, seed=i) for i, text in enumerate(SENTENCES)]


def shipped_ct2_directory(name: str, out_dir: Path) -> Path:
    """A directory that CTranslate2 itself loads: the shipped model.bin parts joined, beside its assets."""
    parts, assets = OFFLINE_WHISPER[name].files(name)
    with open(out_dir / "model.bin", "wb") as joined:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, joined)
    for asset in assets.iterdir():
        if asset.is_file() and not asset.name.startswith("model.bin"):
            shutil.copy(asset, out_dir / asset.name)
    return out_dir


@pytest.fixture(scope="module", params=list(OFFLINE_WHISPER))
def engines(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Engines:
    name = request.param
    directory = converted_whisper(name)
    ct2_dir = shipped_ct2_directory(name, tmp_path_factory.mktemp(f"ct2-{name}"))
    # float32 on both sides: the only difference left is the implementation of the ops.
    ct2_model = ctranslate2.models.Whisper(
        str(ct2_dir), device="cpu", compute_type="float32", intra_threads=torch.get_num_threads()
    )
    processor = WhisperProcessor.from_pretrained(directory)
    # CTranslate2's own view (vocabulary size) decides the prompt, not the converted config.
    tokens = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if ct2_model.is_multilingual else [])
    prompt = processor.tokenizer.convert_tokens_to_ids(tokens + ["<|notimestamps|>"])
    return Engines(
        name,
        WhisperForConditionalGeneration.from_pretrained(directory).eval(),
        processor,
        ct2_model,
        prompt,
        processor.tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )


def test_converted_generation_config_matches_ctranslate2(engines: Engines) -> None:
    # `generate` builds its prompt from these fields: an English-only model taken for a
    # multilingual one detects a language and prepends a language token that tiny.en never saw.
    generation = GenerationConfig.from_pretrained(converted_whisper(engines.name))
    tokenizer = engines.processor.tokenizer
    assert generation.is_multilingual == engines.ct2.is_multilingual
    assert generation.decoder_start_token_id == engines.prompt[0]
    assert generation.no_timestamps_token_id == engines.prompt[-1]
    assert generation.eos_token_id == engines.eos
    if engines.ct2.is_multilingual:
        assert generation.lang_to_id["<|en|>"] == tokenizer.convert_tokens_to_ids("<|en|>")
        assert generation.task_to_id["transcribe"] == tokenizer.convert_tokens_to_ids("<|transcribe|>")


@dataclass
class Encoded:
    """Both engines' encoder states for the mini-asr clips (first rows), then the eSpeak sentences."""

    ours: np.ndarray
    reference: np.ndarray


@pytest.fixture(scope="module")
def encoded(engines: Engines, mini_asr_clips: list, espeak_clips: list) -> Encoded:
    # Encoded once per model: the encoder test compares the states, the transcript test decodes
    # them, each engine from its own states (CTranslate2's generate takes encoder output too).
    features = engines.features([audio for _, audio in mini_asr_clips] + espeak_clips)
    with torch.no_grad():
        ours = engines.hf.model.encoder(torch.from_numpy(features)).last_hidden_state.numpy()
    reference = np.asarray(engines.ct2.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    return Encoded(ours, reference)


@pytest.mark.slow
def test_encoder_matches_ctranslate2(engines: Engines, encoded: Encoded) -> None:
    clips = MINI_CLIPS + len(SENTENCES)
    assert encoded.ours.shape == encoded.reference.shape == (clips, 1500, engines.hf.config.d_model)
    diff = np.abs(encoded.ours - encoded.reference).reshape(clips, -1).max(axis=1)
    scale = np.abs(encoded.reference).reshape(clips, -1).max(axis=1)
    print(f"{engines.name}: max |diff| per clip {' '.join(f'{d:.1e}' for d in diff)}; max |value| {scale.max():.2f}")
    assert np.all(diff <= FP16_EPS * scale), (diff / scale).tolist()


def _generated(row: list[int], prompt: list[int], eos: int) -> list[int]:
    """The tokens after the prompt, up to the first end of text (batch rows are padded with it)."""
    if row[: len(prompt)] == prompt:
        row = row[len(prompt) :]
    return row[: row.index(eos)] if eos in row else row


@pytest.mark.slow
def test_greedy_transcripts_match_ctranslate2(engines: Engines, encoded: Encoded, mini_asr_clips: list) -> None:
    states = slice(0, len(mini_asr_clips))
    results = engines.ct2.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded.reference[states])),
        [engines.prompt] * len(mini_asr_clips),
        beam_size=1,
    )
    reference = [r.sequences_ids[0] for r in results]

    first_inputs: list[torch.Tensor] = []  # what the decoder is first fed: the prompt `generate` built

    def record(module, args, kwargs) -> None:
        first_inputs.append(kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0])

    hook = engines.hf.model.decoder.register_forward_pre_hook(record, with_kwargs=True)
    # The English-only model takes no language or task, as with the original checkpoints.
    language = dict(language="en", task="transcribe") if engines.ct2.is_multilingual else {}
    try:
        with torch.no_grad():
            out = engines.hf.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=torch.from_numpy(encoded.ours[states])),
                num_beams=1,
                do_sample=False,
                **language,
            )
    finally:
        hook.remove()
    assert first_inputs[0].tolist() == [engines.prompt] * len(mini_asr_clips)
    ours = [_generated(row, engines.prompt, engines.eos) for row in out.tolist()]

    decode = engines.processor.tokenizer.decode
    for (text, _), ids in zip(mini_asr_clips, reference):
        print(f"{engines.name}: {text!r} -> {decode(ids)!r}")
    assert [decode(ids) for ids in ours] == [decode(ids) for ids in reference]
    assert ours == reference
    assert all(reference), "an empty transcript compares nothing"


@pytest.mark.parametrize("keep", [10, 1 << 20])
def test_read_ct2_names_a_truncated_file(tmp_path: Path, keep: int) -> None:
    # Cut inside the header and inside the weights: both must say which file and why.
    (source,), _ = OFFLINE_WHISPER["whisper-tiny.en-offline"].files("whisper-tiny.en-offline")
    truncated = tmp_path / "cut-model.bin"
    with open(source, "rb") as stream:
        truncated.write_bytes(stream.read(keep))
    with pytest.raises(CT2FormatError, match="truncated") as error:
        read_ct2(truncated)
    assert "cut-model.bin" in str(error.value)


def test_read_ct2_names_a_missing_part() -> None:
    parts, _ = OFFLINE_WHISPER["whisper-base-offline"].files("whisper-base-offline")
    with pytest.raises(CT2FormatError, match="truncated") as error:
        read_ct2(parts[:1])
    assert parts[0].name in str(error.value)
