"""The running agent: config → pipeline, supervisor and HTTP server; reload and graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, SecretStr

from bridge.alerting.engine import AlertEngine
from bridge.config import ConfigError, LoadedConfig, redact
from bridge.logs import redact_text, secret_values
from bridge.pipeline import Pipeline
from bridge.registry import PluginRegistry
from bridge.server import HttpServer
from bridge.supervisor import Supervisor, SupervisorSettings
from bridge.tasks import run_bounded

__all__ = ["Runtime", "collect_secrets"]

log = logging.getLogger("monbridge.runtime")

SHUTDOWN_BUDGET_S = 5.0
ALERTS_STOP_BUDGET_S = 2.0


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


class Runtime:
    def __init__(self, loaded: LoadedConfig, registry: PluginRegistry,
                 reload_config: Callable[[], LoadedConfig] | None = None,
                 settings: SupervisorSettings | None = None) -> None:
        self.loaded = loaded
        self.registry = registry
        self._reload_config = reload_config
        self.pipeline = Pipeline(cardinality_limit=loaded.model.pipeline.cardinality_limit)
        self.supervisor = Supervisor(self.pipeline, settings)
        self.server = HttpServer(self, loaded.model.server)
        self.alerts = AlertEngine.for_runtime(self)
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._remember_secrets(loaded)

    def _remember_secrets(self, loaded: LoadedConfig) -> None:
        values = collect_secrets(loaded.model)
        for cfg in loaded.plugin_configs.values():
            values.extend(collect_secrets(cfg))
        secret_values.set(values)

    def _add_plugins(self, loaded: LoadedConfig, only: set[str] | None = None) -> list[str]:
        added = []
        for entry in loaded.enabled_plugins:
            if only is not None and entry.plugin_id not in only:
                continue
            pid = entry.plugin_id
            self.supervisor.add(pid, self.registry.factory(pid),
                                loaded.raw_plugin_configs[pid], loaded.plugin_configs[pid])
            added.append(pid)
        return added

    def plugin_statuses(self) -> list[dict[str, Any]]:
        out = []
        for st in self.supervisor.statuses():
            cfg = self.loaded.plugin_configs.get(st["plugin_id"])
            st["config"] = redact(cfg) if cfg is not None else {}
            for sink in st["sinks"]:
                if sink["last_error"]:
                    sink["last_error"] = redact_text(sink["last_error"])
            out.append(st)
        return out

    async def start(self) -> None:
        await self.server.start()
        self._add_plugins(self.loaded)
        await self.supervisor.start_all()
        await self.alerts.start()
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
        try:
            await run_bounded(self.alerts.stop(), ALERTS_STOP_BUDGET_S)
        except TimeoutError:
            log.error("the alert engine did not stop within %.1fs; going on", ALERTS_STOP_BUDGET_S)
        await self.supervisor.stop_all(timeout=max(deadline - loop.time(), 0.0))
        await self.server.stop()
        await asyncio.to_thread(self.pipeline.shutdown)
        log.info("stopped")

    async def reload(self) -> tuple[bool, str]:
        """Load the config again and apply it; an invalid one is refused and the old one stays."""
        if self._reload_config is None:
            return False, "this instance has no config file to reload"
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(self._reload_config)
            except ConfigError as e:
                log.error("reload refused, the running config stays: %s", e)
                return False, str(e)
            old = self.loaded
            old_entries = {p.plugin_id: p for p in old.enabled_plugins}
            new_entries = {p.plugin_id: p for p in new.enabled_plugins}
            changed = {pid for pid in old_entries if pid not in new_entries or old_entries[pid] != new_entries[pid]}
            for pid in sorted(changed):
                await self.supervisor.remove(pid)
            self._remember_secrets(new)
            self.loaded = new
            started = self._add_plugins(new, {pid for pid in new_entries if pid not in old_entries or pid in changed})
            for pid in started:
                await self.supervisor.start(self.supervisor.runners[pid])
            if new.model.server != old.model.server:
                await self.server.stop()
                self.server = HttpServer(self, new.model.server)
                await self.server.start()
            if new.model.pipeline != old.model.pipeline:
                self.pipeline.cardinality_limit = new.model.pipeline.cardinality_limit
            self.alerts.refresh()
            msg = (f"reloaded {new.source}: {len(started)} plugins (re)started, "
                   f"{len(changed - set(new_entries))} removed")
            log.info(msg)
            return True, msg
