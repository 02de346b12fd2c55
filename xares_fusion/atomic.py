"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written one;
and verified reads: a file damaged after it was written is named, never parsed into wrong values.

Every artefact (checkpoints, result records, caches, predictions, markers) goes through
:func:`atomic_write`: the content is written to a private temporary file in the target's directory
and renamed over the target (``os.replace`` is atomic within one file system), so a crash or a
concurrent writer never leaves a truncated file under the final name.

A rename does not protect a file from what happens to it afterwards (a disk filling up during a
copy, a bad sector, a hand edit). Artefacts that are read back to skip work -- checkpoints, final
weights, completion markers, score-cache entries, predictions -- are written with
``checksum=True``: a sidecar ``<file>.sha256`` records the file's size and SHA-256, and
:func:`verified_load` checks both before it parses the bytes. The sidecar is written after the file,
so a process killed between the two leaves a complete file without a sidecar, which is read
unverified (as are files written before sidecars existed); a parse error still names the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import CacheError

T = TypeVar("T")
SIDECAR_SUFFIX = ".sha256"


class CorruptFileError(CacheError):
    """A file read back does not match its sidecar checksum or cannot be parsed; ``path`` names it."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


def sidecar(path: Path) -> Path:
    """The checksum sidecar of ``path``: ``<path>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None], checksum: bool = False) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then rename it to ``path``.

    The parent directory is created if needed; on any error the temporary file is removed and
    ``path`` is left as it was. ``checksum``: also write the sidecar :func:`verified_load` checks.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        digest = {"sha256": _sha256(tmp), "size": tmp.stat().st_size} if checksum else None
        # A sidecar left by an earlier version of the file would fail the new one: removed first.
        sidecar(path).unlink(missing_ok=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if digest is not None:
        atomic_write_text(sidecar(path), json.dumps(digest) + "\n")
    return path


def atomic_write_text(path: Path, text: str, checksum: bool = False) -> Path:
    """:func:`atomic_write` of a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), checksum)


def verified_load(path: Path, parse: Callable[[bytes], T]) -> T:
    """``parse(bytes of path)``, after checking the bytes against the sidecar when there is one.

    Raises :class:`CorruptFileError` naming the file when its size or SHA-256 differs from the
    sidecar's, the sidecar is unreadable, or ``parse`` fails on the bytes (a file with no sidecar
    is checked by its parse alone). A missing file raises ``FileNotFoundError`` as usual.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        expected = json.loads(sidecar(path).read_bytes())
        size, digest = int(expected["size"]), str(expected["sha256"])
    except FileNotFoundError:
        size = digest = None
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(path, f"its checksum file {sidecar(path)} is unreadable ({err})") from err
    if size is not None and len(data) != size:
        raise CorruptFileError(path, f"{len(data)} bytes where {size} were written (truncated or damaged)")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise CorruptFileError(path, "its SHA-256 differs from the one recorded when it was written (damaged)")
    try:
        return parse(data)
    except Exception as err:  # any parser's error on damaged bytes: the file is what is wrong
        raise CorruptFileError(path, f"cannot be read ({type(err).__name__}: {err})") from err
