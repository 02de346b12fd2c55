"""`xares-fusion check-encoder`: check an encoder against the contract."""

from __future__ import annotations

import argparse

from .options import json_object


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``check-encoder`` subcommand."""
    check = subparsers.add_parser("check-encoder", help="check an encoder against the contract")
    check.add_argument("encoder")
    check.add_argument("--encoder-args", type=json_object, default={})
    check.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Check the encoder and print one PASS line with what was measured."""
    from ..encoders import check_encoder

    summary = check_encoder(args.encoder, args.encoder_args)
    print(
        f"PASS {args.encoder}: output_dim={summary['output_dim']}, valid frames for 1 s / 2 s clips = "
        f"{summary['frames']}, frame rate ~{summary['frame_rate_measured']:.1f}/s"
        + (f" (declared {summary['frame_rate_declared']})" if summary["frame_rate_declared"] else "")
    )
    return 0
