"""Self-supervised speech encoders from `transformers`: WavLM, wav2vec 2.0 and HuBERT (50 frames/s)."""

from __future__ import annotations

import torch
from transformers import AutoFeatureExtractor, AutoModel

from ..constants import SAMPLE_RATE
from ..registry import register_encoder
from .hidden_layers import LayerRequest, keep_layers
from .masking import lengths_to_mask, sample_lengths


class SSLEncoder(torch.nn.Module):
    """Last hidden state (or ``layer``) of a wav2vec2-style model, masked to each clip's length.

    Checkpoints with layer-norm feature extractors take an attention mask; those with group norm
    (e.g. wav2vec2-base) do not, and get zero-padded input as their feature extractor specifies.
    Clips are normalised to zero mean and unit variance over their valid samples when the
    checkpoint's feature extractor asks for it.

    Args:
        model_name: hub id or local directory.
        layer: which hidden state to return (-1 = last; 0 = the CNN/projection output).
        output_hidden_states: keep layer outputs in ``self.hidden_states``: True for every
            layer's, or a list of indices into them (as ``layer``).
    """

    def __init__(self, model_name: str, layer: int = -1, output_hidden_states: LayerRequest = False) -> None:
        super().__init__()
        self.model = AutoModel.from_pretrained(model_name)
        config = self.model.config
        self.output_dim = config.hidden_size
        self.layer, self.output_hidden_states = layer, output_hidden_states
        self.frame_rate = SAMPLE_RATE / float(torch.tensor(config.conv_stride).prod())
        self.uses_attention_mask = getattr(config, "feat_extract_norm", "layer") == "layer"
        try:
            self.normalize = bool(AutoFeatureExtractor.from_pretrained(model_name).do_normalize)
        except (OSError, ValueError):  # no preprocessor config (e.g. a bare local model): the usual default
            self.normalize = True
        self.hidden_states: list[torch.Tensor] | None = None

    def forward(
        self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = sample_lengths(audio, audio_attention_mask)
        sample_mask = lengths_to_mask(lengths, audio.shape[-1]).to(audio.dtype)
        x = audio.float() * sample_mask
        if self.normalize:
            count = sample_mask.sum(-1, keepdim=True).clamp(min=1)
            mean = x.sum(-1, keepdim=True) / count
            var = ((x - mean) ** 2 * sample_mask).sum(-1, keepdim=True) / count
            x = (x - mean) / torch.sqrt(var + 1e-7) * sample_mask
        kwargs = {"attention_mask": sample_mask.long()} if self.uses_attention_mask else {}
        # The model keeps every layer's output only when some besides the last are read.
        all_states = self.layer != -1 or self.output_hidden_states is not False
        out = self.model(x.to(next(self.model.parameters()).dtype), output_hidden_states=all_states, **kwargs)
        valid = self.model._get_feat_extract_output_lengths(lengths)
        mask = lengths_to_mask(valid, out.last_hidden_state.shape[1])
        if all_states:
            kept = keep_layers(list(out.hidden_states), self.output_hidden_states)
            self.hidden_states = None if kept is None else [s * mask[..., None] for s in kept]
        features = out.hidden_states[self.layer] if self.layer != -1 else out.last_hidden_state
        return features * mask[..., None].to(features.dtype), mask


@register_encoder("wavlm")
def wavlm(model_name: str = "microsoft/wavlm-base-plus", **kwargs) -> SSLEncoder:
    return SSLEncoder(model_name, **kwargs)


@register_encoder("wav2vec2")
def wav2vec2(model_name: str = "facebook/wav2vec2-base", **kwargs) -> SSLEncoder:
    return SSLEncoder(model_name, **kwargs)


@register_encoder("hubert")
def hubert(model_name: str = "facebook/hubert-base-ls960", **kwargs) -> SSLEncoder:
    return SSLEncoder(model_name, **kwargs)
