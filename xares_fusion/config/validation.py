"""The config error and the checks every spec's ``validate`` shares (:class:`ConfigError` is one of the
kinds of :mod:`xares_fusion.errors`).

Each message names the file (``source``), the dotted field and what to write instead, so a
wrong value in any YAML file is found without reading code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["ConfigError", "field_path", "require_at_least", "require_one_of"]


def field_path(prefix: str, name: str) -> str:
    """Dotted name of field ``name`` inside the section at ``prefix`` ('' at the top level)."""
    return f"{prefix}.{name}" if prefix else name


def require_at_least(source: str, where: str, value: float, minimum: float, note: str = "") -> None:
    """Raise unless ``value >= minimum``; ``note`` says what the bound means (e.g. ' (1 = off)')."""
    if value < minimum:
        raise ConfigError(f"{source}: field '{where}' must be >= {minimum}{note}, got {value}.")


def require_one_of(source: str, where: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise unless ``value`` is one of ``allowed`` (a vocabulary such as PRECISIONS)."""
    if value not in allowed:
        raise ConfigError(f"{source}: field '{where}' must be one of {list(allowed)}, got {value!r}.")
