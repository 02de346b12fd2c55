"""Frozen-encoder feature cache: each frozen encoder's output computed once per clip, on disk.

Entries live under ``<root>/<encoder id>/<clip id[:2]>/<clip id>.safetensors``:

* the encoder id hashes the encoder's class, its scalar settings (pool, n_mels, pad_to_30s, ...)
  and every weight and buffer, so another checkpoint or setting never reads these features;
* the clip id hashes the exact waveform at the package's sample rate the encoder would see (after decoding,
  resampling and any crop), so shards, recipes and fusions sharing a clip share its entry.

Entries are written atomically (:func:`~xares_fusion.atomic.atomic_write`), so concurrent
processes and runs can fill one cache. fp16 halves the disk; fp32 reproduces uncached runs exactly for
encoders whose output for a clip does not depend on the other clips of its batch. Randomly
cropped training clips are not cached (every crop differs); encoders a recipe trains, and
fusions that need every layer's output, bypass the cache.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_write
from .config.vocabulary import FEATURE_CACHE_DTYPES, FEATURE_CACHE_MODES
from .encoders.contract import declared_extras, run_encoder
from .encoders.masking import lengths_to_mask, sample_lengths
from .frontend import Stream

MODES = FEATURE_CACHE_MODES
DTYPES = dict(zip(FEATURE_CACHE_DTYPES, (torch.float16, torch.float32), strict=True))


def encoder_id(encoder: torch.nn.Module, dtype: str) -> str:
    """Hash of the encoder's class, scalar settings, weights and buffers, and the stored dtype."""
    digest = hashlib.sha256(f"{type(encoder).__module__}.{type(encoder).__qualname__}|{dtype}".encode())
    for module_name, module in encoder.named_modules():
        settings = sorted(
            (k, v)
            for k, v in vars(module).items()
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))
        )
        digest.update(f"{module_name}:{settings}".encode())
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


def clip_id(audio: torch.Tensor) -> str:
    """Hash of one clip's valid samples (float32)."""
    return hashlib.sha256(audio.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:32]


class FeatureCache:
    """Read and fill the cache for frozen encoders (``mode`` one of off, read, readwrite)."""

    def __init__(self, root: Path, mode: str = "readwrite", dtype: str = "fp16") -> None:
        if mode not in MODES:
            raise ValueError(f"feature cache mode {mode!r}: choose one of {MODES}")
        if dtype not in DTYPES:
            raise ValueError(f"feature cache dtype {dtype!r}: choose one of {sorted(DTYPES)}")
        self.root, self.mode, self.dtype = Path(root), mode, dtype
        self.hits = self.misses = 0
        self._ids: dict[int, str] = {}

    def _encoder_id(self, encoder: torch.nn.Module) -> str:
        if id(encoder) not in self._ids:
            self._ids[id(encoder)] = encoder_id(encoder, self.dtype)
        return self._ids[id(encoder)]

    def size_note(self, encoder: torch.nn.Module) -> str:
        """What one hour of audio takes on disk for this encoder, and the free space there."""
        rate = declared_extras(encoder).frame_rate or 50.0
        per_hour = 3600 * rate * encoder.output_dim * DTYPES[self.dtype].itemsize
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        return (
            f"feature cache {self.root} ({self.mode}, {self.dtype}): {type(encoder).__name__} takes about "
            f"{per_hour / 2**20:.0f} MiB per hour of audio ({rate:g} frames/s x {encoder.output_dim} dims); "
            f"{free / 2**30:.1f} GiB free"
        )

    def _path(self, encoder: torch.nn.Module, clip: str) -> Path:
        return self.root / self._encoder_id(encoder) / clip[:2] / f"{clip}.safetensors"

    def _store(self, path: Path, features: torch.Tensor) -> None:
        stored = {"features": features.to(DTYPES[self.dtype]).contiguous().cpu()}
        atomic_write(path, lambda tmp: save_file(stored, str(tmp)))

    def encode(
        self,
        encoder: torch.nn.Module,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        cacheable: list[bool] | None = None,
    ) -> Stream:
        """The frozen encoder's stream for a batch: cached clips are read, the others computed
        together (eval mode, no gradients) and, in readwrite mode, stored."""
        lengths = sample_lengths(audio, audio_mask)
        cacheable = cacheable or [True] * audio.shape[0]
        clips = [clip_id(audio[i, :n]) if ok else None for i, (n, ok) in enumerate(zip(lengths.tolist(), cacheable))]
        found: dict[int, torch.Tensor] = {}
        for i, clip in enumerate(clips):
            path = self._path(encoder, clip) if clip else None
            if path is not None and path.is_file():
                found[i] = load_file(str(path))["features"].to(audio.device, torch.float32)
        self.hits += len(found)
        missing = [i for i in range(audio.shape[0]) if i not in found]
        self.misses += len(missing)
        if missing:
            longest = int(lengths[missing].max())
            sub_audio = audio[missing, :longest]
            sub_mask = None if audio_mask is None else audio_mask[missing, :longest]
            encoder.eval()
            with torch.no_grad():
                computed = run_encoder(encoder, sub_audio, sub_mask)
            valid = computed.mask.sum(-1)
            for j, i in enumerate(missing):
                found[i] = computed.features[j, : int(valid[j])].float()
                if clips[i] and self.mode == "readwrite":
                    self._store(self._path(encoder, clips[i]), found[i])
        frames = torch.tensor([found[i].shape[0] for i in range(audio.shape[0])], device=audio.device)
        out = torch.nn.utils.rnn.pad_sequence([found[i] for i in range(audio.shape[0])], batch_first=True)
        return Stream(out, lengths_to_mask(frames, out.shape[1]), declared_extras(encoder).frame_rate)
