"""`xares-fusion make-<generator>` (``make-mini``, ``make-synthetic``, ...): generate a data suite's
shards locally, one subcommand per entry of :data:`~xares_fusion.data.generators.GENERATORS`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

# Help texts of the size options, by field name of the generators' size dataclasses; a field
# missing here gets an option without help.
SIZE_HELP = {
    "per_shard": "clips per training shard",
    "test": "test clips per task",
    "train_per_shard": "clips per training shard",
    "test_shards": "test shards per task",
    "test_per_shard": "clips per test shard",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register one ``make-<generator>`` subcommand per registered generator, with one option per
    field of its sizes (default: the generator's own size)."""
    # Imported here, not at module level: the generators pull in numpy and the synthesis code,
    # which the other subcommands do not need.
    from ..data.generators import GENERATORS

    for name in GENERATORS.names():
        generator = GENERATORS.get(name)
        make = subparsers.add_parser(f"make-{name}", help=generator.summary)
        make.add_argument("--out", type=Path, default=None, help="default: <data home>/generated/" + name)
        make.add_argument("--seed", type=int, default=0)
        make.add_argument("--force", action="store_true", help="rewrite even if present")
        for field in dataclasses.fields(generator.sizes):
            make.add_argument(
                f"--{field.name.replace('_', '-')}",
                type=type(field.default),
                default=field.default,
                help=SIZE_HELP.get(field.name),
            )
        make.set_defaults(func=command, generator=name)


def command(args: argparse.Namespace) -> int:
    """Write the generator's shards and say where they are."""
    from ..data.generators import GENERATORS
    from ..paths import data_home

    generator = GENERATORS.get(args.generator)
    root = args.out or data_home() / "generated" / args.generator
    sizes = generator.sizes(**{field.name: getattr(args, field.name) for field in dataclasses.fields(generator.sizes)})
    generator(root, seed=args.seed, force=args.force, sizes=sizes, progress=lambda task: print(f"  {task}"))
    print(f"{args.generator} shards in {root}")
    return 0
