"""Leaderboard: comparison tables and plots regenerated from stored result records (no torch)."""

from .collect import System, load_names, load_records, load_reference, systems_from_records
from .table import Cell, Table, build_table

__all__ = ["Cell", "System", "Table", "build_table", "load_names", "load_records", "load_reference",
           "systems_from_records"]
