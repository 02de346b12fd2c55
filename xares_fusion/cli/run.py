"""`xares-fusion run`: train the audio LLM around an encoder and score it on a task set."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .options import add_run_options, json_object

if TYPE_CHECKING:
    from ..runner import RunRequest


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``run`` subcommand."""
    run = subparsers.add_parser("run", help="train the audio LLM around an encoder and score it on a task set")
    run.add_argument("encoder", help="registered name, path/to/file.py[:Class] or package.module.Class")
    run.add_argument("train", nargs="?", default="all", help="recipe name or YAML path (default: all)")
    run.add_argument(
        "eval",
        nargs="?",
        default=None,
        help="task, group name or YAML path (default: the recipe's eval set, else TRAIN)",
    )
    run.add_argument("--encoder-args", type=json_object, default={}, help="JSON kwargs for the encoder")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set optim.lr=5e-5 (repeatable)",
    )
    run.add_argument("--max-steps", type=int, default=None, help="shortcut for --set optim.max_steps=N")
    run.add_argument("--limit", type=int, default=None, help="at most N eval rows per task (smoke runs)")
    run.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="shortcut for --set optim.precision=... (fp32 is the parity default)",
    )
    run.add_argument(
        "--feature-cache",
        choices=["off", "read", "readwrite"],
        default=None,
        help="shortcut for --set speed.feature_cache=... (off is the parity default)",
    )
    run.add_argument(
        "--cache-dtype",
        choices=["fp16", "fp32"],
        default=None,
        help="shortcut for --set speed.cache_dtype=... (fp32 equals uncached runs)",
    )
    run.add_argument("--tf32", action="store_true", help="shortcut for --set speed.tf32=true (GPU matmuls)")
    add_run_options(run)
    run.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Run the request; only the main process prints the summary (the others ran in lockstep)."""
    from ..runner import process_state, run, summary_text

    result = run(request_from_args(args))
    if process_state().is_main_process:
        print(summary_text(result))
    return 0


def request_from_args(args: argparse.Namespace) -> RunRequest:
    """The :class:`~xares_fusion.runner.RunRequest` a ``run`` command line asks for."""
    from ..runner import RunRequest

    shortcuts = [
        f"{key}={value}"
        for key, value in (
            ("optim.precision", args.precision),
            ("speed.feature_cache", args.feature_cache),
            ("speed.cache_dtype", args.cache_dtype),
            ("speed.tf32", "true" if args.tf32 else None),
        )
        if value
    ]
    return RunRequest(
        encoder=args.encoder,
        train=args.train,
        eval=args.eval,
        encoder_args=args.encoder_args,
        overrides=args.set + shortcuts,
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        limit=args.limit,
        progress=not args.no_progress,
    )
