"""LLM and tokenizer loading (hub id, local directory, GGUF file, registered name), LoRA, freezing."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from . import offline_llm, toy_llm  # noqa: F401  (register 'smollm2-135m-instruct-offline', 'toy-llama')
from .config import LLMSpec, LoraSpec
from .errors import ModelError
from .lora_dropout import use_pcg64_dropout
from .registry import LLMS


class LLMLoadError(ModelError, OSError):
    """The LLM or its tokenizer could not be loaded; the message names the spec and the options."""


DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_llm_location(spec: LLMSpec) -> tuple[str, str | None]:
    """(directory or hub id, gguf file name or None) for an LLM spec.

    A registered name is resolved by its factory (e.g. one that builds a local model on first
    use); a path to a ``.gguf`` file is split into its directory and file name.
    """
    if spec.name_or_path in LLMS:
        return LLMS.get(spec.name_or_path)(spec)
    path = Path(spec.name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise LLMLoadError(
                f"model.llm.name_or_path: the GGUF file {path} does not exist; give an existing .gguf file."
            )
        return str(path.parent), path.name
    return spec.name_or_path, spec.gguf_file


def load_llm(spec: LLMSpec, attn_implementation: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the causal LM and its tokenizer, all weights frozen; pad token falls back to EOS.
    ``attn_implementation``: a transformers attention kernel; None keeps transformers' default."""
    if spec.dtype not in DTYPES:
        raise ValueError(f"model.llm.dtype must be one of {sorted(DTYPES)}, got {spec.dtype!r}.")
    location, gguf_file = resolve_llm_location(spec)
    kwargs = {"revision": spec.revision} if spec.revision else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    model_kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=DTYPES[spec.dtype], **kwargs, **model_kwargs)
    except OSError as err:
        raise LLMLoadError(
            f"model.llm.name_or_path={spec.name_or_path!r}: could not load it ({str(err).splitlines()[0]}). "
            f"Offline, use a local model directory, a .gguf file, or a registered LLM {LLMS.names()}."
        ) from err
    except (ImportError, ValueError) as err:
        if not attn_implementation:
            raise
        # transformers checks the kernel while loading: a missing package (flash-attn) or a model
        # class without that kernel.
        raise LLMLoadError(
            f"speed.attn_implementation={attn_implementation!r}: {spec.name_or_path!r} cannot load with it "
            f"({str(err).splitlines()[0]}). Install what it needs, or leave the field unset (transformers' "
            f"default, SDPA, as officially)."
        ) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise LLMLoadError(f"LLM {spec.name_or_path!r}: its tokenizer has no EOS token; answers could never end.")
    model.requires_grad_(False)
    return model, tokenizer


def apply_lora(model: PreTrainedModel, spec: LoraSpec, dropout_rng: str = "torch") -> torch.nn.Module:
    """Wrap the frozen LLM with LoRA adapters (only the adapters train). ``dropout_rng="pcg64"``
    draws the adapters' CPU dropout masks from numpy's PCG64 (:mod:`xares_fusion.lora_dropout`)."""
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=spec.target_modules,
        bias="none",
    )
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5; harmless
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        peft_model = get_peft_model(model, config)
    for name, param in peft_model.named_parameters():
        param.requires_grad_("lora_" in name)
    if dropout_rng == "pcg64":
        use_pcg64_dropout(peft_model)
    return peft_model
