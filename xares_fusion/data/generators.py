"""The registry of local shard generators: a task split's ``generator: NAME`` names one of these.

Each writes a whole suite under one root (``<data home>/generated/<NAME>`` by default, see
:func:`~xares_fusion.data.shards.shard_base`) and is called as
``GENERATORS.get(name)(root, seed=..., sizes=..., force=..., progress=...)``; an unknown name
raises :class:`~xares_fusion.registry.RegistryError` listing the registered ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..registry import Registry
from .mini import MiniSizes, make_mini
from .synthetic import SyntheticSizes, make_synthetic


@dataclass(frozen=True)
class DataGenerator:
    """A shard generator: ``make(root, seed, sizes, force, progress)``, the dataclass of its sizes
    (its fields are the generator's size options) and a one-line summary for help texts."""

    make: Callable[..., Path]
    sizes: type
    summary: str

    def __call__(self, root: Path, **options: Any) -> Path:
        """Write the suite under ``root`` (skipped when already written with the same options)."""
        return self.make(root, **options)


GENERATORS = Registry("data generator")
GENERATORS.register("mini")(
    DataGenerator(make_mini, MiniSizes, "synthesise the mini suite (speech from eSpeak NG, sounds from numpy)")
)
GENERATORS.register("synthetic")(
    DataGenerator(make_synthetic, SyntheticSizes, "write the synthetic tone shards (smoke tests)")
)
