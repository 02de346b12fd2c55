"""`xares-fusion bench`: one fixed workload in parity mode and with each speed option, in one process.

Training: N steps of the recipe's mixture through the real training loop (the time includes the
first step's start-up, so use N >= 10); "warm cache" first runs the frozen encoders over the same
batches (the stream is seeded, so the timed steps see the same clips) and then times training
served from the cache. Evaluation: M
rows of one task generated one row at a time (parity) and in batches. Peak memory is the process's
peak resident set since the mode started (Linux, reset through /proc/self/clear_refs) on CPU, the
peak allocated CUDA memory on GPU.
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

from .config import load_task
from .data.mixture import MixtureStream
from .evaluate import generate_predictions
from .feature_cache import FeatureCache
from .runner import PRECISION_TO_ACCELERATE, RunRequest, build_model, plan_run, use_cpu
from .train import train

log = logging.getLogger("xares_fusion")


@dataclass
class Measurement:
    mode: str
    train_steps_per_s: float | None = None
    eval_rows_per_s: float | None = None
    peak_mib: float | None = None


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


def _train_rate(model, plan, optim, accelerator: Accelerator, run_dir: Path) -> float:
    stream = MixtureStream(plan.sources, optim.batch_size, plan.recipe.data.crop_seconds,
                           plan.recipe.data.sample_rate, optim.seed, shuffle_buffer=plan.recipe.data.shuffle_buffer)
    summary = train(model, iter(stream), optim, run_dir, accelerator, progress=False)
    return optim.max_steps / summary.seconds


def _fill_cache(model, plan, optim, steps: int) -> None:
    stream = iter(MixtureStream(plan.sources, optim.batch_size, plan.recipe.data.crop_seconds,
                                plan.recipe.data.sample_rate, optim.seed, shuffle_buffer=plan.recipe.data.shuffle_buffer))
    for _ in range(steps):
        batch = next(stream)
        model.encode(batch["audio"], batch["audio_mask"], batch["cacheable"])


def _eval_rate(model, task, rows: int, batch_size: int, accelerator: Accelerator) -> float:
    task = dataclasses.replace(task, eval=dataclasses.replace(task.eval, batch_size=batch_size))
    started = time.perf_counter()
    outcome = generate_predictions(model, task, accelerator, limit=rows, progress=False)
    return len(outcome.rows) / (time.perf_counter() - started)


def run_bench(encoder: str | None, recipe: str = "demo", task: str = "mini-asr", steps: int = 10, rows: int = 32,
              eval_batch: int = 16, encoder_args: dict | None = None, overrides: list[str] | None = None,
              precisions: tuple[str, ...] = ()) -> list[Measurement]:
    """Measure parity mode, a warm fp16 feature cache, batched evaluation and each extra precision."""
    overrides = list(overrides or []) + [f"optim.max_steps={steps}", "optim.save_steps=1000000",
                                         f"optim.log_steps={steps}"]
    plan = plan_run(RunRequest(encoder=encoder, train=recipe, eval=task, encoder_args=encoder_args or {},
                               overrides=overrides, output_dir=Path(tempfile.mkdtemp(prefix="xares-bench-"))))
    eval_task = load_task(task)
    results = []
    with tempfile.TemporaryDirectory(prefix="xares-bench-cache-") as cache_dir:
        for mode in ("parity", "warm fp16 cache", "batched eval", *[f"{p} + warm cache + batched" for p in precisions]):
            precision = mode.split(" ")[0] if mode[:4] in ("bf16", "fp16") else "fp32"
            accelerator = Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision], cpu=use_cpu())
            recipe_cfg = dataclasses.replace(plan.recipe, optim=dataclasses.replace(plan.recipe.optim, precision=precision))
            model = build_model(recipe_cfg, [s.task for s in plan.sources]).to(accelerator.device)
            _reset_peak(accelerator.device)
            measurement = Measurement(mode)
            if "cache" in mode:
                model.feature_cache = FeatureCache(Path(cache_dir), "readwrite", "fp16")
                _fill_cache(model, plan, recipe_cfg.optim, steps + 1)
            if mode != "batched eval":
                with tempfile.TemporaryDirectory() as run_dir:
                    measurement.train_steps_per_s = _train_rate(model, plan, recipe_cfg.optim, accelerator, Path(run_dir))
            if mode != "warm fp16 cache":
                batch = 1 if mode == "parity" else eval_batch
                measurement.eval_rows_per_s = _eval_rate(model, eval_task, rows, batch, accelerator)
            measurement.peak_mib = _peak_mib(accelerator.device)
            log.info("bench %s: %s", mode, measurement)
            results.append(measurement)
            del model
            gc.collect()
    return results


def format_bench(results: list[Measurement], device: str) -> str:
    """The measurements and their ratios to parity mode."""
    parity = results[0]
    lines = [f"device: {device}", f"{'mode':<36}{'train steps/s':>14}{'x parity':>10}{'eval rows/s':>13}"
             f"{'x parity':>10}{'peak MiB':>10}"]

    def ratio(value: float | None, base: float | None) -> str:
        return f"{value / base:.2f}" if value and base else "-"

    for m in results:
        lines.append(f"{m.mode:<36}{(f'{m.train_steps_per_s:.3f}' if m.train_steps_per_s else '-'):>14}"
                     f"{ratio(m.train_steps_per_s, parity.train_steps_per_s):>10}"
                     f"{(f'{m.eval_rows_per_s:.3f}' if m.eval_rows_per_s else '-'):>13}"
                     f"{ratio(m.eval_rows_per_s, parity.eval_rows_per_s):>10}"
                     f"{(f'{m.peak_mib:.0f}' if m.peak_mib else '-'):>10}")
    return "\n".join(lines)
