"""The vertical slice end to end through the CLI: train, evaluate, cache, resume, rescore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from shard_helpers import TONES_RECIPE

from xares_fusion.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipes") / "tones-smoke.yaml"
    path.write_text(TONES_RECIPE)
    return path


@pytest.fixture(scope="module")
def trained(recipe: Path, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tones"
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(out), "--no-progress"]) == 0
    return out


def _scores(run_dir: Path) -> dict[str, float]:
    frame = pd.read_csv(run_dir / "scores.tsv", sep="\t")
    return dict(zip(frame["Task"], frame["score"]))


def test_training_learns_the_tone_task(trained: Path) -> None:
    history = [json.loads(line) for line in (trained / "train_log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == list(range(10, 101, 10))
    assert history[-1]["lm_loss"] < 0.5 * history[0]["lm_loss"]
    scores = _scores(trained)
    assert scores["tones"] >= 0.9 and scores["Overall"] == scores["tones"]
    predictions = pd.read_csv(trained / "predictions_tones.csv")
    assert list(predictions.columns) == ["index", "key", "predict", "labels"] and len(predictions) == 40
    assert set(predictions["labels"]) == {"low", "mid", "high"}


def test_result_record_has_provenance(trained: Path) -> None:
    record = json.loads((trained / "result.json").read_text())
    assert record["system"] == {
        "name": "logmel",
        "encoder": "logmel",
        "encoder_args": {},
        "recipe": "tones-smoke",
        "llm": "toy-llama",
        "precision": "fp32",
        "identity": "logmel",
    }
    assert record["provenance"]["versions"]["torch"] and record["provenance"]["device"] == "cpu"
    assert record["recipe"]["optim"]["seed"] == 42 and record["recipe"]["model"]["lora"]["r"] == 8
    assert record["task_configs"]["tones"]["hash"] and record["tasks"][0]["skips"]["skipped"] == 0
    assert record["train"]["trained_this_invocation"] is True


def test_rerun_reuses_training_and_scores(trained: Path, recipe: Path, capsys: pytest.CaptureFixture) -> None:
    marker_time = (trained / "COMPLETE.json").stat().st_mtime
    before = _scores(trained)
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(trained), "--no-progress"]) == 0
    assert (trained / "COMPLETE.json").stat().st_mtime == marker_time
    assert json.loads((trained / "result.json").read_text())["train"]["trained_this_invocation"] is False
    assert _scores(trained) == before
    # Without the score cache the final weights are re-evaluated, with the same result.
    for cached in (trained / "scores").glob("*.json"):
        cached.unlink()
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(trained), "--no-progress"]) == 0
    assert _scores(trained) == before
    assert "Overall" in capsys.readouterr().out


def test_eval_batch_size_does_not_change_answers(trained: Path, recipe: Path, tmp_path: Path) -> None:
    """One row at a time, decoded in the generating thread, against batches of 16 cut from
    length-sorted windows read ahead by a thread (the clips last 0.5-1.2 s): every answer lands on
    its own row and none changes."""
    task = (
        (REPO / "tasks/synthetic/tones.yaml").read_text().replace("batch_size: 16", "batch_size: 1\n  num_workers: 0")
    )
    one_by_one = tmp_path / "tones-b1.yaml"
    one_by_one.write_text(task.replace("name: tones", "name: tones-b1"))
    assert main(["run", "logmel", str(recipe), str(one_by_one), "--output-dir", str(trained), "--no-progress"]) == 0
    alone = pd.read_csv(trained / "predictions_tones-b1.csv")
    batched = pd.read_csv(trained / "predictions_tones.csv")
    assert alone["predict"].tolist() == batched["predict"].tolist()


def test_changed_task_config_is_never_served_a_stale_score(trained: Path, recipe: Path, tmp_path: Path) -> None:
    cached = json.loads((trained / "scores" / "tones.json").read_text())
    changed = tmp_path / "tones.yaml"
    changed.write_text(
        (REPO / "tasks/synthetic/tones.yaml").read_text().replace("max_new_tokens: 10", "max_new_tokens: 1")
    )
    assert main(["run", "logmel", str(recipe), str(changed), "--output-dir", str(trained), "--no-progress"]) == 0
    fresh = json.loads((trained / "scores" / "tones.json").read_text())
    assert fresh["cache_key"] != cached["cache_key"]
    predictions = pd.read_csv(trained / "predictions_tones.csv", keep_default_na=False)
    assert predictions["predict"].str.len().max() <= 3  # one new token at most: it really re-ran
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(trained), "--no-progress"]) == 0
    assert _scores(trained)["tones"] == cached["score"]


def test_limit_caps_rows_and_has_its_own_cache_entry(trained: Path, recipe: Path) -> None:
    assert (
        main(["run", "logmel", str(recipe), "tones", "--output-dir", str(trained), "--limit", "5", "--no-progress"])
        == 0
    )
    assert len(pd.read_csv(trained / "predictions_tones.csv")) == 5
    assert json.loads((trained / "scores" / "tones.json").read_text())["rows"] == 5


def test_rescore_saved_predictions(trained: Path, capsys: pytest.CaptureFixture) -> None:
    frame = pd.read_csv(trained / "predictions_tones.csv")
    expected = (frame["predict"].str.lower() == frame["labels"].str.lower()).mean()
    assert main(["score", str(trained / "predictions_tones.csv"), "--metric", "Accuracy"]) == 0
    assert capsys.readouterr().out.startswith(f"Accuracy\t{expected:.6f}")


def test_changed_config_refuses_the_old_run_dir(trained: Path, recipe: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "logmel", str(recipe), "tones", "--output-dir", str(trained), "--set", "optim.lr=1e-3"])
    assert code == 9  # RunDirError
    assert "holds a run of another configuration (differs in: ['optim'])" in capsys.readouterr().err


def test_missing_data_is_reported_without_traceback(
    tmp_path: Path, recipe: Path, capsys: pytest.CaptureFixture
) -> None:
    task = tmp_path / "remote.yaml"
    task.write_text(
        "name: remote\nprompt: p\nmetric: Accuracy\n"
        "eval: {repo_id: mispeech/xares_llm_data, shards: 'ESC-50/test/esc50_fold_5_0000000.tar.gz'}\n"
    )
    assert main(["run", "logmel", str(recipe), str(task), "--output-dir", str(tmp_path / "r")]) == 4  # DataError
    err = capsys.readouterr().err
    assert "task 'remote' (eval): 1 of 1 shard files are missing" in err and "Traceback" not in err


def test_interrupted_run_resumes(recipe: Path, synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "xares_fusion.cli",
        "run",
        "logmel",
        str(recipe),
        "tones",
        "--output-dir",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step-*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoints = sorted((out / "checkpoints").glob("step-*.pt"))
    assert checkpoints and not (out / "COMPLETE.json").exists()
    resumed_at = int(checkpoints[-1].stem.split("-")[1])
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(out), "--no-progress"]) == 0
    record = json.loads((out / "result.json").read_text())
    stage = record["train"]["stages"][0]
    assert stage["resumed_from"] == resumed_at and stage["steps"] == 100
    assert (out / "COMPLETE.json").is_file() and record["tasks"][0]["score"] >= 0.9
