"""PNG charts of a comparison table (headless: the Agg backend, no display needed)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..atomic import atomic_write
from .table import Table


def _bars(ax, labels: list[str], series: dict[str, list[float | None]]) -> None:
    width = 0.8 / max(1, len(series))
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=min(3, len(series)))


def write_plots(table: Table, out_dir: Path, stem: str = "leaderboard") -> list[Path]:
    """A per-task grouped bar chart and a track-overall chart; returns the PNG paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [s.label + (" (published)" if s.published else "") + ("" if s.official else " §") for s in table.systems]
    paths = []
    for suffix, rows, size in (
        ("tasks", [r for r in table.rows if not r.overall], (12, 5)),
        ("overall", [r for r in table.rows if r.overall], (6, 4)),
    ):
        fig, ax = plt.subplots(figsize=size)
        _bars(ax, [r.label for r in rows], {n: [r.cells[i].mean for r in rows] for i, n in enumerate(names)})
        ax.set_ylabel("score")
        fig.tight_layout()
        # format given: the temporary file's suffix is not .png
        paths.append(atomic_write(out_dir / f"{stem}_{suffix}.png", partial(fig.savefig, format="png", dpi=100)))
        plt.close(fig)
    return paths
