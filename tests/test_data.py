"""Data: shard resolution, label keys, decoding/resampling, skip counting, mixture rule, batching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from shard_helpers import flac_bytes as _flac
from shard_helpers import write_shard as _shard

from xares_fusion.config import DataSpec
from xares_fusion.constants import SAMPLE_RATE
from xares_fusion.data.audio import decode_audio, random_crop
from xares_fusion.data.batching import pad_audio
from xares_fusion.data.generators import GENERATORS, DataGenerator
from xares_fusion.data.mixture import MixtureStream, TrainSource, mixture_probabilities
from xares_fusion.data.samples import SkipCounter, iter_samples, texts_from_metadata
from xares_fusion.data.shard_writer import MARKER, build_once
from xares_fusion.data.shards import MissingDataError, require_shards, resolve_shards


def test_brace_expansion_and_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XARES_FUSION_DATA_HOME", str(tmp_path))
    spec = DataSpec(shards=["ESC-50/train/esc50_fold_{1..4}_0000000.tar.gz"], repo_id="mispeech/xares_llm_data")
    resolved = resolve_shards(spec)
    assert [p.name for p in resolved.paths] == [f"esc50_fold_{i}_0000000.tar.gz" for i in range(1, 5)]
    assert resolved.base == tmp_path / "mispeech/xares_llm_data"
    with pytest.raises(MissingDataError) as info:
        require_shards(spec, "esc-50", "train")
    message = str(info.value)
    assert "4 of 4 shard files are missing" in message and "esc50_fold_1_0000000.tar.gz" in message
    assert "mispeech/xares_llm_data" in message and "Fix:" in message


def test_official_data_home_variable_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XARES_FUSION_DATA_HOME", raising=False)
    monkeypatch.setenv("XARES_DATA_HOME", str(tmp_path))
    assert resolve_shards(DataSpec(shards=["a.tar"], repo_id="r/x")).base == tmp_path / "r/x"


def test_glob_and_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        (tmp_path / f"s{i}.tar").write_bytes(b"")
    assert len(resolve_shards(DataSpec(shards=["s*.tar"])).paths) == 3
    assert resolve_shards(DataSpec(shards=["s{0..1}.tar", "s1.tar"])).paths == [
        tmp_path / "s0.tar",
        tmp_path / "s1.tar",
    ]


def test_key_fallbacks() -> None:
    assert texts_from_metadata({"labels": "dog", "text": "t"}, "label;labels") == ["dog"]
    assert texts_from_metadata({"caption": "a dog barks"}, "label") == ["a dog barks"]  # default keys
    assert texts_from_metadata({"captions": ["a", "b"], "caption": "c"}, None) == ["a", "b"]
    assert texts_from_metadata({"num_speakers": 3}, "num_speakers") == ["3"]
    assert texts_from_metadata({"label": ""}, "label") == [""]  # an empty label is a row
    assert texts_from_metadata({"spoof": True}, "spoof") == ["True"]


def test_decode_resamples_to_16k_mono() -> None:
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32) * 0.5
    audio, cropped = decode_audio(_flac(stereo, 8000))
    assert not cropped
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.shape[0] == SAMPLE_RATE
    assert np.abs(audio).max() == pytest.approx(0.25, abs=0.02)  # mean of the channels
    assert random_crop(np.zeros(20), 8, np.random.default_rng(0)).shape == (8,)
    assert random_crop(np.zeros(5), 8, np.random.default_rng(0)).shape == (5,)


def test_bad_samples_are_skipped_and_counted(tmp_path: Path) -> None:
    good = _flac(np.zeros(1600, dtype=np.float32), SAMPLE_RATE)
    path = _shard(
        tmp_path / "mixed.tar",
        [
            {"__key__": "ok1", "flac": good, "json": json.dumps({"captions": ["one", "two"]}).encode()},
            {"__key__": "broken", "flac": b"not audio at all", "json": json.dumps({"text": "x"}).encode()},
            {"__key__": "nolabel", "flac": good, "json": json.dumps({"other": "x"}).encode()},
            {
                "__key__": "ok2",
                "wav": _flac(np.zeros(800, dtype=np.float32), SAMPLE_RATE),
                "json": b'{"text": "three"}',
            },
        ],
    )
    counter = SkipCounter()
    samples = list(iter_samples([path], "label", counter))
    decoded = [s for s in samples if s.audio is not None]
    assert [s.key for s in decoded] == ["ok1", "ok2"]
    assert decoded[0].texts == ["one", "two"]  # one eval row per reference
    assert counter.seen == 4 and counter.skipped == 2
    assert counter.reasons == {"undecodable audio": 1, "no label under 'label' or captions/caption/text": 1}


def test_process_shares_cover_every_sample_once(tmp_path: Path) -> None:
    good = _flac(np.zeros(1600, dtype=np.float32), SAMPLE_RATE)
    path = _shard(tmp_path / "s.tar", [{"__key__": f"k{i}", "flac": good, "json": b'{"text": "t"}'} for i in range(7)])
    owned = []
    for rank in range(2):
        counter = SkipCounter()
        samples = list(iter_samples([path], None, counter, owns=lambda p, r=rank: p % 2 == r))
        assert [s.index for s in samples] == list(range(7))  # every process sees every row, in order
        owned += [s.index for s in samples if s.audio is not None]
    assert sorted(owned) == list(range(7))


def test_parity_mixture_rule_prob_or_shard_share() -> None:
    # A: prob 0.5 given; B (3 shards) and C (1 shard) fall back to their share of all 8 shards.
    probs = mixture_probabilities([0.5, None, None], [4, 3, 1])
    raw = [0.5, 3 / 8, 1 / 8]
    assert probs == pytest.approx([r / sum(raw) for r in raw])


def test_mixture_stream_samples_by_probability_and_crops(synthetic_root: Path) -> None:
    sources = [
        TrainSource("tones", "p1", "label", sorted((synthetic_root / "tones").glob("train-*.tar")), 0.8),
        TrainSource(
            "tone-captions", "p2", "captions", sorted((synthetic_root / "tone-captions").glob("train-*.tar")), 0.2
        ),
    ]
    # Each draw brings one batch (4) of a dataset, so 100 batches are 100 draws.
    stream = iter(
        MixtureStream(sources, batch_size=4, crop_seconds=0.5, sample_rate=SAMPLE_RATE, seed=1, shuffle_buffer=8)
    )
    tasks, lengths = [], []
    for _ in range(100):
        batch = next(stream)
        tasks += batch["tasks"]
        lengths += batch["audio_mask"].sum(-1).tolist()
        assert batch["audio"].shape[0] == 4 and batch["audio"].shape == batch["audio_mask"].shape
    share = tasks.count("tones") / len(tasks)
    assert 0.7 < share < 0.9
    assert max(lengths) <= 8000  # cropped to 0.5 s


def test_pad_audio_masks() -> None:
    audio, mask = pad_audio([np.ones(3, dtype=np.float32), np.ones(5, dtype=np.float32)])
    assert audio.shape == (2, 5) and mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert torch.equal(audio * mask, audio)


def test_prefetch_keeps_order_raises_where_it_failed_and_stops_early() -> None:
    from xares_fusion.data.prefetch import prefetch

    assert list(prefetch(iter(range(50)), depth=4)) == list(range(50))
    assert list(prefetch(iter(range(5)), depth=0)) == list(range(5))

    def failing():
        yield 1
        raise ValueError("bad clip")

    got = []
    with pytest.raises(ValueError, match="bad clip"):
        for item in prefetch(failing(), depth=2):
            got.append(item)
    assert got == [1]
    pulled = []

    def counted():
        for i in range(1000):
            pulled.append(i)
            yield i

    for item in prefetch(counted(), depth=3):
        if item == 5:
            break
    assert len(pulled) <= 5 + 1 + 3 + 1  # the consumer's items, the queue and one in the producer's hand


def test_generator_registry_resolves_every_name_and_names_the_known_ones() -> None:
    from dataclasses import is_dataclass

    from xares_fusion.registry import RegistryError

    assert GENERATORS.names() == ["mini", "synthetic"]
    for name in GENERATORS.names():
        generator = GENERATORS.get(name)
        assert isinstance(generator, DataGenerator) and callable(generator.make) and is_dataclass(generator.sizes)
        assert generator.summary
    with pytest.raises(RegistryError, match=r"unknown data generator 'minii'.*'mini'.*\['mini', 'synthetic'\]"):
        GENERATORS.get("minii")


def test_build_once_reuses_a_current_build_and_replaces_a_stale_one(tmp_path: Path) -> None:
    root = tmp_path / "suite"
    builds = []

    def build(directory: Path) -> None:
        builds.append(directory)
        assert directory != root and not root.exists()  # staged beside root, renamed in when complete
        (directory / "shard.txt").write_text(str(len(builds)))

    assert build_once(root, {"version": 1}, build) == root
    assert json.loads((root / MARKER).read_text()) == {"version": 1} and (root / "shard.txt").read_text() == "1"
    build_once(root, {"version": 1}, build)
    assert len(builds) == 1  # same stamp: reused
    build_once(root, {"version": 2}, build)
    build_once(root, {"version": 2}, build, force=True)
    assert len(builds) == 3 and (root / "shard.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["suite"]  # no staging directory left behind

    def failing(directory: Path) -> None:
        (directory / "half.txt").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(root, {"version": 3}, failing)
    assert not root.exists() and list(tmp_path.iterdir()) == []  # nothing that looks complete
