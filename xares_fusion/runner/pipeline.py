"""`run`: plan, claim the run directory, build the model, train its stages, evaluate every task,
write the scores and the result record."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from ..config import stable_hash, to_dict
from ..errors import RunFailed, note_run_log
from ..model import AudioLLM
from ..parity import parity
from ..results import (
    RECORD_FILE,
    RECORD_VERSION,
    SCORES_FILE,
    TaskResult,
    format_table,
    provenance,
    record_tasks,
    weighted_overall,
    write_record,
    write_scores,
)
from .backend import make_accelerator, process_state, set_deterministic
from .building import build_run_model
from .evaluation import evaluate_task
from .planning import Plan, RunRequest, plan_run, world_identity
from .training import train_stages

log = logging.getLogger("xares_fusion")


@dataclass
class RunResult:
    """What a run produced: its directory, the task results with their weighted overall, and the record."""

    output_dir: Path
    results: list[TaskResult]
    overall: float | None
    record: dict[str, Any]
    trained: bool


def run(request: RunRequest) -> RunResult:
    """Train (or reuse) and evaluate; writes predictions, scores.tsv and the result record."""
    plan = plan_run(request, process_state(), hold_lock=True)
    handler = None
    try:
        set_deterministic(plan.recipe.speed.deterministic)
        accelerator = make_accelerator(plan.recipe.optim.precision)
        handler = _attach_log_file(plan.run_dir) if accelerator.is_main_process else None
        return _run_planned(plan, request, accelerator)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        if plan.lock is not None:  # the main process's lock on the run directory
            plan.lock.release()


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt")
    note_run_log(run_dir / "log.txt")  # named in the header of a bug report
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s"))
    log.addHandler(handler)
    return handler


def _run_planned(plan: Plan, request: RunRequest, accelerator: Accelerator) -> RunResult:
    log.info(
        "run %s: encoder %s, recipe %s, eval %s -> %s (processes %d)",
        plan.run_hash,
        plan.encoder,
        plan.recipe.name,
        plan.eval_group,
        plan.run_dir,
        accelerator.num_processes,
    )
    model = build_run_model(plan, accelerator)
    train_info = train_stages(model, plan, request, accelerator)
    results = [evaluate_task(model, task, plan, request, accelerator) for task in plan.eval_tasks]
    record = _result_record(plan, request, accelerator, model, results, train_info)
    if accelerator.is_main_process:
        write_scores(results, plan.run_dir / SCORES_FILE)
        write_record(plan.run_dir / RECORD_FILE, record)
    failed = [r for r in results if r.error]
    if failed:
        raise RunFailed(
            "; ".join(f"{r.task}: {r.error}" for r in failed)
            + f". The other tasks' scores and all predictions are in {plan.run_dir}."
        )
    return RunResult(plan.run_dir, results, record["overall"], record, train_info["trained_this_invocation"])


def _result_record(
    plan: Plan,
    request: RunRequest,
    accelerator: Accelerator,
    model: AudioLLM,
    results: list[TaskResult],
    train_info: dict[str, Any],
) -> dict[str, Any]:
    """The result record: system, scores, parity, recipe, task configs, training and provenance."""
    recipe = plan.recipe
    return {
        "record_version": RECORD_VERSION,
        "run_hash": plan.run_hash,
        "system": {
            "name": plan.system_name,
            "identity": plan.system_identity,
            "encoder": plan.encoder,
            "encoder_args": plan.encoder_args,
            "recipe": recipe.name,
            "llm": recipe.model.llm.name_or_path,
            "precision": recipe.optim.precision,
        },
        "eval_group": plan.eval_group,
        "limit": request.limit,
        **world_identity(recipe, accelerator.num_processes),  # processes, grad_accum_steps, global_batch
        "tasks": record_tasks(results),
        "overall": weighted_overall(results),
        "overall_unofficial": any(r.unofficial for r in results),
        "parity": parity(
            plan.departures
            + [
                f"{r.task}: scored with {r.metric} (official: {task.metric})"
                for r, task in zip(results, plan.eval_tasks)
                if r.unofficial
            ]
        ),
        "recipe": to_dict(recipe),
        "task_configs": {t.name: {"source": t.source, "hash": stable_hash(t.identity())} for t in plan.eval_tasks},
        "train": train_info,
        "feature_cache": (
            {
                "mode": recipe.speed.feature_cache,
                "dtype": recipe.speed.cache_dtype,
                "hits": model.feature_cache.hits,
                "misses": model.feature_cache.misses,
                "uncached": model.feature_cache.uncached,
            }
            if model.feature_cache is not None
            else None
        ),
        "provenance": provenance(str(accelerator.device)),
    }


def summary_text(result: RunResult) -> str:
    """The per-task table with the Overall row, whether the run follows the official pipeline,
    and where the files are."""
    departures = result.record["parity"]["departures"]
    parity_line = (
        "Parity: the official XARES-LLM pipeline (see docs/parity.md)."
        if not departures
        else "Not comparable with official scores; departs from the official pipeline in: " + "; ".join(departures)
    )
    return (
        f"{format_table(result.results)}\n\n{parity_line}\n\nResults in {result.output_dir}: {SCORES_FILE}, "
        f"{RECORD_FILE}, predictions_<task>.csv"
    )
