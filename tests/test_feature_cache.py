"""The frozen-encoder feature cache: an fp32 cache reproduces the uncached run; keys separate
encoders and settings; a warm cache serves every clip."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xares_fusion.cli import main
from xares_fusion.encoders import build_encoder
from xares_fusion.feature_cache import FeatureCache, encoder_id

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
    torch.use_deterministic_algorithms(True)
    try:
        recipe = tmp_path / "cache-smoke.yaml"
        recipe.write_text(RECIPE)
        common = [str(recipe), "synthetic", "--limit", "16", "--no-progress"]
        assert main(["run", "logmel", *common, "--output-dir", str(tmp_path / "plain")]) == 0
        assert (
            main(
                [
                    "run",
                    "logmel",
                    *common,
                    "--output-dir",
                    str(tmp_path / "cached"),
                    "--feature-cache",
                    "readwrite",
                    "--cache-dtype",
                    "fp32",
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "run",
                    "logmel",
                    *common,
                    "--output-dir",
                    str(tmp_path / "warm"),
                    "--feature-cache",
                    "read",
                    "--cache-dtype",
                    "fp32",
                ]
            )
            == 0
        )
    finally:
        torch.use_deterministic_algorithms(False)
    plain = _history(tmp_path / "plain")
    assert [h["step"] for h in plain] == list(range(5, 31, 5))
    records = {run: json.loads((tmp_path / run / "result.json").read_text()) for run in ("plain", "cached", "warm")}
    for run in ("cached", "warm"):  # filling the cache, then served from it
        assert _history(tmp_path / run) == plain
        assert [t["score"] for t in records[run]["tasks"]] == [t["score"] for t in records["plain"]["tasks"]]
    assert records["plain"]["feature_cache"] is None
    assert records["cached"]["feature_cache"]["misses"] > 0
    warm = records["warm"]["feature_cache"]
    assert warm["mode"] == "read" and warm["dtype"] == "fp32" and warm["misses"] == 0 and warm["hits"] > 0


def test_cache_keys_separate_settings_and_a_warm_cache_serves_every_clip(tmp_path: Path) -> None:
    a, b = build_encoder("logmel", {"n_mels": 16}), build_encoder("logmel", {"n_mels": 16, "pool": 2})
    assert encoder_id(a, "fp16") == encoder_id(build_encoder("logmel", {"n_mels": 16}), "fp16")
    assert len({encoder_id(a, "fp16"), encoder_id(b, "fp16"), encoder_id(a, "fp32")}) == 3
    gen = torch.Generator().manual_seed(0)
    audio = torch.zeros(3, 32000)
    mask = torch.zeros(3, 32000, dtype=torch.long)
    for i, n in enumerate([16000, 32000, 8000]):
        audio[i, :n] = 0.1 * torch.randn(n, generator=gen)
        mask[i, :n] = 1
    cache = FeatureCache(tmp_path, "readwrite", "fp16")
    cold = cache.encode(a, audio, mask, cacheable=[True, True, False])
    assert (cache.hits, cache.misses) == (0, 3)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2  # the crop is not stored
    warm = cache.encode(a, audio, mask)  # every row cacheable now
    assert (cache.hits, cache.misses) == (2, 4) and len(list(tmp_path.rglob("*.safetensors"))) == 3
    direct, direct_mask = a(audio, mask)
    assert torch.equal(warm.mask, direct_mask) and torch.equal(cold.mask, direct_mask)
    direct = direct * direct_mask[..., None]
    torch.testing.assert_close(warm.features[:2], direct[:2].half().float(), rtol=0, atol=0)  # served, fp16
    torch.testing.assert_close(warm.features[2, :51], direct[2, :51], rtol=0, atol=0)  # computed
    reader = FeatureCache(tmp_path, "read", "fp16")
    reader.encode(b, audio, mask)  # another setting: all misses, nothing written
    assert reader.misses == 3 and len(list(tmp_path.rglob("*.safetensors"))) == 3


def test_bench_measures_every_mode(synthetic_root: Path) -> None:
    """The path of `xares-fusion bench` (its figures come from running the command, not from here)."""
    from xares_fusion.bench import format_bench, run_bench

    results = run_bench("logmel", recipe="synthetic", task="tones", steps=2, rows=4, eval_batch=4)
    assert [m.mode for m in results] == ["parity", "batched eval", "batched eval + fp32 cache", "warm fp16 cache"]
    parity, batched, batched_cached, cached = results
    assert parity.train_steps_per_s > 0 and parity.eval_rows_per_s > 0
    assert batched.train_steps_per_s is None and batched.eval_rows_per_s > 0
    assert batched.same_answers == "4/4"  # the parity weights: batching changes no answer
    assert batched_cached.train_steps_per_s is None and batched_cached.same_answers == "4/4"  # nor does the cache
    assert cached.train_steps_per_s > 0 and cached.eval_rows_per_s > 0 and cached.same_answers is None
    table = format_bench(results, "cpu").splitlines()
    assert table[0] == "device: cpu" and table[2].split()[0] == "parity" and table[2].split()[2] == "1.00"
    assert table[3].split()[-1] == "4/4"
