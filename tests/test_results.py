"""The result record round-trips through JSON and matches docs/result-record.schema.json; older
records read as version 1, newer ones are refused by name; one Overall rule everywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from xares_fusion.results import (
    SCHEMA_VERSION,
    Parity,
    RecordError,
    ResultRecord,
    SystemIdentity,
    TaskResult,
    overall,
    read_record,
    scores_frame,
    weighted_overall,
    write_record,
)

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs/result-record.schema.json").read_text())
JSON_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _schema_errors(value: Any, schema: dict, where: str = "$") -> list[str]:
    """The subset of JSON Schema the record schema uses (jsonschema is not a dependency)."""
    if "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if "oneOf" in schema:
        matches = [s for s in schema["oneOf"] if not _schema_errors(value, s, where)]
        return [] if len(matches) == 1 else [f"{where}: matches {len(matches)} of oneOf"]
    errors = []
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if types and not any(
        number
        if t == "number"
        else (number and float(value).is_integer())
        if t == "integer"
        else isinstance(value, JSON_TYPES[t])
        for t in types
    ):
        return [f"{where}: {value!r} is not {types}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} != {schema['const']!r}")
    if "minimum" in schema and number and value < schema["minimum"]:
        errors.append(f"{where}: {value!r} < {schema['minimum']}")
    if isinstance(value, dict):
        errors += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, schema.get("additionalProperties", True))
            if sub is False:
                errors.append(f"{where}: unexpected {key!r}")
            elif isinstance(sub, dict):
                errors += _schema_errors(item, sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += _schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def _tasks() -> list[TaskResult]:
    # Unequal weights: weighted and unweighted means differ on both tracks and overall.
    return [
        TaskResult("esc-50", "Accuracy", 0.70, weight=3.0, track="A", rows=40, skips={"seen": 40, "skipped": 0}),
        TaskResult("cremad", "Accuracy", 0.50, weight=1.0, track="A"),
        TaskResult("clotho", "FENSE (proxy)", 0.35, weight=2.0, track="B", unofficial=True),
        TaskResult("librispeech", "iWER", 0.20, weight=0.5, track="B", routing={"projector": {"experts": [1, 2]}}),
    ]


def _record() -> ResultRecord:
    return ResultRecord(
        system=SystemIdentity(
            name="gated",
            encoder="gated.yaml",
            encoder_args={"dim": 512},
            recipe="task1",
            llm="smollm2",
            precision="fp32",
        ),
        tasks=_tasks(),
        run_hash="abc",
        eval_group="all",
        limit=None,
        processes=1,
        parity=Parity(official=False, departures=["clotho: scored with FENSE (proxy)"]),
        recipe={"optim": {"seed": 42}},
        task_configs={"esc-50": {"source": "x.yaml", "hash": "h"}},
        train={"stages": [], "trained_this_invocation": True},
        feature_cache=None,
        provenance={
            "versions": {"torch": "2"},
            "git_revision": None,
            "python": "3.11",
            "platform": "linux",
            "device": "cpu",
            "created": "now",
        },
    )


def test_record_round_trips_through_json_and_matches_the_schema(tmp_path: Path) -> None:
    record = _record()
    path = tmp_path / "result.json"
    write_record(path, record)
    data = json.loads(path.read_text())
    assert _schema_errors(data, SCHEMA) == []
    assert data["schema_version"] == SCHEMA_VERSION and data["overall"] == weighted_overall(record.tasks)
    back = read_record(path)
    assert back == record and back.source == path
    assert back.to_dict() == data
    # the validator does catch a wrong record
    data["tasks"][0]["score"] = "high"
    del data["system"]
    assert _schema_errors(data, SCHEMA) == ["$: missing 'system'", "$.tasks[0].score: 'high' is not ['number', 'null']"]


def test_plain_dict_records_are_written_in_the_typed_layout(tmp_path: Path) -> None:
    """The runner's dict (with the earlier 'record_version' key and fields unknown here) keeps working."""
    legacy = {
        "record_version": 1,
        "system": {"name": "logmel", "encoder": "logmel"},
        "seed": 7,
        "tasks": [{"task": "esc-50", "metric": "Accuracy", "score": 0.5, "track": "A"}],
    }
    write_record(tmp_path / "result.json", legacy)
    data = json.loads((tmp_path / "result.json").read_text())
    assert "record_version" not in data and data["schema_version"] == 1 and data["seed"] == 7
    assert data["overall"] == 0.5 and data["parity"] is None and data["tasks"][0]["weight"] == 1.0
    assert _schema_errors(data, SCHEMA) == []


def test_record_without_version_reads_as_version_1(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(
        json.dumps(
            {
                "system": {"name": "logmel"},
                "overall": 0.9,
                "tasks": [{"task": "esc-50", "metric": "Accuracy", "score": 0.5}],
            }
        )
    )
    record = read_record(path)
    assert record.schema_version == 1 and record.system.label == "logmel" and record.parity is None
    assert record.overall == 0.5  # recomputed from the tasks, not taken from the file


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"schema_version": SCHEMA_VERSION + 1, "system": {}, "tasks": []},
            f"schema_version {SCHEMA_VERSION + 1} is newer than this xares-fusion reads",
        ),
        ({"schema_version": "1", "system": {}, "tasks": []}, "schema_version must be a positive integer"),
        ({"tasks": []}, "not a result record"),
        ({"system": {}, "tasks": [{"task": "a", "metric": "Accuracy"}]}, r"tasks\[0\]: .*'score'"),
        ({"system": {"nme": "a"}, "tasks": []}, r"system: unknown field\(s\) \['nme'\]"),
    ],
)
def test_unreadable_records_name_the_file(tmp_path: Path, data: dict, message: str) -> None:
    path = tmp_path / "run" / "result.json"
    path.parent.mkdir()
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=message) as err:
        read_record(path)
    assert str(err.value).startswith(str(path))


def test_overall_is_the_weighted_mean_and_missing_never_zero() -> None:
    assert overall([(0.5, 1.0), (1.0, 3.0)]) == pytest.approx(0.875)
    assert overall([(0.5, 1.0), (None, 1.0)]) is None and overall([]) is None and overall([(0.5, 0.0)]) is None


def test_one_overall_in_run_summary_record_leaderboard_and_demo() -> None:
    """Same task results, unequal weights: the run summary, scores.tsv, the record, the leaderboard
    and the demo table all give the same Overall numbers."""
    from xares_fusion.demo import comparison_table
    from xares_fusion.leaderboard import build_table, systems_from_records
    from xares_fusion.runner import RunResult, summary_text

    tasks = _tasks()
    expected = {
        "Track A Overall": overall([(0.70, 3.0), (0.50, 1.0)]),
        "Track B Overall": overall([(0.35, 2.0), (0.20, 0.5)]),
        "Overall": weighted_overall(tasks),
    }
    assert expected["Track A Overall"] != pytest.approx((0.70 + 0.50) / 2)
    frame = scores_frame(tasks).set_index("Task")
    record = _record()
    table = build_table(systems_from_records([record]))
    leaderboard = {row.label: row.cells[0].mean for row in table.rows if row.overall}
    demo = comparison_table({"gated": scores_frame(tasks)})["gated"]
    summary = summary_text(
        RunResult(output_dir=Path("run"), results=tasks, overall=record.overall, record=record.to_dict(), trained=False)
    )
    printed = {
        line.split("weighted mean")[0].strip(): line.split() for line in summary.splitlines() if "weighted mean" in line
    }
    for label, value in expected.items():
        assert frame.loc[label, "score"] == demo[label] == value
        assert f"{value:.4f}" in printed[label]
        if label != "Overall":  # the leaderboard shows per-track Overall rows only
            assert leaderboard[label] == value
    assert record.overall == record.to_dict()["overall"] == expected["Overall"]
