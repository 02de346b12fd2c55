"""Where xares-fusion keeps data and built artefacts (no torch here)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def data_home() -> Path:
    """Root of downloaded and generated shards.

    ``$XARES_FUSION_DATA_HOME``, else ``$XARES_DATA_HOME`` (the official pipeline's variable, so
    an existing download is reused), else ``./xares_data`` as officially.
    """
    for var in ("XARES_FUSION_DATA_HOME", "XARES_DATA_HOME"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return Path.cwd() / "xares_data"


def cache_home() -> Path:
    """Built models and other derived artefacts: ``$XARES_FUSION_CACHE`` or ``~/.cache/xares_fusion``."""
    return Path(os.environ.get("XARES_FUSION_CACHE", Path.home() / ".cache" / "xares_fusion")).expanduser()


def built_model(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_home()/models/<name>``, filled by ``build(directory)`` on first use only.

    The build writes into a private staging directory that is renamed into place when complete,
    so an interrupted build leaves nothing that looks finished, and concurrent processes (one per
    GPU) each either build or reuse, never read a half-written copy. ``name`` carries a version:
    bump it when the build changes.
    """
    target = cache_home() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".building-{name}-"))
    try:
        build(staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():  # not a concurrent finisher: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
