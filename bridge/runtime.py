"""The running agent: config → pipeline, supervisor, alert engine and HTTP server; reload and graceful stop.

The runtime is the one place that wires the parts together: the server and the alert engine
know neither each other nor the runtime; each gets what it needs from here (``ServerContext``,
the engine's settings and running plugins, the alert API's routes).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, SecretStr

from bridge.alerting.engine import INTEGRATION_CALL_TIMEOUT_S, AlertEngine
from bridge.alerting.http import add_alert_routes
from bridge.alerting.settings import AlertingSettings, config_state_dir
from bridge.api import DashboardComponentPlugin, Metric, MetricKind, Plugin, PluginType
from bridge.config import DEFAULT_SOURCE, ConfigError, LoadedConfig, redact
from bridge.dashboard.components import DashboardContext
from bridge.dashboard.history import History
from bridge.dashboard.host import ComponentHost
from bridge.lifecycle import PluginState
from bridge.logs import redact_text, secret_values
from bridge.pipeline import Pipeline, Retained
from bridge.pluginhost import InProcessHost, ProcessHost, place
from bridge.registry import PluginRegistry
from bridge.sdk_input import install_global
from bridge.server import HttpServer, ServerContext
from bridge.supervisor import PluginRunner, Supervisor, SupervisorSettings
from bridge.tasks import run_bounded

__all__ = ["Runtime", "collect_secrets", "uses_alerting"]

log = logging.getLogger("monbridge.runtime")

SHUTDOWN_BUDGET_S = 5.0
ALERTS_STOP_BUDGET_S = 2.0
#: The pipeline source of the ``monbridge_config_*`` self-metrics.
CONFIG_SOURCE = "monbridge.config"


class _NotApplied(Exception):
    """A valid config that could not be applied; the running one stays."""


def collect_secrets(value: Any) -> list[str]:
    """Every secret value inside a config model (for the log redactor)."""
    out: list[str] = []
    if isinstance(value, SecretStr):
        out.append(value.get_secret_value())
    elif isinstance(value, BaseModel):
        for k in type(value).model_fields:
            out.extend(collect_secrets(getattr(value, k)))
    elif isinstance(value, dict):
        for v in value.values():
            out.extend(collect_secrets(v))
    elif isinstance(value, (list, tuple)):
        for v in value:
            out.extend(collect_secrets(v))
    return out


def uses_alerting(loaded: LoadedConfig) -> bool:
    """The config has an ``alerting:`` section or enables an alert processor plugin."""
    kind = PluginType.ALERT_PROCESSOR.id_kind
    return "alerting" in loaded.model.model_fields_set or any(
        p.plugin_id.split(".")[1:2] == [kind] for p in loaded.enabled_plugins)


class Runtime:
    def __init__(self, loaded: LoadedConfig, registry: PluginRegistry,
                 reload_config: Callable[[], LoadedConfig] | None = None,
                 settings: SupervisorSettings | None = None) -> None:
        self.loaded = loaded
        self.registry = registry
        self._reload_config = reload_config
        self.pipeline = Pipeline(cardinality_limit=loaded.model.pipeline.cardinality_limit)
        # Plugins' opentelemetry.metrics instruments report into this pipeline.
        install_global(self.pipeline)
        self.supervisor = Supervisor(self.pipeline, settings)
        #: State-changing requests the server refused, by reason (kept across reloads).
        self.refused_requests: dict[str, int] = {}
        self.alerts = AlertEngine.locked(self._alerting_settings, self.pipeline, self._running_plugins)
        self.supervisor.on_change = self.alerts.plugins_changed
        self.supervisor.self_metrics_hooks.append(self.alerts.record_metrics)
        hist = loaded.model.dashboard.history
        self.dashboard = ComponentHost(
            DashboardContext(self.pipeline, History(hist.window, hist.resolution, hist.max_bytes), self.plugin_statuses,
                             self.alerts, refresh=self.supervisor.refresh_self_metrics),
            lambda: [(pid, p) for pid, p in self._running_plugins(PluginType.DASHBOARD_COMPONENT)
                     if isinstance(p, DashboardComponentPlugin)])
        self.server = HttpServer(self._server_context(), loaded.model.server)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._last_reload_success = 0.0
        self._remember_secrets(loaded)

    def _server_context(self) -> ServerContext:
        alerts = self.alerts
        routes = [lambda app: add_alert_routes(app, alerts)]
        dashboard = self.loaded.model.dashboard.enabled
        if dashboard:
            routes.append(self.dashboard.add_routes)
        return ServerContext(self.pipeline, self.supervisor, self.reload, self.plugin_statuses,
                             self.refused_requests, tuple(routes), dashboard)

    def _alerting_settings(self) -> AlertingSettings:
        """The config's alerting section; the state directory defaults to one beside the config
        file when the config uses alerting (see ``bridge.alerting.settings``)."""
        loaded = self.loaded
        alerting = loaded.model.alerting
        if alerting.state_dir is None and uses_alerting(loaded):
            source = None if loaded.source == DEFAULT_SOURCE else loaded.source
            alerting = alerting.model_copy(update={"state_dir": config_state_dir(source)})
        return alerting

    def _running_plugins(self, ptype: PluginType) -> list[tuple[str, Plugin]]:
        """The running plugins of a type, in config order (for the alert engine)."""
        out: list[tuple[str, Plugin]] = []
        for entry in self.loaded.enabled_plugins:
            r = self.supervisor.runners.get(entry.plugin_id)
            if r is None or r.plugin_type is not ptype or r.state is not PluginState.RUNNING:
                continue
            if isinstance(r.host, InProcessHost):
                out.append((entry.plugin_id, r.host.plugin))
            elif isinstance(r.host, ProcessHost) and ptype is PluginType.INTEGRATION:
                out.append((entry.plugin_id, r.host.alert_proxy(INTEGRATION_CALL_TIMEOUT_S)))
        return out

    def _remember_secrets(self, *configs: LoadedConfig) -> None:
        values = []
        for loaded in configs:
            values.extend(collect_secrets(loaded.model))
            for cfg in loaded.plugin_configs.values():
                values.extend(collect_secrets(cfg))
        secret_values.set(values)

    def _add_plugins(self, loaded: LoadedConfig, only: set[str] | None = None) -> list[str]:
        added = []
        for entry in loaded.enabled_plugins:
            if only is not None and entry.plugin_id not in only:
                continue
            pid = entry.plugin_id
            self.supervisor.runners[pid] = self._runner_for(loaded, pid)
            added.append(pid)
        return added

    def plugin_statuses(self) -> list[dict[str, Any]]:
        out = []
        for st in self.supervisor.statuses():
            cfg = self.loaded.plugin_configs.get(st["plugin_id"])
            st["config"] = redact(cfg) if cfg is not None else {}
            if st.get("stop_detail"):  # a worker's words may hold a plugin's secret
                st["stop_detail"] = redact_text(st["stop_detail"])
            for sink in st["sinks"]:
                if sink["last_error"]:
                    sink["last_error"] = redact_text(sink["last_error"])
            out.append(st)
        return out

    async def start(self) -> None:
        await self.server.start()
        self._record_reload(True)  # the config it started with
        self._add_plugins(self.loaded)
        await self.supervisor.start_all()
        await self.alerts.start()
        if self.loaded.model.dashboard.enabled:
            await self.dashboard.start()
        log.info("monbridge started from %s with %d plugins", self.loaded.source, len(self.supervisor.runners))

    async def run(self) -> None:
        """Start, then run until SIGTERM/SIGINT; SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        await self.start()
        await self._stop.wait()
        log.info("shutting down")
        await self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    async def stop(self) -> None:
        """Stop within ``SHUTDOWN_BUDGET_S``: the alert engine, then the plugins get its first
        seconds; what has not stopped by then is abandoned (and logged), never waited for."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_BUDGET_S - 1.0
        await self.dashboard.stop()
        try:
            await run_bounded(self.alerts.stop(), ALERTS_STOP_BUDGET_S)
        except TimeoutError:
            log.error("the alert engine did not stop within %.1fs; going on", ALERTS_STOP_BUDGET_S)
        await self.supervisor.stop_all(timeout=max(deadline - loop.time(), 0.0))
        try:
            await run_bounded(self._stop_servers(), max(deadline + 0.5 - loop.time(), 0.2))
        except TimeoutError:
            log.error("the HTTP server did not stop within the %.1fs of a shutdown; going on", SHUTDOWN_BUDGET_S)
        await asyncio.to_thread(self.pipeline.shutdown)
        log.info("stopped")

    async def _stop_servers(self) -> None:
        await self.server.stop()
        for task in list(self._retiring):
            await task

    async def reload(self) -> tuple[bool, str]:
        """Load the config again and apply it whole, or not at all.

        An invalid config is refused. A valid one is applied in steps that can each be undone: a
        changed ``server`` is built first (TLS loaded, a new address bound) while the old one
        serves; then the changed plugins stop and the new and changed ones start. If any of that
        fails, what was started is stopped, the changed plugins start again from the running
        config, the old server keeps serving, and the answer says why. Only when everything
        started are the new server and plugins switched in and the removed plugins stopped.
        """
        if self._reload_config is None:
            return False, "this instance has no config file to reload"
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(self._reload_config)
            except ConfigError as e:
                return self._reload_failed(str(e))
            try:
                msg = await self._apply(new)
            except _NotApplied as e:
                return self._reload_failed(f"cannot apply {new.source}: {e}")
            self._record_reload(True)
            log.info(msg)
            return True, msg

    def _reload_failed(self, reason: str) -> tuple[bool, str]:
        self._record_reload(False)
        log.error("reload refused, the running config stays: %s", reason)
        return False, reason

    async def _apply(self, new: LoadedConfig) -> str:
        old = self.loaded
        old_entries = {p.plugin_id: p for p in old.enabled_plugins}
        new_entries = {p.plugin_id: p for p in new.enabled_plugins}
        changed = {pid for pid in old_entries if pid in new_entries and old_entries[pid] != new_entries[pid]}
        removed = set(old_entries) - set(new_entries)
        to_start = sorted(pid for pid in new_entries if pid not in old_entries or pid in changed)
        # The new config's secrets are redacted from here on, whatever happens: a plugin that fails
        # to start may name one, and so may the answer. They stay redacted after a refusal.
        self._remember_secrets(old, new)

        server: HttpServer | None = None
        if new.model.server != old.model.server:
            server = HttpServer(self._server_context(), new.model.server)
            try:
                await server.prepare(previous=self.server)
            except OSError as e:
                raise _NotApplied(str(e)) from None
        staged: list[PluginRunner] = []
        stopped: dict[str, PluginRunner] = {}
        held: dict[str, Retained | None] = {}
        try:
            try:
                staged = [self._runner_for(new, pid) for pid in to_start]
            except Exception as e:  # a plugin whose construction fails
                raise _NotApplied(f"a plugin failed to load: {type(e).__name__}: {e}") from None
            # A changed plugin stops before its successor starts: they may share a port or a queue.
            # Its series stay on view until its successor's first collection replaces them.
            stopped = {pid: self.supervisor.runners.pop(pid) for pid in sorted(changed)}
            for pid, runner in stopped.items():
                held[pid] = await self.supervisor.stop(runner, keep_series=True)
            up = await asyncio.gather(*(self.supervisor.start_staged(r) for r in staged))
            if not all(up):
                raise _NotApplied("plugins failed to start: " + "; ".join(
                    f"{r.plugin_id}: {r.last_error}" for r, ok in zip(staged, up, strict=True) if not ok))
            if server is not None:
                await server.serve()
        except BaseException:
            for runner in staged:  # a changed plugin's predecessor's series stay for its restart
                await self.supervisor.stop(runner, flush=False, keep_series=runner.plugin_id in held)
            if server is not None:
                await server.stop()
            # The changed plugins run again as the running config has them.
            self._add_plugins(old, set(stopped))
            for pid in sorted(stopped):
                await self.supervisor.start(self.supervisor.runners[pid], held.get(pid))
            raise

        # Everything started: switch.
        for runner in staged:
            self.supervisor.adopt(runner, held.get(runner.plugin_id))
        for pid in sorted(removed):
            await self.supervisor.remove(pid)
        self._remember_secrets(new)
        self.loaded = new
        if server is not None:
            retiring, self.server = self.server, server
            # Stopped in the background: this very request may be one the old server is answering.
            self._retiring = {t for t in self._retiring if not t.done()}
            self._retiring.add(asyncio.create_task(retiring.stop()))
        if new.model.pipeline != old.model.pipeline:
            self.pipeline.cardinality_limit = new.model.pipeline.cardinality_limit
        self.alerts.refresh()
        return f"reloaded {new.source}: {len(staged)} plugins (re)started, {len(removed)} removed"

    def _runner_for(self, loaded: LoadedConfig, pid: str) -> PluginRunner:
        """A runner for ``pid`` placed as its entry says (``isolation``, ``limits``, ``grants``)."""
        entry = next(e for e in loaded.enabled_plugins if e.plugin_id == pid)
        registered = self.registry.entry(pid)
        placement = place(registered, entry.isolation, entry.limits, entry.grants)
        return self.supervisor.make_runner(pid, self.registry.factory(pid), loaded.raw_plugin_configs[pid],
                                           loaded.plugin_configs[pid], placement, registered.plugin_type)

    def _record_reload(self, ok: bool) -> None:
        """The ``monbridge_config_last_reload_*`` self-metrics, as Prometheus has them."""
        if ok:
            self._last_reload_success = time.time()
        self.pipeline.record(CONFIG_SOURCE, [
            Metric("monbridge.config.last_reload_successful", MetricKind.GAUGE, 1 if ok else 0, "",
                   "whether the last configuration reload attempt was successful"),
            Metric("monbridge.config.last_reload_success_timestamp", MetricKind.GAUGE, self._last_reload_success,
                   "s", "timestamp of the last successful configuration reload"),
        ])
