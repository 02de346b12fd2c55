"""The comparison table: task rows grouped by track, per-track Overall rows, best per row,
mean ± std over runs, 95 % bootstrap intervals from stored predictions, Δ against a baseline on
the tasks both systems have (paired bootstrap: within noise or not), missing cells kept missing."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..metrics import higher_is_better
from ..results import overall
from . import stats
from .collect import System, find_system

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
    ci: tuple[float, float] | None = None  # 95 % bootstrap interval (of the difference, in a Δ cell)
    within_noise: bool = False  # a Δ whose paired-bootstrap interval includes 0
    p_value: float | None = None  # a Δ's paired-bootstrap p-value


def _with_interval(cell: Cell, resampled: stats.Resampled | None, difference: bool = False) -> Cell:
    """``cell`` with the interval (and, for a difference, the noise verdict) of ``resampled``."""
    if resampled is not None:
        cell.ci = resampled.interval()
        if difference:
            cell.within_noise, cell.p_value = resampled.within_noise, resampled.p_value
    return cell


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
    """Rows of cells, one per system; ``shared[i]``: the tasks system i and the baseline both have
    (the Δ of its Overall is taken over them); ``resamples``: bootstrap resamples behind the
    intervals (0: none drawn)."""

    systems: list[System]
    rows: list[Row]
    baseline: int | None = None
    shared: dict[int, list[str]] = field(default_factory=dict)
    resamples: int = 0

    @property
    def has_intervals(self) -> bool:
        """Whether some cell carries a bootstrap interval."""
        return any(c is not None and c.ci is not None for r in self.rows for c in [*r.cells, *r.deltas])


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


class _Intervals:
    """Bootstrap values of a table's systems, computed once per (system, task) and pair."""

    def __init__(self, systems: list[System], resamples: int, seed: int) -> None:
        self.systems, self.resamples, self.seed = systems, resamples, seed
        self._single: dict[tuple[int, str], stats.Resampled | None] = {}
        self._paired: dict[tuple[int, int, str], stats.Resampled | None] = {}

    def _frames(self, i: int, task: str):
        system = self.systems[i]
        if self.resamples <= 0 or not system.sources or task not in system.metrics:
            return None
        return stats.run_frames(system.sources, task)

    def single(self, i: int, task: str) -> stats.Resampled | None:
        if (i, task) not in self._single:
            frames, system = self._frames(i, task), self.systems[i]
            self._single[i, task] = frames and stats.safely(
                f"{system.label}, {task}",
                stats.bootstrap,
                task,
                system.metrics[task],
                frames,
                self.resamples,
                self.seed,
            )
        return self._single[i, task]

    def paired(self, i: int, j: int, task: str) -> stats.Resampled | None:
        if (i, j, task) not in self._paired:
            a, b = self._frames(i, task), self._frames(j, task)
            metric = self.systems[i].metrics.get(task)
            result = (
                stats.safely(
                    f"{self.systems[i].label} vs {self.systems[j].label}, {task}",
                    stats.paired,
                    task,
                    metric,
                    a,
                    b,
                    self.resamples,
                    self.seed,
                )
                if a and b and metric == self.systems[j].metrics.get(task)
                else None
            )
            self._paired[i, j, task] = result and result.difference
        return self._paired[i, j, task]

    def overall(self, parts: list[tuple[stats.Resampled | None, float]]) -> stats.Resampled | None:
        """The Overall of task values, when every task has its resamples."""
        return stats.combine(parts) if parts and all(p is not None for p, _ in parts) else None


def build_table(
    systems: list[System],
    baseline: str | System | None = None,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Table:
    """Rows: each track's tasks (sorted), then its Overall (the official weighted mean of the task
    scores, ``results.overall``); tracks A, B, then any others. The best value of a row follows
    its metric's direction. Cells of systems whose runs kept their predictions get a 95 % bootstrap
    interval (``resamples`` draws, seeded; 0 turns them off). ``baseline``: a system, or a name
    :func:`find_system` resolves, for Δ columns: each system minus the baseline on the tasks both
    have, its Overall recomputed on those tasks, with the paired-bootstrap verdict."""
    tasks_by_track: dict[str, set[str]] = {}
    for system in systems:
        for task, track in system.tracks.items():
            tasks_by_track.setdefault(track, set()).add(task)
    base_index = None
    if baseline is not None:
        base_index = systems.index(baseline if isinstance(baseline, System) else find_system(baseline, systems))
    intervals = _Intervals(systems, resamples, seed)
    rows = []
    for track in sorted(tasks_by_track, key=lambda t: (TRACK_ORDER.get(t, 9), t)):
        tasks = sorted(tasks_by_track[track])
        for task in tasks:
            cells = [_with_interval(_task_cell(s, task), intervals.single(i, task)) for i, s in enumerate(systems)]
            _mark_best(cells, _direction(systems, [task]))
            rows.append(Row(task, track, False, cells, unofficial=any(c.unofficial for c in cells)))
        cells = [
            _with_interval(
                _overall_cell(s, track, tasks),
                intervals.overall([(intervals.single(i, t), s.weights.get(t, 1.0)) for t in tasks if s.runs.get(t)]),
            )
            for i, s in enumerate(systems)
        ]
        _mark_best(cells, _direction(systems, tasks))
        rows.append(Row(f"Track {track} Overall", track, True, cells, unofficial=any(c.unofficial for c in cells)))
    table = Table(systems, rows, base_index, resamples=resamples)
    if base_index is not None:
        _add_deltas(table, intervals)
    return table


def _add_deltas(table: Table, intervals: _Intervals) -> None:
    """Δ cells: a task's when both systems have it; an Overall's over the track's shared tasks."""
    base = table.baseline
    base_system = table.systems[base]
    for i, system in enumerate(table.systems):
        if i != base:
            table.shared[i] = sorted(t for t in system.runs if base_system.runs.get(t) and system.runs[t])
    for row in table.rows:
        row.deltas = [None] * len(table.systems)
        for i, system in enumerate(table.systems):
            if i == base:
                continue
            if not row.overall:
                if row.label in table.shared[i]:
                    cell = Cell(mean=row.cells[i].mean - row.cells[base].mean)
                    row.deltas[i] = _with_interval(cell, intervals.paired(i, base, row.label), difference=True)
                else:
                    row.deltas[i] = Cell()
                continue
            shared = [t for t in table.shared[i] if system.tracks[t] == row.track]
            if not shared:
                row.deltas[i] = Cell()
                continue
            cell = Cell(mean=_overall(system, shared) - _overall(base_system, shared))
            parts = [(intervals.paired(i, base, t), system.weights.get(t, 1.0)) for t in shared]
            row.deltas[i] = _with_interval(cell, intervals.overall(parts), difference=True)
