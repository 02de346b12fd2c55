"""The training mixture: the official sampling rule and an endless, seeded stream of examples."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from webdataset import filters as wds_filters

from ..constants import SAMPLE_RATE
from ..errors import DataError
from ..tokens import prompt_ids, target_ids
from .batching import pad_audio
from .samples import SkipCounter, iter_samples
from .shards import ClipRef

log = logging.getLogger("xares_fusion")


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


PROBE_SAMPLES = 4
"""Samples read from the start of each training shard when a run is planned (see :func:`probe_source`)."""


def probe_source(source: TrainSource, sample_rate: int) -> None:
    """Refuse a training set none of whose shards gives a usable sample among its first
    :data:`PROBE_SAMPLES`, before any model loads (the stream would otherwise fail after it); warn
    about each such shard of a set that has good ones (its samples will be skipped and counted)."""
    barren: dict[Path, SkipCounter] = {}
    for shard in source.shards:
        counter = SkipCounter()
        samples = iter_samples([shard], source.key, counter, sample_rate)
        usable = any(s.audio is not None for _, s in zip(range(PROBE_SAMPLES), samples))
        if not usable:
            barren[shard] = counter
    if len(barren) == len(set(source.shards)):
        shown = "\n".join(f"  {shard}: {c.summary() or 'no samples'}" for shard, c in list(barren.items())[:5])
        more = f"\n  ... ({len(barren) - 5} more)" if len(barren) > 5 else ""
        raise DataError(
            f"training set '{source.task}': none of its {len(source.shards)} shard(s) gives a usable sample "
            f"among its first {PROBE_SAMPLES}:\n{shown}{more}\nFix: replace those shards (fetch-data or "
            f"make-* writes them again), or leave the task out of data.mixture."
        )
    for shard, counter in barren.items():
        log.warning(
            "training set '%s': shard %s gives no usable sample among its first %d (%s); its bad samples "
            "will be skipped and counted",
            source.task,
            shard,
            PROBE_SAMPLES,
            counter.summary() or "no samples",
        )


@dataclass
class TrainExample:
    task: str
    key: str
    audio: np.ndarray
    prompt: str
    target: str
    clip: ClipRef | None = None  # the feature cache's name for the audio (None: not cacheable)


class MixtureStream(torch.utils.data.IterableDataset):
    """Endless training batches, drawn as the official pipeline draws them.

    1. Each dataset streams clips from shards drawn uniformly *with replacement* (official:
       ``wds.ResampledShards``); a clip with several reference texts yields one example per text.
    2. Each draw picks a dataset by the mixture probabilities and takes a run of ``batch_size``
       examples from it (official: ``RandomMix`` over per-dataset batches).
    3. The mixed examples pass webdataset's own shuffle buffer (``shuffle_buffer``, official 256,
       yielding from 100 buffered examples on).
    4. Each window of ``sort_by_length`` consecutive examples (official 128) is sorted by
       ``length_key`` -- prompt + target tokens plus audio seconds, officially -- longest first,
       then cut into batches in that order (the last, partial batch of a window goes on into the
       next window, as in a continuous stream). ``sort_by_length=1`` keeps stream order.

    The random streams are ours, seeded by (seed, process rank, loader worker); the official random
    stream (a different generator) cannot be reproduced draw for draw, only its rules. A stream
    from ``start_step`` (the data position: batches already trained on) yields the batches the
    stream from 0 yields from there on: the ones before are drawn and dropped, clips decoded (their
    crops and the length sort draw on them) but not batched.

    Batches are made here, in the loader worker, so that each batch can carry the worker's
    skipped-sample counts since its previous batch (``batch["skips"]``).
    """

    def __init__(
        self,
        sources: list[TrainSource],
        batch_size: int,
        crop_seconds: float,
        sample_rate: int,
        seed: int,
        rank: int = 0,
        start_step: int = 0,
        shuffle_buffer: int = 256,
        sort_by_length: int = 128,
        length_key: Callable[[TrainExample], float] | None = None,
    ) -> None:
        super().__init__()
        self.sources = sources
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length
        self.length_key = length_key or (lambda example: len(example.audio) / sample_rate)
        self.crop_seconds = crop_seconds
        self.sample_rate = sample_rate
        self.seed, self.rank, self.start_step = seed, rank, start_step
        self.shuffle_buffer = max(1, shuffle_buffer)

    def _examples(self, source: TrainSource, counter: SkipCounter, rng: np.random.Generator) -> Iterator[TrainExample]:
        barren: set[int] = set()  # shards that gave no usable sample (a set that never yields is an error)
        while True:
            pick = int(rng.integers(len(source.shards)))
            produced = False
            for sample in iter_samples(
                [source.shards[pick]], source.key, counter, self.sample_rate, crop_seconds=self.crop_seconds, rng=rng
            ):
                if sample.audio is None:
                    continue
                produced = True
                for text in sample.texts:
                    yield TrainExample(source.task, sample.key, sample.audio, source.prompt, text, sample.clip)
            if produced:
                barren.clear()
                continue
            barren.add(pick)
            if len(barren) == len(source.shards):
                raise DataError(
                    f"training set '{source.task}' yielded no usable sample from "
                    f"{len(source.shards)} shards (skipped: {counter.summary()}). Fix or replace those shards."
                )

    def _mixed(self, counters: dict[str, SkipCounter], rng: np.random.Generator) -> Iterator[TrainExample]:
        """Each draw picks a dataset and takes its next ``batch_size`` examples: officially every
        dataset's stream is batched before the mix (``wds.batched``), so RandomMix draws runs of
        a batch from one dataset, which the shuffle buffer then spreads out."""
        streams = [self._examples(s, counters[s.task], rng) for s in self.sources]
        probs = np.array([s.prob for s in self.sources])
        while True:
            stream = streams[int(rng.choice(len(streams), p=probs))]
            for _ in range(self.batch_size):
                yield next(stream)

    def _batches(self, examples: Iterator[TrainExample]) -> Iterator[list[TrainExample]]:
        """Sort windows of ``sort_by_length`` examples, longest first, and cut them into batches."""

        def sorted_windows() -> Iterator[TrainExample]:
            while True:
                window = [next(examples) for _ in range(self.sort_by_length)]
                # list.sort is stable with reverse=True, as in the official _sort_by_length.
                window.sort(key=self.length_key, reverse=True)
                yield from window

        ordered = sorted_windows()
        while True:
            yield [next(ordered) for _ in range(self.batch_size)]

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        # The loader takes batches from its workers in turn, so from data position start_step
        # worker w goes on with the stream of worker (start_step + w) % workers, after the
        # batches that one had made.
        role, made = (self.start_step + worker) % workers, (self.start_step + worker) // workers
        rng = np.random.default_rng([self.seed, self.rank, role])
        shuffle_rng = random.Random(int(rng.integers(2**63)))
        counters = {s.task: SkipCounter() for s in self.sources}
        shuffled = wds_filters.shuffle(self.shuffle_buffer, initial=100, rng=shuffle_rng)(self._mixed(counters, rng))
        batches = self._batches(iter(shuffled))
        for _ in range(made):
            next(batches)
        reported = {task: SkipCounter(c.seen, c.reasons.copy()) for task, c in counters.items()}
        for batch in batches:
            audio, mask = pad_audio([e.audio for e in batch])
            skips = {}
            for task, counter in counters.items():
                delta = counter.skipped - reported[task].skipped
                seen = counter.seen - reported[task].seen
                if delta or seen:
                    # The places seen so far go along whole: a few per reason, merged without repeats.
                    skips[task] = {
                        "seen": seen,
                        "reasons": dict(counter.reasons - reported[task].reasons),
                        "examples": counter.as_dict()["examples"],
                    }
                    reported[task] = SkipCounter(counter.seen, counter.reasons.copy())
            yield {
                "audio": audio,
                "audio_mask": mask,
                "prompts": [e.prompt for e in batch],
                "targets": [e.target for e in batch],
                "tasks": [e.task for e in batch],
                "keys": [e.key for e in batch],
                "clips": [e.clip for e in batch],
                "skips": skips,
            }


class TokenLengthKey:
    """The official sort key of a training example: prompt tokens + target tokens (text + EOS)
    + audio seconds (xares-llm ``create_dataloader``: ``len(input_ids)`` plus the clip's samples
    over the 16 kHz rate).
    A class rather than a closure so that loader worker processes can receive it."""

    def __init__(self, tokenizer: Any, sample_rate: int = SAMPLE_RATE) -> None:
        self.tokenizer, self.sample_rate = tokenizer, sample_rate
        self._prompt_lengths: dict[str, int] = {}

    def __call__(self, example: TrainExample) -> float:
        if example.prompt not in self._prompt_lengths:
            self._prompt_lengths[example.prompt] = len(prompt_ids(self.tokenizer, [example.prompt])[0])
        tokens = self._prompt_lengths[example.prompt] + len(target_ids(self.tokenizer, [example.target])[0])
        return tokens + len(example.audio) / self.sample_rate
