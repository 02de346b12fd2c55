"""`xares-fusion fetch-data`: download the shards of a task, group or suite."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``fetch-data`` subcommand."""
    fetch = subparsers.add_parser(
        "fetch-data", help="download the shards of a task, group or suite (task1, task2, all)"
    )
    fetch.add_argument("names", nargs="+", metavar="name", help="task1 | task2 | all | task or group names or YAMLs")
    fetch.add_argument("--split", choices=["train", "eval", "both"], default="both")
    fetch.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Download what is missing of the requested splits and count the files."""
    from ..config import load_eval_tasks
    from ..data.fetch import fetch

    tasks = list({task.name: task for name in args.names for task in load_eval_tasks(name)[1]}.values())
    splits = ("train", "eval") if args.split == "both" else (args.split,)
    report = fetch(tasks, splits, command=f"xares-fusion fetch-data {' '.join(args.names)} --split {args.split}")
    print(f"{len(report.downloaded)} file(s) downloaded, {len(report.present)} already complete")
    return 0
