"""Where xares-fusion keeps data and built artefacts (no torch here)."""

from __future__ import annotations

import os
from pathlib import Path


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
