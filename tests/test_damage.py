"""Issue 17, classes 1, 3 and 4: nothing served silently wrong, every damaged artefact named and
recomputed (or refused with the fix), every skipped sample counted with its shard and member.

The property-based tests feed random byte-level damage (truncate, flip, zero a range) to a shard,
a checkpoint, a score-cache entry and a feature-cache container, and check that only a
:class:`XaresError` or success comes out, that the damaged file is named, and that files written
before the damage are left as they were.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from accelerate import Accelerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shard_helpers import flac_bytes, write_shard

from xares_fusion.atomic import CorruptFileError, atomic_write_text, verified_load
from xares_fusion.config import OptimSpec, load_task
from xares_fusion.data.mixture import TrainSource, probe_source
from xares_fusion.data.samples import SkipCounter, iter_samples
from xares_fusion.errors import DataError, EncoderError, XaresError
from xares_fusion.evaluate import ALONE_SECONDS, generate_predictions
from xares_fusion.runner.evaluation import _cached_result, score_cache_key
from xares_fusion.train import COMPLETE_MARKER, FINAL_WEIGHTS, load_final, read_checkpoint, train

RATE = 16000

# -- builders -------------------------------------------------------------------------------------


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _sample(key: str, audio: np.ndarray, label: object = "low", fmt: str = "flac") -> dict:
    if fmt == "flac":
        data = flac_bytes(audio, RATE)
    else:  # float WAV: the one common format that can carry NaN samples
        buffer = io.BytesIO()
        sf.write(buffer, audio, RATE, format="WAV", subtype="FLOAT")
        data = buffer.getvalue()
    return {"__key__": key, fmt: data, "json": json.dumps({"label": label}).encode()}


def _task(tmp_path: Path, shard: Path, batch_size: int = 4) -> object:
    path = tmp_path / "damage-task.yaml"
    path.write_text(
        f"name: damage-task\nprompt: Classify.\nkey: label\nmetric: Accuracy\n"
        f"train: {{shards: [{shard}]}}\neval: {{shards: [{shard}], batch_size: {batch_size}, num_workers: 0}}\n"
        f"generation: {{max_new_tokens: 2}}\n"
    )
    return load_task(str(path))


class _NanOnLongClips(torch.nn.Module):
    """A log-mel encoder that overflows (NaN) on clips longer than ``limit`` samples."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.output_dim = inner, limit, inner.output_dim

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features, frames = self.inner(audio, mask)
        lengths = mask.sum(-1) if mask is not None else torch.full((audio.shape[0],), audio.shape[-1])
        return torch.where((lengths > self.limit)[:, None, None], torch.nan, features), frames


def _damage(data: bytes, kind: str, where: float, span: float) -> bytes:
    """``data`` truncated, with a range of bytes flipped, or with a range zeroed."""
    start = int(where * (len(data) - 1))
    end = min(len(data), start + 1 + int(span * 256))
    if kind == "truncate":
        return data[:start]
    damaged = bytearray(data)
    damaged[start:end] = bytes(b ^ 0xFF for b in damaged[start:end]) if kind == "flip" else bytes(end - start)
    return bytes(damaged)


DAMAGE = st.tuples(st.sampled_from(["truncate", "flip", "zero"]), st.floats(0, 1), st.floats(0, 1))
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- class 1: wrong numbers served silently ------------------------------------------------------


def test_a_shard_replaced_at_its_path_is_not_served_the_old_score(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "eval.tar", [_sample("a", _tone(0.5))])
    task = _task(tmp_path, shard)
    before = score_cache_key("run", task, None)
    write_shard(shard, [_sample("a", _tone(0.5, 880.0))])
    assert score_cache_key("run", task, None) != before
    assert score_cache_key("run", task, None, max_seconds=10.0) != score_cache_key("run", task, None)


def test_non_finite_audio_is_skipped_with_shard_and_member(tmp_path: Path) -> None:
    broken = _tone(0.5)
    broken[100] = np.nan
    shard = write_shard(
        tmp_path / "nan.tar", [_sample("good", _tone(0.5), fmt="wav"), _sample("bad", broken, fmt="wav")]
    )
    counter = SkipCounter()
    kept = [s.key for s in iter_samples([shard], "label", counter) if s.audio is not None]
    assert kept == ["good"]
    assert counter.as_dict()["reasons"] == {"non-finite audio": 1}
    assert counter.as_dict()["examples"] == {"non-finite audio": [f"{shard}:bad.wav"]}


def test_encoder_nan_rows_are_skipped_and_counted_in_evaluation(
    model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shard = write_shard(tmp_path / "eval.tar", [_sample("short", _tone(0.5)), _sample("long", _tone(1.5))])
    model.encoder = _NanOnLongClips(model.encoder, RATE)
    outcome = generate_predictions(model, _task(tmp_path, shard), Accelerator(cpu=True), progress=False)
    assert outcome.rows["key"].tolist() == ["short"]
    assert outcome.skips.as_dict()["reasons"] == {"non-finite encoder output": 1}
    assert outcome.skips.as_dict()["examples"]["non-finite encoder output"] == [f"{shard}:long"]


def test_encoder_nan_in_training_names_the_encoder_and_clips(model, tmp_path: Path) -> None:
    audio = torch.from_numpy(np.stack([_tone(2.0), np.pad(_tone(0.5), (0, int(1.5 * RATE)))]))
    mask = torch.zeros_like(audio, dtype=torch.long)
    mask[0], mask[1, : int(0.5 * RATE)] = 1, 1
    batch = {
        "audio": audio,
        "audio_mask": mask,
        "prompts": ["Classify."] * 2,
        "targets": ["low"] * 2,
        "tasks": ["tones"] * 2,
        "keys": ["clip-long", "clip-short"],
    }
    model.encoder = _NanOnLongClips(model.encoder, RATE)
    optim = OptimSpec(max_steps=1, warmup_steps=0, batch_size=2, save_steps=10, log_steps=1)
    with pytest.raises(EncoderError) as err:
        train(model, [batch], optim, tmp_path / "run", Accelerator(cpu=True), progress=False)
    message = str(err.value)
    assert "_NanOnLongClips" in message and "tones:clip-long" in message and "clip-short" not in message
    assert "Fix the encoder" in message


def test_an_empty_reference_is_a_row_and_is_reported(model, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shard = write_shard(tmp_path / "eval.tar", [_sample("a", _tone(0.5), label=["low", ""])])
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        outcome = generate_predictions(model, _task(tmp_path, shard), Accelerator(cpu=True), progress=False)
    assert outcome.rows["labels"].tolist() == ["low", ""]  # kept, as officially
    assert "1 reference text(s) are empty (e.g. clip a)" in caplog.text


# -- class 3: corrupt artefacts --------------------------------------------------------------------


@pytest.fixture()
def trained_run(model, tmp_path: Path) -> tuple[object, Path, list]:
    """Three steps of training with a checkpoint after each of the first two, and final weights."""
    audio = torch.from_numpy(np.stack([_tone(0.5), _tone(0.5, 2000.0)]))
    batches = [
        {
            "audio": audio,
            "audio_mask": torch.ones_like(audio, dtype=torch.long),
            "prompts": ["Classify."] * 2,
            "targets": ["low", "high"],
        }
    ] * 3
    optim = OptimSpec(max_steps=3, warmup_steps=0, batch_size=2, save_steps=1, log_steps=1, keep_checkpoints=3)
    run_dir = tmp_path / "run"
    train(model, lambda start: batches[start:], optim, run_dir, Accelerator(cpu=True), progress=False)
    return model, run_dir, [optim, batches]


def test_a_damaged_checkpoint_falls_back_to_the_one_before(trained_run, caplog: pytest.LogCaptureFixture) -> None:
    _, run_dir, _ = trained_run
    newest = run_dir / "checkpoints" / "step-00000002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # half-written
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        state = read_checkpoint(run_dir, Accelerator(cpu=True))
    assert state["step"] == 1
    assert f"checkpoint {newest} is damaged" in caplog.text and "falling back" in caplog.text


def test_a_damaged_final_weights_file_is_trained_again_from_the_last_checkpoint(
    trained_run, caplog: pytest.LogCaptureFixture
) -> None:
    model, run_dir, (optim, batches) = trained_run
    final = run_dir / FINAL_WEIGHTS
    good = final.read_bytes()
    final.write_bytes(_damage(good, "flip", 0.9, 0.1))
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        assert load_final(model, run_dir) is None
    assert str(final) in caplog.text and "training on from the last checkpoint" in caplog.text
    summary = train(model, lambda start: batches[start:], optim, run_dir, Accelerator(cpu=True), progress=False)
    assert summary.resumed_from == 2 and final.read_bytes() == good  # the same weights again
    assert load_final(model, run_dir) is not None


def test_a_damaged_final_weights_file_without_checkpoints_is_refused_with_the_fix(trained_run) -> None:
    model, run_dir, _ = trained_run
    for path in (run_dir / "checkpoints").iterdir():
        path.unlink()
    (run_dir / COMPLETE_MARKER).write_text("{not json")
    with pytest.raises(CorruptFileError) as err:
        load_final(model, run_dir)
    assert str(run_dir / COMPLETE_MARKER) in str(err.value) and "Fix: delete" in str(err.value)


def _score_entry(tmp_path: Path) -> tuple[Path, Path]:
    cache_file, predictions = tmp_path / "scores" / "t.json", tmp_path / "predictions_t.csv"
    entry = {"task": "t", "metric": "Accuracy", "score": 0.75, "cache_key": "k"}
    atomic_write_text(cache_file, json.dumps(entry), checksum=True)
    atomic_write_text(predictions, "index,key,predict,labels\n0,a,low,low\n", checksum=True)
    return cache_file, predictions


def test_a_corrupt_score_cache_entry_is_named_and_scored_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache_file, predictions = _score_entry(tmp_path)
    assert _cached_result(cache_file, predictions, "k").score == 0.75
    cache_file.write_text(cache_file.read_text().replace("0.75", "0.95"))  # a plausible, wrong number
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        assert _cached_result(cache_file, predictions, "k") is None
    assert f"score cache: {cache_file}" in caplog.text and "scoring the task again" in caplog.text


# -- class 4: data faults lose the place -----------------------------------------------------------


def test_a_truncated_tar_names_shard_and_member(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "cut.tar", [_sample(f"k{i}", _tone(0.5)) for i in range(4)])
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    counter = SkipCounter()
    list(iter_samples([shard], "label", counter))
    examples = counter.as_dict()["examples"]
    assert examples and all(place.startswith(f"{shard}:") for places in examples.values() for place in places)
    assert any("after member k" in place for places in examples.values() for place in places)


def test_an_untrainable_set_is_refused_when_planned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = write_shard(tmp_path / "bad.tar", [{"__key__": "x", "flac": b"not audio", "json": b'{"label": "a"}'}])
    good = write_shard(tmp_path / "good.tar", [_sample("y", _tone(0.5))])
    with pytest.raises(DataError) as err:
        probe_source(TrainSource("broken", "p", "label", [bad, bad], 1.0), RATE)
    assert f"{bad}: undecodable audio: 1 (e.g. {bad}:x.flac)" in str(err.value) and "Fix:" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        probe_source(TrainSource("partly", "p", "label", [bad, good], 1.0), RATE)
    assert f"shard {bad} gives no usable sample" in caplog.text


def test_long_eval_clips_go_alone_and_a_cap_cuts_them(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    long = ALONE_SECONDS + 1
    shard = write_shard(
        tmp_path / "eval.tar", [_sample("long", _tone(long))] + [_sample(f"s{i}", _tone(0.5)) for i in range(3)]
    )
    seen: list[tuple[int, int]] = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda audio, *a: seen.append(tuple(audio.shape)) or encode(audio, *a))
    task = _task(tmp_path, shard, batch_size=4)
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        generate_predictions(model, task, Accelerator(cpu=True), progress=False)
    assert seen == [(1, int(long * RATE)), (3, RATE // 2)]
    assert caplog.text.count(f"clips up to {long:.0f} s long") == 1
    seen.clear()
    generate_predictions(model, task, Accelerator(cpu=True), progress=False, max_seconds=2.0)
    assert seen == [(4, 2 * RATE)]


def test_the_eval_length_cap_is_a_recorded_departure() -> None:
    from xares_fusion.config import RecipeConfig
    from xares_fusion.parity import recipe_departures

    recipe = RecipeConfig(name="r")
    assert not any("eval_max_seconds" in d for d in recipe_departures(recipe))
    recipe.data.eval_max_seconds = 60.0
    assert "data.eval_max_seconds=60.0: evaluation clips cut to their first 60 s (official: whole clips)" in (
        recipe_departures(recipe)
    )


# -- random byte-level damage ---------------------------------------------------------------------


@FEW
@given(damage=DAMAGE)
def test_random_damage_to_a_shard_is_counted_and_named(tmp_path_factory, damage) -> None:
    root = tmp_path_factory.mktemp("shard")
    shard = write_shard(root / "s.tar", [_sample(f"k{i}", _tone(0.2 + 0.1 * i)) for i in range(3)])
    shard.write_bytes(_damage(shard.read_bytes(), *damage))
    counter = SkipCounter()
    samples = list(iter_samples([shard], "label", counter))  # never raises
    places = [p for ps in counter.as_dict()["examples"].values() for p in ps]
    assert len(places) >= min(len(counter.reasons), 1) and all(p.startswith(f"{shard}:") for p in places)
    assert len([s for s in samples if s.audio is not None]) <= 3


@FEW
@given(damage=DAMAGE)
def test_random_damage_to_the_last_checkpoint_falls_back(trained_run, caplog, damage) -> None:
    _, run_dir, _ = trained_run
    newest, older = (
        sorted((run_dir / "checkpoints").glob("step-*.pt"))[-1],
        run_dir / "checkpoints" / "step-00000001.pt",
    )
    intact, older_bytes = newest.read_bytes(), older.read_bytes()
    damaged = _damage(intact, *damage)
    newest.write_bytes(damaged)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        state = read_checkpoint(run_dir, Accelerator(cpu=True))
    assert state["step"] == (2 if damaged == intact else 1)
    assert damaged == intact or str(newest) in caplog.text
    assert older.read_bytes() == older_bytes
    newest.write_bytes(intact)


@FEW
@given(damage=DAMAGE)
def test_random_damage_to_a_score_cache_entry_is_named(tmp_path_factory, damage) -> None:
    root = tmp_path_factory.mktemp("scores")
    cache_file, predictions = _score_entry(root)
    other, _ = _score_entry(root / "other")
    other_bytes, intact = other.read_bytes(), cache_file.read_bytes()
    cache_file.write_bytes(_damage(intact, *damage))
    try:
        cached = verified_load(cache_file, json.loads)
    except XaresError as err:
        assert str(cache_file) in str(err)
        assert _cached_result(cache_file, predictions, "k") is None
    else:
        assert cached["score"] == 0.75  # the damage changed nothing
    assert other.read_bytes() == other_bytes


@FEW
@given(damage=DAMAGE, part=st.sampled_from([".bin", ".idx"]))
def test_random_damage_to_a_feature_cache_container_is_named(tmp_path_factory, damage, part) -> None:
    from xares_fusion.encoders import build_encoder
    from xares_fusion.feature_cache import FeatureCache

    root = tmp_path_factory.mktemp("features")
    shard = write_shard(root / "s.tar", [_sample("a", _tone(0.5)), _sample("b", _tone(0.3, 880.0))])
    encoder = build_encoder("logmel")
    clips = [s.clip for s in iter_samples([shard], "label", SkipCounter())]
    audio = torch.from_numpy(np.stack([_tone(0.5), np.pad(_tone(0.3, 880.0), (0, RATE // 5))]))
    mask = torch.ones_like(audio, dtype=torch.long)
    mask[1, int(0.3 * RATE) :] = 0
    reference = FeatureCache(root / "cache", dtype="fp32").encode(encoder, audio, mask, clips).features
    container = next((root / "cache").rglob(f"*{part}"))
    container.write_bytes(_damage(container.read_bytes(), *damage))
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("xares_fusion").addHandler(handler)
    try:
        cache = FeatureCache(root / "cache", dtype="fp32")
        features = cache.encode(encoder, audio, mask, clips).features  # a miss is recomputed, never wrong
    finally:
        logging.getLogger("xares_fusion").removeHandler(handler)
    assert torch.equal(features, reference)
    # A cut index loses whole entries (their data reads as not yet indexed, as while another writer
    # appends): recomputed without a warning. Any other damage is named.
    cut_index = part == ".idx" and damage[0] == "truncate"
    assert cut_index or cache.hits == 2 or any(str(container) in r for r in records)
