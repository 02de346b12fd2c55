"""Shared fixtures: isolated data/cache homes, the tiny local LLM, and synthetic shards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def isolated_homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test session writes data and built models into its own temporary directories."""
    homes = {
        "XARES_FUSION_DATA_HOME": tmp_path_factory.mktemp("data_home"),
        "XARES_FUSION_CACHE": tmp_path_factory.mktemp("cache_home"),
    }
    old = {k: os.environ.get(k) for k in homes}
    os.environ.update({k: str(v) for k, v in homes.items()})
    os.environ.pop("XARES_DATA_HOME", None)
    yield homes
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synthetic_root(isolated_homes: dict[str, Path]) -> Path:
    """The synthetic tone shards where the shipped synthetic tasks expect them."""
    from xares_fusion.data.synthetic import make_synthetic

    return make_synthetic(isolated_homes["XARES_FUSION_DATA_HOME"] / "generated" / "synthetic")


@pytest.fixture(scope="session")
def toy_llm(isolated_homes: dict[str, Path]):
    """The tiny local Llama and its tokenizer (frozen), as the runner loads them."""
    from xares_fusion.config import LLMSpec
    from xares_fusion.llm import load_llm

    return load_llm(LLMSpec(name_or_path="toy-llama"))


@pytest.fixture()
def model(toy_llm):
    """A fresh audio LLM: log-mel encoder, linear projector, the toy Llama with LoRA (seeded)."""
    import torch

    from xares_fusion.config import LoraSpec
    from xares_fusion.encoders import build_encoder
    from xares_fusion.llm import apply_lora
    from xares_fusion.model import AudioLLM
    from xares_fusion.projectors import build_projector

    torch.manual_seed(0)
    llm, tokenizer = toy_llm
    llm = apply_lora(llm.__class__.from_pretrained(llm.config._name_or_path), LoraSpec())
    encoder = build_encoder("logmel")
    projector = build_projector("linear", encoder.output_dim, llm.config.hidden_size)
    return AudioLLM(encoder, projector, llm, tokenizer)


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random two-layer Whisper (d_model 32) saved as a local checkpoint directory."""
    import torch
    from transformers import WhisperConfig, WhisperModel

    path = tmp_path_factory.mktemp("tiny_whisper")
    torch.manual_seed(0)
    WhisperModel(
        WhisperConfig(
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            vocab_size=100,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=1,
            decoder_start_token_id=2,
        )
    ).save_pretrained(path)
    return str(path)
