"""Samples from WebDataset shards in the official format: ``{key}.{flac|wav|...}`` + ``{key}.json``.

Bad samples (undecodable audio, no label under any key, empty audio) are skipped and counted,
never silently dropped: callers report the counts and fail when a task loses too many.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_expander

from .audio import AUDIO_EXTENSIONS, decode_audio

DEFAULT_TEXT_KEYS = ("captions", "caption", "text")


@dataclass
class Sample:
    """One clip: its key, 16 kHz mono audio and every reference text found under the label key."""

    key: str
    audio: np.ndarray | None
    texts: list[str]
    shard: str
    index: int = 0


@dataclass
class SkipCounter:
    """Counts skipped samples per reason, and how many were seen in all."""

    seen: int = 0
    reasons: Counter = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        self.reasons[reason] += 1

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def merge(self, other: "SkipCounter") -> None:
        self.seen += other.seen
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "skipped": self.skipped, "reasons": dict(self.reasons)}


def _as_texts(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value] if value.strip() else None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, list):
        texts = [str(v) for v in value if isinstance(v, (str, int, float)) and str(v).strip()]
        return texts or None
    return None


def texts_from_metadata(meta: dict[str, Any], key: str | None) -> list[str] | None:
    """Reference texts under ``key`` (``a;b`` = first present), then captions/caption/text.

    A list value yields one text per element (one evaluation row per reference caption).
    """
    candidates = (key.split(";") if key else []) + list(DEFAULT_TEXT_KEYS)
    for name in candidates:
        texts = _as_texts(meta.get(name))
        if texts:
            return texts
    return None


def _raw_samples(path: Path, counter: SkipCounter) -> Iterator[dict[str, Any]]:
    def handler(exn: Exception) -> bool:
        counter.skip(f"unreadable tar member ({type(exn).__name__})")
        return True

    with open(path, "rb") as stream:
        yield from group_by_keys(tar_file_expander([{"url": str(path), "stream": stream}], handler=handler),
                                 handler=handler)


def iter_samples(paths: list[Path], key: str | None, counter: SkipCounter, sample_rate: int = 16000,
                 owns: Callable[[int], bool] | None = None) -> Iterator[Sample]:
    """Samples of the given shards in order; ``Sample.index`` numbers the labelled ones.

    ``owns(position)`` (position of the sample in the shard stream) chooses which samples this
    process decodes and counts, e.g. one process's share of an eval set. Samples it does not own
    are still yielded, with ``audio=None``, so that every process sees the same rows in order;
    so are owned samples whose audio could not be decoded (counted as skipped).
    """
    index = -1
    for position, raw in enumerate(s for path in paths for s in _raw_samples(path, counter)):
        mine = owns is None or owns(position)
        meta_bytes = raw.get("json")
        try:
            meta = json.loads(meta_bytes) if meta_bytes else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = None
        texts = texts_from_metadata(meta, key) if isinstance(meta, dict) else None
        audio_name = next((ext for ext in AUDIO_EXTENSIONS if ext in raw), None)
        if texts is None or audio_name is None:
            if mine:
                counter.seen += 1
                counter.skip("no audio file" if audio_name is None else
                             "unreadable json" if meta is None else
                             f"no label under '{key}' or {'/'.join(DEFAULT_TEXT_KEYS)}")
            continue
        index += 1
        sample = Sample(key=raw["__key__"], audio=None, texts=texts, shard=raw["__url__"], index=index)
        if not mine:
            yield sample
            continue
        counter.seen += 1
        try:
            audio = decode_audio(raw[audio_name], sample_rate)
        except Exception:  # noqa: BLE001 - any decoder failure means this one clip is unusable
            audio = None
            counter.skip("undecodable audio")
        if audio is not None and audio.size == 0:
            audio = None
            counter.skip("empty audio")
        sample.audio = audio
        yield sample
