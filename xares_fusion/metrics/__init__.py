"""Metrics on plain strings: ``score(name, predictions, references, **metric_args) -> float``."""

from __future__ import annotations

import inspect
from typing import Any

from ..registry import METRICS
from . import official  # noqa: F401  (registers the official metrics)
from .normalize import normalize_text


def score(name: str, predictions: list[str], references: list[str], **metric_args: Any) -> float:
    """Score predictions against references (one row each) with the registered metric ``name``."""
    metric = METRICS.get(name)
    try:
        inspect.signature(metric).bind(predictions, references, **metric_args)
    except TypeError as err:
        raise ValueError(f"metric {name!r} does not take arguments {sorted(metric_args)}: {err}. "
                         f"Fix the task's metric_args.") from err
    return metric(list(predictions), list(references), **metric_args)


def metric_names() -> list[str]:
    return METRICS.names()


__all__ = ["score", "metric_names", "normalize_text"]
