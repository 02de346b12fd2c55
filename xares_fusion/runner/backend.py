"""Where and how a run computes: its process group, its Accelerator and the deterministic mode."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState

from ..config.vocabulary import PRECISIONS

# accelerate calls fp32 "no"; keyed by the recipe vocabulary, so a precision is added in one place.
PRECISION_TO_ACCELERATE = dict(zip(PRECISIONS, ("no", "bf16", "fp16"), strict=True))


def use_cpu() -> bool:
    """CPU when no CUDA device exists or ACCELERATE_USE_CPU asks for it. Accelerate only forms a
    multi-process CPU group (gloo) when told it runs on CPU, so this is passed explicitly."""
    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def process_state() -> PartialState:
    """The process group of this run (one process, or all of `torchrun` / `accelerate launch`)."""
    return PartialState(cpu=use_cpu())


def make_accelerator(precision: str) -> Accelerator:
    """The Accelerator of a run in ``precision`` (an ``optim.precision`` value).

    accelerate keeps one global state per process and refuses a second Accelerator of another
    precision; ``bench`` measures several precisions in one process, so that state is reset here
    (the process group, held apart in ``PartialState``, stays)."""
    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=PRECISION_TO_ACCELERATE[precision], cpu=use_cpu())


def set_deterministic(on: bool) -> None:
    """The official run.py always runs in deterministic mode (its --benchmark flag defaults to
    true): deterministic algorithms, cuDNN deterministic and not benchmarking, and the cuBLAS
    workspace setting those need (read when CUDA initialises, so set before the first matmul).
    An operation without a deterministic kernel warns here instead of stopping the run, as it
    would officially: every model the official pipeline runs computes the same either way, and
    a fusion front-end that needs such a kernel still trains (its warning names the operation)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False
