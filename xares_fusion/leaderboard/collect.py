"""Gather systems for the leaderboard: our result records (grouped into runs of one system) and
published reference tables."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, TaskConfig, load_yaml
from ..results import RECORD_FILE, ResultRecord, read_record


@dataclass
class System:
    """One leaderboard column: per-task scores of one or more runs, or published mean ± std.

    ``runs[task]`` lists one score per run; ``weights`` and ``metrics`` give each task's Overall
    weight and metric; ``published_std`` holds a std printed by a paper (its runs are not
    available); ``printed_overall`` the Overall values a paper printed.
    """

    key: str
    label: str
    group: str | None = None
    runs: dict[str, list[float]] = field(default_factory=dict)
    tracks: dict[str, str] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)
    unofficial: set[str] = field(default_factory=set)
    published: bool = False
    published_std: dict[str, float] = field(default_factory=dict)
    published_runs: int | None = None
    printed_overall: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    # Our runs: every departure from the official pipeline its records list (parity.py); a record
    # written before parity was recorded counts as departing ("no parity record").
    departures: list[str] = field(default_factory=list)

    @property
    def official(self) -> bool:
        """Published systems, and our runs whose records all say they follow the official pipeline."""
        return self.published or not self.departures


def load_records(paths: list[Path]) -> list[ResultRecord]:
    """Result records from files and directory trees (every ``result.json`` below a directory)."""
    records = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory (give result.json files or run directories).")
        records += [read_record(file) for file in (sorted(path.rglob(RECORD_FILE)) if path.is_dir() else [path])]
    return records


def _identity(record: ResultRecord) -> dict[str, Any]:
    system = record.system
    return {
        "name": system.label,
        "recipe": system.recipe,
        "llm": system.llm,
        "precision": system.precision,
        "eval": record.eval_group,
        "limit": record.limit,
        "official": record.parity.official if record.parity is not None else None,
    }


def systems_from_records(records: Iterable[ResultRecord | dict], names: dict[str, dict] | None = None) -> list[System]:
    """One system per distinct (front-end, recipe, LLM, precision, eval set, row limit); records of
    the same system (seeds, machines) become its runs. The label is the front-end name plus
    whatever else differs between the systems shown; ``names`` renames (and groups) them.
    Records may also be given as parsed JSON objects."""
    names = names or {}
    grouped: dict[str, list[ResultRecord]] = {}
    for record in records:
        if not isinstance(record, ResultRecord):
            record = ResultRecord.from_dict(record)
        grouped.setdefault(json.dumps(_identity(record), sort_keys=True), []).append(record)
    identities = [json.loads(k) for k in grouped]
    varying = [
        f for f in ("recipe", "llm", "precision", "eval", "limit") if len({json.dumps(i[f]) for i in identities}) > 1
    ]
    systems = []
    for key, group in grouped.items():
        identity = json.loads(key)
        label = identity["name"] + "".join(f" · {identity[f]}" for f in varying if identity[f] is not None)
        rename = names.get(label, {})
        system = System(key=key, label=rename.get("label", label), group=rename.get("group"), identity=identity)
        for record in group:
            departures = (
                record.parity.departures
                if record.parity is not None
                else ["no parity record (written by an older version)"]
            )
            for departure in departures:
                if departure not in system.departures:
                    system.departures.append(departure)
            for task in record.tasks:
                if task.score is None:
                    continue
                system.runs.setdefault(task.task, []).append(float(task.score))
                system.tracks[task.task] = task.track or "other"
                system.weights[task.task] = task.weight
                system.metrics[task.task] = task.metric
                if task.unofficial:
                    system.unofficial.add(task.task)
        systems.append(system)
    return systems


def load_names(path: Path | None) -> dict[str, dict]:
    """The rename file: ``{automatic label: {label: ..., group: ...}}`` (or just ``label: new``)."""
    if path is None:
        return {}
    data = load_yaml(path)
    return {k: (v if isinstance(v, dict) else {"label": str(v)}) for k, v in data.items()}


def _pair(value: Any, where: str) -> tuple[float, float | None]:
    if isinstance(value, (int, float)):
        return float(value), None
    if isinstance(value, list) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise ConfigError(f"{where}: expected a number or [mean, std], got {value!r}")


def load_reference(path: Path, tasks: dict[str, TaskConfig]) -> list[System]:
    """Published systems of one reference file (``leaderboard/reference/*.yaml``); each task's
    track, Overall weight and metric come from its task config in ``tasks``."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    source = data.get("source", path.stem)
    systems = []
    for i, entry in enumerate(data.get("systems", [])):
        where = f"{path}: systems[{i}]"
        system = System(
            key=f"{path.stem}:{entry['id']}",
            label=entry.get("label", entry["id"]),
            group=entry.get("group"),
            published=True,
            published_runs=entry.get("runs"),
            identity={"source": source, "id": entry["id"]},
        )
        for task, value in entry.get("scores", {}).items():
            if task not in tasks:
                raise ConfigError(f"{where}.scores: unknown task {task!r}; use the names of tasks/track_*/.")
            mean, std = _pair(value, f"{where}.scores.{task}")
            system.runs[task] = [mean]
            system.tracks[task] = tasks[task].track or "other"
            system.weights[task] = tasks[task].weight
            system.metrics[task] = tasks[task].metric
            if std is not None:
                system.published_std[task] = std
        for track, value in (entry.get("printed_overall") or {}).items():
            system.printed_overall[str(track)] = _pair(value, f"{where}.printed_overall.{track}")
        systems.append(system)
    return systems
