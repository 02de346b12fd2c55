"""Configs: shipped YAML validates; broken YAML names the file and the field; overrides apply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xares_fusion.config import (
    FEATURE_CACHE_DTYPES,
    FEATURE_CACHE_MODES,
    PRECISIONS,
    ConfigError,
    OptimSpec,
    RecipeConfig,
    SpeedSpec,
    TaskConfig,
    from_dict,
    known_names,
    load_eval_tasks,
    load_recipe,
    load_task,
    resolve_config_path,
)
from xares_fusion.constants import SAMPLE_RATE

REPO = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_yaml_loads() -> None:
    for name in known_names("tasks"):
        load_eval_tasks(name)
    for name in known_names("recipes"):
        recipe = load_recipe(name)
        assert recipe.data.mixture, name


def test_task_defaults_and_official_generation() -> None:
    task = load_task("tones")
    assert task.metric == "Accuracy" and task.weight == 1.0
    assert task.generation == {"max_new_tokens": 10, "repetition_penalty": 1.05}  # task value + official default
    assert task.key_for("eval") == "label" and task.split("eval").batch_size == 16


def test_unknown_field_names_file_field_and_suggestion(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "name: x\nprompt: p\nmetric: Accuracy\nwieght: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown field 'wieght'\. Did you mean 'weight'\?"):
        load_task(path)


def test_wrong_type_names_the_nested_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "bad.yaml", "name: x\nprompt: p\nmetric: Accuracy\neval:\n  shards: [a.tar]\n  batch_size: eight\n"
    )
    with pytest.raises(ConfigError, match=r"bad\.yaml: field 'eval\.batch_size' must be a whole number, got 'eight'"):
        load_task(path)


def test_missing_required_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "name: x\nprompt: p\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: missing required field 'metric'"):
        load_task(path)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", "name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_task(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_task(tmp_path / "nope.yaml")


def test_recipe_overrides_and_validation() -> None:
    recipe = load_recipe("synthetic", ["optim.lr=5e-5", "optim.max_steps=7", "model.lora.r=4"])
    assert recipe.optim.lr == pytest.approx(5e-5) and recipe.optim.max_steps == 7 and recipe.model.lora.r == 4
    with pytest.raises(ConfigError, match=r"field 'optim\.precision' must be one of"):
        load_recipe("synthetic", ["optim.precision=fp8"])
    with pytest.raises(ConfigError, match=r"unknown field 'optim\.learning_rate'"):
        load_recipe("synthetic", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_recipe("synthetic", ["optim.lr"])


def test_unknown_name_suggests_close_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'tone'.*Did you mean 'tones'"):
        resolve_config_path("tone", "tasks")


def test_group_reports_broken_member(tmp_path: Path) -> None:
    path = _write(tmp_path, "g.yaml", "name: g\ntasks: [tones, no-such-task]\n")
    with pytest.raises(ConfigError, match=r"g\.yaml: field 'tasks\[1\]' \('no-such-task'\)"):
        load_eval_tasks(str(path))


def test_from_dict_rejects_empty_mixture() -> None:
    with pytest.raises(ConfigError, match=r"r\.yaml: field 'data\.mixture' is empty"):
        from_dict(RecipeConfig, {"name": "r"}, "r.yaml")
    task = from_dict(TaskConfig, {"name": "t", "prompt": "p", "metric": "iWER", "eval": {"shards": "x.tar"}}, "t.yaml")
    assert task.eval.shards == ["x.tar"]  # a single pattern may be written without a list


def test_importing_the_config_package_does_not_import_torch() -> None:
    # A fresh interpreter: this test process has torch loaded already by other tests.
    code = "import sys, xares_fusion.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_precision_and_cache_vocabularies_validate_recipes() -> None:
    for precision in PRECISIONS:
        assert from_dict(OptimSpec, {"precision": precision}, "r.yaml", "optim").precision == precision
    for mode in FEATURE_CACHE_MODES:
        for dtype in FEATURE_CACHE_DTYPES:
            speed = from_dict(SpeedSpec, {"feature_cache": mode, "cache_dtype": dtype}, "r.yaml", "speed")
            assert (speed.feature_cache, speed.cache_dtype) == (mode, dtype)
    with pytest.raises(
        ConfigError, match=r"field 'speed\.feature_cache' must be one of \['off', 'read', 'readwrite'\]"
    ):
        load_recipe("synthetic", ["speed.feature_cache=write"])
    with pytest.raises(ConfigError, match=r"field 'speed\.cache_dtype' must be one of \['fp16', 'fp32'\]"):
        load_recipe("synthetic", ["speed.cache_dtype=bf16"])


def test_data_sample_rate_defaults_to_the_pipeline_rate() -> None:
    assert load_recipe("synthetic").data.sample_rate == SAMPLE_RATE
