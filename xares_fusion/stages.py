"""Multi-stage training: which parts train in a stage, LoRA on a fusion's sub-encoder, merging.

Implicit injection (seed 000 §2.4.1) is the case this serves: stage 1 trains LoRA adapters on one
encoder with everything else frozen, the adapters are merged into that encoder, and stage 2 trains
the fusion with both encoders frozen.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model

from .config import DEFAULT_TRAINABLE, EncoderLoraSpec, StageSpec
from .model import AudioLLM


def part_of(model: AudioLLM, name: str) -> str | None:
    """The trainable part a parameter belongs to (None: always frozen)."""
    if name.startswith("projector."):
        return "projector"
    if name.startswith("llm."):
        return "llm_lora" if "lora_" in name else None
    if name.startswith("encoder."):
        if model.is_fusion and name.startswith("encoder.encoders."):
            return "encoder_lora" if "lora_" in name else None
        if model.is_fusion or getattr(model.encoder, "trainable", False):
            return "front_end"
    return None


def set_trainable(model: AudioLLM, parts: list[str] | tuple[str, ...]) -> int:
    """Freeze every parameter except those of ``parts``; returns the number of trainable values."""
    count = 0
    for name, param in model.named_parameters():
        trains = part_of(model, name) in parts
        param.requires_grad_(trains)
        count += param.numel() if trains else 0
    return count


def _sub_encoders(model: AudioLLM, index: int) -> torch.nn.ModuleList:
    if not model.is_fusion:
        raise ValueError("encoder_lora needs a fusion front-end (it adapts one of its encoders)")
    encoders = model.encoder.encoders
    if not 0 <= index < len(encoders):
        raise ValueError(f"encoder_lora.encoder={index}, but the fusion has {len(encoders)} encoders")
    return encoders


def attach_encoder_lora(model: AudioLLM, spec: EncoderLoraSpec) -> None:
    """Wrap sub-encoder ``spec.encoder`` with LoRA adapters; it then trains (and is never cached)."""
    encoders = _sub_encoders(model, spec.encoder)
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules))
    try:
        wrapped = get_peft_model(encoders[spec.encoder], config)
    except ValueError as err:
        raise ValueError(f"encoder_lora.target_modules={spec.target_modules} match no layer of encoder "
                         f"{spec.encoder} ({type(encoders[spec.encoder]).__name__}): {err}") from err
    wrapped.trainable = True
    encoders[spec.encoder] = wrapped


def merge_encoder_lora(model: AudioLLM, spec: EncoderLoraSpec) -> None:
    """Fold the adapters into the encoder's weights and drop them; the encoder is frozen again."""
    encoders = _sub_encoders(model, spec.encoder)
    merged = encoders[spec.encoder].merge_and_unload()
    merged.requires_grad_(False)
    encoders[spec.encoder] = merged


def stage_parts(stage: StageSpec | None) -> tuple[str, ...]:
    return tuple(stage.train) if stage is not None else DEFAULT_TRAINABLE
