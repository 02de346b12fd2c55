"""Random-weight models of real shapes, for speed measurements where weights do not matter.

    python scripts/random_models.py OUT_DIR [--llm HuggingFaceTB/SmolLM2-135M] [--whisper base large-v3]

Writes ``OUT_DIR/llm-random`` (the LLM's config and tokenizer, random weights) and one
``OUT_DIR/whisper-<shape>-random`` per Whisper shape (Whisper's encoder at full size, the decoder
cut to 2 layers because only the encoder runs). Use them as
``xares-fusion bench whisper --encoder-args '{"model_name": "OUT_DIR/whisper-base-random"}'
--set model.llm.name_or_path=OUT_DIR/llm-random`` (docs/performance.md). Answers are meaningless:
the timings are those of the real shapes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperModel,
)

# Encoder shapes of the released checkpoints (their config.json files).
WHISPER_SHAPES = {
    "base": dict(num_mel_bins=80, d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048),
    "large-v3": dict(
        num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--llm", default="HuggingFaceTB/SmolLM2-135M", help="hub id or directory of the LLM's config")
    parser.add_argument("--whisper", nargs="*", default=["base", "large-v3"], choices=sorted(WHISPER_SHAPES))
    args = parser.parse_args()
    torch.manual_seed(0)
    llm_dir = args.out / "llm-random"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(args.llm)).save_pretrained(llm_dir)
    AutoTokenizer.from_pretrained(args.llm).save_pretrained(llm_dir)
    for name in args.whisper:
        shape = WHISPER_SHAPES[name]
        decoder = dict(decoder_layers=2, decoder_attention_heads=shape["encoder_attention_heads"])
        model = WhisperModel(WhisperConfig(**shape, **decoder, decoder_ffn_dim=shape["encoder_ffn_dim"]))
        directory = args.out / f"whisper-{name}-random"
        model.save_pretrained(directory)
        WhisperFeatureExtractor(feature_size=shape["num_mel_bins"]).save_pretrained(directory)
        millions = sum(p.numel() for p in model.get_encoder().parameters()) / 1e6
        print(f"{directory}: {millions:.1f} M encoder parameters")


if __name__ == "__main__":
    main()
