"""``monbridge test``: run each plugin once, as the agent runs it, and print what it did.

- A collector collects once; its metrics are printed (after its ``ReportHook`` lines).
- An integration runs one import round: the number of series it imported and its
  ``ReportHook`` lines (the Prometheus bridge: each target's series, or why its scrape failed,
  a parse error with its line). Then one round's batch is built, from the config's enabled
  collectors (collected once) and the import, and for each export sink its destination and
  payload are printed (``ExportPreviewHook``); only with ``--send`` is it exported, and the
  result printed.
- An alert processor is given a sample alert: what it does with it (passed on, changed,
  suppressed). A notifier renders the notification it would send (``NotificationPreviewHook``:
  requests, headers, body, secrets as ``<secret>``); only with ``--send`` is it sent.

Every line printed goes through the log redactor, with the config's secrets registered.
``run`` returns the number of plugins whose round failed (``monbridge test`` exits 1 then).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bridge.api import (
    Alert,
    AlertProcessorPlugin,
    ExportPreviewHook,
    HistogramValue,
    Metric,
    NotificationPreviewHook,
    NotifierHook,
    PluginType,
    ReportHook,
)
from bridge.logs import redact_text, secret_values

if TYPE_CHECKING:
    from bridge.config import LoadedConfig
    from bridge.pipeline import Pipeline
    from bridge.registry import PluginRegistry
    from bridge.supervisor import PluginRunner, Supervisor

__all__ = ["SAMPLE_ALERT_NAME", "run", "sample_alert"]

#: The bound of one plugin call in ``monbridge test`` when its config sets no timeout.
DEFAULT_TIMEOUT_S = 30.0
SAMPLE_ALERT_NAME = "MonbridgeTestAlert"


def format_metric(m: Metric) -> str:
    attrs = ",".join(f'{k}="{v}"' for k, v in sorted(m.attributes.items()))
    unit = f"  [{m.unit}]" if m.unit else ""
    v = m.value
    if isinstance(v, HistogramValue):
        val = f"count={v.count} sum={v.sum} buckets={list(zip(v.bounds, v.bucket_counts, strict=False))}"
    else:
        val = repr(v)
    return f"{m.name}{{{attrs}}} {val}  {m.kind.value}{unit}"


def sample_alert() -> Alert:
    """The alert alert processors are given: firing, warning, on this host."""
    from bridge.notifiers import fingerprint

    labels = {"alertname": SAMPLE_ALERT_NAME, "severity": "warning", "instance": socket.gethostname()}
    return Alert("monbridge-test", SAMPLE_ALERT_NAME, "warning", labels=labels,
                 annotations={"summary": "a sample alert from monbridge test"}, value=1.0,
                 fingerprint=fingerprint(labels))


def _series(pipeline: Pipeline) -> tuple[int, int]:
    """(series, metrics) in the pipeline's batch now."""
    fams = pipeline.batch().families()
    return sum(len(f.series) for f in fams), len(fams)


class _Run:
    def __init__(self, registry: PluginRegistry, loaded: LoadedConfig, send: bool,
                 echo: Callable[[str], None], err: Callable[[str], None]) -> None:
        self.registry, self.loaded, self.send = registry, loaded, send
        self._echo, self._err = echo, err
        self.feeder: Supervisor | None = None  # the collectors feeding the exports' batch (stopped at the end)

    def echo(self, text: str) -> None:
        self._echo(redact_text(text))

    def err(self, text: str) -> None:
        self._err(redact_text(text))

    def timeout(self, pid: str) -> float:
        cfg = self.loaded.plugin_configs.get(pid)
        t = getattr(cfg, "timeout", None) or getattr(cfg, "interval", None)
        return float(t) if t else DEFAULT_TIMEOUT_S

    # ------------------------------------------------------------------ collectors

    async def collector(self, sup: Supervisor, runner: PluginRunner) -> bool:
        from bridge.pluginhost import InProcessHost
        from bridge.sdk_input import SOURCE as OTEL_API_SOURCE

        pid, pipeline = runner.plugin_id, sup.pipeline
        if not await sup.collect_once(runner):
            self.err(f"# {pid}: {runner.last_error}")
            return False
        self.echo(f"# {pid}")
        if isinstance(runner.host, InProcessHost) and isinstance(runner.host.plugin, ReportHook):
            for line in await runner.host.plugin.test_report():
                self.echo(line)
            pipeline.record(pid, await runner.host.collect(),  # what the report ran
                            prometheus_names=runner.host.imports_prometheus_names)
        for m in sorted(pipeline.snapshot(), key=lambda m: (m.name, str(sorted(m.attributes.items())))):
            self.echo(format_metric(m))
        pipeline.remove_source(pid)
        pipeline.remove_source(OTEL_API_SOURCE)
        return True

    # ------------------------------------------------------------------ integrations

    async def feed(self, pipeline: Pipeline) -> None:
        """The config's enabled collectors, collected once into ``pipeline`` (an export's batch)."""
        from bridge.supervisor import Supervisor

        if self.feeder is not None:
            return
        sup = self.feeder = Supervisor(pipeline)
        for entry in self.loaded.enabled_plugins:
            pid = entry.plugin_id
            if self.registry.entry(pid).plugin_type is not PluginType.METRIC_COLLECTOR:
                continue
            runner = sup.add(pid, self.registry.factory(pid), self.loaded.raw_plugin_configs[pid],
                             self.loaded.plugin_configs[pid])
            if not await sup.collect_once(runner):
                self.err(f"# (batch) {pid}: {runner.last_error}; the batch is built without it")

    async def integration(self, sup: Supervisor, runner: PluginRunner) -> bool:
        from bridge.api import ExportResult
        from bridge.pluginhost import InProcessHost

        pid, pipeline = runner.plugin_id, sup.pipeline
        if not await sup.bring_up(runner):
            self.err(f"# {pid}: {runner.last_error}")
            return False
        host = runner.host
        assert host is not None
        plugin = host.plugin if isinstance(host, InProcessHost) else None
        timeout = self.timeout(pid)
        ok = True
        self.echo(f"# {pid}")
        try:
            imported = await asyncio.wait_for(host.import_round(pipeline, timeout), timeout)
        except Exception as e:  # noqa: BLE001 - the plugin's failure is the report
            why = "timed out" if isinstance(e, TimeoutError) else f"failed: {type(e).__name__}: {e}"
            self.echo(f"import round {why}")
            return False
        self.echo(f"import round: {imported} series imported")
        if isinstance(plugin, ReportHook):
            report = await plugin.test_report()
            for line in report:
                self.echo(line)
            ok = not getattr(report, "failed", False)
        sinks = host.sink_names()
        if not sinks:
            return ok
        await self.feed(pipeline)
        batch = await host.export_batch(pipeline)
        series, metrics = _series(pipeline)
        self.echo(f"export batch: {series} series of {metrics} metrics (the config's enabled collectors and the import)")
        for name in sinks:
            if self.send:
                try:
                    result = await asyncio.wait_for(host.export(name, batch, timeout), timeout)
                    flushed = await asyncio.wait_for(host.force_flush(name, timeout), timeout)
                except Exception as e:  # noqa: BLE001 - a failed export is the report
                    result = ExportResult.retryable("timed out" if isinstance(e, TimeoutError)
                                                    else f"{type(e).__name__}: {e}")
                    flushed = True
                if result.ok and flushed:
                    self.echo(f"sink {name}: sent")
                else:
                    ok = False
                    why = result.reason if not result.ok else f"not delivered within {timeout:g}s"
                    self.echo(f"sink {name}: export failed ({result.status.value}): {why}")
                continue
            sink = plugin.export_sinks().get(name) if plugin is not None and hasattr(plugin, "export_sinks") else None
            if isinstance(sink, ExportPreviewHook):
                for line in await sink.preview_export(batch):
                    self.echo(f"sink {name}: {line}")
            else:
                self.echo(f"sink {name}: would export {series} series of {metrics} metrics (no preview of its payload)")
        if not self.send:
            self.echo("(nothing sent: --send exports the batch)")
        return ok

    # ------------------------------------------------------------------ alert processors

    async def processor(self, pid: str) -> bool:
        from bridge.notifiers import AlertSuppressed, Notification, matches_all

        plugin = self.registry.factory(pid)()
        if not isinstance(plugin, AlertProcessorPlugin):
            self.err(f"# {pid}: not an alert processor")
            return False
        timeout = self.timeout(pid)
        try:
            await asyncio.wait_for(plugin.initialize(self.loaded.raw_plugin_configs[pid]), timeout)
        except Exception as e:  # noqa: BLE001 - the plugin's failure is the report
            self.err(f"# {pid}: initialize failed: {type(e).__name__}: {e}")
            return False
        alert = sample_alert()
        self.echo(f"# {pid}")
        labels = ",".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        self.echo(f"sample alert: {alert.name} firing {{{labels}}}")
        try:
            if isinstance(plugin, NotifierHook):
                return await self._notify(plugin, pid, alert, timeout, Notification, matches_all)
            try:
                out = await asyncio.wait_for(plugin.process_alert(alert), timeout)
            except AlertSuppressed as e:
                self.echo(f"would suppress it: {e}")
                return True
            except Exception as e:  # noqa: BLE001
                self.echo(f"process_alert failed: {type(e).__name__}: {e}")
                return False
            changed = [f"  {what} {k}={v}" for what, before, after in
                       (("label", sample_alert().labels, out.labels), ("annotation", sample_alert().annotations,
                                                                       out.annotations))
                       for k, v in sorted(after.items()) if before.get(k) != v]
            self.echo("would pass it on" + (", with:" if changed else " unchanged"))
            for line in changed:
                self.echo(line)
            return True
        finally:
            try:
                await asyncio.wait_for(plugin.shutdown(), timeout)
            except Exception as e:  # noqa: BLE001
                self.err(f"# {pid}: shutdown failed: {type(e).__name__}: {e}")

    async def _notify(self, plugin: Any, pid: str, alert: Alert, timeout: float, notification: Any,
                      matches_all: Any) -> bool:
        matchers, _ = plugin.notification_route()
        if not matches_all(matchers, alert.labels):
            self.echo("its route (match) does not take the sample alert; the notification is rendered anyway")
        n = notification(pid, f"monbridge-test-{int(time.time())}", f'{{}}:{{alertname="{alert.name}"}}',
                         {"alertname": alert.name}, [alert], "", time.time())
        if self.send:
            try:
                await asyncio.wait_for(plugin.send(n), timeout)
            except Exception as e:  # noqa: BLE001 - a failed delivery is the report
                self.echo(f"send failed: {'timed out' if isinstance(e, TimeoutError) else f'{type(e).__name__}: {e}'}")
                return False
            self.echo("sent")
            return True
        if isinstance(plugin, NotificationPreviewHook):
            for line in await plugin.preview(n):
                self.echo(line)
        else:
            self.echo("would send the notification (no preview of it)")
        self.echo("(nothing sent: --send sends it)")
        return True


async def run(registry: PluginRegistry, loaded: LoadedConfig, wanted: Sequence[str], send: bool,
              echo: Callable[[str], None], err: Callable[[str], None]) -> int:
    """Run each of ``wanted`` once (see the module docstring); the number that failed."""
    from bridge.pipeline import Pipeline
    from bridge.runtime import collect_secrets
    from bridge.sdk_input import install_global
    from bridge.supervisor import Supervisor

    secrets = collect_secrets(loaded.model)
    for cfg in loaded.plugin_configs.values():
        secrets += collect_secrets(cfg)
    secret_values.set(secrets)
    r = _Run(registry, loaded, send, echo, err)
    pipeline = Pipeline()
    install_global(pipeline)  # what a plugin reports through opentelemetry.metrics is shown too
    sup = Supervisor(pipeline)
    failed = 0
    try:
        for pid in wanted:
            ptype = registry.entry(pid).plugin_type
            if ptype is PluginType.ALERT_PROCESSOR:
                ok = await r.processor(pid)
            elif ptype in (PluginType.METRIC_COLLECTOR, PluginType.INTEGRATION):
                runner = sup.add(pid, registry.factory(pid), loaded.raw_plugin_configs[pid], loaded.plugin_configs[pid])
                if ptype is PluginType.METRIC_COLLECTOR:
                    ok = await r.collector(sup, runner)
                else:
                    ok = await r.integration(sup, runner)
            else:
                r.echo(f"# {pid}: a {ptype.value} is not run by `monbridge test`")
                ok = True
            failed += not ok
    finally:
        # Without a last export round: nothing is sent that --send did not ask for.
        for s in (sup, r.feeder):
            if s is not None:
                await asyncio.gather(*(s.stop(runner, flush=False) for runner in s.runners.values()))
        pipeline.shutdown()
    return failed
