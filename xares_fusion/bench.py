"""`xares-fusion bench`: one fixed workload in parity mode and with each speed option, in one process.

Modes, each a fresh model from the same initial weights and the same seeded training stream:

* parity: fp32, no feature cache; N training steps, then M eval rows generated one at a time;
* batched eval: the parity model's weights, the same rows in length-sorted batches; its answers
  are compared with the one-row answers (they should be equal: rows are batch-invariant);
* batched eval + fp32 cache: as batched eval, with the eval clips' encoder outputs stored first
  (untimed, one clip at a time as in parity) in an fp32 cache, the state of every evaluation
  after the first of an encoder; its answers are compared with the one-row answers too;
* warm fp16 cache: the frozen encoders' outputs for the timed training batches and the eval
  clips are computed first (untimed), then training and batched evaluation read them;
* each extra precision (``--precision bf16``): as warm fp16 cache, under that autocast.

Training and evaluation call what `run` calls (``train_stages``, with the run's auxiliary loss
weights and data loader; ``generate_predictions``, which reports the time spent in the frozen
encoders), so the figures are those of a run. Training time includes the first step's start-up,
so use N >= 10. Peak memory is the process's peak resident set since the mode started (Linux,
reset through /proc/self/clear_refs) on CPU, the peak allocated CUDA memory on GPU.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from .config import TaskConfig, load_task
from .data.batching import pad_audio
from .data.samples import SkipCounter, iter_samples
from .data.shards import require_shards
from .evaluate import generate_predictions
from .feature_cache import FeatureCache
from .model import AudioLLM
from .runner import (
    Plan,
    RunRequest,
    apply_tf32,
    build_model,
    make_accelerator,
    plan_run,
    set_deterministic,
    train_stages,
    training_loader,
)

log = logging.getLogger("xares_fusion")


@dataclass
class Measurement:
    mode: str
    train_steps_per_s: float | None = None
    eval_rows_per_s: float | None = None
    generate_rows_per_s: float | None = None  # evaluation without the time spent in frozen encoders
    peak_mib: float | None = None
    same_answers: str | None = None  # "k/M" eval answers equal to parity's one-row answers


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # not Linux: the peak is then the process's peak so far


def _peak_mib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _train_rate(model: AudioLLM, plan: Plan, request: RunRequest, accelerator: Accelerator) -> float:
    """Steps per second of training every stage of the recipe from scratch, as `run` trains it."""
    with tempfile.TemporaryDirectory(prefix="xares-bench-train-") as run_dir:
        stages = train_stages(model, dataclasses.replace(plan, run_dir=Path(run_dir)), request, accelerator)["stages"]
    return sum(s["steps"] for s in stages) / sum(s["seconds"] for s in stages)


def _cache_training_batches(model: AudioLLM, plan: Plan, accelerator: Accelerator) -> None:
    """Encode the timed training batches once, read as training reads them, filling the feature
    cache (all of them where every stage keeps the recipe's batch size and seed)."""
    optim = plan.recipe.optim
    batches = iter(training_loader(plan, optim, model.tokenizer, accelerator))
    for _ in range(optim.max_steps):
        batch = next(batches)
        model.encode(
            batch["audio"].to(accelerator.device), batch["audio_mask"].to(accelerator.device), batch["cacheable"]
        )


def _cache_eval_clips(model: AudioLLM, eval_task: TaskConfig, rows: int, batch_size: int, device: torch.device) -> None:
    """Encode the first ``rows`` eval clips once, ``batch_size`` at a time on ``device`` (where the
    evaluation will run them), filling the feature cache."""
    spec = eval_task.split("eval")
    clips = [
        s.audio
        for _, s in zip(
            range(rows),
            iter_samples(require_shards(spec, eval_task.name, "eval"), eval_task.key_for("eval"), SkipCounter()),
        )
        if s.audio is not None
    ]
    for start in range(0, len(clips), batch_size):
        audio, audio_mask = pad_audio(clips[start : start + batch_size])
        model.encode(audio.to(device), audio_mask.to(device))


def _eval(
    model: AudioLLM, task: TaskConfig, rows: int, batch_size: int, accelerator: Accelerator
) -> tuple[float, float, list[str]]:
    """Rows per second of the whole evaluation, rows per second of everything after the frozen
    encoders (prompt building, prefill, decoding), and the answers in row order."""
    task = dataclasses.replace(task, eval=dataclasses.replace(task.eval, batch_size=batch_size))
    started = time.perf_counter()
    outcome = generate_predictions(model, task, accelerator, limit=rows, progress=False)
    seconds = time.perf_counter() - started
    return (
        len(outcome.rows) / seconds,
        len(outcome.rows) / (seconds - outcome.encode_seconds),
        outcome.rows["predict"].tolist(),
    )


def _agreement(answers: list[str], reference: list[str]) -> str:
    return f"{sum(a == b for a, b in zip(answers, reference))}/{len(reference)}"


def _batched_eval(
    mode: str,
    model: AudioLLM,
    task: TaskConfig,
    rows: int,
    batch_size: int,
    accelerator: Accelerator,
    reference: list[str],
) -> Measurement:
    """Batched evaluation of trained weights, its answers checked against their one-row answers."""
    _reset_peak(accelerator.device)
    measurement = Measurement(mode)
    measurement.eval_rows_per_s, measurement.generate_rows_per_s, answers = _eval(
        model, task, rows, batch_size, accelerator
    )
    measurement.peak_mib, measurement.same_answers = _peak_mib(accelerator.device), _agreement(answers, reference)
    return measurement


def _fresh(plan: Plan, precision: str) -> tuple[AudioLLM, Accelerator, Plan]:
    """A new model from the recipe's initial weights, the Accelerator of ``precision`` and the plan
    with that precision."""
    gc.collect()
    accelerator = make_accelerator(precision)
    recipe = dataclasses.replace(plan.recipe, optim=dataclasses.replace(plan.recipe.optim, precision=precision))
    model = build_model(recipe, [s.task for s in plan.sources]).to(accelerator.device)
    apply_tf32(recipe)  # as `run` does
    _reset_peak(accelerator.device)
    return model, accelerator, dataclasses.replace(plan, recipe=recipe)


def _parity_modes(
    plan: Plan, request: RunRequest, eval_task: TaskConfig, rows: int, eval_batch: int
) -> list[Measurement]:
    """Parity mode, then its trained weights evaluated in batches, without and with an fp32 cache."""
    model, accelerator, plan = _fresh(plan, "fp32")
    parity = Measurement("parity")
    parity.train_steps_per_s = _train_rate(model, plan, request, accelerator)
    parity.eval_rows_per_s, parity.generate_rows_per_s, reference = _eval(model, eval_task, rows, 1, accelerator)
    parity.peak_mib = _peak_mib(accelerator.device)
    results = [parity, _batched_eval("batched eval", model, eval_task, rows, eval_batch, accelerator, reference)]
    with tempfile.TemporaryDirectory(prefix="xares-bench-cache-") as cache_dir:
        model.feature_cache = FeatureCache(Path(cache_dir), "readwrite", "fp32")
        _cache_eval_clips(model, eval_task, rows, 1, accelerator.device)
        results.append(
            _batched_eval("batched eval + fp32 cache", model, eval_task, rows, eval_batch, accelerator, reference)
        )
    return results


def _warm_cache_mode(
    plan: Plan, request: RunRequest, eval_task: TaskConfig, rows: int, eval_batch: int, precision: str, cache_dir: Path
) -> Measurement:
    """Training and batched evaluation in ``precision`` from an fp16 cache filled beforehand (untimed)."""
    model, accelerator, plan = _fresh(plan, precision)
    model.feature_cache = FeatureCache(cache_dir, "readwrite", "fp16")
    _cache_training_batches(model, plan, accelerator)
    _cache_eval_clips(model, eval_task, rows, eval_batch, accelerator.device)
    _reset_peak(accelerator.device)
    measurement = Measurement("warm fp16 cache" if precision == "fp32" else f"{precision} + warm fp16 cache")
    measurement.train_steps_per_s = _train_rate(model, plan, request, accelerator)
    measurement.eval_rows_per_s, measurement.generate_rows_per_s, _ = _eval(
        model, eval_task, rows, eval_batch, accelerator
    )
    measurement.peak_mib = _peak_mib(accelerator.device)
    return measurement


def run_bench(
    encoder: str | None,
    recipe: str = "demo",
    task: str = "mini-asr",
    steps: int = 10,
    rows: int = 32,
    eval_batch: int = 16,
    encoder_args: dict | None = None,
    overrides: list[str] | None = None,
    precisions: tuple[str, ...] = (),
) -> list[Measurement]:
    """Measure parity mode, batched evaluation (encoders recomputed, then from an fp32 cache), a warm
    fp16 feature cache and each extra precision."""
    overrides = list(overrides or []) + [
        f"optim.max_steps={steps}",
        "optim.save_steps=1000000",
        f"optim.log_steps={steps}",
    ]
    with tempfile.TemporaryDirectory(prefix="xares-bench-") as workdir:
        request = RunRequest(
            encoder=encoder,
            train=recipe,
            eval=task,
            encoder_args=encoder_args or {},
            overrides=overrides,
            output_dir=Path(workdir) / "run",
            progress=False,
        )
        plan = plan_run(request)
        eval_task = load_task(task)
        set_deterministic(plan.recipe.speed.deterministic)  # as `run` does
        results = _parity_modes(plan, request, eval_task, rows, eval_batch)
        with tempfile.TemporaryDirectory(prefix="xares-bench-cache-") as cache_dir:
            results += [
                _warm_cache_mode(plan, request, eval_task, rows, eval_batch, precision, Path(cache_dir))
                for precision in ("fp32", *precisions)
            ]
    for m in results:
        log.info("bench %s", m)
    return results


def format_bench(results: list[Measurement], device: str) -> str:
    """The measurements and their ratios to parity mode."""
    parity = results[0]
    columns = [
        ("train steps/s", "train_steps_per_s"),
        ("eval rows/s", "eval_rows_per_s"),
        ("w/o encoder", "generate_rows_per_s"),
    ]
    header = "".join(f"{name:>14}{'x parity':>10}" for name, _ in columns)
    lines = [f"device: {device}", f"{'mode':<28}{header}{'peak MiB':>10}{'answers = parity':>18}"]
    for m in results:
        cells = ""
        for _, attr in columns:
            value, base = getattr(m, attr), getattr(parity, attr)
            cells += f"{(f'{value:.3f}' if value else '-'):>14}{(f'{value / base:.2f}' if value and base else '-'):>10}"
        lines.append(
            f"{m.mode:<28}{cells}{(f'{m.peak_mib:.0f}' if m.peak_mib else '-'):>10}{(m.same_answers or '-'):>18}"
        )
    footer = (
        "w/o encoder: rows/s of the evaluation time outside the frozen encoders (prefill, decoding); "
        "answers = parity: batched answers equal to one-row answers of the same weights"
    )
    return "\n".join(lines + [footer])
