"""Recipe configs: model | data mixture | optimisation | stages, kept apart so that a fusion recipe
changes only 'model'."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..constants import SAMPLE_RATE
from .optim import OptimSpec, SpeedSpec
from .validation import ConfigError, field_path, require_at_least, require_one_of
from .vocabulary import AUDIO_LAYOUTS, FROZEN_ENCODER_MODES


@dataclass
class LLMSpec:
    """The decoder: a hub id, a local directory, a GGUF file, or a registered name."""

    name_or_path: str = "HuggingFaceTB/SmolLM2-135M"
    gguf_file: str | None = None
    revision: str | None = None
    dtype: str = "float32"


@dataclass
class LoraSpec:
    """LoRA on the frozen LLM (official defaults: r 8, alpha 32, dropout 0.1, all linear layers)."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: str | list[str] = "all-linear"


@dataclass
class ProjectorSpec:
    """The projector from encoder features to LLM embeddings: a registered name and its arguments."""

    name: str = "linear"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """Front-end (encoder or fusion), projector, LLM and LoRA."""

    encoder: str | None = None
    encoder_args: dict[str, Any] = field(default_factory=dict)
    projector: ProjectorSpec = field(default_factory=ProjectorSpec)
    llm: LLMSpec = field(default_factory=LLMSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    aux_loss_weights: dict[str, float] = field(default_factory=dict)
    prompt_before_audio: bool = False  # official order: [audio][prompt]; PaM puts the prompt first (packed rows)
    # Training sequence layout: "official" ([padded audio block][prompt + target], positions
    # through the padding) or "packed" (each row contiguous); see model.py. Not parity: packed.
    audio_layout: str = "official"
    # Mode of a frozen single encoder during training: "train" (official, by accident: see
    # model.py) or "eval" (the fix). Evaluation always runs it in eval mode.
    frozen_encoder_mode: str = "train"

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for an unknown audio layout or frozen-encoder mode."""
        require_one_of(source, field_path(prefix, "audio_layout"), self.audio_layout, AUDIO_LAYOUTS)
        require_one_of(
            source, field_path(prefix, "frozen_encoder_mode"), self.frozen_encoder_mode, FROZEN_ENCODER_MODES
        )


@dataclass
class MixtureEntry:
    """One training set of the mixture; ``prob`` as in the official configs (see data.mixture)."""

    task: str
    prob: float | None = None


@dataclass
class DataMixtureSpec:
    """The training data: which tasks mix, how clips are cropped, shuffled and batched."""

    mixture: list[MixtureEntry] = field(default_factory=list)
    crop_seconds: float = 30.0
    sample_rate: int = SAMPLE_RATE
    num_workers: int = 0  # loader processes; 1 reads the same stream as 0, ahead of the model
    shuffle_buffer: int = 256
    max_skip_fraction: float = 0.05
    # Official: each window of 128 consecutive (shuffled) examples is sorted by prompt+target
    # tokens + audio seconds, longest first, then cut into batches; 1 keeps stream order.
    sort_by_length: int = 128
    # Evaluation clips cut to their first N seconds (None: whole clips, as officially; a departure).
    eval_max_seconds: float | None = None

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for a non-positive probability or a bound out of range."""
        for i, entry in enumerate(self.mixture):
            if entry.prob is not None and entry.prob <= 0:
                raise ConfigError(f"{source}: field '{prefix}.mixture[{i}].prob' must be > 0, got {entry.prob}.")
        if not 0 <= self.max_skip_fraction <= 1:
            raise ConfigError(f"{source}: field '{prefix}.max_skip_fraction' must be within [0, 1].")
        require_at_least(source, field_path(prefix, "num_workers"), self.num_workers, 0)
        if self.eval_max_seconds is not None and not self.eval_max_seconds > 0:
            raise ConfigError(
                f"{source}: field '{prefix}.eval_max_seconds' must be > 0 seconds (or null: whole clips)."
            )
        for name in ("shuffle_buffer", "sort_by_length"):
            require_at_least(source, field_path(prefix, name), getattr(self, name), 1, " (1 = off)")


TRAINABLE_PARTS = ("projector", "llm_lora", "front_end", "encoder_lora")
DEFAULT_TRAINABLE = ("projector", "llm_lora", "front_end")  # a single-stage run, or a stage that names none


@dataclass
class EncoderLoraSpec:
    """LoRA on one sub-encoder of a fusion (implicit injection, "Dual-Encoder Fusion" §2.4.1: r 16,
    alpha 32, dropout 0.05 on Dasheng's qkv)."""

    encoder: int = 1
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["qkv"])


@dataclass
class StageSpec:
    """One stage of a multi-stage recipe: what trains, optimiser changes, and a merge after it.

    ``train`` lists parts among projector, llm_lora, front_end (the fusion's own parameters) and
    encoder_lora (adapters the stage attaches with ``encoder_lora``); everything else is frozen.
    ``merge: true`` folds the stage's encoder LoRA into the encoder when the stage ends.
    """

    name: str
    train: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINABLE))
    optim: dict[str, Any] = field(default_factory=dict)
    encoder_lora: EncoderLoraSpec | None = None
    merge: bool = False

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for unknown parts or optim keys, or a LoRA the stage lacks."""
        unknown = sorted(set(self.train) - set(TRAINABLE_PARTS))
        if unknown:
            raise ConfigError(
                f"{source}: field '{prefix}.train' has unknown part(s) {unknown}; choose from {list(TRAINABLE_PARTS)}."
            )
        fields = {f.name for f in dataclasses.fields(OptimSpec)}
        bad = sorted(set(self.optim) - fields)
        if bad:
            raise ConfigError(f"{source}: field '{prefix}.optim' has unknown key(s) {bad}; valid: {sorted(fields)}.")
        if self.merge and self.encoder_lora is None:
            raise ConfigError(f"{source}: field '{prefix}.merge' is true but the stage attaches no encoder_lora.")
        if "encoder_lora" in self.train and self.encoder_lora is None:
            raise ConfigError(f"{source}: field '{prefix}.train' lists encoder_lora; add '{prefix}.encoder_lora'.")


@dataclass
class RecipeConfig:
    """A training recipe: what model to build, what data to mix, how to optimise."""

    name: str
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataMixtureSpec = field(default_factory=DataMixtureSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    speed: SpeedSpec = field(default_factory=SpeedSpec)
    eval: str | None = None  # default evaluation group/task when the CLI names none
    stages: list[StageSpec] = field(default_factory=list)  # empty: one stage training everything trainable
    description: str | None = None
    aliases: list[str] = field(default_factory=list)
    source: str = ""

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for repeated stage names or an empty data mixture."""
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"{source}: field 'stages' repeats a stage name ({names}); names must be unique.")
        if not self.data.mixture:
            raise ConfigError(
                f"{source}: field 'data.mixture' is empty; list the training tasks, e.g. 'mixture: [{{task: esc-50}}]'."
            )
