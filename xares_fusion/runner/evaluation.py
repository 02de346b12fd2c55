"""Evaluating one task of a run: predictions written, scored, and the score cached under a key of
everything that changes it -- the run, the task's settings, the row limit and the content of its
evaluation shards (a shard replaced at the same path is scored again). Cache entries and
predictions are written with checksums; a damaged entry is named in a warning and the task scored
again, never served and never a traceback."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ..atomic import CorruptFileError, atomic_write, atomic_write_text, verified_load
from ..config import TaskConfig, stable_hash
from ..data.shards import require_shards, shard_content_hash
from ..evaluate import EvalOutcome, generate_predictions, score_rows
from ..metrics.caption import CaptionMetricUnavailable
from ..model import AudioLLM
from ..results import TaskResult
from .planning import Plan, RunRequest

log = logging.getLogger("xares_fusion")


def evaluate_task(
    model: AudioLLM, task: TaskConfig, plan: Plan, request: RunRequest, accelerator: Accelerator
) -> TaskResult:
    """Score one task, reusing a cached score only when everything that changes it is the same."""
    cache_key = score_cache_key(plan.run_hash, task, request.limit, plan.recipe.data.eval_max_seconds)
    cache_file = plan.run_dir / "scores" / f"{task.name}.json"
    predictions_file = plan.run_dir / f"predictions_{task.name}.csv"
    cached = _cached_result(cache_file, predictions_file, cache_key)
    if cached is not None:
        log.info("%s: %s = %s (cached)", task.name, cached.metric, cached.score)
        return cached
    started = time.time()
    model.reset_routing_stats()
    outcome = generate_predictions(
        model,
        task,
        accelerator,
        request.limit,
        plan.recipe.data.sample_rate,
        progress=request.progress,
        max_seconds=plan.recipe.data.eval_max_seconds,
    )
    result = TaskResult(
        task=task.name,
        metric=task.metric,
        score=None,
        weight=task.weight,
        track=task.track,
        rows=len(outcome.rows),
        skips=outcome.skips.as_dict(),
        cache_key=cache_key,
        routing=model.routing_stats() or None,
    )
    # Every rank holds all rows (gathered); the metric runs once, on rank 0, and every rank
    # returns its result (a caption metric loads a model, and a rank scoring alone could differ).
    if accelerator.is_main_process:
        atomic_write(predictions_file, lambda tmp: outcome.rows.to_csv(tmp, index=False), checksum=True)
        _score(result, task, outcome, plan.recipe.data.max_skip_fraction)
    if accelerator.num_processes > 1:
        result = broadcast_object_list([result])[0]
    log.info("%s: %s = %s (%d rows, %.1fs)", task.name, result.metric, result.score, result.rows, time.time() - started)
    if accelerator.is_main_process and result.error is None:
        atomic_write_text(cache_file, json.dumps(dataclasses.asdict(result), indent=2), checksum=True)
    return result


def score_cache_key(run_hash: str, task: TaskConfig, limit: int | None, max_seconds: float | None = None) -> str:
    """The key a task's score is cached under: the run, the task's settings, the row limit, the
    evaluation length cap and the content hash of every evaluation shard (memoised per process, see
    :func:`~xares_fusion.data.shards.shard_content_hash`), so that new data is never served an old score."""
    shards = [shard_content_hash(path) for path in require_shards(task.split("eval"), task.name, "eval")]
    return stable_hash(
        {"run": run_hash, "task": task.identity(), "limit": limit, "eval_max_seconds": max_seconds, "shards": shards}
    )


def _cached_result(cache_file: Path, predictions_file: Path, cache_key: str) -> TaskResult | None:
    """The cached result under ``cache_key``, when it and its predictions exist and are intact
    (a damaged one is named in a warning, and the task is scored again)."""
    if not (cache_file.is_file() and predictions_file.is_file()):
        return None
    try:
        cached = verified_load(cache_file, lambda data: TaskResult(**json.loads(data)))
        if cached.cache_key != cache_key:
            return None
        verified_load(predictions_file, len)  # its checksum alone: the score does not need its rows
    except CorruptFileError as err:
        log.warning("score cache: %s; scoring the task again", err)
        return None
    return cached


def _score(result: TaskResult, task: TaskConfig, outcome: EvalOutcome, max_skip_fraction: float) -> None:
    """Fill in the score and the metric used, or the error when too many samples were skipped, no
    row was generated or the metric failed."""
    lost = outcome.skips.skipped / max(1, outcome.skips.seen)
    if lost > max_skip_fraction:
        result.error = (
            f"{outcome.skips.skipped} of {outcome.skips.seen} eval samples skipped "
            f"({outcome.skips.summary()}), above data.max_skip_fraction={max_skip_fraction}"
        )
    elif outcome.rows.empty:
        result.error = "no evaluation rows"
    else:
        try:
            result.score, choice = score_rows(task, outcome.rows)
            result.metric, result.unofficial = choice.name, choice.unofficial
        except (ValueError, CaptionMetricUnavailable) as err:
            result.error = f"scoring with {task.metric} failed: {err}"
