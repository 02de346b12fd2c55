"""Samples from WebDataset shards in the official format: ``{key}.{flac|wav|...}`` + ``{key}.json``.

Bad samples (undecodable audio, no label under any key, empty audio) are skipped and counted,
never silently dropped: callers report the counts and fail when a task loses too many.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_expander

from ..constants import SAMPLE_RATE
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
    cropped: bool = False  # a random training crop of a longer clip


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

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "skipped": self.skipped, "reasons": dict(self.reasons)}


def _as_texts(value: Any) -> list[str] | None:
    """A label value as reference texts, converted as officially (``_retrieve_key_or_not``): a
    string is one text (even empty: an empty label is a row, as officially), a number or boolean
    its ``str`` ("3", "True"), a list one text per element; an empty list or anything else means
    "no label here, try the next key". List elements that are not strings or numbers have no
    text (officially they crash the run) and are left out."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (int, float)):
        return [str(value)]
    if isinstance(value, list):
        texts = [str(v) for v in value if isinstance(v, (str, int, float))]
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


def is_corrupted_text(text: str) -> bool:
    """The official label-text filter (xares-llm ``_is_corrupted_text``), applied to every
    reference text in training and evaluation: more than 3 combining marks (U+0301..U+036F),
    more than half the characters not alphanumeric (spaces count), or a text longer than 10
    characters made of fewer than 4 distinct ones. An empty text passes."""
    if not text:
        return False
    combining = sum(1 for c in text if 0x0300 < ord(c) < 0x0370)
    alphanumeric = sum(1 for c in text if c.isalnum())
    if combining > 3 or (len(text) - alphanumeric) / len(text) > 0.5:
        return True
    return len(text) > 10 and len(set(text)) < 4


CORRUPT_TEXT = "label text fails the official corruption filter"


def _raw_samples(path: Path, counter: SkipCounter) -> Iterator[dict[str, Any]]:
    def handler(exn: Exception) -> bool:
        counter.skip(f"unreadable tar member ({type(exn).__name__})")
        return True

    with open(path, "rb") as stream:
        yield from group_by_keys(
            tar_file_expander([{"url": str(path), "stream": stream}], handler=handler), handler=handler
        )


def iter_samples(
    paths: list[Path],
    key: str | None,
    counter: SkipCounter,
    sample_rate: int = SAMPLE_RATE,
    owns: Callable[[int], bool] | None = None,
    crop_seconds: float | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[Sample]:
    """Samples of the given shards in order; ``Sample.index`` numbers the labelled ones.

    ``crop_seconds`` with ``rng`` (training only): each clip is randomly cropped to at most that
    long before it is resampled, as officially; evaluation never crops.

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
        clean = [t for t in texts if not is_corrupted_text(t)] if texts else None
        audio_name = next((ext for ext in AUDIO_EXTENSIONS if ext in raw), None)
        if not clean or audio_name is None:
            if mine:
                counter.seen += 1
                counter.skip(
                    "no audio file"
                    if audio_name is None
                    else "unreadable json"
                    if meta is None
                    else CORRUPT_TEXT
                    if texts
                    else f"no label under '{key}' or {'/'.join(DEFAULT_TEXT_KEYS)}"
                )
            continue
        if mine and len(clean) < len(texts):
            counter.skip(f"{CORRUPT_TEXT} (one of several references; the others are used)")
        texts = clean
        index += 1
        sample = Sample(key=raw["__key__"], audio=None, texts=texts, shard=raw["__url__"], index=index)
        if not mine:
            yield sample
            continue
        counter.seen += 1
        try:
            audio, sample.cropped = decode_audio(raw[audio_name], sample_rate, crop_seconds, rng)
        except Exception:
            audio = None
            counter.skip("undecodable audio")
        if audio is not None and audio.size == 0:
            audio = None
            counter.skip("empty audio")
        sample.audio = audio
        yield sample
