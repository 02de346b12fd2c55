"""`xares-fusion export-model`: write an offline model as a plain Hugging Face directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``export-model`` subcommand."""
    export = subparsers.add_parser(
        "export-model",
        help="write an offline model (e.g. whisper-base-offline) as a "
        "Hugging Face directory that from_pretrained(DIR) loads "
        "without a hub",
    )
    export.add_argument(
        "name", help="offline model, e.g. whisper-base-offline, whisper-tiny.en-offline, smollm2-135m-instruct-offline"
    )
    export.add_argument("directory", type=Path, help="new or empty directory to write")
    export.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Export the model and list the files written."""
    from ..export import export_model

    files = export_model(args.name, args.directory)
    print(f"{args.name} written to {args.directory}: {', '.join(files)}")
    return 0
