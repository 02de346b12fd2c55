"""Dasheng (Deep Audio-Signal Holistic Embeddings), a masked-audio-modelling transformer: the
registered encoder :class:`DashengEncoder` with its modes (``official-example``, ``package``,
``masked``), and the ``dasheng``, ``dasheng-base``, ``dasheng-0.6b`` and ``dasheng-1.2b``
registrations.

The transformer body is in ``dasheng_model.py``, the checkpoint layouts and their loading in
``dasheng_checkpoints.py`` (whose ``read_checkpoint``, ``build_model``, ``load_dasheng``,
``DashengCheckpointError``, ``SIZES`` and ``HUB_IDS`` are importable from here too), the front end
in ``dasheng_frontend.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..constants import SAMPLE_RATE
from ..registry import register_encoder
from .dasheng_checkpoints import HUB_IDS, SIZES, DashengCheckpointError, build_model, load_dasheng, read_checkpoint
from .hidden_layers import LayerRequest, keep_layers
from .masking import lengths_to_mask, sample_lengths

__all__ = [
    "HUB_IDS",
    "MODES",
    "SIZES",
    "DashengCheckpointError",
    "DashengEncoder",
    "build_model",
    "dasheng_06b",
    "dasheng_12b",
    "dasheng_base",
    "load_dasheng",
    "read_checkpoint",
]

MODES = ("official-example", "package", "masked")


# --- the encoder ---------------------------------------------------------------------------------


@register_encoder("dasheng")
class DashengEncoder(nn.Module):
    """Dasheng features at 25 frames/s.

    Args:
        model_name: hub id (default ``mispeech/dasheng-base``, as the official example) or a local
            directory with the hub files; loaded into this module's own code (no remote code).
        checkpoint: instead, a release file (``{"model", "config"}`` torch file) or hub directory.
        mode: how a padded batch is encoded.

            * ``"official-example"`` (default): what the official XARES-LLM example encoder
              (``example/dasheng/dasheng_base.py``) computes with the hub model: no lengths reach
              the model and no mask comes back (the official model reads None as all frames
              valid), so the padding frames are attended to, their features reach the LLM, and a
              clip's features depend on its batch. Beyond 1008 mel frames (10.08 s of padded
              batch) the hub code zero-pads the last chunk, drops a last chunk that is exactly
              full, and, for batches of several clips, interleaves the clips' chunks (see
              :meth:`DashengModel.forward`); official bugs, kept.
            * ``"package"``: the ``dasheng`` package's ``Dasheng(x)``: no lengths either, but
              each clip's chunks in order, the last encoded at its own length.
            * ``"masked"``: the package's ``Dasheng(x, x_length)``: each clip's padding is masked
              out of attention (within each chunk), the returned mask has n // 640 frames per clip
              of n samples (at least 1), and padding frames are zeroed.

            In every mode the dB floor (top_db) is shared by the batch, as torchaudio computes it,
            and BatchNorm uses batch statistics when the encoder is in train mode.
        output_hidden_states: keep layer outputs in ``self.hidden_states`` (for fusions): True for
            every layer's (the embeddings first, the last layer-normed), or a list of indices into them.
        size: ``"base"``, ``"0.6B"`` or ``"1.2B"``: the checkpoint must be of this size (set by
            the ``dasheng-base``/``-0.6b``/``-1.2b`` encoders).
    """

    def __init__(
        self,
        model_name: str = HUB_IDS["base"],
        checkpoint: str | None = None,
        mode: str = "official-example",
        output_hidden_states: LayerRequest = False,
        size: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        if size is not None and size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}; got {size!r}")
        self.model, self.front_end = load_dasheng(checkpoint or model_name, size=size)
        config = self.model.config
        self.mode, self.output_hidden_states = mode, output_hidden_states
        self.output_dim = config.embed_dim
        self.samples_per_frame = config.samples_per_frame
        self.frame_rate = SAMPLE_RATE / self.samples_per_frame
        # The shortest input giving one frame (4 mel frames); centred frames also need more than
        # n_fft / 2 samples for the reflect padding.
        width = config.patch_stride[1] - 1
        self.min_samples = (
            max(width * config.hop_size, config.n_fft // 2 + 1)
            if config.center
            else config.n_fft + width * config.hop_size
        )
        self.hidden_states: list[torch.Tensor] | None = None
        self.eval()  # as from_pretrained leaves a model

    def forward(
        self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if audio.shape[-1] < self.min_samples:
            raise ValueError(
                f"Dasheng needs at least {self.min_samples} samples (one 40 ms frame); got a batch of {audio.shape[-1]}"
            )
        spectrogram = self.front_end(audio)
        all_states = self.output_hidden_states is not False
        if self.mode == "masked":
            frames = spectrogram.shape[-1] // self.model.config.patch_stride[1]
            valid = (sample_lengths(audio, audio_attention_mask) // self.samples_per_frame).clamp(1, frames)
            states = self.model(spectrogram, valid, "package", all_states)
            mask = lengths_to_mask(valid, frames)
            states = [s * mask[..., None].to(s.dtype) for s in states]
        else:
            chunking = "hub" if self.mode == "official-example" else "package"
            states = self.model(spectrogram, None, chunking, all_states)
            mask = torch.ones(states[-1].shape[:2], dtype=torch.long, device=audio.device)
        if all_states:
            self.hidden_states = keep_layers(states, self.output_hidden_states)
        return states[-1], mask


@register_encoder("dasheng-base")
def dasheng_base(model_name: str = HUB_IDS["base"], **kwargs: Any) -> DashengEncoder:
    """Dasheng-Base: 768-d, 12 layers, 12 heads (``DashengEncoder`` arguments)."""
    return DashengEncoder(model_name=model_name, size="base", **kwargs)


@register_encoder("dasheng-0.6b")
def dasheng_06b(model_name: str = HUB_IDS["0.6B"], **kwargs: Any) -> DashengEncoder:
    """Dasheng-0.6B: 1280-d, 32 layers, 16 heads (``DashengEncoder`` arguments)."""
    return DashengEncoder(model_name=model_name, size="0.6B", **kwargs)


@register_encoder("dasheng-1.2b")
def dasheng_12b(model_name: str = HUB_IDS["1.2B"], **kwargs: Any) -> DashengEncoder:
    """Dasheng-1.2B: 1536-d, 40 layers, 24 heads (``DashengEncoder`` arguments)."""
    return DashengEncoder(model_name=model_name, size="1.2B", **kwargs)
