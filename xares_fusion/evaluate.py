"""Evaluation: greedy answers for every eval row of a task, decoded, then scored.

Rows are shared out over processes (``accelerate launch``) by their position in the shard
stream and gathered back in order, so every row is evaluated exactly once and the scores equal
a single-process run. A clip with several references is generated once and expanded into one
row per reference (greedy decoding gives the same answer each time, as officially).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
from accelerate import Accelerator
from accelerate.utils import gather_object

from . import metrics
from .config import TaskConfig
from .data.batching import pad_audio
from .data.samples import Sample, SkipCounter, iter_samples
from .data.shards import require_shards
from .model import AudioLLM

log = logging.getLogger("xares_fusion")

PREDICTION_COLUMNS = ["index", "key", "predict", "labels"]


@dataclass
class EvalOutcome:
    """Predictions of one task (one row per reference, in data order) and skipped samples."""

    rows: pd.DataFrame
    skips: SkipCounter
    expected_rows: int


def _generate_batch(model: AudioLLM, batch: list[tuple[Sample, int]], prompt: str, task: TaskConfig,
                    accelerator: Accelerator) -> list[tuple]:
    audio, mask = pad_audio([s.audio for s, _ in batch])
    with accelerator.autocast():
        answers = model.generate(audio.to(accelerator.device), mask.to(accelerator.device),
                                 [prompt] * len(batch), tasks=[task.name] * len(batch), **task.generation)
    return [(s.index, r, s.key, answer, s.texts[r])
            for (s, n_rows), answer in zip(batch, answers) for r in range(n_rows)]


def generate_predictions(model: AudioLLM, task: TaskConfig, accelerator: Accelerator, limit: int | None = None,
                         sample_rate: int = 16000, progress: bool = True) -> EvalOutcome:
    """Answers for the task's eval rows (at most ``limit`` rows)."""
    spec = task.split("eval")
    paths = require_shards(spec, task.name, "eval")
    rank, world = accelerator.process_index, accelerator.num_processes
    counter = SkipCounter()
    prompt, key = task.prompt_for("eval"), task.key_for("eval")
    model = accelerator.unwrap_model(model)
    model.eval()
    mine: list[tuple] = []
    pending: list[tuple[Sample, int]] = []
    expected = 0
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm
        bar = tqdm(desc=f"eval {task.name}", unit="row", total=limit, dynamic_ncols=True)
    for sample in iter_samples(paths, key, counter, sample_rate, owns=lambda pos: pos % world == rank):
        if limit is not None and expected >= limit:
            break
        n_rows = len(sample.texts) if limit is None else min(len(sample.texts), limit - expected)
        expected += n_rows
        if bar is not None:
            bar.update(n_rows)
        if sample.audio is None:
            continue
        pending.append((sample, n_rows))
        if len(pending) >= spec.batch_size:
            mine += _generate_batch(model, pending, prompt, task, accelerator)
            pending = []
    if pending:
        mine += _generate_batch(model, pending, prompt, task, accelerator)
    if bar is not None:
        bar.close()
    if world > 1:
        mine = gather_object(mine)
        counters = gather_object([counter.as_dict()])
        counter = SkipCounter()
        for c in counters:
            counter.seen += c["seen"]
            counter.reasons.update(c["reasons"])
    rows = pd.DataFrame(sorted(mine, key=lambda r: (r[0], r[1])),
                        columns=["index", "ref", "key", "predict", "labels"]).drop(columns="ref")
    for row in rows.head(3).itertuples():
        log.info("%s example: predict=%r labels=%r", task.name, row.predict, row.labels)
    return EvalOutcome(rows=rows, skips=counter, expected_rows=expected)


def score_rows(task: TaskConfig, rows: pd.DataFrame) -> tuple[float, metrics.MetricChoice]:
    """The task's metric over all prediction rows at once (corpus-level metrics need the whole
    set); falls back to the metric's labelled offline proxy where the official one cannot run."""
    choice = metrics.choose(task.metric)
    args = task.metric_args if choice.name == task.metric else {}
    value = metrics.score(choice.name, rows["predict"].fillna("").astype(str).tolist(),
                          rows["labels"].astype(str).tolist(), **args)
    return value, choice
