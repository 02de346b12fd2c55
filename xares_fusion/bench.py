"""`xares-fusion bench`: one fixed workload (N training steps, then M eval rows) in parity mode and
with the speed options, in one process, each mode timed end to end.

Modes, each from the recipe's initial weights and the same seeded training stream:

* ``parity``: what ``run`` does by default: fp32, no feature cache, deterministic mode, every
  frozen encoder recomputed, evaluation at the task's own batch size (the official one);
* ``batched eval``: the parity model's weights evaluated in batches of ``eval_batch``; its
  training is parity's (the same code on the same weights), so its end-to-end time counts parity's
  training time;
* ``warm fp32 cache``: training and batched evaluation read the frozen encoders' outputs from an
  fp32 feature cache filled beforehand (the state of every run after the first of an encoder);
  the features are those the encoder computes, so the trained weights and the answers should be
  parity's;
* ``warm fp16 cache``: the same from an fp16 cache, with deterministic mode off and TF32 on, and
  on a CPU eager attention and LoRA dropout masks from PCG64 (:func:`device_speed_options`):
  every speed option that helps on the device at once (answers may differ from parity's);
* each extra precision (``--precision bf16``): as ``warm fp16 cache``, under that autocast.

Every mode trains its own model, then evaluates parity's trained weights with its own settings
(:func:`_warm_cache_mode` says why): ``identical_trained_weights`` says whether the mode's
training computed parity's numbers, ``identical_predictions`` whether its evaluation did.

Every timed region goes through :func:`measured`: wall time with the CUDA queue drained at both
ends, peak memory since the region began, and the model FLOPs it ran. Filling a cache is timed
apart (``cache_fill_s``), never inside a mode. Training and evaluation call what ``run`` calls
(``train_stages``, ``generate_predictions``), so the figures are those of a run, start-up of the
first step included.

Model FLOPs (docs/performance.md): every linear and convolution layer that runs counts
2 x its weights x the positions it is applied to; in training, as much again for the weight
gradient of a trainable layer and again for the input gradient where the input carries one (the
frozen LLM between the projector and the loss). Attention score products, norms and the
optimiser are not counted, so MFU is a slight underestimate.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import platform
import re
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from .config import TaskConfig, load_task
from .data.batching import pad_audio
from .data.samples import SkipCounter, iter_samples
from .data.shards import require_shards
from .evaluate import generate_predictions
from .feature_cache import FeatureCache
from .model import AudioLLM
from .results.provenance import device_provenance
from .runner import (
    Plan,
    RunRequest,
    build_model,
    make_accelerator,
    plan_run,
    process_state,
    set_deterministic,
    train_stages,
    training_loader,
)
from .train import load_trainable

log = logging.getLogger("xares_fusion")

# Peak dense (no sparsity) bf16 tensor TFLOP/s, matched on torch.cuda.get_device_name(), from the
# vendors' datasheets: "NVIDIA H100 Tensor Core GPU" (SXM 989, PCIe 756), "NVIDIA H200 Tensor Core
# GPU" (SXM 989), "NVIDIA A100 Tensor Core GPU" (312), "NVIDIA L40S GPU" (362) and the "NVIDIA Ada
# GPU Architecture" whitepaper (GeForce RTX 4090, FP32 accumulate: 165). NVL parts have other
# peaks and are left unknown (MFU null) rather than given a wrong one.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.0),
    (r"H100 (80GB HBM3|SXM)", 989.0),
    (r"H200(?! NVL)", 989.0),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"RTX 4090", 165.0),
)

PARITY = "parity"


def peak_bf16_tflops(device_name: str | None) -> float | None:
    """The device's peak dense bf16 TFLOP/s from :data:`PEAK_BF16_TFLOPS`; None when unknown."""
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if device_name and re.search(pattern, device_name):
            return tflops
    return None


class FlopCounter:
    """Model FLOPs of the linear and convolution layers of ``model`` while it is attached
    (forward hooks, so only layers that run count: a cached encoder adds nothing)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.flops = 0
        self._handles = [
            m.register_forward_hook(self._count)
            for m in model.modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
        ]

    def _count(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        # 2 x (input features x output features) per output position, for a convolution the
        # kernel's input window; weight.shape[0] is the output width of both layer kinds.
        forward = 2 * (output.numel() // module.weight.shape[0]) * module.weight.numel()
        backward = 0
        if torch.is_grad_enabled() and output.requires_grad:
            backward = forward * (int(module.weight.requires_grad) + int(inputs[0].requires_grad))
        self.flops += forward + backward

    def detach(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        # Linux: writing 5 resets the process's peak resident set (VmHWM) to its current one.
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the peak is the process's peak so far


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e6
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if platform.system() == "Darwin" else 1024) / 1e6


@dataclass
class Measured:
    """One timed region: wall seconds, peak memory (MB), model FLOPs and, for training, the last
    logged loss."""

    seconds: float = 0.0
    peak_mem_mb: float = 0.0
    flops: int = 0
    loss: float | None = None
    # For an evaluation, the LLM tokens of the answers it generated: generation time grows with
    # them, so a mode whose model answers less is faster without being quicker per token.
    answer_tokens: int | None = None


@contextmanager
def measured(model: torch.nn.Module, device: torch.device) -> Iterator[Measured]:
    """Time the block honestly: on CUDA the kernels queued before it are waited for first and its
    own kernels before the clock stops (launches are asynchronous, so the bare wall time would
    miss work); peak memory is reset at the start; FLOPs are counted while it runs."""
    result = Measured()
    _synchronize(device)
    _reset_peak_memory(device)
    counter = FlopCounter(model)
    started = time.perf_counter()
    try:
        yield result
    finally:
        _synchronize(device)
        result.seconds = time.perf_counter() - started
        counter.detach()
        result.flops = counter.flops
        result.peak_mem_mb = _peak_memory_mb(device)


@dataclass
class ModeResult:
    """The figures of one mode. ``train`` is None for a mode that reuses parity's training."""

    mode: str
    steps: int
    train: Measured | None
    eval: Measured
    predictions: list[str]
    cache_fill_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _speed_flags(deterministic: bool, tf32: bool) -> Iterator[None]:
    """Deterministic mode and TF32 for one mode, then the parity settings back."""
    set_deterministic(deterministic)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        set_deterministic(True)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False


def device_speed_options(device: torch.device) -> dict[str, str]:
    """The LLM speed options (``speed.*``) that help on ``device``: on a CPU, eager attention
    (SDPA's CPU kernels are slower for these short sequences) and LoRA dropout masks from PCG64
    (torch draws CPU masks one value at a time); on a GPU none, SDPA and torch's dropout being
    the fast ones there."""
    return {"attn_implementation": "eager", "lora_dropout_rng": "pcg64"} if device.type == "cpu" else {}


def _fresh(plan: Plan, precision: str, speed: dict[str, str] | None = None) -> tuple[AudioLLM, Accelerator, Plan]:
    """A new model from the recipe's initial weights, the Accelerator of ``precision`` and the plan
    with that precision and the ``speed`` options."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    accelerator = make_accelerator(precision)
    recipe = dataclasses.replace(
        plan.recipe,
        optim=dataclasses.replace(plan.recipe.optim, precision=precision),
        speed=dataclasses.replace(plan.recipe.speed, **(speed or {})),
    )
    model = build_model(recipe, [s.task for s in plan.sources]).to(accelerator.device)
    return model, accelerator, dataclasses.replace(plan, recipe=recipe)


def _train(model: AudioLLM, plan: Plan, request: RunRequest, accelerator: Accelerator) -> Measured:
    """Every stage of the recipe from scratch, as `run` trains it, measured; ``loss`` is the last
    logged training loss (equal losses show equal training where a short run answers little)."""
    with tempfile.TemporaryDirectory(prefix="xares-bench-train-") as run_dir:
        with measured(model, accelerator.device) as m:
            info = train_stages(model, dataclasses.replace(plan, run_dir=Path(run_dir)), request, accelerator)
    m.loss = info["stages"][-1]["loss_history"][-1]["loss"]
    return m


def _eval(
    model: AudioLLM, task: TaskConfig, rows: int, batch_size: int, accelerator: Accelerator
) -> tuple[Measured, list[str]]:
    """The first ``rows`` eval rows generated in batches of ``batch_size``, measured, and the answers."""
    task = dataclasses.replace(task, eval=dataclasses.replace(task.eval, batch_size=batch_size))
    with measured(model, accelerator.device) as m:
        outcome = generate_predictions(model, task, accelerator, limit=rows, progress=False)
    answers = outcome.rows["predict"].tolist()
    m.answer_tokens = sum(len(model.tokenizer(a, add_special_tokens=False).input_ids) for a in answers)
    return m, answers


def _fill_cache(model: AudioLLM, plan: Plan, eval_task: TaskConfig, rows: int, accelerator: Accelerator) -> float:
    """Seconds to encode, once, the training batches as training reads them (all of them where every
    stage keeps the recipe's batch size and seed) and the first ``rows`` eval clips one at a time
    (each clip's own output, whatever batch evaluation puts it in), filling the model's cache."""
    device = accelerator.device
    started = time.perf_counter()
    optim = plan.recipe.optim
    # A DataLoader iterator draws its seed from the global generator: without fork_rng the filling
    # would move the random stream that training then draws LoRA dropout masks from.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), accelerator.autocast():
        batches = iter(training_loader(plan, optim, model.tokenizer, accelerator))
        for _ in range(optim.max_steps):
            batch = next(batches)
            model.encode(batch["audio"].to(device), batch["audio_mask"].to(device), batch["clips"])
        spec = eval_task.split("eval")
        samples = iter_samples(require_shards(spec, eval_task.name, "eval"), eval_task.key_for("eval"), SkipCounter())
        for _, sample in zip(range(rows), samples):
            if sample.audio is not None:
                audio, audio_mask = pad_audio([sample.audio])
                model.encode(audio.to(device), audio_mask.to(device), [sample.clip])
    _synchronize(device)
    return time.perf_counter() - started


def _parity_modes(
    plan: Plan, request: RunRequest, eval_task: TaskConfig, steps: int, rows: int, eval_batch: int
) -> tuple[list[ModeResult], dict[str, torch.Tensor]]:
    """Parity mode, then its trained weights evaluated in larger batches; and those weights."""
    model, accelerator, plan = _fresh(plan, "fp32")
    trained = _train(model, plan, request, accelerator)
    parity_eval, answers = _eval(model, eval_task, rows, eval_task.split("eval").batch_size, accelerator)
    batched_eval, batched_answers = _eval(model, eval_task, rows, eval_batch, accelerator)
    same = {"identical_trained_weights": True, "speed_options": {}}
    results = [
        ModeResult(PARITY, steps, trained, parity_eval, answers, extra=same),
        ModeResult("batched eval", steps, None, batched_eval, batched_answers, extra=same),
    ]
    return results, {name: value.clone() for name, value in model.trainable_state_dict().items()}


def _warm_cache_mode(
    name: str,
    plan: Plan,
    request: RunRequest,
    eval_task: TaskConfig,
    steps: int,
    rows: int,
    eval_batch: int,
    precision: str,
    cache_dtype: str,
    cache_root: Path,
    parity_weights: dict[str, torch.Tensor],
    speed: dict[str, str] | None = None,
) -> ModeResult:
    """Training, then batched evaluation of parity's trained weights, in ``precision`` from a
    cache of ``cache_dtype`` filled first, with the ``speed`` options.

    After a few steps what a model answers, and so how long generation takes, depends on the
    training's rounding and random draws: a mode whose model happens to answer nothing would
    evaluate fastest. Every mode therefore evaluates the same trained weights, parity's, so the
    timed evaluations do the same work up to each mode's rounding; whether the mode's own
    training computed parity's numbers is ``identical_trained_weights``."""
    model, accelerator, plan = _fresh(plan, precision, speed)
    cache = model.feature_cache = FeatureCache(cache_root / cache_dtype, "readwrite", cache_dtype, precision)
    fill = _fill_cache(model, plan, eval_task, rows, accelerator)
    cache.hits = cache.misses = cache.uncached = 0  # from here on, the mode's own reads
    trained = _train(model, plan, request, accelerator)
    own = model.trainable_state_dict()
    same = own.keys() == parity_weights.keys() and all(torch.equal(own[k], parity_weights[k]) for k in own)
    load_trainable(model, parity_weights)
    evaluated, answers = _eval(model, eval_task, rows, eval_batch, accelerator)
    return ModeResult(
        name,
        steps,
        trained,
        evaluated,
        answers,
        fill,
        {
            "cache_hits": cache.hits,
            "cache_misses": cache.misses,
            "cache_uncached": cache.uncached,
            "speed_options": speed or {},
            "identical_trained_weights": same,
        },
    )


def run_bench(
    encoder: str | None,
    recipe: str = "demo",
    task: str = "mini-asr",
    steps: int = 10,
    rows: int = 32,
    eval_batch: int = 32,
    encoder_args: dict | None = None,
    overrides: list[str] | None = None,
    precisions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Measure parity mode, batched evaluation, a warm fp32 cache, a warm fp16 cache with every
    speed option, and each extra precision; returns :func:`summarise`'s object."""
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
        cache_root = Path(workdir) / "cache"
        args = (plan, request, eval_task, steps, rows, eval_batch)
        with _speed_flags(deterministic=True, tf32=False):
            results, weights = _parity_modes(*args)
            results.append(_warm_cache_mode("warm fp32 cache", *args, "fp32", "fp32", cache_root, weights))
        speed = device_speed_options(process_state().device)
        with _speed_flags(deterministic=False, tf32=True):
            results += [
                _warm_cache_mode(
                    "warm fp16 cache" if precision == "fp32" else f"{precision} + warm fp16 cache",
                    *args,
                    precision,
                    "fp16",
                    cache_root,
                    weights,
                    speed,
                )
                for precision in ("fp32", *precisions)
            ]
    workload = {
        "encoder": encoder,
        "encoder_args": encoder_args or {},
        "recipe": recipe,
        "llm": plan.recipe.model.llm.name_or_path,
        "task": task,
        "train_steps": steps,
        "train_batch": plan.recipe.optim.batch_size,
        "eval_rows": rows,
        "parity_eval_batch": eval_task.split("eval").batch_size,
        "eval_batch": eval_batch,
        "threads": torch.get_num_threads(),
    }
    return summarise(results, process_state().device, workload)


def _end_to_end_seconds(result: ModeResult, parity: ModeResult) -> float:
    """Training plus evaluation; a mode that reuses parity's training counts parity's training."""
    return (result.train or parity.train).seconds + result.eval.seconds


def summarise(results: list[ModeResult], device: torch.device, workload: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of ``bench --json``: device provenance, the workload, and per mode its
    seconds per step, eval rows per second, peak memory, MFU, end-to-end speedup over parity
    and whether its answers equal parity's."""
    info = device_provenance(device)
    peak = peak_bf16_tflops(info["gpu_model"]) if device.type == "cuda" else None
    info["peak_bf16_tflops"] = peak
    parity = next(r for r in results if r.mode == PARITY)
    modes = {}
    for r in results:
        train = r.train or parity.train
        seconds = _end_to_end_seconds(r, parity)
        flops = train.flops + r.eval.flops
        modes[r.mode] = {
            "s_per_step": train.seconds / r.steps,
            "steps_per_s": r.steps / train.seconds,
            "eval_rows_per_s": len(r.predictions) / r.eval.seconds,
            "peak_mem_mb": max(train.peak_mem_mb, r.eval.peak_mem_mb),
            "mfu": flops / seconds / (peak * 1e12) if peak else None,
            "model_tflops": flops / 1e12,
            "end_to_end_s": seconds,
            "end_to_end_speedup": _end_to_end_seconds(parity, parity) / seconds,
            "identical_predictions": r.predictions == parity.predictions,
            "answer_tokens": r.eval.answer_tokens,
            "final_train_loss": train.loss,
            "cache_fill_s": r.cache_fill_s,
            "reuses_parity_training": r.train is None,
            **r.extra,
        }
        log.info("bench %s: %s", r.mode, modes[r.mode])
    return {"device": info, "workload": workload, "modes": modes}


def format_bench(summary: dict[str, Any]) -> str:
    """The summary as a table, one row per mode."""
    device = summary["device"]
    columns = (
        ("s/step", "s_per_step", "{:.3f}"),
        ("steps/s", "steps_per_s", "{:.3f}"),
        ("eval rows/s", "eval_rows_per_s", "{:.2f}"),
        ("peak MB", "peak_mem_mb", "{:.0f}"),
        ("MFU", "mfu", "{:.1%}"),
        ("speedup", "end_to_end_speedup", "{:.2f}x"),
        ("= parity", "identical_predictions", "{}"),
        ("answer tok", "answer_tokens", "{}"),
        ("cache fill s", "cache_fill_s", "{:.1f}"),
    )
    width = max(len(mode) for mode in summary["modes"]) + 2
    lines = [
        f"device: {device['device']} ({device['gpu_model'] or device['cpu_model'] or 'unknown'})",
        f"workload: {', '.join(f'{k}={v}' for k, v in summary['workload'].items())}",
        f"{'mode':<{width}}" + "".join(f"{name:>14}" for name, _, _ in columns),
    ]
    for mode, figures in summary["modes"].items():
        cells = "".join(f"{('-' if figures[key] is None else fmt.format(figures[key])):>14}" for _, key, fmt in columns)
        lines.append(f"{mode:<{width}}{cells}")
    lines.append(
        "speedup: parity's end-to-end seconds (training + evaluation) over the mode's; = parity: every "
        "answer equal to parity's; answer tok: LLM tokens answered (generation time grows with them); "
        "cache fill: untimed encoding that makes the cache warm (paid once per encoder)"
    )
    return "\n".join(lines)
