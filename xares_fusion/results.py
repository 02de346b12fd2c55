"""Result records with provenance, the scores table and its 'Overall' row (no torch import here
beyond reading versions, so leaderboards can load records anywhere)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

RECORD_FILE = "result.json"
SCORES_FILE = "scores.tsv"
RECORD_VERSION = 1


@dataclass
class TaskResult:
    """One task's outcome. ``score`` is None when scoring failed (``error`` says why)."""

    task: str
    metric: str
    score: float | None
    weight: float = 1.0
    track: str | None = None
    rows: int = 0
    skips: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cache_key: str | None = None
    unofficial: bool = False
    routing: dict[str, Any] | None = None  # routing/gating statistics of fusions and MoE projectors


def weighted_overall(results: list[TaskResult]) -> float | None:
    """sum(w * score) / sum(w) over all tasks; None when any task has no score (never a 0)."""
    if not results or any(r.score is None for r in results):
        return None
    total = sum(r.weight for r in results)
    if total <= 0:
        return None
    return sum(r.weight * r.score for r in results) / total


def _overall_row(label: str, results: list[TaskResult]) -> dict[str, Any]:
    unofficial = any(r.unofficial for r in results)
    return {"Task": label, "metric": "weighted mean" + (" (unofficial)" if unofficial else ""),
            "score": weighted_overall(results), "weight": sum(r.weight for r in results)}


def scores_frame(results: list[TaskResult]) -> pd.DataFrame:
    """Task | metric | score | weight, sorted by task, then a weighted 'Track X Overall' row per
    track when several tracks are present, then the weighted 'Overall' row. An overall that
    includes an unofficial proxy metric says so."""
    frame = pd.DataFrame([{"Task": r.task, "metric": r.metric + (" (unofficial)" if r.unofficial else ""),
                           "score": r.score, "weight": r.weight} for r in results])
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
    frame["score"] = [("n/a" if s is None or (isinstance(s, float) and math.isnan(s)) else f"{s:.4f}")
                      for s in frame["score"]]
    return frame.to_string(index=False)


def write_scores(results: list[TaskResult], path: Path) -> None:
    scores_frame(results).to_csv(path, sep="\t", index=False, float_format="%.6f")


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(device: str) -> dict[str, Any]:
    """Package versions, git revision, machine and device."""
    versions = {}
    for pkg in ("xares-fusion", "torch", "transformers", "peft", "accelerate", "webdataset", "jiwer",
                "scikit-learn", "numpy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "git_revision": _git_revision(), "python": platform.python_version(),
            "platform": platform.platform(), "device": device,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_record(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)


def task_results_from_record(record: dict[str, Any]) -> list[TaskResult]:
    return [TaskResult(**t) for t in record["tasks"]]


def record_tasks(results: list[TaskResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
