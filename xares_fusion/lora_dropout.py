"""LoRA dropout whose CPU masks come from numpy's PCG64 (``speed.lora_dropout_rng: pcg64``).

torch's CPU dropout draws its Bernoulli mask one value at a time from the Mersenne Twister of its
global generator, under a lock: about 2 ms for the 320k values one LoRA layer of SmolLM2-135M sees
in a batch of four, a fifth of a bf16 training step on a CPU (docs/performance.md). numpy's PCG64
fills a buffer with raw 64-bit words several times faster; each 32-bit half decides one value.
No library offers a faster CPU dropout draw that is seeded from torch's generator, hence this
module.

The masks have torch's distribution -- each value kept with probability 1 - p (to 2^-32: a value
is dropped when its 32 random bits fall below round(p * 2^32)), then scaled by 1 / (1 - p) in the
input's dtype, the arithmetic of torch's dropout -- from another random stream.
Each mask's seed is drawn from torch's global generator, so a seeded run is reproducible and a
resumed one replays the same masks (a checkpoint keeps that generator's state); but the numbers
are not those of torch's dropout, so the option is a recorded departure. On other devices torch's
own dropout runs: it already draws masks in parallel there.
"""

from __future__ import annotations

import numpy as np
import torch


class PCG64Dropout(torch.nn.Module):
    """Inverted dropout with probability ``p``; CPU masks drawn from numpy's PCG64."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self._drop_below = np.uint32(min(round(p * 2**32), 2**32 - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, training=True)
        seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
        count = x.numel()
        bits = np.random.PCG64(seed).random_raw((count + 1) // 2).view(np.uint32)[:count]
        keep = torch.from_numpy(bits >= self._drop_below).reshape(x.shape)
        return x * keep.to(x.dtype).div_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_pcg64_dropout(model: torch.nn.Module) -> None:
    """Replace every LoRA dropout of a peft ``model`` by :class:`PCG64Dropout` of the same
    probability (peft keeps them in each LoRA layer's ``lora_dropout``). Draws no random numbers."""
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if isinstance(dropout, torch.nn.Dropout):
                dropouts[name] = PCG64Dropout(dropout.p)
