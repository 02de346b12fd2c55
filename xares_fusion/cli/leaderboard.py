"""`xares-fusion leaderboard`: comparison tables (and plots) from stored result records."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import atomic_write_text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``leaderboard`` subcommand."""
    board = subparsers.add_parser("leaderboard", help="comparison tables (and plots) from stored result records")
    board.add_argument(
        "results",
        nargs="*",
        type=Path,
        help="run directories (searched for result.json) or record files (default: experiments/)",
    )
    board.add_argument("--format", default="md", choices=["md", "csv", "latex", "html"])
    board.add_argument("--baseline", default=None, help="a system label: adds a Δ column per other system")
    board.add_argument("--out", type=Path, default=None, help="write leaderboard.<ext> and PNG plots here")
    board.add_argument(
        "--with-reference",
        action="store_true",
        help="add the published tables of leaderboard/reference/ (labelled as published)",
    )
    board.add_argument("--names", type=Path, default=None, help="YAML renaming systems: {auto label: {label, group}}")
    board.add_argument(
        "--update-readme",
        action="store_true",
        help="regenerate leaderboard/README.md (or --out DIR/README.md) from its runs/ and reference/",
    )
    board.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Print the table (and write it with its plots under ``--out``), or regenerate the README."""
    from ..leaderboard.report import SUFFIX, make_report, update_readme

    if args.update_readme:
        folder = args.out or Path("leaderboard")
        print(f"wrote {update_readme(folder)}")
        return 0
    # The published tables alone need no run directory, so experiments/ is the default only without them.
    results = args.results or (
        [Path("experiments")] if Path("experiments").is_dir() and not args.with_reference else []
    )
    text, images = make_report(results, args.format, args.baseline, args.out, args.with_reference, args.names)
    print(text)
    if args.out is not None:
        table = atomic_write_text(args.out / f"leaderboard.{SUFFIX[args.format]}", text)
        print(f"wrote {table}" + "".join(f", {p}" for p in images))
    return 0
