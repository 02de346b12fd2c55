"""Bootstrap intervals and the paired bootstrap test on constructed predictions with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xares_fusion import metrics
from xares_fusion.cli import main
from xares_fusion.config import load_task
from xares_fusion.leaderboard import build_table, systems_from_records
from xares_fusion.leaderboard.collect import load_records
from xares_fusion.leaderboard.render import to_csv, to_markdown
from xares_fusion.leaderboard.stats import TaskScorer, bootstrap, paired


def _frame(predictions: list[str], labels: list[str]) -> pd.DataFrame:
    rows = pd.DataFrame(
        {"index": range(len(labels)), "key": [f"clip{i}" for i in range(len(labels))], "predict": predictions}
    )
    rows["labels"] = labels
    rows["occurrence"] = 0
    return rows.set_index(["index", "key", "occurrence"])


def _answers(right: int, total: int = 100, wrong_first: bool = False) -> tuple[list[str], list[str]]:
    """Predictions right on ``right`` of ``total`` rows (the first ones, or the last ones)."""
    labels = ["dog" if i % 2 else "cat" for i in range(total)]
    hits = [i >= total - right if wrong_first else i < right for i in range(total)]
    return [label if hit else "bird" for label, hit in zip(labels, hits)], labels


def test_bootstrap_interval_of_accuracy_matches_the_binomial_interval() -> None:
    predictions, labels = _answers(140, 200)
    result = bootstrap("esc-50", "Accuracy", [_frame(predictions, labels)], resamples=2000, seed=1)
    assert result.value == 0.7 and result.rows == 200
    half = 1.96 * math.sqrt(0.7 * 0.3 / 200)  # normal approximation of the binomial, 0.0635
    low, high = result.interval()
    assert low == pytest.approx(0.7 - half, abs=0.012) and high == pytest.approx(0.7 + half, abs=0.012)
    again = bootstrap("esc-50", "Accuracy", [_frame(predictions, labels)], resamples=2000, seed=1)
    assert np.array_equal(result.samples, again.samples)  # seeded


def test_paired_bootstrap_known_answers() -> None:
    a = _frame(*_answers(90))
    b = _frame(*_answers(50, wrong_first=True))
    strong = paired("esc-50", "Accuracy", [a], [b], resamples=1000)
    assert (strong.a, strong.b) == (0.9, 0.5) and strong.difference.value == pytest.approx(0.4)
    assert not strong.difference.within_noise and strong.difference.p_value < 0.01
    assert strong.difference.interval()[0] > 0.25

    same = paired("esc-50", "Accuracy", [a], [a.copy()], resamples=1000).difference
    assert same.value == 0 and same.p_value == 1.0 and same.within_noise and same.interval() == (0.0, 0.0)

    # Ten rows, one answer apart: not significant.
    tiny = paired("esc-50", "Accuracy", [_frame(*_answers(6, 10))], [_frame(*_answers(5, 10))], resamples=1000)
    assert tiny.difference.value == pytest.approx(0.1)
    assert tiny.difference.within_noise and tiny.difference.p_value > 0.2


def test_paired_rows_are_matched_by_key_not_position() -> None:
    predictions, labels = _answers(90)
    a = _frame(predictions, labels)
    b = a.iloc[::-1].iloc[:60]  # another order, and only 60 of the rows answered
    result = paired("esc-50", "Accuracy", [a], [b], resamples=200)
    assert result.difference.rows == 60 and result.difference.value == 0 and result.difference.p_value == 1.0


@pytest.mark.parametrize("metric", ["iWER", "iCER"])
def test_fast_error_rate_resampling_equals_the_registry_metric(metric: str) -> None:
    """The per-row split of corpus WER/CER gives, on every resample, what metrics.score gives."""
    references = ["the cat sat", "a dog ran far", "hello world", "one two three four", "x"]
    predictions = ["the cat sat", "a dog far away", "hello", "one to three for", "y z"]
    scorer = TaskScorer("librispeech", metric, [_frame(predictions, references)])
    assert scorer.parts, "the per-row split was refused"
    indices = np.random.default_rng(0).integers(0, 5, size=(30, 5))
    expected = [metrics.score(metric, [predictions[i] for i in row], [references[i] for i in row]) for row in indices]
    assert scorer.scores(indices) == pytest.approx(expected, abs=1e-12)


def test_map_is_rescored_per_resample() -> None:
    labels = ["dog;cat", "cat", "bird", "dog"] * 5
    predictions = ["dog", "cat", "bird", "cat"] * 5
    scorer = TaskScorer("fsd50k", "mAP", [_frame(predictions, labels)])
    assert not scorer.parts  # no per-row split: the metric itself on each resample
    assert scorer.args == load_task("fsd50k").metric_args == {"num_classes": 200}  # from the task config
    indices = np.random.default_rng(0).integers(0, 20, size=(5, 20))
    expected = [
        metrics.score("mAP", [predictions[i] for i in r], [labels[i] for i in r], num_classes=200) for r in indices
    ]
    assert scorer.scores(indices) == pytest.approx(expected)


def _run(folder: Path, name: str, right: int) -> None:
    """A run directory: result.json and predictions_esc-50.csv right on ``right`` of 100 rows."""
    predictions, labels = _answers(right, wrong_first=name == "logmel")
    folder.mkdir(parents=True)
    record = {
        "system": {"name": name, "encoder": name, "recipe": "task1", "llm": "smollm2", "precision": "fp32"},
        "eval_group": "all",
        "limit": None,
        "parity": {"official": True, "departures": []},
        "tasks": [
            {"task": "esc-50", "metric": "Accuracy", "score": right / 100, "track": "A", "rows": 100},
            {"task": "cremad", "metric": "Accuracy", "score": 0.5, "track": "A", "rows": 100},
        ],
    }
    (folder / "result.json").write_text(json.dumps(record))
    frame = _frame(predictions, labels).reset_index().drop(columns="occurrence")
    frame.to_csv(folder / "predictions_esc-50.csv", index=False)


@pytest.fixture()
def runs(tmp_path: Path) -> Path:
    _run(tmp_path / "runs" / "gated", "gated", 90)
    _run(tmp_path / "runs" / "logmel", "logmel", 50)
    return tmp_path / "runs"


def test_table_shows_intervals_and_the_paired_verdict(runs: Path) -> None:
    table = build_table(systems_from_records(load_records([runs])), baseline="logmel", resamples=500)
    esc = next(r for r in table.rows if r.label == "esc-50")
    assert esc.cells[0].ci[0] < 0.9 < esc.cells[0].ci[1] and esc.cells[1].ci[0] < 0.5 < esc.cells[1].ci[1]
    assert esc.deltas[0].mean == pytest.approx(0.4) and not esc.deltas[0].within_noise
    cremad = next(r for r in table.rows if r.label == "cremad")
    assert cremad.cells[0].ci is None  # no predictions kept: no interval, never a made-up one
    overall = next(r for r in table.rows if r.overall)
    assert overall.cells[0].ci is None and overall.deltas[0].ci is None  # cremad has none
    md = to_markdown(table)
    assert f"| esc-50 | **0.900 [{esc.cells[0].ci[0]:.3f}, {esc.cells[0].ci[1]:.3f}]** |" in md
    assert "95% bootstrap interval over the test rows (500 resamples" in md
    frame = pd.read_csv(pd.io.common.StringIO(to_csv(table)))
    gated = frame[(frame.task == "esc-50") & (frame.system == "gated")].iloc[0]
    assert gated.ci_low == pytest.approx(esc.cells[0].ci[0], abs=1e-6) and not gated.within_noise
    assert gated.delta_p_value < 0.01


def test_identical_systems_are_within_noise_in_the_table(tmp_path: Path) -> None:
    _run(tmp_path / "a", "gated", 70)
    _run(tmp_path / "b", "gated2", 70)
    (tmp_path / "b" / "predictions_esc-50.csv").write_bytes((tmp_path / "a" / "predictions_esc-50.csv").read_bytes())
    table = build_table(systems_from_records(load_records([tmp_path])), baseline="gated2", resamples=200)
    esc = next(r for r in table.rows if r.label == "esc-50")
    assert esc.deltas[0].within_noise and "+0.000 [0.000, 0.000] ≈" in to_markdown(table)


def test_cli_compare_prints_difference_interval_and_p(runs: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["leaderboard", str(runs), "--compare", "GATED", "log", "--bootstrap", "300"]) == 0
    out = capsys.readouterr().out
    assert "A = gated, B = logmel" in out
    line = next(x for x in out.splitlines() if x.startswith("| esc-50 "))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:6] == ["esc-50", "Accuracy", "100", "0.9000", "0.5000", "0.4000"]
    assert float(cells[7]) < 0.01 and cells[8] == "A better"
    assert "| cremad | Accuracy | 0 | – | – | – | – | – | no paired predictions |" in out
    overall = next(x for x in out.splitlines() if x.startswith("| Track A Overall "))
    assert "| weighted mean of 1 tasks | 100 | 0.9000 | 0.5000 | 0.4000 |" in overall
    assert main(["leaderboard", str(runs), "--compare", "gated", "logmel", "--format", "csv"]) == 0
    frame = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert frame.set_index("task").loc["esc-50", "A - B"] == pytest.approx(0.4)
