"""Shard lists: brace expansion, globs, and resolution into the data home, with clear errors;
and what names a clip for the feature cache (:class:`ClipRef`, the shard's content hash).

No torch here: resolving where data lives is plain path work.
"""

from __future__ import annotations

import glob
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand

from ..config import DataSpec
from ..errors import DataError
from ..paths import data_home

SIZES_FILE = ".xares_fusion_sizes.json"
"""Written by ``fetch-data`` beside a hub repo's files: file name -> bytes, as the hub reported them."""


@dataclass
class MissingShards:
    """The missing shard files of one task split."""

    task: str
    split: str
    spec: DataSpec
    missing: list[Path]
    total: int
    base: Path


class MissingDataError(DataError, FileNotFoundError):
    """Shards the run needs are not on disk: the message lists every task split with missing files,
    where we looked, and one command that provides them all (with the download size when known)."""

    gaps: tuple[MissingShards, ...] = ()

    @classmethod
    def of(cls, gaps: list[MissingShards]) -> MissingDataError:
        """The error for these task splits' missing files."""
        err = cls(_missing_message(gaps))
        err.gaps = tuple(gaps)
        return err

    @classmethod
    def combine(cls, errors: list[MissingDataError]) -> MissingDataError:
        """One error for the gaps of several (a run reports every missing task at once)."""
        return cls.of([gap for err in errors for gap in err.gaps])


def _download_size(gaps: list[MissingShards]) -> int | None:
    """Bytes to download for the hub files among ``gaps``, when ``fetch-data`` recorded every size."""
    total = 0
    for gap in gaps:
        sizes_file = repo_base(gap.spec.repo_id) / SIZES_FILE
        sizes = json.loads(sizes_file.read_text()) if sizes_file.is_file() else {}
        for path in gap.missing:
            name = _shard_name(path, gap.base)
            if name not in sizes:
                return None
            total += sizes[name]
    return total


def _shard_name(path: Path, base: Path) -> str:
    """A shard as its task names it: relative to the split's base directory where it lies there."""
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _missing_message(gaps: list[MissingShards]) -> str:
    lines = [f"{sum(len(g.missing) for g in gaps)} shard file(s) of {len(gaps)} task split(s) are missing:"]
    for gap in gaps:
        shown = ", ".join(str(p) for p in gap.missing[:3])
        more = f", ... ({len(gap.missing) - 3} more)" if len(gap.missing) > 3 else ""
        lines.append(
            f"  task '{gap.task}' ({gap.split}): {len(gap.missing)} of {gap.total} shard files are missing: "
            f"{shown}{more}"
        )
    fetched = [g for g in gaps if g.spec.repo_id and not g.spec.generator]
    fixes = []
    if fetched:
        tasks = list(dict.fromkeys(g.task for g in fetched))
        splits = {g.split for g in fetched}
        split = f" --split {splits.pop()}" if len(splits) == 1 else ""
        size = _download_size(fetched)
        fixes.append(
            f"xares-fusion fetch-data {' '.join(tasks)}{split}   (from the hub dataset repos "
            f"{sorted({g.spec.repo_id for g in fetched})}; "
            + (f"{size / 1e9:.2f} GB; " if size is not None else "download size unknown until the hub is asked; ")
            + "or point $XARES_DATA_HOME at an existing copy)"
        )
    fixes += list(dict.fromkeys(fix_command(g.spec, g.task) for g in gaps if g not in fetched))
    return "\n".join(lines) + "\nFix: " + "\n     ".join(fixes)


@dataclass
class ResolvedShards:
    paths: list[Path]
    missing: list[Path]
    base: Path


def repo_base(repo_id: str) -> Path:
    """Local copy of a hub dataset repo: ``<data home>/<repo_id>``."""
    return data_home() / repo_id


def shard_base(spec: DataSpec) -> Path:
    """Directory relative shard names are resolved against."""
    if spec.repo_id:
        return repo_base(spec.repo_id)
    if spec.generator:
        return data_home() / "generated" / spec.generator
    return Path.cwd()


def expand_patterns(patterns: list[str]) -> list[str]:
    """Brace-expand every pattern, keeping the order given and dropping duplicates."""
    seen: dict[str, None] = {}
    for pattern in patterns:
        for name in braceexpand(pattern):
            seen.setdefault(name, None)
    return list(seen)


def resolve_shards(spec: DataSpec) -> ResolvedShards:
    """Local paths of a split's shards, and which of them are missing."""
    base = shard_base(spec)
    paths, missing = [], []
    for name in expand_patterns(spec.shards):
        path = Path(name).expanduser()
        path = path if path.is_absolute() else base / path
        if any(c in name for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path)))
            paths.extend(matches)
            if not matches:
                missing.append(path)
        else:
            paths.append(path)
            if not path.is_file():
                missing.append(path)
    return ResolvedShards(paths=paths, missing=missing, base=base)


def fix_command(spec: DataSpec, task_name: str) -> str:
    """The one command that provides a split's missing shards."""
    if spec.generator:
        return f"xares-fusion make-{spec.generator}"
    if spec.repo_id:
        return (
            f"xares-fusion fetch-data {task_name}   (downloads from the hub dataset repo "
            f"'{spec.repo_id}'; or point $XARES_DATA_HOME at an existing copy)"
        )
    return f"fix the shard paths of task '{task_name}' (they are relative to the working directory)"


def require_shards(spec: DataSpec, task_name: str, split: str) -> list[Path]:
    """Resolved shard paths; raises :class:`MissingDataError` naming every missing file and the fix."""
    resolved = resolve_shards(spec)
    if resolved.missing:
        raise MissingDataError.of(
            [MissingShards(task_name, split, spec, resolved.missing, len(resolved.paths), resolved.base)]
        )
    return resolved.paths


_HASH_LOCK = threading.Lock()
_SHARD_HASHES: dict[tuple[str, int, int], str] = {}


def shard_content_hash(path: Path) -> str:
    """SHA-256 of a shard file's bytes (32 hex digits): the feature cache's name for the shard.

    Hashed once per process for each (path, size, mtime_ns): a shard replaced at the same path
    gets a new name (and misses), a shard copied elsewhere keeps its cached features.
    """
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:  # the evaluation's read-ahead thread and the main thread may both ask
        if memo_key not in _SHARD_HASHES:
            with open(path, "rb") as file:
                _SHARD_HASHES[memo_key] = hashlib.file_digest(file, "sha256").hexdigest()[:32]
        return _SHARD_HASHES[memo_key]


@dataclass(frozen=True)
class ClipRef:
    """Which audio a batch row holds, as the feature cache names it: the sample ``key``
    (webdataset ``__key__``) inside the ``shard`` file, the whole clip decoded at 16 kHz, or
    with ``span`` = (start, length) in samples the exact slice of it that a random training crop
    took. A row whose audio is no such slice (a crop of a resampled file) has no ClipRef."""

    shard: str
    key: str
    span: tuple[int, int] | None = None

    @property
    def shard_hash(self) -> str:
        """The shard's content hash (computed on first use: runs without a cache never hash)."""
        return shard_content_hash(Path(self.shard))
