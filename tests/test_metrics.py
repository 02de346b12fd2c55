"""The official metrics on hand-computed cases (values worked out by hand in the comments)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xares_fusion.metrics import HIGHER_IS_BETTER, higher_is_better, metric_names, normalize_text, score


def test_normalisation_follows_the_official_steps() -> None:
    assert normalize_text("Ｈｅｌｌｏ，　ＷＯＲＬＤ！") == "hello world"  # full width -> ASCII, punct stripped
    assert normalize_text("Well-known  sci-fi") == "well known sci fi"  # hyphen -> space, spaces collapse
    assert normalize_text("Don't stop.") == "dont stop"  # apostrophe is punctuation
    assert normalize_text("你好。世界") == "你好。世界"  # '。' is not ASCII punctuation
    assert normalize_text("Dog;Cat_Bark") == "dogcatbark"  # ';' and '_' are stripped
    assert normalize_text("  \t ") == ""


def test_accuracy_exact_match_after_normalisation() -> None:
    preds = ["Dog.", "cat", "", "Speech-Music"]
    refs = ["dog", "Cat!", "bird", "speech music"]
    assert score("Accuracy", preds, refs) == pytest.approx(3 / 4)


def test_iwer_is_corpus_level() -> None:
    # ref 1: "the cat sat" vs "the cat sat down" -> 1 insertion; ref 2: "hello world" vs "hello" -> 1 deletion.
    # corpus WER = 2 edits / 5 reference words = 0.4 (a mean of per-row WER would be (1/3 + 1/2) / 2).
    preds = ["The cat sat down.", "hello"]
    refs = ["the cat sat", "Hello, world!"]
    assert score("iWER", preds, refs) == pytest.approx(0.6)


def test_iwer_empty_prediction_and_clipping_at_zero() -> None:
    assert score("iWER", [""], ["one two three"]) == pytest.approx(0.0)  # 3 deletions / 3 words
    # 1 substitution ... 2 insertions + 1 correct: "a b c d e f" vs "x": 1 sub + 5 ins = 6 edits / 1 word
    assert score("iWER", ["a b c d e f"], ["x"]) == 0.0  # WER 6 -> clipped to 0
    assert score("iWER", ["a b"], ["a"]) == pytest.approx(0.0)  # WER exactly 1 -> 0


def test_icer_keeps_cjk_full_stop() -> None:
    # refs "你好。" (3 chars) vs pred "你好" -> 1 deletion of '。' -> CER 1/3.
    assert score("iCER", ["你好"], ["你好。"]) == pytest.approx(2 / 3)
    # full-width Latin is NFKC-folded, so it matches its ASCII reference exactly.
    assert score("iCER", ["ＡＢＣ"], ["abc"]) == pytest.approx(1.0)


def test_empty_reference_is_rejected_with_a_reason() -> None:
    with pytest.raises(ValueError, match="empty after normalisation"):
        score("iWER", ["a"], ["!!!"])


def test_map_binary_macro_average() -> None:
    # refs: dog, cat, dog -> columns {cat, dog}; preds: dog, dog, bird (bird unseen -> dropped).
    # dog: target [1,0,1], scores [1,1,0]. Threshold 1 -> rows {0,1}: P=1/2, R=1/2; threshold 0 ->
    #   all rows: P=2/3, R=1. AP = sum (R_n - R_n-1) P_n = 1/2 * 1/2 + 1/2 * 2/3 = 0.25 + 1/3.
    # cat: target [0,1,0], scores [0,0,0] (all tied) -> P=1/3 at R=1 -> AP = 1/3.
    value = score("mAP", ["Dog", "dog", "bird"], ["dog", "cat", "dog"], num_classes=2)
    assert value == pytest.approx((0.25 + 1 / 3 + 1 / 3) / 2)


def test_map_extra_columns_score_zero_as_officially() -> None:
    perfect = score("mAP", ["a", "b"], ["a", "b"], num_classes=2)
    assert perfect == pytest.approx(1.0)
    assert score("mAP", ["a", "b"], ["a", "b"], num_classes=4) == pytest.approx(0.5)  # (1 + 1 + 0 + 0) / 4


def test_map_more_labels_than_num_classes_raises() -> None:
    with pytest.raises(ValueError, match="3 distinct labels but num_classes is 2"):
        score("mAP", ["a", "b", "c"], ["a", "b", "c"], num_classes=2)


def test_length_mismatch_and_unknown_metric() -> None:
    with pytest.raises(ValueError, match="one prediction per reference"):
        score("Accuracy", ["a"], ["a", "b"])
    with pytest.raises(LookupError, match="Did you mean 'iWER'"):
        score("IWER", ["a"], ["a"])
    with pytest.raises(ValueError, match="does not take arguments"):
        score("Accuracy", ["a"], ["a"], num_classes=3)


def test_every_registered_metric_declares_its_direction() -> None:
    assert set(HIGHER_IS_BETTER) == set(metric_names())
    # iWER / iCER are 1 - error rate (clipped at 0) as officially: higher is better, like every official score
    assert all(higher_is_better(name) for name in ("Accuracy", "mAP", "iWER", "iCER", "FENSE", "DATE"))
    with pytest.raises(LookupError, match="Did you mean 'iWER'"):
        higher_is_better("WER")


@pytest.mark.parametrize("module", ["xares_fusion.metrics", "xares_fusion.leaderboard"])
def test_importing_metrics_pulls_no_torch_or_sklearn(module: str) -> None:
    """The leaderboard reads scores through the metrics package; torch and sklearn load only to compute.

    A fresh interpreter: this test process has imported torch already.
    """
    code = f"import sys, {module}; print(sorted({{'torch', 'sklearn'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_a_plugin_metric_declares_its_direction_when_it_registers() -> None:
    """Directions come from registration, so a plugin's metric (registered after import, in any
    order with other tests) is never without one; an error rate registers as lower-is-better."""
    from xares_fusion.registry import METRICS, register_metric

    register_metric("test-error-rate", higher_is_better=False)(lambda predictions, references: 0.0)
    try:
        assert higher_is_better("test-error-rate") is False
        assert set(HIGHER_IS_BETTER) == set(metric_names())
    finally:
        METRICS._items.pop("test-error-rate", None)
        HIGHER_IS_BETTER.pop("test-error-rate", None)
