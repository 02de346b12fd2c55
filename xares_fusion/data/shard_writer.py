"""Writing WebDataset shards in the official format, byte for byte reproducibly."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from webdataset import TarWriter

from ..atomic import atomic_write, atomic_write_text
from ..constants import SAMPLE_RATE
from ..paths import built_directory

MARKER = "COMPLETE.json"


def write_shard(path: Path, samples: Iterable[tuple[str, np.ndarray, dict]], sample_rate: int = SAMPLE_RATE) -> int:
    """Write ``(key, audio, metadata)`` samples as ``{key}.flac`` + ``{key}.json`` into a tar.

    Member times and owners are fixed so that the same samples give the same bytes.
    Returns the number of samples written.
    """
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with TarWriter(str(tmp), mtime=0.0, user="xares", group="xares") as sink:
            for key, audio, meta in samples:
                buf = io.BytesIO()
                sf.write(buf, np.clip(audio, -1, 1).astype(np.float32), sample_rate, format="FLAC")
                sink.write(
                    {"__key__": key, "flac": buf.getvalue(), "json": json.dumps(meta, ensure_ascii=False).encode()}
                )
                count += 1

    atomic_write(path, write)
    return count


def build_once(root: Path, stamp: dict[str, Any], build: Callable[[Path], None], force: bool = False) -> Path:
    """``root`` filled by ``build(directory)`` unless it already holds a build with the same ``stamp``.

    The stamp (generator version, seed, sizes) goes into ``root/COMPLETE.json``; the build and
    its stamp are staged beside ``root`` and renamed into place together
    (:func:`~xares_fusion.paths.built_directory`), so an interrupted build is redone and a stale
    one is replaced.
    """
    stamp_text = json.dumps(stamp)

    def current(directory: Path) -> bool:
        marker = directory / MARKER
        return marker.is_file() and json.loads(marker.read_text()) == stamp

    def fill(directory: Path) -> None:
        build(directory)
        atomic_write_text(directory / MARKER, stamp_text)

    if root.exists() and (force or not current(root)):
        shutil.rmtree(root)
    return built_directory(root, fill, current)
