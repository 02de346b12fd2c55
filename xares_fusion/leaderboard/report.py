"""`xares-fusion leaderboard`: records (+ published references) -> tables, plots, the README."""

from __future__ import annotations

import logging
from pathlib import Path

from ..atomic import atomic_write_text
from ..config import ConfigError, TaskConfig, catalogue, load_task, search_roots
from ..results import RECORD_FILE
from .collect import System, find_system, load_names, load_records, load_reference, systems_from_records
from .plots import write_plots
from .render import NOTES, to_csv, to_html, to_latex, to_markdown
from .stats import DEFAULT_RESAMPLES
from .table import Table, build_table

log = logging.getLogger("xares_fusion")

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


def _beside_reference(own: list[System], published: list[System], title: str) -> list[System]:
    """Our systems that may stand beside a published table: only their tasks of that table, and
    only runs over whole test sets (no row limit) that share a task with it, so a mini-suite or
    truncated run never enters a published table."""
    tasks = {t for s in published for t in s.runs}
    beside = []
    for system in own:
        if system.limit is not None:
            log.info("leaderboard: %s left out of %r: evaluated on %d rows per task", system.label, title, system.limit)
        elif not tasks & set(system.runs):
            log.info("leaderboard: %s left out of %r: no task in common with it", system.label, title)
        else:
            beside.append(system.restricted(tasks))
    return beside


def _baseline(query: str | None, sections: list[tuple[str, list[System]]]) -> list[System | None]:
    """The baseline of each section (None where it is absent); an error when it is in none."""
    if query is None:
        return [None] * len(sections)
    found: list[System | None] = []
    for title, systems in sections:
        try:
            match = find_system(query, systems)
        except ConfigError as err:
            if "ambiguous" in str(err):
                raise
            match = None
        if match is not None:
            log.info(
                "leaderboard: --baseline %r matched %r (identity %s) in %r", query, match.display, match.identity, title
            )
        found.append(match)
    if not any(found):
        find_system(query, [s for _, systems in sections for s in systems])  # raises, listing the candidates
    return found


def make_report(
    results: list[Path],
    fmt: str = "md",
    baseline: str | None = None,
    plots_dir: Path | None = None,
    with_reference: bool = False,
    names_file: Path | None = None,
    references: Path | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[str, list[Path]]:
    """Tables of the given records and, with ``with_reference``, one table per published reference
    (``references`` folder, default leaderboard/reference/) with those of our systems that ran
    the same tasks beside them; PNG plots of every table into ``plots_dir`` when given. Cells get
    95 % bootstrap intervals from the runs' stored predictions (``resamples`` draws, seeded by
    ``seed``; 0 turns them off). Returns the text and the plot paths."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {FORMATS}.")
    own = systems_from_records(load_records(results), load_names(names_file)) if results else []
    sections: list[tuple[str, list[System]]] = [("Our runs", own)] if own else []
    if with_reference:
        tasks = shipped_tasks()
        for path in sorted((references or reference_dir()).glob("*.yaml")):
            published = load_reference(path, tasks)
            source = published[0].source or path.stem
            beside = _beside_reference(own, published, source)
            sections.append((source + (" — published, with our runs beside it" if beside else ""), published + beside))
    if not sections:
        raise ConfigError(
            "no result records found; give run directories or result.json files "
            "(or --with-reference for the published tables alone)."
        )
    texts, images = [], []
    for i, ((title, systems), base) in enumerate(zip(sections, _baseline(baseline, sections))):
        table = build_table(systems, base, resamples, seed)
        pngs = write_plots(table, plots_dir, f"leaderboard_{i + 1}", _short(title)) if plots_dir is not None else []
        images += pngs
        texts.append(_render(fmt, table, title, [p.name for p in pngs]))
    text = "\n".join(texts) + ("\n" + NOTES + "\n" if fmt == "md" else "")
    return text, images


def _short(title: str) -> str:
    """A plot title: 'Table 1 (published)' for '<paper>, Table 1', else the title."""
    if ", Table " not in title:
        return title
    number, _, rest = title.split(", Table ")[1].partition(" — ")
    return f"Table {number} ({rest or 'published'})"


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
