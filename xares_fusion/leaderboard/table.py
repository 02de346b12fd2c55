"""The comparison table: task rows grouped by track, per-track Overall rows, best per row,
mean ± std over runs, Δ against a baseline, missing cells kept missing."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .collect import System

TRACK_ORDER = {"A": 0, "B": 1}
MATCH_TOLERANCE = 0.001  # a printed Overall further than this from the mean of its rows is flagged


@dataclass
class Cell:
    """One value: mean (None = missing), std over runs, number of runs; for Overall rows the
    tasks covered (k of n) and a differing printed value; flags for rendering."""

    mean: float | None = None
    std: float | None = None
    runs: int = 0
    covered: tuple[int, int] | None = None
    printed: float | None = None
    unofficial: bool = False
    best: bool = False


@dataclass
class Row:
    label: str
    track: str
    overall: bool
    cells: list[Cell]
    deltas: list[Cell | None] = field(default_factory=list)
    unofficial: bool = False


@dataclass
class Table:
    systems: list[System]
    rows: list[Row]
    baseline: int | None = None


def _task_cell(system: System, task: str) -> Cell:
    values = system.runs.get(task)
    if not values:
        return Cell()
    std = system.published_std.get(task)
    if std is None and len(values) > 1:
        std = statistics.stdev(values)
    return Cell(mean=statistics.fmean(values), std=std, runs=system.published_runs or len(values),
                unofficial=task in system.unofficial)


def _overall_cell(system: System, track: str, tasks: list[str]) -> Cell:
    present = [t for t in tasks if system.runs.get(t)]
    if not present:
        return Cell()
    mean = statistics.fmean(statistics.fmean(system.runs[t]) for t in present)
    cell = Cell(mean=mean, covered=(len(present), len(tasks)) if len(present) < len(tasks) else None,
                unofficial=any(t in system.unofficial for t in present))
    run_counts = {len(system.runs[t]) for t in present}
    if len(run_counts) == 1 and (n := run_counts.pop()) > 1:   # every task has the same runs: std of run overalls
        cell.std, cell.runs = statistics.stdev(statistics.fmean(system.runs[t][r] for t in present)
                                               for r in range(n)), n
    printed = system.printed_overall.get(track)
    if printed is not None:
        if cell.std is None:
            cell.std = printed[1]
        if abs(printed[0] - mean) > MATCH_TOLERANCE:
            cell.printed = printed[0]
    return cell


def _mark_best(cells: list[Cell]) -> None:
    """Bold the highest mean at the printed precision (every AECC metric is higher-is-better)."""
    values = [round(c.mean, 3) for c in cells if c.mean is not None]
    if len(values) > 1:
        for c in cells:
            c.best = c.mean is not None and round(c.mean, 3) == max(values)


def build_table(systems: list[System], baseline: str | None = None) -> Table:
    """Rows: each track's tasks (sorted), then its Overall (unweighted mean of task scores, the
    official rule); tracks A, B, then any others. ``baseline``: a system label for Δ columns."""
    tasks_by_track: dict[str, set[str]] = {}
    for system in systems:
        for task, track in system.tracks.items():
            tasks_by_track.setdefault(track, set()).add(task)
    base_index = None
    if baseline is not None:
        labels = [s.label for s in systems]
        if baseline not in labels:
            raise ValueError(f"--baseline {baseline!r} is not one of the systems: {labels}")
        base_index = labels.index(baseline)
    rows = []
    for track in sorted(tasks_by_track, key=lambda t: (TRACK_ORDER.get(t, 9), t)):
        tasks = sorted(tasks_by_track[track])
        for task in tasks:
            cells = [_task_cell(s, task) for s in systems]
            rows.append(Row(task, track, False, cells, unofficial=any(c.unofficial for c in cells)))
        cells = [_overall_cell(s, track, tasks) for s in systems]
        rows.append(Row(f"Track {track} Overall", track, True, cells, unofficial=any(c.unofficial for c in cells)))
    for row in rows:
        _mark_best(row.cells)
        if base_index is not None:
            base = row.cells[base_index].mean
            row.deltas = [None if i == base_index else
                          Cell(mean=None if c.mean is None or base is None else c.mean - base)
                          for i, c in enumerate(row.cells)]
    return Table(systems, rows, base_index)
