"""The names a recipe may use for precision, the feature cache and the model's modes, torch-free.

The config validates against these tuples; the modules that act on a name (``feature_cache`` and
``runner`` turn it into a torch dtype or an accelerate setting, ``model`` checks its arguments)
use the same tuples or key their tables by the same names, so a name is added here once and
accepted everywhere.
"""

from __future__ import annotations

PRECISIONS = ("fp32", "bf16", "fp16")
"""Training precisions (``optim.precision``); fp32 is the official one."""

FEATURE_CACHE_MODES = ("off", "read", "readwrite")
"""``speed.feature_cache``: off (official), read an existing cache, or read and fill it."""

FEATURE_CACHE_DTYPES = ("fp16", "fp32")
"""``speed.cache_dtype``: fp16 halves the disk; fp32 gives the numbers of an uncached run
(for encoders whose output for a clip does not depend on the rest of its batch)."""

AUDIO_LAYOUTS = ("official", "packed")
"""``model.audio_layout``: the official training sequence (padded audio block, then the text) or
each row packed contiguously."""

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
"""``speed.attn_implementation``: the LLM's attention kernel, a transformers ``attn_implementation``
name; unset (official) leaves transformers' default, SDPA."""

LORA_DROPOUT_RNGS = ("torch", "pcg64")
"""``speed.lora_dropout_rng``: where LoRA dropout masks come from on the CPU; torch (official) or
numpy's PCG64 (the same distribution, another random stream, drawn faster)."""

FROZEN_ENCODER_MODES = ("train", "eval")
"""``model.frozen_encoder_mode``: the mode of a frozen single encoder while the model trains;
train is the official behaviour."""
