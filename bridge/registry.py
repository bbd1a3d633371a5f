"""The plugin registry: plugins by id and type, found through entry points or registered in-process.

One entry-point group per plugin type (``monbridge.collectors`` and so on, see
``PluginType.entry_point_group``); built-in plugins use the same groups as third-party ones.
Entry points are loaded lazily, when a plugin is first asked for.

The built-in plugins are also known from ``BUILTIN_PLUGINS`` (the same ids, classes and types as
monbridge's own entry points): looking one up reads no distribution's metadata, and its config
model is imported without the plugin's code where it lives apart. Installed distributions' entry
points are read only when an id that is not built in is asked for, or the whole list is.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.api import Plugin, PluginConfig, PluginType, validate_plugin_id

if TYPE_CHECKING:
    import logging
    from importlib.metadata import EntryPoint

    from bridge.isolation import Grants, Limits
    from bridge.package import VerifiedPackage

__all__ = ["BUILTIN_PLUGINS", "PluginNotFoundError", "PluginRegistry", "RegisteredPlugin"]

_C, _A, _I = PluginType.METRIC_COLLECTOR, PluginType.ALERT_PROCESSOR, PluginType.INTEGRATION
_D = PluginType.DASHBOARD_COMPONENT

#: The plugins monbridge installs: id -> (type, "module:PluginClass", "module:ConfigModel" where
#: the config model lives apart from the plugin's code, else None). The same as the entry points
#: of monbridge's pyproject.toml (a test checks it), and the config model the plugin class's.
BUILTIN_PLUGINS: dict[str, tuple[PluginType, str, str | None]] = {
    "monitoring.alerts.rules": (_A, "bridge.alerting.rules:RulesSource", None),
    "monitoring.alerts.dedup": (_A, "bridge.alerting.processors:DedupProcessor", None),
    "monitoring.alerts.grouping": (_A, "bridge.alerting.processors:GroupingProcessor", None),
    "monitoring.alerts.inhibit": (_A, "bridge.alerting.processors:InhibitProcessor", None),
    "monitoring.alerts.correlation": (_A, "bridge.alerting.processors:CorrelationProcessor", None),
    "monitoring.alerts.escalation": (_A, "bridge.alerting.processors:EscalationProcessor", None),
    "monitoring.alerts.webhook": (_A, "integrations.webhook:WebhookNotifier", "integrations.config:WebhookConfig"),
    "monitoring.alerts.email": (_A, "integrations.email:EmailNotifier", None),
    "monitoring.alerts.sms": (_A, "integrations.sms:TwilioSmsNotifier", None),
    "monitoring.alerts.jira": (_A, "integrations.jira:JiraNotifier", None),
    "monitoring.alerts.servicenow": (_A, "integrations.servicenow:ServiceNowNotifier", None),
    "monitoring.alerts.alertmanager": (_A, "integrations.alertmanager:AlertmanagerNotifier", None),
    "monitoring.metrics.system": (_C, "collectors.system:SystemMetricsCollector", "collectors.config:SystemConfig"),
    "monitoring.metrics.process": (_C, "collectors.process:ProcessMetricsCollector", "collectors.config:ProcessConfig"),
    "monitoring.metrics.textfile": (_C, "collectors.textfile:TextfileCollector", None),
    "monitoring.metrics.cloudwatch": (_C, "collectors.cloudwatch:CloudWatchCollector", None),
    "monitoring.metrics.gcp": (_C, "collectors.gcp:GcpMonitoringCollector", None),
    "monitoring.metrics.azure": (_C, "collectors.azure:AzureMonitorCollector", None),
    "monitoring.metrics.postgresql": (_C, "collectors.postgresql:PostgresqlCollector",
                                      "collectors.dbconfig:PostgresqlConfig"),
    "monitoring.metrics.mysql": (_C, "collectors.mysql:MysqlCollector", "collectors.dbconfig:MysqlConfig"),
    "monitoring.metrics.redis": (_C, "collectors.redis:RedisCollector", "collectors.dbconfig:RedisConfig"),
    "monitoring.metrics.nagios": (_C, "integrations.nagios.collector:NagiosCollector",
                                  "integrations.nagios.config:NagiosCollectorConfig"),
    "monitoring.integration.nagios": (_I, "integrations.nagios.export:NagiosExporter",
                                      "integrations.nagios.export_config:NagiosExportConfig"),
    "monitoring.integration.datadog": (_I, "integrations.datadog.plugin:DatadogIntegration",
                                       "integrations.datadog.config:DatadogConfig"),
    "monitoring.integration.elasticsearch": (_I, "integrations.elasticsearch.plugin:ElasticsearchIntegration",
                                             "integrations.elasticsearch.config:ElasticsearchConfig"),
    "monitoring.integration.otlp": (_I, "integrations.otlp:OtlpIntegration", "integrations.otlp_config:OtlpConfig"),
    "monitoring.integration.prometheus": (_I, "integrations.prometheus.plugin:PrometheusIntegration",
                                          "integrations.prometheus.config:PrometheusIntegrationConfig"),
    "monitoring.integration.grafana": (_I, "integrations.grafana.plugin:GrafanaIntegration",
                                       "integrations.grafana.config:GrafanaConfig"),
    "monitoring.dashboard.timeseries": (_D, "bridge.dashboard.components:TimeSeriesChart", None),
    "monitoring.dashboard.status": (_D, "bridge.dashboard.components:StatusIndicators", None),
    "monitoring.dashboard.topology": (_D, "bridge.dashboard.components:TopologyMap", None),
    "monitoring.dashboard.correlation": (_D, "bridge.dashboard.components:CorrelationDiagram", None),
    "monitoring.dashboard.alerts": (_D, "bridge.dashboard.components:AlertView", None),
}


#: The WASM host's plugin class of each plugin type a signed package may have (``bridge.wasmhost``
#: is loaded when a packaged plugin is configured).
WASM_PLUGIN_CLASSES = {
    _C: "bridge.wasmhost:WasmCollector",
    _A: "bridge.wasmhost:WasmAlertProcessor",
    _I: "bridge.wasmhost:WasmIntegration",
}


def load_reference(ref: str) -> Any:
    """The object an entry-point style reference ``module:attr`` names."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _log() -> logging.Logger:
    """The registry's logger: ``logging`` is loaded when there is something to log (checking a
    config of built-in plugins logs nothing)."""
    import logging

    return logging.getLogger("monbridge.registry")


P = TypeVar("P", bound=Plugin)


class PluginNotFoundError(LookupError):
    pass


@dataclass
class RegisteredPlugin:
    """A known plugin: a factory (class, entry point or built-in reference) and, once made, its instance."""

    plugin_id: str
    plugin_type: PluginType
    factory: Callable[[], Plugin] | None = None
    entry_point: EntryPoint | None = None
    instance: Plugin | None = None
    builtin: str | None = None  # "module:PluginClass" of a built-in plugin
    builtin_config: str | None = None  # "module:ConfigModel" of a built-in whose model lives apart
    package: VerifiedPackage | None = None  # a signed WASM package (bridge.package), run by the WASM host

    @property
    def distribution(self) -> str | None:
        """The distribution that installed the entry point (its metadata is read only when asked)."""
        if self.builtin is not None:
            return "monbridge"
        if self.package is not None:
            return f"package {self.package.path}"
        dist = self.entry_point.dist if self.entry_point is not None else None
        return dist.name if dist is not None else None

    @property
    def version(self) -> str | None:
        if self.builtin is not None:
            from bridge import __version__

            return __version__
        if self.package is not None:
            return self.package.manifest.version
        dist = self.entry_point.dist if self.entry_point is not None else None
        return dist.version if dist is not None else None

    def load_factory(self) -> Callable[[], Plugin]:
        if self.factory is None and self.package is not None:
            raise LookupError(f"packaged plugin {self.plugin_id!r} is not configured (its limits and grants are "
                              "those of its config entry)")
        if self.factory is None:
            if self.builtin is not None:
                obj, where = load_reference(self.builtin), f"built-in plugin {self.plugin_id!r}"
            else:
                assert self.entry_point is not None
                obj = self.entry_point.load()
                where = f"entry point {self.entry_point.name!r} in group {self.plugin_type.entry_point_group!r}"
            if isinstance(obj, type) and not issubclass(obj, Plugin):
                raise TypeError(f"{where} loads {obj.__module__}.{obj.__qualname__}, which is not a monbridge plugin class")
            self.factory = obj
        return self.factory

    def config_model(self) -> type[PluginConfig]:
        """The model the plugin's ``config`` is validated with: the plugin class's, imported without
        the plugin's code for a built-in whose model lives apart (``BUILTIN_PLUGINS``)."""
        if self.factory is None and self.builtin_config is not None:
            model: type[PluginConfig] = load_reference(self.builtin_config)
            return model
        if self.package is not None:
            packaged: type[PluginConfig] = load_reference(WASM_PLUGIN_CLASSES[self.plugin_type]).config_model
            return packaged
        return self.plugin_class().config_model

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
    """Plugins by id. ``discover()`` adds the built-in plugins and the entry points (read when first
    needed); ``register_plugin`` adds one in-process."""

    def __init__(self) -> None:
        self._plugins: dict[str, RegisteredPlugin] = {}
        self._unread_entry_points = False
        self._refused_packages: dict[str, str] = {}  # installed package file stem -> why it was refused

    def discover(self) -> PluginRegistry:
        """Register the built-in plugins, and every plugin installed under the ``monbridge.*``
        entry-point groups: those are read when an id that is not built in is looked up, or the
        plugins are listed."""
        for pid, (ptype, ref, config_ref) in BUILTIN_PLUGINS.items():
            if pid not in self._plugins:  # in-process registration wins
                self._plugins[pid] = RegisteredPlugin(pid, ptype, builtin=ref, builtin_config=config_ref)
        self._unread_entry_points = True
        return self

    def _read_entry_points(self) -> None:
        if not self._unread_entry_points:
            return
        self._unread_entry_points = False
        from importlib.metadata import entry_points

        installed = entry_points()  # read once: each call reads every distribution's entry points
        for ptype in PluginType:
            for ep in installed.select(group=ptype.entry_point_group):
                try:
                    validate_plugin_id(ep.name, ptype)
                except ValueError as e:
                    _log().warning("ignoring entry point %r of %s: %s", ep.name, ep.dist.name if ep.dist else "?", e)
                    continue
                if ep.name in self._plugins:
                    continue  # a built-in or in-process registration wins over an entry point
                self._plugins[ep.name] = RegisteredPlugin(ep.name, ptype, entry_point=ep)

    def add_packages(self, directory: str | os.PathLike[str], trust: str | os.PathLike[str]) -> None:
        """Register the signed packages installed in ``directory`` that verify against the trust
        store ``trust`` now (each read and verified again: a file changed since it was installed is
        refused); a refused one is logged, and named when its id is looked up. Built-in plugins and
        in-process registrations win over a package of the same id. A package's limits and grants
        are its config entry's (:meth:`bind_package`)."""
        for pid in [p for p, r in self._plugins.items() if r.package is not None]:
            del self._plugins[pid]  # what was installed when a config was last loaded
        self._refused_packages.clear()
        root = Path(directory)
        if not root.is_dir() or not any(root.glob("*.mbpkg")):
            return  # nothing installed: the package code is not loaded
        from bridge.package import TrustStore, TrustStoreError, inspect_installed

        try:
            store = TrustStore.load(trust)
        except TrustStoreError as e:
            store = TrustStore()
            _log().warning("plugin packages: %s; every package is refused", e)
        for item in inspect_installed(root, store):
            pkg = item.package
            if pkg is not None and pkg.manifest.plugin_type not in WASM_PLUGIN_CLASSES:
                self._refused_packages[item.path.stem] = (f"{item.path}: the WASM host runs no "
                                                          f"{pkg.manifest.plugin_type.value} plugins")
            elif pkg is None:
                self._refused_packages[item.path.stem] = str(item.error)
            elif pkg.plugin_id not in self._plugins or self._plugins[pkg.plugin_id].package is not None:
                self._plugins[pkg.plugin_id] = RegisteredPlugin(pkg.plugin_id, pkg.manifest.plugin_type, package=pkg)
                continue
            else:
                _log().warning("plugin package %s ignored: %s is built in or registered in process", item.path,
                            pkg.plugin_id)
                continue
            _log().warning("plugin package refused: %s", self._refused_packages[item.path.stem])

    def bind_package(self, plugin_id: str, limits: Limits, grants: Grants) -> None:
        """Make the packaged plugin ``plugin_id`` run in the WASM host with ``limits`` and ``grants``
        (its config entry's, which cover what its manifest requests)."""
        reg = self.entry(plugin_id)
        pkg = reg.package
        assert pkg is not None

        def make() -> Plugin:
            plugin: Plugin = load_reference(WASM_PLUGIN_CLASSES[pkg.manifest.plugin_type])(
                pkg.module_bytes, pkg.host_manifest, limits, grants)
            return plugin

        reg.factory, reg.instance = make, None

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
        if reg is None:
            self._read_entry_points()
            reg = self._plugins.get(plugin_id)
        if reg is None or (plugin_type is not None and reg.plugin_type is not plugin_type):
            self._read_entry_points()  # the list of what is installed is complete
            installed = sorted(p for p, r in self._plugins.items() if plugin_type is None or r.plugin_type is plugin_type)
            kind = f"{plugin_type.value} " if plugin_type else ""
            where = f" in entry point group {plugin_type.entry_point_group!r}" if plugin_type else ""
            refused = self._refused_packages.get(plugin_id)
            raise PluginNotFoundError(
                f"{kind}plugin {plugin_id!r} not found{where}; installed: {', '.join(installed) or 'none'}"
                + (f" (its package was refused: {refused})" if refused else "")
            )
        return reg

    def get_plugin(self, plugin_id: str, plugin_type: PluginType | type[P] | None = None) -> Any:
        """The plugin instance for ``plugin_id``; ``plugin_type`` a PluginType or a plugin ABC."""
        ptype = plugin_type.plugin_type if isinstance(plugin_type, type) else plugin_type
        return self.entry(plugin_id, ptype).get()

    def get_plugin_ids_by_type(self, plugin_type: PluginType | str) -> list[str]:
        ptype = PluginType(plugin_type)
        self._read_entry_points()
        return sorted(p for p, r in self._plugins.items() if r.plugin_type is ptype)

    def entries(self) -> list[RegisteredPlugin]:
        self._read_entry_points()
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
