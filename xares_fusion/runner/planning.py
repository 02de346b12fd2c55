"""Planning a run: the request checked and resolved into a recipe, tasks, data and a claimed run directory.

Everything that can be wrong with the request (configs, missing shards, a run directory holding
another configuration) is found here, before any model is built.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from .. import __version__
from ..atomic import atomic_write_text
from ..config import (
    ConfigError,
    RecipeConfig,
    TaskConfig,
    load_eval_tasks,
    load_recipe,
    load_task,
    stable_hash,
    to_dict,
)
from ..data.generators import GENERATORS
from ..data.mixture import TrainSource, mixture_probabilities, probe_source
from ..data.shards import MissingDataError, require_shards, shard_base
from ..errors import RunDirError
from ..parity import recipe_departures, task_departures
from ..registry import PROJECTORS, RegistryError, resolve_encoder_factory, system_identity
from .backend import process_state
from .lock import RunDirLock

log = logging.getLogger("xares_fusion")

RUN_MARKER = "run.json"


@dataclass
class RunRequest:
    """What `xares-fusion run ENCODER [TRAIN] [EVAL]` asks for."""

    encoder: str | None
    train: str = "all"
    eval: str | None = None
    encoder_args: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    output_dir: Path | None = None
    max_steps: int | None = None
    limit: int | None = None
    progress: bool = True


@dataclass
class Plan:
    """A validated request: the recipe, the tasks, the data and the run directory."""

    recipe: RecipeConfig
    encoder: str
    encoder_args: dict[str, Any]
    eval_group: str
    eval_tasks: list[TaskConfig]
    sources: list[TrainSource]
    run_dir: Path
    run_hash: str
    identity: dict[str, Any]
    system_name: str
    departures: list[str] = field(default_factory=list)  # from the official pipeline (see parity.py)
    lock: RunDirLock | None = None  # the run directory's lock, held for `run` on the main process
    system_identity: str = ""  # registry.system_identity: canonical encoder + arguments


def plan_run(request: RunRequest, state: PartialState | None = None, hold_lock: bool = False) -> Plan:
    """Load and check everything the run needs; raises before any model is built.

    Under ``accelerate launch`` only the main process generates data and claims the run
    directory; the others wait for it. The claim is made under the directory's lock; with
    ``hold_lock`` the plan keeps it (``Plan.lock``; the caller releases it when the run ends).
    """
    state = state or process_state()
    front_end = request.encoder if _is_front_end_file(request.encoder) else None
    recipe = _resolve_recipe(request, front_end)
    _check_references(recipe)
    eval_group, eval_tasks = load_eval_tasks(request.eval or recipe.eval or request.train)
    train_tasks = _load_train_tasks(recipe)
    sources = _prepare_data(recipe, train_tasks, eval_tasks, state)
    departures = _departures(request, recipe, eval_tasks, front_end)
    recipe_identity = {k: v for k, v in to_dict(recipe).items() if k not in ("name", "source", "description", "eval")}
    # An evaluation setting: part of each score's cache key, not of the training's identity.
    recipe_identity["data"] = {k: v for k, v in recipe_identity["data"].items() if k != "eval_max_seconds"}
    identity = {
        "harness": __version__,
        "recipe": recipe_identity,
        "train_tasks": [_train_identity(t) for t in train_tasks],
        "world": world_identity(recipe, state.num_processes),
    }
    run_hash = stable_hash(identity)
    # One identity whichever way the encoder was named (registered name, file, dotted path).
    identity_key, display_name = system_identity(recipe.model.encoder, recipe.model.encoder_args)
    system_name = Path(front_end).stem if front_end else display_name
    run_dir = request.output_dir or Path("experiments") / recipe.name / system_name
    lock = None
    if state.is_main_process:
        lock = RunDirLock(run_dir).acquire()  # before the claim: two runs never claim one directory
        try:
            _claim_run_dir(run_dir, run_hash, identity)
        except BaseException:
            lock.release()
            raise
        if not hold_lock:
            lock.release()
            lock = None
    state.wait_for_everyone()
    return Plan(
        recipe,
        recipe.model.encoder,
        recipe.model.encoder_args,
        eval_group,
        eval_tasks,
        sources,
        run_dir,
        run_hash,
        identity,
        system_name,
        departures,
        lock,
        identity_key,
    )


def _is_front_end_file(ref: str | None) -> bool:
    """ENCODER given as a recipe file (e.g. recipes/fusion/gated.yaml): its model section is the front-end."""
    return bool(ref) and Path(ref).suffix in (".yaml", ".yml")


def _resolve_recipe(request: RunRequest, front_end: str | None) -> RecipeConfig:
    """The recipe with the request's overrides, step limit, encoder and encoder arguments."""
    overrides = list(request.overrides)
    if request.max_steps is not None:
        overrides.append(f"optim.max_steps={request.max_steps}")
    recipe = load_recipe(request.train, overrides, front_end=front_end)
    encoder = recipe.model.encoder if front_end else (request.encoder or recipe.model.encoder)
    if not encoder:
        raise ConfigError(
            f"{recipe.source}: no encoder given. Name one on the command line "
            f"(xares-fusion run ENCODER ...) or set model.encoder in the recipe."
        )
    encoder_args = {**recipe.model.encoder_args, **request.encoder_args}
    recipe.model = dataclasses.replace(recipe.model, encoder=encoder, encoder_args=encoder_args)
    return recipe


def _check_references(recipe: RecipeConfig) -> None:
    """Unknown encoder and projector names fail here, before the LLM loads or the directory is claimed."""
    try:
        resolve_encoder_factory(recipe.model.encoder)
        PROJECTORS.get(recipe.model.projector.name)
    except RegistryError as err:
        raise ConfigError(f"{recipe.source}: {err}") from err


def _load_train_tasks(recipe: RecipeConfig) -> list[TaskConfig]:
    tasks = []
    for i, entry in enumerate(recipe.data.mixture):
        try:
            tasks.append(load_task(entry.task))
        except ConfigError as err:
            raise ConfigError(f"{recipe.source}: field 'data.mixture[{i}].task': {err}") from err
    return tasks


def _ensure_generated(task: TaskConfig, split: str) -> None:
    """Write the split's shards when a generator makes them (synthetic and mini tasks)."""
    spec = task.split(split)
    if spec.generator:
        try:
            generate = GENERATORS.get(spec.generator)
        except RegistryError as err:
            raise ConfigError(f"{task.source}: field '{split}.generator': {err}") from err
        generate(shard_base(spec))


def _prepare_data(
    recipe: RecipeConfig, train_tasks: list[TaskConfig], eval_tasks: list[TaskConfig], state: PartialState
) -> list[TrainSource]:
    """Generate what is generated (main process), check every shard exists, and weigh the mixture."""
    if state.is_main_process:
        for task, split in [(t, "train") for t in train_tasks] + [(t, "eval") for t in eval_tasks]:
            _ensure_generated(task, split)
    state.wait_for_everyone()
    # Every split is checked before one is reported: a run lists all its missing data at once.
    shard_lists, gaps = [], []
    for task, split in [(t, "train") for t in train_tasks] + [(t, "eval") for t in eval_tasks]:
        try:
            shards = require_shards(task.split(split), task.name, split)
        except MissingDataError as err:
            gaps.append(err)
            shards = []
        if split == "train":
            shard_lists.append(shards)
    if gaps:
        raise MissingDataError.combine(gaps)
    probs = mixture_probabilities([e.prob for e in recipe.data.mixture], [len(s) for s in shard_lists])
    sources = [
        TrainSource(t.name, t.prompt_for("train"), t.key_for("train"), shards, p)
        for t, shards, p in zip(train_tasks, shard_lists, probs)
    ]
    if state.is_main_process:  # an untrainable set is refused before any model loads
        for source in sources:
            probe_source(source, recipe.data.sample_rate)
    return sources


def _departures(
    request: RunRequest, recipe: RecipeConfig, eval_tasks: list[TaskConfig], front_end: str | None
) -> list[str]:
    """How the run departs from the official pipeline (logged, and recorded with the results)."""
    departures = recipe_departures(recipe, load_recipe(request.train, [], front_end=front_end).optim.max_steps)
    departures += [d for task in eval_tasks for d in task_departures(task)]
    if request.limit is not None:
        departures.append(f"eval limited to {request.limit} rows per task (official: every row)")
    log.info("parity: %s", "official pipeline" if not departures else "departs: " + "; ".join(departures))
    return departures


def world_identity(recipe: RecipeConfig, processes: int) -> dict[str, int]:
    """How the run's batches are spread: processes, batches per optimiser step, and the global
    batch (batch_size x processes x grad_accum_steps), which changes what training computes."""
    optim = recipe.optim
    return {
        "processes": processes,
        "grad_accum_steps": optim.grad_accum_steps,
        "global_batch": optim.batch_size * processes * optim.grad_accum_steps,
    }


def _train_identity(task: TaskConfig) -> dict[str, Any]:
    return {
        "name": task.name,
        "prompt": task.prompt_for("train"),
        "key": task.key_for("train"),
        "data": to_dict(task.split("train")),
    }


def _claim_run_dir(run_dir: Path, run_hash: str, identity: dict[str, Any]) -> None:
    """Refuse a run directory that holds a different configuration's work (never mix two runs).
    One whose run stopped before writing any work (a typo, a missing file) is claimed anew."""
    marker = run_dir / RUN_MARKER
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous.get("run_hash") != run_hash and _holds_work(run_dir):
            old, new = previous.get("identity", {}).get("recipe", {}), identity["recipe"]
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if previous.get("identity", {}).get("world") != identity["world"]:
                changed.append(f"world {previous.get('identity', {}).get('world')} -> {identity['world']}")
            raise RunDirError(
                f"{run_dir} holds a run of another configuration (differs in: {changed or 'training data'}). "
                f"Fix: pass a new --output-dir, or delete {run_dir} to start over."
            )
        if previous.get("run_hash") == run_hash:
            return
        log.warning("%s: its run of another configuration wrote nothing; claimed for this one", run_dir)
    atomic_write_text(marker, json.dumps({"run_hash": run_hash, "identity": identity}, indent=2, default=str))


WORK = ("checkpoints/step-*", "final/*", "COMPLETE.json", "scores/*.json", "predictions_*.csv", "result.json")
"""What a run directory's run has computed (in it or in a stage's directory); log.txt and run.json do not count."""


def _holds_work(run_dir: Path) -> bool:
    """Whether anything of :data:`WORK` exists under ``run_dir``."""
    return any(next(run_dir.rglob(pattern), None) is not None for pattern in WORK)
