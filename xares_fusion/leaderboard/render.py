"""Render a comparison table as Markdown, CSV, LaTeX or HTML (one cell text, four markups)."""

from __future__ import annotations

import csv
import html
import io

from .table import Cell, Table

MISSING = "–"
NOTES = (
    "† includes an unofficial proxy metric (the official model was not available). "
    "(k/n): Overall over the k of n tasks this system has. "
    "‡ the paper prints another Overall than the mean of its rows (printed value in brackets). "
    "(published): numbers transcribed from the paper, not reproduced here. "
    "§ departs from the official pipeline (bf16, another LLM or schedule, ...; the run's result.json "
    "lists each departure under 'parity'), so not comparable with the challenge's scores."
)


def cell_text(cell: Cell) -> str:
    """'0.706', '0.706 ± 0.001', '0.650 (14/15)', '0.435 ‡[0.400]', '0.512 †', or '–' when missing."""
    if cell.mean is None:
        return MISSING
    text = f"{cell.mean:.3f}"
    if cell.std is not None:
        text += f" ± {cell.std:.3f}"
    if cell.covered:
        text += f" ({cell.covered[0]}/{cell.covered[1]})"
    if cell.printed is not None:
        text += f" ‡[{cell.printed:.3f}]"
    if cell.unofficial:
        text += " †"
    return text


def delta_text(cell: Cell | None) -> str:
    return MISSING if cell is None or cell.mean is None else f"{cell.mean:+.3f}"


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
    header = ["Task", *column_labels(table)]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in table.rows:
        label = f"**{_row_label(row)}**" if row.overall else _row_label(row)
        lines.append(
            "| " + " | ".join([label, *(f"**{t}**" if best else t for t, best in _row_cells(table, row))]) + " |"
        )
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Task", *column_labels(table)])
    for row in table.rows:
        writer.writerow([_row_label(row), *(t for t, _ in _row_cells(table, row))])
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


def to_latex(table: Table, caption: str | None = None) -> str:
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
    if caption:
        lines.append(f"\\caption{{{_latex_escape(caption)}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def to_html(table: Table, title: str | None = None, images: list[str] | None = None) -> str:
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
    parts += ["</tbody></table>", f"<p><small>{esc(NOTES)}</small></p>"]
    parts += [f'<img src="{esc(src)}" alt="{esc(src)}">' for src in images or []]
    return "\n".join(p for p in parts if p) + "\n"
