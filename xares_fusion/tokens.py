"""Prompt and target token ids exactly as the official pipeline makes them (no torch here).

Officially (xares-llm ``audiowebdataset._process_sample_stream``) the prompt is
``tokenizer(prompt)`` with the tokenizer's default special tokens and no chat template; a
training target is ``tokenizer(text + tokenizer.eos_token)`` -- the EOS appended as text, and
again with default special tokens, so a tokenizer that adds BOS puts one in front of the target
too. An evaluation reference is ``tokenizer(text)`` decoded back with ``skip_special_tokens`` and
stripped. The model (loss, generation), the data stream (its length sort key) and evaluation
(reference strings) all use these three functions, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Any


def prompt_ids(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt: ``tokenizer(prompt)``, default special tokens."""
    return tokenizer(list(prompts))["input_ids"]


def target_ids(tokenizer: Any, targets: list[str]) -> list[list[int]]:
    """Training target ids: ``tokenizer(text + eos_token)``, default special tokens."""
    return tokenizer([text + tokenizer.eos_token for text in targets])["input_ids"]


def reference_texts(tokenizer: Any, texts: list[str]) -> list[str]:
    """Evaluation references as the official metrics see them: the label tokenised, decoded
    without special tokens and stripped (a tokenizer that cannot represent a character loses it
    here, officially too)."""
    ids = tokenizer(list(texts))["input_ids"]
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
