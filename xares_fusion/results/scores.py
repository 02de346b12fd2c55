"""The scores table of one run: a row per task, then its Overall rows (``scores.tsv`` and the
table `xares-fusion run` prints)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..atomic import atomic_write
from .tasks import TaskResult, weighted_overall

SCORES_FILE = "scores.tsv"


def _overall_row(label: str, results: list[TaskResult]) -> dict[str, Any]:
    unofficial = any(r.unofficial for r in results)
    return {
        "Task": label,
        "metric": "weighted mean" + (" (unofficial)" if unofficial else ""),
        "score": weighted_overall(results),
        "weight": sum(r.weight for r in results),
    }


def scores_frame(results: list[TaskResult]) -> pd.DataFrame:
    """Task | metric | score | weight, sorted by task, then a weighted 'Track X Overall' row per
    track when several tracks are present, then the weighted 'Overall' row. An overall that
    includes an unofficial proxy metric says so."""
    frame = pd.DataFrame(
        [
            {
                "Task": r.task,
                "metric": r.metric + (" (unofficial)" if r.unofficial else ""),
                "score": r.score,
                "weight": r.weight,
            }
            for r in results
        ]
    )
    frame = frame.sort_values("Task", kind="stable").reset_index(drop=True)
    tracks = sorted({r.track for r in results if r.track})
    rows = []
    if len(tracks) > 1:
        rows = [_overall_row(f"Track {t} Overall", [r for r in results if r.track == t]) for t in tracks]
    rows.append(_overall_row("Overall", results))
    return pd.concat([frame, pd.DataFrame(rows)], ignore_index=True)


def format_table(results: list[TaskResult]) -> str:
    """The scores table as aligned text; missing scores print as 'n/a'."""
    frame = scores_frame(results)
    frame["score"] = [
        ("n/a" if s is None or (isinstance(s, float) and math.isnan(s)) else f"{s:.4f}") for s in frame["score"]
    ]
    return frame.to_string(index=False)


def write_scores(results: list[TaskResult], path: Path) -> None:
    """The scores table as a tab-separated file (six decimals)."""
    atomic_write(path, lambda tmp: scores_frame(results).to_csv(tmp, sep="\t", index=False, float_format="%.6f"))
