"""Frozen-encoder feature cache: each frozen encoder's output for a clip computed once, on disk,
in one container per (cache context, source shard).

Layout::

    <root>/<context id>/context.json        what the id stands for (for people; never read back)
    <root>/<context id>/<shard hash>.bin    the shard's clips' features: raw arrays, end to end
    <root>/<context id>/<shard hash>.idx    one JSON line per clip: key, offset, frames, bytes, digest

What keys an entry:

* the **context id** hashes the encoder identity (:func:`encoder_id`: class, scalar settings such
  as pool, n_mels or pad_to_30s, every weight and buffer, and the stored dtype) with the run's
  precision (fp32/bf16/fp16), whether TF32 matmuls are on and the device type (cpu/cuda): a
  bf16 GPU run never reads fp32 CPU features, nor the other way round;
* the **shard hash** is the shard file's content hash
  (:func:`~xares_fusion.data.shards.shard_content_hash`, once per process per path, size and
  mtime): a shard replaced at the same path misses, a copy elsewhere hits;
* the **sample key** is the clip's webdataset ``__key__`` inside the shard. A clip is thus found
  from its shard and key alone, before its audio is decoded (evaluation and ``cache-features``
  skip decoding clips whose features are cached, for a plain encoder).

Why a flat data file plus a JSON-lines index, rather than a file per clip or a safetensors file
per shard: a file per clip made ~1.1 M files per encoder for the full suite; a safetensors file
must be rewritten whole to add a clip (its header leads the file), and a shard's clips arrive
batch by batch from several processes. Here a writer appends: it takes an exclusive ``fcntl``
lock on the index, appends its arrays to the data file, closes it, then appends their index
lines. Two ranks or two runs filling one container so take turns and never interleave; a
reader takes the shared lock to read the index lines it has not seen, and an index line only
ever follows its data. These appends are the one place the package writes without
:mod:`~xares_fusion.atomic` (an appended file has no "new version" to rename into place; the
lock and the verification below give the same guarantee). A clip is one ``pread`` of raw
little-endian values at a known offset (the file is ``np.memmap``-able), with no parsing.

Verification on read: every index line carries its bytes' length and BLAKE2 digest. A truncated
data file, damaged bytes or an unreadable index line are reported once per file (a warning
naming it) and treated as a miss: the features are recomputed and, in readwrite mode, appended
again (the later index line for a key wins). Never a traceback, never wrong features.

Long clips are cached whole. A random training crop (its ClipRef has a ``span``) is served from
its whole clip's cached features only for an encoder that declares ``crop_hop`` (frame j depends
on samples [j*hop, (j+1)*hop) alone, see :class:`~xares_fusion.encoders.contract.DeclaredExtras`)
and a crop on that grid; otherwise it is computed, never stored, and counted as ``uncached``.
``hits``, ``misses`` and ``uncached`` count rows (a fusion counts one per frozen sub-encoder).

fp16 halves the disk; fp32 reproduces uncached runs exactly for encoders whose output for a clip
does not depend on the other clips of its batch. Every row a cached run sees is in the stored dtype,
the ones computed on a miss (or never stored) included, so a run gives the same numbers whether it
started with an empty cache or a full one. Encoders a recipe trains, and fusions that need
every layer's output, bypass the cache.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .atomic import atomic_write_text
from .config.vocabulary import FEATURE_CACHE_DTYPES, FEATURE_CACHE_MODES, PRECISIONS
from .encoders.contract import declared_extras, run_encoder
from .encoders.masking import lengths_to_mask, sample_lengths
from .frontend import Stream

if TYPE_CHECKING:
    from .data.shards import ClipRef

log = logging.getLogger("xares_fusion")

MODES = FEATURE_CACHE_MODES
DTYPES = dict(zip(FEATURE_CACHE_DTYPES, (torch.float16, torch.float32), strict=True))
_NUMPY_DTYPES = {"fp16": np.dtype("<f2"), "fp32": np.dtype("<f4")}


def encoder_id(encoder: torch.nn.Module, dtype: str) -> str:
    """Hash of the encoder's class, scalar settings, weights and buffers, and the stored dtype."""
    digest = hashlib.sha256(f"{type(encoder).__module__}.{type(encoder).__qualname__}|{dtype}".encode())
    for module_name, module in encoder.named_modules():
        settings = sorted(
            (k, v)
            for k, v in vars(module).items()
            # ``training`` is a mode, not a setting: the cache computes in eval mode whatever it is.
            if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool, type(None)))
        )
        digest.update(f"{module_name}:{settings}".encode())
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class PrecisionContext:
    """How the features were computed, beyond the encoder itself: the run's precision
    (``optim.precision``: fp32, bf16 or fp16), TF32 matmuls on or off, and the device type."""

    precision: str
    tf32: bool
    device: str


def context_id(encoder_identity: str, context: PrecisionContext) -> str:
    """The directory name of one encoder identity (:func:`encoder_id`) in one precision context."""
    text = json.dumps({"encoder": encoder_identity, **dataclasses.asdict(context)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


class _Container:
    """One (context, shard) container: its data file, its index, and the index lines read so far."""

    def __init__(self, stem: Path) -> None:
        self.data, self.index = stem.with_suffix(".bin"), stem.with_suffix(".idx")
        self.entries: dict[str, dict[str, Any]] = {}
        self.read_to = 0  # bytes of the index parsed so far

    def refresh(self, warn: Any) -> None:
        """Parse the index lines other writers appended since the last call."""
        try:
            size = self.index.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < self.read_to:  # the index was replaced or cut short: start over
            self.entries, self.read_to = {}, 0
        if size == self.read_to:
            return
        with open(self.index, "rb") as file:
            fcntl.flock(file, fcntl.LOCK_SH)  # no half-appended line (released on close)
            file.seek(self.read_to)
            new = file.read()
        complete = new[: new.rfind(b"\n") + 1]
        if len(complete) < len(new):  # under the shared lock no writer is mid-line: a writer died, or damage
            warn(self.index, "an incomplete last index line (skipped)")
        self.read_to += len(complete)
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
                if not isinstance(entry["key"], str) or any(
                    not isinstance(entry[name], int) for name in ("offset", "frames", "nbytes")
                ):
                    raise ValueError(line)
            except (ValueError, KeyError, TypeError):  # includes JSON and Unicode decoding errors
                warn(self.index, "an unreadable index line (skipped)")
                continue
            self.entries[entry["key"]] = entry

    def read(self, key: str, dtype: np.dtype, dim: int) -> tuple[np.ndarray | None, str | None]:
        """The features stored under ``key``, or None with what is wrong with them (None: absent)."""
        entry = self.entries.get(key)
        if entry is None:
            return None, None
        frames, nbytes = entry["frames"], entry["nbytes"]
        if nbytes != frames * dim * dtype.itemsize:
            return None, f"entry {key!r} has {nbytes} bytes for {frames} frames of {dim} values"
        try:
            fd = os.open(self.data, os.O_RDONLY)
        except FileNotFoundError:
            return None, "its data file is missing"
        try:
            payload = os.pread(fd, nbytes, entry["offset"])
        finally:
            os.close(fd)
        if len(payload) != nbytes:
            return None, f"entry {key!r} lies past the end of the data file (truncated)"
        if _digest(payload) != entry.get("digest"):
            return None, f"entry {key!r} does not match its digest (damaged)"
        return np.frombuffer(payload, dtype).reshape(frames, dim), None

    def append(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Append ``(key, [frames, dim] array)`` items under the container's lock (see the module
        docstring): the data first, then one index line per item."""
        self.data.parent.mkdir(parents=True, exist_ok=True)
        with open(self.index, "a+b") as index:
            fcntl.flock(index, fcntl.LOCK_EX)  # released when the file closes
            lines = []
            with open(self.data, "ab") as data:
                offset = data.seek(0, os.SEEK_END)
                for key, array in items:
                    payload = np.ascontiguousarray(array).tobytes()
                    data.write(payload)
                    entry = {"key": key, "offset": offset, "frames": int(array.shape[0]), "nbytes": len(payload)}
                    lines.append(json.dumps({**entry, "digest": _digest(payload)}) + "\n")
                    offset += len(payload)
            end = index.seek(0, os.SEEK_END)
            if end:
                index.seek(end - 1)
                if index.read(1) != b"\n":  # a writer died mid-line: end that line, keep ours readable
                    lines.insert(0, "\n")
            index.write("".join(lines).encode())


class FeatureCache:
    """Read and fill the cache for frozen encoders.

    ``mode``: off, read or readwrite; ``dtype``: the stored dtype (fp16 or fp32); ``precision``:
    the run's ``optim.precision``, part of the key with the TF32 setting and the device type in
    effect when features are read or computed.
    """

    def __init__(self, root: Path, mode: str = "readwrite", dtype: str = "fp16", precision: str = "fp32") -> None:
        if mode not in MODES:
            raise ValueError(f"feature cache mode {mode!r}: choose one of {MODES}")
        if dtype not in DTYPES:
            raise ValueError(f"feature cache dtype {dtype!r}: choose one of {sorted(DTYPES)}")
        if precision not in PRECISIONS:
            raise ValueError(f"feature cache precision {precision!r}: choose one of {PRECISIONS}")
        self.root, self.mode, self.dtype, self.precision = Path(root), mode, dtype, precision
        self.hits = self.misses = self.uncached = 0
        self._ids: dict[int, str] = {}
        self._containers: dict[Path, _Container] = {}
        self._warned: set[Path] = set()
        # Evaluation reads ahead in a thread while the main thread encodes: one reader at a time.
        self._lock = threading.RLock()

    def context(self, device_type: str) -> PrecisionContext:
        """The precision context features computed now on ``device_type`` belong to."""
        return PrecisionContext(self.precision, bool(torch.backends.cuda.matmul.allow_tf32), device_type)

    def _encoder_id(self, encoder: torch.nn.Module) -> str:
        if id(encoder) not in self._ids:
            self._ids[id(encoder)] = encoder_id(encoder, self.dtype)
        return self._ids[id(encoder)]

    def _directory(self, encoder: torch.nn.Module, device_type: str) -> Path:
        identity, context = self._encoder_id(encoder), self.context(device_type)
        directory = self.root / context_id(identity, context)
        if self.mode == "readwrite" and not (directory / "context.json").is_file():
            about = {
                "encoder": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
                "encoder_id": identity,
                **dataclasses.asdict(context),
            }
            atomic_write_text(directory / "context.json", json.dumps(about, indent=1) + "\n")
        return directory

    def _container(self, encoder: torch.nn.Module, clip: ClipRef, device_type: str) -> _Container:
        stem = self._directory(encoder, device_type) / clip.shard_hash
        return self._containers.setdefault(stem, _Container(stem))

    def _warn(self, path: Path, problem: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("feature cache: %s in %s; those clips are recomputed", problem, path)

    def _read(self, encoder: torch.nn.Module, clip: ClipRef, device_type: str) -> torch.Tensor | None:
        """The whole clip's verified features (float32, CPU), or None."""
        with self._lock:
            try:
                container = self._container(encoder, clip, device_type)
            except FileNotFoundError:  # the shard itself is gone: nothing to key by
                return None
            container.refresh(self._warn)
            array, problem = container.read(clip.key, _NUMPY_DTYPES[self.dtype], encoder.output_dim)
            if problem is not None:
                self._warn(container.data, problem)
        return None if array is None else torch.from_numpy(array.astype(np.float32))

    def lookup(self, encoder: torch.nn.Module, clip: ClipRef, device_type: str) -> torch.Tensor | None:
        """A whole clip's cached features (float32, CPU) before its audio is decoded, counted as a
        hit; None (counted nowhere: the clip is then decoded and :meth:`encode` counts it)."""
        features = self._read(encoder, clip, device_type) if clip.span is None else None
        if features is not None:
            self.hits += 1
        return features

    def contains(self, encoder: torch.nn.Module, clip: ClipRef, device_type: str) -> bool:
        """Whether a whole clip's features are stored and intact (counted nowhere)."""
        return clip.span is None and self._read(encoder, clip, device_type) is not None

    def stream(self, encoder: torch.nn.Module, rows: list[torch.Tensor], device: torch.device) -> Stream:
        """Per-clip features [T_i, D] as the encoder's padded stream on ``device``."""
        frames = torch.tensor([row.shape[0] for row in rows], device=device)
        out = torch.nn.utils.rnn.pad_sequence([row.to(device, torch.float32) for row in rows], batch_first=True)
        return Stream(out, lengths_to_mask(frames, out.shape[1]), declared_extras(encoder).frame_rate)

    def _serve(
        self, encoder: torch.nn.Module, clip: ClipRef | None, device_type: str
    ) -> tuple[torch.Tensor | None, str]:
        """A row's cached features and how it counts: hit, miss (computed, stored if whole) or
        uncached (computed, never stored)."""
        if clip is None:
            return None, "uncached"
        if clip.span is None:
            features = self._read(encoder, clip, device_type)
            return features, "miss" if features is None else "hit"
        hop, (start, length) = declared_extras(encoder).crop_hop, clip.span
        if hop is None or start % hop or length % hop:
            return None, "uncached"
        whole = self._read(encoder, dataclasses.replace(clip, span=None), device_type)
        if whole is None or whole.shape[0] < (start + length) // hop:
            return None, "miss"
        return whole[start // hop : (start + length) // hop], "hit"

    def encode(
        self,
        encoder: torch.nn.Module,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        clips: list[ClipRef | None] | None = None,
    ) -> Stream:
        """The frozen encoder's stream for a batch: cached clips are read, the others computed
        together (eval mode, no gradients) and, in readwrite mode, the whole clips among them
        stored. ``clips`` names each row's audio (None, or a None row: computed, not stored)."""
        device_type = audio.device.type
        clips = clips if clips is not None else [None] * audio.shape[0]
        found: dict[int, torch.Tensor] = {}
        for i, clip in enumerate(clips):
            features, outcome = self._serve(encoder, clip, device_type)
            if features is not None:
                found[i] = features.to(audio.device)
            self.hits += outcome == "hit"
            self.misses += outcome == "miss"
            self.uncached += outcome == "uncached"
        missing = [i for i in range(audio.shape[0]) if i not in found]
        if missing:
            lengths = sample_lengths(audio, audio_mask)
            longest = int(lengths[missing].max())
            sub_mask = None if audio_mask is None else audio_mask[missing, :longest]
            encoder.eval()
            with torch.no_grad():
                computed = run_encoder(encoder, audio[missing, :longest], sub_mask)
            valid = computed.mask.sum(-1)
            new: dict[int, tuple[_Container, list[tuple[str, np.ndarray]]]] = {}
            for j, i in enumerate(missing):
                # Every row is served in the stored dtype, computed or read: a run's numbers then
                # depend on its settings alone, not on how warm the cache was when it started.
                stored = computed.features[j, : int(valid[j])].to(DTYPES[self.dtype])
                found[i] = stored.float()
                clip = clips[i]
                if clip is not None and clip.span is None and self.mode == "readwrite":
                    container = self._container(encoder, clip, device_type)
                    new.setdefault(id(container), (container, []))[1].append((clip.key, stored.cpu().numpy()))
            for container, items in new.values():  # one locked append per shard of the batch
                container.append(items)
        return self.stream(encoder, [found[i] for i in range(audio.shape[0])], audio.device)

    def bytes_per_second(self, encoder: torch.nn.Module) -> float:
        """Disk bytes one second of audio takes (frames/s x dims x stored dtype; 50 frames/s when
        the encoder declares no rate)."""
        rate = declared_extras(encoder).frame_rate or 50.0
        return rate * encoder.output_dim * DTYPES[self.dtype].itemsize

    def size_note(self, encoder: torch.nn.Module) -> str:
        """What one hour of audio takes on disk for this encoder, and the free space there."""
        rate = declared_extras(encoder).frame_rate or 50.0
        per_hour = 3600 * self.bytes_per_second(encoder)
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        return (
            f"feature cache {self.root} ({self.mode}, {self.dtype}): {type(encoder).__name__} takes about "
            f"{per_hour / 2**20:.0f} MiB per hour of audio ({rate:g} frames/s x {encoder.output_dim} dims); "
            f"{free / 2**30:.1f} GiB free"
        )
