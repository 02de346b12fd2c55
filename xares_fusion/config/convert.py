"""Dataclass <- dict conversion with errors that name file and field; dict form and hashing back.

Why a small hand-written converter instead of a schema library: the configs are a handful of flat
dataclasses, and every error must say *which YAML file*, *which dotted field* and *what to write
instead*; doing that over plain dataclasses keeps the layer dependency-free and the messages ours.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from typing import Any, Union

from .validation import ConfigError, field_path


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert_union(value: Any, args: tuple, where: str, source: str) -> Any:
    if value is None and type(None) in args:
        return None
    errors: list[ConfigError] = []
    for option in args:
        if option is type(None):
            continue
        try:
            return _convert(value, option, where, source)
        except ConfigError as err:
            errors.append(err)
    raise (
        errors[0]
        if len(errors) == 1
        else ConfigError(
            f"{source}: field '{where}': {_describe(value)} matches none of "
            f"{[getattr(a, '__name__', str(a)) for a in args]}"
        )
    )


def _convert_scalar(value: Any, hint: Any, where: str, source: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: field '{where}' must be true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{source}: field '{where}' must be a whole number, got {_describe(value)}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML reads "1e-4" (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: field '{where}' must be a number, got {_describe(value)}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{source}: field '{where}' must be a string, got {_describe(value)}")
    return value


def _convert(value: Any, hint: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(value, args, where, source)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(
                f"{source}: field '{where}' must be a mapping of "
                f"{[f.name for f in dataclasses.fields(hint)]}, got {_describe(value)}"
            )
        return from_dict(hint, value, source, where)
    if origin is list:
        if isinstance(value, (str, int, float)) and args and args[0] is str:
            value = [str(value)]  # a single shard pattern may be written without a list
        if not isinstance(value, list):
            raise ConfigError(f"{source}: field '{where}' must be a list, got {_describe(value)}")
        return [_convert(v, args[0] if args else Any, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: field '{where}' must be a mapping, got {_describe(value)}")
        value_hint = args[1] if len(args) == 2 else Any
        return {str(k): _convert(v, value_hint, f"{where}.{k}", source) for k, v in value.items()}
    return _convert_scalar(value, hint, where, source)


def from_dict(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown or missing fields raise :class:`ConfigError`.

    A dataclass with a ``validate(source, prefix)`` method is validated once built.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        where = field_path(prefix, str(key))
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{source}: unknown field '{where}'.{hint} Valid fields here: {names}")
        kwargs[key] = _convert(value, hints[key], where, source)
    for f in dataclasses.fields(cls):
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.init and no_default and f.name not in kwargs:
            raise ConfigError(f"{source}: missing required field '{field_path(prefix, f.name)}'. Add it to the file.")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(source, prefix)
    return obj


def to_dict(obj: Any) -> dict:
    """Plain-dict form of a config dataclass (for records and hashing)."""
    return dataclasses.asdict(obj)


def stable_hash(payload: Any, length: int = 12) -> str:
    """Short, order-independent hash of JSON-serialisable data."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
