"""Which settings of a run depart from the official XARES-LLM pipeline (no torch here).

Every default of xares-fusion is the official behaviour (docs/parity.md lists each one with the
official function it follows). A run that changes any of them -- bf16, a cosine schedule, a
feature cache in fp16, another LLM, unsorted batches, an evaluation length cap
(``data.eval_max_seconds``), a proxy metric -- is still useful, but its scores are not comparable
with the challenge's: the run plan and the result record carry
``{"official": bool, "departures": [...]}`` and the leaderboard marks such rows.

What is *not* a departure: the encoder or fusion front-end under test (that is what the benchmark
compares), the task set chosen, the data location, and speed options that give the same numbers
(read-ahead threads, loader workers, an fp32 feature cache of an encoder that runs in eval mode).
"""

from __future__ import annotations

from typing import Any

from .config import DEFAULT_GENERATION, RecipeConfig, TaskConfig, to_dict
from .constants import SAMPLE_RATE

# Recipe fields and their official values (xares-llm task.py XaresLLMTrainConfig, run.py,
# modeling_xaresllm.py and the transformers TrainingArguments defaults it relies on).
OFFICIAL_RECIPE: dict[str, Any] = {
    "model.llm.name_or_path": "HuggingFaceTB/SmolLM2-135M",
    "model.llm.gguf_file": None,
    "model.llm.dtype": "float32",
    "model.lora.r": 8,
    "model.lora.alpha": 32,
    "model.lora.dropout": 0.1,
    "model.lora.target_modules": "all-linear",
    "model.projector.name": "linear",
    "model.projector.args": {},
    "model.prompt_before_audio": False,
    "model.audio_layout": "official",
    "model.frozen_encoder_mode": "train",
    "data.crop_seconds": 30.0,
    "data.sample_rate": SAMPLE_RATE,
    "data.shuffle_buffer": 256,
    "data.sort_by_length": 128,
    "optim.lr": 1e-4,
    "optim.weight_decay": 0.01,
    "optim.warmup_steps": 200,
    "optim.scheduler": "linear",
    "optim.max_grad_norm": 1.0,
    "optim.projector_lr_scale": 1.0,
    "optim.batch_size": 4,
    "optim.grad_accum_steps": 1,
    "optim.seed": 42,
    "optim.precision": "fp32",
    "optim.loss_times_processes": True,
    "speed.tf32": False,
    "speed.deterministic": True,
    "speed.attn_implementation": None,
    "speed.lora_dropout_rng": "torch",
}


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name not in OFFICIAL_RECIPE:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def recipe_departures(recipe: RecipeConfig, file_max_steps: int | None = None) -> list[str]:
    """The recipe's departures from the official defaults, as ``field=value (official: value)``.

    ``file_max_steps``: the recipe file's own step count; a command-line change of it is listed.
    """
    flat = _flatten(to_dict(recipe))
    found = [
        f"{name}={flat.get(name)!r} (official: {official!r})"
        for name, official in OFFICIAL_RECIPE.items()
        if flat.get(name) != official
    ]
    if file_max_steps is not None and recipe.optim.max_steps != file_max_steps:
        found.append(f"optim.max_steps={recipe.optim.max_steps} (the recipe file trains {file_max_steps})")
    if recipe.optim.precision == "bf16":  # runner.building casts what no stage trains
        found.append("frozen_dtype='bf16': frozen encoder and LLM base weights stored in bf16 (official: fp32)")
    if recipe.stages:
        found.append(f"stages={[s.name for s in recipe.stages]} (official: one training stage)")
    if recipe.data.eval_max_seconds is not None:
        found.append(
            f"data.eval_max_seconds={recipe.data.eval_max_seconds!r}: evaluation clips cut to their first "
            f"{recipe.data.eval_max_seconds:g} s (official: whole clips)"
        )
    if recipe.speed.feature_cache != "off":
        if recipe.speed.cache_dtype != "fp32":
            found.append(
                f"speed.cache_dtype={recipe.speed.cache_dtype!r}: cached encoder features are rounded "
                f"(official: computed in fp32 every step)"
            )
        if recipe.model.frozen_encoder_mode == "train":
            found.append(
                f"speed.feature_cache={recipe.speed.feature_cache!r}: cached features are computed "
                f"with the encoder in eval mode (official: train mode while training)"
            )
    return found


def task_departures(task: TaskConfig) -> list[str]:
    """An evaluation task's departures: generation settings other than the official ones."""
    return [
        f"{task.name}: generation.{k}={v!r} (official: {DEFAULT_GENERATION.get(k)!r})"
        for k, v in sorted(task.generation.items())
        if DEFAULT_GENERATION.get(k) != v
    ]


def parity(departures: list[str]) -> dict[str, Any]:
    """The record's parity entry."""
    return {"official": not departures, "departures": list(departures)}
