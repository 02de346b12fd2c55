"""The command line: plugins (--import, $XARES_FUSION_PLUGINS, entry points), logging levels,
`score` without --metric, missing data reported at once, the demo's run commands, start-up imports."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from xares_fusion import registry
from xares_fusion.cli import build_parser, main
from xares_fusion.cli.run import request_from_args
from xares_fusion.config import DataSpec
from xares_fusion.data.shards import MissingDataError, require_shards
from xares_fusion.demo import demo_requests, run_command

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "plugin_package" / "src"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xares_fusion.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(PLUGIN), **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--import", "xares_fusion_example_plugin", "check-encoder", "example-mean-pool"], {}),
        (["check-encoder", "example-mean-pool", "--import", "xares_fusion_example_plugin"], {}),
        (["check-encoder", "example-mean-pool"], {"XARES_FUSION_PLUGINS": "json, xares_fusion_example_plugin"}),
    ],
)
def test_plugin_import_makes_a_registered_encoder_usable(args: list[str], env: dict[str, str]) -> None:
    done = _cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert "PASS example-mean-pool: output_dim=64" in done.stdout


def test_unknown_plugin_module_is_a_config_error() -> None:
    done = _cli("--import", "no_such_plugin_module", "list", "metrics")
    assert done.returncode == 3 and "no_such_plugin_module" in done.stderr and "PYTHONPATH" in done.stderr


def test_entry_point_plugins_load_on_first_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "ep_plugin_mod.py").write_text(
        textwrap.dedent("""
            from xares_fusion.registry import register_projector

            @register_projector("ep-test-projector")
            def make(in_dim, out_dim):
                return None
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = registry.importlib.metadata.EntryPoint("ep", "ep_plugin_mod", registry.PLUGIN_GROUP)
    groups = {registry.PLUGIN_GROUP: [entry]}
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: groups.get(group, []))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    fresh = registry.Registry("projector")
    fresh._items = registry.PROJECTORS._items  # the registry the plugin's decorator writes to
    try:
        assert "ep-test-projector" in fresh
    finally:
        registry.PROJECTORS._items.pop("ep-test-projector", None)


def test_verbose_changes_the_level() -> None:
    logger = logging.getLogger("xares_fusion")
    main(["list", "metrics"])
    assert logger.level == logging.INFO
    main(["list", "metrics", "-v"])
    assert logger.level == logging.DEBUG
    main(["-v", "list", "metrics"])
    assert logger.level == logging.DEBUG


def test_no_progress_silences_library_bars() -> None:
    import huggingface_hub.utils
    import transformers.utils.logging

    args = build_parser(["run"]).parse_args(["run", "logmel", "--no-progress"])
    from xares_fusion.cli import _set_up

    try:
        _set_up(args)
        assert not transformers.utils.logging.is_progress_bar_enabled()
        assert huggingface_hub.utils.are_progress_bars_disabled()
    finally:
        transformers.utils.logging.enable_progress_bar()
        huggingface_hub.utils.enable_progress_bars()


def _predictions(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("index,key,predict,labels\n" + "".join(f"{i},k{i},{p},{r}\n" for i, (p, r) in enumerate(rows)))
    return path


def test_score_infers_the_metric_from_the_task(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [("low", "low"), ("high", "low"), ("high", "high"), ("mid", "mid")]
    named = _predictions(tmp_path / "predictions_tones.csv", rows)
    assert main(["score", str(named)]) == 0  # the task from the file name
    assert capsys.readouterr().out.startswith("Accuracy\t0.750000")
    other = _predictions(tmp_path / "preds.csv", rows)
    assert main(["score", str(other), "--task", "tones"]) == 0
    assert capsys.readouterr().out.startswith("Accuracy\t0.750000")
    assert main(["score", str(other)]) == 2
    assert "--task" in capsys.readouterr().err


def test_ragged_predictions_name_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "predictions_tones.csv"
    path.write_text("index,key,predict,labels\n0,k0,low,low\n1,k1,a,b,c\n")
    assert main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "line 3" in err


def test_missing_data_of_every_task_in_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XARES_FUSION_DATA_HOME", str(tmp_path))
    errors = []
    for task, split in (("esc-50", "train"), ("esc-50", "eval"), ("vocalsound", "eval")):
        spec = DataSpec(shards=[f"{task}/{split}-{{000..001}}.tar"], repo_id="org/repo")
        with pytest.raises(MissingDataError) as info:
            require_shards(spec, task, split)
        errors.append(info.value)
    (tmp_path / "org" / "repo").mkdir(parents=True)
    sizes = {
        f"{t}/{s}-00{i}.tar": 1_000_000_000 for t in ("esc-50", "vocalsound") for s in ("train", "eval") for i in (0, 1)
    }
    (tmp_path / "org" / "repo" / ".xares_fusion_sizes.json").write_text(__import__("json").dumps(sizes))
    message = str(MissingDataError.combine(errors))
    assert "6 shard file(s) of 3 task split(s)" in message
    assert message.count("fetch-data") == 1 and "xares-fusion fetch-data esc-50 vocalsound   (" in message
    assert "6.00 GB" in message


def test_demo_prints_the_exact_run_of_each_column(tmp_path: Path) -> None:
    for name, request in demo_requests(tmp_path, 7, 5, False, with_fusion=True).items():
        argv = shlex.split(run_command(request))[1:]
        assert request_from_args(build_parser(argv).parse_args(argv)) == request, name


def test_startup_imports_no_torch() -> None:
    probe = "import sys; from xares_fusion.cli import main; main(['list']); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "encoders: " in done.stdout and done.stdout.strip().endswith("False")


def test_static_encoder_names_equal_the_imported_ones() -> None:
    assert registry.ENCODERS.static_names() == registry.ENCODERS.names()
