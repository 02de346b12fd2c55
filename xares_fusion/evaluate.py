"""Evaluation: greedy answers for every eval row of a task, decoded, then scored.

References are the labels as the official pipeline scores them: tokenised and decoded back
(``tokens.reference_texts``). Rows are shared out over processes (``accelerate launch``) by their
position in the shard stream and gathered back in order, so every row is evaluated exactly once
and the scores equal a single-process run. A clip with several references is generated once and expanded into one
row per reference (greedy decoding gives the same answer each time, as officially).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
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
from .data.shards import require_shards
from .model import AudioLLM
from .tokens import reference_texts

log = logging.getLogger("xares_fusion")


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
) -> list[tuple]:
    audio, mask = (t.to(accelerator.device) for t in pad_audio([s.audio for s, _ in batch]))
    with accelerator.autocast():
        # The frozen step runs apart from generation (which then skips it) so that its time is known.
        started = time.perf_counter()
        with torch.no_grad():
            streams = model.encode(audio, mask)
        clock.seconds += time.perf_counter() - started
        answers = model.generate(
            audio, mask, [prompt] * len(batch), tasks=[task.name] * len(batch), streams=streams, **task.generation
        )
    references = reference_texts(model.tokenizer, [s.texts[r] for s, n_rows in batch for r in range(n_rows)])
    rows = [(s.index, r, s.key, answer) for (s, n_rows), answer in zip(batch, answers) for r in range(n_rows)]
    return [(*row, reference) for row, reference in zip(rows, references)]


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
) -> list[tuple]:
    """Batches of clips of similar length, longest first: less padding in the encoder and the
    LLM, and rows that finish together (answers do not depend on the batch, see model.py)."""
    window = sorted(window, key=lambda item: len(item[0].audio), reverse=True)
    size = task.split("eval").batch_size
    return [
        row
        for start in range(0, len(window), size)
        for row in _generate_batch(model, window[start : start + size], prompt, task, accelerator, clock)
    ]


def generate_predictions(
    model: AudioLLM,
    task: TaskConfig,
    accelerator: Accelerator,
    limit: int | None = None,
    sample_rate: int = SAMPLE_RATE,
    progress: bool = True,
) -> EvalOutcome:
    """Answers for the task's eval rows (at most ``limit`` rows).

    Clips are decoded by a read-ahead thread while the model generates (``eval.num_workers`` > 0),
    and each window of ``eval.sort_by_length`` clips (official 256) is sorted by length, longest
    first, before it is cut into batches.
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
    samples = iter_samples(paths, key, counter, sample_rate, owns=lambda pos: pos % world == rank)
    for sample, n_rows in prefetch(_rows_within(samples, limit), depth=window if spec.num_workers > 0 else 0):
        expected += n_rows
        if bar is not None:
            bar.update(n_rows)
        if sample.audio is None:
            continue
        pending.append((sample, n_rows))
        if len(pending) >= window:
            mine += _generate_window(model, pending, prompt, task, accelerator, clock)
            pending = []
    if pending:
        mine += _generate_window(model, pending, prompt, task, accelerator, clock)
    if bar is not None:
        bar.close()
    if world > 1:
        mine = gather_object(mine)
        counters = gather_object([counter.as_dict()])
        counter = SkipCounter()
        for c in counters:
            counter.seen += c["seen"]
            counter.reasons.update(c["reasons"])
    rows = pd.DataFrame(
        sorted(mine, key=lambda r: (r[0], r[1])), columns=["index", "ref", "key", "predict", "labels"]
    ).drop(columns="ref")
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
