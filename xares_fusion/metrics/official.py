"""The official XARES-LLM metrics, reproduced on plain strings.

Each function takes decoded predictions and references (one row per reference text) and returns
one float for the whole evaluation set, computed exactly as the official pipeline does.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import jiwer
import numpy as np

from ..registry import register_metric
from .normalize import normalize_text


def _normalized(
    predictions: list[str], references: list[str], remove_punctuation: bool = True
) -> tuple[list[str], list[str]]:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "there must be one prediction per reference row."
        )
    if not references:
        raise ValueError("no rows to score (empty predictions and references).")
    return (
        [normalize_text(p, remove_punctuation) for p in predictions],
        [normalize_text(r, remove_punctuation) for r in references],
    )


@register_metric("Accuracy")
def accuracy(predictions: list[str], references: list[str]) -> float:
    """Exact match of normalised strings."""
    # sklearn is imported where it scores: the leaderboard imports this module and needs no sklearn.
    from sklearn.metrics import accuracy_score

    preds, refs = _normalized(predictions, references)
    return float(accuracy_score(refs, preds))


def _inverse_error_rate(
    predictions: list[str], references: list[str], metric: str, error_rate: Callable[[list[str], list[str]], float]
) -> float:
    """max(0, 1 - ``error_rate(refs, preds)``) on normalised strings; empty references are refused."""
    preds, refs = _normalized(predictions, references)
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(
            f"{metric}: references {empty[:5]} are empty after normalisation; "
            "an error rate has no denominator for them. Drop those rows or fix the labels."
        )
    return max(0.0, 1.0 - float(error_rate(refs, preds)))


@register_metric("iWER")
def inverse_wer(predictions: list[str], references: list[str]) -> float:
    """max(0, 1 - WER), WER at corpus level (total edits / total reference words)."""
    return _inverse_error_rate(predictions, references, "iWER", jiwer.wer)


@register_metric("iCER")
def inverse_cer(predictions: list[str], references: list[str]) -> float:
    """max(0, 1 - CER), CER at corpus level (total character edits / total reference characters)."""
    return _inverse_error_rate(predictions, references, "iCER", jiwer.cer)


@register_metric("mAP")
def mean_average_precision(
    predictions: list[str], references: list[str], num_classes: int, separator: str = ";"
) -> float:
    """Binary macro average precision over ``num_classes`` columns, as officially computed.

    Official rule (xares-llm metrics.py, class ``mAP``, since its commit 16bfb98): strings are
    normalised *keeping punctuation* (NFKC, lowercase, hyphen -> space, whitespace collapsed),
    then split on ``separator`` without stripping the parts, so ``"Dog;Cat"`` is the two labels
    ``dog`` and ``cat``, ``"male speech, man speaking"`` keeps its comma, and ``"dog; cat"``
    gives ``" cat"`` with its space. The column set is the distinct reference labels: a predicted
    label never seen in the references is dropped, and the columns beyond the labels present
    have no positives and score AP 0 (so ``num_classes`` larger than the label set caps the score).
    More distinct reference labels than ``num_classes`` is an error here (officially an
    IndexError deep in numpy).
    """
    from sklearn.metrics import average_precision_score

    preds, refs = _normalized(predictions, references, remove_punctuation=False)
    labels = sorted(set(itertools.chain.from_iterable(r.split(separator) for r in refs)))
    if len(labels) > num_classes:
        raise ValueError(
            f"mAP: the references hold {len(labels)} distinct labels but num_classes is "
            f"{num_classes}; the official code would fail with an index error. "
            f"Raise num_classes in the task's metric_args to at least {len(labels)}."
        )
    index = {label: i for i, label in enumerate(labels)}
    target = np.zeros((len(refs), num_classes), dtype=np.float32)
    predicted = np.zeros((len(preds), num_classes), dtype=np.float32)
    for matrix, rows in ((target, refs), (predicted, preds)):
        for i, row in enumerate(rows):
            matrix[i, [index[x] for x in row.split(separator) if x in index]] = 1.0
    with warnings.catch_warnings():
        # sklearn warns for the columns without positives; officially they score 0, as here.
        warnings.filterwarnings("ignore", message="No positive class found in y_true")
        return float(average_precision_score(target, predicted))
