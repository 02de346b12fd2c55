"""Training the stages of a run: each stage's trainable parts, data stream, loss weights and directory.

`xares-fusion bench` times these same functions, so its figures are those of a run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ..config import OptimSpec, RecipeConfig, StageSpec
from ..data.mixture import MixtureStream, TokenLengthKey
from ..model import AudioLLM
from ..stages import attach_encoder_lora, merge_encoder_lora, set_trainable, stage_parts
from ..train import is_complete, load_final, train
from .planning import Plan, RunRequest

log = logging.getLogger("xares_fusion")


def aux_loss_weights(model: AudioLLM, recipe: RecipeConfig) -> dict[str, float]:
    """The weight of each auxiliary loss: the model's defaults (the front-end's and projector's
    papers' values), overridden by the recipe's ``model.aux_loss_weights``."""
    return {**model.default_aux_weights(), **recipe.model.aux_loss_weights}


def training_stream(plan: Plan, optim: OptimSpec, tokenizer: Any, rank: int = 0, start_step: int = 0) -> MixtureStream:
    """The recipe's seeded stream of training batches for one process; ``tokenizer`` gives the
    token counts of the official length sort key."""
    data = plan.recipe.data
    return MixtureStream(
        plan.sources,
        optim.batch_size,
        data.crop_seconds,
        data.sample_rate,
        optim.seed,
        rank=rank,
        start_step=start_step,
        shuffle_buffer=data.shuffle_buffer,
        sort_by_length=data.sort_by_length,
        length_key=TokenLengthKey(tokenizer, data.sample_rate),
    )


def training_loader(
    plan: Plan, optim: OptimSpec, tokenizer: Any, accelerator: Accelerator, start_step: int = 0
) -> torch.utils.data.DataLoader:
    """This process's training batches from data position ``start_step`` (batches already trained
    on) on, read by ``data.num_workers`` loader processes."""
    stream = training_stream(plan, optim, tokenizer, rank=accelerator.process_index, start_step=start_step)
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=plan.recipe.data.num_workers, pin_memory=accelerator.device.type == "cuda"
    )


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
        info = _reuse_stage(model, stage, stage_dir) if is_complete(stage_dir) else None
        if info is None:  # not finished, or its final weights are damaged (finished from a checkpoint)
            info = _train_stage(model, plan, stage, stage_dir, request, accelerator, trainable)
            train_info["trained_this_invocation"] = True
        train_info["stages"].append({"name": stage.name if stage else "train", **info})
        if stage is not None and stage.merge:
            merge_encoder_lora(model, stage.encoder_lora)
    return train_info


def _reuse_stage(model: AudioLLM, stage: StageSpec | None, stage_dir: Path) -> dict[str, Any] | None:
    """Load a finished stage's final weights; its record from the completion marker. None when they
    are damaged and a checkpoint is left to finish the stage from (see :func:`~xares_fusion.train.load_final`)."""
    marker = load_final(model, stage_dir)
    if marker is None:
        return None
    log.info(
        "stage %s already complete (%s steps); reusing its final weights",
        stage.name if stage else "train",
        marker.get("steps"),
    )
    return {
        "steps": marker.get("steps"),
        "loss_history": marker.get("loss_history", []),
        "skips": marker.get("skips", {}),
        "trained_this_invocation": False,
    }


def _train_stage(
    model: AudioLLM,
    plan: Plan,
    stage: StageSpec | None,
    stage_dir: Path,
    request: RunRequest,
    accelerator: Accelerator,
    trainable: int,
) -> dict[str, Any]:
    """Train one stage (resuming from its last checkpoint) with the run's data and loss weights."""
    recipe = plan.recipe
    optim = dataclasses.replace(recipe.optim, **stage.optim) if stage is not None else recipe.optim
    log.info(
        "training %s: %d trainable parameters, %d steps",
        stage.name if stage else "the model",
        trainable,
        optim.max_steps,
    )
    summary = train(
        model,
        # from the data position of the checkpoint it resumes from (0 when it starts)
        lambda start: training_loader(plan, optim, model.tokenizer, accelerator, start_step=start),
        optim,
        stage_dir,
        accelerator,
        aux_loss_weights(model, recipe),
        recipe.data.max_skip_fraction,
        completion_info={"run_hash": plan.run_hash},
        progress=request.progress,
    )
    return {**dataclasses.asdict(summary), "trained_this_invocation": True}
