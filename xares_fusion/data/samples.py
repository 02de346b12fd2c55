"""Samples from WebDataset shards in the official format: ``{key}.{flac|wav|...}`` + ``{key}.json``.

Bad samples (undecodable or non-finite audio, no label under any key, empty audio, an unreadable
tar member) are skipped and counted, never silently dropped: callers report the counts per reason,
with the first few places (``shard:member``) of each, and fail when a task loses too many.

Every sample carries its :class:`~xares_fusion.data.shards.ClipRef` (shard + key, and the span of
a training crop), the feature cache's name for its audio; a ``lookup`` lets a caller serve a
sample's features from the cache instead of decoding it.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from webdataset.tariterators import group_by_keys, tar_file_expander

from ..constants import SAMPLE_RATE
from .audio import AUDIO_EXTENSIONS, decode_audio, random_crop
from .shards import ClipRef

DEFAULT_TEXT_KEYS = ("captions", "caption", "text")


@dataclass
class Sample:
    """One clip: its key, 16 kHz mono audio and every reference text found under the label key.

    ``clip`` names the audio for the feature cache (None: a crop that is no slice of the whole
    clip); ``features`` holds what a ``lookup`` served instead of decoding (``audio`` is then None).
    """

    key: str
    audio: np.ndarray | None
    texts: list[str]
    shard: str
    index: int = 0
    clip: ClipRef | None = None
    features: Any = None


SKIP_EXAMPLES = 3
"""Places (``shard:member``) kept per skip reason: enough to find the fault, bounded for a bad set."""


@dataclass
class SkipCounter:
    """Counts skipped samples per reason, how many were seen in all, and the first
    :data:`SKIP_EXAMPLES` places (``shard:member``) of each reason."""

    seen: int = 0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, where: str | None = None) -> None:
        """Count one skipped sample; ``where`` names it (``shard:member``)."""
        self.reasons[reason] += 1
        if where is not None:
            self._example(reason, where)

    def _example(self, reason: str, where: str) -> None:
        shown = self.examples.setdefault(reason, [])
        if len(shown) < SKIP_EXAMPLES and where not in shown:
            shown.append(where)

    def merge(self, other: dict[str, Any]) -> None:
        """Add the counts of another counter's :meth:`as_dict` (another process's or worker's)."""
        self.seen += other["seen"]
        self.reasons.update(other["reasons"])
        for reason, places in other.get("examples", {}).items():
            for where in places:
                self._example(reason, where)

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def as_dict(self) -> dict[str, Any]:
        """Seen, skipped, the count per reason and the first places of each (``result.json``'s ``skips``)."""
        return {
            "seen": self.seen,
            "skipped": self.skipped,
            "reasons": dict(self.reasons),
            "examples": {reason: list(places) for reason, places in self.examples.items()},
        }

    def summary(self) -> str:
        """Each reason with its count and first places, for an error message."""
        return "; ".join(
            f"{reason}: {count}" + (f" (e.g. {', '.join(self.examples[reason])})" if reason in self.examples else "")
            for reason, count in self.reasons.most_common()
        )


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


def _file_rate(data: bytes) -> int | None:
    """The audio file's own sample rate from its header (None when unreadable: decoding reports it)."""
    try:
        return int(sf.info(io.BytesIO(data)).samplerate)
    except Exception:
        return None


def decode_clip(
    data: bytes,
    sample_rate: int,
    crop_seconds: float | None,
    rng: np.random.Generator | None,
    whole: ClipRef,
) -> tuple[np.ndarray, ClipRef | None]:
    """:func:`~xares_fusion.data.audio.decode_audio` (same audio, same random draws) and the
    ClipRef of the result: ``whole`` for an uncropped clip; for a random training crop of a file
    already at ``sample_rate`` its span in the whole clip (nothing resamples, so crop-then-
    resample equals resample-then-crop); None for a crop of a file at another rate, which the
    official order crops before resampling, so it is no slice of the whole decoded clip."""
    if crop_seconds is None or _file_rate(data) != sample_rate:
        audio, cropped = decode_audio(data, sample_rate, crop_seconds, rng)
        return audio, None if cropped else whole
    if rng is None:
        raise ValueError("a random crop needs rng")
    audio, _ = decode_audio(data, sample_rate)
    crop = random_crop(audio, int(crop_seconds * sample_rate), rng)
    if crop.shape[-1] == audio.shape[-1]:
        return audio, whole
    # random_crop returns a view of the contiguous clip: its start is its offset in memory.
    start = (crop.ctypes.data - audio.ctypes.data) // audio.itemsize
    return np.ascontiguousarray(crop), ClipRef(whole.shard, whole.key, (int(start), int(crop.shape[-1])))


def _raw_samples(path: Path, counter: SkipCounter) -> Iterator[dict[str, Any]]:
    """The shard's samples; an unreadable part of the tar is counted, named by the last member read
    before it (a truncated or damaged tar has no name for what follows)."""
    last: list[str] = []

    def handler(exn: Exception) -> bool:
        place = f"after member {last[-1]}" if last else "before its first member"
        counter.skip(f"unreadable tar member ({type(exn).__name__})", f"{path}:{place}")
        return True

    def members(stream: Any) -> Iterator[dict[str, Any]]:
        for member in tar_file_expander([{"url": str(path), "stream": stream}], handler=handler):
            if "fname" in member:  # not the end-of-shard marker
                last[:] = [member["fname"]]
            yield member

    with open(path, "rb") as stream:
        yield from group_by_keys(members(stream), handler=handler)


def iter_samples(
    paths: list[Path],
    key: str | None,
    counter: SkipCounter,
    sample_rate: int = SAMPLE_RATE,
    owns: Callable[[int], bool] | None = None,
    crop_seconds: float | None = None,
    rng: np.random.Generator | None = None,
    lookup: Callable[[ClipRef], Any] | None = None,
) -> Iterator[Sample]:
    """Samples of the given shards in order; ``Sample.index`` numbers the labelled ones.

    ``crop_seconds`` with ``rng`` (training only): each clip is randomly cropped to at most that
    long before it is resampled, as officially; evaluation never crops.

    ``owns(position)`` (position of the sample in the shard stream) chooses which samples this
    process decodes and counts, e.g. one process's share of an eval set. Samples it does not own
    are still yielded, with ``audio=None``, so that every process sees the same rows in order;
    so are owned samples whose audio could not be decoded (counted as skipped).

    ``lookup(clip)`` (evaluation and cache-features, never with crops): the cached features of
    an owned clip, or None; a served sample is not decoded, ``features`` holds what was served.
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
        shard, member = raw["__url__"], raw["__key__"]
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
                    else f"no label under '{key}' or {'/'.join(DEFAULT_TEXT_KEYS)}",
                    f"{shard}:{member}.{audio_name or 'json'}",
                )
            continue
        if mine and len(clean) < len(texts):
            counter.skip(f"{CORRUPT_TEXT} (one of several references; the others are used)", f"{shard}:{member}.json")
        texts = clean
        index += 1
        whole = ClipRef(raw["__url__"], raw["__key__"])
        sample = Sample(key=raw["__key__"], audio=None, texts=texts, shard=raw["__url__"], index=index, clip=whole)
        if not mine:
            yield sample
            continue
        counter.seen += 1
        sample.features = lookup(whole) if lookup is not None and crop_seconds is None else None
        if sample.features is not None:
            yield sample
            continue
        where = f"{shard}:{member}.{audio_name}"
        try:
            audio, sample.clip = decode_clip(raw[audio_name], sample_rate, crop_seconds, rng, whole)
        except Exception:
            audio = None
            counter.skip("undecodable audio", where)
        if audio is not None and audio.size == 0:
            audio = None
            counter.skip("empty audio", where)
        if audio is not None and not np.isfinite(audio).all():
            # NaN/Inf samples (a float WAV written from a broken pipeline) would turn into NaN features.
            audio = None
            counter.skip("non-finite audio", where)
        sample.audio = audio
        yield sample


def audio_seconds(paths: list[Path]) -> tuple[int, float]:
    """Clips and seconds of audio in shards, read from the audio files' headers (nothing is
    decoded): what a pass over every clip will process. Unreadable members are left out."""
    clips, seconds = 0, 0.0
    for raw in (s for path in paths for s in _raw_samples(path, SkipCounter())):
        name = next((ext for ext in AUDIO_EXTENSIONS if ext in raw), None)
        try:
            info = sf.info(io.BytesIO(raw[name])) if name else None
        except Exception:
            info = None
        if info is not None and info.samplerate > 0:
            clips += 1
            seconds += info.frames / info.samplerate
    return clips, seconds
