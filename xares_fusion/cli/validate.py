"""`xares-fusion validate`: check task, group and recipe YAML files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``validate`` subcommand."""
    val = subparsers.add_parser("validate", help="check task, group and recipe YAML files (default: every shipped one)")
    val.add_argument("paths", nargs="*", help="files or directories (default: the shipped tasks/ and recipes/)")
    val.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Print each invalid file and a count; exit status 1 if any file is invalid."""
    from ..config import validate_files

    # A progress line on stderr: stdout stays the report (INVALID lines and the count).
    print(f"checking {' '.join(args.paths) or 'every shipped task, group and recipe'} ...", file=sys.stderr, flush=True)
    problems, checked = validate_files([Path(p) for p in args.paths])
    for problem in problems:
        print(f"INVALID {problem}")
    print(f"{checked - len(problems)} of {checked} config files valid")
    return 1 if problems else 0
