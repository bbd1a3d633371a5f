"""``monitoring.integration.prometheus``: the Prometheus bridge plugin.

One plugin, all four integration methods:

* ``import_metrics``: scrapes the configured targets (static and ``file_sd``) and federation
  sources every ``scrape.interval`` (``scrape.py``), with the synthetic series Prometheus adds;
  the pipeline keeps the names as they are (``imports_prometheus_names``). A series that leaves
  a target, or a target that goes away, is absent from the round and expires.
* export sinks (``export_sinks``): remote write (``remote_write.py``) of every series of the
  round's batch that has a new sample since the last round (imported ones with their scrape
  timestamps), a staleness marker for each series that went away; and a push of the batch's
  exposition (or of the series its ``match`` selectors choose) to a Pushgateway. Both read each
  series' Prometheus view (name, labels, ``le``/``quantile`` texts) from the batch.
* ``export_alerts``: to Alertmanager's ``/api/v2/alerts``; ``import_alerts``: from a Prometheus
  server's ``/api/v1/alerts``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from bridge.api import (
    Alert,
    AlertState,
    ExponentialHistogramValue,
    ExportResult,
    ExportSink,
    HistogramValue,
    Metric,
    MetricBatch,
    MetricKind,
    MonitoringIntegrationPlugin,
    PluginError,
    PluginMetadata,
    PluginType,
    PrometheusView,
    SummaryValue,
    TestReport,
)
from bridge.helpers import EXCERPT_BYTES, gc_paused, peer_excerpt
from bridge.ledger import count_loss
from bridge.notifiers import fingerprint
from integrations.prometheus.config import (
    AlertsEndpointConfig,
    FederateConfig,
    PrometheusIntegrationConfig,
    PushgatewayConfig,
    ScrapeConfig,
    ShardConfig,
    StaticTargetConfig,
)
from integrations.prometheus.file_sd import FileSD
from integrations.prometheus.relabel import Relabeler
from integrations.prometheus.remote_write import (
    STALE_NAN,
    RemoteWriter,
    display_url,
    encode_labels,
    encode_named_labels,
    encode_native_histogram,
    encode_sample,
)
from integrations.prometheus.scrape import (
    ScrapeLimits,
    ScrapeResult,
    Target,
    TargetScraper,
    filter_shard,
    instance_of,
)
from integrations.prometheus.sharding import shard_from_env

try:  # scraped_labels in C, where it is built (setup.py); _scraped_labels below is its twin
    from integrations.prometheus import _promfast
except ImportError:  # pragma: no cover - a build without the C extension
    _promfast = None  # type: ignore[assignment]

__all__ = [
    "PLUGIN_ID",
    "AlertsEndpointConfig",
    "FederateConfig",
    "PrometheusIntegration",
    "PrometheusIntegrationConfig",
    "PushgatewayConfig",
    "ScrapeConfig",
    "ShardConfig",
    "StaticTargetConfig",
]

PLUGIN_ID = "monitoring.integration.prometheus"
log = logging.getLogger("monbridge.prometheus")


# --------------------------------------------------------------------------- remote write state


_BUCKETED = frozenset((MetricKind.HISTOGRAM, MetricKind.SUMMARY, MetricKind.EXPONENTIAL_HISTOGRAM))


class _Sent:
    """What was last sent for one pipeline series: its encoded label sets (a plain series' one
    label set as it is, not in a list of its own) and sample time (and for an exponential
    histogram, the label set of its native histogram)."""

    __slots__ = ("labels", "ts", "native")

    def __init__(self, labels: bytes | list[bytes], ts: int) -> None:
        self.labels = labels
        self.ts = ts
        self.native: bytes | None = None


class PrometheusIntegration(MonitoringIntegrationPlugin):
    config_model = PrometheusIntegrationConfig
    imports_prometheus_names = True

    def __init__(self) -> None:
        self.config: PrometheusIntegrationConfig | None = None
        self._session: Any = None
        self._scrapers: dict[Any, TargetScraper] = {}
        self._federators: list[tuple[FederateConfig, TargetScraper]] = []
        self._file_sd: FileSD | None = None
        self._file_sd_errors: set[str] = set()
        self._relabeler: Relabeler | None = None
        self._shard: tuple[int, int] | None = None
        self._writers: list[RemoteWriter] = []
        self._sent: dict[Any, _Sent] = {}
        self._sinks: dict[str, ExportSink] | None = None
        self._exponential: tuple[list[tuple[bytes, float, int]], list[tuple[bytes, bytes]]] = ([], [])
        self._job_instance: tuple[tuple[str, str], ...] = ()
        self._counts: dict[tuple[str, str], int] = {}
        self._exported: dict[str, Alert] = {}  # fingerprint -> alert last sent to Alertmanager
        self._imported: dict[str, Alert] = {}  # fingerprint -> alert firing at Prometheus at the last import
        self._last_round: list[ScrapeResult] = []  # the last import's scrapes (``monbridge test``'s report)
        #: Whether a new series' remote-write labels are encoded in C (``_promfast``) where it is built.
        self.fast = True

    def metadata(self) -> PluginMetadata:
        from bridge import __version__

        return PluginMetadata(PLUGIN_ID, "Prometheus bridge", __version__, "monbridge",
                              "Scrape and federation import, remote write with a persistent queue, Pushgateway, alerts",
                              PluginType.INTEGRATION)

    # ------------------------------------------------------------------ lifecycle

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg = self.parse_config(config)
        assert isinstance(cfg, PrometheusIntegrationConfig)
        self.config = cfg
        sc = cfg.scrape
        if sc is not None:
            if sc.metric_relabel_configs:
                self._relabeler = Relabeler(sc.metric_relabel_configs)
            if sc.file_sd:
                self._file_sd = FileSD(sc.file_sd)
            if sc.shard is not None:
                self._shard = (sc.shard.index, sc.shard.count)
            else:
                try:
                    self._shard = shard_from_env()
                except ValueError as e:
                    raise PluginError(f"{PLUGIN_ID}: sharding: {e}") from None
            if self._shard is not None:
                log.info("scraping shard %d of %d (targets by hashmod of their address)", self._shard[0], self._shard[1])
        for fc in cfg.federate:
            target = Target(fc.federate_url(), {"job": fc.job, "instance": instance_of(fc.url)}, "federate")
            self._federators.append((fc, TargetScraper(target, limits=ScrapeLimits(body_size_limit=fc.body_size_limit),
                                                       honor_labels=fc.honor_labels, honor_timestamps=True)))
        self._writers = [RemoteWriter(rw) for rw in cfg.remote_write]
        self._sinks = None  # made anew for this config
        for w in self._writers:
            await w.start()

    def _http(self) -> Any:
        import aiohttp

        if self._session is None:
            from bridge import __version__

            self._session = aiohttp.ClientSession(
                headers={"User-Agent": f"monbridge/{__version__}"},
                connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300),
                auto_decompress=True,
            )
        return self._session

    async def shutdown(self, timeout: float | None = None) -> None:
        timeout = 2.0 if timeout is None else min(timeout, 2.0)
        for w in self._writers:
            try:
                await w.stop(timeout)
            except Exception as e:  # noqa: BLE001 - one writer's failure must not keep the others open
                log.warning("remote write %s: stop failed: %s: %s", w, type(e).__name__, e)
        self._writers = []
        self._hand_over()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ import: scrape and federate

    async def _targets(self) -> list[Target]:
        sc = self.config.scrape if self.config else None
        if sc is None:
            return []
        targets = [Target(t.url, {"job": t.job, "instance": instance_of(t.url), **t.labels}, "static") for t in sc.targets]
        if self._file_sd is not None:
            # in a worker thread: a large file_sd file costs seconds to read
            groups, errors = await asyncio.to_thread(self._file_sd.refresh)
            for err in errors:
                self._count("file_sd_errors", "error")
                if err not in self._file_sd_errors:  # a broken file is reported once, not every round
                    log.error("file_sd: %s (the file's previous targets are kept)", err)
            for err in self._file_sd_errors - set(errors):
                log.info("file_sd: resolved: %s", err)
            self._file_sd_errors = set(errors)
            for g in groups:
                for address in g.targets:
                    labels = {"job": sc.file_sd_job, "instance": address, **g.labels}
                    scheme = labels.pop("__scheme__", sc.file_sd_scheme)
                    path = labels.pop("__metrics_path__", sc.file_sd_metrics_path)
                    labels = {k: v for k, v in labels.items() if not k.startswith("__")}
                    targets.append(Target(f"{scheme}://{address}{path}", labels, g.source))
        if self._shard is not None:
            targets = filter_shard(targets, *self._shard)
        seen: set[Any] = set()
        unique = []
        for t in targets:
            if t.key not in seen:
                seen.add(t.key)
                unique.append(t)
        return unique

    def _scraper(self, target: Target) -> TargetScraper:
        s = self._scrapers.get(target.key)
        if s is None:
            sc = self.config.scrape if self.config else None
            assert sc is not None
            limits = ScrapeLimits(sc.sample_limit, sc.label_limit, sc.label_name_length_limit, sc.label_value_length_limit,
                                  sc.body_size_limit)
            setup = _setup(target, limits, sc)
            handed = _HANDOVER.pop(setup, None)
            if handed is not None:  # the scraper a stopped instance had for this target, set up alike
                s = handed[0]
                s.relabeler = self._relabeler
            else:
                s = TargetScraper(target, limits=limits, relabeler=self._relabeler, honor_labels=sc.honor_labels,
                                  honor_timestamps=sc.honor_timestamps)
            self._scrapers[target.key] = s
        return s

    def _hand_over(self) -> None:
        """Leave this instance's scrapers to its successor in this process (a restart after failed
        rounds, a reload that changed the config): their caches make its first round of each
        target as cheap as a repeated scrape. Kept for ``HANDOVER_S`` seconds, then dropped."""
        sc = self.config.scrape if self.config else None
        if sc is None or not self._scrapers:
            return
        now = time.monotonic()
        for s in self._scrapers.values():
            _HANDOVER[_setup(s.target, s.limits, sc)] = (s, now)
        self._scrapers = {}
        try:
            asyncio.get_running_loop().call_later(HANDOVER_S, _expire_handover)
        except RuntimeError:
            pass  # no loop: the next instance's first round drops what it does not take

    async def import_metrics(self) -> Sequence[Metric]:
        cfg = self.config
        if cfg is None:
            raise PluginError(f"{PLUGIN_ID}: import called before initialize")
        targets = await self._targets()
        current = {t.key for t in targets}
        for key in [k for k in self._scrapers if k not in current]:
            gone = self._scrapers.pop(key)
            log.info("target %s (job %s) is no longer configured; its series go stale", gone.target.url, gone.target.job)
        scrapers = [self._scraper(t) for t in targets] + [s for _, s in self._federators]
        if _HANDOVER:
            _expire_handover()
        timeout = cfg.scrape.timeout if cfg.scrape is not None else min(cfg.timeout or cfg.interval, cfg.interval)
        session = self._http()
        start_ns = time.time_ns()
        # Each scrape fails alone: ``scrape`` turns whatever a target makes go wrong into its result.
        gathered = await asyncio.gather(*(s.scrape(session, timeout) for s in scrapers))
        out: list[Metric] = []
        self._last_round = list(gathered)
        for s, r in zip(scrapers, gathered, strict=True):
            out.extend(r.metrics)
            out.extend(s.report(r, start_ns))
            self._count("scrapes", "success" if r.up else (r.failure or "error"))
            if r.duplicates:
                self._count("samples_dropped", "duplicate", r.duplicates)
                log.warning("scrape of %s: %d duplicate series in one scrape; the first of each was kept",
                            s.target.url, r.duplicates)
            if r.failure in ("sample_limit", "label_limit"):
                self._count("samples_dropped", r.failure, r.samples_scraped)
        out.extend(self._self_metrics())
        return out

    async def test_report(self) -> TestReport:
        """The last import's scrapes, one line each: the target, its series, or why it failed (a
        parse error with its line) (``bridge.api.ReportHook``, for ``monbridge test``)."""
        lines = TestReport()
        for r in self._last_round:
            t = r.target
            where = f"{t.labels.get('job', '')} {display_url(t.url)}".strip()
            if r.up:
                lines.append(f"scrape {where}: up, {r.samples_scraped} samples, {r.samples_post_relabel} after "
                             f"relabeling, {len(r.metrics)} series in {r.duration:.3f}s")
            else:
                lines.failed = True
                lines.append(f"scrape {where}: DOWN: {r.error}")
        if not self._last_round:
            lines.append("no targets to scrape (scrape.targets, file_sd and federate are empty)")
        return lines

    def _count(self, what: str, reason: str, n: int = 1) -> None:
        k = (what, reason)
        self._counts[k] = self._counts.get(k, 0) + n
        if what == "samples_dropped":
            count_loss("scrape", reason, n)

    def _self_metrics(self) -> list[Metric]:
        C = MetricKind.COUNTER
        out = [Metric("monbridge.scrape.scrapes", C, float(v), "", "scrapes by result", {"result": r})
               for (w, r), v in sorted(self._counts.items()) if w == "scrapes"]
        out += [Metric("monbridge.scrape.samples.dropped", C, float(v), "",
                       "scraped samples dropped, by reason", {"reason": r})
                for (w, r), v in sorted(self._counts.items()) if w == "samples_dropped"]
        out += [Metric("monbridge.scrape.file_sd.errors", C, float(v), "", "file_sd files that failed to read, by refresh")
                for (w, _), v in self._counts.items() if w == "file_sd_errors"]
        out += [Metric("monbridge.pushgateway.pushes", C, float(v), "", "pushes to the Pushgateway by result",
                       {"result": r}) for (w, r), v in sorted(self._counts.items()) if w == "pushes"]
        out.append(Metric("monbridge.scrape.targets", MetricKind.GAUGE, float(len(self._scrapers)), "",
                          "targets this instance scrapes (after sharding)"))
        for w in self._writers:
            out.extend(w.self_metrics())
        return out

    # ------------------------------------------------------------------ export: remote write and Pushgateway

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        raise PluginError(f"{PLUGIN_ID} exports batches to its sinks (export_sinks); export_metrics is not used")

    def export_sinks(self) -> Mapping[str, ExportSink]:
        """``remote_write`` (queueing; each queue then delivers, retries and counts on its own)
        and ``pushgateway``, each configured one a sink of its own: a Pushgateway that is down
        fails its sink, not the round, so scraping and remote write go on."""
        sinks = self._sinks
        if sinks is None:
            cfg = self.config
            sinks = {}
            if self._writers:
                sinks["remote_write"] = _RemoteWriteSink(self)
            if cfg is not None and cfg.pushgateway is not None:
                sinks["pushgateway"] = _PushgatewaySink(self, cfg.pushgateway)
            self._sinks = sinks
        return sinks

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        """Every sink's export of ``batch``; the first failure is the result."""
        result = ExportResult.success()
        for sink in self.export_sinks().values():
            r = await sink.export(batch, timeout)
            if result.ok:
                result = r
        return result

    async def force_flush(self, timeout: float) -> bool:
        results = [await sink.force_flush(timeout) for sink in self.export_sinks().values()]
        return all(results)

    def _remote_write_samples(self, batch: MetricBatch) -> list[tuple[bytes, float, int]]:
        """Every series with a sample newer than the last one sent, and a staleness marker for
        every series sent before that is gone. Each series' labels are its Prometheus view's,
        encoded once (when first sent, or when a histogram's buckets change). Exponential
        histograms are left in ``self._exponential``: as explicit-bucket samples, and as native
        histogram entries, for the writers that send those."""
        if not self._job_instance:
            attrs = batch.resource_attributes
            job = str(attrs.get("service.name", "monbridge"))
            inst = str(attrs.get("service.instance.id") or attrs.get("host.name") or "")
            self._job_instance = (("job", job), ("instance", inst))
        # A container per series the first time (and a tuple per sample every time): without the
        # cyclic collector walking the heap meanwhile.
        with gc_paused(len(self._sent) + sum(len(f.series) for f in batch.families())):
            return self._new_samples(batch)

    def _new_samples(self, batch: MetricBatch) -> list[tuple[bytes, float, int]]:
        out: list[tuple[bytes, float, int]] = []
        add = out.append
        sent = self._sent
        scraped_labels = _scraped_labels if _promfast is None or not self.fast else _promfast.scraped_labels
        now_ms = time.time_ns() // 1_000_000
        current: dict[Any, _Sent] = {}
        classic: list[tuple[bytes, float, int]] = []
        native_entries: list[tuple[bytes, bytes]] = []
        self._exponential = (classic, native_entries)
        for fam in batch.families():
            kind = fam.kind
            native = fam.native
            plain = kind not in _BUCKETED
            fam_name = fam.name
            for s in fam.series:
                key = s.identity
                st = sent.get(key)
                ts = s.time_ns // 1_000_000
                if st is None:
                    if native and plain and (encoded := scraped_labels(fam_name, key.key)) is not None:
                        st = _Sent(encoded, -1)
                    else:
                        labels = self._labels_for(native, kind, s.prom)
                        st = _Sent(labels[0] if plain else labels, -1)
                current[key] = st
                if st.ts == ts:
                    continue  # nothing new since the last round
                v = s.value
                if kind is MetricKind.EXPONENTIAL_HISTOGRAM:
                    view = s.prom
                    old, st.labels = st.labels, self._labels_for(native, kind, view)  # boundaries move with the scale
                    classic.extend((lb, STALE_NAN, ts) for lb in set(old) - set(st.labels))
                    classic.extend(zip(st.labels, _expand_values(v), [ts] * len(st.labels), strict=True))
                    if st.native is None:
                        st.native = encode_labels({**self._view_labels(native, view), "__name__": view.name}.items())
                    entry = encode_native_histogram(st.native, v, ts)  # type: ignore[arg-type]
                    if entry is not None:
                        native_entries.append((st.native, entry))
                    st.ts = ts
                    continue
                if not plain:
                    vals = _expand_values(v)
                    if len(vals) != len(st.labels):  # the buckets changed: new label sets
                        st.labels = self._labels_for(native, kind, s.prom)
                    for lb, x in zip(st.labels, vals, strict=True):
                        add((lb, x, ts))
                else:
                    add((st.labels, float(v), ts))  # type: ignore[arg-type]
                st.ts = ts
        for key, st in sent.items():
            if key not in current:
                stale_ts = max(now_ms, st.ts + 1)
                if st.native is not None:
                    classic.extend((lb, STALE_NAN, stale_ts) for lb in st.labels)
                    native_entries.append((st.native, encode_sample(st.native, STALE_NAN, stale_ts)))
                    continue
                for lb in [st.labels] if isinstance(st.labels, bytes) else st.labels:
                    add((lb, STALE_NAN, stale_ts))
        self._sent = current
        return out

    def _labels_for(self, native: bool, kind: MetricKind, view: PrometheusView) -> list[bytes]:
        """The encoded label sets of a series' samples, from its Prometheus view (a
        non-imported series gets the agent's job and instance when it has none)."""
        if native and kind not in _BUCKETED:
            return [encode_labels((("__name__", view.name), *view.labels))]  # a scraped series: as it is
        labels = self._view_labels(native, view)
        name = view.name
        if kind in _BUCKETED:
            le_name, bucket = ("quantile", name) if kind is MetricKind.SUMMARY else ("le", name + "_bucket")
            out = [encode_labels({**labels, "__name__": bucket, le_name: le}.items()) for le in view.le]
            return out + [encode_labels({**labels, "__name__": name + suffix}.items()) for suffix in ("_sum", "_count")]
        return [encode_labels({**labels, "__name__": name}.items())]

    def _view_labels(self, native: bool, view: PrometheusView) -> dict[str, str]:
        """A series' labels (without ``__name__``) from its Prometheus view, with this agent's
        job and instance where a non-imported series has none."""
        labels = dict(view.labels)
        if not native:
            for k, v in self._job_instance:
                if k not in labels and v:
                    labels[k] = v
        return labels

    async def _push(self, batch: MetricBatch, pg: PushgatewayConfig) -> ExportResult:
        from bridge.prometheus import CONTENT_TYPE_TEXT, render

        if pg.match:
            batch = batch.select(pg.match)
        body = render(batch.families())  # type: ignore[arg-type]
        url = pg.push_url()
        try:
            async with asyncio.timeout(pg.timeout):
                async with self._http().put(url, data=body, headers={"Content-Type": CONTENT_TYPE_TEXT}) as resp:
                    if resp.status >= 300:
                        text = peer_excerpt(await resp.content.read(EXCERPT_BYTES))
                        self._count("pushes", f"http_{resp.status}")
                        why = f"push to Pushgateway {display_url(url)} failed: HTTP {resp.status}: {text}"
                        if 400 <= resp.status < 500 and resp.status not in (408, 429):
                            return ExportResult.permanent(why)
                        return ExportResult.retryable(why)
        except TimeoutError:
            self._count("pushes", "timeout")
            return ExportResult.retryable(f"push to Pushgateway {display_url(url)} timed out after {pg.timeout:g}s")
        except OSError as e:
            self._count("pushes", "error")
            return ExportResult.retryable(f"push to Pushgateway {display_url(url)} failed: {type(e).__name__}: {e}")
        self._count("pushes", "success")
        return ExportResult.success()

    # ------------------------------------------------------------------ alerts

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        """Post ``alerts`` (the current ones, each round) to Alertmanager's ``/api/v2/alerts``; an
        alert sent before and absent now is sent once more as resolved (its end time now), so
        Alertmanager resolves it at once rather than after its resolve_timeout. Without
        ``export_alerts`` in the config there is nothing to do."""
        cfg = self.config
        if cfg is None or cfg.export_alerts is None:
            return
        now = time.time()
        current = {a.fingerprint or fingerprint({"alertname": a.name, **a.labels}): a for a in alerts}
        gone = [replace(a, state=AlertState.RESOLVED, ends_at=now) for fp, a in self._exported.items() if fp not in current]
        if not current and not gone:
            return
        payload = [alert_to_alertmanager(a, cfg.external_url) for a in (*current.values(), *gone)]
        url = cfg.export_alerts.url.rstrip("/") + "/api/v2/alerts"
        try:
            async with asyncio.timeout(cfg.export_alerts.timeout):
                async with self._http().post(url, json=payload) as resp:
                    if resp.status >= 300:
                        text = peer_excerpt(await resp.content.read(EXCERPT_BYTES))
                        raise PluginError(f"posting {len(payload)} alerts to Alertmanager {display_url(url)} failed: "
                                          f"HTTP {resp.status}: {text}")
        except TimeoutError:
            raise PluginError(f"posting alerts to Alertmanager {display_url(url)} timed out") from None
        except OSError as e:
            raise PluginError(f"posting alerts to Alertmanager {display_url(url)} failed: {type(e).__name__}: {e}") from None
        self._exported = dict(current)

    async def import_alerts(self) -> Sequence[Alert]:
        """The firing alerts of a Prometheus server (``/api/v1/alerts``; pending ones left out),
        and, resolved, those that fired at the last import and no longer do."""
        cfg = self.config
        if cfg is None or cfg.import_alerts is None:
            return []
        url = cfg.import_alerts.url.rstrip("/") + "/api/v1/alerts"
        try:
            async with asyncio.timeout(cfg.import_alerts.timeout):
                async with self._http().get(url) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status != 200 or not isinstance(body, dict) or body.get("status") != "success":
                        raise PluginError(f"reading alerts from Prometheus {display_url(url)} failed: HTTP {resp.status}: "
                                          f"{str(body)[:300]}")
        except TimeoutError:
            raise PluginError(f"reading alerts from Prometheus {display_url(url)} timed out") from None
        except (OSError, ValueError) as e:
            raise PluginError(f"reading alerts from Prometheus {display_url(url)} failed: {type(e).__name__}: {e}") from None
        firing: dict[str, Alert] = {}
        for i, a in enumerate(body.get("data", {}).get("alerts", [])):
            try:
                if a.get("state") != "firing":
                    continue
                alert = alert_from_prometheus(a)
                firing[alert.fingerprint] = alert
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                log.warning("alert %d from %s skipped: %s: %s", i, display_url(url), type(e).__name__, e)
        now = time.time()
        resolved = [replace(a, state=AlertState.RESOLVED, ends_at=now) for fp, a in self._imported.items()
                    if fp not in firing]
        self._imported = firing
        return [*firing.values(), *resolved]


# --------------------------------------------------------------------------- export sinks


class _RemoteWriteSink:
    """Remote write as an export sink: ``export`` queues the batch's new samples in every
    writer's queue (each then delivers, retries and counts on its own); ``force_flush`` waits
    until the queues delivered what they held; ``shutdown`` stops the writers (idempotent)."""

    def __init__(self, plugin: PrometheusIntegration) -> None:
        self._plugin = plugin
        self._lock = threading.Lock()

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        if sum(len(f.series) for f in batch.families()) < _INLINE_SERIES:
            self._queue(batch)
        else:
            # A large round (a new target's first one: every series' labels encoded) in a worker
            # thread, so the event loop goes on serving the API, /metrics and the other plugins.
            await asyncio.to_thread(self._queue, batch)
        return ExportResult.success()

    def _queue(self, batch: MetricBatch) -> None:
        """The batch's new samples into every writer's queue; one round at a time (a round that
        overran its deadline may still be queueing in its thread when the next one comes). The
        cyclic collector waits for the whole round, not only for the building of its samples: a
        tuple per sample alive when it ran again would have it walk every one of them while they
        were queued (a young collection over 500k tuples each round at 500k series)."""
        with self._lock, gc_paused(len(self._plugin._sent) + sum(len(f.series) for f in batch.families())):
            self._queue_round(batch)

    def _queue_round(self, batch: MetricBatch) -> None:
        p = self._plugin
        samples = p._remote_write_samples(batch)
        classic, native = p._exponential
        for w in p._writers:
            if w.config.send_native_histograms:
                if samples:
                    w.append(samples)
                if native:
                    w.append_encoded(native)
            elif samples or classic:
                w.append(samples + classic)

    async def force_flush(self, timeout: float) -> bool:
        results = await asyncio.gather(*(w.flush(timeout) for w in self._plugin._writers))
        return all(results)

    async def preview_export(self, batch: MetricBatch) -> list[str]:
        """The samples ``export`` would queue for each endpoint and the requests they make,
        nothing queued (``bridge.api.ExportPreviewHook``)."""
        import cramjam

        p = self._plugin
        samples = await asyncio.to_thread(p._remote_write_samples, batch)
        classic, native = p._exponential
        lines = []
        for w in p._writers:
            entries = [encode_sample(labels, value, ts) for labels, value, ts in samples + (
                [] if w.config.send_native_histograms else classic)]
            entries += [e for _, e in native] if w.config.send_native_histograms else []
            per = w.config.queue.max_samples_per_send
            chunks = [entries[i:i + per] for i in range(0, len(entries), per)]
            sizes = [len(cramjam.snappy.compress_raw(b"".join(c))) for c in chunks]
            lines.append(f"would POST {w.url} ({w.name}, snappy protobuf): {len(entries)} samples in {len(chunks)} "
                         f"request{'s' if len(chunks) != 1 else ''}, {sum(sizes)} bytes")
        return lines

    async def shutdown(self, timeout: float | None = None) -> None:
        for w in self._plugin._writers:
            await w.stop(2.0 if timeout is None else timeout)


class _PushgatewaySink:
    """A push of the batch's exposition (or of what ``match`` selects) to a Pushgateway."""

    def __init__(self, plugin: PrometheusIntegration, config: PushgatewayConfig) -> None:
        self._plugin = plugin
        self._config = config

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        return await self._plugin._push(batch, self._config)

    async def force_flush(self, timeout: float) -> bool:
        return True  # a push is sent at once: nothing is buffered

    async def preview_export(self, batch: MetricBatch) -> list[str]:
        """The push ``export`` would make, not made (``bridge.api.ExportPreviewHook``)."""
        from bridge.prometheus import render

        pg = self._config
        if pg.match:
            batch = batch.select(pg.match)
        body = render(batch.families())  # type: ignore[arg-type]
        series = sum(len(f.series) for f in batch.families())
        return [f"would PUT {display_url(pg.push_url())} (text 0.0.4): {len(body)} bytes, {series} series "
                f"of {len(batch.families())} metrics"]

    async def shutdown(self, timeout: float | None = None) -> None:
        return None


# --------------------------------------------------------------------------- helpers


#: How long a stopped instance's scrapers wait for a successor (``PrometheusIntegration._hand_over``).
HANDOVER_S = 120.0
# Scrapers left by stopped instances, by their setup, with when they were left.
_HANDOVER: dict[tuple[Any, ...], tuple[TargetScraper, float]] = {}


def _setup(target: Target, limits: ScrapeLimits, sc: ScrapeConfig) -> tuple[Any, ...]:
    """What a scraper's caches depend on: its target, limits, label handling and relabeling."""
    return (target.key, limits, sc.honor_labels, sc.honor_timestamps, repr(sc.metric_relabel_configs))


def _expire_handover() -> None:
    cutoff = time.monotonic() - HANDOVER_S
    for k in [k for k, (_, at) in _HANDOVER.items() if at <= cutoff]:
        del _HANDOVER[k]


#: Rounds with fewer series are queued on the event loop (a thread's hand-off costs more than they do).
_INLINE_SERIES = 2_000
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Attribute names that are label names as they are (see _scraped_labels), by name; bounded.
_PLAIN_NAMES: dict[str, bool] = {}


def _plain_name(k: str) -> bool:
    ok = _PLAIN_NAMES.get(k)
    if ok is None:
        if len(_PLAIN_NAMES) >= 4096:
            _PLAIN_NAMES.clear()
        ok = _PLAIN_NAMES[k] = _LABEL_NAME.fullmatch(k) is not None and "__" not in k
    return ok


def _scraped_labels(name: str, key: tuple[tuple[str, Any], ...]) -> bytes | None:
    """The encoded label set of a plain series of an imported (native) family, named ``name``,
    whose attribute key is ``key`` (sorted): what its Prometheus view holds, ``__name__`` and the
    key as it is, when every attribute is a string under a name the view keeps as it is (a label
    name with no run of underscores). None otherwise: the view then says what the labels are.
    Computed without making the view, which ``/metrics`` makes when it is scraped, and an
    agent that only remote-writes then never holds. ``_promfast.scraped_labels`` is its twin in C
    (140 ms of a new 100k-series target's first round in Python, 47 ms in C), used where it is built."""
    plain = _PLAIN_NAMES
    for k, v in key:
        if v.__class__ is not str or not (plain.get(k) or _plain_name(k)):
            return None
    return encode_named_labels(name, key)


def _expand_values(v: Any) -> list[float]:
    """A histogram's cumulative bucket counts, sum and count, or a summary's quantiles, sum and count."""
    if isinstance(v, ExponentialHistogramValue):
        from bridge.prometheus import as_histogram

        v = as_histogram(v)
    if isinstance(v, HistogramValue):
        out: list[float] = []
        cum = 0
        for c in v.bucket_counts:
            cum += c
            out.append(float(cum))
        return out + [float(v.sum), float(v.count)]
    assert isinstance(v, SummaryValue)
    return [float(x) for _, x in v.quantiles] + [float(v.sum), float(v.count)]


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def _parse_rfc3339(s: str) -> float:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def alert_to_alertmanager(a: Alert, external_url: str = "") -> dict[str, Any]:
    """An Alert as an element of Alertmanager's ``POST /api/v2/alerts`` body (``postableAlert``)."""
    labels = {"alertname": a.name, **({"severity": a.severity} if a.severity else {}), **a.labels}
    labels = {k: v for k, v in labels.items() if v != ""}
    body: dict[str, Any] = {"labels": labels, "annotations": dict(a.annotations), "startsAt": _rfc3339(a.starts_at)}
    if a.state is AlertState.RESOLVED:
        body["endsAt"] = _rfc3339(a.ends_at if a.ends_at is not None else time.time())
    elif a.ends_at is not None:
        body["endsAt"] = _rfc3339(a.ends_at)
    if external_url:
        body["generatorURL"] = external_url
    return body


def alert_from_prometheus(a: Mapping[str, Any]) -> Alert:
    """An alert of Prometheus' ``/api/v1/alerts`` as an Alert (firing; its value when it has one)."""
    labels = {str(k): str(v) for k, v in a["labels"].items()}
    name = labels.get("alertname", "")
    if not name:
        raise ValueError("alert has no alertname label")
    severity = labels.get("severity", "")
    value: float | None
    try:
        value = float(a.get("value", "nan"))
        if value != value:
            value = None
    except (TypeError, ValueError):
        value = None
    starts = a.get("activeAt")
    fp = fingerprint(labels)  # Alertmanager's fingerprint of the full label set
    return Alert(id="", name=name, severity=severity, state=AlertState.FIRING, labels=labels,
                 annotations={str(k): str(v) for k, v in (a.get("annotations") or {}).items()}, value=value,
                 starts_at=_parse_rfc3339(starts) if starts else time.time(), fingerprint=fp)
