"""Evaluating one task of a run: predictions written, scored, and the score cached under a key of
everything that changes it."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from accelerate import Accelerator

from ..atomic import atomic_write, atomic_write_text
from ..config import TaskConfig, stable_hash
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
    cache_key = stable_hash({"run": plan.run_hash, "task": task.identity(), "limit": request.limit})
    cache_file = plan.run_dir / "scores" / f"{task.name}.json"
    predictions_file = plan.run_dir / f"predictions_{task.name}.csv"
    cached = _cached_result(cache_file, predictions_file, cache_key)
    if cached is not None:
        log.info("%s: cached score %s", task.name, cached.score)
        return cached
    started = time.time()
    model.reset_routing_stats()
    outcome = generate_predictions(
        model, task, accelerator, request.limit, plan.recipe.data.sample_rate, progress=request.progress
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
    if accelerator.is_main_process:
        atomic_write(predictions_file, lambda tmp: outcome.rows.to_csv(tmp, index=False))
    _score(result, task, outcome, plan.recipe.data.max_skip_fraction)
    log.info("%s: %s = %s (%d rows, %.1fs)", task.name, result.metric, result.score, result.rows, time.time() - started)
    if accelerator.is_main_process and result.error is None:
        atomic_write_text(cache_file, json.dumps(dataclasses.asdict(result), indent=2))
    return result


def _cached_result(cache_file: Path, predictions_file: Path, cache_key: str) -> TaskResult | None:
    """The cached result under ``cache_key``, when it and its predictions exist."""
    if cache_file.is_file() and predictions_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached.get("cache_key") == cache_key:
            return TaskResult(**cached)
    return None


def _score(result: TaskResult, task: TaskConfig, outcome: EvalOutcome, max_skip_fraction: float) -> None:
    """Fill in the score and the metric used, or the error when too many samples were skipped, no
    row was generated or the metric failed."""
    lost = outcome.skips.skipped / max(1, outcome.skips.seen)
    if lost > max_skip_fraction:
        result.error = (
            f"{outcome.skips.skipped} of {outcome.skips.seen} eval samples skipped "
            f"({dict(outcome.skips.reasons)}), above data.max_skip_fraction={max_skip_fraction}"
        )
    elif outcome.rows.empty:
        result.error = "no evaluation rows"
    else:
        try:
            result.score, choice = score_rows(task, outcome.rows)
            result.metric, result.unofficial = choice.name, choice.unofficial
        except (ValueError, CaptionMetricUnavailable) as err:
            result.error = f"scoring with {task.metric} failed: {err}"
