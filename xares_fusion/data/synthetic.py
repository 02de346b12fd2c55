"""Synthetic tone tasks written as WebDataset shards in the official format.

Small, learnable and deterministic from a seed: the smoke suite for tests and the offline demo.
Three label formats are covered, as in the real suite:

* ``tones``         single label    ``{"label": "high"}``                      (Accuracy)
* ``tone-tags``     ';'-joined multi-label ``{"labels": "high;low"}``          (mAP)
* ``tone-captions`` several references ``{"captions": ["low high", ...]}``     (iWER, one row each)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..constants import SAMPLE_RATE
from .shard_writer import build_once, write_shard

VERSION = 1
PITCHES = {"low": (180.0, 320.0), "mid": (600.0, 1000.0), "high": (2000.0, 3400.0)}


@dataclass
class SyntheticSizes:
    """Clips per shard and shard counts (train shards, test shards are separate files)."""

    train_shards: int = 4
    train_per_shard: int = 48
    test_shards: int = 1
    test_per_shard: int = 40


def _tone(rng: np.random.Generator, name: str, seconds: float) -> np.ndarray:
    low, high = PITCHES[name]
    freq = rng.uniform(low, high)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # 20 ms fades, no clicks
    return np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) * ramp


def _finish(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    signal = signal / max(1e-6, np.abs(signal).max()) * rng.uniform(0.2, 0.8)
    signal = signal + rng.normal(0, rng.uniform(0.002, 0.02), signal.shape)
    return np.clip(signal, -1, 1).astype(np.float32)


def make_tones(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    name = str(rng.choice(list(PITCHES)))
    return _finish(rng, _tone(rng, name, rng.uniform(0.4, 1.2))), {"label": name}


def make_tone_tags(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    k = int(rng.integers(1, 4))
    names = sorted(rng.choice(list(PITCHES), size=k, replace=False).tolist())
    seconds = rng.uniform(0.5, 1.2)
    mix = sum(_tone(rng, n, seconds) for n in names)
    return _finish(rng, mix), {"labels": ";".join(names)}


def make_tone_captions(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    names = rng.choice(list(PITCHES), size=int(rng.integers(2, 4))).tolist()
    gap = np.zeros(int(0.1 * SAMPLE_RATE))
    parts = []
    for n in names:
        parts += [_tone(rng, n, rng.uniform(0.25, 0.4)), gap]
    captions = [" ".join(names), " then ".join(names)]
    return _finish(rng, np.concatenate(parts)), {"captions": captions}


TASKS: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, dict]]] = {
    "tones": make_tones,
    "tone-tags": make_tone_tags,
    "tone-captions": make_tone_captions,
}


def make_synthetic(
    root: Path,
    seed: int = 0,
    sizes: SyntheticSizes | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write every synthetic task under ``root/<task>/`` (train-NNN.tar, test-NNN.tar), calling
    ``progress(task)`` before each.

    Skips the work when ``root`` already holds shards made with the same version, seed and sizes.
    """
    sizes = sizes or SyntheticSizes()

    def build(directory: Path) -> None:
        for t, (task, make) in enumerate(TASKS.items()):
            if progress is not None:
                progress(task)
            for split, shards, per_shard in (
                ("train", sizes.train_shards, sizes.train_per_shard),
                ("test", sizes.test_shards, sizes.test_per_shard),
            ):
                for s in range(shards):
                    rng = np.random.default_rng([seed, t, 0 if split == "train" else 1, s])
                    write_shard(
                        directory / task / f"{split}-{s:03d}.tar",
                        ((f"{task}-{split}{s}-{i:05d}", *make(rng)) for i in range(per_shard)),
                    )

    return build_once(root, {"version": VERSION, "seed": seed, "sizes": asdict(sizes)}, build, force)
