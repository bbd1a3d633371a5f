"""The plugin registry: plugins by id and type, found through entry points or registered in-process.

One entry-point group per plugin type (``monbridge.collectors`` and so on, see
``PluginType.entry_point_group``); built-in plugins use the same groups as third-party ones.
Entry points are loaded lazily, when a plugin is first asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from bridge.api import Plugin, PluginType, validate_plugin_id

__all__ = ["PluginNotFoundError", "PluginRegistry", "RegisteredPlugin"]

log = logging.getLogger("monbridge.registry")

P = TypeVar("P", bound=Plugin)


class PluginNotFoundError(LookupError):
    pass


@dataclass
class RegisteredPlugin:
    """A known plugin: a factory (class or entry point) and, once made, its instance."""

    plugin_id: str
    plugin_type: PluginType
    factory: Callable[[], Plugin] | None = None
    entry_point: EntryPoint | None = None
    instance: Plugin | None = None

    @property
    def distribution(self) -> str | None:
        """The distribution that installed the entry point (its metadata is read only when asked)."""
        dist = self.entry_point.dist if self.entry_point is not None else None
        return dist.name if dist is not None else None

    @property
    def version(self) -> str | None:
        dist = self.entry_point.dist if self.entry_point is not None else None
        return dist.version if dist is not None else None

    def load_factory(self) -> Callable[[], Plugin]:
        if self.factory is None:
            assert self.entry_point is not None
            obj = self.entry_point.load()
            if isinstance(obj, type) and not issubclass(obj, Plugin):
                raise TypeError(
                    f"entry point {self.entry_point.name!r} in group {self.plugin_type.entry_point_group!r} "
                    f"loads {obj.__module__}.{obj.__qualname__}, which is not a monbridge plugin class"
                )
            self.factory = obj
        return self.factory

    def plugin_class(self) -> type[Plugin]:
        f = self.load_factory()
        return f if isinstance(f, type) else type(self.get())

    def get(self) -> Plugin:
        if self.instance is None:
            inst = self.load_factory()()
            if not isinstance(inst, Plugin) or inst.plugin_type is not self.plugin_type:
                raise TypeError(f"plugin {self.plugin_id!r} is not a {self.plugin_type.value} plugin")
            self.instance = inst
        return self.instance


class PluginRegistry:
    """Plugins by id. ``discover()`` reads the entry points; ``register_plugin`` adds one in-process."""

    def __init__(self) -> None:
        self._plugins: dict[str, RegisteredPlugin] = {}

    def discover(self) -> PluginRegistry:
        """Register every plugin installed under the ``monbridge.*`` entry-point groups."""
        installed = entry_points()  # read once: each call reads every distribution's entry points
        for ptype in PluginType:
            for ep in installed.select(group=ptype.entry_point_group):
                try:
                    validate_plugin_id(ep.name, ptype)
                except ValueError as e:
                    log.warning("ignoring entry point %r of %s: %s", ep.name, ep.dist.name if ep.dist else "?", e)
                    continue
                if ep.name in self._plugins:
                    continue  # in-process registration wins over an entry point
                self._plugins[ep.name] = RegisteredPlugin(ep.name, ptype, entry_point=ep)
        return self

    def register_plugin(self, plugin_id: str, plugin: Plugin | type[Plugin]) -> None:
        """Register an instance (as the spec does) or a plugin class."""
        ptype = plugin.plugin_type
        validate_plugin_id(plugin_id, ptype)
        if isinstance(plugin, type):
            self._plugins[plugin_id] = RegisteredPlugin(plugin_id, ptype, factory=plugin)
        else:
            self._plugins[plugin_id] = RegisteredPlugin(plugin_id, ptype, factory=type(plugin), instance=plugin)

    def entry(self, plugin_id: str, plugin_type: PluginType | None = None) -> RegisteredPlugin:
        reg = self._plugins.get(plugin_id)
        if reg is None or (plugin_type is not None and reg.plugin_type is not plugin_type):
            installed = sorted(p for p, r in self._plugins.items() if plugin_type is None or r.plugin_type is plugin_type)
            kind = f"{plugin_type.value} " if plugin_type else ""
            where = f" in entry point group {plugin_type.entry_point_group!r}" if plugin_type else ""
            raise PluginNotFoundError(
                f"{kind}plugin {plugin_id!r} not found{where}; installed: {', '.join(installed) or 'none'}"
            )
        return reg

    def get_plugin(self, plugin_id: str, plugin_type: PluginType | type[P] | None = None) -> Any:
        """The plugin instance for ``plugin_id``; ``plugin_type`` a PluginType or a plugin ABC."""
        ptype = plugin_type.plugin_type if isinstance(plugin_type, type) else plugin_type
        return self.entry(plugin_id, ptype).get()

    def get_plugin_ids_by_type(self, plugin_type: PluginType | str) -> list[str]:
        ptype = PluginType(plugin_type)
        return sorted(p for p, r in self._plugins.items() if r.plugin_type is ptype)

    def entries(self) -> list[RegisteredPlugin]:
        return [self._plugins[k] for k in sorted(self._plugins)]

    def factory(self, plugin_id: str) -> Callable[[], Plugin]:
        """A callable making fresh instances of ``plugin_id`` (for the supervisor's restarts)."""
        return lambda: self.new_instance(plugin_id)

    def new_instance(self, plugin_id: str) -> Plugin:
        """A fresh instance (for a restart or a reload), leaving the registered one alone."""
        reg = self.entry(plugin_id)
        f = reg.load_factory()
        if reg.instance is not None and not isinstance(f, type):
            return reg.instance
        return f()
