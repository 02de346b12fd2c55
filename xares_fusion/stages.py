"""Multi-stage training: which parts train in a stage, LoRA on a fusion's sub-encoder, merging.

Implicit injection (Dual-Encoder Fusion §2.4.1) is the case this serves: stage 1 trains LoRA
adapters on one encoder with everything else frozen, the adapters are merged into that encoder,
and stage 2 trains the fusion with both encoders frozen.

A part is a set of weights named by the module that holds them, never by parameter-name prefix:
the projector, the LoRA adapters of the LLM, the front end's own trainable weights, and the LoRA
adapters of a fusion's sub-encoders.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer

from .config import DEFAULT_TRAINABLE, EncoderLoraSpec, StageSpec
from .errors import ConfigError
from .model import AudioLLM


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The LoRA adapter weights inside ``module``: those of the adapter layers that each of
    peft's tuner layers declares (``adapter_layer_names``), not the wrapped base weights."""
    return [
        param
        for layer in module.modules()
        if isinstance(layer, BaseTunerLayer)
        for name in layer.adapter_layer_names
        for param in getattr(layer, name).parameters()
    ]


def trainable_parts(model: AudioLLM) -> dict[str, list[torch.nn.Parameter]]:
    """The weights of each part a recipe can train (``TRAINABLE_PARTS``); every other weight
    stays frozen."""
    front_end = model.front_end
    return {
        "projector": list(model.projector.parameters()),
        "llm_lora": lora_parameters(model.llm),
        "front_end": front_end.trainable_parameters(),
        "encoder_lora": lora_parameters(front_end.sub_encoders()),
    }


def set_trainable(model: AudioLLM, parts: list[str] | tuple[str, ...]) -> int:
    """Freeze every parameter except those of ``parts``; returns the number of trainable values."""
    weights = trainable_parts(model)
    chosen = {id(param) for part in parts for param in weights.get(part, [])}
    count = 0
    for param in model.parameters():
        trains = id(param) in chosen
        param.requires_grad_(trains)
        count += param.numel() if trains else 0
    return count


def _sub_encoders(model: AudioLLM, index: int) -> torch.nn.ModuleList:
    encoders = model.front_end.sub_encoders()
    if not encoders:
        raise ConfigError("stages[].encoder_lora needs a fusion front-end (it adapts one of its encoders)")
    if not 0 <= index < len(encoders):
        raise ConfigError(f"stages[].encoder_lora.encoder={index}, but the fusion has {len(encoders)} encoders")
    return encoders


def attach_encoder_lora(model: AudioLLM, spec: EncoderLoraSpec) -> None:
    """Wrap sub-encoder ``spec.encoder`` with LoRA adapters; it then trains (and is never cached)."""
    encoders = _sub_encoders(model, spec.encoder)
    config = LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(spec.target_modules)
    )
    try:
        wrapped = get_peft_model(encoders[spec.encoder], config)
    except ValueError as err:
        raise ConfigError(
            f"encoder_lora.target_modules={spec.target_modules} match no layer of encoder "
            f"{spec.encoder} ({type(encoders[spec.encoder]).__name__}): {err}"
        ) from err
    wrapped.trainable = True  # the contract's flag: the fusion now runs it with gradients, uncached
    encoders[spec.encoder] = wrapped


def merge_encoder_lora(model: AudioLLM, spec: EncoderLoraSpec) -> None:
    """Fold the adapters into the encoder's weights and drop them; the encoder is frozen again."""
    encoders = _sub_encoders(model, spec.encoder)
    merged = encoders[spec.encoder].merge_and_unload()
    merged.requires_grad_(False)
    encoders[spec.encoder] = merged


def stage_parts(stage: StageSpec | None) -> tuple[str, ...]:
    """The parts a stage trains (the default parts for a single-stage run)."""
    return tuple(stage.train) if stage is not None else DEFAULT_TRAINABLE


# The modules whose weights autocast rounds to the compute dtype at every call anyway (matrix
# products): casting them once gives the same numbers and halves their memory. Norms, embeddings
# and bare parameters keep fp32, since autocast would compute with them (or add them) in fp32.
_CAST_MODULES = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def cast_frozen_weights(model: AudioLLM, stages: list[StageSpec] | None, dtype: torch.dtype) -> int:
    """Cast the matrix-product weights that no stage trains (frozen encoders, the LLM's base
    weights) to ``dtype``; the parts any stage trains keep fp32, and so do LoRA adapters that a
    stage attaches later (peft creates them in fp32). Returns the number of values cast.

    Under autocast to ``dtype`` this changes no number, since autocast casts these weights at
    every call; it saves their fp32 copies and the per-step casts of frozen weights, which
    autocast does not cache."""
    weights = trainable_parts(model)
    trained = {id(p) for stage in stages or [None] for part in stage_parts(stage) for p in weights.get(part, [])}
    count = 0
    for module in model.modules():
        if not isinstance(module, _CAST_MODULES):
            continue
        for param in module.parameters(recurse=False):
            if id(param) not in trained and param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
                count += param.numel()
    return count
