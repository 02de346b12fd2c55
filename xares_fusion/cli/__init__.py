"""The `xares-fusion` command. It only parses arguments and ties the layers together."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from .. import __version__
from ..errors import EXIT_BUG, XaresError, run_log
from ..registry import PLUGINS_ENV, import_plugins, names_registered_in
from . import (
    bench,
    cache_features,
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
    cache_features,
    leaderboard,
    make_data,
    export_model,
    listing,
    validate,
    fetch_data,
)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; each sets ``func``, the function that runs it.

    The ``make-<generator>`` subcommands are added only when ``argv`` names one (or is None):
    their options come from the generators, whose import (numpy, scipy, webdataset, torch) would
    otherwise cost every command seconds; the top-level help names them from the source instead.
    """
    generators = names_registered_in(Path(make_data.__file__).parent.parent / "data" / "generators.py", ("register",))
    parser = argparse.ArgumentParser(
        prog="xares-fusion",
        description=__doc__,
        epilog=f"Data generators: {', '.join(f'make-{name}' for name in generators)} (see `make-NAME --help`).",
    )
    _add_common_options(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        if module is not make_data or argv is None or any(arg.startswith("make-") for arg in argv):
            module.add_parser(subparsers)
    for subparser in subparsers.choices.values():
        _add_common_options(subparser, top_level=False)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """``-v`` and ``--import``, accepted before the subcommand and after it. A subcommand's values go
    to their own ``dest`` (argparse would let its defaults overwrite the top-level values)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top_level else argparse.SUPPRESS,
        help="debug logging of xares_fusion (and INFO of the libraries)",
    )
    parser.add_argument(
        "--import",
        dest="imports" if top_level else "imports_after",
        action="append",
        default=[],
        metavar="MODULE",
        help=f"import a plugin module first, so the items it registers are usable by name (repeatable; "
        f"also ${PLUGINS_ENV}, comma-separated)",
    )


def _set_up(args: argparse.Namespace) -> None:
    """Logging levels, progress bars and plugins, before the command runs."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="[%(levelname)s] %(message)s")
    logging.getLogger("xares_fusion").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if getattr(args, "no_progress", False):
        # The model and tokenizer loads draw their own bars; imported here, only for the
        # commands that offer --no-progress (they load these libraries anyway).
        import huggingface_hub.utils
        import transformers.utils.logging

        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()
    import_plugins(args.imports + getattr(args, "imports_after", []))


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    A :class:`~xares_fusion.errors.XaresError` is printed as one line and exits with its kind's
    code; anything else is a bug: its traceback is printed under a line that says so and where
    the run's log is (see :mod:`xares_fusion.errors`).
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        _set_up(args)
        return args.func(args)
    except XaresError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except Exception as err:
        log_file = run_log()
        where = f"the run's log is {log_file}" if log_file else "no run log was written"
        print(
            f"xares-fusion {__version__}: this is a bug ({type(err).__name__} is not an error the user can fix); "
            f"please report it with the traceback below; {where}.",
            file=sys.stderr,
        )
        traceback.print_exc()
        return EXIT_BUG
