"""A new metric: token F1 between each answer and its reference, averaged over rows.

A metric is a function ``(predictions: list[str], references: list[str], **metric_args) -> float``
on plain strings, one row each (a clip with several references is one row per reference),
registered by name; a task names it in ``metric:`` and passes ``metric_args:``. Text goes through
the official normalisation first (NFKC, lower case, hyphen -> space, ASCII punctuation removed).
Where a row cannot be scored, raise ``ValueError`` saying which field to fix: the run reports it
for that task and keeps the other tasks' scores.
"""

from __future__ import annotations

from collections import Counter

from xares_fusion.metrics import normalize_text
from xares_fusion.registry import register_metric


@register_metric("TokenF1", higher_is_better=True)
def token_f1(predictions: list[str], references: list[str], empty_score: float = 1.0) -> float:
    """Mean over rows of the F1 of the bags of words (2 |p & r| / (|p| + |r|)).

    ``empty_score``: the F1 of a row whose answer and reference are both empty after normalisation.
    """
    if len(predictions) != len(references):
        raise ValueError(f"TokenF1: {len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("TokenF1: no rows to score")
    total = 0.0
    for prediction, reference in zip(predictions, references):
        p, r = normalize_text(prediction).split(), normalize_text(reference).split()
        if not p and not r:
            total += empty_score
            continue
        common = sum((Counter(p) & Counter(r)).values())
        total += 2 * common / (len(p) + len(r))
    return total / len(references)
