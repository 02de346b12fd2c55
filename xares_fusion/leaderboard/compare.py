"""`xares-fusion leaderboard --compare A B`: the paired bootstrap test of two systems on the rows
both answered, per task, per track Overall and Overall (docs/leaderboard.md)."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from ..metrics import higher_is_better
from ..results import overall
from . import stats
from .collect import System, find_system, load_names, load_records, systems_from_records
from .table import TRACK_ORDER

log = logging.getLogger("xares_fusion")


@dataclass
class ComparisonRow:
    """One line of a comparison: A's and B's scores on the rows both answered and A − B with its
    paired-bootstrap resamples (None where a run kept no predictions, ``note`` says so)."""

    label: str
    metric: str
    rows: int
    a: float | None
    b: float | None
    difference: stats.Resampled | None
    higher_is_better: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        """'within noise' when the 95 % interval includes 0, else which system is better."""
        if self.difference is None:
            return self.note
        if self.difference.within_noise:
            return "within noise"
        return "A better" if (self.difference.value > 0) == self.higher_is_better else "B better"


def compare_systems(
    a: System, b: System, resamples: int = stats.DEFAULT_RESAMPLES, seed: int = 0
) -> list[ComparisonRow]:
    """Per task both systems scored with the same metric, the paired bootstrap of A − B; then per
    track and over all tasks the Overall: the official weighted mean of the per-task differences
    (each task resampled on its own rows), over the tasks whose predictions both runs kept."""
    tasks = sorted(
        (t for t in a.runs if t in b.runs and a.metrics.get(t) == b.metrics.get(t)),
        key=lambda t: (TRACK_ORDER.get(a.tracks[t], 9), a.tracks[t], t),
    )
    if not tasks:
        raise ConfigError(f"--compare: {a.display} and {b.display} share no task scored with the same metric.")
    rows: list[ComparisonRow] = []
    by_track: dict[str, list[tuple[ComparisonRow, float]]] = {}
    for task in tasks:
        frames_a, frames_b = stats.run_frames(a.sources, task), stats.run_frames(b.sources, task)
        result = (
            stats.safely(
                f"{a.label} vs {b.label}, {task}",
                stats.paired,
                task,
                a.metrics[task],
                frames_a,
                frames_b,
                resamples,
                seed,
            )
            if frames_a and frames_b
            else None
        )
        direction = higher_is_better(a.metrics[task])
        if result is None:
            row = ComparisonRow(task, a.metrics[task], 0, None, None, None, direction, "no paired predictions")
        else:
            row = ComparisonRow(task, a.metrics[task], result.difference.rows, result.a, result.b, result.difference)
            row.higher_is_better = direction
            by_track.setdefault(a.tracks[task], []).append((row, a.weights.get(task, 1.0)))
        rows.append(row)
    groups = [(f"Track {t} Overall", parts) for t, parts in by_track.items()]
    if len(by_track) > 1:
        groups.append(("Overall", [p for parts in by_track.values() for p in parts]))
    for label, parts in groups:
        rows.append(
            ComparisonRow(
                label,
                f"weighted mean of {len(parts)} tasks",
                sum(r.rows for r, _ in parts),
                overall((r.a, w) for r, w in parts),
                overall((r.b, w) for r, w in parts),
                stats.combine([(r.difference, w) for r, w in parts]),
                all(r.higher_is_better for r, _ in parts),
            )
        )
    return rows


COLUMNS = ["task", "metric", "rows", "A", "B", "A - B", "ci_low", "ci_high", "p_value", "verdict"]


def _fields(row: ComparisonRow) -> list[str]:
    number = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    d = row.difference
    low, high = d.interval() if d is not None else (None, None)
    return [
        row.label,
        row.metric,
        str(row.rows),
        number(row.a),
        number(row.b),
        number(d and d.value),
        number(low),
        number(high),
        number(d and d.p_value),
        row.verdict,
    ]


def compare_text(rows: list[ComparisonRow], a: System, b: System, fmt: str, resamples: int, seed: int) -> str:
    """The comparison as Markdown (a table with its caption) or CSV (numbers in their own columns)."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerows([COLUMNS, *(_fields(r) for r in rows)])
        return buffer.getvalue()
    lines = [
        f"### Paired bootstrap: A = {a.display}, B = {b.display}",
        "",
        "| Task | metric | rows | A | B | A − B | 95 % interval | p | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        f = _fields(row)
        interval = f"[{f[6]}, {f[7]}]" if f[6] else "–"
        lines.append(
            "| "
            + " | ".join([*(x or "–" for x in f[:3]), *(x or "–" for x in f[3:6]), interval, f[8] or "–", f[9]])
            + " |"
        )
    lines += [
        "",
        f"Paired bootstrap over the rows both systems answered (matched by sample index and key), {resamples} "
        f"resamples, seed {seed}; p: two-sided, shifted-null. An Overall is the official weighted mean of the "
        "per-task differences, each task resampled on its own rows, over the tasks both runs kept predictions of. "
        "'within noise': the 95 % interval of the difference includes 0.",
    ]
    return "\n".join(lines) + "\n"


def compare_report(
    results: list[Path],
    first: str,
    second: str,
    fmt: str = "md",
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    names_file: Path | None = None,
) -> str:
    """Resolve ``first`` and ``second`` among the systems of ``results`` (as ``--baseline`` is
    resolved) and compare them."""
    if fmt not in ("md", "csv"):
        raise ConfigError(f"--compare prints md or csv, not {fmt!r}.")
    if resamples <= 0:
        raise ConfigError("--compare needs --bootstrap N with N > 0 resamples.")
    systems = systems_from_records(load_records(results), load_names(names_file))
    a, b = find_system(first, systems, "--compare"), find_system(second, systems, "--compare")
    for name, query, system in (("A", first, a), ("B", second, b)):
        log.info(
            "leaderboard: --compare %s = %r matched %r (identity %s)", name, query, system.display, system.identity
        )
    if a is b:
        raise ConfigError(f"--compare: {first!r} and {second!r} are the same system ({a.display}).")
    return compare_text(compare_systems(a, b, resamples, seed), a, b, fmt, resamples, seed)
