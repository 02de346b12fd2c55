"""The runner: recipe + tasks + encoder -> trained audio LLM -> predictions -> scores -> records.

Everything that can be wrong with the request (configs, encoder, missing shards, a run directory
holding another configuration) is found before any training starts. Training resumes from the
last checkpoint; a finished run is reused; a task's score is cached under a hash of everything
that changes it. Results already computed are written before a failure is raised.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed

from . import __version__
from .config import (ConfigError, OptimSpec, RecipeConfig, StageSpec, TaskConfig, load_eval_tasks, load_recipe,
                     load_task, stable_hash, to_dict)
from .data.mixture import MixtureStream, TokenLengthKey, TrainSource, mixture_probabilities
from .data.shards import require_shards, shard_base
from .data.mini import make_mini
from .data.synthetic import make_synthetic
from .encoders import build_encoder, check_encoder
from .evaluate import generate_predictions, score_rows
from .feature_cache import FeatureCache
from .paths import cache_home
from .llm import apply_lora, load_llm
from .metrics.caption import CaptionMetricUnavailable
from .model import AudioLLM
from .parity import parity, recipe_departures, task_departures
from .projectors import build_projector
from .registry import encoder_display_name
from .stages import attach_encoder_lora, merge_encoder_lora, set_trainable, stage_parts
from .results import (RECORD_FILE, RECORD_VERSION, SCORES_FILE, TaskResult, format_table, provenance,
                      record_tasks, weighted_overall, write_record, write_scores)
from .train import is_complete, load_final, train

log = logging.getLogger("xares_fusion")

PRECISION_TO_ACCELERATE = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
GENERATORS = {"synthetic": make_synthetic, "mini": make_mini}


class RunFailed(RuntimeError):
    """Some tasks could not be scored; everything else was written (the message says where)."""


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
class RunResult:
    output_dir: Path
    results: list[TaskResult]
    overall: float | None
    record: dict[str, Any]
    trained: bool


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


def use_cpu() -> bool:
    """CPU when no CUDA device exists or ACCELERATE_USE_CPU asks for it. Accelerate only forms a
    multi-process CPU group (gloo) when told it runs on CPU, so this is passed explicitly."""
    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def process_state() -> PartialState:
    """The process group of this run (one process, or all of `torchrun` / `accelerate launch`)."""
    return PartialState(cpu=use_cpu())


def _ensure_generated(task: TaskConfig, split: str) -> None:
    spec = task.split(split)
    if spec.generator:
        if spec.generator not in GENERATORS:
            raise ConfigError(f"{task.source}: field '{split}.generator': unknown generator "
                              f"{spec.generator!r}; known: {sorted(GENERATORS)}")
        GENERATORS[spec.generator](shard_base(spec))


def _train_identity(task: TaskConfig) -> dict[str, Any]:
    return {"name": task.name, "prompt": task.prompt_for("train"), "key": task.key_for("train"),
            "data": to_dict(task.split("train"))}


def plan_run(request: RunRequest, state: PartialState | None = None) -> Plan:
    """Load and check everything the run needs; raises before any model is built.

    Under ``accelerate launch`` only the main process generates data and claims the run
    directory; the others wait for it.
    """
    state = state or process_state()
    overrides = list(request.overrides)
    if request.max_steps is not None:
        overrides.append(f"optim.max_steps={request.max_steps}")
    front_end = request.encoder if _is_front_end_file(request.encoder) else None
    recipe = load_recipe(request.train, overrides, front_end=front_end)
    encoder = recipe.model.encoder if front_end else (request.encoder or recipe.model.encoder)
    if not encoder:
        raise ConfigError(f"{recipe.source}: no encoder given. Name one on the command line "
                          f"(xares-fusion run ENCODER ...) or set model.encoder in the recipe.")
    encoder_args = {**recipe.model.encoder_args, **request.encoder_args}
    recipe.model = dataclasses.replace(recipe.model, encoder=encoder, encoder_args=encoder_args)
    eval_group, eval_tasks = load_eval_tasks(request.eval or recipe.eval or request.train)

    train_tasks = []
    for i, entry in enumerate(recipe.data.mixture):
        try:
            train_tasks.append(load_task(entry.task))
        except ConfigError as err:
            raise ConfigError(f"{recipe.source}: field 'data.mixture[{i}].task': {err}") from err
    if state.is_main_process:
        for task, split in [(t, "train") for t in train_tasks] + [(t, "eval") for t in eval_tasks]:
            _ensure_generated(task, split)
    state.wait_for_everyone()
    shard_lists = [require_shards(t.split("train"), t.name, "train") for t in train_tasks]
    for task in eval_tasks:
        require_shards(task.split("eval"), task.name, "eval")
    probs = mixture_probabilities([e.prob for e in recipe.data.mixture], [len(s) for s in shard_lists])
    sources = [TrainSource(t.name, t.prompt_for("train"), t.key_for("train"), shards, p)
               for t, shards, p in zip(train_tasks, shard_lists, probs)]

    departures = recipe_departures(recipe, load_recipe(request.train, [], front_end=front_end).optim.max_steps)
    departures += [d for task in eval_tasks for d in task_departures(task)]
    if request.limit is not None:
        departures.append(f"eval limited to {request.limit} rows per task (official: every row)")
    log.info("parity: %s", "official pipeline" if not departures else "departs: " + "; ".join(departures))

    recipe_identity = {k: v for k, v in to_dict(recipe).items() if k not in ("name", "source", "description", "eval")}
    identity = {"harness": __version__, "recipe": recipe_identity,
                "train_tasks": [_train_identity(t) for t in train_tasks]}
    run_hash = stable_hash(identity)
    system_name = Path(front_end).stem if front_end else encoder_display_name(encoder)
    run_dir = request.output_dir or Path("experiments") / recipe.name / system_name
    if state.is_main_process:
        _claim_run_dir(run_dir, run_hash, identity)
    state.wait_for_everyone()
    return Plan(recipe, encoder, encoder_args, eval_group, eval_tasks, sources, run_dir, run_hash, identity,
                system_name, departures)


def _is_front_end_file(ref: str | None) -> bool:
    """ENCODER given as a recipe file (e.g. recipes/fusion/gated.yaml): its model section is the front-end."""
    return bool(ref) and Path(ref).suffix in (".yaml", ".yml")


def _claim_run_dir(run_dir: Path, run_hash: str, identity: dict[str, Any]) -> None:
    """Refuse a run directory that holds a different configuration (never mix two runs)."""
    marker = run_dir / "run.json"
    if marker.is_file():
        previous = json.loads(marker.read_text())
        if previous.get("run_hash") != run_hash:
            old, new = previous.get("identity", {}).get("recipe", {}), identity["recipe"]
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"{run_dir} holds a run of another configuration (differs in: {changed or 'training data'}). "
                f"Fix: pass a new --output-dir, or delete {run_dir} to start over.")
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_hash": run_hash, "identity": identity}, indent=2, default=str))


def build_model(recipe: RecipeConfig, task_vocab: list[str] | None = None) -> AudioLLM:
    """Encoder or fusion (checked against the contract) + projector + LLM with LoRA, seeded.
    ``task_vocab``: the training tasks in mixture order (prompt-routed fusions map tasks to experts)."""
    # The LLM loads first: building a local model the first time may draw random numbers, and the
    # trainable parts must be initialised the same whether or not it was already built.
    llm, tokenizer = load_llm(recipe.model.llm)
    set_seed(recipe.optim.seed)
    encoder = build_encoder(recipe.model.encoder, recipe.model.encoder_args)
    summary = check_encoder(recipe.model.encoder, encoder=encoder)
    log.info("encoder check passed: %s", summary)
    _official_probe(encoder)
    llm = apply_lora(llm, recipe.model.lora)
    projector = build_projector(recipe.model.projector.name, encoder.output_dim, llm.config.hidden_size,
                                recipe.model.projector.args)
    return AudioLLM(encoder, projector, llm, tokenizer, prompt_before_audio=recipe.model.prompt_before_audio,
                    task_vocab=task_vocab, audio_layout=recipe.model.audio_layout,
                    frozen_encoder_mode=recipe.model.frozen_encoder_mode)


def set_deterministic(on: bool) -> None:
    """The official run.py always runs in deterministic mode (its --benchmark flag defaults to
    true): deterministic algorithms, cuDNN deterministic and not benchmarking, and the cuBLAS
    workspace setting those need (read when CUDA initialises, so set before the first matmul).
    An operation without a deterministic kernel warns here instead of stopping the run, as it
    would officially: every model the official pipeline runs computes the same either way, and
    a fusion front-end that needs such a kernel still trains (its warning names the operation)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False


def _official_probe(encoder: torch.nn.Module) -> None:
    """Draw what the official encoder check draws from the global generator between building the
    encoder and initialising LoRA and the projector (``check_audio_encoder``: one
    ``torch.randn(3, 50000)`` on the encoder's device, then a forward pass), so that with the
    same seed, encoder and LLM the trainable parts start from the official initial values. Our
    own checker uses a private generator and draws nothing here."""
    params = list(encoder.parameters())
    device = params[0].device if params else torch.device("cpu")
    probe = torch.randn(3, 50000, device=device)
    with torch.no_grad():
        encoder(probe, None)


def _attach_log_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s"))
    log.addHandler(handler)
    return handler


def run(request: RunRequest) -> RunResult:
    """Train (or reuse) and evaluate; writes predictions, scores.tsv and the result record."""
    plan = plan_run(request, process_state())
    recipe = plan.recipe
    set_deterministic(recipe.speed.deterministic)
    accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[recipe.optim.precision], cpu=use_cpu())
    handler = _attach_log_file(plan.run_dir) if accelerator.is_main_process else None
    try:
        return _run_planned(plan, request, accelerator)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _run_planned(plan: Plan, request: RunRequest, accelerator: Accelerator) -> RunResult:
    recipe, run_dir = plan.recipe, plan.run_dir
    log.info("run %s: encoder %s, recipe %s, eval %s -> %s (processes %d)", plan.run_hash, plan.encoder,
             recipe.name, plan.eval_group, run_dir, accelerator.num_processes)
    # Built artefacts (the offline and toy LLMs, converted checkpoints) are made on first use,
    # and in a process group transformers' save_pretrained writes from rank 0 only: rank 0
    # builds them while the other ranks wait, then load what it wrote.
    with accelerator.main_process_first():
        model = build_model(recipe, [src.task for src in plan.sources]).to(accelerator.device)
    if recipe.speed.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if recipe.speed.feature_cache != "off":
        model.feature_cache = FeatureCache(cache_home() / "features", recipe.speed.feature_cache,
                                           recipe.speed.cache_dtype)
        for encoder in (model.encoder.encoders if model.is_fusion else [model.encoder]):
            log.info(model.feature_cache.size_note(encoder))
    train_info = train_stages(model, plan, request, accelerator)
    trained = train_info["trained_this_invocation"]

    results = [_evaluate_task(model, task, plan, request, accelerator) for task in plan.eval_tasks]
    overall = weighted_overall(results)
    record = {
        "record_version": RECORD_VERSION,
        "run_hash": plan.run_hash,
        "system": {"name": plan.system_name, "encoder": plan.encoder, "encoder_args": plan.encoder_args,
                   "recipe": recipe.name,
                   "llm": recipe.model.llm.name_or_path, "precision": recipe.optim.precision},
        "eval_group": plan.eval_group,
        "limit": request.limit,
        "processes": accelerator.num_processes,  # global batch = optim.batch_size x processes
        "tasks": record_tasks(results),
        "overall": overall,
        "overall_unofficial": any(r.unofficial for r in results),
        "parity": parity(plan.departures + [f"{r.task}: scored with {r.metric} (official: {task.metric})"
                                            for r, task in zip(results, plan.eval_tasks) if r.unofficial]),
        "recipe": to_dict(recipe),
        "task_configs": {t.name: {"source": t.source, "hash": stable_hash(t.identity())} for t in plan.eval_tasks},
        "train": train_info,
        "feature_cache": ({"mode": recipe.speed.feature_cache, "dtype": recipe.speed.cache_dtype,
                           "hits": model.feature_cache.hits, "misses": model.feature_cache.misses}
                          if model.feature_cache is not None else None),
        "provenance": provenance(str(accelerator.device)),
    }
    if accelerator.is_main_process:
        write_scores(results, run_dir / SCORES_FILE)
        write_record(run_dir / RECORD_FILE, record)
    failed = [r for r in results if r.error]
    if failed:
        raise RunFailed("; ".join(f"{r.task}: {r.error}" for r in failed) +
                        f". The other tasks' scores and all predictions are in {run_dir}.")
    return RunResult(run_dir, results, overall, record, trained)


def train_stages(model: AudioLLM, plan: Plan, request: RunRequest, accelerator: Accelerator) -> dict[str, Any]:
    """Run (or reload) every stage of the recipe in order, with its merges; one stage when the
    recipe lists none. A finished stage is replayed from its final weights, so a run resumes
    mid-way and evaluation after a multi-stage run sees the merged encoders."""
    train_info: dict[str, Any] = {"stages": [], "trained_this_invocation": False}
    for stage in plan.recipe.stages or [None]:
        stage_dir = plan.run_dir if stage is None else plan.run_dir / "stages" / stage.name
        if stage is not None and stage.encoder_lora is not None:
            attach_encoder_lora(model, stage.encoder_lora)
            model.to(accelerator.device)
        trainable = set_trainable(model, stage_parts(stage))
        if is_complete(stage_dir):
            marker = load_final(model, stage_dir)
            log.info("stage %s already complete (%s steps); reusing its final weights",
                     stage.name if stage else "train", marker.get("steps"))
            info = {"steps": marker.get("steps"), "loss_history": marker.get("loss_history", []),
                    "skips": marker.get("skips", {}), "trained_this_invocation": False}
        else:
            info = _train_stage(model, plan, stage, stage_dir, request, accelerator, trainable)
            train_info["trained_this_invocation"] = True
        train_info["stages"].append({"name": stage.name if stage else "train", **info})
        if stage is not None and stage.merge:
            merge_encoder_lora(model, stage.encoder_lora)
    return train_info


def training_stream(plan: Plan, optim: OptimSpec, tokenizer: Any, rank: int = 0, start_step: int = 0) -> MixtureStream:
    """The recipe's seeded stream of training batches for one process; ``tokenizer`` gives the
    token counts of the official length sort key."""
    data = plan.recipe.data
    return MixtureStream(plan.sources, optim.batch_size, data.crop_seconds, data.sample_rate, optim.seed, rank=rank,
                         start_step=start_step, shuffle_buffer=data.shuffle_buffer,
                         sort_by_length=data.sort_by_length, length_key=TokenLengthKey(tokenizer, data.sample_rate))


def _train_stage(model: AudioLLM, plan: Plan, stage: StageSpec | None, stage_dir: Path, request: RunRequest,
                 accelerator: Accelerator, trainable: int) -> dict[str, Any]:
    recipe = plan.recipe
    optim = dataclasses.replace(recipe.optim, **stage.optim) if stage is not None else recipe.optim
    log.info("training %s: %d trainable parameters, %d steps", stage.name if stage else "the model", trainable,
             optim.max_steps)
    stream = training_stream(plan, optim, model.tokenizer, rank=accelerator.process_index,
                             start_step=_resume_step(stage_dir))
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=recipe.data.num_workers,
                                         pin_memory=accelerator.device.type == "cuda")
    weights = {**getattr(model.encoder, "default_aux_weights", {}), **getattr(model.projector, "default_aux_weights", {}),
               **recipe.model.aux_loss_weights}
    summary = train(model, loader, optim, stage_dir, accelerator, weights, recipe.data.max_skip_fraction,
                    completion_info={"run_hash": plan.run_hash}, progress=request.progress)
    return {**dataclasses.asdict(summary), "trained_this_invocation": True}


def _resume_step(run_dir: Path) -> int:
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*.pt"))
    return int(checkpoints[-1].stem.split("-")[1]) if checkpoints else 0


def _evaluate_task(model: AudioLLM, task: TaskConfig, plan: Plan, request: RunRequest,
                   accelerator: Accelerator) -> TaskResult:
    """Score one task, reusing a cached score only when everything that changes it is the same."""
    cache_key = stable_hash({"run": plan.run_hash, "task": task.identity(), "limit": request.limit})
    cache_file = plan.run_dir / "scores" / f"{task.name}.json"
    predictions_file = plan.run_dir / f"predictions_{task.name}.csv"
    if cache_file.is_file() and predictions_file.is_file():
        cached = json.loads(cache_file.read_text())
        if cached.get("cache_key") == cache_key:
            log.info("%s: cached score %s", task.name, cached["score"])
            return TaskResult(**cached)
    started = time.time()
    model.reset_routing_stats()
    outcome = generate_predictions(model, task, accelerator, request.limit, plan.recipe.data.sample_rate,
                                   progress=request.progress)
    result = TaskResult(task=task.name, metric=task.metric, score=None, weight=task.weight, track=task.track,
                        rows=len(outcome.rows), skips=outcome.skips.as_dict(), cache_key=cache_key,
                        routing=model.routing_stats() or None)
    if accelerator.is_main_process:
        outcome.rows.to_csv(predictions_file, index=False)
    lost = outcome.skips.skipped / max(1, outcome.skips.seen)
    if lost > plan.recipe.data.max_skip_fraction:
        result.error = (f"{outcome.skips.skipped} of {outcome.skips.seen} eval samples skipped "
                        f"({dict(outcome.skips.reasons)}), above data.max_skip_fraction="
                        f"{plan.recipe.data.max_skip_fraction}")
    elif outcome.rows.empty:
        result.error = "no evaluation rows"
    else:
        try:
            result.score, choice = score_rows(task, outcome.rows)
            result.metric, result.unofficial = choice.name, choice.unofficial
        except (ValueError, CaptionMetricUnavailable) as err:
            result.error = f"scoring with {task.metric} failed: {err}"
    log.info("%s: %s = %s (%d rows, %.1fs)", task.name, result.metric, result.score, result.rows,
             time.time() - started)
    if accelerator.is_main_process and result.error is None:
        cache_file.parent.mkdir(exist_ok=True)
        cache_file.write_text(json.dumps(dataclasses.asdict(result), indent=2))
    return result


def summary_text(result: RunResult) -> str:
    """The per-task table with the Overall row, whether the run follows the official pipeline,
    and where the files are."""
    departures = result.record["parity"]["departures"]
    parity_line = ("Parity: the official XARES-LLM pipeline (see docs/parity.md)." if not departures else
                   "Not comparable with official scores; departs from the official pipeline in: "
                   + "; ".join(departures))
    return (f"{format_table(result.results)}\n\n{parity_line}\n\nResults in {result.output_dir}: {SCORES_FILE}, "
            f"{RECORD_FILE}, predictions_<task>.csv")
