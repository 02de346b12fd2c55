"""Evaluation: greedy answers for every eval row of a task, decoded, then scored.

References are the labels as the official pipeline scores them: tokenised and decoded back
(``tokens.reference_texts``). Rows are shared out over processes (``accelerate launch``) by their
position in the shard stream and gathered back in order, so every row is evaluated exactly once
and the scores equal a single-process run. A clip with several references is generated once and expanded into one
row per reference (greedy decoding gives the same answer each time, as officially).

Nothing is scored silently wrong: a clip the encoder turns into NaN/Inf features is skipped and
counted (with its shard and key), not answered from garbage. Long clips are never cut (officially
they are not): each clip longer than :data:`ALONE_SECONDS` is encoded alone, in a batch of one, so
that memory grows with the longest clip rather than with the batch times it (answers do not depend
on the batch). ``data.eval_max_seconds`` cuts clips instead, an opt-in departure.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from . import metrics
from .config import TaskConfig
from .constants import SAMPLE_RATE
from .data.batching import pad_audio
from .data.prefetch import prefetch
from .data.samples import Sample, SkipCounter, iter_samples
from .data.shards import ClipRef, require_shards
from .frontend import Stream, nonfinite_rows
from .model import AudioLLM
from .tokens import reference_texts

log = logging.getLogger("xares_fusion")

ALONE_SECONDS = 30.0
"""Evaluation clips longer than this (the official training crop) are encoded in a batch of one."""
NONFINITE_FEATURES = "non-finite encoder output"


@dataclass
class EvalOutcome:
    """Predictions of one task (one row per reference, in data order), skipped samples, and the
    seconds this process spent in the frozen encoders (`xares-fusion bench` reports the rest)."""

    rows: pd.DataFrame
    skips: SkipCounter
    expected_rows: int
    encode_seconds: float = 0.0


@dataclass
class _EncodeClock:
    """Wall time spent in :meth:`AudioLLM.encode` over an evaluation."""

    seconds: float = 0.0


def _generate_batch(
    model: AudioLLM,
    batch: list[tuple[Sample, int]],
    prompt: str,
    task: TaskConfig,
    accelerator: Accelerator,
    clock: _EncodeClock,
    counter: SkipCounter,
) -> list[tuple]:
    """Answers and references of one batch: every clip decoded, or every clip served by the
    feature cache (then no audio exists, and a plain encoder's fuse step needs none). Clips whose
    features hold NaN/Inf are skipped (counted in ``counter``) and the rest answered."""
    audio = mask = None
    if batch[0][0].audio is None:
        streams = [model.feature_cache.stream(model.encoder, [s.features for s, _ in batch], accelerator.device)]
    else:
        audio, mask = (t.to(accelerator.device) for t in pad_audio([s.audio for s, _ in batch]))
    with accelerator.autocast():
        if audio is not None:
            # The frozen step runs apart from generation (which then skips it) so that its time is known.
            started = time.perf_counter()
            with torch.no_grad():
                streams = model.encode(audio, mask, [s.clip for s, _ in batch])
            clock.seconds += time.perf_counter() - started
        bad = nonfinite_rows(streams)
        if bad:
            for i in bad:
                counter.skip(NONFINITE_FEATURES, f"{batch[i][0].shard}:{batch[i][0].key}")
            keep = [i for i in range(len(batch)) if i not in bad]
            if not keep:
                return []
            batch = [batch[i] for i in keep]
            streams = [None if st is None else _rows_of(st, keep) for st in streams]
            audio, mask = (None, None) if audio is None else (audio[keep], mask[keep])
        answers = model.generate(
            audio, mask, [prompt] * len(batch), tasks=[task.name] * len(batch), streams=streams, **task.generation
        )
    references = reference_texts(model.tokenizer, [s.texts[r] for s, n_rows in batch for r in range(n_rows)])
    rows = [(s.index, r, s.key, answer) for (s, n_rows), answer in zip(batch, answers) for r in range(n_rows)]
    return [(*row, reference) for row, reference in zip(rows, references)]


def _rows_of(stream: Stream, rows: list[int]) -> Stream:
    """The stream of some rows of the batch."""
    hidden = None if stream.hidden_states is None else [h[rows] for h in stream.hidden_states]
    return dataclasses.replace(stream, features=stream.features[rows], mask=stream.mask[rows], hidden_states=hidden)


def _rows_within(samples: Iterator[Sample], limit: int | None) -> Iterator[tuple[Sample, int]]:
    """Each sample with its number of eval rows (one per reference), stopping at ``limit`` rows."""
    expected = 0
    if limit is not None and limit < 1:
        return
    for sample in samples:
        n_rows = len(sample.texts) if limit is None else min(len(sample.texts), limit - expected)
        expected += n_rows
        yield sample, n_rows
        if limit is not None and expected >= limit:
            return


def _generate_window(
    model: AudioLLM,
    window: list[tuple[Sample, int]],
    prompt: str,
    task: TaskConfig,
    accelerator: Accelerator,
    clock: _EncodeClock,
    counter: SkipCounter,
    sample_rate: int,
) -> list[tuple]:
    """Batches of clips of similar length, longest first: less padding in the encoder and the
    LLM, and rows that finish together (answers do not depend on the batch, see model.py).
    Clips longer than :data:`ALONE_SECONDS` go one per batch; clips the feature cache served are
    batched apart from decoded ones, by frames."""
    decoded = sorted((i for i in window if i[0].audio is not None), key=lambda i: len(i[0].audio), reverse=True)
    served = sorted((i for i in window if i[0].audio is None), key=lambda i: i[0].features.shape[0], reverse=True)
    long = [i for i in decoded if len(i[0].audio) > ALONE_SECONDS * sample_rate]
    decoded = decoded[len(long) :]
    size = task.split("eval").batch_size
    return [
        row
        for group, group_size in ((long, 1), (decoded, size), (served, size))
        for start in range(0, len(group), group_size)
        for row in _generate_batch(model, group[start : start + group_size], prompt, task, accelerator, clock, counter)
    ]


def _capped(sample: Sample, max_samples: int | None) -> Sample:
    """``sample`` with its audio cut to ``max_samples`` (``data.eval_max_seconds``); its ClipRef
    then names that span, so the feature cache never files the cut clip as the whole one."""
    if max_samples is None or sample.audio is None or len(sample.audio) <= max_samples:
        return sample
    clip = None if sample.clip is None else dataclasses.replace(sample.clip, span=(0, max_samples))
    return dataclasses.replace(sample, audio=sample.audio[:max_samples], clip=clip)


def _cache_lookup(model: AudioLLM, accelerator: Accelerator) -> Callable[[ClipRef], torch.Tensor | None] | None:
    """Reads a clip's cached features before it is decoded, for a plain frozen encoder only: a
    fusion still needs the audio after its frozen step (clip lengths align its streams, the STFT
    branch reads the waveform), and a trainable encoder is never cached."""
    cache = model.feature_cache
    if cache is None or model.is_fusion or model.front_end.trainable:
        return None
    return lambda clip: cache.lookup(model.encoder, clip, accelerator.device.type)


def generate_predictions(
    model: AudioLLM,
    task: TaskConfig,
    accelerator: Accelerator,
    limit: int | None = None,
    sample_rate: int = SAMPLE_RATE,
    progress: bool = True,
    max_seconds: float | None = None,
) -> EvalOutcome:
    """Answers for the task's eval rows (at most ``limit`` rows).

    Clips are decoded by a read-ahead thread while the model generates (``eval.num_workers`` > 0),
    and each window of ``eval.sort_by_length`` clips (official 256) is sorted by length, longest
    first, before it is cut into batches. ``max_seconds`` (``data.eval_max_seconds``, a departure)
    cuts longer clips to their first ``max_seconds``; None keeps whole clips, as officially.
    """
    spec = task.split("eval")
    paths = require_shards(spec, task.name, "eval")
    rank, world = accelerator.process_index, accelerator.num_processes
    counter = SkipCounter()
    prompt, key = task.prompt_for("eval"), task.key_for("eval")
    model = accelerator.unwrap_model(model)
    model.eval()
    mine: list[tuple] = []
    clock = _EncodeClock()
    pending: list[tuple[Sample, int]] = []
    window = spec.sort_by_length
    expected = 0
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"eval {task.name}", unit="row", total=limit, dynamic_ncols=True)
    max_samples = None if max_seconds is None else int(max_seconds * sample_rate)
    # A cap cuts decoded audio; the cache's whole-clip features would bypass the cut.
    lookup = _cache_lookup(model, accelerator) if max_samples is None else None
    samples = iter_samples(paths, key, counter, sample_rate, owns=lambda pos: pos % world == rank, lookup=lookup)
    longest = 0
    for sample, n_rows in prefetch(_rows_within(samples, limit), depth=window if spec.num_workers > 0 else 0):
        expected += n_rows
        if bar is not None:
            bar.update(n_rows)
        if sample.audio is None and sample.features is None:
            continue
        sample = _capped(sample, max_samples)
        longest = max(longest, 0 if sample.audio is None else len(sample.audio))
        pending.append((sample, n_rows))
        if len(pending) >= window:
            mine += _generate_window(model, pending, prompt, task, accelerator, clock, counter, sample_rate)
            pending = []
    if pending:
        mine += _generate_window(model, pending, prompt, task, accelerator, clock, counter, sample_rate)
    if bar is not None:
        bar.close()
    if longest > ALONE_SECONDS * sample_rate:
        log.warning(
            "%s: clips up to %.0f s long (over %.0f s) are evaluated whole, one per batch, as officially; "
            "memory grows with the longest clip. --set data.eval_max_seconds=N cuts them (a recorded departure).",
            task.name,
            longest / sample_rate,
            ALONE_SECONDS,
        )
    if world > 1:
        mine = gather_object(mine)
        counters = gather_object([counter.as_dict()])
        counter = SkipCounter()
        for c in counters:
            counter.merge(c)
    rows = pd.DataFrame(
        sorted(mine, key=lambda r: (r[0], r[1])), columns=["index", "ref", "key", "predict", "labels"]
    ).drop(columns="ref")
    empty = rows.loc[rows["labels"] == "", "key"].tolist()
    if empty:
        log.warning(
            "%s: %d reference text(s) are empty (e.g. clip %s); kept as empty references, as officially",
            task.name,
            len(empty),
            empty[0],
        )
    for row in rows.head(3).itertuples():
        log.info("%s example: predict=%r labels=%r", task.name, row.predict, row.labels)
    return EvalOutcome(rows=rows, skips=counter, expected_rows=expected, encode_seconds=clock.seconds)


def score_rows(task: TaskConfig, rows: pd.DataFrame) -> tuple[float, metrics.MetricChoice]:
    """The task's metric over all prediction rows at once (corpus-level metrics need the whole
    set); falls back to the metric's labelled offline proxy where the official one cannot run."""
    choice = metrics.choose(task.metric)
    args = task.metric_args if choice.name == task.metric else {}
    value = metrics.score(
        choice.name, rows["predict"].fillna("").astype(str).tolist(), rows["labels"].astype(str).tolist(), **args
    )
    return value, choice
