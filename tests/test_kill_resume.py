"""Issue 17: a run SIGKILLed at a random checkpoint of its training, then again during its
evaluation, ends with the scores of an uninterrupted run; a task scored before the kill is not
scored again, and no predictions file holds a row twice."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

RECIPE = """
name: kill-smoke
model:
  encoder: logmel
  llm: {name_or_path: toy-llama}
data:
  mixture: [{task: tones}]
  shuffle_buffer: 8
  sort_by_length: 8
optim:
  max_steps: 9
  lr: 3.0e-3
  warmup_steps: 2
  batch_size: 4
  save_steps: 2
  log_steps: 3
"""
GROUP = "name: kill-group\ntasks: [tones, tone-tags]\n"


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("kill")
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "group.yaml").write_text(GROUP)
    return root / "recipe.yaml", root / "group.yaml"


def _command(configs: tuple[Path, Path], out: Path) -> list[str]:
    recipe, group = configs
    return [sys.executable, "-m", "xares_fusion.cli", "run", "logmel", str(recipe), str(group)] + [
        "--limit",
        "6",
        "--output-dir",
        str(out),
        "--no-progress",
    ]


def _run(configs: tuple[Path, Path], out: Path) -> str:
    done = subprocess.run(_command(configs, out), env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


def _kill_when(configs: tuple[Path, Path], out: Path, appeared) -> None:
    """Start the run and SIGKILL it as soon as ``appeared()`` is true."""
    proc = subprocess.Popen(
        _command(configs, out), env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while not appeared() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _scores(run_dir: Path) -> dict[str, float]:
    return {t["task"]: t["score"] for t in json.loads((run_dir / "result.json").read_text())["tasks"]}


def test_sigkill_in_training_and_in_evaluation_loses_nothing(configs: tuple[Path, Path], tmp_path: Path) -> None:
    _run(configs, tmp_path / "uninterrupted")
    expected = _scores(tmp_path / "uninterrupted")

    out = tmp_path / "killed"
    at = random.randint(1, 3)  # the checkpoint (steps 2, 4, 6) after which training dies
    # By the newest checkpoint's step: older ones are deleted (optim.keep_checkpoints), so a count would stall.
    _kill_when(configs, out, lambda: any(int(p.stem[5:]) >= 2 * at for p in (out / "checkpoints").glob("step-*.pt")))
    assert not (out / "COMPLETE.json").exists(), f"the run finished before checkpoint {at}"

    first = out / "scores" / "tones.json"
    _kill_when(configs, out, first.is_file)  # resumes training, then dies once the first task is scored
    assert first.is_file() and not (out / "result.json").exists(), "the run finished before the kill"
    scored_at = first.stat().st_mtime_ns

    log = _run(configs, out)
    record = json.loads((out / "result.json").read_text())
    assert _scores(out) == expected, f"killed after checkpoint {at}"
    assert record["train"]["stages"][0]["steps"] == 9
    assert "tones: Accuracy" in log and "(cached)" in log.split("tones: Accuracy", 1)[1].splitlines()[0]
    assert first.stat().st_mtime_ns == scored_at  # the task scored before the kill was not scored again
    for task in expected:
        rows = pd.read_csv(out / f"predictions_{task}.csv", keep_default_na=False)
        assert not rows.duplicated(["index", "key", "labels"]).any() and len(rows) == 6
