"""Writing WebDataset shards in the official format, byte for byte reproducibly."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import soundfile as sf
from webdataset import TarWriter


def write_shard(path: Path, samples: Iterable[tuple[str, np.ndarray, dict]], sample_rate: int = 16000) -> int:
    """Write ``(key, audio, metadata)`` samples as ``{key}.flac`` + ``{key}.json`` into a tar.

    Member times and owners are fixed so that the same samples give the same bytes.
    Returns the number of samples written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with TarWriter(str(path), mtime=0.0, user="xares", group="xares") as sink:
        for key, audio, meta in samples:
            buf = io.BytesIO()
            sf.write(buf, np.clip(audio, -1, 1).astype(np.float32), sample_rate, format="FLAC")
            sink.write({"__key__": key, "flac": buf.getvalue(), "json": json.dumps(meta, ensure_ascii=False).encode()})
            count += 1
    return count


def build_once(root: Path, stamp: dict[str, Any], build: Callable[[], None], force: bool = False) -> Path:
    """Run ``build`` to fill ``root`` unless it already holds a build with the same ``stamp``.

    The stamp (generator version, seed, sizes) is written last, so an interrupted build is redone.
    """
    marker = root / "COMPLETE.json"
    if not force and marker.is_file() and json.loads(marker.read_text()) == stamp:
        return root
    if root.exists():
        shutil.rmtree(root)
    build()
    marker.write_text(json.dumps(stamp))
    return root
