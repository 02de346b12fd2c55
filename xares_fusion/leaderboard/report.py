"""`xares-fusion leaderboard`: records (+ published references) -> tables, plots, the README."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_write_text
from ..config import ConfigError, TaskConfig, catalogue, load_task, search_roots
from ..results import RECORD_FILE
from .collect import System, load_names, load_records, load_reference, systems_from_records
from .plots import write_plots
from .render import NOTES, to_csv, to_html, to_latex, to_markdown
from .table import Table, build_table

FORMATS = ("md", "csv", "latex", "html")
SUFFIX = {"md": "md", "csv": "csv", "latex": "tex", "html": "html"}


def reference_dir() -> Path:
    """leaderboard/reference/ of the checkout (or of the first config root that has one)."""
    for root in search_roots():
        if (root / "leaderboard" / "reference").is_dir():
            return root / "leaderboard" / "reference"
    raise ConfigError("no leaderboard/reference/ directory found beside tasks/ and recipes/.")


def shipped_tasks() -> dict[str, TaskConfig]:
    """Every shipped task by name (reference tables name tasks by our task names)."""
    return {name: load_task(name) for name, kind in catalogue("tasks").items() if kind == "task"}


def _render(fmt: str, table: Table, title: str, images: list[str]) -> str:
    if fmt == "md":
        return to_markdown(table, title)
    if fmt == "csv":
        return to_csv(table)
    if fmt == "latex":
        return to_latex(table, title)
    return to_html(table, title, images)


def make_report(
    results: list[Path],
    fmt: str = "md",
    baseline: str | None = None,
    plots_dir: Path | None = None,
    with_reference: bool = False,
    names_file: Path | None = None,
    references: Path | None = None,
) -> tuple[str, list[Path]]:
    """Tables of the given records and, with ``with_reference``, one table per published reference
    (``references`` folder, default leaderboard/reference/) with our systems beside them; PNG
    plots of every table into ``plots_dir`` when given. Returns the text and the plot paths."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {FORMATS}.")
    own = systems_from_records(load_records(results), load_names(names_file)) if results else []
    if baseline is not None and baseline not in [s.label for s in own] and not with_reference:
        raise ConfigError(f"--baseline {baseline!r} is not one of the systems: {[s.label for s in own]}")
    sections: list[tuple[str, list[System]]] = [("Our runs", own)] if own else []
    if with_reference:
        tasks = shipped_tasks()
        for path in sorted((references or reference_dir()).glob("*.yaml")):
            published = load_reference(path, tasks)
            title = published[0].identity["source"] + (" — published, with our runs beside it" if own else "")
            sections.append((title, published + own))
    if not sections:
        raise ConfigError(
            "no result records found; give run directories or result.json files "
            "(or --with-reference for the published tables alone)."
        )
    texts, images = [], []
    for i, (title, systems) in enumerate(sections):
        # the baseline applies to the tables that contain it
        table = build_table(systems, baseline if baseline in [s.label for s in systems] else None)
        pngs = write_plots(table, plots_dir, f"leaderboard_{i + 1}") if plots_dir is not None else []
        images += pngs
        texts.append(_render(fmt, table, title, [p.name for p in pngs]))
    text = "\n".join(texts) + ("\n" + NOTES + "\n" if fmt == "md" else "")
    return text, images


README_HEADER = """# Leaderboard

Regenerated from the records under this folder by `xares-fusion leaderboard --update-readme`
(do not edit by hand). `reference/` holds published tables transcribed from the source papers;
`runs/` holds result records of our own runs (copy a run's `result.json` into `runs/<system>/`
and regenerate).

"""


def update_readme(folder: Path) -> Path:
    """Rewrite ``folder``/README.md and ``folder``/plots/ from ``folder``/runs and ``folder``/reference."""
    runs = folder / "runs"
    records = [runs] if runs.is_dir() and any(runs.rglob(RECORD_FILE)) else []
    text, images = make_report(
        records, "md", with_reference=True, plots_dir=folder / "plots", references=folder / "reference"
    )
    figures = "\n".join(f"![{p.stem}](plots/{p.name})" for p in images)
    return atomic_write_text(folder / "README.md", README_HEADER + text + "\n" + figures + "\n")
