"""The comparison table: task rows grouped by track, per-track Overall rows, best per row,
mean ± std over runs, Δ against a baseline, missing cells kept missing."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..metrics import higher_is_better
from ..results import overall
from .collect import System

TRACK_ORDER = {"A": 0, "B": 1}
MATCH_TOLERANCE = 0.001  # a printed Overall this far or further from the Overall of its rows is flagged


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
    return Cell(
        mean=statistics.fmean(values),
        std=std,
        runs=system.published_runs or len(values),
        unofficial=task in system.unofficial,
    )


def _overall(system: System, tasks: list[str], run: int | None = None) -> float | None:
    """The official Overall of ``tasks``: the mean over runs of each task, or run ``run`` of each."""
    return overall(
        (statistics.fmean(system.runs[t]) if run is None else system.runs[t][run], system.weights.get(t, 1.0))
        for t in tasks
    )


def _overall_cell(system: System, track: str, tasks: list[str]) -> Cell:
    present = [t for t in tasks if system.runs.get(t)]
    if not present:
        return Cell()
    mean = _overall(system, present)
    cell = Cell(
        mean=mean,
        covered=(len(present), len(tasks)) if len(present) < len(tasks) else None,
        unofficial=any(t in system.unofficial for t in present),
    )
    run_counts = {len(system.runs[t]) for t in present}
    if len(run_counts) == 1 and (n := run_counts.pop()) > 1:  # every task has the same runs: std of run overalls
        cell.std, cell.runs = statistics.stdev(_overall(system, present, r) for r in range(n)), n
    printed = system.printed_overall.get(track)
    if printed is not None:
        if cell.std is None:
            cell.std = printed[1]
        # Rounded first: a difference of exactly one unit in the third decimal (rows averaging
        # 0.444, printed 0.445) is flagged whichever way the float sum of the rows rounds.
        if round(abs(printed[0] - mean), 9) >= MATCH_TOLERANCE:
            cell.printed = printed[0]
    return cell


def _direction(systems: list[System], tasks: list[str]) -> bool | None:
    """True when a higher value is better for every metric the systems score ``tasks`` with
    (from the metric registry), False when lower is better for all; None when they disagree."""
    directions = {higher_is_better(s.metrics[t]) for s in systems for t in tasks if t in s.metrics}
    return directions.pop() if len(directions) == 1 else None


def _mark_best(cells: list[Cell], higher: bool | None) -> None:
    """Bold the best mean at the printed precision (none when the direction is mixed)."""
    values = [round(c.mean, 3) for c in cells if c.mean is not None]
    if len(values) > 1 and higher is not None:
        best = max(values) if higher else min(values)
        for c in cells:
            c.best = c.mean is not None and round(c.mean, 3) == best


def build_table(systems: list[System], baseline: str | None = None) -> Table:
    """Rows: each track's tasks (sorted), then its Overall (the official weighted mean of the task
    scores, ``results.overall``); tracks A, B, then any others. The best value of a row follows
    its metric's direction. ``baseline``: a system label for Δ columns."""
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
            _mark_best(cells, _direction(systems, [task]))
            rows.append(Row(task, track, False, cells, unofficial=any(c.unofficial for c in cells)))
        cells = [_overall_cell(s, track, tasks) for s in systems]
        _mark_best(cells, _direction(systems, tasks))
        rows.append(Row(f"Track {track} Overall", track, True, cells, unofficial=any(c.unofficial for c in cells)))
    if base_index is not None:
        for row in rows:
            base = row.cells[base_index].mean
            row.deltas = [
                None if i == base_index else Cell(mean=None if c.mean is None or base is None else c.mean - base)
                for i, c in enumerate(row.cells)
            ]
    return Table(systems, rows, base_index)
