"""Where a result came from: package versions, git revision, machine and device."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

# The packages whose versions can move a score.
PACKAGES = (
    "xares-fusion",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "webdataset",
    "jiwer",
    "scikit-learn",
    "numpy",
)


def _git_revision() -> str | None:
    """HEAD of the checkout this package runs from, '-dirty' when tracked files changed; None outside git."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(device: str) -> dict[str, Any]:
    """Package versions, git revision, machine and device."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "git_revision": _git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
