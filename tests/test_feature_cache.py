"""The frozen-encoder feature cache: an fp32 cache reproduces the uncached run; keys separate
encoders, precision contexts and shard contents; containers survive concurrent writers and
damage; crops are served only where exact; `cache-features` fills what `run` reads."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from xares_fusion import feature_cache
from xares_fusion.cli import main
from xares_fusion.data.audio import decode_audio
from xares_fusion.data.batching import pad_audio
from xares_fusion.data.samples import decode_clip
from xares_fusion.data.shards import ClipRef
from xares_fusion.encoders import build_encoder
from xares_fusion.feature_cache import FeatureCache, PrecisionContext, context_id, encoder_id

RECIPE = """
name: cache-smoke
model:
  encoder: logmel
  llm: {name_or_path: toy-llama}
data:
  mixture: [{task: tones}, {task: tone-tags}]
  shuffle_buffer: 16
optim:
  max_steps: 30
  lr: 3.0e-3
  warmup_steps: 5
  batch_size: 8
  save_steps: 30
  log_steps: 5
"""


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_fp32_cache_reproduces_the_uncached_run(tmp_path: Path, synthetic_root: Path) -> None:
    """fp32: filling and reading the cache give the plain run's numbers. fp16: the run that fills
    the cache gives the numbers of the run that reads it (every row rounded, cold or warm)."""
    recipe = tmp_path / "cache-smoke.yaml"
    recipe.write_text(RECIPE)

    def run(name: str, *cache: str) -> None:
        common = [str(recipe), "synthetic", "--limit", "16", "--no-progress", "--output-dir", str(tmp_path / name)]
        assert main(["run", "logmel", *common, *cache]) == 0

    torch.use_deterministic_algorithms(True)
    try:
        run("plain")
        for dtype in ("fp32", "fp16"):
            run(f"cached-{dtype}", "--feature-cache", "readwrite", "--cache-dtype", dtype)
            run(f"warm-{dtype}", "--feature-cache", "read", "--cache-dtype", dtype)
    finally:
        torch.use_deterministic_algorithms(False)
    plain = _history(tmp_path / "plain")
    assert [h["step"] for h in plain] == list(range(5, 31, 5))
    runs = ("plain", "cached-fp32", "warm-fp32", "cached-fp16", "warm-fp16")
    records = {run: json.loads((tmp_path / run / "result.json").read_text()) for run in runs}
    scores = {run: [t["score"] for t in records[run]["tasks"]] for run in runs}
    for run in ("cached-fp32", "warm-fp32"):  # filling the cache, then served from it
        assert _history(tmp_path / run) == plain
        assert scores[run] == scores["plain"]
    assert _history(tmp_path / "warm-fp16") == _history(tmp_path / "cached-fp16") != plain
    assert scores["warm-fp16"] == scores["cached-fp16"]
    assert records["plain"]["feature_cache"] is None
    assert records["cached-fp32"]["feature_cache"]["misses"] > 0
    warm = records["warm-fp32"]["feature_cache"]
    assert warm["mode"] == "read" and warm["dtype"] == "fp32" and warm["misses"] == 0 and warm["hits"] > 0
    assert warm["uncached"] == 0  # synthetic clips are never cropped
    assert records["warm-fp16"]["feature_cache"]["misses"] == 0


def _clips(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    audio = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for i, n in enumerate(lengths):
        audio[i, :n] = 0.1 * torch.randn(n, generator=gen)
        mask[i, :n] = 1
    return audio, mask


def _shard(path: Path, content: bytes = b"shard bytes") -> str:
    """A stand-in shard file: the cache only hashes its bytes."""
    path.write_bytes(content)
    return str(path)


def test_cache_keys_separate_settings_and_a_warm_cache_serves_every_clip(tmp_path: Path) -> None:
    a, b = build_encoder("logmel", {"n_mels": 16}), build_encoder("logmel", {"n_mels": 16, "pool": 2})
    assert encoder_id(a, "fp16") == encoder_id(build_encoder("logmel", {"n_mels": 16}), "fp16")
    assert len({encoder_id(a, "fp16"), encoder_id(b, "fp16"), encoder_id(a, "fp32")}) == 3
    audio, mask = _clips([16000, 32000, 8000])
    shard = _shard(tmp_path / "s.tar")
    refs = [ClipRef(shard, "k0"), ClipRef(shard, "k1"), ClipRef(shard, "k2")]
    cache = FeatureCache(tmp_path / "cache", "readwrite", "fp16")
    cold = cache.encode(a, audio, mask, [refs[0], refs[1], None])
    assert (cache.hits, cache.misses, cache.uncached) == (0, 2, 1)  # the unnamed row is not stored
    (container,) = (tmp_path / "cache").rglob("*.idx")
    assert len(container.read_text().splitlines()) == 2 and len(list((tmp_path / "cache").rglob("*.bin"))) == 1
    warm = cache.encode(a, audio, mask, refs)
    assert (cache.hits, cache.misses, cache.uncached) == (2, 3, 1) and len(container.read_text().splitlines()) == 3
    direct, direct_mask = a(audio, mask)
    assert torch.equal(warm.mask, direct_mask) and torch.equal(cold.mask, direct_mask)
    direct = direct * direct_mask[..., None]
    # Every row in the stored dtype, read or computed: the cold run saw the warm run's numbers.
    torch.testing.assert_close(warm.features, direct.half().float(), rtol=0, atol=0)
    torch.testing.assert_close(cold.features, warm.features, rtol=0, atol=0)
    reader = FeatureCache(tmp_path / "cache", "read", "fp16")
    reader.encode(b, audio, mask, refs)  # another setting: all misses, nothing written
    assert reader.misses == 3 and len(container.read_text().splitlines()) == 3
    served = reader.lookup(a, refs[1], "cpu")  # by shard and key alone, before any decoding
    torch.testing.assert_close(served, direct[1, :201].half().float(), rtol=0, atol=0)
    assert reader.hits == 1 and reader.lookup(a, ClipRef(shard, "k9"), "cpu") is None


def test_keys_separate_precision_tf32_device_and_shard_content(tmp_path: Path) -> None:
    encoder = build_encoder("logmel", {"n_mels": 16})
    identity = encoder_id(encoder, "fp32")
    contexts = [
        PrecisionContext("fp32", False, "cpu"),
        PrecisionContext("bf16", False, "cpu"),
        PrecisionContext("fp32", True, "cpu"),
        PrecisionContext("fp32", False, "cuda"),
    ]
    assert len({context_id(identity, c) for c in contexts}) == 4
    audio, mask = _clips([16000])
    shard = tmp_path / "s.tar"
    ref = ClipRef(_shard(shard), "k")
    FeatureCache(tmp_path / "c", "readwrite", "fp32").encode(encoder, audio, mask, [ref])
    assert FeatureCache(tmp_path / "c", "read", "fp32").contains(encoder, ref, "cpu")
    assert not FeatureCache(tmp_path / "c", "read", "fp32", precision="bf16").contains(encoder, ref, "cpu")
    assert not FeatureCache(tmp_path / "c", "read", "fp32").contains(encoder, ref, "cuda")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        assert not FeatureCache(tmp_path / "c", "read", "fp32").contains(encoder, ref, "cpu")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    _shard(shard, b"another shard at the same path")
    reader = FeatureCache(tmp_path / "c", "read", "fp32")
    reader.encode(encoder, audio, mask, [ref])
    assert (reader.hits, reader.misses) == (0, 1)


def _clip_audio(k: int) -> torch.Tensor:
    return torch.sin(torch.arange(16000 + 1600 * k) * (k + 1) / 50.0)


def _write_clips(root: Path, shard: str, first: int) -> None:
    """One writer process: clips first, first + 2, ... of one shard, four to an append. Each
    digest is slowed down, so that the two writers' appends overlap in time."""
    torch.set_num_threads(1)
    digest = feature_cache._digest
    feature_cache._digest = lambda payload: time.sleep(0.02) or digest(payload)  # this forked process only
    encoder = build_encoder("logmel", {"n_mels": 8})
    cache = FeatureCache(root, "readwrite", "fp32")
    for start in range(first, 40, 8):
        keys = range(start, start + 8, 2)
        audio, mask = pad_audio([_clip_audio(k).numpy() for k in keys])
        cache.encode(encoder, audio, mask, [ClipRef(shard, f"clip{k}") for k in keys])


def test_two_concurrent_writers_leave_every_entry_readable_and_equal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shard = _shard(tmp_path / "s.tar")
    # Forked: both writers start at once (a fresh interpreter spends seconds importing).
    fork = multiprocessing.get_context("fork")
    writers = [fork.Process(target=_write_clips, args=(tmp_path / "c", shard, first)) for first in (0, 1)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    encoder = build_encoder("logmel", {"n_mels": 8})
    reader = FeatureCache(tmp_path / "c", "read", "fp32")
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        for k in range(40):
            expected, _ = encoder(_clip_audio(k)[None], None)
            served = reader.lookup(encoder, ClipRef(shard, f"clip{k}"), "cpu")
            torch.testing.assert_close(served, expected[0], rtol=0, atol=0)
    assert reader.hits == 40 and not caplog.records
    (index,) = (tmp_path / "c").rglob("*.idx")
    lines = [json.loads(line) for line in index.read_text().splitlines()]  # every line whole
    assert len(lines) == 40 and {e["key"] for e in lines} == {f"clip{k}" for k in range(40)}
    assert sum(e["nbytes"] for e in lines) == index.with_suffix(".bin").stat().st_size  # no bytes lost or shared


def test_damaged_containers_are_reported_once_and_recomputed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    encoder = build_encoder("logmel", {"n_mels": 16})
    audio, mask = _clips([16000, 24000, 8000])
    direct, direct_mask = encoder(audio, mask)
    direct = direct * direct_mask[..., None]
    shards = {name: _shard(tmp_path / f"{name}.tar", name.encode()) for name in ("flipped", "cut", "garbled")}
    refs = {name: [ClipRef(shard, f"k{i}") for i in range(3)] for name, shard in shards.items()}
    writer = FeatureCache(tmp_path / "c", "readwrite", "fp32")
    for name in shards:
        writer.encode(encoder, audio, mask, refs[name])
    containers = {name: writer._container(encoder, refs[name][0], "cpu") for name in shards}
    flipped = bytearray(containers["flipped"].data.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # inside the second clip
    containers["flipped"].data.write_bytes(bytes(flipped))
    cut = containers["cut"].data
    cut.write_bytes(cut.read_bytes()[:-100])  # the last clip loses its tail
    with open(containers["garbled"].index, "ab") as index:
        index.write(b'{"key": "k1", "offset": \xff\n')  # a line cut short, with a bad byte
    cache = FeatureCache(tmp_path / "c", "readwrite", "fp32")
    with caplog.at_level(logging.WARNING, logger="xares_fusion"):
        for _ in range(2):  # the second pass reads what the first one appended again
            for name in shards:
                out = cache.encode(encoder, audio, mask, refs[name])
                assert torch.equal(out.mask, direct_mask)
                torch.testing.assert_close(out.features, direct, rtol=0, atol=0)
    assert (cache.hits, cache.misses) == (16, 2)  # pass 1: flipped k1 and cut k2 recomputed; pass 2: all hits
    warned = [r.getMessage() for r in caplog.records]
    expected = {
        containers["flipped"].data: "entry 'k1' does not match its digest (damaged)",
        containers["cut"].data: "entry 'k2' lies past the end of the data file (truncated)",
        containers["garbled"].index: "an unreadable index line",
    }
    assert len(warned) == 3  # once per damaged file, whatever the number of reads
    for path, problem in expected.items():
        assert any(str(path) in message and problem in message for message in warned), (path, warned)


class FrameLocal(torch.nn.Module):
    """A frame-local encoder: frame j is a linear map of samples [160 j, 160 (j + 1)) alone."""

    crop_hop = 160
    frame_rate = 100.0
    output_dim = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(160, 4)

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        frames = self.proj(audio[:, : audio.shape[1] // 160 * 160].unflatten(1, (-1, 160)))
        if audio_attention_mask is None:
            return frames, None
        valid = audio_attention_mask.sum(-1) // 160
        return frames, (torch.arange(frames.shape[1]) < valid[:, None]).long()


def test_crops_are_served_from_whole_clips_only_where_exact(tmp_path: Path) -> None:
    audio, mask = _clips([32000])
    shard = _shard(tmp_path / "s.tar")
    whole = ClipRef(shard, "k")
    local, logmel = FrameLocal(), build_encoder("logmel", {"n_mels": 16})
    cache = FeatureCache(tmp_path / "c", "readwrite", "fp32")
    for encoder in (local, logmel):
        cache.encode(encoder, audio, mask, [whole])  # long clips are cached whole
    crop = audio[:, 4800:20800]
    aligned, unaligned = ClipRef(shard, "k", (4800, 16000)), ClipRef(shard, "k", (4810, 16000))
    served = cache.encode(local, crop, None, [aligned])
    assert (cache.hits, cache.misses, cache.uncached) == (1, 2, 0)
    torch.testing.assert_close(served.features, local(crop)[0], rtol=0, atol=0)  # exactly the crop's features
    cache.encode(local, audio[:, 4810:20810], None, [unaligned])  # off the frame grid
    cache.encode(logmel, crop, None, [aligned])  # overlapping windows: no encoder declaration
    assert (cache.hits, cache.misses, cache.uncached) == (1, 2, 2)
    assert len((tmp_path / "c").rglob("*.idx").__next__().read_text().splitlines()) == 1  # crops never stored


def _wav(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_training_crops_carry_their_span_and_decode_as_before() -> None:
    whole = ClipRef("s.tar", "k")
    clip = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 3).astype(np.float32)
    for seed in range(3):
        expected, cropped = decode_audio(_wav(clip, 16000), 16000, 1.0, np.random.default_rng(seed))
        audio, ref = decode_clip(_wav(clip, 16000), 16000, 1.0, np.random.default_rng(seed), whole)
        assert cropped and np.array_equal(audio, expected)  # the same crop as the official order
        start, length = ref.span
        assert length == 16000 and np.array_equal(audio, clip[start : start + length])
    audio, ref = decode_clip(_wav(clip[:8000], 16000), 16000, 1.0, np.random.default_rng(0), whole)
    assert ref == whole and len(audio) == 8000  # shorter than the crop: the whole clip
    resampled, _ = decode_audio(_wav(clip, 8000), 16000, 1.0, np.random.default_rng(0))
    audio, ref = decode_clip(_wav(clip, 8000), 16000, 1.0, np.random.default_rng(0), whole)
    assert ref is None and np.array_equal(audio, resampled)  # cropped before resampling: no slice


CACHE_RECIPE = RECIPE.replace("max_steps: 30", "max_steps: 4").replace("batch_size: 8", "batch_size: 4")


def test_cache_features_fills_what_a_read_run_serves(tmp_path: Path, synthetic_root: Path) -> None:
    recipe = tmp_path / "cache-features.yaml"
    recipe.write_text(CACHE_RECIPE)
    encoder_args = ["--encoder-args", '{"n_mels": 40}']  # a setting no other test caches
    fill = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "xares_fusion.cli"]
    fill += ["cache-features", "logmel", "synthetic", *encoder_args, "--recipe", str(recipe)]
    fill += ["--set", "speed.cache_dtype=fp32"]
    proc = subprocess.run(
        [*fill, "--no-progress"],
        env={**os.environ, "ACCELERATE_USE_CPU": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MiB in" in proc.stdout and " 0 were cached already" in proc.stdout
    stored = int(proc.stdout.split("feature cache: ")[1].split()[0])
    assert stored > 0
    common = [
        "logmel",
        str(recipe),
        "synthetic",
        *encoder_args,
        "--limit",
        "8",
        "--cache-dtype",
        "fp32",
        "--no-progress",
    ]
    torch.use_deterministic_algorithms(True)
    try:
        assert main(["run", *common, "--output-dir", str(tmp_path / "plain")]) == 0
        assert main(["run", *common, "--output-dir", str(tmp_path / "warm"), "--feature-cache", "read"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    record = json.loads((tmp_path / "warm" / "result.json").read_text())["feature_cache"]
    eval_clips = 0
    for task in ("tones", "tone-tags", "tone-captions"):
        plain = pd.read_csv(tmp_path / "plain" / f"predictions_{task}.csv")
        warm = pd.read_csv(tmp_path / "warm" / f"predictions_{task}.csv")
        pd.testing.assert_frame_equal(plain, warm)
        eval_clips += warm["index"].nunique()
    # Every training row (4 steps x 4) and every eval clip is served; nothing is computed.
    assert record == {"mode": "read", "dtype": "fp32", "hits": 16 + eval_clips, "misses": 0, "uncached": 0}
