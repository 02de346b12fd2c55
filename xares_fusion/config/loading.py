"""Loading tasks, groups and recipes from YAML: ``extends`` inheritance, ``--set`` overrides and a
front-end swap, then conversion into the typed specs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from .convert import from_dict
from .discovery import resolve_config_path
from .recipes import RecipeConfig
from .tasks import TaskConfig, TaskGroup
from .validation import ConfigError

FRONT_END_SECTIONS = ("model", "optim", "stages")
"""The recipe sections a front-end file replaces (``load_recipe(front_end=...)``)."""


class ConfigLoader(yaml.SafeLoader):
    """The safe loader with YAML 1.2 booleans: only true and false (any case) are booleans.

    YAML 1.1 also reads yes/no/on/off as booleans, so ``feature_cache: off`` (and ``--set
    speed.feature_cache=off``) would give the string field ``False``; here such words stay
    strings, and a boolean field given one is an error naming the field.
    """


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; parse errors name the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=ConfigLoader)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found.") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}.")
    return data


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """Apply ``key.sub=value`` overrides to a raw config mapping; values are parsed as YAML with
    :class:`ConfigLoader` (so ``off`` stays a string), and a value that is not YAML names its ``--set``."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=5e-5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(
                f"--set {item!r}: the value {raw!r} is not valid YAML ({problem}). Fix: complete it "
                f"(e.g. --set '{key}=[1, 2]'), or quote it to mean a string (--set '{key}=\"{raw}\"')."
            ) from err
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section of {source}.")
        node[parts[-1]] = value
    return data


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def _extended_data(path: Path, kind: str, seen: tuple[Path, ...] = ()) -> dict:
    """A task or recipe file's mapping with ``extends: BASE`` resolved (the file's fields win,
    mappings merge, lists are replaced)."""
    data = load_yaml(path)
    base_ref = data.pop("extends", None)
    if base_ref is None:
        return data
    try:
        base_path = resolve_config_path(str(base_ref), kind)
    except ConfigError as err:
        raise ConfigError(f"{path}: field 'extends' ({base_ref!r}): {err}") from err
    if base_path.resolve() in seen or base_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: field 'extends' forms a cycle ({base_ref!r}).")
    base = _extended_data(base_path, kind, seen + (path.resolve(),))
    base.pop("aliases", None)  # aliases name the base file, not its variants
    return _deep_merge(base, data)


def load_task(ref: str | Path) -> TaskConfig:
    """Load one task by name or path (``extends`` resolved); a group file is an error."""
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
            raise ConfigError(
                f"{front_path}: field 'model.encoder' is missing; a front-end file given as ENCODER "
                f"is a recipe whose 'model' section names the encoder or fusion."
            )
        for section in FRONT_END_SECTIONS:
            if section in front:
                data[section] = front[section]
        path = Path(f"{path} + {front_path}")
    data = apply_overrides(data, overrides or [], str(path))
    source = str(path) + (" (with --set overrides)" if overrides else "")
    recipe = from_dict(RecipeConfig, data, source)
    recipe.source = str(path)
    return recipe
