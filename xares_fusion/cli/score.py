"""`xares-fusion score`: rescore a predictions CSV without retraining."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import UserError, json_object

PREDICTIONS_PREFIX = "predictions_"
"""A run writes ``predictions_<task>.csv``: the file name gives the task when none is named."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``score`` subcommand."""
    score = subparsers.add_parser("score", help="rescore a predictions CSV without retraining")
    score.add_argument("predictions", help="a predictions_<task>.csv of a run directory")
    score.add_argument(
        "--task",
        default=None,
        help="task (name or YAML) whose metric and metric_args score the file "
        "(default: the <task> of predictions_<task>.csv, unless --metric is given)",
    )
    score.add_argument("--metric", default=None, help="Accuracy, mAP, iWER, iCER, ... (default: the task's)")
    score.add_argument(
        "--metric-args", type=json_object, default={}, help="e.g. '{\"num_classes\": 200}' (over the task's)"
    )
    score.set_defaults(func=command)


def metric_for(args: argparse.Namespace, path: Path) -> tuple[str, dict]:
    """(metric, metric arguments): ``--metric`` as given, else the task's (``--task``, else the task
    the file name gives), with the official caption metric's labelled proxy where it cannot run."""
    if args.metric:
        return args.metric, args.metric_args
    task_ref = args.task or (path.stem[len(PREDICTIONS_PREFIX) :] if path.stem.startswith(PREDICTIONS_PREFIX) else None)
    if task_ref is None:
        raise UserError(f"{path}: name the metric (--metric Accuracy) or the task (--task esc-50) to score it with.")
    from .. import metrics
    from ..config import load_task

    task = load_task(task_ref)
    return metrics.choose(task.metric).name, {**task.metric_args, **args.metric_args}


def command(args: argparse.Namespace) -> int:
    """Score the file's ``predict`` column against its ``labels`` column and print the value."""
    import pandas as pd

    from .. import metrics

    path = Path(args.predictions)
    if not path.is_file():
        raise UserError(f"{path}: file not found.")
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    except pd.errors.ParserError as err:  # its message names the line: "Expected 4 fields in line 3, saw 5"
        raise UserError(
            f"{path}: not a well-formed CSV: {err}. Quote fields that hold commas (as `xares-fusion run` writes them)."
        ) from err
    missing = [c for c in ("predict", "labels") if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {missing}; a predictions file has 'predict' and 'labels' "
            f"columns (as written by `xares-fusion run`). Columns found: {list(frame.columns)}"
        )
    metric, metric_args = metric_for(args, path)
    value = metrics.score(metric, frame["predict"].tolist(), frame["labels"].tolist(), **metric_args)
    print(f"{metric}\t{value:.6f}\t({len(frame)} rows, {path})")
    return 0
