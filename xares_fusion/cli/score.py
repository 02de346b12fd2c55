"""`xares-fusion score`: rescore a predictions CSV without retraining."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import UserError, json_object


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``score`` subcommand."""
    score = subparsers.add_parser("score", help="rescore a predictions CSV without retraining")
    score.add_argument("predictions")
    score.add_argument("--metric", required=True, help="Accuracy, mAP, iWER, iCER, ...")
    score.add_argument("--metric-args", type=json_object, default={}, help="e.g. '{\"num_classes\": 200}'")
    score.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Score the file's ``predict`` column against its ``labels`` column and print the value."""
    import pandas as pd

    from .. import metrics

    path = Path(args.predictions)
    if not path.is_file():
        raise UserError(f"{path}: file not found.")
    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    missing = [c for c in ("predict", "labels") if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {missing}; a predictions file has 'predict' and 'labels' "
            f"columns (as written by `xares-fusion run`). Columns found: {list(frame.columns)}"
        )
    value = metrics.score(args.metric, frame["predict"].tolist(), frame["labels"].tolist(), **args.metric_args)
    print(f"{args.metric}\t{value:.6f}\t({len(frame)} rows, {path})")
    return 0
