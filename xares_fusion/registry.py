"""One registry mechanism for encoders, projectors, metrics and LLM loaders.

An encoder reference may be
  * a registered name (``@register_encoder("logmel")``) or an entry point of the
    ``xares_fusion.encoders`` group (third-party plugins),
  * a file path: ``path/to/my_encoder.py`` or ``path/to/my_encoder.py:ClassName``
    (an XARES-LLM encoder file, one class whose name ends in ``Encoder``, loads unchanged),
  * a dotted path: ``package.module.ClassName``.

The built-in items register themselves when their package is imported. A registry names those
packages (``builtin_modules``) and imports them on its first lookup, as it loads entry points: the
registry stays the bottom layer, and the encoder catalogue includes the fusion front-ends without
``xares_fusion.encoders`` importing ``xares_fusion.fusion``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RegistryError(LookupError):
    """An unknown or unloadable name; the message lists close names and the fix."""


class Registry:
    """Name -> factory mapping with a decorator, entry points and close-match suggestions.

    ``builtin_modules``: the packages whose import registers the built-in items, imported once
    before the first lookup.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None, builtin_modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtin_modules = builtin_modules
        self._builtins_loaded = False
        self._items: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@registry.register("name")`` on a class or factory function."""

        def deco(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._items and self._items[name] is not obj:
                raise RegistryError(
                    f"{self.kind} name {name!r} is registered twice "
                    f"({self._items[name]!r} and {obj!r}); pick another name."
                )
            self._items[name] = obj
            return obj

        return deco

    def _load_builtins(self) -> None:
        # Marked loaded first: a lookup made while those packages import sees what they have
        # registered so far instead of importing them again.
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in self.builtin_modules:
            importlib.import_module(module)

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        if not self.entry_point_group:
            return {}
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.entry_point_group)}

    def names(self) -> list[str]:
        """Every registered name: built-ins, decorated items and entry points."""
        self._load_builtins()
        return sorted(set(self._items) | set(self._entry_points()))

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._items or name in self._entry_points()

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered as ``name``; raises with close names when there is none."""
        self._load_builtins()
        if name in self._items:
            return self._items[name]
        eps = self._entry_points()
        if name in eps:
            return eps[name].load()
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Registered: {self.names()}")


ENCODERS = Registry(
    "encoder",
    entry_point_group="xares_fusion.encoders",
    builtin_modules=("xares_fusion.encoders", "xares_fusion.fusion"),
)
PROJECTORS = Registry("projector")
METRICS = Registry("metric")
LLMS = Registry("LLM")

register_encoder = ENCODERS.register
register_projector = PROJECTORS.register
METRIC_DIRECTIONS: dict[str, bool] = {}
"""Per registered metric: True when a larger score is better (declared by :func:`register_metric`)."""


def register_metric(name: str, higher_is_better: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(predictions, references, **metric_args) -> float`` as metric ``name``, with its
    direction (the leaderboard marks each row's best value by it; every official score is
    higher-is-better)."""
    register = METRICS.register(name)

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        registered = register(fn)
        METRIC_DIRECTIONS[name] = higher_is_better
        return registered

    return decorate


register_llm = LLMS.register


def load_module_from_file(path: Path) -> Any:
    """Import a Python file as a module with importlib.util (its directory need not be a package).

    The module is registered in ``sys.modules`` under a name derived from the path and contents,
    so loader workers can unpickle its classes and an edited file is never served stale. Loading
    the same file again returns that module: executing it twice would run its ``@register_*``
    decorators on new classes under names already taken.
    """
    digest = hashlib.sha256(str(path.resolve()).encode() + path.read_bytes()).hexdigest()[:12]
    module_name = f"xares_fusion_user_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RegistryError(f"{path}: cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise RegistryError(f"{path}: importing the file failed: {type(err).__name__}: {err}") from err
    return module


def _pick_encoder_class(module: Any, path: Path) -> Any:
    """The one class defined in ``module`` whose name ends in 'Encoder' (XARES-LLM convention)."""
    classes = [obj for name, obj in vars(module).items() if inspect.isclass(obj) and obj.__module__ == module.__name__]
    encoders = [c for c in classes if c.__name__.endswith("Encoder")]
    if len(encoders) == 1:
        return encoders[0]
    candidates = encoders or classes
    names = [c.__name__ for c in candidates]
    if not candidates:
        raise RegistryError(
            f"{path}: defines no class. Define a torch.nn.Module subclass (e.g. 'class MyEncoder(torch.nn.Module)')."
        )
    raise RegistryError(
        f"{path}: {len(candidates)} candidate classes {names}; name the one to use as '{path}:{names[0]}'."
    )


def resolve_encoder_factory(ref: str) -> Callable[..., Any]:
    """The class or factory an encoder reference points to (see module docstring)."""
    if ref in ENCODERS:
        return ENCODERS.get(ref)
    file_part, _, class_part = ref.partition(":")
    if file_part.endswith(".py"):
        path = Path(file_part).expanduser()
        if not path.is_file():
            raise RegistryError(f"encoder file {file_part!r} not found (working directory: {Path.cwd()}).")
        module = load_module_from_file(path)
        if class_part:
            if not hasattr(module, class_part):
                raise RegistryError(f"{path}: has no attribute {class_part!r}.")
            return getattr(module, class_part)
        return _pick_encoder_class(module, path)
    if "." in ref and not ref.startswith("."):
        module_name, _, attr = ref.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise RegistryError(
                f"encoder {ref!r}: cannot import module {module_name!r} ({err}). "
                f"Registered encoders: {ENCODERS.names()}"
            ) from err
        if not hasattr(module, attr):
            raise RegistryError(f"encoder {ref!r}: module {module_name!r} has no attribute {attr!r}.")
        return getattr(module, attr)
    return ENCODERS.get(ref)  # raises with close-name suggestions


def encoder_display_name(ref: str) -> str:
    """A short name for output directories: the registered name, the file stem or the class."""
    file_part, _, class_part = ref.partition(":")
    if file_part.endswith(".py"):
        return class_part or Path(file_part).stem
    return ref.rsplit(".", 1)[-1] if "." in ref and ref not in ENCODERS else ref
