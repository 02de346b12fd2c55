"""`xares-fusion list`: the names of tasks, groups, recipes, encoders or metrics."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``list`` subcommand."""
    lst = subparsers.add_parser("list", help="list tasks, groups, recipes, encoders or metrics")
    lst.add_argument(
        "what", nargs="?", default="all", choices=["all", "tasks", "groups", "recipes", "encoders", "metrics"]
    )
    lst.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Print one line of sorted names per requested kind."""
    from ..config import catalogue
    from ..registry import ENCODERS, METRICS

    if args.what in ("tasks", "all"):
        print("tasks:", ", ".join(sorted(n for n, kind in catalogue("tasks").items() if kind == "task")))
    if args.what in ("groups", "all"):
        print("groups:", ", ".join(sorted(n for n, kind in catalogue("tasks").items() if kind == "group")))
    if args.what in ("recipes", "all"):
        print("recipes:", ", ".join(sorted(catalogue("recipes"))))
    if args.what in ("encoders", "all"):
        # Read from the sources: importing the encoders would load torch and transformers.
        print("encoders:", ", ".join(ENCODERS.static_names()))
    if args.what in ("metrics", "all"):
        print("metrics:", ", ".join(METRICS.names()))  # the metrics import without torch
    return 0
