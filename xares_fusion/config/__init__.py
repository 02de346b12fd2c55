"""Typed task, group and recipe configs, loaded from YAML with errors that name file, field and fix.

This package knows nothing of torch: it only turns YAML into dataclasses and back. One module per
concern:

* :mod:`.validation` -- :class:`ConfigError` and the shared field checks;
* :mod:`.vocabulary` -- the precision, feature-cache and model-mode names recipes may use;
* :mod:`.convert` -- dataclass <- dict conversion, dict form and hashing;
* :mod:`.tasks` -- tasks, their data splits and task groups;
* :mod:`.optim` -- optimisation, precision and speed specs;
* :mod:`.recipes` -- model, data mixture and stage specs, and the recipe itself;
* :mod:`.discovery` -- where config files live and how names resolve to them;
* :mod:`.loading` -- YAML, ``extends``, ``--set`` overrides, front-end swaps;
* :mod:`.inventory` -- the shipped catalogue and the check that every file loads.
"""

from __future__ import annotations

from .convert import from_dict, stable_hash, to_dict
from .discovery import known_names, resolve_config_path, search_roots
from .inventory import catalogue, validate_files
from .loading import FRONT_END_SECTIONS, apply_overrides, load_eval_tasks, load_recipe, load_task, load_yaml
from .optim import OptimSpec, SpeedSpec
from .recipes import (
    DEFAULT_TRAINABLE,
    TRAINABLE_PARTS,
    DataMixtureSpec,
    EncoderLoraSpec,
    LLMSpec,
    LoraSpec,
    MixtureEntry,
    ModelSpec,
    ProjectorSpec,
    RecipeConfig,
    StageSpec,
)
from .tasks import DEFAULT_GENERATION, DataSpec, EvalSpec, TaskConfig, TaskGroup
from .validation import ConfigError
from .vocabulary import AUDIO_LAYOUTS, FEATURE_CACHE_DTYPES, FEATURE_CACHE_MODES, FROZEN_ENCODER_MODES, PRECISIONS

__all__ = [
    "AUDIO_LAYOUTS",
    "DEFAULT_GENERATION",
    "DEFAULT_TRAINABLE",
    "FEATURE_CACHE_DTYPES",
    "FEATURE_CACHE_MODES",
    "FRONT_END_SECTIONS",
    "FROZEN_ENCODER_MODES",
    "PRECISIONS",
    "TRAINABLE_PARTS",
    "ConfigError",
    "DataMixtureSpec",
    "DataSpec",
    "EncoderLoraSpec",
    "EvalSpec",
    "LLMSpec",
    "LoraSpec",
    "MixtureEntry",
    "ModelSpec",
    "OptimSpec",
    "ProjectorSpec",
    "RecipeConfig",
    "SpeedSpec",
    "StageSpec",
    "TaskConfig",
    "TaskGroup",
    "apply_overrides",
    "catalogue",
    "from_dict",
    "known_names",
    "load_eval_tasks",
    "load_recipe",
    "load_task",
    "load_yaml",
    "resolve_config_path",
    "search_roots",
    "stable_hash",
    "to_dict",
    "validate_files",
]
