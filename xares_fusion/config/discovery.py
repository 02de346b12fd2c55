"""Where task and recipe files are found, and how a name or a path resolves to one of them."""

from __future__ import annotations

import difflib
import functools
import os
from pathlib import Path

import yaml

from .validation import ConfigError

CHECKOUT = Path(__file__).resolve().parents[2]
"""The directory holding the shipped tasks/ and recipes/ (the package's parent)."""


def search_roots() -> list[Path]:
    """Directories holding tasks/ and recipes/: $XARES_FUSION_CONFIG_PATH entries, then the checkout."""
    roots = [Path(p) for p in os.environ.get("XARES_FUSION_CONFIG_PATH", "").split(os.pathsep) if p]
    roots.append(CHECKOUT)
    return roots


def _aliases(path: Path) -> list[str]:
    try:
        return _aliases_of(path, path.stat().st_mtime_ns)
    except OSError:
        return []


@functools.lru_cache(maxsize=4096)
def _aliases_of(path: Path, mtime_ns: int) -> list[str]:
    # Cached per file version: every name lookup indexes every YAML file, and parsing them all
    # again for each lookup made `validate` take a minute.
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []  # reported with file and line when the file itself is loaded
    aliases = data.get("aliases", []) if isinstance(data, dict) else []
    return [str(a) for a in aliases] if isinstance(aliases, list) else []


def index(kind: str) -> dict[str, Path]:
    """Name -> file for every YAML under ``<root>/<kind>/``: file stems, relative paths and the
    ``aliases`` a file declares (first root wins)."""
    found: dict[str, Path] = {}
    for root in search_roots():
        base = root / kind
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.yaml")):
            for name in [path.stem, str(path.relative_to(base).with_suffix("")), *_aliases(path)]:
                found.setdefault(name, path)
    return found


def known_names(kind: str) -> list[str]:
    """Short names of the shipped tasks (``kind='tasks'``) or recipes (``kind='recipes'``)."""
    return sorted({p.stem for p in index(kind).values()})


def resolve_config_path(ref: str, kind: str) -> Path:
    """A YAML path, or the name of a shipped task/group/recipe; unknown names suggest close ones."""
    path = Path(ref).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{ref}: file not found.")
        return path
    names = index(kind)
    if ref in names:
        return names[ref]
    close = difflib.get_close_matches(ref, list(names), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"unknown {kind[:-1]} {ref!r}.{hint} Known: {known_names(kind)}; or pass a path to a .yaml file.")
