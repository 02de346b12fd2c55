"""Typed task, group and recipe configs, loaded from YAML with errors that name file, field and fix.

This module knows nothing of torch: it only turns YAML into dataclasses and back.

Why a small hand-written loader instead of a schema library: the configs are a handful of flat
dataclasses, and every error must say *which YAML file*, *which dotted field* and *what to write
instead*; doing that over plain dataclasses keeps the layer dependency-free and the messages ours.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A config file or value is wrong. The message names the file, the field and the fix."""


# --------------------------------------------------------------------------------------------
# Generic dataclass <- dict conversion with precise errors
# --------------------------------------------------------------------------------------------

def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(value: Any, hint: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where, source)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else ConfigError(
            f"{source}: field '{where}': {_describe(value)} matches none of "
            f"{[getattr(a, '__name__', str(a)) for a in args]}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: field '{where}' must be a mapping of "
                              f"{[f.name for f in dataclasses.fields(hint)]}, got {_describe(value)}")
        return from_dict(hint, value, source, where)
    if origin is list:
        if isinstance(value, (str, int, float)) and args and args[0] is str:
            value = [str(value)]  # a single shard pattern may be written without a list
        if not isinstance(value, list):
            raise ConfigError(f"{source}: field '{where}' must be a list, got {_describe(value)}")
        return [_convert(v, args[0] if args else Any, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: field '{where}' must be a mapping, got {_describe(value)}")
        value_hint = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, value_hint, f"{where}.{k}", source) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: field '{where}' must be true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: field '{where}' must be a whole number, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML reads "1e-4" (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: field '{where}' must be a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: field '{where}' must be a string, got {_describe(value)}")
    return value


def from_dict(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown or missing fields raise :class:`ConfigError`."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown field '{where}'.{hint} Valid fields here: {names}")
        kwargs[key] = _convert(value, hints[key], where, source)
    for f in dataclasses.fields(cls):
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.init and no_default and f.name not in kwargs:
            where = f"{prefix}.{f.name}" if prefix else f.name
            raise ConfigError(f"{source}: missing required field '{where}'. Add it to the file.")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(source, prefix)
    return obj


def to_dict(obj: Any) -> dict:
    """Plain-dict form of a config dataclass (for records and hashing)."""
    return dataclasses.asdict(obj)


def stable_hash(payload: Any, length: int = 12) -> str:
    """Short, order-independent hash of JSON-serialisable data."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; parse errors name the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found.") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}.")
    return data


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------

DEFAULT_GENERATION = {"max_new_tokens": 150, "repetition_penalty": 1.05}


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
    key: str | None = None      # overrides the task's key for this split
    prompt: str | None = None   # overrides the task's prompt for this split

    def validate(self, source: str, prefix: str) -> None:
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
        super().validate(source, prefix)
        if self.batch_size < 1:
            raise ConfigError(f"{source}: field '{prefix}.batch_size' must be >= 1, got {self.batch_size}.")
        if self.num_workers < 0:
            raise ConfigError(f"{source}: field '{prefix}.num_workers' must be >= 0, got {self.num_workers}.")
        if self.sort_by_length < 1:
            raise ConfigError(f"{source}: field '{prefix}.sort_by_length' must be >= 1 (1 keeps stream order), "
                              f"got {self.sort_by_length}.")


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
        if self.weight < 0:
            raise ConfigError(f"{source}: field 'weight' must be >= 0, got {self.weight}.")
        self.generation = {**DEFAULT_GENERATION, **self.generation}

    def split(self, which: str) -> DataSpec:
        """The train or eval data spec; a clear error when the task lacks it."""
        spec = self.train if which == "train" else self.eval
        if spec is None:
            raise ConfigError(f"{self.source}: task '{self.name}' has no '{which}' section, "
                              f"so it cannot be used for {'training' if which == 'train' else 'evaluation'}.")
        return spec

    def key_for(self, which: str) -> str | None:
        return self.split(which).key or self.key

    def prompt_for(self, which: str) -> str:
        return self.split(which).prompt or self.prompt

    def identity(self) -> dict:
        """Everything about the task that changes an evaluation score (for cache keys)."""
        ev = self.eval
        return {"name": self.name, "metric": self.metric, "metric_args": self.metric_args,
                "prompt": self.prompt_for("eval") if ev else self.prompt, "key": self.key_for("eval") if ev else self.key,
                "generation": self.generation, "eval": to_dict(ev) if ev else None}


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
        if self.aggregate != "weighted_mean":
            raise ConfigError(f"{source}: field 'aggregate' must be 'weighted_mean' "
                              f"(the official Overall: sum(w*score)/sum(w)), got {self.aggregate!r}.")
        if not self.tasks:
            raise ConfigError(f"{source}: field 'tasks' is empty; list at least one task.")


# --------------------------------------------------------------------------------------------
# Recipes: model | data mixture | optimisation, kept apart so a fusion recipe changes only 'model'
# --------------------------------------------------------------------------------------------

@dataclass
class LLMSpec:
    """The decoder: a hub id, a local directory, a GGUF file, or a registered name."""

    name_or_path: str = "HuggingFaceTB/SmolLM2-135M"
    gguf_file: str | None = None
    revision: str | None = None
    dtype: str = "float32"


@dataclass
class LoraSpec:
    """LoRA on the frozen LLM (official defaults: r 8, alpha 32, dropout 0.1, all linear layers)."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: str | list[str] = "all-linear"


@dataclass
class ProjectorSpec:
    name: str = "linear"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """Front-end (encoder or fusion), projector, LLM and LoRA."""

    encoder: str | None = None
    encoder_args: dict[str, Any] = field(default_factory=dict)
    projector: ProjectorSpec = field(default_factory=ProjectorSpec)
    llm: LLMSpec = field(default_factory=LLMSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    aux_loss_weights: dict[str, float] = field(default_factory=dict)
    prompt_before_audio: bool = False  # official order: [audio][prompt]; PaM puts the prompt first (packed rows)
    # Training sequence layout: "official" ([padded audio block][prompt + target], positions
    # through the padding) or "packed" (each row contiguous); see model.py. Not parity: packed.
    audio_layout: str = "official"
    # Mode of a frozen single encoder during training: "train" (official, by accident: see
    # model.py) or "eval" (the fix). Evaluation always runs it in eval mode.
    frozen_encoder_mode: str = "train"

    def validate(self, source: str, prefix: str) -> None:
        for name, allowed in (("audio_layout", ("official", "packed")), ("frozen_encoder_mode", ("train", "eval"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{source}: field '{prefix}.{name}' must be one of {list(allowed)}, "
                                  f"got {getattr(self, name)!r}.")


@dataclass
class MixtureEntry:
    """One training set of the mixture; ``prob`` as in the official configs (see data.mixture)."""

    task: str
    prob: float | None = None


@dataclass
class DataMixtureSpec:
    mixture: list[MixtureEntry] = field(default_factory=list)
    crop_seconds: float = 30.0
    sample_rate: int = 16000
    num_workers: int = 0        # loader processes; 1 reads the same stream as 0, ahead of the model
    shuffle_buffer: int = 256
    max_skip_fraction: float = 0.05
    # Official: each window of 128 consecutive (shuffled) examples is sorted by prompt+target
    # tokens + audio seconds, longest first, then cut into batches; 1 keeps stream order.
    sort_by_length: int = 128

    def validate(self, source: str, prefix: str) -> None:
        for i, entry in enumerate(self.mixture):
            if entry.prob is not None and entry.prob <= 0:
                raise ConfigError(f"{source}: field '{prefix}.mixture[{i}].prob' must be > 0, got {entry.prob}.")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ConfigError(f"{source}: field '{prefix}.max_skip_fraction' must be within [0, 1].")
        if self.num_workers < 0:
            raise ConfigError(f"{source}: field '{prefix}.num_workers' must be >= 0, got {self.num_workers}.")
        for name in ("shuffle_buffer", "sort_by_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: field '{prefix}.{name}' must be >= 1 (1 = off), got {getattr(self, name)}.")


PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class OptimSpec:
    """Optimisation and precision (official: AdamW 1e-4, wd 0.01, linear schedule -- 200 warmup
    steps, then linear decay to 0 at max_steps, the transformers Trainer default -- clip 1.0,
    batch 4 per process, seed 42, fp32)."""

    max_steps: int = 100_000
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    projector_lr_scale: float = 1.0  # learning rate of the projector relative to lr (officially 1)
    batch_size: int = 4
    seed: int = 42
    precision: str = "fp32"
    save_steps: int = 200
    keep_checkpoints: int = 2
    log_steps: int = 100
    # Official on N processes: the backward loss is multiplied by N (a transformers Trainer
    # behaviour, see train.py); no effect on one process. false: the plain mean over processes.
    loss_times_processes: bool = True

    def validate(self, source: str, prefix: str) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{source}: field '{prefix}.precision' must be one of {PRECISIONS}, got {self.precision!r}.")
        if self.scheduler not in ("cosine", "linear", "constant"):
            raise ConfigError(f"{source}: field '{prefix}.scheduler' must be linear (official), cosine or constant.")
        for name in ("max_steps", "batch_size", "save_steps", "log_steps", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{source}: field '{prefix}.{name}' must be >= 1, got {getattr(self, name)}.")


@dataclass
class SpeedSpec:
    """Speed options; every one at its parity value by default and recorded with the recipe.

    ``feature_cache``: off, read or readwrite (frozen encoders' outputs stored per clip);
    ``cache_dtype``: fp16 (half the disk) or fp32 (equal to uncached runs); ``tf32``: TF32 matmuls on GPU;
    ``deterministic``: the official deterministic mode (on by default).
    """

    feature_cache: str = "off"
    cache_dtype: str = "fp16"
    tf32: bool = False
    # Official (run.py --benchmark, always on): deterministic algorithms, cuDNN deterministic,
    # CUBLAS_WORKSPACE_CONFIG=:4096:8. false allows faster non-deterministic kernels (recorded).
    deterministic: bool = True

    def validate(self, source: str, prefix: str) -> None:
        if self.feature_cache not in ("off", "read", "readwrite"):
            raise ConfigError(f"{source}: field '{prefix}.feature_cache' must be off, read or readwrite, "
                              f"got {self.feature_cache!r}.")
        if self.cache_dtype not in ("fp16", "fp32"):
            raise ConfigError(f"{source}: field '{prefix}.cache_dtype' must be fp16 or fp32, got {self.cache_dtype!r}.")


TRAINABLE_PARTS = ("projector", "llm_lora", "front_end", "encoder_lora")
DEFAULT_TRAINABLE = ("projector", "llm_lora", "front_end")  # a single-stage run, or a stage that names none


@dataclass
class EncoderLoraSpec:
    """LoRA on one sub-encoder of a fusion (implicit injection, seed 000 §2.4.1: r 16, alpha 32,
    dropout 0.05 on Dasheng's qkv)."""

    encoder: int = 1
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["qkv"])


@dataclass
class StageSpec:
    """One stage of a multi-stage recipe: what trains, optimiser changes, and a merge after it.

    ``train`` lists parts among projector, llm_lora, front_end (the fusion's own parameters) and
    encoder_lora (adapters the stage attaches with ``encoder_lora``); everything else is frozen.
    ``merge: true`` folds the stage's encoder LoRA into the encoder when the stage ends.
    """

    name: str
    train: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))
    optim: dict[str, Any] = field(default_factory=dict)
    encoder_lora: EncoderLoraSpec | None = None
    merge: bool = False

    def validate(self, source: str, prefix: str) -> None:
        unknown = sorted(set(self.train) - set(TRAINABLE_PARTS))
        if unknown:
            raise ConfigError(f"{source}: field '{prefix}.train' has unknown part(s) {unknown}; "
                              f"choose from {list(TRAINABLE_PARTS)}.")
        fields = {f.name for f in dataclasses.fields(OptimSpec)}
        bad = sorted(set(self.optim) - fields)
        if bad:
            raise ConfigError(f"{source}: field '{prefix}.optim' has unknown key(s) {bad}; valid: {sorted(fields)}.")
        if self.merge and self.encoder_lora is None:
            raise ConfigError(f"{source}: field '{prefix}.merge' is true but the stage attaches no encoder_lora.")
        if "encoder_lora" in self.train and self.encoder_lora is None:
            raise ConfigError(f"{source}: field '{prefix}.train' lists encoder_lora; add '{prefix}.encoder_lora'.")


@dataclass
class RecipeConfig:
    """A training recipe: what model to build, what data to mix, how to optimise."""

    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataMixtureSpec = field(default_factory=DataMixtureSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    speed: SpeedSpec = field(default_factory=SpeedSpec)
    eval: str | None = None  # default evaluation group/task when the CLI names none
    stages: list[StageSpec] = field(default_factory=list)  # empty: one stage training everything trainable
    description: str | None = None
    aliases: list[str] = field(default_factory=list)
    source: str = ""

    def validate(self, source: str, prefix: str) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: field 'stages' repeats a stage name ({names}); names must be unique.")
        if not self.data.mixture:
            raise ConfigError(f"{source}: field 'data.mixture' is empty; list the training tasks, "
                              f"e.g. 'mixture: [{{task: esc-50}}]'.")


# --------------------------------------------------------------------------------------------
# Overrides and lookup
# --------------------------------------------------------------------------------------------

def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a raw config mapping."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=5e-5")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section of {source}.")
        node[parts[-1]] = value
    return data


def search_roots() -> list[Path]:
    """Directories holding tasks/ and recipes/: $XARES_FUSION_CONFIG_PATH entries, then the checkout."""
    roots = [Path(p) for p in os.environ.get("XARES_FUSION_CONFIG_PATH", "").split(os.pathsep) if p]
    roots.append(Path(__file__).resolve().parent.parent)
    return roots


def _aliases(path: Path) -> list[str]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []  # reported with file and line when the file itself is loaded
    aliases = data.get("aliases", []) if isinstance(data, dict) else []
    return [str(a) for a in aliases] if isinstance(aliases, list) else []


def _index(kind: str) -> dict[str, Path]:
    """Name -> file for every YAML under ``<root>/<kind>/``: file stems, relative paths and the
    ``aliases`` a file declares (first root wins)."""
    found: dict[str, Path] = {}
    for root in search_roots():
        base = root / kind
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.yaml")):
            for name in [path.stem, str(path.relative_to(base).with_suffix("")), *_aliases(path)]:
                found.setdefault(name, path)
    return found


def catalogue(kind: str) -> dict[str, str]:
    """Shipped names of ``kind`` ('tasks' or 'recipes') -> 'task', 'group' or 'recipe'."""
    out = {}
    for path in sorted(set(_index(kind).values())):
        if kind == "recipes":
            out[path.stem] = "recipe"
        else:
            try:
                out[path.stem] = _kind_of(load_yaml(path))
            except ConfigError:
                out[path.stem] = "task"
    return out


def _kind_of(data: dict) -> str:
    if "tasks" in data:
        return "group"
    if (isinstance(data.get("data"), dict) and "mixture" in data["data"]) or any(
            key in data for key in ("model", "optim", "stages")):
        return "recipe"
    return "task"


def validate_files(paths: list[Path]) -> tuple[list[str], int]:
    """Load every task, group and recipe YAML under ``paths`` (default: all shipped ones),
    including the tasks a recipe or group refers to.

    Returns the error messages (each naming file and field) and the number of files checked.
    """
    if not paths:
        paths = [root / kind for root in search_roots() for kind in ("tasks", "recipes")]
    files = [f for p in paths for f in (sorted(p.rglob("*.yaml")) if p.is_dir() else [p])]
    problems = []
    for file in files:
        try:
            if _kind_of(load_yaml(file)) == "recipe":
                recipe = load_recipe(str(file))
                for i, entry in enumerate(recipe.data.mixture):
                    try:
                        load_task(entry.task).split("train")
                    except ConfigError as err:
                        raise ConfigError(f"{file}: field 'data.mixture[{i}].task': {err}") from err
                if recipe.eval:
                    load_eval_tasks(recipe.eval)
            else:
                load_eval_tasks(str(file))
        except ConfigError as err:
            problems.append(str(err))
    return problems, len(files)


def known_names(kind: str) -> list[str]:
    """Short names of the shipped tasks (``kind='tasks'``) or recipes (``kind='recipes'``)."""
    return sorted({p.stem for p in _index(kind).values()})


def resolve_config_path(ref: str, kind: str) -> Path:
    """A YAML path, or the name of a shipped task/group/recipe; unknown names suggest close ones."""
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{ref}: file not found.")
        return path
    index = _index(kind)
    if ref in index:
        return index[ref]
    close = difflib.get_close_matches(ref, list(index), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown {kind[:-1]} {ref!r}.{hint} Known: {known_names(kind)}; "
                      f"or pass a path to a .yaml file.")


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (_deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict)
                       else value)
    return merged


def _extended_data(path: Path, kind: str, seen: tuple[Path, ...] = ()) -> dict:
    """A task or recipe file's mapping with ``extends: BASE`` resolved (the file's fields win,
    mappings merge, lists are replaced)."""
    data = load_yaml(path)
    base_ref = data.pop("extends", None)
    if base_ref is None:
        return data
    base_path = resolve_config_path(str(base_ref), kind)
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: field 'extends' forms a cycle ({base_ref!r}).")
    base = _extended_data(base_path, kind, seen + (path.resolve(),))
    base.pop("aliases", None)  # aliases name the base file, not its variants
    return _deep_merge(base, data)


def load_task(ref: str | Path) -> TaskConfig:
    path = resolve_config_path(str(ref), "tasks")
    data = _extended_data(path, "tasks")
    if "tasks" in data:
        raise ConfigError(f"{path}: this is a task group, not a single task.")
    task = from_dict(TaskConfig, data, str(path))
    task.source = str(path)
    return task


def load_eval_tasks(ref: str) -> tuple[str, list[TaskConfig]]:
    """Tasks to evaluate from a group or a single task (name or path); returns (group name, tasks)."""
    path = resolve_config_path(ref, "tasks")
    data = load_yaml(path)
    if "tasks" not in data:
        task = load_task(path)
        return task.name, [task]
    group = from_dict(TaskGroup, data, str(path))
    tasks = []
    for i, task_ref in enumerate(group.tasks):
        try:
            tasks.append(load_task(task_ref))
        except ConfigError as err:
            raise ConfigError(f"{path}: field 'tasks[{i}]' ({task_ref!r}): {err}") from err
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: field 'tasks' lists {dupes} more than once.")
    return group.name, tasks


FRONT_END_SECTIONS = ("model", "optim", "stages")


def load_recipe(ref: str, overrides: list[str] | None = None, front_end: str | None = None) -> RecipeConfig:
    """Load a recipe by name or path and apply ``--set`` overrides before validation.

    ``front_end``: a recipe file (e.g. ``recipes/fusion/gated.yaml``) whose model, optim and stages
    replace the recipe's own, so that a fusion system trains on any data mixture (its data and
    eval sections are ignored).
    """
    path = resolve_config_path(ref, "recipes")
    data = _extended_data(path, "recipes")
    if front_end is not None:
        front_path = resolve_config_path(front_end, "recipes")
        front = _extended_data(front_path, "recipes")
        if not isinstance(front.get("model"), dict) or not front["model"].get("encoder"):
            raise ConfigError(f"{front_path}: field 'model.encoder' is missing; a front-end file given as ENCODER "
                              f"is a recipe whose 'model' section names the encoder or fusion.")
        for section in FRONT_END_SECTIONS:
            if section in front:
                data[section] = front[section]
        path = Path(f"{path} + {front_path}")
    data = apply_overrides(data, overrides or [], str(path))
    source = str(path) + (" (with --set overrides)" if overrides else "")
    recipe = from_dict(RecipeConfig, data, source)
    recipe.source = str(path)
    return recipe
