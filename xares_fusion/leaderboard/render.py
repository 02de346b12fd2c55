"""Render a comparison table as Markdown, LaTeX or HTML (one cell text, three markups, one
caption) or as CSV (one line per task and system, numbers in the score columns and each flag in
its own column)."""

from __future__ import annotations

import csv
import html
import io

from .stats import LEVEL
from .table import Cell, Table

MISSING = "–"
WITHIN_NOISE = "≈"
OVERALL_RULE = (
    "Overall: the official weighted mean sum(weight × score) / sum(weight) of the track's task scores "
    "(results.overall; every task weighs 1 unless its task file says otherwise)."
)
NOTES = (
    "† includes an unofficial proxy metric (the official model was not available). "
    "(k/n): Overall over the k of n tasks this system has. "
    "‡ the paper prints another Overall than the mean of its rows (printed value in brackets). "
    "(published): numbers transcribed from the paper, not reproduced here. "
    "§ departs from the official pipeline (bf16, another LLM or schedule, ...; the run's result.json "
    "lists each departure under 'parity'), so not comparable with the challenge's scores."
)


def _interval(cell: Cell) -> str:
    return "" if cell.ci is None else f" [{cell.ci[0]:.3f}, {cell.ci[1]:.3f}]"


def cell_text(cell: Cell) -> str:
    """'0.706', '0.706 ± 0.001' (std over runs), '0.706 [0.690, 0.721]' (bootstrap interval),
    '0.650 (14/15)', '0.435 ‡[0.400]', '0.512 †', or '–' when missing."""
    if cell.mean is None:
        return MISSING
    text = f"{cell.mean:.3f}"
    if cell.std is not None:
        text += f" ± {cell.std:.3f}"
    text += _interval(cell)
    if cell.covered:
        text += f" ({cell.covered[0]}/{cell.covered[1]})"
    if cell.printed is not None:
        text += f" ‡[{cell.printed:.3f}]"
    if cell.unofficial:
        text += " †"
    return text


def delta_text(cell: Cell | None) -> str:
    """'+0.210', '+0.210 [0.150, 0.270]' with its paired-bootstrap interval, '+0.010 [-0.020, 0.040] ≈'
    when that interval includes 0, or '–'."""
    if cell is None or cell.mean is None:
        return MISSING
    return f"{cell.mean:+.3f}" + _interval(cell) + (f" {WITHIN_NOISE}" if cell.within_noise else "")


def caption(table: Table) -> str:
    """What a reader needs to trust the table: the Overall rule, what Δ is taken over, and what
    the intervals are."""
    parts = [OVERALL_RULE]
    if table.baseline is not None:
        base = table.systems[table.baseline].display
        counts = {len(tasks) for tasks in table.shared.values()}
        over = (
            f"over the {counts.pop()} tasks both systems have"
            if len(counts) == 1
            else "over the tasks both systems have ("
            + ", ".join(f"{table.systems[i].display}: {len(t)}" for i, t in table.shared.items())
            + ")"
        )
        parts.append(f"Δ: each system minus {base}, {over}; the Δ of an Overall is recomputed on those tasks.")
    if table.has_intervals:
        parts.append(
            f"[low, high]: {LEVEL:.0%} bootstrap interval over the test rows ({table.resamples} resamples of "
            f"each run's predictions_<task>.csv); in a Δ column it is the paired bootstrap's, and "
            f"{WITHIN_NOISE} marks a difference within noise (its interval includes 0)."
        )
    return " ".join(parts)


def column_labels(table: Table, with_group: bool = True) -> list[str]:
    """Per system 'Group: label' (or the bare label where a group header row shows the group),
    '(published)' for transcribed ones, each followed by its Δ column when a baseline is set."""
    labels = []
    for i, system in enumerate(table.systems):
        name = (f"{system.group}: " if system.group and with_group else "") + system.label
        labels.append(name + (" (published)" if system.published else "") + ("" if system.official else " §"))
        if table.baseline is not None and i != table.baseline:
            labels.append(f"Δ {system.label}")
    return labels


def _row_cells(table: Table, row) -> list[tuple[str, bool]]:
    """(text, is best) per column: each system's cell, then its Δ when a baseline is set."""
    out = []
    for i, cell in enumerate(row.cells):
        out.append((cell_text(cell), cell.best))
        if table.baseline is not None and i != table.baseline:
            out.append((delta_text(row.deltas[i]), False))
    return out


def _row_label(row) -> str:
    return row.label + (" †" if row.unofficial and not row.overall else "")


def to_markdown(table: Table, title: str | None = None) -> str:
    """The table in Markdown, its caption below it."""
    header = ["Task", *column_labels(table)]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in table.rows:
        label = f"**{_row_label(row)}**" if row.overall else _row_label(row)
        lines.append(
            "| " + " | ".join([label, *(f"**{t}**" if best else t for t, best in _row_cells(table, row))]) + " |"
        )
    return "\n".join([*lines, "", caption(table)]) + "\n"


CSV_COLUMNS = [
    "task",
    "track",
    "overall",
    "system",
    "group",
    "identity",
    "published",
    "score",
    "std",
    "runs",
    "ci_low",
    "ci_high",
    "tasks_covered",
    "tasks_in_row",
    "printed_overall",
    "best",
    "proxy_metric",
    "departs_from_official",
    "missing",
    "baseline",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "delta_p_value",
    "within_noise",
]


def to_csv(table: Table) -> str:
    """One line per task (or Overall) and system, :data:`CSV_COLUMNS`: plain numbers in the score
    columns (empty when missing), every flag (proxy †, not significant, missing, ...) in its own
    column."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    base = None if table.baseline is None else table.systems[table.baseline].display
    for row in table.rows:
        for i, (system, cell) in enumerate(zip(table.systems, row.cells)):
            delta = row.deltas[i] if row.deltas else None
            number = lambda v: "" if v is None else f"{v:.6f}"  # noqa: E731
            writer.writerow(
                {
                    "task": row.label,
                    "track": row.track,
                    "overall": row.overall,
                    "system": system.display,
                    "group": system.group or "",
                    "identity": system.identity,
                    "published": system.published,
                    "score": number(cell.mean),
                    "std": number(cell.std),
                    "runs": cell.runs or "",
                    "ci_low": number(cell.ci and cell.ci[0]),
                    "ci_high": number(cell.ci and cell.ci[1]),
                    "tasks_covered": cell.covered[0] if cell.covered else "",
                    "tasks_in_row": cell.covered[1] if cell.covered else "",
                    "printed_overall": number(cell.printed),
                    "best": cell.best,
                    "proxy_metric": cell.unofficial,
                    "departs_from_official": not system.official,
                    "missing": cell.mean is None,
                    "baseline": base or "",
                    "delta": number(delta and delta.mean),
                    "delta_ci_low": number(delta and delta.ci and delta.ci[0]),
                    "delta_ci_high": number(delta and delta.ci and delta.ci[1]),
                    "delta_p_value": number(delta and delta.p_value),
                    "within_noise": "" if delta is None or delta.ci is None else delta.within_noise,
                }
            )
    return buffer.getvalue()


def _latex_escape(text: str) -> str:
    return (
        text.replace("\\", "\\textbackslash{}")
        .replace("&", "\\&")
        .replace("%", "\\%")
        .replace("_", "\\_")
        .replace("#", "\\#")
        .replace("±", "$\\pm$")
        .replace("Δ", "$\\Delta$")
        .replace("†", "$^\\dagger$")
        .replace("‡", "$^\\ddagger$")
        .replace("–", "--")
        .replace("×", "$\\times$")
        .replace("≈", "$\\approx$")
        .replace("<", "\\textless{}")
        .replace(">", "\\textgreater{}")
    )


def _groups(table: Table) -> list[tuple[str, int]]:
    """Consecutive column groups with their width (Δ columns belong to their system's group)."""
    spans: list[tuple[str, int]] = []
    for i, system in enumerate(table.systems):
        width = 1 + (table.baseline is not None and i != table.baseline)
        name = system.group or ""
        if spans and spans[-1][0] == name and name:
            spans[-1] = (name, spans[-1][1] + width)
        else:
            spans.append((name, width))
    return spans


def to_latex(table: Table, title: str | None = None) -> str:
    """The table as a LaTeX ``table`` (booktabs), the title and :func:`caption` as its caption."""
    columns = column_labels(table, with_group=False)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        "\\small",
        "\\begin{tabular}{l" + "r" * len(columns) + "}",
        "\\toprule",
    ]
    if any(g for g, _ in _groups(table)):
        lines.append(
            " & ".join(
                [""]
                + [
                    f"\\multicolumn{{{w}}}{{c}}{{{_latex_escape(g)}}}" if w > 1 else _latex_escape(g)
                    for g, w in _groups(table)
                ]
            )
            + " \\\\"
        )
    lines.append(" & ".join(["Task"] + [_latex_escape(c) for c in columns]) + " \\\\")
    lines.append("\\midrule")
    for row in table.rows:
        cells = [f"\\textbf{{{_latex_escape(t)}}}" if best else _latex_escape(t) for t, best in _row_cells(table, row)]
        label = _latex_escape(_row_label(row))
        lines.append(" & ".join([f"\\textbf{{{label}}}" if row.overall else label, *cells]) + " \\\\")
        if row.overall:
            lines.append("\\midrule")
    lines[-1] = "\\bottomrule"
    lines += ["\\end{tabular}"]
    text = f"{title}. {caption(table)}" if title else caption(table)
    lines.append(f"\\caption{{{_latex_escape(text)}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def to_html(table: Table, title: str | None = None, images: list[str] | None = None) -> str:
    """The table in HTML with its caption, the notes and the plot images."""
    esc = html.escape
    parts = [f"<h3>{esc(title)}</h3>" if title else "", "<table>", "<thead>"]
    if any(g for g, _ in _groups(table)):
        parts.append("<tr><th></th>" + "".join(f'<th colspan="{w}">{esc(g)}</th>' for g, w in _groups(table)) + "</tr>")
    parts.append(
        "<tr><th>Task</th>" + "".join(f"<th>{esc(c)}</th>" for c in column_labels(table, with_group=False)) + "</tr>"
    )
    parts.append("</thead><tbody>")
    for row in table.rows:
        cells = "".join(
            f"<td><b>{esc(t)}</b></td>" if best else f"<td>{esc(t)}</td>" for t, best in _row_cells(table, row)
        )
        label = f"<b>{esc(_row_label(row))}</b>" if row.overall else esc(_row_label(row))
        parts.append(f"<tr><td>{label}</td>{cells}</tr>")
    parts += ["</tbody></table>", f"<p>{esc(caption(table))}</p>", f"<p><small>{esc(NOTES)}</small></p>"]
    parts += [f'<img src="{esc(src)}" alt="{esc(src)}">' for src in images or []]
    return "\n".join(p for p in parts if p) + "\n"
