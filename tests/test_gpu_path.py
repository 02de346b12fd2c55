"""The model's device path: batch construction without host syncs, mel front ends in fp32, only the
hidden layers asked for, frozen weights in the compute dtype."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from shard_helpers import padded_features

from xares_fusion import model as model_module
from xares_fusion.frontend import FusionContext, Stream
from xares_fusion.model import AudioLLM
from xares_fusion.tokens import prompt_ids, target_ids

PROMPTS = ["Describe.", "Describe the pitch of this clip.", "Classify."]
TARGETS = ["low", "high then mid", "a much longer answer with several words"]


# -- the training batch: vectorised, bit-identical, no host sync -----------------------------------


def _reference_inputs(
    model: AudioLLM, audio: torch.Tensor, audio_mask: torch.Tensor, prompts: list[str], targets: list[str]
) -> dict[str, torch.Tensor]:
    """The LLM inputs as the per-row code built them before (one embedding lookup, one label
    tensor and one host copy per row, ``nonzero`` for the kept positions): the reference the
    vectorised construction must equal bit for bit."""
    table = model.llm.get_input_embeddings()

    def embed(ids: list[int]) -> torch.Tensor:
        return table(torch.tensor(ids, dtype=torch.long)).to(audio.dtype)

    def pad(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(r.shape[0] for r in rows)
        embeds = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            embeds[i, : row.shape[0]], mask[i, : row.shape[0]] = row, 1
        return embeds, mask

    p_ids, t_ids = prompt_ids(model.tokenizer, prompts), target_ids(model.tokenizer, targets)
    if model.audio_layout == "packed" or model.prompt_before_audio:
        rows, labels = [], []
        for i, (p, t) in enumerate(zip(p_ids, t_ids)):
            audio_part = audio[i][audio_mask[i].bool()]
            context = [embed(p), audio_part] if model.prompt_before_audio else [audio_part, embed(p)]
            rows.append(torch.cat([*context, embed(t)]))
            labels.append([-100] * (audio_part.shape[0] + len(p)) + t)
        embeds, attention = pad(rows)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
    else:
        text, text_mask = pad([embed(p + t) for p, t in zip(p_ids, t_ids)])
        embeds = torch.cat([audio, text], 1)
        attention = torch.cat([audio_mask.to(text_mask.dtype), text_mask], 1)
        positions = torch.arange(embeds.shape[1]).expand(embeds.shape[0], -1)
        labels = [[-100] * (audio.shape[1] + len(p)) + t for p, t in zip(p_ids, t_ids)]
    label_tensor = torch.full(attention.shape, -100, dtype=torch.long)
    for i, row in enumerate(labels):
        label_tensor[i, : len(row)] = torch.tensor(row)
    next_labels = torch.nn.functional.pad(label_tensor[:, 1:], (0, 1), value=-100)
    keep = (next_labels != -100).any(0).nonzero().squeeze(-1)
    return {
        "inputs_embeds": embeds,
        "attention_mask": attention,
        "position_ids": positions,
        "logits_to_keep": keep,
        "kept_labels": next_labels[:, keep],
    }


@pytest.mark.parametrize("layout", ["official", "packed", "prompt-first"])
def test_training_forward_equals_the_per_row_construction_bit_for_bit(model: AudioLLM, layout: str) -> None:
    model.eval()  # LoRA dropout off: the two forwards must see the same network
    model.audio_layout = "official" if layout == "official" else "packed"
    model.prompt_before_audio = layout == "prompt-first"
    features, mask = padded_features([60, 200, 130])
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.llm.register_forward_pre_hook(lambda _m, _a, kwargs: seen.update(kwargs), with_kwargs=True),
        model.llm.register_forward_hook(lambda _m, _a, out: seen.update(logits=out.logits)),
    ]
    try:
        out = model(None, None, PROMPTS, TARGETS, streams=[Stream(features, mask)])
    finally:
        for hook in hooks:
            hook.remove()
    audio, audio_mask, _ = model.embed_audio([Stream(features, mask)], None, None, FusionContext())
    ref = _reference_inputs(model, audio, audio_mask, PROMPTS, TARGETS)
    for name in ("inputs_embeds", "attention_mask", "position_ids", "logits_to_keep"):
        assert torch.equal(seen[name], ref[name]), name
    kept = ref.pop("kept_labels")
    logits = model.llm(**ref).logits
    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), kept.reshape(-1))
    assert torch.equal(seen["logits"], logits)
    assert torch.equal(out.lm_loss, loss)
    assert out.num_target_tokens == int((kept != -100).sum()) == sum(map(len, target_ids(model.tokenizer, TARGETS)))


def _count_host_syncs(monkeypatch: pytest.MonkeyPatch, source: Path) -> list[str]:
    """Record every call in ``source`` that waits for the device: reading a tensor's values on the
    host (``item``, ``tolist``, ``int()``, ``bool()``, ``nonzero``, ``cpu``) or copying host data
    into a device tensor from pageable memory (``torch.tensor(..., device=...)``)."""
    calls: list[str] = []

    def spy(name: str, original):
        def wrapper(*args, **kwargs):
            if sys._getframe(1).f_code.co_filename == str(source) and (name != "tensor" or "device" in kwargs):
                calls.append(name)
            return original(*args, **kwargs)

        return wrapper

    for name in ("item", "tolist", "__int__", "__bool__", "__float__", "nonzero", "cpu"):
        monkeypatch.setattr(torch.Tensor, name, spy(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(torch, "tensor", spy("tensor", torch.tensor))
    return calls


def test_official_training_forward_reads_nothing_back_from_the_device(
    model: AudioLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    features, mask = padded_features([60, 200, 130])
    calls = _count_host_syncs(monkeypatch, Path(model_module.__file__))
    out = model(None, None, PROMPTS, TARGETS, streams=[Stream(features, mask)])
    monkeypatch.undo()
    assert torch.isfinite(out.lm_loss)
    assert calls == []  # the per-row code made 3 per row (embeddings, labels) plus nonzero and int()


# -- mel front ends: Whisper's in torch on the device, every one in fp32 under autocast ------------


@pytest.fixture(scope="module")
def speech() -> list[torch.Tensor]:
    """eSpeak NG sentences tiled to a short clip, 7 s, exactly 30 s and 35 s (longer than Whisper's window)."""
    from xares_fusion.data.speech import Espeak

    voice = torch.from_numpy(Espeak.get().say("The quick brown fox jumps over the lazy dog.", "en-us", seed=0))
    tiled = voice.repeat(35 * 16000 // voice.shape[0] + 1)
    return [voice[:23457], tiled[: 7 * 16000 + 1], tiled[: 30 * 16000], tiled[: 35 * 16000]]


def _padded(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([c.shape[0] for c in clips])
    audio = torch.zeros(len(clips), int(lengths.max()))
    for i, clip in enumerate(clips):
        audio[i, : clip.shape[0]] = clip
    return audio, lengths


def test_whisper_log_mel_in_torch_equals_the_feature_extractor_on_speech(speech: list[torch.Tensor]) -> None:
    from transformers import WhisperFeatureExtractor

    from xares_fusion.encoders.whisper import whisper_log_mel

    extractor = WhisperFeatureExtractor()
    filters, window = torch.from_numpy(extractor.mel_filters).float(), torch.hann_window(extractor.n_fft)
    audio, lengths = _padded(speech)
    ours = whisper_log_mel(audio, lengths, extractor.n_samples, filters, window)
    theirs = extractor([c.numpy() for c in speech], sampling_rate=16000, return_tensors="pt").input_features
    assert ours.shape == theirs.shape == (4, 80, 3000)
    assert (ours - theirs).abs().max() < 1e-4
    # The speed mode: padding to the batch's longest clip (an even number of samples).
    audio, lengths = _padded(speech[:2])
    ours = whisper_log_mel(audio, lengths, 7 * 16000 + 2, filters, window)
    theirs = extractor(
        [c.numpy() for c in speech[:2]],
        sampling_rate=16000,
        return_tensors="pt",
        padding="longest",
        pad_to_multiple_of=2,
    ).input_features
    assert ours.shape == theirs.shape == (2, 80, 700)
    assert (ours - theirs).abs().max() < 1e-4


def _whisper_mel(tiny_whisper: str):
    from xares_fusion.encoders.whisper import WhisperEncoder

    encoder = WhisperEncoder(tiny_whisper)
    return lambda audio, mask: encoder._mel(audio, mask.sum(-1))


def _logmel(_: str):
    from xares_fusion.encoders import build_encoder

    return build_encoder("logmel")


def _dasheng_front_end(_: str):
    from xares_fusion.encoders.dasheng_frontend import DashengFrontEnd

    front_end = DashengFrontEnd()
    return lambda audio, mask: front_end(audio)


@pytest.mark.parametrize("make", [_whisper_mel, _logmel, _dasheng_front_end], ids=["whisper", "logmel", "dasheng"])
def test_mel_front_ends_compute_in_fp32_under_bf16_autocast(
    make, tiny_whisper: str, speech: list[torch.Tensor]
) -> None:
    mel = make(tiny_whisper)
    audio, lengths = _padded(speech[:2])
    mask = (torch.arange(audio.shape[1]) < lengths[:, None]).long()
    reference = mel(audio, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = mel(audio, mask)
    reference, under_autocast = (x[0] if isinstance(x, tuple) else x for x in (reference, under_autocast))
    assert under_autocast.dtype == torch.float32 and torch.equal(under_autocast, reference)


# -- hidden states: only the layers asked for --------------------------------------------------------


def test_whisper_keeps_only_the_requested_layers(tiny_whisper: str) -> None:
    from xares_fusion.encoders.whisper import WhisperEncoder

    audio, lengths = _padded([torch.randn(16000, generator=torch.Generator().manual_seed(0)) * 0.1] * 2)
    every = WhisperEncoder(tiny_whisper, output_hidden_states=True)
    features, _ = every(audio)
    some = WhisperEncoder(tiny_whisper, output_hidden_states=[0, -1])
    assert torch.equal(some(audio)[0], features)
    assert len(every.hidden_states) == 3 and len(some.hidden_states) == 2
    assert torch.equal(some.hidden_states[0], every.hidden_states[0])
    assert torch.equal(some.hidden_states[1], every.hidden_states[2])
    # Without hidden states the pass keeps the last state alone (it kept every layer's before).
    none = WhisperEncoder(tiny_whisper)
    assert list(none._encode(none._mel(audio, lengths), []).keys()) == [2] and none.hidden_states is None
    with pytest.raises(ValueError, match="asks for layer 3, but the encoder has 3 states"):
        WhisperEncoder(tiny_whisper, output_hidden_states=[3])(audio)


def test_ssl_encoder_keeps_only_the_requested_layers(tmp_path: Path) -> None:
    from transformers import WavLMConfig, WavLMModel

    from xares_fusion.encoders.ssl import SSLEncoder

    torch.manual_seed(0)
    config = WavLMConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16,) * 7
    )
    WavLMModel(config).save_pretrained(tmp_path)
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    every, some = (
        SSLEncoder(str(tmp_path), output_hidden_states=True),
        SSLEncoder(str(tmp_path), output_hidden_states=[1]),
    )
    features = every.eval()(audio)[0]
    assert torch.equal(some.eval()(audio)[0], features)
    assert len(every.hidden_states) == 3 and len(some.hidden_states) == 1
    assert torch.equal(some.hidden_states[0], every.hidden_states[1])


# -- frozen weights in the compute dtype -------------------------------------------------------------


def test_bf16_run_stores_frozen_weights_in_bf16_with_the_same_numbers(tiny_whisper: str) -> None:
    import dataclasses

    from xares_fusion.config import load_recipe
    from xares_fusion.parity import recipe_departures
    from xares_fusion.runner import build_model

    def build(precision: str) -> AudioLLM:
        recipe = load_recipe("synthetic", [f"optim.precision={precision}", "model.encoder=whisper"])
        recipe = dataclasses.replace(
            recipe, model=dataclasses.replace(recipe.model, encoder_args={"model_name": tiny_whisper})
        )
        return build_model(recipe), recipe

    (fp32, _), (bf16, recipe) = build("fp32"), build("bf16")
    assert "frozen_dtype='bf16'" in " ".join(recipe_departures(recipe))
    assert all(p.dtype == torch.float32 for p in fp32.parameters())  # fp32 runs: nothing changes
    dtypes = {n: p.dtype for n, p in bf16.named_parameters()}
    trainable = {n for n, p in bf16.named_parameters() if p.requires_grad}
    assert trainable and all(dtypes[n] == torch.float32 for n in trainable)  # projector, LoRA
    assert dtypes["encoder.model.conv1.weight"] == dtypes["encoder.model.layers.0.fc1.weight"] == torch.bfloat16
    base = [n for n in dtypes if n.startswith("llm.") and n.endswith("q_proj.base_layer.weight")]
    assert base and all(dtypes[n] == torch.bfloat16 for n in base)
    assert dtypes["encoder.model.layer_norm.weight"] == torch.float32  # norms stay fp32 (autocast runs them so)
    # Under bf16 autocast the cast weights give the very numbers autocast computed from fp32 ones.
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    batch = (audio, torch.ones_like(audio, dtype=torch.long), ["Classify."] * 2, ["low", "high"])
    losses = []
    for model in (fp32.eval(), bf16.eval()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(model(*batch).lm_loss)
    assert torch.isfinite(losses[1]) and torch.equal(losses[0], losses[1])
    # One training step: gradients reach the fp32 trainable weights.
    bf16.train()
    optimizer = torch.optim.AdamW([p for p in bf16.parameters() if p.requires_grad], lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = bf16(*batch).lm_loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in bf16.parameters() if p.requires_grad)
