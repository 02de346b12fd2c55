"""Where a result came from: package versions, git revision, machine and device.

No torch import here (results load anywhere): the device fields read the torch that the run
has already loaded, and are None in a process without it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
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


def _cpu_model() -> str | None:
    """The CPU's model name (Linux /proc/cpuinfo, else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _driver_version() -> str | None:
    """The NVIDIA driver version from nvidia-smi; None where it is absent or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else None


def device_provenance(device: object) -> dict[str, Any]:
    """The device a run computed on: its name (``cuda:0``, ``cpu``), the process count, the CPU
    model, and on a GPU its model and count, the CUDA runtime torch was built with, the driver,
    cuDNN and NCCL versions (None where not known, never an error)."""
    torch = sys.modules.get("torch")
    info: dict[str, Any] = {
        "device": str(device),
        "world_size": _world_size(torch),
        "cpu_model": _cpu_model(),
        "gpu_model": None,
        "gpu_count": 0,
        "cuda_runtime": None,
        "driver_version": None,
        "cudnn_version": None,
        "nccl_version": None,
    }
    if torch is None or not torch.cuda.is_available():
        return info
    index = torch.device(str(device)).index or 0
    info.update(
        gpu_model=torch.cuda.get_device_name(index),
        gpu_count=torch.cuda.device_count(),
        cuda_runtime=torch.version.cuda,
        driver_version=_driver_version(),
        cudnn_version=torch.backends.cudnn.version(),
    )
    try:
        info["nccl_version"] = ".".join(str(part) for part in torch.cuda.nccl.version())
    except (AttributeError, RuntimeError):
        pass  # a build without NCCL
    return info


def _world_size(torch: Any) -> int:
    """Processes of the run: the process group's size, else torchrun's WORLD_SIZE, else 1."""
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def provenance(device: str) -> dict[str, Any]:
    """Package versions, git revision, machine and device (:func:`device_provenance`)."""
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
        **device_provenance(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
