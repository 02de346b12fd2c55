"""Task configs: one benchmark task (data, label key, prompt, metric, generation) and task groups."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from ..registry import METRICS, RegistryError
from .convert import to_dict
from .validation import ConfigError, field_path, require_at_least

DEFAULT_GENERATION = {"max_new_tokens": 150, "repetition_penalty": 1.05}
"""The official generation settings; a task's ``generation`` mapping overrides single keys."""


@dataclass
class DataSpec:
    """Where the shards of one split live.

    ``shards`` are brace-expandable patterns (``train_{000..051}.tar.gz``) or globs. With
    ``repo_id`` they name files of that hub dataset repo, found under the data home; with
    ``generator`` they are produced locally by that generator (``xares-fusion make-synthetic``);
    otherwise they are local paths (relative to the working directory).
    """

    shards: list[str]
    repo_id: str | None = None
    generator: str | None = None
    key: str | None = None  # overrides the task's key for this split
    prompt: str | None = None  # overrides the task's prompt for this split

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for an empty shard list or two data sources."""
        if not self.shards:
            raise ConfigError(f"{source}: field '{prefix}.shards' is empty; list at least one shard pattern.")
        if self.repo_id and self.generator:
            raise ConfigError(f"{source}: field '{prefix}': give either 'repo_id' or 'generator', not both.")


@dataclass
class EvalSpec(DataSpec):
    """The evaluation split and its batching.

    ``num_workers`` (the official field): 0 decodes clips in the generating thread; 1 or more
    decodes them in a read-ahead thread (the eval stream is one ordered stream, so one thread does
    it all). ``sort_by_length``: clips taken together (official: 256); each window is sorted by
    length, longest first, before it is cut into batches, so rows of a batch have similar
    lengths; 1 keeps stream order. Neither changes an answer (a row gets the same answer alone or
    in any batch).
    """

    batch_size: int = 8
    num_workers: int = 1
    sort_by_length: int = 256

    def validate(self, source: str, prefix: str) -> None:
        """The :class:`DataSpec` checks, then the batching bounds."""
        super().validate(source, prefix)
        require_at_least(source, field_path(prefix, "batch_size"), self.batch_size, 1)
        require_at_least(source, field_path(prefix, "num_workers"), self.num_workers, 0)
        require_at_least(
            source, field_path(prefix, "sort_by_length"), self.sort_by_length, 1, " (1 keeps stream order)"
        )


def _check_metric(source: str, metric: str, metric_args: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` unless ``metric`` is registered and ``metric_args`` are exactly the
    arguments it needs (e.g. mAP's ``num_classes``): scoring calls ``metric(predictions, references,
    **metric_args)`` after training, so the call is bound here, when the file loads. The metric
    registry imports the metrics package on first use (torch-free), not this module."""
    try:
        function = METRICS.get(metric)
    except RegistryError as err:
        raise ConfigError(f"{source}: field 'metric': {err}") from err
    try:
        inspect.signature(function).bind([], [], **metric_args)
    except TypeError as err:
        params = list(inspect.signature(function).parameters.values())[2:]  # after predictions, references
        takes = [p.name + ("" if p.default is p.empty else " (optional)") for p in params if p.kind != p.VAR_KEYWORD]
        example = ", e.g. 'metric_args: {num_classes: N}' (N: the number of labels)" if "num_classes" in takes else ""
        raise ConfigError(
            f"{source}: field 'metric_args' {metric_args} does not fit metric {metric!r} ({err}); it takes "
            f"{takes or 'no arguments'}. Fix the task's metric_args{example}."
        ) from err


@dataclass
class TaskConfig:
    """One benchmark task: its data, label key, prompt, metric and generation settings."""

    name: str
    prompt: str
    metric: str
    key: str | None = None
    metric_args: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    track: str | None = None
    description: str | None = None
    generation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GENERATION))
    train: DataSpec | None = None
    eval: EvalSpec | None = None
    aliases: list[str] = field(default_factory=list)
    source: str = ""

    def validate(self, source: str, prefix: str) -> None:
        """Check the weight, the metric and its arguments, and the generation settings; complete
        ``generation`` with the official defaults. Everything that would otherwise fail only when
        the trained model is scored fails here, when the file loads."""
        require_at_least(source, "weight", self.weight, 0)
        _check_metric(source, self.metric, self.metric_args)
        self.generation = {**DEFAULT_GENERATION, **self.generation}
        max_new = self.generation["max_new_tokens"]
        if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new < 1:
            raise ConfigError(
                f"{source}: field 'generation.max_new_tokens' must be a whole number >= 1, got {max_new!r}."
            )
        penalty = self.generation["repetition_penalty"]
        if not isinstance(penalty, (int, float)) or isinstance(penalty, bool) or penalty <= 0:
            raise ConfigError(
                f"{source}: field 'generation.repetition_penalty' must be a number > 0 (1.0 = none, official "
                f"{DEFAULT_GENERATION['repetition_penalty']}), got {penalty!r}."
            )

    def split(self, which: str) -> DataSpec:
        """The train or eval data spec; a clear error when the task lacks it."""
        spec = self.train if which == "train" else self.eval
        if spec is None:
            raise ConfigError(
                f"{self.source}: task '{self.name}' has no '{which}' section, "
                f"so it cannot be used for {'training' if which == 'train' else 'evaluation'}."
            )
        return spec

    def key_for(self, which: str) -> str | None:
        """The label key of split ``which`` (its own, else the task's)."""
        return self.split(which).key or self.key

    def prompt_for(self, which: str) -> str:
        """The prompt of split ``which`` (its own, else the task's)."""
        return self.split(which).prompt or self.prompt

    def identity(self) -> dict:
        """Everything about the task that changes an evaluation score (for cache keys)."""
        ev = self.eval
        return {
            "name": self.name,
            "metric": self.metric,
            "metric_args": self.metric_args,
            "prompt": self.prompt_for("eval") if ev else self.prompt,
            "key": self.key_for("eval") if ev else self.key,
            "generation": self.generation,
            "eval": to_dict(ev) if ev else None,
        }


@dataclass
class TaskGroup:
    """A named set of tasks evaluated together, and how their scores aggregate into 'Overall'."""

    name: str
    tasks: list[str]
    aggregate: str = "weighted_mean"
    description: str | None = None
    aliases: list[str] = field(default_factory=list)
    source: str = ""

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for another aggregate than the official one or no tasks."""
        if self.aggregate != "weighted_mean":
            raise ConfigError(
                f"{source}: field 'aggregate' must be 'weighted_mean' "
                f"(the official Overall: sum(w*score)/sum(w)), got {self.aggregate!r}."
            )
        if not self.tasks:
            raise ConfigError(f"{source}: field 'tasks' is empty; list at least one task.")
