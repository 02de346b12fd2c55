"""PNG charts of a comparison table (headless: the Agg backend, no display needed).

Sized for a paper: the per-task chart spans a full page width (7 in), the Overall chart one
column (3.3 in); every text is at least 7 pt at 100 %. Each system is one bar series named by its
full display name (group and label, so two 'w/o STFT' columns stay two series); bars of a proxy
metric are hatched (legend entry 'proxy metric'); error bars are the 95 % bootstrap interval where
the run kept its predictions, else ± std over runs; '≈' over a bar marks a Δ to the baseline
within noise.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from ..atomic import atomic_write
from .render import WITHIN_NOISE
from .table import Cell, Row, Table

PAGE_WIDTH = 7.0  # inches: a two-column paper's full width
COLUMN_WIDTH = 3.3  # inches: one column
FONT = {
    "font.size": 7,
    "axes.titlesize": 8,
    "axes.labelsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
}
PROXY_HATCH = "////"
Y_LABEL = "score (0–1, higher = better)"


def series_names(table: Table) -> list[str]:
    """One legend name per system: group and label, '(published)' where the table mixes published
    and our systems, '§' where a system departs from the official pipeline."""
    mixed = len({s.published for s in table.systems}) > 1
    return [
        s.display + (" (published)" if s.published and mixed else "") + ("" if s.official else " §")
        for s in table.systems
    ]


def _error(cell: Cell) -> tuple[float, float]:
    """(below, above) the bar: the bootstrap interval, else ± std, else NaN (no error bar drawn)."""
    if cell.mean is not None and cell.ci is not None:
        return max(0.0, cell.mean - cell.ci[0]), max(0.0, cell.ci[1] - cell.mean)
    if cell.mean is not None and cell.std is not None:
        return cell.std, cell.std
    return np.nan, np.nan


def _bars(ax, table: Table, rows: list[Row], colors: list) -> None:
    """Grouped bars: one group per row, one bar per system."""
    n = len(table.systems)
    width = 0.8 / max(1, n)
    x = np.arange(len(rows))
    for i in range(n):
        cells = [r.cells[i] for r in rows]
        heights = np.array([np.nan if c.mean is None else c.mean for c in cells])
        errors = np.array([_error(c) for c in cells]).T
        positions = x + (i - (n - 1) / 2) * width
        bars = ax.bar(
            positions,
            heights,
            width,
            color=colors[i],
            edgecolor="black",
            linewidth=0.3,
            yerr=errors if not np.isnan(errors).all() else None,
            error_kw={"elinewidth": 0.6, "capsize": 1.0, "ecolor": "black"},
        )
        for bar, cell in zip(bars, cells):
            if cell.unofficial:
                bar.set_hatch(PROXY_HATCH)
        for position, row, cell in zip(positions, rows, cells):
            delta = row.deltas[i] if row.deltas else None
            if delta is not None and delta.within_noise and cell.mean is not None:
                top = cell.ci[1] if cell.ci is not None else cell.mean
                ax.text(position, top + 0.01, WITHIN_NOISE, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [r.label.replace(" Overall", "") for r in rows], rotation=45 if len(rows) > 4 else 0, ha="right")
    if len(rows) <= 4:
        for label in ax.get_xticklabels():
            label.set_ha("center")
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(Y_LABEL)
    ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    ax.set_axisbelow(True)


def _legend(fig, table: Table, colors: list, columns: int) -> None:
    handles = [
        Patch(facecolor=c, edgecolor="black", linewidth=0.3, label=name) for c, name in zip(colors, series_names(table))
    ]
    if any(c.unofficial for r in table.rows for c in r.cells):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=PROXY_HATCH, label="proxy metric (†)"))
    if any(d is not None and d.within_noise for r in table.rows for d in r.deltas):
        base = table.systems[table.baseline].display
        # a text entry: a '≈' marker renders as a blot at legend size
        handles.append(Patch(facecolor="none", edgecolor="none", label=f"{WITHIN_NOISE}: Δ to {base} within noise"))
    # Below the axes: above them it would collide with the figure title.
    fig.legend(handles=handles, loc="outside lower center", ncol=columns, frameon=False)


def _error_note(table: Table) -> str:
    """A second title line saying what the error bars are, empty when there are none."""
    cells = [c for r in table.rows for c in r.cells if c.mean is not None]
    kinds = [
        text
        for text, present in (
            ("95 % bootstrap interval", any(c.ci is not None for c in cells)),
            ("± std over runs", any(c.ci is None and c.std is not None for c in cells)),
        )
        if present
    ]
    return "\nerror bars: " + ", else ".join(kinds) if kinds else ""


def _colors(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def write_plots(table: Table, out_dir: Path, stem: str = "leaderboard", title: str = "Leaderboard") -> list[Path]:
    """A per-task grouped bar chart (one panel per track, full page width) and a track-Overall
    chart (one column wide) titled with ``title``; returns the PNG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors(len(table.systems))
    tracks = list(dict.fromkeys(r.track for r in table.rows))
    note = _error_note(table)
    paths = []
    with plt.rc_context(FONT):
        task_rows = {t: [r for r in table.rows if r.track == t and not r.overall] for t in tracks}
        fig, axes = plt.subplots(
            len(tracks),
            1,
            figsize=(PAGE_WIDTH, 1.0 + 2.1 * len(tracks)),
            layout="constrained",
            squeeze=False,
            gridspec_kw={"height_ratios": [1] * len(tracks)},
        )
        for ax, track in zip(axes[:, 0], tracks):
            _bars(ax, table, task_rows[track], colors)
            ax.set_title(f"Track {track}: per-task scores", loc="left")
            ax.set_xlabel("task")
        _legend(fig, table, colors, columns=3)
        fig.suptitle(title + note, fontsize=8)
        paths.append(_save(fig, out_dir / f"{stem}_tasks.png"))

        overall_rows = [r for r in table.rows if r.overall]
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 2.2 + 0.16 * len(table.systems)), layout="constrained")
        _bars(ax, table, overall_rows, colors)
        ax.set_xlabel("track Overall (official weighted mean of task scores)")
        _legend(fig, table, colors, columns=2)
        fig.suptitle(f"{title}: Overall per track{note}", fontsize=8)
        paths.append(_save(fig, out_dir / f"{stem}_overall.png"))
    return paths


def _save(fig, path: Path) -> Path:
    # format given: the temporary file's suffix is not .png
    written = atomic_write(path, partial(fig.savefig, format="png", dpi=200))
    plt.close(fig)
    return written
