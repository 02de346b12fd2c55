"""Gather systems for the leaderboard: our result records (grouped into runs of one system) and
published reference tables."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, TaskConfig, load_yaml
from ..results import RECORD_FILE, RecordError, ResultRecord, SystemIdentity, read_record

log = logging.getLogger("xares_fusion")


@dataclass
class System:
    """One leaderboard column: per-task scores of one or more runs, or published mean ± std.

    ``identity`` is what keys the column (:func:`system_identity` plus eval set and row limit for
    our runs; ``source#id`` for published ones), so two set-ups never share a column whatever
    their labels. ``runs[task]`` lists one score per run; ``weights`` and ``metrics`` give each
    task's Overall weight and metric; ``published_std`` holds a std printed by a paper (its runs
    are not available); ``printed_overall`` the Overall values a paper printed; ``sources`` the
    result.json of each run (its predictions_<task>.csv lie beside it).
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
    identity: str = ""
    source: str | None = None  # the paper a published system comes from
    limit: int | None = None  # our runs: the row limit per task (None: the whole test set)
    sources: list[Path] = field(default_factory=list)
    # Our runs: every departure from the official pipeline its records list (parity.py); a record
    # written before parity was recorded counts as departing ("no parity record").
    departures: list[str] = field(default_factory=list)

    @property
    def official(self) -> bool:
        """Published systems, and our runs whose records all say they follow the official pipeline."""
        return self.published or not self.departures

    @property
    def display(self) -> str:
        """'Group: label', or the label of a system without a group."""
        return f"{self.group}: {self.label}" if self.group else self.label

    def restricted(self, tasks: set[str]) -> System:
        """This system with only the scores of ``tasks`` (the others dropped)."""
        keep = lambda values: {t: v for t, v in values.items() if t in tasks}  # noqa: E731
        return dataclasses.replace(
            self,
            runs=keep(self.runs),
            tracks=keep(self.tracks),
            weights=keep(self.weights),
            metrics=keep(self.metrics),
            unofficial=self.unofficial & tasks,
            published_std=keep(self.published_std),
            printed_overall={},  # a printed Overall covers the paper's task set, not the subset
        )


def load_records(paths: list[Path]) -> list[ResultRecord]:
    """Result records from files and directory trees (every ``result.json`` below a directory).
    A file that is not a readable record (no ``task`` in a task row, bad JSON, a newer schema) is
    skipped with a warning naming it, so one broken run never hides the others."""
    records = []
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory (give result.json files or run directories).")
        for file in sorted(path.rglob(RECORD_FILE)) if path.is_dir() else [path]:
            try:
                records.append(read_record(file))
            except RecordError as err:
                log.warning("leaderboard: skipped %s: %s", file, err)
    return records


def system_identity(system: SystemIdentity) -> str:
    """The one identity of a system: the record's canonical front-end identity when it has one
    (``system.identity``), else the encoder reference with its arguments (the system's name when the
    record names no encoder); then the recipe, LLM and precision. Two records are the same system
    exactly when these strings are equal."""
    front_end = getattr(system, "identity", None) or (
        f"{system.encoder}{_compact(system.encoder_args) if system.encoder_args else ''}"
        if system.encoder
        else f"name={system.name}"  # a record naming no encoder (hand-written) is told apart by its name
    )
    return f"{front_end} recipe={system.recipe} llm={system.llm} precision={system.precision}"


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def _facets(record: ResultRecord) -> dict[str, str]:
    """What a label may be told apart by: encoder, each encoder argument, recipe, LLM, precision."""
    system = record.system
    facets = {"encoder": str(system.encoder)}
    facets |= {k: _compact(v) for k, v in _flatten(system.encoder_args).items()}
    facets |= {"recipe": str(system.recipe), "llm": str(system.llm), "precision": str(system.precision)}
    return facets


def _flatten(args: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested encoder arguments as dotted keys ({'stft': {'gamma': 0.1}} -> {'stft.gamma': 0.1})."""
    flat: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _distinguish(labels: dict[str, str], facets: dict[str, dict[str, str]]) -> dict[str, str]:
    """Labels made unique: systems of different identities that share a label get the facets
    that differ between them as a suffix (an identity hash when none does), with a warning."""
    by_label: dict[str, list[str]] = {}
    for key, label in labels.items():
        by_label.setdefault(label, []).append(key)
    out = dict(labels)
    for label, keys in by_label.items():
        if len(keys) < 2:
            continue
        names = sorted({name for k in keys for name in facets[k]})
        differing = [n for n in names if len({facets[k].get(n) for k in keys}) > 1]
        for k in keys:
            parts = [f"{n}={facets[k][n]}" if n in facets[k] else f"{n} unset" for n in differing]
            out[k] = f"{label} · {', '.join(parts) if parts else hashlib.sha1(k.encode()).hexdigest()[:6]}"
        log.warning(
            "leaderboard: %d different systems share the label %r; shown as %s",
            len(keys),
            label,
            ", ".join(repr(out[k]) for k in keys),
        )
    return out


def systems_from_records(records: Iterable[ResultRecord | dict], names: dict[str, dict] | None = None) -> list[System]:
    """One system per distinct (system identity, eval set, row limit), :func:`system_identity`;
    records of the same system (seeds, machines) become its runs. The label is the front-end
    name plus whatever else differs between the systems shown (recipe, LLM, precision, eval set,
    row limit); systems that still share a label get the differing argument as a suffix and a
    warning, never one merged column. ``names`` renames (and groups) them by automatic label.
    Records may also be given as parsed JSON objects."""
    names = names or {}
    grouped: dict[str, list[ResultRecord]] = {}
    for record in records:
        if not isinstance(record, ResultRecord):
            record = ResultRecord.from_dict(record)
        key = json.dumps(
            {"identity": system_identity(record.system), "eval": record.eval_group, "limit": record.limit},
            sort_keys=True,
        )
        grouped.setdefault(key, []).append(record)
    shown = {k: _shown(group[0]) for k, group in grouped.items()}
    varying = [
        f for f in ("recipe", "llm", "precision", "eval", "limit") if len({str(s[f]) for s in shown.values()}) > 1
    ]
    labels = {k: s["name"] + "".join(f" · {s[f]}" for f in varying if s[f] is not None) for k, s in shown.items()}
    labels = _distinguish(labels, {k: _facets(group[0]) for k, group in grouped.items()})
    systems = []
    for key, group in grouped.items():
        rename = names.get(labels[key], {})
        system = System(
            key=key,
            label=rename.get("label", labels[key]),
            group=rename.get("group"),
            identity=json.loads(key)["identity"],
            limit=group[0].limit,
            sources=[r.source for r in group if r.source is not None],
        )
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


def _shown(record: ResultRecord) -> dict[str, Any]:
    """The fields an automatic label is made of."""
    system = record.system
    return {
        "name": system.label,
        "recipe": system.recipe,
        "llm": system.llm,
        "precision": system.precision,
        "eval": record.eval_group,
        "limit": record.limit,
    }


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
        if not isinstance(entry, dict) or "id" not in entry:
            raise ConfigError(f"{where}: each system needs an 'id' (and 'scores'), got {entry!r}")
        system = System(
            key=f"{path.stem}:{entry['id']}",
            label=entry.get("label", entry["id"]),
            group=entry.get("group"),
            published=True,
            published_runs=entry.get("runs"),
            identity=f"{source}#{entry['id']}",
            source=source,
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


def _normalised(text: str) -> str:
    """Lower case, middle dots dropped, runs of spaces collapsed: what a typed name is matched on."""
    return " ".join(text.replace("·", " ").lower().split())


def find_system(query: str, systems: list[System], option: str = "--baseline") -> System:
    """The one system ``query`` names: its full label or identity, else the one system whose label
    or identity starts with it (case-insensitive, middle dots optional). No match or several
    matches is a :class:`ConfigError` listing the candidates."""
    for matches in (
        [s for s in systems if query in (s.label, s.display, s.identity, s.key)],
        [s for s in systems if _normalised(query) in (_normalised(s.label), _normalised(s.display))],
        [
            s
            for s in systems
            if any(_normalised(n).startswith(_normalised(query)) for n in (s.label, s.display, s.identity))
        ],
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(
                f"{option} {query!r} is ambiguous; it matches {[s.display for s in matches]}. "
                f"Give more of the label, or the identity: {[s.identity for s in matches]}"
            )
    raise ConfigError(f"{option} {query!r} matches no system; the systems are {[s.display for s in systems]}")
