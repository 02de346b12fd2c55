"""A tiny Llama-style LLM with a small byte-level BPE tokenizer, built locally from a config.

It lets the whole pipeline (LoRA, generation, metrics) run in seconds with no download: the
synthetic demo and the tests use it. It is saved as an ordinary Hugging Face model directory, so
it goes through the same loading code as any local checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .config import LLMSpec
from .paths import built_model
from .registry import register_llm

EOS = "<|endoftext|>"
VERSION = 2
OUTPUT_SCALE = 25.0

# The words the synthetic tasks and their prompts use, plus common English, so that labels and
# transcripts are a few tokens each. Anything else still encodes byte by byte.
_CORPUS_WORDS = (
    "low mid high tone tones pitch classify the a an of and then followed by sound sounds noise "
    "beep beeps silence short long one two three four five six seven eight nine ten yes no "
    "transcribe describe caption audio speech music what is which how many in this clip "
    "speaker language word words count same different genuine spoof label labels event events "
    "dog cat bird car rain wind water door bell music guitar piano voice male female"
).split()


def _corpus() -> list[str]:
    lines = [" ".join(_CORPUS_WORDS[i : i + 8]) for i in range(0, len(_CORPUS_WORDS), 3)]
    lines += [w.capitalize() + "." for w in _CORPUS_WORDS]
    return lines * 4


def build_toy_llm(
    directory: Path, hidden_size: int = 64, layers: int = 2, vocab_size: int = 512, seed: int = 0
) -> Path:
    """Write a tiny random-weight Llama and its BPE tokenizer to ``directory``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)
    eos_id = tokenizer.convert_tokens_to_ids(EOS)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # A trained LM's output layer is confident; the default init (std 0.02) gives near-uniform
        # logits that LoRA cannot sharpen, so the loss could never approach zero. Scale the head.
        model.lm_head.weight.mul_(OUTPUT_SCALE)
    model.generation_config.pad_token_id = eos_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@register_llm("toy-llama")
def toy_llama(spec: LLMSpec) -> tuple[str, None]:
    """Registered LLM 'toy-llama': built once into the cache, then loaded like any local model."""
    target = built_model(f"toy-llama-v{VERSION}", build_toy_llm)
    return str(target), None
