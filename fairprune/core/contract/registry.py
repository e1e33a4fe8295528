"""The plugin manager: loads built-in and third-party plugins and resolves names.

Built-in plugins are the modules in ``DEFAULT_PLUGINS``, registered through the
same hooks as third-party packages, which publish an entry point in the group
``fairprune``. A ``Registry`` is an ordinary object (``Registry()`` in a test
fixture gives a fresh one); ``get_registry()`` returns the process-wide one.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs, protocols
from .errors import DuplicatePluginError, PluginContractError, UnknownPluginError
from .plugin import configure

logger = logging.getLogger(__name__)

DEFAULT_PLUGINS: tuple[str, ...] = (
    "fairprune.architectures.glu",
    "fairprune.architectures.fused_gate_up",
    "fairprune.plugins.importance",
    "fairprune.plugins.bias_metrics",
    "fairprune.plugins.axes",
    "fairprune.plugins.collectors",
    "fairprune.plugins.scorers",
    "fairprune.plugins.pruners",
    "fairprune.plugins.sources",
    "fairprune.plugins.evaluators",
    "fairprune.plugins.report",
    "fairprune.plugins.objectives",
    "fairprune.plugins.methods",
)

#: registration hook -> plugin kind(s) it fills
HOOK_KINDS: dict[str, str] = {
    "fairprune_register_architectures": "architectures",
    "fairprune_register_importance_metrics": "importance_metrics",
    "fairprune_register_bias_metrics": "bias_metrics",
    "fairprune_register_bias_axes": "bias_axes",
    "fairprune_register_collectors": "collectors",
    "fairprune_register_scorers": "scorers",
    "fairprune_register_pruners": "pruners",
    "fairprune_register_model_sources": "model_sources",
    "fairprune_register_evaluators": "evaluators",
    "fairprune_register_bias_objectives": "bias_objectives",
    "fairprune_register_methods": "methods",
}

#: the protocol each kind must satisfy; collectors split into sites and poolings
PROTOCOLS: dict[str, type] = {
    "architectures": protocols.ArchitectureAdapter,
    "importance_metrics": protocols.ImportanceMetric,
    "bias_metrics": protocols.BiasMetric,
    "bias_axes": protocols.BiasAxis,
    "sites": protocols.Site,
    "poolings": protocols.Pooling,
    "scorers": protocols.Scorer,
    "pruners": protocols.Pruner,
    "model_sources": protocols.ModelSource,
    "evaluators": protocols.Evaluator,
    "bias_objectives": protocols.BiasObjective,
    "methods": protocols.Method,
}
KINDS: tuple[str, ...] = tuple(PROTOCOLS)

#: attributes a plugin may leave out; consumers read them with these defaults
OPTIONAL_ATTRIBUTES: dict[str, Any] = {"needs_activations": False, "needs_calibration": False, "priority": 0,
                                       "fixed_width": False, "needs_groups": False, "headlines": ()}
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DISABLE_ENV = "FAIRPRUNE_PLUGINS_DISABLE"
STRICT_ENV = "FAIRPRUNE_PLUGINS_STRICT"


@dataclass
class Entry:
    """One registered object with where it came from."""

    kind: str
    name: str
    obj: Any
    plugin: str
    package: str

    @property
    def description(self) -> str:
        return str(getattr(self.obj, "description", ""))


@dataclass
class BrokenPlugin:
    """A plugin that failed to import or registered an invalid object."""

    plugin: str
    package: str
    error: str
    #: "load" (import or hook validation failed; the plugin is not registered) or "register" (a bad object)
    stage: str = "register"


@dataclass
class Conflict:
    """One name registered by two plugins: neither is used, and asking for the name is an error."""

    first: Entry
    second: Entry

    @property
    def message(self) -> str:
        return (f"{singular(self.first.kind)} {self.first.name!r} is registered twice: by plugin "
                f"{self.first.plugin!r} ({self.first.package}) and by plugin {self.second.plugin!r} "
                f"({self.second.package}); disable one with {DISABLE_ENV}={self.second.plugin}")


@dataclass
class Registry:
    """Name -> implementation tables for every plugin kind, built from a pluggy manager.

    ``disabled`` names plugins (entry-point names or module names) to skip;
    ``strict`` re-raises plugin failures instead of warning (for CI).
    """

    load_entrypoints: bool = True
    disabled: frozenset[str] | None = None
    strict: bool | None = None
    extra_plugins: tuple[Any, ...] = ()
    entries: dict[str, dict[str, Entry]] = field(default_factory=dict, init=False)
    #: (kind, name) registered by more than one plugin -> the clash; a lookup of that name raises its message
    conflicts: dict[tuple[str, str], Conflict] = field(default_factory=dict, init=False)
    broken: list[BrokenPlugin] = field(default_factory=list, init=False)
    packages: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.disabled is None:
            self.disabled = frozenset(n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip())
        if self.strict is None:
            self.strict = os.environ.get(STRICT_ENV, "") not in ("", "0", "false")
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            if module_name in self.disabled or module_name.rsplit(".", 1)[-1] in self.disabled:
                continue
            self.pm.register(importlib.import_module(module_name), name=module_name)
            self.packages[module_name] = "fairprune"
        for plugin in self.extra_plugins:
            self.add_plugin(plugin)
        if self.load_entrypoints:
            self._load_entrypoints()
        self.pm.check_pending()
        self.rebuild()

    # -- loading -----------------------------------------------------------------------------
    def add_plugin(self, plugin: Any, name: str | None = None, package: str | None = None) -> None:
        """Register an in-process plugin (a module or object with hook implementations).

        A hook implementation that matches no hook specification (a misspelled
        hook) raises ``PluginContractError`` naming it, and a name another plugin
        already registered raises ``DuplicatePluginError`` naming both; in either
        case the plugin is not registered.
        """
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in (self.disabled or ()):
            return
        problem = self._register_checked(plugin, name)
        if problem:
            raise PluginContractError(f"plugin {name!r} {problem}")
        self.packages[name] = package or _package_of(plugin)
        if not self.entries:
            return
        try:
            self.rebuild()
            clash = next((c.message for c in self.conflicts.values() if name in (c.first.plugin, c.second.plugin)),
                         None)
        except DuplicatePluginError as exc:  # strict mode raises on the first conflict
            clash = str(exc)
        if clash:
            self.pm.unregister(plugin)
            self.rebuild()
            raise DuplicatePluginError(clash)

    def _register_checked(self, plugin: Any, name: str) -> str | None:
        """Register ``plugin`` and validate its hooks against the specs; on a problem unregister it and say why."""
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            return "has an invalid hook implementation: " + " ".join(str(exc).split())
        unknown = unknown_hooks(self.pm, plugin)
        if unknown:
            self.pm.unregister(plugin)
            return "; ".join(unknown)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:  # anything the check above missed
            self.pm.unregister(plugin)
            return "has an invalid hook implementation: " + " ".join(str(exc).split())
        return None

    def _load_entrypoints(self) -> None:
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            dist = ep.dist.name if ep.dist is not None else "?"
            if ep.name in self.disabled or dist in self.disabled:
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # a broken plugin (even one calling sys.exit) must not
                # take the others down
                self._fail(ep.name, dist, f"failed to import: {type(exc).__name__}: {exc}", exc, stage="load")
                continue
            problem = self._register_checked(plugin, ep.name)
            if problem:
                self._fail(ep.name, dist, problem, stage="load")
                continue
            self.packages[ep.name] = dist

    def _fail(self, plugin: str, package: str, message: str, exc: BaseException | None = None,
              stage: str = "register") -> None:
        message = " ".join(message.split())  # one line, whatever the exception text looked like
        self.broken.append(BrokenPlugin(plugin, package, message, stage))
        logger.warning("fairprune plugin %r (%s) %s", plugin, package, message)
        if self.strict:
            if exc is not None and not isinstance(exc, SystemExit):
                raise exc
            raise PluginContractError(f"plugin {plugin!r} ({package}) {message}")

    def rebuild(self) -> None:
        """Call every registration hook, plugin by plugin, and rebuild the name tables."""
        self.entries = {kind: {} for kind in KINDS}
        self.conflicts = {}
        self.broken = [b for b in self.broken if b.stage == "load"]
        for hook_name, kind in HOOK_KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            for impl in reversed(caller.get_hookimpls()):  # registration order
                self._call_registration(impl, kind)

    def _call_registration(self, impl: Any, kind: str) -> None:
        plugin_name = impl.plugin_name
        package = self.packages.get(plugin_name, "?")
        collected: list[Any] = []
        try:
            impl.function(register=collected.append)
        except (Exception, SystemExit) as exc:
            self._fail(plugin_name, package, f"raised in {impl.function.__name__}: {type(exc).__name__}: {exc}", exc)
            return
        for obj in collected:
            real_kind = kind
            if kind == "collectors":
                real_kind = {"site": "sites", "pooling": "poolings"}.get(getattr(obj, "collector_kind", ""), "")
                if not real_kind:
                    self._fail(plugin_name, package, f"registered collector {obj!r} whose collector_kind "
                                                     "is neither 'site' nor 'pooling'")
                    continue
            problem = contract_problem(real_kind, obj)
            if problem:
                self._fail(plugin_name, package, f"registered an invalid {singular(real_kind)} {obj!r}: {problem}")
                continue
            self._add(Entry(real_kind, obj.name, obj, plugin_name, package))

    def _add(self, entry: Entry) -> None:
        """Add ``entry``; a name registered twice is reported like a broken plugin and removed, so only
        runs that ask for that name fail (with the same message)."""
        table, key = self.entries[entry.kind], (entry.kind, entry.name)
        if key in self.conflicts:
            first = self.conflicts[key].first
        elif entry.name in table:
            first = table.pop(entry.name)
        else:
            table[entry.name] = entry
            return
        conflict = self.conflicts[key] = Conflict(first, entry)
        self._fail(entry.plugin, entry.package, conflict.message, DuplicatePluginError(conflict.message))

    # -- lookup ------------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._table(kind))

    def items(self, kind: str) -> list[Entry]:
        return [self._table(kind)[n] for n in self.names(kind)]

    def entry(self, kind: str, name: str) -> Entry:
        table = self._table(kind)
        if (kind, name) in self.conflicts:
            raise DuplicatePluginError(self.conflicts[kind, name].message)
        if name not in table:
            known = sorted(table)
            close = difflib.get_close_matches(name, known, n=1)
            raise UnknownPluginError(singular(kind), name, known, close[0] if close else None)
        return table[name]

    def get(self, kind: str, name: str) -> Any:
        """The registered object of ``kind`` called ``name``; unknown names list the known ones."""
        return self.entry(kind, name).obj

    def create(self, kind: str, name: str, params: dict[str, Any] | None = None) -> Any:
        """The registered object, configured with ``params`` validated by its ``Params`` model."""
        return configure(self.get(kind, name), params)

    def _table(self, kind: str) -> dict[str, Entry]:
        if kind not in self.entries:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds are: {', '.join(KINDS)}")
        return self.entries[kind]

    @property
    def hook(self) -> Any:
        """The pluggy hook relay, for lifecycle hooks (``registry.hook.fairprune_run_started(...)``)."""
        return self.pm.hook


def singular(kind: str) -> str:
    """The human name of one plugin of ``kind``: ``bias_axes`` -> ``bias axis``."""
    return {"bias_axes": "bias axis"}.get(kind, kind.removesuffix("s").replace("_", " "))


def contract_problem(kind: str, obj: Any) -> str | None:
    """Why ``obj`` does not satisfy the protocol of ``kind``, or None when it does."""
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        return f"'name' must be a lowercase snake_case or kebab-case string, got {name!r}"
    if not isinstance(getattr(obj, "description", None), str):
        return "missing a 'description' string"
    proto = PROTOCOLS[kind]
    for attr in _protocol_attributes(proto):
        if attr in ("name", "description") or attr in OPTIONAL_ATTRIBUTES:
            continue
        if not hasattr(obj, attr):
            return f"missing attribute {attr!r}"
    for method_name, method in _protocol_methods(proto).items():
        impl = getattr(obj, method_name, None)
        if not callable(impl):
            return f"missing method {method_name}()"
        wanted = [p for p in inspect.signature(method).parameters if p != "self"]
        try:
            inspect.signature(impl).bind(*wanted)
        except TypeError:
            return f"{method_name}() must accept ({', '.join(wanted)})"
        except ValueError:  # builtins without signatures
            pass
    return None


def unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> list[str]:
    """One message per hook implementation of ``plugin`` that matches no hook specification.

    pluggy accepts such an implementation silently unless ``check_pending`` is
    called; this names it and suggests the closest specified hook.
    """
    specified = [name for name in dir(hookspecs) if name.startswith(f"{hookspecs.PROJECT}_")]
    problems = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.spec is not None:
            continue
        close = difflib.get_close_matches(caller.name, specified, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; hooks are: {', '.join(specified)}"
        problems.append(f"implements {caller.name!r}, which is not a fairprune hook{hint}")
    return problems


def _protocol_methods(proto: type) -> dict[str, Any]:
    return {k: v for k, v in vars(proto).items() if inspect.isfunction(v) and not k.startswith("_")}


def _protocol_attributes(proto: type) -> list[str]:
    return list(getattr(proto, "__annotations__", {}))


def _package_of(plugin: Any) -> str:
    module = getattr(plugin, "__name__", None) if inspect.ismodule(plugin) else type(plugin).__module__
    top = (module or "?").split(".")[0]
    try:
        dists = metadata.packages_distributions().get(top)
    except Exception:
        dists = None
    return dists[0] if dists else top


_REGISTRY: Registry | None = None


def default_registry(registry: Registry | None) -> Registry:
    """``registry`` itself, or the process-wide one (``get_registry()``) when None: how every function that takes
    an optional ``registry`` reaches the default one."""
    return registry if registry is not None else get_registry()


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def reset_registry(registry: Registry | None = None) -> None:
    """Replace (or drop, to rebuild lazily) the process-wide registry; for tests and embedding."""
    global _REGISTRY
    _REGISTRY = registry
