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

Plugins (packages that register items with the decorators) are imported by
:func:`import_plugins` (``--import MODULE`` and ``$XARES_FUSION_PLUGINS``) or, once installed,
through the ``xares_fusion.plugins`` entry-point group, loaded on the first lookup of any registry
(docs/plugins.md). :func:`system_identity` gives an encoder reference its canonical identity, the
same whichever way (name, file, dotted path) it names one class.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError


class RegistryError(ConfigError, LookupError):
    """An unknown or unloadable name; the message lists close names and the fix."""


class Registry:
    """Name -> factory mapping with a decorator, entry points and close-match suggestions.

    ``builtin_modules``: the packages whose import registers the built-in items, imported once
    before the first lookup.
    """

    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        builtin_modules: tuple[str, ...] = (),
        decorators: tuple[str, ...] = (),
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtin_modules = builtin_modules
        self.decorators = decorators  # the functions the built-ins register with (read by static_names)
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
        load_entry_point_plugins()

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        if not self.entry_point_group:
            return {}
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.entry_point_group)}

    def names(self) -> list[str]:
        """Every registered name: built-ins, decorated items and entry points."""
        self._load_builtins()
        return sorted(set(self._items) | set(self._entry_points()))

    def static_names(self) -> list[str]:
        """The registered names, read without importing the built-in packages (no torch): the
        string first arguments of :attr:`decorators` calls in their source files, plus the items
        registered so far and the entry points. ``list`` prints these; equal to :meth:`names`
        once the plugins are imported (tested)."""
        load_entry_point_plugins()
        found = set(self._items) | set(self._entry_points())
        for package in self.builtin_modules:
            spec = importlib.util.find_spec(package)
            for folder in (spec.submodule_search_locations or []) if spec else []:
                for source in sorted(Path(folder).rglob("*.py")):
                    found.update(names_registered_in(source, self.decorators))
        return sorted(found)

    def canonical_name(self, obj: Callable[..., Any]) -> str | None:
        """The name ``obj`` was registered under first (an alias registered later names the same
        item), or the entry point that names it, or None."""
        self._load_builtins()
        for name, item in self._items.items():
            if item is obj:
                return name
        target = f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
        return next((name for name, ep in self._entry_points().items() if ep.value == target), None)

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


def names_registered_in(source: Path, decorators: tuple[str, ...]) -> list[str]:
    """String first arguments of calls to ``decorators`` (``register_encoder("logmel")``) in a file."""
    names = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), str(source))):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if func in decorators and isinstance(node.args[0].value, str):
                names.append(node.args[0].value)
    return names


PLUGIN_GROUP = "xares_fusion.plugins"
"""Entry-point group of installed plugin packages: each entry names a module whose import registers items."""
PLUGINS_ENV = "XARES_FUSION_PLUGINS"
"""Comma-separated plugin modules the command imports before it runs (as ``--import`` does)."""
_plugins_loaded = False


def load_entry_point_plugins() -> None:
    """Import every module of the :data:`PLUGIN_GROUP` entry points, once per process (on the first
    lookup of any registry): an installed plugin's items are usable by name with no option."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as err:
            raise RegistryError(
                f"plugin {ep.name!r} (entry point {ep.value!r} of {ep.dist.name if ep.dist else 'a package'}) "
                f"failed to import: {type(err).__name__}: {err}. Fix or uninstall that package."
            ) from err


def import_plugins(modules: Iterable[str]) -> list[str]:
    """Import each plugin module (``--import MODULE``) and those of ``$XARES_FUSION_PLUGINS``, so
    the items they register are usable by name; returns the module names imported."""
    names = [*os.environ.get(PLUGINS_ENV, "").split(","), *modules]
    imported = []
    for name in (n.strip() for n in names):
        if not name or name in imported:
            continue
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise RegistryError(
                f"plugin module {name!r} (from --import or ${PLUGINS_ENV}) cannot be imported: {err}. "
                f"Fix: install its package, or add its directory to PYTHONPATH."
            ) from err
        imported.append(name)
    return imported


ENCODERS = Registry(
    "encoder",
    entry_point_group="xares_fusion.encoders",
    builtin_modules=("xares_fusion.encoders", "xares_fusion.fusion"),
    decorators=("register_encoder",),
)
PROJECTORS = Registry("projector")
METRICS = Registry("metric", builtin_modules=("xares_fusion.metrics",))
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
    imported = _module_of_file(path)
    if imported is not None:
        return imported
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


def _module_of_file(path: Path) -> Any:
    """The module already imported by its dotted name (``--import``, a plugin) from this file, or
    None: the file is not executed a second time, which would register its classes again as
    new, different classes."""
    resolved = path.resolve()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and not module.__name__.startswith("xares_fusion_user_") and Path(file).resolve() == resolved:
            return module
    return None


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


def _importable_name(obj: Any) -> str:
    """``module.qualname`` of a class or function; a class loaded from a file gets the dotted name
    the file has under a ``sys.path`` entry (as ``package.module.Class`` names it), else its path."""
    module = getattr(obj, "__module__", "")
    qualname = getattr(obj, "__qualname__", repr(obj))
    if not module.startswith("xares_fusion_user_"):
        return f"{module}.{qualname}"
    file = Path(sys.modules[module].__file__).resolve()
    roots = [root for root in (Path(entry or ".").resolve() for entry in sys.path) if file.is_relative_to(root)]
    if not roots:
        return f"{file}:{qualname}"
    root = max(roots, key=lambda r: len(r.parts))  # the innermost entry: `pkg.mod`, never `src.pkg.mod`
    return ".".join(file.relative_to(root).with_suffix("").parts) + f".{qualname}"


def system_identity(ref: str, args: dict[str, Any] | None = None) -> tuple[str, str]:
    """(identity, display name) of the encoder ``ref`` built with ``args``.

    The identity is the same whichever way ``ref`` names one class or factory: its canonical
    registered name when it is registered (the first name of an alias set), else
    ``module.qualname``, followed by the arguments as canonical JSON (sorted keys) when there are
    any. The display name is short and readable: the registered name, else the class name.
    """
    factory = resolve_encoder_factory(ref)
    registered = ENCODERS.canonical_name(factory)
    base = registered or _importable_name(factory)
    identity = base + (json.dumps(args, sort_keys=True, separators=(",", ":"), default=str) if args else "")
    return identity, registered or getattr(factory, "__name__", base)
