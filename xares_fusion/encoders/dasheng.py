"""Dasheng (masked audio modelling encoder): 25 frames/s (40 ms), masks from clip lengths.

Two ways in: the hub model ``mispeech/dasheng-base`` with its remote code (feature extractor and
model, as the official XARES-LLM example loads it), or a checkpoint path/URL through the model
code of the ``dasheng`` package (which needs torchaudio, so it is not installed by default).
Dasheng computes its 64-bin mel front end itself, in fp32; a frame covers 4 mel hops of 160
samples, so a clip of n samples has n // 640 valid frames.
"""

from __future__ import annotations

import torch

from ..registry import register_encoder
from .masking import lengths_to_mask, sample_lengths

SAMPLES_PER_FRAME = 640  # hop 160 x patch width 4


@register_encoder("dasheng")
class DashengEncoder(torch.nn.Module):
    """Args:
        model_name: hub id of a Dasheng checkpoint with remote code (default mispeech/dasheng-base).
        checkpoint: instead, a path or URL of a checkpoint for the ``dasheng`` package's model code.
    """

    def __init__(self, model_name: str = "mispeech/dasheng-base", checkpoint: str | None = None) -> None:
        super().__init__()
        self.frame_rate = 16000 / SAMPLES_PER_FRAME
        if checkpoint is not None:
            try:
                from dasheng.pretrained.pretrained import Dasheng
            except ImportError as err:
                raise ImportError("dasheng checkpoints need the 'dasheng' package and torchaudio "
                                  "(pip install dasheng), or use model_name with a hub checkpoint.") from err
            self.model = Dasheng.from_pretrained(checkpoint)
            self.output_dim = self.model.embed_dim
            self.processor = None
        else:
            from transformers import AutoFeatureExtractor, AutoModel

            self.processor = AutoFeatureExtractor.from_pretrained(model_name, trust_remote_code=True)
            self.model = AutoModel.from_pretrained(model_name, trust_remote_code=True)
            self.output_dim = self.model.config.encoder_kwargs["embed_dim"]

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = sample_lengths(audio, audio_attention_mask)
        audio = audio.float()  # the mel front end gives NaN in fp16
        if self.processor is None:
            features = self.model(audio, x_length=lengths)
        else:
            inputs = self.processor(audio, return_tensors="pt")
            features = self.model(**{k: v.to(audio.device) for k, v in inputs.items()}).hidden_states
        mask = lengths_to_mask((lengths // SAMPLES_PER_FRAME).clamp(min=1, max=features.shape[1]), features.shape[1])
        return features * mask[..., None].to(features.dtype), mask
