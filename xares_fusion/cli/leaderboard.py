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
    board.add_argument(
        "--baseline",
        default=None,
        help="a system (full label, a unique prefix of it or its identity): adds a Δ column per other system, "
        "taken over the tasks both have",
    )
    board.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        default=None,
        help="paired bootstrap test of system A against B on the rows both answered, per task and Overall",
    )
    board.add_argument(
        "--bootstrap",
        type=int,
        default=None,
        metavar="N",
        # The default lives in leaderboard.stats, which needs numpy and pandas: not imported for --help.
        help="bootstrap resamples for the 95%% intervals from stored predictions (default: "
        "leaderboard.stats.DEFAULT_RESAMPLES, 1000; 0: no intervals)",
    )
    board.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap draws (default 0)")
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
    from ..leaderboard.compare import compare_report
    from ..leaderboard.report import SUFFIX, make_report, update_readme
    from ..leaderboard.stats import DEFAULT_RESAMPLES

    if args.update_readme:
        folder = args.out or Path("leaderboard")
        print(f"wrote {update_readme(folder)}")
        return 0
    # The published tables alone need no run directory, so experiments/ is the default only without them.
    results = args.results or (
        [Path("experiments")] if Path("experiments").is_dir() and not args.with_reference else []
    )
    resamples = DEFAULT_RESAMPLES if args.bootstrap is None else args.bootstrap
    if args.compare:
        text = compare_report(results, *args.compare, args.format, resamples, args.bootstrap_seed, args.names)
        print(text)
        if args.out is not None:
            print(f"wrote {atomic_write_text(args.out / f'comparison.{SUFFIX[args.format]}', text)}")
        return 0
    text, images = make_report(
        results,
        args.format,
        args.baseline,
        args.out,
        args.with_reference,
        args.names,
        resamples=resamples,
        seed=args.bootstrap_seed,
    )
    print(text)
    if args.out is not None:
        table = atomic_write_text(args.out / f"leaderboard.{SUFFIX[args.format]}", text)
        print(f"wrote {table}" + "".join(f", {p}" for p in images))
    return 0
