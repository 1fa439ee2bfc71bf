"""Discovery and lookup of plugins through ``harmkit`` entry points."""

from __future__ import annotations

import difflib
import importlib
import traceback
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import HarmkitError
from .interfaces import KINDS
from .params import check_params, parse_param_value  # noqa: F401 - part of this module's API

ENTRY_POINT_GROUP = "harmkit"
# Harmonizers share one namespace because method strings ("gan+combat") name them.
HARMONIZER_KINDS = ("image-harmonizer", "feature-harmonizer")


@dataclass(frozen=True)
class PluginInfo:
    """One registered implementation."""

    name: str
    kind: str
    cls: type[Any]  # a subclass of the kind's base class (checked when registered)
    distribution: str
    version: str
    description: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class PluginLoadError:
    """An entry point that could not be loaded, with the reason."""

    entry_point: str
    distribution: str
    error: str
    details: str


class Registry:
    """All plugins found through entry points, by kind and name."""

    def __init__(self) -> None:
        self.plugins: dict[tuple[str, str], PluginInfo] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.errors: list[PluginLoadError] = []
        # names claimed by more than one distribution: looking them up is an error naming both
        self.conflicts: dict[tuple[str, str], str] = {}
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)

    # -- loading -------------------------------------------------------------
    def load_entry_points(self) -> "Registry":
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist_name, dist_version = _distribution_of(ep)
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.errors.append(
                    PluginLoadError(
                        ep.name,
                        dist_name,
                        f"{type(exc).__name__}: {exc}",
                        traceback.format_exc(),
                    )
                )
                continue
            self.register_module(module, dist_name, dist_version, ep.name)
        return self

    def register_module(self, module: Any, distribution: str, version: str, entry_point: str = "") -> None:
        """Register the hook implementations of ``module`` and the classes they return."""
        if self.manager.is_registered(module):
            return
        self.manager.register(module, name=entry_point or getattr(module, "__name__", None))
        for kind, hook_name in hookspecs.HOOKS_BY_KIND.items():
            impl = getattr(module, hook_name, None)
            if impl is None:
                continue
            try:
                classes = list(impl() or [])
            except Exception as exc:
                self.errors.append(
                    PluginLoadError(
                        entry_point,
                        distribution,
                        f"{type(exc).__name__}: {exc}",
                        traceback.format_exc(),
                    )
                )
                continue
            for cls in classes:
                try:
                    self._add(kind, cls, distribution, version)
                except HarmkitError as exc:  # a bad class or a name conflict; the other classes still load
                    self.errors.append(PluginLoadError(entry_point, distribution, str(exc), ""))

    def _add(self, kind: str, cls: type, distribution: str, version: str) -> None:
        base = KINDS[kind]
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise HarmkitError(f"plugin distribution {distribution}: {cls!r} is not a {base.__name__} subclass")
        name = getattr(cls, "name", "")
        if not name:
            raise HarmkitError(f"plugin distribution {distribution}: {cls.__name__} has no 'name' attribute")
        namespace = "harmonizer" if kind in HARMONIZER_KINDS else kind
        for label in (name, *getattr(cls, "aliases", ())):
            existing = self._lookup(namespace, label)
            if existing is not None and existing.cls is not cls:
                message = (
                    f"two plugins claim the name {label!r}: {existing.cls.__name__} from distribution "
                    f"{existing.distribution} and {cls.__name__} from distribution {distribution}; "
                    f"uninstall one of them"
                )
                self.conflicts[(namespace, label)] = message
                raise HarmkitError(message)
        info = PluginInfo(
            name,
            kind,
            cls,
            distribution,
            version,
            getattr(cls, "description", ""),
            tuple(getattr(cls, "aliases", ())),
        )
        self.plugins[(namespace, name)] = info
        for alias in info.aliases:
            self.aliases[(namespace, alias)] = name

    def _lookup(self, namespace: str, name: str) -> PluginInfo | None:
        name = self.aliases.get((namespace, name), name)
        return self.plugins.get((namespace, name))

    # -- queries -------------------------------------------------------------
    def all(self) -> list[PluginInfo]:
        return sorted(self.plugins.values(), key=lambda p: (p.kind, p.name))

    def names(self, kinds: tuple[str, ...]) -> list[str]:
        return sorted(p.name for p in self.plugins.values() if p.kind in kinds) + sorted(
            alias
            for (ns, alias), target in self.aliases.items()
            if (info := self._lookup(ns, target)) is not None and info.kind in kinds
        )

    def get(self, name: str, kinds: tuple[str, ...] | str) -> PluginInfo:
        """Find a plugin by name or alias among ``kinds``; unknown names list what exists."""
        if isinstance(kinds, str):
            kinds = (kinds,)
        namespaces = {"harmonizer" if k in HARMONIZER_KINDS else k for k in kinds}
        for namespace in namespaces:
            if (namespace, name) in self.conflicts:
                raise HarmkitError(self.conflicts[(namespace, name)])
        for namespace in namespaces:
            info = self._lookup(namespace, name)
            if info is not None and info.kind in kinds:
                return info
        available = self.names(kinds)
        hint = difflib.get_close_matches(name, available, n=1)
        message = f"unknown {' or '.join(kinds)} {name!r}"
        if hint:
            message += f"; did you mean {hint[0]!r}?"
        message += f" Available: {', '.join(available) if available else 'none installed'}"
        broken = [e for e in self.errors]
        if broken:
            message += ". Plugins that failed to load: " + ", ".join(f"{e.entry_point} ({e.error})" for e in broken)
        raise HarmkitError(message)


_registry: Registry | None = None


def get_registry(reload: bool = False) -> Registry:
    """The process-wide plugin registry, loaded from entry points on first use."""
    global _registry
    if _registry is None or reload:
        importlib.invalidate_caches()
        _registry = Registry().load_entry_points()
    return _registry


def _distribution_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"], dist.version


def list_plugins() -> list[PluginInfo]:
    """Every registered plugin: name, kind, class, providing distribution and version, description.

    Plugins that failed to import are in ``get_registry().errors``.
    """
    return get_registry().all()


def get_harmonizer(name: str, **params: Any):
    """Instantiate the image or feature harmonizer called ``name`` (or an alias) with ``params``.

    >>> combat = get_harmonizer("combat", eb=True)   # doctest: +SKIP
    """
    info = get_registry().get(name, HARMONIZER_KINDS)
    return info.cls(**params)


def get_extractor(name: str = "radiomics", **params: Any):
    """Instantiate the feature extractor called ``name`` with ``params``."""
    info = get_registry().get(name, "feature-extractor")
    return info.cls(**params)


def get_evaluator(name: str, **params: Any):
    """Instantiate the evaluator called ``name`` with ``params``."""
    info = get_registry().get(name, "evaluator")
    return info.cls(**params)


# -- strict parameters -----------------------------------------------------------

#: Plugin kinds that take ``--param PLUGIN.NAME=VALUE``: harmonizers and evaluators.
PARAM_KINDS: tuple[str, ...] = (*HARMONIZER_KINDS, "evaluator")


def check_plugin_params(
    params: Any, kinds: tuple[str, ...] = PARAM_KINDS, option: str = "--param"
) -> dict[str, dict[str, Any]]:
    """Check ``{plugin: {name: value}}`` against the registered plugins; return it keyed by canonical plugin names.

    An unknown plugin, an unknown parameter or a value of the wrong type is a
    :class:`HarmkitError` naming ``option``, the plugin and the parameter,
    with a close match when there is one. Aliases (``gan``) become the
    plugin's own name (``cyclegan``). Call it before any work starts.
    """
    if not isinstance(params, dict):
        raise HarmkitError(f"{option}: expected PLUGIN.NAME=VALUE pairs (a table per plugin), got {params!r}")
    registry = get_registry()
    checked: dict[str, dict[str, Any]] = {}
    for plugin, values in params.items():
        if not isinstance(values, dict):
            raise HarmkitError(f"{option} {plugin}: expected NAME=VALUE pairs for plugin {plugin!r}, got {values!r}")
        if not values:
            continue
        try:
            info = registry.get(str(plugin), kinds)
        except HarmkitError as exc:
            first = next(iter(values))
            raise HarmkitError(f"{option} {plugin}.{first}=...: {exc}") from None
        checked.setdefault(info.name, {}).update(check_params(info.cls, values, where=f"{option} {plugin}."))
    return checked


def load_model(path) -> Any:
    """Load any saved harmonizer; the plugin is looked up from the model's own header."""
    from pathlib import Path

    from .interfaces import read_model_document

    document = read_model_document(Path(path))
    info = get_registry().get(document["plugin"], HARMONIZER_KINDS)
    return info.cls.load(path)
