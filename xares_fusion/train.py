"""Training with Hugging Face Accelerate: `accelerate launch` runs the same loop on several GPUs.

Only the trainable parameters (projector, LoRA, trainable front-end parts) are checkpointed, with
the optimiser, scheduler and step: a frozen 135M-parameter LLM is not rewritten every few hundred
steps, which is why this is not `Accelerator.save_state`. A finished run is marked complete by an
explicit marker written after its final weights, never inferred from a checkpoint existing.

:func:`train` reads as its steps: prepare the optimiser and schedule, resume from the last
checkpoint, then per step train, log and checkpoint, and finally write the final weights and the
completion marker.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from .atomic import atomic_write, atomic_write_text
from .config import OptimSpec
from .data.samples import SkipCounter
from .model import AudioLLM, LALMOutput

log = logging.getLogger("xares_fusion")

COMPLETE_MARKER = "COMPLETE.json"
FINAL_WEIGHTS = "final/trainable.safetensors"
TRAIN_LOG = "train_log.jsonl"


class TooManySkippedError(RuntimeError):
    """A dataset lost more samples than the recipe allows (data.max_skip_fraction)."""


@dataclass
class TrainSummary:
    """What a training run did: steps, the loss per logging window, skipped samples per task."""

    steps: int
    resumed_from: int | None
    loss_history: list[dict] = field(default_factory=list)
    skips: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


def _param_groups(model: torch.nn.Module, optim: OptimSpec) -> list[dict]:
    """Weight decay on matrices only (biases and norm gains excluded, as in the HF Trainer); the
    projector's learning rate scaled by ``optim.projector_lr_scale``."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim >= 2, name.startswith("projector.")), []).append(p)
    return [
        {
            "params": params,
            "weight_decay": optim.weight_decay if decay else 0.0,
            "lr": optim.lr * (optim.projector_lr_scale if projector else 1.0),
        }
        for (decay, projector), params in groups.items()
    ]


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("step-*.pt"))


def last_checkpoint_step(run_dir: Path) -> int:
    """The step of the checkpoint a training in ``run_dir`` resumes from; 0 when there is none."""
    checkpoints = _checkpoints(run_dir)
    return int(checkpoints[-1].stem.split("-")[1]) if checkpoints else 0


def is_complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished training: its final weights and completion marker."""
    return (run_dir / COMPLETE_MARKER).is_file() and (run_dir / FINAL_WEIGHTS).is_file()


def load_trainable(model: AudioLLM, state: dict[str, torch.Tensor]) -> None:
    """Load trainable parameters by name; every saved name must exist and match in shape."""
    params = dict(model.named_parameters())
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise ValueError(
            f"saved weights do not fit this model (unknown parameters {unknown[:5]}); "
            f"the run directory belongs to another model configuration."
        )
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


class _SkipTracker:
    def __init__(self, max_fraction: float, min_seen: int = 50) -> None:
        self.counters: dict[str, SkipCounter] = defaultdict(SkipCounter)
        self.max_fraction, self.min_seen = max_fraction, min_seen

    def add(self, skips: dict) -> None:
        for task, (seen, reasons) in skips.items():
            counter = self.counters[task]
            counter.seen += seen
            counter.reasons.update(reasons)

    def check(self) -> None:
        for task, c in self.counters.items():
            if c.seen >= self.min_seen and c.skipped / c.seen > self.max_fraction:
                raise TooManySkippedError(
                    f"training set '{task}': {c.skipped} of {c.seen} samples skipped "
                    f"({dict(c.reasons)}), above data.max_skip_fraction={self.max_fraction}. "
                    f"Fix the shards or raise the limit with --set data.max_skip_fraction=..."
                )


class _LossWindow:
    """The losses of the steps since the last log line, averaged into one train_log.jsonl entry."""

    def __init__(self, log_path: Path, writes: bool) -> None:
        self.values: dict[str, list[float]] = defaultdict(list)
        self.log_path, self.writes = log_path, writes

    def add(self, loss: float, out: LALMOutput) -> None:
        self.values["loss"].append(loss)
        self.values["lm_loss"].append(out.lm_loss.item())
        for name, value in out.aux_losses.items():
            self.values[f"aux/{name}"].append(value.item())

    def flush(self, step: int, lr: float) -> dict[str, Any]:
        """The window's entry (step, learning rate used, mean of each loss), appended to the log file."""
        entry = {"step": step, "lr": lr, **{k: sum(v) / len(v) for k, v in self.values.items()}}
        self.values.clear()
        if self.writes:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
            log.info("step %d: %s", step, {k: round(v, 4) for k, v in entry.items() if k != "step"})
        return entry


def _prepare(model: AudioLLM, optim: OptimSpec, run_dir: Path) -> tuple[torch.optim.Optimizer, Any]:
    """The run directory, the AdamW optimiser over the trainable parameters and its schedule."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.AdamW(_param_groups(model, optim), lr=optim.lr)
    scheduler = get_scheduler(
        optim.scheduler, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=optim.max_steps
    )
    return optimizer, scheduler


def _resume(model: AudioLLM, optimizer: torch.optim.Optimizer, scheduler: Any, run_dir: Path) -> int | None:
    """Load the last checkpoint's weights, optimiser and schedule; returns its step (None: none)."""
    existing = _checkpoints(run_dir)
    if not existing:
        return None
    state = torch.load(existing[-1], map_location="cpu", weights_only=False)
    load_trainable(model, state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step = int(state["step"])
    log.info("resuming from %s (step %d)", existing[-1], step)
    return step


def _weighted_loss(out: LALMOutput, aux_loss_weights: dict[str, float]) -> torch.Tensor:
    """The LM loss plus each auxiliary loss times its weight (1.0 for a loss the weights do not name)."""
    loss = out.lm_loss
    for name, value in out.aux_losses.items():
        loss = loss + aux_loss_weights.get(name, 1.0) * value.float()
    return loss


def _train_step(
    wrapped: torch.nn.Module,
    batch: dict,
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    optim: OptimSpec,
    accelerator: Accelerator,
    aux_loss_weights: dict[str, float],
) -> tuple[LALMOutput, torch.Tensor, float]:
    """One optimiser step on ``batch``; returns the model's output, the loss and the learning rate used."""
    device = accelerator.device
    audio, audio_mask = (batch[k].to(device, non_blocking=True) for k in ("audio", "audio_mask"))
    with accelerator.autocast():
        out = wrapped(
            audio,
            audio_mask,
            batch["prompts"],
            batch["targets"],
            tasks=batch.get("tasks"),
            cacheable=batch.get("cacheable"),
        )
        loss = _weighted_loss(out, aux_loss_weights)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"step {step}: loss is {loss.item()}; lower optim.lr or use fp32/bf16 "
            f"instead of fp16 (checkpoints up to step {step - 1} are kept)."
        )
    accelerator.backward(backward_loss(loss, optim, accelerator.num_processes))
    if accelerator.sync_gradients and optim.max_grad_norm > 0:
        accelerator.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], optim.max_grad_norm)
    # Logged: optim.lr as scheduled for this step (the official log shows the rate the step
    # used); group 0 may be the projector's, whose rate projector_lr_scale multiplies.
    lr_used = optim.lr * scheduler.get_last_lr()[0] / scheduler.base_lrs[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return out, loss, lr_used


def _progress_bar(optim: OptimSpec, start: int, accelerator: Accelerator, progress: bool) -> Any:
    if not (progress and accelerator.is_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=optim.max_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def train(
    model: AudioLLM,
    batches: Iterable[dict],
    optim: OptimSpec,
    run_dir: Path,
    accelerator: Accelerator,
    aux_loss_weights: dict[str, float] | None = None,
    max_skip_fraction: float = 0.05,
    completion_info: dict | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train ``model`` for ``optim.max_steps`` steps on ``batches``, resuming from the last
    checkpoint in ``run_dir``; writes final trainable weights and the completion marker.
    ``aux_loss_weights`` weigh the model's auxiliary losses (1.0 for a loss it does not name)."""
    aux_loss_weights = aux_loss_weights or {}
    optimizer, scheduler = _prepare(model, optim, run_dir)
    resumed_from = _resume(model, optimizer, scheduler, run_dir)
    start = resumed_from or 0
    # The scheduler is not passed through accelerator.prepare: its wrapper steps it once per
    # process for every optimiser step, so on N processes the schedule would run N times too fast.
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    tracker = _SkipTracker(max_skip_fraction)
    summary = TrainSummary(steps=start, resumed_from=resumed_from)
    window = _LossWindow(run_dir / TRAIN_LOG, accelerator.is_main_process)
    iterator: Iterator[dict] = iter(batches)
    began = time.time()
    bar = _progress_bar(optim, start, accelerator, progress)
    wrapped.train()
    for step in range(start + 1, optim.max_steps + 1):
        batch = next(iterator)
        tracker.add(batch.get("skips", {}))
        out, loss, lr_used = _train_step(
            wrapped, batch, step, optimizer, scheduler, optim, accelerator, aux_loss_weights
        )
        window.add(loss.item(), out)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % optim.log_steps == 0 or step == optim.max_steps:
            tracker.check()
            summary.loss_history.append(window.flush(step, lr_used))
        if step % optim.save_steps == 0 and step < optim.max_steps:
            _save_checkpoint(accelerator, wrapped, optimizer, scheduler, step, run_dir, optim.keep_checkpoints)
    if bar is not None:
        bar.close()
    summary.steps = optim.max_steps
    summary.seconds = time.time() - began
    summary.skips = {t: c.as_dict() for t, c in tracker.counters.items()}
    _finish(accelerator, wrapped, run_dir, summary, completion_info)
    return summary


def backward_loss(loss: torch.Tensor, optim: OptimSpec, processes: int) -> torch.Tensor:
    """The loss that is backpropagated. Officially the Trainer multiplies it by the number of
    processes (its average_tokens_across_devices path, taken because the official forward accepts
    **kwargs, which it then ignores), so on N processes the DDP-averaged gradient is N times the
    mean one and clipping at max_grad_norm acts on that. ``optim.loss_times_processes: false``
    backpropagates the plain mean instead."""
    return loss * processes if optim.loss_times_processes else loss


def _save_checkpoint(
    accelerator: Accelerator, wrapped: torch.nn.Module, optimizer, scheduler, step: int, run_dir: Path, keep: int
) -> None:
    """Rank 0 writes the trainable weights, optimiser, schedule and step, keeping the last ``keep``."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {
            "trainable": accelerator.unwrap_model(wrapped).trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
        }
        atomic_write(run_dir / "checkpoints" / f"step-{step:08d}.pt", lambda tmp: torch.save(state, tmp))
        for old in _checkpoints(run_dir)[:-keep]:
            old.unlink()
    accelerator.wait_for_everyone()


def _finish(
    accelerator: Accelerator,
    wrapped: torch.nn.Module,
    run_dir: Path,
    summary: TrainSummary,
    completion_info: dict | None,
) -> None:
    """Rank 0 writes the final trainable weights, then the completion marker (so a marker always
    has its weights)."""
    if accelerator.is_main_process:
        state = accelerator.unwrap_model(wrapped).trainable_state_dict()
        atomic_write(run_dir / FINAL_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        marker = {
            "steps": summary.steps,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "loss_history": summary.loss_history,
            "skips": summary.skips,
            **(completion_info or {}),
        }
        atomic_write_text(run_dir / COMPLETE_MARKER, json.dumps(marker, indent=2))
    accelerator.wait_for_everyone()


def load_final(model: AudioLLM, run_dir: Path) -> dict:
    """Load a finished run's trainable weights; returns its completion marker."""
    load_trainable(model, load_file(str(run_dir / FINAL_WEIGHTS)))
    return json.loads((run_dir / COMPLETE_MARKER).read_text())
