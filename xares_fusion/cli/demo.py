"""`xares-fusion demo`: the offline demo on the mini suite."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_run_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` subcommand."""
    demo = subparsers.add_parser(
        "demo", help="the offline demo: mini suite, three encoders, SmolLM2 (about 15 min on CPU)"
    )
    demo.add_argument("--max-steps", type=int, default=None, help="training steps per encoder (default: the recipe's)")
    demo.add_argument("--limit", type=int, default=None, help="at most N eval rows per task")
    demo.add_argument(
        "--with-fusion",
        action="store_true",
        help="also train the gated fusion of whisper-tiny.en-offline + logmel (a fourth column)",
    )
    add_run_options(demo)
    demo.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Run the demo and print its comparison table."""
    from ..demo import run_demo

    print(
        run_demo(
            args.output_dir or Path("experiments") / "demo",
            max_steps=args.max_steps,
            limit=args.limit,
            with_fusion=args.with_fusion,
            progress=not args.no_progress,
        )
    )
    return 0
