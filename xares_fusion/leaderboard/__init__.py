"""Leaderboard: comparison tables and plots regenerated from stored result records and published
reference tables. Overall rows use the official rule of ``results.overall``; the best value of a
row follows its metric's direction in the metric registry (``metrics.higher_is_better``)."""

from .collect import System, load_names, load_records, load_reference, systems_from_records
from .table import Cell, Table, build_table

__all__ = [
    "Cell",
    "System",
    "Table",
    "build_table",
    "load_names",
    "load_records",
    "load_reference",
    "systems_from_records",
]
