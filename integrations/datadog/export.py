"""The ``datadog`` export sink: the pipeline's metrics, and alerts as events and service checks,
to Datadog's API.

What goes where (``url``, else ``https://api.<site>``; the key in ``DD-API-KEY``):

* metrics (``export``, every round; ``export_metrics``, the plugin API's path, builds the same
  from a list of ``Metric``): converted as ``integrations.datadog.convert`` states (gauges, count
  deltas with their interval, histograms as distribution points plus ``.count``/``.sum``,
  summaries as gauges) to ``POST /api/v2/series`` (gzip) and
  ``POST /api/v1/distribution_points`` (deflate, the one encoding Datadog documents for it);
* alerts (``export_alerts``, every alert round with the active alerts): a new or changed one
  (another severity or state) becomes an event (``POST /api/v1/events``: ``alert_type``
  ``error`` for critical/error/page severities, else ``warning``; ``aggregation_key`` its
  fingerprint) and a service check run (``POST /api/v1/check_run``, check
  ``monbridge.alert.<name>``, status 2 or 1); one gone or resolved an event ``success`` and a
  check run with status 0, with the host and tags its firing one had. What was sent is kept in
  ``<queue.path>/alerts.json``, so an alert resolved while monbridge was down still gets its OK.

Payload limits: every request is at most 512000 bytes as sent and less than 5242880 bytes
decompressed (Datadog's documented limits of ``/api/v2/series``, applied to the distribution
points too): series are packed into requests greedily under the decompressed bound, and a
request whose compressed size is over the other is split in halves until each fits. A single
series that alone exceeds a limit is dropped (counted ``too_large``, logged with its name),
never sent.

Delivery (as ``integrations.nagios.export``): every request is a record of a bounded queue
(``bridge.delivery.DiskQueue``; on disk under ``queue.path``, surviving restarts, in memory
without one); one sender posts them in order. HTTP 408, 429, 5xx, timeouts and connection errors
are retried with ``bridge.delivery.Backoff`` (``min_backoff`` to ``max_backoff``, jitter), a
``Retry-After`` honoured up to 300 s; any other answer (4xx, a redirect) drops the request,
counted by reason (``http_<status>``) and logged with a bounded, redacted excerpt of the body.
When ``queue.max_bytes`` is reached the oldest requests are dropped and counted (``max_bytes``).
``export`` queues the round and waits (within its timeout) for the queue to drain; a failing
delivery is a retryable result naming it, the requests staying queued.

The conversion's memory (what cumulative to delta needs) is kept in ``<queue.path>/state.json``,
written after each round's requests are queued.

Self-metrics (``self_metrics``): ``monbridge.datadog.export.payloads.sent`` and
``monbridge.datadog.export.series.sent`` (by endpoint), ``monbridge.datadog.export.retries``,
``monbridge.datadog.export.dropped`` (series, events and check runs, by reason),
``monbridge.datadog.export.skipped`` (points that sent nothing, by reason: ``baseline``,
``non_finite`` ...), ``monbridge.datadog.export.queue.bytes`` and ``.queue.pending``.

The API key is a ``SecretStr``: it is only ever put into the request header; errors and log lines
about a peer's answer are redacted (the key replaced) and bounded.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import math
import os
import re
import socket
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bridge.api import Alert, AlertState, ExportResult, Metric, MetricBatch, MetricKind
from bridge.delivery import Backoff, classify_error, classify_status
from bridge.helpers import EXCERPT_BYTES, peer_excerpt
from bridge.queued import QueuedSender, Sent
from integrations.datadog.config import ExportConfig
from integrations.datadog.convert import Converted, Converter, Point, tags_of

__all__ = ["ENDPOINTS", "MAX_COMPRESSED_BYTES", "MAX_DECOMPRESSED_BYTES", "DatadogExporter", "pack"]

log = logging.getLogger("monbridge.datadog.export")

#: Datadog's limits of one ``/api/v2/series`` request: as sent, and decompressed (less than).
MAX_COMPRESSED_BYTES = 512_000
MAX_DECOMPRESSED_BYTES = 5_242_880
#: Record kind (the first byte of a queued record) → (path, Content-Encoding, JSON key, endpoint name).
ENDPOINTS: dict[bytes, tuple[str, str | None, str]] = {
    b"s": ("/api/v2/series", "gzip", "series"),
    b"d": ("/api/v1/distribution_points", "deflate", "distribution_points"),
    b"e": ("/api/v1/events", None, "events"),
    b"c": ("/api/v1/check_run", None, "check_run"),
}
_ERROR_SEVERITIES = frozenset(("critical", "error", "page", "high", "fatal", "emergency"))
_CHECK_NAME = re.compile(r"[^A-Za-z0-9_.]+")
_MAX_RESPONSE_BYTES = 64 << 10


def _compress(kind: bytes, data: bytes) -> bytes:
    return gzip.compress(data, 6) if kind == b"s" else zlib.compress(data, 6)


def pack(kind: bytes, key: str, items: Sequence[bytes],
         max_compressed: int = MAX_COMPRESSED_BYTES, max_decompressed: int = MAX_DECOMPRESSED_BYTES,
         ) -> tuple[list[tuple[bytes, int]], list[int]]:
    """``items`` (JSON documents) as request bodies ``{"<key>":[...]}``, compressed for ``kind``:
    each at most ``max_compressed`` bytes and less than ``max_decompressed`` decompressed.
    Returns (bodies with their item counts, the indexes of items that alone exceed a limit)."""
    head = b'{"' + key.encode() + b'":['
    overhead = len(head) + 2
    too_large: list[int] = []
    chunks: list[list[int]] = []
    cur: list[int] = []
    size = overhead
    for i, it in enumerate(items):
        n = len(it) + (1 if cur else 0)
        if overhead + len(it) >= max_decompressed:
            too_large.append(i)
            continue
        if size + n >= max_decompressed:
            chunks.append(cur)
            cur, size, n = [], overhead, len(it)
        cur.append(i)
        size += n
    if cur:
        chunks.append(cur)
    out: list[tuple[bytes, int]] = []
    while chunks:
        chunk = chunks.pop(0)
        body = _compress(kind, head + b",".join(items[i] for i in chunk) + b"]}")
        if len(body) <= max_compressed:
            out.append((body, len(chunk)))
        elif len(chunk) == 1:
            too_large.append(chunk[0])
        else:
            mid = len(chunk) // 2
            chunks[:0] = [chunk[:mid], chunk[mid:]]
    return out, sorted(too_large)


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _check_name(alert_name: str) -> str:
    return "monbridge.alert." + (_CHECK_NAME.sub("_", alert_name).strip("_.") or "alert")[:150]


class _Sent:
    """What an alert's firing notice was sent with (to resolve it the same way)."""

    __slots__ = ("name", "severity", "host", "tags", "check")

    def __init__(self, name: str, severity: str, host: str, tags: list[str], check: str) -> None:
        self.name, self.severity, self.host, self.tags, self.check = name, severity, host, tags, check


class DatadogExporter:
    """Metrics, events and service checks to Datadog (see the module doc)."""

    def __init__(self, config: ExportConfig) -> None:
        self.config = config
        self.base_url = (config.url or f"https://api.{config.site}").rstrip("/")
        self.hostname = config.hostname or socket.gethostname()
        self.tags = list(config.tags or ())
        q = config.queue
        self._base = Path(q.path) if q.path else None
        self._sender = QueuedSender("datadog_export", "datadog export", "items", self.base_url,
                                    self._base / "queue" if self._base else None, q.max_bytes, q.fsync,
                                    Backoff(q.min_backoff, q.max_backoff), logger=log)
        self._converter = Converter(self.hostname, self.tags, horizon_ns=time.time_ns(),
                                    max_series=config.max_series, max_values=config.max_distribution_values)
        self._convert_lock = asyncio.Lock()
        self._alerts: dict[str, _Sent] = {}
        self._session: Any = None
        self._started = False
        self.payloads_sent: dict[str, int] = defaultdict(int)
        self.items_sent: dict[str, int] = defaultdict(int)
        self.dropped = self._sender.dropped

    def __repr__(self) -> str:
        return f"DatadogExporter(url={self.base_url!r}, hostname={self.hostname!r})"

    # ------------------------------------------------------------------ life

    @property
    def retries(self) -> int:
        return self._sender.retries

    async def start(self) -> None:
        import aiohttp

        await self._sender.open()
        if self._base is not None:
            await asyncio.to_thread(self._load)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        self._started = True
        log.info("datadog export to %s as host %s: queue %s, %d items pending", self.base_url, self.hostname,
                 self._sender.where(), self._sender.pending)
        self._sender.start(self._send, "datadog-export")

    async def force_flush(self, timeout: float) -> bool:
        return await self._sender.drained(timeout, stop_on_failure=False) is None

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._sender.stopped:
            return
        await self._sender.close(timeout)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        assert self._base is not None
        for name, read in (("state.json", self._converter.restore), ("alerts.json", self._restore_alerts)):
            path = self._base / name
            try:
                read(json.loads(path.read_text()))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError) as e:
                log.warning("datadog export: %s cannot be read (%s); starting without it", path, e)

    def _restore_alerts(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            raise ValueError("not an object of alerts")
        for fp, e in doc.items():
            if isinstance(e, list) and len(e) == 5 and all(isinstance(x, str) for x in (e[0], e[1], e[2], e[4])) \
                    and isinstance(e[3], list):
                self._alerts[str(fp)] = _Sent(e[0], e[1], e[2], [str(t) for t in e[3]], e[4])

    def _save(self, name: str, doc: Any) -> None:
        if self._base is None:
            return
        path = self._base / name
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, path)
        except OSError as e:
            log.warning("datadog export: cannot write %s: %s", path, e)

    # ------------------------------------------------------------------ the queue

    def _count_drop(self, n: int, reason: str, detail: str = "") -> None:
        self._sender.count_drop(n, reason, detail)

    async def _enqueue(self, records: list[tuple[bytes, int]]) -> None:
        await self._sender.put(records, "a request")

    def _headers(self, encoding: str | None) -> dict[str, str]:
        key = self.config.api_key
        assert key is not None
        h = {"DD-API-KEY": key.get_secret_value(), "Content-Type": "application/json", "User-Agent": "monbridge"}
        if encoding:
            h["Content-Encoding"] = encoding
        return h

    def _redact(self, text: str) -> str:
        key = self.config.api_key.get_secret_value() if self.config.api_key is not None else ""
        return text.replace(key, "<secret>") if len(key) >= 3 else text

    async def _post(self, kind: bytes, body: bytes) -> tuple[ExportResult, int]:
        """One request: its outcome and HTTP status (0 when none came)."""
        import aiohttp

        path, encoding, _ = ENDPOINTS[kind]
        url = self.base_url + path
        timeout = self.config.timeout
        try:
            async with self._session.post(url, data=body, headers=self._headers(encoding), allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                status = r.status
                answer = await r.content.read(_MAX_RESPONSE_BYTES if 200 <= status < 300 else EXCERPT_BYTES)
                why = f"{path}: HTTP {status}"
                if not 200 <= status < 300:
                    why += f": {peer_excerpt(self._redact(answer.decode('utf-8', 'replace')))}"
                return classify_status(status, why, r.headers.get("Retry-After")), status
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return ExportResult.retryable(f"{path}: no answer within {timeout:g} s"), 0
        except Exception as e:  # noqa: BLE001 - connection errors and the like: classified, never raised
            return classify_error(e, f"{path}: {type(e).__name__}: {peer_excerpt(self._redact(str(e)))}"), 0

    async def _send(self, payloads: list[bytes], n: int) -> Sent:
        """One queued record (its kind's byte, then the body) posted to its endpoint."""
        record = payloads[0]
        kind, body = record[:1], record[1:]
        if kind not in ENDPOINTS:
            return Sent(ExportResult.permanent("a queued record of no known kind"), drop_reason="bad_record")
        result, status = await self._post(kind, body)
        if result.ok:
            name = ENDPOINTS[kind][2]
            self.payloads_sent[name] += 1
            self.items_sent[name] += n
        return Sent(result, n, f"http_{status}" if status else "refused")

    async def _drained(self, timeout: float, stop_on_failure: bool = True) -> str | None:
        return await self._sender.drained(timeout, stop_on_failure)

    # ------------------------------------------------------------------ metrics

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        def points() -> Iterable[Point]:
            for f in batch.families():
                for s in f.series:
                    yield Point(f.name, f.kind, s.value, s.attributes, s.start_ns, s.time_ns,
                                accumulated=s.accumulated, first_ns=s.first_ns)

        return await self._export_points(points, timeout)

    async def export_metrics(self, metrics: Sequence[Metric]) -> ExportResult:
        """The plugin API's export: the same requests from a list of ``Metric`` (a cumulative
        point without ``start_time_ns`` has an unknown start)."""
        now = time.time_ns()

        def points() -> Iterable[Point]:
            for m in metrics:
                yield Point(m.name, m.kind, m.value, m.attributes, m.start_time_ns, m.timestamp_ns or now)

        return await self._export_points(points, self.config.timeout)

    async def _export_points(self, points: Callable[[], Iterable[Point]], timeout: float) -> ExportResult:
        if not self._started:
            return ExportResult.permanent("datadog export is not started")
        async with self._convert_lock:
            records, too_large, state = await asyncio.to_thread(self._build, points)
            for name in too_large:
                self._count_drop(1, "too_large", f"series {name[:100]!r} alone exceeds Datadog's payload limits")
            try:
                await self._enqueue(records)
            except OSError as e:
                return ExportResult.retryable(f"datadog export queue: {e.strerror or e}")
            if state is not None:
                await asyncio.to_thread(self._save, "state.json", state)
        reason = await self._drained(timeout * 0.9)
        return ExportResult.success() if reason is None else ExportResult.retryable(reason)

    def _build(self, points: Callable[[], Iterable[Point]]) -> tuple[list[tuple[bytes, int]], list[str], Any]:
        """Convert and pack (in a worker thread): queue records, names of series too large, the state to keep."""
        converted: Converted = self._converter.convert(points())
        records: list[tuple[bytes, int]] = []
        too_large: list[str] = []
        for kind, key, items in ((b"s", "series", converted.series), (b"d", "series", converted.distributions)):
            if not items:
                continue
            encoded = [_dumps(it) for it in items]
            bodies, big = pack(kind, key, encoded)
            records.extend((kind + body, n) for body, n in bodies)
            too_large.extend(items[i]["metric"] for i in big)
        return records, too_large, self._converter.state() if self._base is not None else None

    # ------------------------------------------------------------------ alerts

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        """Events and check runs for what changed since the last call (``alerts``: the active ones)."""
        if not self._started:
            return
        now = int(time.time())
        active: dict[str, Alert] = {}
        for a in alerts:
            if a.state is not AlertState.RESOLVED:
                active[a.fingerprint or a.id] = a
        records: list[tuple[bytes, int]] = []
        before = dict(self._alerts)
        for fp, a in active.items():
            prev = self._alerts.get(fp)
            if prev is not None and prev.severity == (a.severity or "") and prev.name == a.name:
                continue
            labels = {k: v for k, v in a.labels.items() if k != "alertname"}
            host, tags = tags_of(labels, self.tags)
            host = host or self.hostname
            tags = [f"alertname:{a.name}", *tags]
            sent = _Sent(a.name, a.severity or "", host, tags, _check_name(a.name))
            self._alerts[fp] = sent
            error = sent.severity.lower() in _ERROR_SEVERITIES
            summary = a.annotations.get("summary") or a.annotations.get("description") or ""
            value = f" (value {a.value:g})" if a.value is not None and math.isfinite(a.value) else ""
            text = f"{a.name} [{a.severity or 'none'}] firing{value}" + (f": {summary}" if summary else "")
            records += self._alert_records(fp, sent, "error" if error else "warning", 2 if error else 1,
                                           f"[{'Error' if error else 'Warning'}] {a.name}", text,
                                           int(a.starts_at) if math.isfinite(a.starts_at) else now, now)
        for fp in [fp for fp in self._alerts if fp not in active]:
            sent = self._alerts.pop(fp)
            records += self._alert_records(fp, sent, "success", 0, f"[Recovered] {sent.name}",
                                           f"{sent.name} resolved", now, now)
        if not records:
            return
        try:
            await self._enqueue(records)
        except OSError as e:  # not queued: tried again at the next call
            self._alerts = before
            log.warning("datadog export: the queue refused %d alert notices (%s); tried again next round",
                        len(records), e.strerror or e)
            return
        await asyncio.to_thread(self._save, "alerts.json",
                                {fp: [s.name, s.severity, s.host, s.tags, s.check] for fp, s in self._alerts.items()})

    def _alert_records(self, fp: str, sent: _Sent, alert_type: str, status: int, title: str, text: str,
                       when: int, now: int) -> list[tuple[bytes, int]]:
        when = when if now - 18 * 3600 < when <= now else now  # Datadog takes events of the last 18 hours
        event = {"title": title[:100], "text": text[:4000], "alert_type": alert_type, "aggregation_key": fp[:100],
                 "host": sent.host, "tags": sent.tags, "date_happened": when, "source_type_name": "monbridge"}
        check = [{"check": sent.check, "host_name": sent.host, "status": status, "tags": sent.tags,
                  "message": text[:4000], "timestamp": now}]
        return [(b"e" + _dumps(event), 1), (b"c" + _dumps(check), 1)]

    # ------------------------------------------------------------------ self-metrics

    def self_metrics(self) -> list[Metric]:
        prefix = "monbridge.datadog.export."
        q = self._sender
        out = [
            Metric(prefix + "retries", MetricKind.COUNTER, float(self.retries), "{request}",
                   "requests to Datadog that failed and are retried"),
            Metric(prefix + "queue.bytes", MetricKind.GAUGE, float(q.queued_bytes), "By",
                   "bytes of requests waiting for delivery"),
            Metric(prefix + "queue.pending", MetricKind.GAUGE, float(q.pending), "{item}",
                   "series, events and check runs waiting for delivery"),
        ]
        for endpoint, _, name in ENDPOINTS.values():
            labels = {"endpoint": endpoint}
            out.append(Metric(prefix + "payloads.sent", MetricKind.COUNTER, float(self.payloads_sent[name]),
                              "{request}", "requests Datadog accepted", labels))
            out.append(Metric(prefix + "series.sent", MetricKind.COUNTER, float(self.items_sent[name]), "{item}",
                              "series, events and check runs Datadog accepted", labels))
        for reason, n in sorted(self.dropped.items()):
            out.append(Metric(prefix + "dropped", MetricKind.COUNTER, float(n), "{item}",
                              "series, events and check runs dropped, by reason", {"reason": reason}))
        c = self._converter.counts
        for reason in ("baseline", "non_finite", "out_of_order", "layout_changed", "forgotten", "sampled_values"):
            out.append(Metric(prefix + "skipped", MetricKind.COUNTER, float(getattr(c, reason)), "{point}",
                              "points that sent nothing (or values not sent), by reason", {"reason": reason}))
        return out
