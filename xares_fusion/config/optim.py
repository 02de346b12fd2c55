"""Optimisation, precision and speed specs of a recipe; each default is the official value."""

from __future__ import annotations

from dataclasses import dataclass

from .validation import ConfigError, field_path, require_at_least, require_one_of
from .vocabulary import ATTN_IMPLEMENTATIONS, FEATURE_CACHE_DTYPES, FEATURE_CACHE_MODES, LORA_DROPOUT_RNGS, PRECISIONS


@dataclass
class OptimSpec:
    """Optimisation and precision (official: AdamW 1e-4, wd 0.01, linear schedule -- 200 warmup
    steps, then linear decay to 0 at max_steps, the transformers Trainer default -- clip 1.0,
    batch 4 per process, one batch per optimiser step, seed 42, fp32)."""

    max_steps: int = 100_000
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    projector_lr_scale: float = 1.0  # learning rate of the projector relative to lr (officially 1)
    batch_size: int = 4
    # Batches per optimiser step (gradients accumulated): keeps a global batch on fewer processes,
    # batch_size x processes x grad_accum_steps. Official: 1.
    grad_accum_steps: int = 1
    seed: int = 42
    precision: str = "fp32"
    save_steps: int = 200
    keep_checkpoints: int = 2
    log_steps: int = 100
    # Official on N processes: the backward loss is multiplied by N (a transformers Trainer
    # behaviour, see train.py); no effect on one process. false: the plain mean over processes.
    loss_times_processes: bool = True

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for an unknown precision or scheduler, or a count below 1."""
        require_one_of(source, field_path(prefix, "precision"), self.precision, PRECISIONS)
        if self.scheduler not in ("cosine", "linear", "constant"):
            raise ConfigError(
                f"{source}: field '{field_path(prefix, 'scheduler')}' must be linear (official), cosine or constant."
            )
        for name in ("max_steps", "batch_size", "grad_accum_steps", "save_steps", "log_steps", "keep_checkpoints"):
            require_at_least(source, field_path(prefix, name), getattr(self, name), 1)


@dataclass
class SpeedSpec:
    """Speed options; every one at its parity value by default and recorded with the recipe.

    ``feature_cache``: off, read or readwrite (frozen encoders' outputs stored per clip);
    ``cache_dtype``: fp16 (half the disk) or fp32 (equal to uncached runs); ``tf32``: TF32 matmuls on GPU;
    ``deterministic``: the official deterministic mode (on by default); ``attn_implementation``:
    the LLM's attention kernel (unset: transformers' default); ``lora_dropout_rng``: where LoRA
    dropout masks are drawn on the CPU. docs/performance.md says what each one changes.
    """

    feature_cache: str = "off"
    cache_dtype: str = "fp16"
    tf32: bool = False
    # Official (run.py --benchmark, always on): deterministic algorithms, cuDNN deterministic,
    # CUBLAS_WORKSPACE_CONFIG=:4096:8. false allows faster non-deterministic kernels (recorded).
    deterministic: bool = True
    # Official: transformers' default kernel (SDPA). "eager" (plain matrix products) trains these
    # short sequences faster on a CPU in bf16; the same attention, other rounding (recorded).
    attn_implementation: str | None = None
    # Official: torch's dropout, whose CPU masks come one value at a time from its Mersenne
    # Twister (a fifth of a bf16 training step on a CPU). "pcg64" draws them from numpy's PCG64,
    # seeded from torch's generator: the same Bernoulli masks in distribution, another stream.
    lora_dropout_rng: str = "torch"

    def validate(self, source: str, prefix: str) -> None:
        """Raise :class:`ConfigError` for a value outside the vocabulary."""
        require_one_of(source, field_path(prefix, "feature_cache"), self.feature_cache, FEATURE_CACHE_MODES)
        require_one_of(source, field_path(prefix, "cache_dtype"), self.cache_dtype, FEATURE_CACHE_DTYPES)
        require_one_of(source, field_path(prefix, "lora_dropout_rng"), self.lora_dropout_rng, LORA_DROPOUT_RNGS)
        if self.attn_implementation is not None:
            require_one_of(
                source, field_path(prefix, "attn_implementation"), self.attn_implementation, ATTN_IMPLEMENTATIONS
            )
