"""The result record (``result.json``): one typed, versioned dataclass, read and written here only.

docs/results.md describes every field and docs/result-record.schema.json is its JSON schema.
Records written before the version field existed (no ``schema_version``, or the earlier name
``record_version``) have the layout of version 1 and read as such; a record of a newer version
than this package knows is refused with the file's name, never half read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import DataError
from .tasks import TaskResult, weighted_overall

RECORD_FILE = "result.json"
SCHEMA_VERSION = 1
# The version key of records written before the typed record; read as ``schema_version``.
LEGACY_VERSION_KEY = "record_version"
# Fields written for readers' convenience but recomputed from ``tasks`` on reading (one rule).
DERIVED_FIELDS = ("overall", "overall_unofficial")


class RecordError(DataError, ValueError):
    """A file is not a result record this version can read; the message names the file."""


@dataclass
class SystemIdentity:
    """What was run: the front-end (encoder or fusion) and its arguments, recipe, LLM and precision."""

    name: str | None = None
    identity: str | None = None  # registry.system_identity; absent in older records
    encoder: str | None = None
    encoder_args: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None
    llm: str | None = None
    precision: str | None = None

    @property
    def label(self) -> str | None:
        """The display name: ``name``, else the encoder reference."""
        return self.name or self.encoder


@dataclass
class Parity:
    """Whether the run follows the official pipeline, and each setting where it departs."""

    official: bool
    departures: list[str] = field(default_factory=list)


@dataclass
class ResultRecord:
    """One run's scores with everything needed to compare and reproduce them.

    ``overall`` and ``overall_unofficial`` are derived from ``tasks`` (the official Overall rule),
    so a record can never carry an Overall its task rows do not give. ``extra`` keeps fields this
    version does not know, written back unchanged. ``source`` is the file it was read from.
    """

    system: SystemIdentity
    tasks: list[TaskResult]
    run_hash: str | None = None
    eval_group: str | None = None
    limit: int | None = None
    processes: int | None = None
    grad_accum_steps: int | None = None  # batches per optimiser step (None: written before it was recorded)
    global_batch: int | None = None  # optim.batch_size x processes x grad_accum_steps
    parity: Parity | None = None  # None: written before parity was recorded
    recipe: dict[str, Any] = field(default_factory=dict)
    task_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    feature_cache: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    source: Path | None = field(default=None, compare=False)

    @property
    def overall(self) -> float | None:
        """The weighted Overall of every task (None when a task has no score)."""
        return weighted_overall(self.tasks)

    @property
    def overall_unofficial(self) -> bool:
        """Whether some task was scored with an unofficial proxy metric."""
        return any(t.unofficial for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``result.json`` (the order the fields are documented in)."""
        return {
            "schema_version": self.schema_version,
            "run_hash": self.run_hash,
            "system": asdict(self.system),
            "eval_group": self.eval_group,
            "limit": self.limit,
            "processes": self.processes,
            "grad_accum_steps": self.grad_accum_steps,
            "global_batch": self.global_batch,
            "tasks": [asdict(t) for t in self.tasks],
            "overall": self.overall,
            "overall_unofficial": self.overall_unofficial,
            "parity": None if self.parity is None else asdict(self.parity),
            "recipe": self.recipe,
            "task_configs": self.task_configs,
            "train": self.train,
            "feature_cache": self.feature_cache,
            "provenance": self.provenance,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Any, source: Path | str | None = None) -> ResultRecord:
        """The typed record of a parsed ``result.json``; ``source`` names the file in errors."""
        where = str(source) if source is not None else "result record"
        if not isinstance(data, dict) or "system" not in data or "tasks" not in data:
            raise RecordError(
                f"{where}: not a result record (no 'system'/'tasks' fields); "
                f"give the result.json written by `xares-fusion run`."
            )
        version = data.get("schema_version", data.get(LEGACY_VERSION_KEY, 1))
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RecordError(f"{where}: schema_version must be a positive integer, got {version!r}.")
        if version > SCHEMA_VERSION:
            raise RecordError(
                f"{where}: result record schema_version {version} is newer than this xares-fusion "
                f"reads (up to {SCHEMA_VERSION}); upgrade xares-fusion to read it."
            )
        if not isinstance(data["tasks"], list):
            raise RecordError(f"{where}: 'tasks' must be a list of task results, got {type(data['tasks']).__name__}.")
        known = {f.name for f in fields(cls)} - {"extra", "source", "schema_version"}
        values = {k: v for k, v in data.items() if k in known}
        values["system"] = _typed(SystemIdentity, data["system"], f"{where}: system")
        values["tasks"] = [_typed(TaskResult, t, f"{where}: tasks[{i}]") for i, t in enumerate(data["tasks"])]
        if data.get("parity") is not None:
            values["parity"] = _typed(Parity, data["parity"], f"{where}: parity")
        skipped = known | set(DERIVED_FIELDS) | {"schema_version", LEGACY_VERSION_KEY}
        extra = {k: v for k, v in data.items() if k not in skipped}
        return cls(**values, extra=extra, source=Path(source) if source is not None else None)


def _typed(cls: type, data: Any, where: str) -> Any:
    """``cls(**data)`` with the missing and unknown fields named in the error."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object, got {type(data).__name__}.")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecordError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}.")
    try:
        return cls(**data)
    except TypeError as err:  # a required field is missing
        raise RecordError(f"{where}: {err}.") from err


def read_record(path: Path) -> ResultRecord:
    """The record in ``path`` (a ``result.json``); :class:`RecordError` names the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: not a valid result record ({err}).") from err
    return ResultRecord.from_dict(data, source=path)


def write_record(path: Path, record: ResultRecord | dict[str, Any]) -> None:
    """Write ``record`` atomically as JSON. A plain dict (the runner's) is read as a record first,
    so every file written has the typed layout and its ``schema_version``."""
    if not isinstance(record, ResultRecord):
        record = ResultRecord.from_dict(record, source=path)
    atomic_write_text(path, json.dumps(record.to_dict(), indent=2, default=str))


def record_tasks(results: list[TaskResult]) -> list[dict[str, Any]]:
    """The ``tasks`` field of a record given as a plain dict."""
    return [asdict(r) for r in results]
