"""The `xares-fusion` command. It only parses arguments and ties the layers together."""

from __future__ import annotations

import argparse
import logging
import sys

from . import (
    bench,
    check_encoder,
    demo,
    export_model,
    fetch_data,
    leaderboard,
    listing,
    make_data,
    run,
    score,
    validate,
)
from .options import EXIT_USAGE, UserError

__all__ = ["EXIT_USAGE", "UserError", "build_parser", "main"]

# In the order `xares-fusion --help` lists them.
SUBCOMMANDS = (
    run,
    demo,
    check_encoder,
    score,
    bench,
    leaderboard,
    make_data,
    export_model,
    listing,
    validate,
    fetch_data,
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; each sets ``func``, the function that runs it."""
    parser = argparse.ArgumentParser(prog="xares-fusion", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def _user_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(errors printed as one line instead of a traceback, those of them that are failures, not usage).

    Imported once the arguments parse: they pull in the runner, the LLM and the encoders, which
    ``--help`` does not need.
    """
    from ..config import ConfigError
    from ..data.fetch import FetchError
    from ..data.shards import MissingDataError
    from ..encoders import EncoderContractError
    from ..export import ExportError
    from ..llm import LLMLoadError
    from ..metrics.caption import CaptionMetricUnavailable
    from ..registry import RegistryError
    from ..runner import RunFailed
    from ..train import TooManySkippedError

    failures = (RunFailed, TooManySkippedError, FetchError)
    return (
        UserError,
        ConfigError,
        MissingDataError,
        EncoderContractError,
        RegistryError,
        LLMLoadError,
        CaptionMetricUnavailable,
        ExportError,
        ValueError,
        *failures,
    ), failures


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="[%(levelname)s] %(message)s")
    logging.getLogger("xares_fusion").setLevel(logging.INFO)
    user_errors, failures = _user_errors()
    try:
        return args.func(args)
    except user_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, failures) else EXIT_USAGE
