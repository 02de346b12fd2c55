"""`xares-fusion bench`: time one workload in parity mode and with each speed option."""

from __future__ import annotations

import argparse
import json

from .options import json_object


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``bench`` subcommand."""
    bench = subparsers.add_parser("bench", help="time one workload in parity mode and with each speed option")
    bench.add_argument(
        "encoder",
        nargs="?",
        default="whisper-tiny.en-offline",
        help="encoder, fusion or front-end recipe file (default: whisper-tiny.en-offline)",
    )
    bench.add_argument("--recipe", default="demo", help="recipe giving the LLM and training mixture (default: demo)")
    bench.add_argument("--task", default="mini-asr", help="task whose eval rows are generated (default: mini-asr)")
    bench.add_argument("--steps", type=int, default=10, help="timed training steps per mode")
    bench.add_argument("--rows", type=int, default=32, help="eval rows per mode")
    bench.add_argument(
        "--eval-batch", type=int, default=32, help="batch size of the batched evaluation (parity: the task's own)"
    )
    bench.add_argument("--encoder-args", type=json_object, default={})
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe overrides")
    bench.add_argument(
        "--precision",
        action="append",
        default=[],
        choices=["bf16", "fp16"],
        help="also time this precision with a warm cache and batched evaluation (repeatable)",
    )
    bench.add_argument(
        "--json", action="store_true", help="print one JSON object (device, workload, modes) instead of the table"
    )
    bench.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Time every mode and print the table, or the JSON object (logging goes to stderr)."""
    from ..bench import format_bench, run_bench

    summary = run_bench(
        args.encoder,
        args.recipe,
        args.task,
        args.steps,
        args.rows,
        args.eval_batch,
        args.encoder_args,
        args.set,
        tuple(args.precision),
    )
    print(json.dumps(summary, indent=2) if args.json else format_bench(summary))
    return 0
