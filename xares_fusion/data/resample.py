"""Band-limited resampling with torchaudio's algorithm, in plain torch.

The official loader resamples every clip with ``torchaudio.functional.resample`` (defaults:
``sinc_interp_hann``, ``lowpass_filter_width=6``, ``rolloff=0.99``), computed in the waveform's
dtype. torchaudio does not install beside the torch this project pins, and scipy's polyphase
resampler uses another window, so the same algorithm is written here: a Hann-windowed sinc
kernel per output phase, applied as one strided ``conv1d``. Tests check it against the
interpolation formula evaluated directly.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99


@lru_cache(maxsize=16)
def _kernel(orig: int, new: int, dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Kernels [new, 1, 2*width + orig] for rates already divided by their gcd, and the width.

    y[j] = sum_i x[i] * sinc(base * (i / orig - j / new)) * hann window, with base =
    min(orig, new) * rolloff and the window spanning ``LOWPASS_FILTER_WIDTH`` zero crossings;
    y[j + new] reuses y[j]'s kernel on x shifted by orig, hence the stride.
    """
    base = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base)
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=dtype)[:, None, None] / new + idx
    t *= base
    t = t.clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * (base / orig)
    return kernels, width


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """``waveform`` [..., time] from ``orig_freq`` to ``new_freq`` Hz, as torchaudio computes it."""
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = _kernel(orig, new, waveform.dtype)
    shape = waveform.shape
    flat = waveform.reshape(-1, shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel.to(waveform.device), stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    # torchaudio takes the ceil of torch.as_tensor(new * length / orig): a float32 quotient.
    target = math.ceil(float(torch.tensor(new * length / orig, dtype=torch.float32)))
    return out[..., :target].reshape(*shape[:-1], -1)
