"""What several subcommands share: the user-error type, argument types and option groups."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UsageError

EXIT_USAGE = UsageError.exit_code


class UserError(UsageError):
    """A wrong command line (e.g. a missing predictions file); printed without a traceback, exit 2."""


def json_object(text: str) -> dict[str, Any]:
    """Argument type of ``--encoder-args`` and ``--metric-args``: a JSON object, parsed."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}); e.g. --encoder-args '{{\"n_mels\": 64}}'") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"n_mels\": 64}'")
    return value


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of every subcommand that trains and writes a run directory (run, demo)."""
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="run directory (default experiments/<recipe>/<encoder>)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
