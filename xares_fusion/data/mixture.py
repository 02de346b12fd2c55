"""The training mixture: the official sampling rule and an endless, seeded stream of examples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .audio import random_crop
from .batching import pad_audio
from .samples import SkipCounter, iter_samples


def mixture_probabilities(probs: list[float | None], shard_counts: list[int]) -> list[float]:
    """The official rule: p_i = the dataset's ``prob`` when given, else its share of all training
    shards of the mixture (counting every dataset's shards); then normalised to sum to 1."""
    if len(probs) != len(shard_counts) or not probs:
        raise ValueError("one prob (or None) and one shard count per dataset are needed")
    total = sum(shard_counts)
    raw = [p if p is not None else n / total for p, n in zip(probs, shard_counts)]
    norm = sum(raw)
    return [p / norm for p in raw]


@dataclass
class TrainSource:
    """One dataset of the mixture, ready to stream."""

    task: str
    prompt: str
    key: str | None
    shards: list[Path]
    prob: float


@dataclass
class TrainExample:
    task: str
    key: str
    audio: np.ndarray
    prompt: str
    target: str
    cropped: bool = False  # a random crop of a longer clip (never served from the feature cache)


class MixtureStream(torch.utils.data.IterableDataset):
    """Endless training batches: each example picks a dataset by probability, then its next clip.

    Each dataset cycles through its shards in a freshly shuffled order every pass; a clip with
    several reference texts yields one example per text (as the official pipeline does); the
    mixed stream passes a shuffle buffer. Randomness is seeded by (seed, process rank, loader
    worker, start step), so a resumed run continues with a fresh but reproducible stream.

    Batches are made here, in the loader worker, so that each batch can carry the worker's
    skipped-sample counts since its previous batch (``batch["skips"]``). With ``bucket_window``
    k > 0, k batches' worth of mixed examples are sorted by length, cut into batches and those
    batches shuffled: less padding, but batches no longer mix short and long clips as the
    official stream does (a departure from parity, so off by default).
    """

    def __init__(self, sources: list[TrainSource], batch_size: int, crop_seconds: float, sample_rate: int,
                 seed: int, rank: int = 0, start_step: int = 0, shuffle_buffer: int = 256,
                 bucket_window: int = 0) -> None:
        super().__init__()
        self.sources = sources
        self.batch_size = batch_size
        self.bucket_window = bucket_window
        self.max_samples = int(crop_seconds * sample_rate)
        self.sample_rate = sample_rate
        self.seed, self.rank, self.start_step = seed, rank, start_step
        self.shuffle_buffer = max(1, shuffle_buffer)

    def _examples(self, source: TrainSource, counter: SkipCounter, rng: np.random.Generator
                  ) -> Iterator[TrainExample]:
        while True:
            order = [source.shards[i] for i in rng.permutation(len(source.shards))]
            produced = False
            for sample in iter_samples(order, source.key, counter, self.sample_rate):
                if sample.audio is None:
                    continue
                produced = True
                audio = random_crop(sample.audio, self.max_samples, rng)
                cropped = len(sample.audio) > self.max_samples
                for text in sample.texts:
                    yield TrainExample(source.task, sample.key, audio, source.prompt, text, cropped)
            if not produced:
                raise RuntimeError(f"training set '{source.task}' yielded no usable sample from "
                                   f"{len(source.shards)} shards (skipped: {counter.as_dict()}).")

    def _mixed(self, counters: dict[str, SkipCounter], rng: np.random.Generator) -> Iterator[TrainExample]:
        streams = [self._examples(s, counters[s.task], rng) for s in self.sources]
        probs = np.array([s.prob for s in self.sources])
        buffer: list[TrainExample] = []
        while True:
            buffer.append(next(streams[int(rng.choice(len(streams), p=probs))]))
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(rng.integers(len(buffer))))

    def _batches(self, examples: Iterator[TrainExample], order: np.random.Generator) -> Iterator[list[TrainExample]]:
        """Batches in stream order, or bucketed by length (``order`` shuffles the buckets; it is
        not the mixing generator, so bucketing regroups exactly the examples of the plain stream)."""
        if self.bucket_window < 1:
            while True:
                yield [next(examples) for _ in range(self.batch_size)]
        while True:
            pool = sorted((next(examples) for _ in range(self.batch_size * self.bucket_window)),
                          key=lambda e: len(e.audio))
            batches = [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            for i in order.permutation(len(batches)):
                yield batches[i]

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, self.rank, worker, self.start_step])
        counters = {s.task: SkipCounter() for s in self.sources}
        reported = {task: SkipCounter() for task in counters}
        order = np.random.default_rng([self.seed, self.rank, worker, self.start_step, 1])
        for batch in self._batches(self._mixed(counters, rng), order):
            audio, mask = pad_audio([e.audio for e in batch])
            skips = {}
            for task, counter in counters.items():
                delta = counter.skipped - reported[task].skipped
                seen = counter.seen - reported[task].seen
                if delta or seen:
                    skips[task] = (seen, dict(counter.reasons - reported[task].reasons))
                    reported[task] = SkipCounter(counter.seen, counter.reasons.copy())
            yield {"audio": audio, "audio_mask": mask, "prompts": [e.prompt for e in batch],
                   "targets": [e.target for e in batch], "tasks": [e.task for e in batch],
                   "keys": [e.key for e in batch], "cacheable": [not e.cropped for e in batch], "skips": skips}
