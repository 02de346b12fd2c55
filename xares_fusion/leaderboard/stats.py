"""Confidence from stored predictions: per-task bootstrap intervals and the paired bootstrap test.

The resampling unit is one row of a run's ``predictions_<task>.csv`` (written beside its
``result.json``). A resample draws as many rows as the task has, with replacement, and scores
them with the task's metric from the metric registry (``metrics.score``), so a corpus-level
metric stays corpus-level. Resampling is vectorised where the registry's metric splits into
per-row parts, checked against ``metrics.score`` on the whole set before it is used:

* ``Accuracy``, ``FENSE``, ``FENSE (proxy)``: the mean of each row's own score (each distinct
  row scored once with ``metrics.score``);
* ``iWER``, ``iCER``: max(0, 1 - sum of edits / sum of reference lengths), the per-row edits of
  jiwer's alignment of the normalised strings.

Any other metric (mAP, DATE) is scored once per resample.

Intervals are percentile intervals (95 % by default). The paired test resamples the rows both
systems answered with the same draws for both, so the noise of the test set cancels; its
two-sided p-value is the share of resampled differences at least as far from the observed one as
the observed one is from 0 (the shifted-null bootstrap), with the usual +1 so it is never 0.
Overall values combine the tasks with the official Overall rule (``results.overall``), each task
resampled on its own rows.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..config import ConfigError, load_task
from ..metrics.normalize import normalize_text
from ..registry import RegistryError
from ..results import overall

log = logging.getLogger("xares_fusion")

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
CHUNK = 256  # resamples drawn at once: bounds the index matrix to CHUNK x rows
ROW_MEAN_METRICS = ("Accuracy", "FENSE", "FENSE (proxy)")
ROW_KEY = ["index", "key", "occurrence"]  # a row: its sample, and which of the sample's references


@dataclass
class Resampled:
    """A value on the full rows and its ``samples`` over bootstrap resamples of the rows."""

    value: float
    samples: np.ndarray
    rows: int

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """The percentile interval holding ``level`` of the resampled values."""
        low, high = np.quantile(self.samples, [(1 - level) / 2, (1 + level) / 2])
        return float(low), float(high)

    @property
    def within_noise(self) -> bool:
        """Whether the 95 % interval of a difference includes 0."""
        low, high = self.interval()
        return low <= 0 <= high

    @property
    def p_value(self) -> float:
        """Two-sided p-value of a difference against 0 (shifted-null bootstrap, +1 corrected)."""
        extreme = np.count_nonzero(np.abs(self.samples - self.value) >= abs(self.value) - 1e-12)
        return float((1 + extreme) / (1 + len(self.samples)))


def combine(parts: list[tuple[Resampled, float]]) -> Resampled | None:
    """The official Overall of (resampled task value, weight) pairs, resample by resample."""
    if not parts:
        return None
    value = overall((p.value, w) for p, w in parts)
    if value is None:
        return None
    weights = np.array([w for _, w in parts], dtype=float)
    samples = np.stack([p.samples for p, _ in parts]) * weights[:, None]
    return Resampled(value, samples.sum(0) / weights.sum(), sum(p.rows for p, _ in parts))


def read_predictions(record_file: Path, task: str) -> pd.DataFrame | None:
    """The prediction rows of ``task`` beside a run's ``result.json``, keyed by :data:`ROW_KEY`;
    None when the run kept none. Every cell is read as text, as the metric saw it."""
    path = Path(record_file).parent / f"predictions_{task}.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"key": str, "predict": str, "labels": str}, keep_default_na=False)
    frame["occurrence"] = frame.groupby(["index", "key"]).cumcount()
    return frame.set_index(ROW_KEY)


def run_frames(record_files: list[Path], task: str) -> list[pd.DataFrame] | None:
    """The prediction frames of ``task`` of every run of a system; None unless every run kept them."""
    frames = [read_predictions(f, task) for f in record_files]
    return frames if frames and all(f is not None for f in frames) else None


def _aligned(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """The frames restricted to the rows all of them have, in one order."""
    common = functools.reduce(
        lambda a, b: a.intersection(b, sort=False), (f.index for f in frames[1:]), frames[0].index
    )
    return [f.loc[common] for f in frames]


@functools.cache
def _metric_args(task: str, metric: str) -> tuple[tuple[str, object], ...]:
    """The task config's metric arguments when ``metric`` is its metric (a proxy takes none)."""
    try:
        config = load_task(task)
    except ConfigError:
        return ()
    return tuple(sorted(config.metric_args.items())) if config.metric == metric else ()


def _error_rate_parts(metric: str, predictions: list[str], references: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row edits and reference lengths (words for iWER, characters for iCER) from jiwer."""
    import jiwer

    process = jiwer.process_words if metric == "iWER" else jiwer.process_characters
    out = process([normalize_text(r) for r in references], [normalize_text(p) for p in predictions])
    edits = [
        sum(
            (c.hyp_end_idx - c.hyp_start_idx) if c.type == "insert" else (c.ref_end_idx - c.ref_start_idx)
            for c in chunks
            if c.type != "equal"
        )
        for chunks in out.alignments
    ]
    return np.array(edits, dtype=float), np.array([len(r) for r in out.references], dtype=float)


class TaskScorer:
    """Scores of one task's metric on resampled rows of aligned prediction frames (one per run;
    a system's score is the mean over its runs, as its table cell)."""

    def __init__(self, task: str, metric: str, frames: list[pd.DataFrame]) -> None:
        self.metric = metric
        self.args = dict(_metric_args(task, metric))
        self.columns = [(f["predict"].to_numpy(dtype=object), f["labels"].to_numpy(dtype=object)) for f in frames]
        self.rows = len(frames[0])
        whole = [self._score(p, r) for p, r in self.columns]
        self.value = float(np.mean(whole))
        self.parts = [self._row_parts(p, r, w) for (p, r), w in zip(self.columns, whole)]
        if any(part is None for part in self.parts):
            self.parts = []

    def _score(self, predictions: np.ndarray, references: np.ndarray) -> float:
        return metrics.score(self.metric, predictions.tolist(), references.tolist(), **self.args)

    def _row_parts(
        self, predictions: np.ndarray, references: np.ndarray, whole: float
    ) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]] | None:
        """(numerator, denominator, finish) per row with score = finish(sum num / sum den), or None
        when the metric has no such split or the split does not give the registry's score."""
        if self.metric in ROW_MEAN_METRICS:
            pairs = pd.Series(list(zip(predictions, references)))
            unique = {pair: self._score(np.array([pair[0]]), np.array([pair[1]])) for pair in pairs.unique()}
            num, den, finish = pairs.map(unique).to_numpy(dtype=float), np.ones(len(pairs)), lambda x: x
        elif self.metric in ("iWER", "iCER"):
            num, den = _error_rate_parts(self.metric, predictions.tolist(), references.tolist())
            finish = lambda x: np.maximum(0.0, 1.0 - x)  # noqa: E731
        else:
            return None
        split = float(finish(num.sum() / den.sum()))
        if abs(whole - split) > 1e-6:
            log.warning(
                "%s: per-row split gives %.6f, the metric %.6f; resampling the metric itself", self.metric, split, whole
            )
            return None
        return num, den, finish

    def scores(self, indices: np.ndarray) -> np.ndarray:
        """The score (mean over runs) of each row set in ``indices`` ([resamples, rows])."""
        if self.parts:
            return np.mean([f(num[indices].sum(1) / den[indices].sum(1)) for num, den, f in self.parts], axis=0)
        return np.array([np.mean([self._score(p[i], r[i]) for p, r in self.columns]) for i in indices])


def _draws(task: str, rows: int, resamples: int, seed: int):
    """Blocks of resampled row indices, seeded by ``seed`` and the task (tasks draw independently)."""
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    for start in range(0, resamples, CHUNK):
        yield rng.integers(0, rows, size=(min(CHUNK, resamples - start), rows))


def bootstrap(
    task: str, metric: str, frames: list[pd.DataFrame], resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Resampled:
    """The task's score (mean over the runs' frames) with its bootstrap resamples."""
    scorer = TaskScorer(task, metric, _aligned(frames))
    samples = np.concatenate([scorer.scores(idx) for idx in _draws(task, scorer.rows, resamples, seed)])
    return Resampled(scorer.value, samples, scorer.rows)


@dataclass
class Paired:
    """Scores of A and B on the rows both answered, and A - B with its paired resamples."""

    a: float
    b: float
    difference: Resampled


def paired(
    task: str,
    metric: str,
    frames_a: list[pd.DataFrame],
    frames_b: list[pd.DataFrame],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Paired:
    """A minus B on the rows both answered (every run of each), both scored on the same draws."""
    aligned = _aligned(frames_a + frames_b)
    if aligned[0].empty:
        raise ValueError("the two systems share no prediction row (different test sets?)")
    a = TaskScorer(task, metric, aligned[: len(frames_a)])
    b = TaskScorer(task, metric, aligned[len(frames_a) :])
    samples = np.concatenate([a.scores(idx) - b.scores(idx) for idx in _draws(task, a.rows, resamples, seed)])
    return Paired(a.value, b.value, Resampled(a.value - b.value, samples, a.rows))


def safely(what: str, compute: Callable[..., Resampled | Paired], *args: object) -> Resampled | Paired | None:
    """``compute(*args)``, or None with a warning saying why there is no interval for ``what``."""
    try:
        return compute(*args)
    except (ValueError, RegistryError, RuntimeError) as err:  # a metric that cannot run here, no shared rows
        log.warning("leaderboard: no bootstrap interval for %s: %s", what, err)
        return None
