"""Provenance names the device a result was computed on: GPU model and count, CUDA, driver, cuDNN,
NCCL, world size, or the CPU model; every field present and None (never an error) where unknown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from xares_fusion.results.provenance import device_provenance, provenance

GPU_FIELDS = ("gpu_model", "cuda_runtime", "driver_version", "cudnn_version", "nccl_version")


def test_cpu_provenance_has_every_field_and_no_gpu_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = provenance("cpu")
    assert info["device"] == "cpu" and info["world_size"] == 1 and info["gpu_count"] == 0
    assert all(info[name] is None for name in GPU_FIELDS)
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["versions"]["torch"]  # the fields before stay


def test_gpu_fields_come_from_torch_cuda_and_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    names = {0: "NVIDIA H100 80GB HBM3", 3: "NVIDIA H100 80GB HBM3 (rank 3)"}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: names[index])
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 26, 2))
    monkeypatch.setenv("WORLD_SIZE", "8")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 570.124.06\necho 570.124.06\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    info = device_provenance("cuda:3")
    assert info == {
        "device": "cuda:3",
        "world_size": 8,
        "cpu_model": info["cpu_model"],
        "gpu_model": "NVIDIA H100 80GB HBM3 (rank 3)",
        "gpu_count": 8,
        "cuda_runtime": "12.8",
        "driver_version": "570.124.06",
        "cudnn_version": 91002,
        "nccl_version": "2.26.2",
    }


def test_gpu_without_nvidia_smi_or_nccl_leaves_those_fields_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: None)

    def no_nccl() -> tuple[int, ...]:
        raise RuntimeError("PyTorch built without NCCL")

    monkeypatch.setattr(torch.cuda.nccl, "version", no_nccl)
    monkeypatch.setenv("PATH", "/nonexistent")
    info = device_provenance(torch.device("cuda", 0))
    assert info["gpu_model"] == "NVIDIA H200" and info["gpu_count"] == 1
    assert info["driver_version"] is None and info["nccl_version"] is None and info["cudnn_version"] is None
