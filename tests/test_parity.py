"""Parity with the official XARES-LLM pipeline (commit 105be68), one test per row of docs/parity.md.

Every expectation is worked out by hand (in the comments) or computed by the reference
implementation the official code calls (transformers' own loss and generate), never by calling
our code a second time. `pytest -k parity` runs exactly these.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from shard_helpers import flac_bytes as _flac
from shard_helpers import padded_features
from shard_helpers import write_shard as _shard

from xares_fusion.cli import main
from xares_fusion.config import DEFAULT_GENERATION, DataMixtureSpec, ModelSpec, OptimSpec, load_task
from xares_fusion.constants import SAMPLE_RATE
from xares_fusion.data.audio import decode_audio
from xares_fusion.data.mixture import MixtureStream, TokenLengthKey, TrainSource
from xares_fusion.data.resample import resample
from xares_fusion.data.samples import SkipCounter, iter_samples, texts_from_metadata
from xares_fusion.fusion import Stream
from xares_fusion.metrics import score
from xares_fusion.model import AudioLLM
from xares_fusion.results import TaskResult, weighted_overall
from xares_fusion.tokens import reference_texts

TONES_RECIPE = """
name: parity-tones
model:
  encoder: logmel
  llm: {name_or_path: toy-llama}
data:
  mixture: [{task: tones}]
optim:
  max_steps: 6
  lr: 1.0e-3
  warmup_steps: 2
  batch_size: 4
  log_steps: 1
  save_steps: 100
"""


# -- metrics (xares_llm/metrics.py) -------------------------------------------------------------


def test_parity_map_keeps_punctuation_and_splits_labels_on_semicolons() -> None:
    # Issue example. Normalised, punctuation kept: preds "dog;cat" -> {dog, cat}, "cat" -> {cat};
    # refs {dog}, {dog, cat}. Columns dog, cat (+1 empty). dog: target [1,1], pred [1,0] -> AP 1
    # (every row is positive); cat: target [0,1], pred [1,1] (tied) -> precision 1/2 at recall 1
    # -> AP 1/2; the empty third column scores 0. mAP = (1 + 1/2 + 0) / 3 = 0.5.
    assert score("mAP", ["Dog;Cat", "cat"], ["dog", "dog;cat"], num_classes=3) == pytest.approx(0.5)


def test_parity_map_keeps_commas_and_full_stops_inside_labels() -> None:
    # "male speech, man speaking" is one label with its comma; the prediction's trailing '.' is
    # kept, so it matches nothing: that column target [1,0], pred [0,0] (tied) -> AP 1/2;
    # music: target [0,1], pred [0,1] -> AP 1. mAP = 3/4 (stripping punctuation would give 1).
    preds = ["Male speech, man speaking.", "Music"]
    refs = ["male speech, man speaking", "music"]
    assert score("mAP", preds, refs, num_classes=2) == pytest.approx(0.75)


def test_parity_map_nfkc_full_width_semicolon_hyphen_and_unstripped_parts() -> None:
    # NFKC turns '；' into ';': "Ｄｏｇ；Ｃａｔ" -> {dog, cat}; "bird-song" -> "bird song" != "bird".
    # bird: target [0,1], pred [0,0] -> 1/2; cat, dog: target [1,0], pred [1,0] -> 1 each. 2.5 / 3.
    assert score("mAP", ["Ｄｏｇ；Ｃａｔ", "bird-song"], ["dog;cat", "bird"], num_classes=3) == pytest.approx(2.5 / 3)
    # "dog; cat" splits into "dog" and " cat" (parts are not stripped), so the prediction "cat"
    # scores in the column "cat" of the second reference, never in " cat".
    # dog: t [1,0] p [1,0] -> 1; " cat": t [1,0] p [0,0] -> 1/2; cat: t [0,1] p [1,1] -> 1/2.
    assert score("mAP", ["dog;cat", "cat"], ["dog; cat", "cat"], num_classes=3) == pytest.approx(2 / 3)


def test_parity_map_refuses_more_labels_than_num_classes() -> None:
    # Officially an IndexError; here a ValueError that names the field to fix.
    with pytest.raises(ValueError, match=r"3 distinct labels but num_classes is 2.*metric_args"):
        score("mAP", ["a"], ["a;b;c"], num_classes=2)


def test_parity_mini_events_has_one_column_per_event() -> None:
    task = load_task("mini-events")
    assert task.metric_args == {"num_classes": 5}
    refs = ["bell;knock", "beep", "clap;siren;bell", "siren"]
    assert score("mAP", refs, refs, **task.metric_args) == pytest.approx(1.0)


def test_parity_accuracy_and_error_rates_normalise_then_compare() -> None:
    # NFKC + lower + hyphen -> space + ASCII punctuation stripped: "Ｃａｔ！" == "cat",
    # "speech-music" == "Speech Music"; the empty prediction is simply wrong: 2/3.
    assert score("Accuracy", ["Ｃａｔ！", "speech-music", ""], ["cat", "Speech Music", "dog"]) == pytest.approx(2 / 3)
    # Corpus-level WER: "" vs "a b" -> 2 deletions; "c d" vs "c d" -> 0; 2 / 4 words -> iWER 0.5.
    assert score("iWER", ["", "C, d."], ["a b", "c d"]) == pytest.approx(0.5)
    # iCER over characters after normalisation: "你好" vs "你好。" -> 1 deletion / 3 -> 2/3.
    assert score("iCER", ["你好"], ["你好。"]) == pytest.approx(2 / 3)


def test_parity_overall_is_the_weighted_mean() -> None:
    # sum(score * weight) / sum(weight) = (0.5 * 1 + 1.0 * 3) / 4 = 0.875.
    results = [TaskResult("a", "Accuracy", 0.5, weight=1.0), TaskResult("b", "Accuracy", 1.0, weight=3.0)]
    assert weighted_overall(results) == pytest.approx(0.875)


def test_parity_references_are_the_tokenised_labels_decoded_back(model: AudioLLM, tmp_path: Path) -> None:
    from accelerate import Accelerator

    from xares_fusion.config import EvalSpec, TaskConfig
    from xares_fusion.evaluate import generate_predictions

    # The official reference is decode(tokenize(label), skip_special_tokens).strip(): the
    # byte-level toy tokenizer keeps inner spacing, and the outer spaces go.
    assert reference_texts(model.tokenizer, ["  Hello  World ,  x  "]) == ["Hello  World ,  x"]
    clip = _flac(np.full(1600, 0.1, dtype=np.float32), SAMPLE_RATE)
    shard = _shard(tmp_path / "r.tar", [{"__key__": "k0", "flac": clip, "json": b'{"label": "  Dog  bark "}'}])
    task = TaskConfig(
        name="refs",
        prompt="p",
        metric="Accuracy",
        key="label",
        generation={"max_new_tokens": 2},
        eval=EvalSpec(shards=[str(shard)]),
    )
    outcome = generate_predictions(model, task, Accelerator(cpu=True), progress=False)
    assert outcome.rows["labels"].tolist() == ["Dog  bark"]


# -- data (xares_llm/audiowebdataset.py) --------------------------------------------------------


def test_parity_resampling_is_torchaudios_windowed_sinc() -> None:
    # torchaudio.functional.resample (sinc_interp_hann, width 6, rolloff 0.99), written out as the
    # interpolation formula: y[j] = sum_i x[i] sinc(pi t) cos^2(pi t / 12) * base / orig with
    # t = clamp((i / orig - j / new) * base, -6, 6), base = 0.99 * min(orig, new) (rates / gcd).
    x = torch.randn(600, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for orig_rate, new_rate in ((44100, SAMPLE_RATE), (8000, SAMPLE_RATE)):
        g = math.gcd(orig_rate, new_rate)
        orig, new = orig_rate // g, new_rate // g
        base = 0.99 * min(orig, new)
        y = resample(x, orig_rate, new_rate)
        assert y.shape[-1] == math.ceil(new * 600 / orig)
        i = np.arange(600)
        for j in (0, 7, y.shape[-1] // 2, y.shape[-1] - 1):
            t = np.clip((i / orig - j / new) * base, -6, 6)
            kernel = np.sinc(t) * np.cos(np.pi * t / 12) ** 2 * base / orig
            assert float(y[j]) == pytest.approx(float((x.numpy() * kernel).sum()), abs=1e-12)


def test_parity_audio_is_mono_mean_normalised_then_cropped_before_resampling() -> None:
    rng = np.random.default_rng(0)
    left = np.full(24000, 0.8, dtype=np.float32)  # 3 s at 8 kHz
    right = np.full(24000, -0.4, dtype=np.float32)
    audio, cropped = decode_audio(_flac(np.stack([left, right], 1), 8000))
    assert not cropped and audio.shape == (48000,)
    assert float(np.median(audio)) == pytest.approx(0.2, abs=1e-3)  # mean of the channels
    # Training crop: int(1.0 * 8000) samples at the file's rate, then resampled -> 16000 samples.
    audio, cropped = decode_audio(_flac(left, 8000), SAMPLE_RATE, crop_seconds=1.0, rng=rng)
    assert cropped and audio.shape == (SAMPLE_RATE,)
    # Clipped float audio (WAV float can exceed 1) is divided by its peak: 2.0 -> 1.0.
    buffer = io.BytesIO()
    sf.write(buffer, np.full(1600, 2.0, dtype=np.float32), SAMPLE_RATE, format="WAV", subtype="FLOAT")
    audio, _ = decode_audio(buffer.getvalue())
    assert float(np.abs(audio).max()) == pytest.approx(1.0)


def test_parity_label_key_rule_and_one_row_per_label() -> None:
    # 'a;b' = the first key present, then captions/caption/text; a list gives one row per element.
    assert texts_from_metadata({"labels": ["x", "y"], "label": "z"}, "label;labels") == ["z"]
    assert texts_from_metadata({"labels": ["x", "y"]}, "label;labels") == ["x", "y"]
    assert texts_from_metadata({"caption": "c"}, "label") == ["c"]
    assert texts_from_metadata({"num_speakers": 3}, "num_speakers") == ["3"]
    # A string is a text even when empty, a boolean is its str (bool is an int officially).
    assert texts_from_metadata({"label": "", "text": "t"}, "label") == [""]
    assert texts_from_metadata({"binary_spoof": False}, "binary_spoof") == ["False"]


def test_parity_each_reference_caption_is_its_own_training_example(tmp_path: Path) -> None:
    clip = _flac(np.full(1600, 0.1, dtype=np.float32), SAMPLE_RATE)
    shard = _shard(tmp_path / "c.tar", [{"__key__": "k0", "flac": clip, "json": b'{"captions": ["a", "b", "c"]}'}])
    stream = iter(
        MixtureStream(
            [TrainSource("caps", "p", None, [shard], 1.0)],
            batch_size=3,
            crop_seconds=30,
            sample_rate=SAMPLE_RATE,
            seed=0,
            shuffle_buffer=1,
            sort_by_length=1,
        )
    )
    batch = next(stream)
    assert batch["targets"] == ["a", "b", "c"] and batch["keys"] == ["k0"] * 3


def _one_clip_shards(tmp_path: Path, lengths: list[int], prefix: str = "s") -> list[Path]:
    return [
        _shard(
            tmp_path / f"{prefix}{i}.tar",
            [
                {
                    "__key__": f"k{i}",
                    "flac": _flac(np.full(n, 0.1, dtype=np.float32), SAMPLE_RATE),
                    "json": json.dumps({"text": f"t{i}"}).encode(),
                }
            ],
        )
        for i, n in enumerate(lengths)
    ]


def test_parity_shards_are_drawn_with_replacement(tmp_path: Path) -> None:
    # Official ResampledShards: every next shard is an independent uniform draw, so with 3
    # one-clip shards about a third of consecutive examples repeat (cycling through shuffled
    # passes would repeat at most once per pass boundary, i.e. < 1 in 3 draws... here < 20 of 60).
    shards = _one_clip_shards(tmp_path, [1600, 1600, 1600])
    stream = iter(
        MixtureStream(
            [TrainSource("s", "p", None, shards, 1.0)],
            batch_size=61,
            crop_seconds=30,
            sample_rate=SAMPLE_RATE,
            seed=5,
            shuffle_buffer=1,
            sort_by_length=1,
        )
    )
    keys = next(stream)["keys"]
    repeats = sum(a == b for a, b in zip(keys, keys[1:]))
    assert 12 <= repeats <= 30 and set(keys) == {"k0", "k1", "k2"}


def test_parity_training_sorts_windows_of_128_longest_first(tmp_path: Path, toy_llm) -> None:
    assert DataMixtureSpec().sort_by_length == 128 and DataMixtureSpec().shuffle_buffer == 256
    _, tokenizer = toy_llm
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(800, SAMPLE_RATE, size=24)]
    shards = _one_clip_shards(tmp_path, lengths)
    key = TokenLengthKey(tokenizer)

    def batches(window: int) -> list[dict]:
        stream = iter(
            MixtureStream(
                [TrainSource("v", "Name it.", None, shards, 1.0)],
                batch_size=4,
                crop_seconds=30,
                sample_rate=SAMPLE_RATE,
                seed=3,
                shuffle_buffer=8,
                sort_by_length=window,
                length_key=key,
            )
        )
        return [next(stream) for _ in range(8)]  # 4 windows of 8 examples

    plain, ordered = batches(1), batches(8)
    # The official key by hand: len(tokenizer(prompt)) + len(tokenizer(text + eos)) + samples / 16000.
    prompt_tokens = len(tokenizer("Name it.")["input_ids"])

    def official_key(target: str, samples: int) -> float:
        return prompt_tokens + len(tokenizer(target + tokenizer.eos_token)["input_ids"]) + samples / SAMPLE_RATE

    for w in range(4):
        window = plain[2 * w : 2 * w + 2], ordered[2 * w : 2 * w + 2]
        same = [sorted(t for b in run for t in b["targets"]) for run in window]
        assert same[0] == same[1]  # the same examples, regrouped
        keys = [official_key(t, int(n)) for b in window[1] for t, n in zip(b["targets"], b["audio_mask"].sum(-1))]
        assert keys == sorted(keys, reverse=True)  # longest first within the window
    padding = [sum(int((1 - b["audio_mask"]).sum()) for b in run) for run in (plain, ordered)]
    assert padding[1] < padding[0]


# -- model (xares_llm/modeling_audiollm/modeling_xaresllm.py) ------------------------------------


def test_parity_training_sequence_is_the_official_padded_audio_block_then_text(model: AudioLLM) -> None:
    assert ModelSpec().audio_layout == "official" and model.audio_layout == "official"
    model.eval()
    features, mask = padded_features([60, 200])
    prompts, targets = ["Describe.", "Describe the pitch."], ["low", "high then mid"]
    ours = model(None, None, prompts, targets, streams=[Stream(features, mask)]).lm_loss
    # The official construction, fed to the LLM's own loss: projected audio padded to 200 frames,
    # then tokenizer(prompt) + tokenizer(target + eos) right-padded, labels -100 over audio and
    # prompt, attention 0 on padding, and *no* position ids (positions run through the padding).
    tok = model.tokenizer
    audio = model.projector(features, mask)[0]
    text = [tok(p)["input_ids"] + tok(t + tok.eos_token)["input_ids"] for p, t in zip(prompts, targets)]
    width = max(len(t) for t in text)
    ids = torch.tensor([t + [tok.pad_token_id] * (width - len(t)) for t in text])
    text_mask = torch.tensor([[1] * len(t) + [0] * (width - len(t)) for t in text])
    labels = torch.tensor(
        [
            [-100] * 200
            + [-100] * len(tok(p)["input_ids"])
            + tok(t + tok.eos_token)["input_ids"]
            + [-100] * (width - len(row))
            for p, t, row in zip(prompts, targets, text)
        ]
    )
    embeds = torch.cat([audio, model.llm.get_input_embeddings()(ids)], 1)
    with torch.no_grad():
        official = model.llm(inputs_embeds=embeds, attention_mask=torch.cat([mask, text_mask], 1), labels=labels).loss
    assert ours.item() == pytest.approx(official.item(), rel=1e-5)
    # ... which differs from packing the first clip's 60 frames against its prompt.
    model.audio_layout = "packed"
    packed = model(None, None, prompts, targets, streams=[Stream(features, mask)]).lm_loss
    assert abs(packed.item() - official.item()) > 1e-4


def test_parity_generation_equals_the_official_masked_middle_padding(model: AudioLLM) -> None:
    # Official generation: [audio padded to the batch's longest][prompt], attention 0 on the
    # padding, generate() deriving positions from the mask; greedy, repetition penalty 1.05,
    # at most 150 new tokens. Our left-padded contiguous rows must give the same tokens.
    assert DEFAULT_GENERATION == {"max_new_tokens": 150, "repetition_penalty": 1.05}
    model.eval()
    features, mask = padded_features([60, 250, 400])
    prompts = ["Classify the pitch."] * 3
    kwargs = {"max_new_tokens": 12, "repetition_penalty": 1.05}
    ours = model.generate(None, None, prompts, streams=[Stream(features, mask)], **kwargs)
    tok = model.tokenizer
    audio = model.projector(features, mask)[0]
    prompt = torch.tensor([tok(prompts[0])["input_ids"]] * 3)
    embeds = torch.cat([audio, model.llm.get_input_embeddings()(prompt)], 1)
    attention = torch.cat([mask, torch.ones_like(prompt)], 1)
    with torch.no_grad():
        tokens = model.llm.generate(
            inputs_embeds=embeds, attention_mask=attention, do_sample=False, pad_token_id=tok.pad_token_id, **kwargs
        )
    official = [t.strip() for t in tok.batch_decode(tokens, skip_special_tokens=True)]
    assert ours == official and ours[0] != ""


class _ModeSpy(torch.nn.Module):
    """A frozen encoder that records the mode it ran in."""

    output_dim = 8

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.modes: list[bool] = []

    def forward(self, audio, audio_attention_mask=None):
        self.modes.append(self.training)
        frames = audio.shape[-1] // 160
        return self.scale * audio[:, : frames * 160].reshape(audio.shape[0], frames, 160)[..., :8], None


def test_parity_frozen_encoder_runs_in_train_mode_while_training(model: AudioLLM) -> None:
    # Officially the encoder is never frozen into eval mode (`param._requires_grad = False` is a
    # typo and Trainer.train() calls model.train()), so dropout/BatchNorm act during training.
    assert ModelSpec().frozen_encoder_mode == "train"
    from xares_fusion.projectors import LinearProjector

    spy = _ModeSpy()
    model.encoder, model.projector = spy, LinearProjector(8, model.llm.config.hidden_size)
    model.encoder.requires_grad_(False)
    audio, audio_mask = torch.zeros(2, 1600), torch.ones(2, 1600, dtype=torch.long)
    model.train()
    model(audio, audio_mask, ["p", "p"], ["a", "b"])
    model.frozen_encoder_mode = "eval"
    model(audio, audio_mask, ["p", "p"], ["a", "b"])
    model.eval()
    model.generate(audio, audio_mask, ["p", "p"], max_new_tokens=2)
    assert spy.modes == [True, False, False]


# -- optimisation and runs (xares_llm/task.py, run.py, transformers Trainer defaults) -----------


def test_parity_learning_rate_is_linear_warmup_then_linear_decay_logged_per_step(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    assert OptimSpec().scheduler == "linear"
    recipe = tmp_path / "parity-tones.yaml"
    recipe.write_text(TONES_RECIPE)
    out = tmp_path / "run"
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(out), "--limit", "4", "--no-progress"]) == 0
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    # transformers get_linear_schedule_with_warmup, the lr *used* at step k = 1e-3 * f(k - 1):
    # f(s) = s / 2 for s < 2, else (6 - s) / (6 - 2). Steps 1..6: 0, 0.5, 1, 0.75, 0.5, 0.25 (x 1e-3).
    expected = [0.0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h["lr"] for h in history] == pytest.approx(expected, abs=1e-12)
    assert torch.are_deterministic_algorithms_enabled()  # the official --benchmark mode, on by default
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # a missing kernel warns, never stops a run
    parity = json.loads((out / "result.json").read_text())["parity"]
    assert (
        parity["official"] is False
        and "model.llm.name_or_path='toy-llama' (official: 'HuggingFaceTB/SmolLM2-135M')" in parity["departures"]
    )
    assert "departs from the official pipeline in: model.llm.name_or_path='toy-llama'" in capsys.readouterr().out


def test_parity_plan_and_record_say_whether_the_run_is_official(tmp_path: Path, isolated_homes: dict) -> None:
    from suite_mirror import write_suite_mirror

    from xares_fusion.runner import RunRequest, plan_run

    write_suite_mirror("all")
    plan = plan_run(RunRequest(encoder="logmel", train="all", output_dir=tmp_path / "a"))
    assert plan.departures == []
    plan = plan_run(
        RunRequest(encoder="logmel", train="all", output_dir=tmp_path / "b", overrides=["optim.precision=bf16"])
    )
    assert plan.departures == [
        "optim.precision='bf16' (official: 'fp32')",
        "frozen_dtype='bf16': frozen encoder and LLM base weights stored in bf16 (official: fp32)",
    ]
    plan = plan_run(
        RunRequest(
            encoder="logmel",
            train="all",
            output_dir=tmp_path / "c",
            max_steps=10,
            limit=3,
            overrides=["optim.scheduler=cosine", "speed.feature_cache=readwrite"],
        )
    )
    assert plan.departures == [
        "optim.scheduler='cosine' (official: 'linear')",
        "optim.max_steps=10 (the recipe file trains 100000)",
        "speed.cache_dtype='fp16': cached encoder features are rounded (official: computed in fp32 every step)",
        "speed.feature_cache='readwrite': cached features are computed with the encoder in eval mode "
        "(official: train mode while training)",
        "eval limited to 3 rows per task (official: every row)",
    ]


def test_parity_leaderboard_marks_runs_that_depart(tmp_path: Path) -> None:
    from xares_fusion.leaderboard.collect import systems_from_records
    from xares_fusion.leaderboard.render import column_labels
    from xares_fusion.leaderboard.table import build_table

    def record(name: str, parity: dict | None) -> dict:
        rec = {
            "system": {"name": name, "recipe": "all", "llm": "x", "precision": "fp32"},
            "eval_group": "all",
            "tasks": [{"task": "esc-50", "metric": "Accuracy", "score": 0.5, "track": "A"}],
        }
        if parity is not None:
            rec["parity"] = parity
        return rec

    systems = systems_from_records(
        [
            record("a", {"official": True, "departures": []}),
            record("b", {"official": False, "departures": ["optim.precision='bf16'"]}),
            record("c", None),
        ]
    )
    assert [s.official for s in systems] == [True, False, False]
    labels = column_labels(build_table(systems))
    assert labels == ["a", "b §", "c §"]


def test_parity_corrupt_label_texts_are_dropped_and_counted(tmp_path: Path) -> None:
    from xares_fusion.data.samples import is_corrupted_text

    # More than half not alphanumeric ("?!..." and "a - b - c": 6 of 9 are spaces or dashes),
    # more than 3 combining marks, > 10 characters from < 4 distinct ones; an empty text passes.
    assert is_corrupted_text("?!...") and is_corrupted_text("a - b - c")
    assert is_corrupted_text("A\u0333\u0366A\u0333\u0366") and is_corrupted_text("ha ha ha ha ")
    assert not is_corrupted_text("") and not is_corrupted_text("a dog barks twice") and not is_corrupted_text("你好")
    clip = _flac(np.full(1600, 0.1, dtype=np.float32), SAMPLE_RATE)
    shard = _shard(
        tmp_path / "t.tar",
        [
            {"__key__": "k0", "flac": clip, "json": json.dumps({"captions": ["a dog barks", "?!?!?!"]}).encode()},
            {"__key__": "k1", "flac": clip, "json": json.dumps({"text": "- - - -"}).encode()},
        ],
    )
    counter = SkipCounter()
    samples = list(iter_samples([shard], None, counter))
    assert [(s.key, s.texts) for s in samples] == [("k0", ["a dog barks"])]
    assert counter.seen == 2 and sum(counter.reasons.values()) == 2


def test_parity_trainable_parts_start_from_the_official_initial_values(toy_llm) -> None:
    # Official order (Trainer.train -> set_seed(42) -> model_init): build the encoder, the
    # checker's torch.randn(3, 50000) + forward, load the LLM (draws nothing), get_peft_model
    # (each LoRA A draws), then nn.Linear for the projector. Done here with torch and peft directly.
    from peft import LoraConfig, TaskType, get_peft_model

    from xares_fusion.config import LLMSpec, RecipeConfig
    from xares_fusion.encoders import build_encoder
    from xares_fusion.runner import build_model

    recipe = RecipeConfig(name="init", model=ModelSpec(encoder="logmel", llm=LLMSpec(name_or_path="toy-llama")))
    ours = build_model(recipe)
    llm, _ = toy_llm
    fresh = llm.__class__.from_pretrained(llm.config._name_or_path)
    torch.manual_seed(42)
    encoder = build_encoder("logmel")
    encoder(torch.randn(3, 50000), None)
    official_llm = get_peft_model(
        fresh,
        LoraConfig(
            target_modules="all-linear",
            task_type=TaskType.CAUSAL_LM,
            inference_mode=False,
            r=8,
            lora_alpha=32,
            lora_dropout=0.1,
            bias="none",
        ),
    )
    projector = torch.nn.Linear(encoder.output_dim, fresh.config.hidden_size)
    torch.testing.assert_close(ours.projector.proj.weight, projector.weight, rtol=0, atol=0)
    lora_a = {n: p for n, p in official_llm.named_parameters() if "lora_A" in n}
    for name, param in ours.llm.named_parameters():
        if "lora_A" in name:
            torch.testing.assert_close(param, lora_a[name], rtol=0, atol=0)


def test_parity_each_mixture_draw_takes_a_run_of_one_batch_from_one_dataset(tmp_path: Path) -> None:
    # Officially every dataset's stream is batched (4) before RandomMix, so a draw brings 4
    # consecutive examples of one dataset (the shuffle buffer spreads them out afterwards).
    sources = [TrainSource(name, "p", None, _one_clip_shards(tmp_path, [1600], prefix=name), 0.5) for name in "ab"]
    stream = iter(
        MixtureStream(
            sources, batch_size=4, crop_seconds=30, sample_rate=SAMPLE_RATE, seed=1, shuffle_buffer=1, sort_by_length=1
        )
    )
    tasks = [task for _ in range(10) for task in next(stream)["tasks"]]
    runs = [tasks[i : i + 4] for i in range(0, 40, 4)]
    assert all(len(set(run)) == 1 for run in runs) and {r[0] for r in runs} == {"a", "b"}


def test_parity_loss_is_multiplied_by_the_number_of_processes(model: AudioLLM, tmp_path: Path) -> None:
    from itertools import cycle

    from accelerate import Accelerator

    from xares_fusion.train import train

    # Official Trainer on N processes: the backpropagated loss is loss * N (its
    # average_tokens_across_devices path, taken because the official forward takes **kwargs);
    # the fix is opt-in. The training loop is run with an accelerator that reports 2 processes.
    class TwoProcesses(Accelerator):
        backpropagated: list[float] = []

        @property
        def num_processes(self) -> int:
            return 2

        def backward(self, loss, **kwargs):
            self.backpropagated.append(float(loss))
            super().backward(loss, **kwargs)

    audio = torch.zeros(2, 1600)
    batch = {
        "audio": audio,
        "audio_mask": torch.ones_like(audio, dtype=torch.long),
        "prompts": ["p", "p"],
        "targets": ["a", "b"],
    }
    assert OptimSpec().loss_times_processes is True
    for official, factor in ((True, 2.0), (False, 1.0)):
        accelerator = TwoProcesses(cpu=True)
        accelerator.backpropagated = []
        optim = OptimSpec(max_steps=2, warmup_steps=0, log_steps=1, save_steps=10, loss_times_processes=official)
        summary = train(model, cycle([batch]), optim, tmp_path / str(official), accelerator, progress=False)
        logged = [entry["loss"] for entry in summary.loss_history]
        assert accelerator.backpropagated == pytest.approx([factor * loss for loss in logged], rel=1e-6)


def test_parity_one_loader_worker_reads_the_same_stream(tmp_path: Path) -> None:
    # The official training loader has 0 workers for all/task1/task2; with one loader process we
    # read the identical stream (worker 0 is seeded like the main process), only ahead of time.
    shards = _one_clip_shards(tmp_path, [800, 1600, 2400, 3200])
    stream = MixtureStream(
        [TrainSource("s", "p", None, shards, 1.0)],
        batch_size=4,
        crop_seconds=30,
        sample_rate=SAMPLE_RATE,
        seed=9,
        shuffle_buffer=4,
        sort_by_length=8,
    )
    plain = iter(stream)
    inline = [next(plain) for _ in range(5)]
    loader = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1))
    ahead = [next(loader) for _ in range(5)]
    assert [b["keys"] for b in ahead] == [b["keys"] for b in inline]


def test_parity_optimisation_and_evaluation_defaults() -> None:
    # task.py XaresLLMTrainConfig + TrainingArguments defaults; evaluation never crops (a 31 s
    # clip keeps all 31 s), run.py's --benchmark deterministic mode is on by default.
    from xares_fusion.config import SpeedSpec

    optim = OptimSpec()
    assert (
        optim.lr,
        optim.weight_decay,
        optim.warmup_steps,
        optim.max_grad_norm,
        optim.batch_size,
        optim.seed,
        optim.precision,
    ) == (1e-4, 0.01, 200, 1.0, 4, 42, "fp32")
    assert DataMixtureSpec().crop_seconds == 30.0 and SpeedSpec().deterministic is True
    audio, cropped = decode_audio(_flac(np.zeros(31 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE))
    assert not cropped and audio.shape == (31 * SAMPLE_RATE,)


@pytest.mark.parametrize("name", ["tone-tags", "mini-events"])
def test_parity_generated_map_tasks_have_one_column_per_label(name: str, isolated_homes: dict) -> None:
    # Columns beyond the labels present score AP 0 and cap mAP, so a generated multi-label task
    # must declare exactly the labels its references hold under the official rule.
    from xares_fusion.data.shards import require_shards
    from xares_fusion.metrics import normalize_text
    from xares_fusion.runner import _ensure_generated

    task = load_task(name)
    _ensure_generated(task, "eval")
    samples = iter_samples(require_shards(task.split("eval"), task.name, "eval"), task.key_for("eval"), SkipCounter())
    labels = {
        label
        for s in samples
        for text in s.texts
        for label in normalize_text(text, remove_punctuation=False).split(";")
    }
    assert len(labels) == task.metric_args["num_classes"], sorted(labels)
