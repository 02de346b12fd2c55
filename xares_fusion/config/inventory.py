"""The shipped catalogue of tasks, groups and recipes, and the check that every file loads."""

from __future__ import annotations

from pathlib import Path

from .discovery import index, search_roots
from .loading import load_eval_tasks, load_recipe, load_task, load_yaml
from .validation import ConfigError


def kind_of(data: dict) -> str:
    """'group', 'recipe' or 'task': what a raw YAML mapping describes, judged by its sections."""
    if "tasks" in data:
        return "group"
    if (isinstance(data.get("data"), dict) and "mixture" in data["data"]) or any(
        key in data for key in ("model", "optim", "stages")
    ):
        return "recipe"
    return "task"


def catalogue(kind: str) -> dict[str, str]:
    """Shipped names of ``kind`` ('tasks' or 'recipes') -> 'task', 'group' or 'recipe'."""
    out = {}
    for path in sorted(set(index(kind).values())):
        if kind == "recipes":
            out[path.stem] = "recipe"
        else:
            try:
                out[path.stem] = kind_of(load_yaml(path))
            except ConfigError:
                out[path.stem] = "task"
    return out


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
            if kind_of(load_yaml(file)) == "recipe":
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
