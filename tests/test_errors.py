"""Issue 17, classes 5, 6 and 7: one error root with an exit code per kind, config and CLI errors
caught before training, and one run per run directory."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xares_fusion import __version__, errors
from xares_fusion.cli import main, validate
from xares_fusion.config import ConfigError, load_recipe
from xares_fusion.data.fetch import FetchError
from xares_fusion.data.shards import MissingDataError
from xares_fusion.encoders import EncoderContractError
from xares_fusion.export import ExportError
from xares_fusion.llm import LLMLoadError
from xares_fusion.metrics.caption import CaptionMetricUnavailable
from xares_fusion.registry import RegistryError
from xares_fusion.runner import RunRequest, plan_run
from xares_fusion.runner.lock import LOCK_FILE, RunDirLock
from xares_fusion.train import TooManySkippedError

TONES_RECIPE = """
name: tones-errors
model: {encoder: logmel, llm: {name_or_path: toy-llama}}
data: {mixture: [{task: tones}], shuffle_buffer: 16}
optim: {max_steps: 2, batch_size: 2, save_steps: 1, log_steps: 1}
"""

EXIT_CODES = [
    (errors.RunFailed, 1),
    (errors.UsageError, 2),
    (ExportError, 2),
    (ConfigError, 3),
    (RegistryError, 3),
    (errors.DataError, 4),
    (MissingDataError, 4),
    (FetchError, 4),
    (TooManySkippedError, 4),
    (EncoderContractError, 5),
    (LLMLoadError, 6),
    (CaptionMetricUnavailable, 7),
    (errors.CacheError, 8),
    (errors.RunDirError, 9),
    (errors.RunLockError, 10),
]


@pytest.fixture()
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tones-errors.yaml"
    path.write_text(TONES_RECIPE)
    return path


def _failing_command(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make `xares-fusion validate` raise ``error``."""

    def command(args: object) -> int:
        raise error

    monkeypatch.setattr(validate, "command", command)


@pytest.mark.parametrize(("kind", "code"), EXIT_CODES, ids=[k.__name__ for k, _ in EXIT_CODES])
def test_every_kind_derives_from_the_root_and_exits_with_its_code(
    kind: type, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert issubclass(kind, errors.XaresError) and kind.exit_code == code
    _failing_command(monkeypatch, kind("f.yaml: field 'x' is wrong. Fix: y."))
    assert main(["validate"]) == code
    err = capsys.readouterr().err
    assert err == "error: f.yaml: field 'x' is wrong. Fix: y.\n"


def test_exit_codes_are_distinct_per_kind() -> None:
    kinds = [errors.RunFailed, errors.UsageError, errors.ConfigError, errors.DataError, errors.EncoderError]
    kinds += [errors.ModelError, errors.MetricError, errors.CacheError, errors.RunDirError, errors.RunLockError]
    assert len({k.exit_code for k in kinds}) == len(kinds)


@pytest.mark.parametrize("log_file", [None, "run/log.txt"])
def test_an_unexpected_exception_is_a_bug_with_its_traceback(
    log_file: str | None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A ValueError is no longer a user error: its traceback shows, under a line saying it is a bug."""
    monkeypatch.setattr(errors, "_run_log", Path(log_file) if log_file else None)
    _failing_command(monkeypatch, ValueError("an internal invariant broke"))
    assert main(["validate"]) == errors.EXIT_BUG
    header, *rest = capsys.readouterr().err.splitlines()
    assert header.startswith(f"xares-fusion {__version__}: this is a bug (ValueError")
    assert header.endswith(f"the run's log is {log_file}." if log_file else "no run log was written.")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: an internal invariant broke"


# -- class 6: config and CLI errors, before training ------------------------------------------


def test_a_set_value_that_is_not_yaml_names_the_argument(recipe: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "logmel", str(recipe), "tones", "--set", "optim.lr=[1,"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: --set 'optim.lr=[1,': the value '[1,' is not valid YAML") and "Fix:" in err
    assert "Traceback" not in err


def test_set_values_give_a_string_field_its_string() -> None:
    """YAML 1.1 reads off/on/yes/no as booleans: `--set speed.feature_cache=off` was False."""
    assert load_recipe("synthetic", ["speed.feature_cache=off"]).speed.feature_cache == "off"
    assert load_recipe("synthetic", ["speed.tf32=true"]).speed.tf32 is True
    with pytest.raises(ConfigError, match=r"field 'speed\.tf32' must be true or false, got 'off'"):
        load_recipe("synthetic", ["speed.tf32=off"])


def test_a_missing_extends_base_names_the_recipe_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "child.yaml"
    path.write_text("extends: no-such-base\nname: child\noptim: {lr: 1.0e-4}\n")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"INVALID {path}: field 'extends' ('no-such-base'): unknown recipe 'no-such-base'" in out


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("metric: Acuracy", r"field 'metric': unknown metric 'Acuracy'\. Did you mean 'Accuracy'\?"),
        (
            "metric: mAP",
            r"field 'metric_args' \{\} does not fit metric 'mAP' \(missing a required argument: 'num_classes'\).*"
            r"e\.g\. 'metric_args: \{num_classes: N\}'",
        ),
        ("metric: Accuracy\nmetric_args: {num_classes: 3}", r"does not fit metric 'Accuracy'.*it takes no arguments"),
        ("metric: Accuracy\ngeneration: {max_new_tokens: 0}", r"field 'generation\.max_new_tokens' must be"),
    ],
)
def test_validate_and_the_plan_refuse_what_scoring_would_refuse_after_training(
    metric: str, message: str, tmp_path: Path, recipe: Path, capsys: pytest.CaptureFixture
) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(f"name: t\nprompt: p\n{metric}\neval: {{shards: missing.tar}}\n")
    assert main(["validate", str(task)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"INVALID {task}: ") and re.search(message, out)
    # The run stops at its plan (before the shards are even looked for), not after training.
    assert main(["run", "logmel", str(recipe), str(task), "--output-dir", str(tmp_path / "run")]) == 3
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# -- class 5: one run per run directory -------------------------------------------------------


def test_a_second_run_is_refused_while_the_first_holds_the_directory(
    tmp_path: Path, recipe: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    held = RunDirLock(run_dir).acquire()  # the first run, alive
    try:
        assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(run_dir)]) == 10
        err = capsys.readouterr().err
        assert f"is in use by another run (pid {os.getpid()} on host {socket.gethostname()}, started " in err
        assert "Fix: wait for that run to end, or pass another --output-dir." in err
    finally:
        held.release()
    assert not (run_dir / LOCK_FILE).exists()
    plan_run(RunRequest(encoder="logmel", train=str(recipe), eval="tones", output_dir=run_dir))  # free again
    assert not (run_dir / LOCK_FILE).exists()  # a plan alone releases its lock


def test_the_lock_of_a_dead_run_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    lock = RunDirLock(tmp_path).acquire()
    try:
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert f"taking over the lock of pid {dead.pid}" in caplog.text
        with pytest.raises(errors.RunLockError, match=f"pid {os.getpid()}"):
            RunDirLock(tmp_path).acquire()
    finally:
        lock.release()


def test_a_typo_in_a_name_stops_the_plan_before_the_directory_is_claimed(
    tmp_path: Path, recipe: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["run", "logmell", str(recipe), "tones", "--output-dir", str(tmp_path / "run")]) == 3
    assert "unknown encoder 'logmell'. Did you mean 'logmel'?" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_that_failed_before_training_does_not_claim_the_directory(
    tmp_path: Path, recipe: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    """A wrong LLM path stops the run after its plan claimed the directory; the corrected command
    must not find it held by 'a run of another configuration'."""
    run_dir = tmp_path / "run"
    wrong_llm = ["--set", f"model.llm.name_or_path={tmp_path / 'typo.gguf'}"]
    assert main(["run", "logmel", str(recipe), "tones", "--output-dir", str(run_dir), *wrong_llm]) == 6
    assert "typo.gguf does not exist" in capsys.readouterr().err
    assert (run_dir / "run.json").is_file() and not (run_dir / LOCK_FILE).exists()
    plan = plan_run(RunRequest(encoder="logmel", train=str(recipe), eval="tones", output_dir=run_dir))
    assert json.loads((run_dir / "run.json").read_text())["run_hash"] == plan.run_hash
    # Once the directory holds work, another configuration is refused.
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "step-00000001.pt").write_bytes(b"")
    with pytest.raises(errors.RunDirError, match=r"holds a run of another configuration \(differs in: \['model'\]"):
        plan_run(RunRequest("logmel", str(recipe), "tones", encoder_args={"n_mels": 40}, output_dir=run_dir))
