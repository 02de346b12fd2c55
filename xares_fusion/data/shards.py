"""Shard lists: brace expansion, globs, and resolution into the data home, with clear errors.

No torch here: resolving where data lives is plain path work.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from braceexpand import braceexpand

from ..config import DataSpec
from ..paths import data_home


class MissingDataError(FileNotFoundError):
    """Shards a task needs are not on disk; the message lists them, where we looked and the fix."""


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
        shown = "\n  ".join(str(p) for p in resolved.missing[:10])
        more = f"\n  ... and {len(resolved.missing) - 10} more" if len(resolved.missing) > 10 else ""
        raise MissingDataError(
            f"task '{task_name}' ({split}): {len(resolved.missing)} of {len(resolved.paths)} shard files "
            f"are missing under {resolved.base}:\n  {shown}{more}\n"
            f"Fix: {fix_command(spec, task_name)}"
        )
    return resolved.paths
