"""One task's outcome and the Overall over tasks: the single place the official rule lives."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TaskResult:
    """One task's outcome. ``score`` is None when scoring failed (``error`` says why)."""

    task: str
    metric: str
    score: float | None
    weight: float = 1.0
    track: str | None = None
    rows: int = 0
    skips: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    cache_key: str | None = None
    unofficial: bool = False
    routing: dict[str, Any] | None = None  # routing/gating statistics of fusions and MoE projectors


def overall(scored: Iterable[tuple[float | None, float]]) -> float | None:
    """The official Overall of (score, weight) pairs: sum(w * score) / sum(w).

    This is ``run.py:main`` of XARES-LLM, where every task weight defaults to 1 (so the Overall
    of the official suite is the plain mean). None, never a 0, when there is no pair, a score is
    missing or the weights sum to 0. Summed left to right, so a record's Overall is reproducible
    bit for bit from its tasks.
    """
    pairs = list(scored)
    if not pairs or any(score is None for score, _ in pairs):
        return None
    total = sum(weight for _, weight in pairs)
    if total <= 0:
        return None
    return sum(weight * score for score, weight in pairs) / total


def weighted_overall(results: Iterable[TaskResult]) -> float | None:
    """:func:`overall` of task results (their scores and weights)."""
    return overall((r.score, r.weight) for r in results)
