"""A new encoder: log energies of frequency bands, 50 frames per second.

The file follows the XARES-LLM encoder contract, so it runs in the official pipeline as it is and
here by its path (``xares-fusion check-encoder examples/extending/my_encoder.py``):

* a ``torch.nn.Module`` whose class name ends in ``Encoder`` (how a file is picked up by path);
* ``self.output_dim``, the feature size D;
* ``forward(audio [B, S] float at 16 kHz, audio_attention_mask [B, S] or None)``
  returning ``(features [B, T, D], feature_attention_mask [B, T] or None)``, 1 = valid frame.

Optional, found by attribute: ``frame_rate`` (frames/s; fusions use it to align streams). Here it
is exact, so no fusion has to measure it.

The decorator registers the class under a name as well, for Python code that imports this file
(or a package that declares it as an entry point of the ``xares_fusion.encoders`` group). Outside
xares-fusion the decorator is a no-op, so the file stays a plain XARES-LLM encoder.
"""

from __future__ import annotations

import torch

try:
    from xares_fusion.registry import register_encoder
except ImportError:  # the official pipeline: the file is loaded by path, no registry

    def register_encoder(name):
        return lambda cls: cls


@register_encoder("band-energy")
class BandEnergyEncoder(torch.nn.Module):
    """Log energy in ``n_bands`` equal-width bands of 20 ms frames (hop 320 samples: 50 frames/s).

    A clip of n samples has n // 320 frames (at least one); frames past a clip's end are zero and
    masked, so a clip gives the same features alone or in a padded batch.
    """

    def __init__(self, n_bands: int = 64, window: int = 640, hop_length: int = 320) -> None:
        super().__init__()
        self.window, self.hop_length = window, hop_length
        self.output_dim = n_bands
        self.frame_rate = 16000 / hop_length
        bins = window // 2 + 1
        edges = torch.linspace(0, bins, n_bands + 1).round().long()
        bands = torch.zeros(bins, n_bands)
        for b in range(n_bands):
            bands[edges[b] : max(edges[b + 1], edges[b] + 1), b] = 1.0
        self.register_buffer("bands", bands, persistent=False)
        self.register_buffer("hann", torch.hann_window(window), persistent=False)

    def forward(self, audio: torch.Tensor, audio_attention_mask: torch.Tensor | None = None):
        # Keep the spectrum in fp32 even under autocast: log of fp16 energies gives -inf.
        with torch.autocast(device_type=audio.device.type, enabled=False):
            tail = self.window - self.hop_length + max(0, self.hop_length - audio.shape[-1])  # >= 1 frame
            padded = torch.nn.functional.pad(audio.float(), (0, tail))
            frames = padded.unfold(-1, self.window, self.hop_length) * self.hann  # [B, T, window]
            power = torch.fft.rfft(frames).abs().pow(2)  # [B, T, bins]
            features = torch.log(power @ self.bands + 1e-6)  # [B, T, n_bands]
        if audio_attention_mask is None:
            lengths = torch.full((audio.shape[0],), audio.shape[-1], device=audio.device)
        else:
            lengths = audio_attention_mask.long().sum(-1)
        valid = (lengths // self.hop_length).clamp(min=1)
        mask = (torch.arange(features.shape[1], device=audio.device)[None] < valid[:, None]).long()
        return features * mask[..., None], mask
