"""Training with Hugging Face Accelerate: `accelerate launch` runs the same loop on several GPUs.

Only the trainable parameters (projector, LoRA, trainable front-end parts) and the persistent
buffers (BatchNorm statistics a train-mode frozen encoder moves) are checkpointed, with
the optimiser, scheduler, step and every process's random-number states: a frozen 135M-parameter
LLM is not rewritten every few hundred steps, which is why this is not `Accelerator.save_state`. A
run killed after a checkpoint and resumed reads the same batches with the same random draws, so it
ends with the weights of an uninterrupted run. A finished run is marked complete by an explicit
marker written after its final weights, never inferred from a checkpoint existing.

:func:`train` reads as its steps: prepare the optimiser and schedule, resume from the last
checkpoint, then per optimiser step train (``optim.grad_accum_steps`` batches), log and
checkpoint, and finally write the final weights and the completion marker.

On several processes an error on one rank (a NaN loss, too many skipped samples, a corrupt shard)
is agreed on by all of them before the batch's backward pass, the collective DDP would otherwise
leave the other ranks waiting in: every rank stops with the failing rank's message.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file
from transformers import get_scheduler

from .atomic import CorruptFileError, atomic_write, atomic_write_text, sidecar, verified_load
from .config import OptimSpec
from .constants import SAMPLE_RATE
from .data.samples import SkipCounter
from .errors import DataError, EncoderError, RunDirError, RunFailed
from .frontend import nonfinite_rows
from .model import AudioLLM, LALMOutput, persistent_buffers

log = logging.getLogger("xares_fusion")

COMPLETE_MARKER = "COMPLETE.json"
FINAL_WEIGHTS = "final/trainable.safetensors"
TRAIN_LOG = "train_log.jsonl"

T = TypeVar("T")
# The training batches: an iterable read from its start, or a function giving the stream from a
# data position (the number of batches already trained on), which a resumed run continues from.
Batches = Iterable[dict] | Callable[[int], Iterable[dict]]


class TooManySkippedError(DataError, RuntimeError):
    """A dataset lost more samples than the recipe allows (data.max_skip_fraction)."""


class NonFiniteLossError(RunFailed, FloatingPointError):
    """The training loss became NaN or Inf while the encoder's output was finite."""


class OtherRankFailed(RunFailed, RuntimeError):
    """Another process of the run failed; the message is that process's."""


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


def is_complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished training: its final weights and completion marker."""
    return (run_dir / COMPLETE_MARKER).is_file() and (run_dir / FINAL_WEIGHTS).is_file()


def load_trainable(model: AudioLLM, state: dict[str, torch.Tensor]) -> None:
    """Load what :meth:`AudioLLM.trainable_state_dict` saved (trainable parameters and persistent
    buffers) by name; every saved name must exist and match in shape."""
    params = dict(model.named_parameters()) | dict(persistent_buffers(model))
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise RunDirError(
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
        """Add a batch's skip counts (per task: a :meth:`SkipCounter.as_dict`-shaped delta)."""
        for task, delta in skips.items():
            self.counters[task].merge(delta)

    def check(self) -> None:
        for task, c in self.counters.items():
            if c.seen >= self.min_seen and c.skipped / c.seen > self.max_fraction:
                raise TooManySkippedError(
                    f"training set '{task}': {c.skipped} of {c.seen} samples skipped "
                    f"({c.summary()}), above data.max_skip_fraction={self.max_fraction}. "
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


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint file's state, verified (:func:`~xares_fusion.atomic.verified_load`)."""
    state = verified_load(path, lambda data: torch.load(io.BytesIO(data), map_location="cpu", weights_only=False))
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CorruptFileError(path, "holds no checkpoint (no step)")
    return state


def last_good_checkpoint(run_dir: Path) -> dict | None:
    """The state of the newest intact checkpoint in ``run_dir`` (None: none). A damaged one is
    passed over with a warning naming it (it is overwritten when training reaches its step again)."""
    for path in reversed(_checkpoints(run_dir)):
        try:
            state = _load_checkpoint(path)
        except CorruptFileError as err:
            log.warning("checkpoint %s is damaged (%s); falling back to the one before it", path, err.problem)
            continue
        log.info("resuming from %s (step %d)", path, state["step"])
        return state
    return None


def read_checkpoint(run_dir: Path, accelerator: Accelerator) -> dict | None:
    """The last intact checkpoint in ``run_dir`` (None: none), read by rank 0 alone and broadcast,
    so that every rank resumes from the same state even where the ranks do not share one file
    system view."""
    state: list[dict | None] = [last_good_checkpoint(run_dir) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(state)
    return state[0]


def _rng_state() -> dict[str, Any]:
    """This process's random-number states (Python, NumPy, torch CPU and, when present, CUDA)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _restore(model: AudioLLM, optimizer: torch.optim.Optimizer, scheduler: Any, state: dict) -> None:
    """Load a checkpoint's weights, optimiser and schedule."""
    load_trainable(model, state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])


def _restore_rng(state: dict, accelerator: Accelerator) -> None:
    """Set this rank's random-number states to those saved with the checkpoint."""
    saved = state["rng"]
    if len(saved) != accelerator.num_processes:
        raise RunDirError(
            f"the checkpoint was written by {len(saved)} processes, this run has {accelerator.num_processes}; "
            f"resume with the same number of processes."
        )
    _set_rng_state(saved[accelerator.process_index])


def has_conditional_parameters(model: AudioLLM) -> bool:
    """Whether a step may leave trainable weights without a gradient: routed experts or routers a
    batch does not use (declared by the front end and the projector)."""
    return model.front_end.has_conditional_parameters or model.projector.has_conditional_parameters


def _agreed(accelerator: Accelerator, work: Callable[[], T]) -> T:
    """``work()``, with all processes agreeing on whether it failed anywhere before they go on.

    One rank's error would otherwise leave the others waiting in the next collective (DDP's
    gradient all-reduce) until the launcher or a timeout ends them. The failing rank logs its
    error prefixed by its rank and raises it; the others raise :class:`OtherRankFailed` with that
    message. The cost is one all-reduce of one number per batch."""
    if accelerator.num_processes == 1:
        return work()
    error: Exception | None = None
    try:
        result = work()
    except Exception as err:  # any error must reach the other ranks before it stops this one
        error = err
    failed = torch.tensor([0 if error is None else 1], device=accelerator.device)
    if accelerator.reduce(failed, "sum").item() == 0:
        return result
    mine = f"[rank {accelerator.process_index}] {type(error).__name__}: {error}" if error is not None else None
    messages = gather_object([mine])
    if error is not None:
        log.error("%s", mine)
        raise error
    raise OtherRankFailed("; ".join(m for m in messages if m))


def _weighted_loss(out: LALMOutput, aux_loss_weights: dict[str, float]) -> torch.Tensor:
    """The LM loss plus each auxiliary loss times its weight (1.0 for a loss the weights do not name)."""
    loss = out.lm_loss
    for name, value in out.aux_losses.items():
        loss = loss + aux_loss_weights.get(name, 1.0) * value.float()
    return loss


def _forward(
    wrapped: torch.nn.Module, batch: dict, step: int, accelerator: Accelerator, aux_loss_weights: dict[str, float]
) -> tuple[LALMOutput, torch.Tensor]:
    """The model's output and weighted loss on ``batch``; raises on a loss that is not finite."""
    device = accelerator.device
    audio, audio_mask = (batch[k].to(device, non_blocking=True) for k in ("audio", "audio_mask"))
    with accelerator.autocast():
        out = wrapped(
            audio,
            audio_mask,
            batch["prompts"],
            batch["targets"],
            tasks=batch.get("tasks"),
            clips=batch.get("clips"),
        )
        loss = _weighted_loss(out, aux_loss_weights)
    if not torch.isfinite(loss):
        _blame_encoder(accelerator.unwrap_model(wrapped), batch, audio, audio_mask, step)
        raise NonFiniteLossError(
            f"step {step}: loss is {loss.item()}; lower optim.lr or use fp32/bf16 "
            f"instead of fp16 (checkpoints up to step {step - 1} are kept)."
        )
    return out, loss


def _blame_encoder(model: AudioLLM, batch: dict, audio: torch.Tensor, audio_mask: torch.Tensor, step: int) -> None:
    """After a non-finite loss: raise :class:`~xares_fusion.errors.EncoderError` naming the clips
    when the frozen step itself gives NaN/Inf on them (the loss is then not the optimiser's fault).
    Runs the frozen step again, only on this failure path."""
    with torch.no_grad():
        bad = nonfinite_rows(model.encode(audio, audio_mask, batch.get("clips")))
    if bad:
        keys, tasks = batch.get("keys") or [f"row {i}" for i in range(len(audio))], batch.get("tasks")
        named = [f"{tasks[i]}:{keys[i]}" if tasks else keys[i] for i in bad]
        raise EncoderError(
            f"step {step}: the encoder {type(model.encoder).__name__} returned NaN/Inf features for "
            f"{len(bad)} of {len(keys)} clips of the batch: {named} (clips of up to "
            f"{audio.shape[-1] / SAMPLE_RATE:.1f} s). Fix the encoder so that it stays finite on such input "
            f"(run it in fp32, clamp or normalise inside it; `xares-fusion check-encoder` tests it), or "
            f"remove those clips from the training shards (checkpoints up to step {step - 1} are kept)."
        )


def _train_step(
    wrapped: torch.nn.Module,
    next_batch: Callable[[], dict],
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    optim: OptimSpec,
    accelerator: Accelerator,
    aux_loss_weights: dict[str, float],
) -> tuple[list[tuple[LALMOutput, torch.Tensor]], float]:
    """One optimiser step on ``optim.grad_accum_steps`` batches (accelerate's accumulation: each
    loss is divided by that count and gradients are synchronised on the last batch only); returns
    each batch's output and loss, and the learning rate used."""
    # Logged: optim.lr as scheduled for this step (the official log shows the rate the step
    # used); group 0 may be the projector's, whose rate projector_lr_scale multiplies.
    lr_used = optim.lr * scheduler.get_last_lr()[0] / scheduler.base_lrs[0]
    results = []
    for _ in range(optim.grad_accum_steps):
        with accelerator.accumulate(wrapped):
            out, loss = _agreed(
                accelerator, lambda: _forward(wrapped, next_batch(), step, accelerator, aux_loss_weights)
            )
            accelerator.backward(backward_loss(loss, optim, accelerator.num_processes))
            if accelerator.sync_gradients and optim.max_grad_norm > 0:
                accelerator.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], optim.max_grad_norm)
            # Both act on the last batch of the step only (accelerate skips them before it).
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        results.append((out, loss))
    # Not passed through accelerator.prepare, whose wrapper steps it once per process per step.
    scheduler.step()
    return results, lr_used


def _progress_bar(optim: OptimSpec, start: int, accelerator: Accelerator, progress: bool) -> Any:
    if not (progress and accelerator.is_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=optim.max_steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def train(
    model: AudioLLM,
    batches: Batches,
    optim: OptimSpec,
    run_dir: Path,
    accelerator: Accelerator,
    aux_loss_weights: dict[str, float] | None = None,
    max_skip_fraction: float = 0.05,
    completion_info: dict | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Train ``model`` for ``optim.max_steps`` optimiser steps on ``batches``, resuming from the
    last checkpoint in ``run_dir``; writes final trainable weights and the completion marker.
    ``batches``: an iterable (read from its start), or a function giving the stream from a data
    position, so that a resumed run reads the batches an uninterrupted run would.
    ``aux_loss_weights`` weigh the model's auxiliary losses (1.0 for a loss it does not name)."""
    aux_loss_weights = aux_loss_weights or {}
    optimizer, scheduler = _prepare(model, optim, run_dir)
    checkpoint = read_checkpoint(run_dir, accelerator)
    if checkpoint is not None:
        _restore(model, optimizer, scheduler, checkpoint)
    start = int(checkpoint["step"]) if checkpoint is not None else 0
    if has_conditional_parameters(model):
        # DDP otherwise waits for the gradients of the experts a batch did not route to, and
        # fails; finding them costs a traversal of the graph per step, so only where declared.
        handler = accelerator.ddp_handler or DistributedDataParallelKwargs()
        accelerator.ddp_handler = dataclasses.replace(handler, find_unused_parameters=True)
    accelerator.gradient_accumulation_steps = optim.grad_accum_steps
    accelerator.step = 0  # accelerate's count of batches within an accumulation (a stage before may end mid-way)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    tracker = _SkipTracker(max_skip_fraction)
    summary = TrainSummary(steps=start, resumed_from=start if checkpoint is not None else None)
    window = _LossWindow(run_dir / TRAIN_LOG, accelerator.is_main_process)
    iterator: Iterator[dict] = iter(batches(start * optim.grad_accum_steps) if callable(batches) else batches)
    if checkpoint is not None:
        # Only now: making the loader's iterator draws its seed from torch's generator.
        _restore_rng(checkpoint, accelerator)

    def next_batch() -> dict:
        batch = next(iterator)
        tracker.add(batch.get("skips", {}))
        return batch

    began = time.time()
    bar = _progress_bar(optim, start, accelerator, progress)
    wrapped.train()
    for step in range(start + 1, optim.max_steps + 1):
        results, lr_used = _train_step(
            wrapped, next_batch, step, optimizer, scheduler, optim, accelerator, aux_loss_weights
        )
        for out, loss in results:
            window.add(loss.item(), out)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{results[-1][1].item():.3f}")
        if step % optim.log_steps == 0 or step == optim.max_steps:
            _agreed(accelerator, tracker.check)
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
    """Rank 0 writes the trainable weights, optimiser, schedule, step and every rank's random-number
    states (gathered in rank order), keeping the last ``keep``."""
    rng = gather_object([_rng_state()]) if accelerator.num_processes > 1 else [_rng_state()]
    if accelerator.is_main_process:
        state = {
            "trainable": accelerator.unwrap_model(wrapped).trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "rng": rng,
        }
        atomic_write(run_dir / "checkpoints" / f"step-{step:08d}.pt", lambda tmp: torch.save(state, tmp), checksum=True)
        for old in _checkpoints(run_dir)[:-keep]:
            old.unlink()
            sidecar(old).unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def _finish(
    accelerator: Accelerator,
    wrapped: torch.nn.Module,
    run_dir: Path,
    summary: TrainSummary,
    completion_info: dict | None,
) -> None:
    """Every rank takes rank 0's persistent buffers, then rank 0 writes the final trainable weights
    and the completion marker (so a marker always has its weights)."""
    model = accelerator.unwrap_model(wrapped)
    if accelerator.num_processes > 1:
        # DDP copies rank 0's buffers to the others only when a forward starts, so each rank's last
        # forward left its own running statistics; evaluation, sharded over the ranks, must see
        # what is saved, as a model reloaded from the final weights does.
        for _, buffer in persistent_buffers(model):
            torch.distributed.broadcast(buffer, src=0)
    if accelerator.is_main_process:
        state = model.trainable_state_dict()
        atomic_write(run_dir / FINAL_WEIGHTS, lambda tmp: save_file(state, str(tmp)), checksum=True)
        marker = {
            "steps": summary.steps,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "loss_history": summary.loss_history,
            "skips": summary.skips,
            **(completion_info or {}),
        }
        atomic_write_text(run_dir / COMPLETE_MARKER, json.dumps(marker, indent=2), checksum=True)
    accelerator.wait_for_everyone()


def load_final(model: AudioLLM, run_dir: Path) -> dict | None:
    """Load a finished run's trainable weights and return its completion marker, both verified.

    None when either is damaged but a checkpoint is left to finish training from (warned, naming
    the file: the caller trains on from that checkpoint, which rewrites both). Damaged with no
    checkpoint left, it refuses with the fix (:class:`~xares_fusion.atomic.CorruptFileError`)."""
    try:
        marker = verified_load(run_dir / COMPLETE_MARKER, json.loads)
        state = verified_load(run_dir / FINAL_WEIGHTS, load_safetensors)
    except CorruptFileError as err:
        if not _checkpoints(run_dir):
            raise CorruptFileError(
                err.path,
                f"{err.problem}, and no checkpoint is left to finish training from. Fix: delete {err.path} "
                f"and {run_dir / COMPLETE_MARKER} to train this stage again, or restore the file from a copy.",
            ) from err
        log.warning("%s; training on from the last checkpoint to write it again", err)
        return None
    load_trainable(model, state)
    return marker
