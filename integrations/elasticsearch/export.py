"""The ``elasticsearch`` export sink: the pipeline's metrics into time-series data streams, alert
transitions into ``logs-monbridge.alerts-<namespace>``, through the official client.

Metrics (``export`` every round; ``export_metrics``, the plugin API's path, the same from a list
of ``Metric``): documents as ``integrations.elasticsearch.mapping`` lays them out, written with
``create`` operations into their data streams (Elasticsearch creates a data stream on its first
write, from the index template ``start`` installed: ``integrations.elasticsearch.templates``; when
the cluster cannot be reached at start, they are installed before the first write).

Alerts (``export_alerts``, every alert round with the active alerts): an alert new, or whose state
changed, becomes an ECS event (``event.kind: alert``, ``event.action`` ``firing``,
``acknowledged`` or ``resolved``; ``rule.name``, ``event.severity`` (the syslog number of the
severity's name, which is also the label ``severity``), ``labels``, ``message``, ``event.start``
and for a resolved one ``event.end``); one gone from the active ones is ``resolved``. What was
sent is kept in ``<queue.path>/alerts.json``, so an alert resolved while monbridge was down is
still written resolved; ``trace.id`` is written when the alert has a 32-hex-digit ``trace_id``
annotation. In a running agent the alert engine gives the integration its transitions' log
records instead (``telemetry_exporters``; ``integrations.elasticsearch.events``): then every
transition is written, in order, with ``trace.id`` and ``span.id`` of the alert's span, and
``export_alerts`` writes nothing (it would write the same transitions again).

Logs (``logs: true``): monbridge's own log records at ``log_level`` and above, as ECS log
documents in ``logs-monbridge.log-<namespace>`` (``events.LogShipper``: a handler on the root
logger while the exporter runs), queued every ``events.LOG_FLUSH_S`` seconds; records beyond the
handler's buffer are dropped and counted (``dropped{reason="log_buffer_full"}``).

Bulk requests: NDJSON bodies of at most ``bulk.max_documents`` documents and ``bulk.max_bytes``
bytes, built once when the round is queued and sent as they are (``client.bulk(operations=<bytes>)``:
the client's NDJSON serializer passes bytes through). Measured on a body of 5000 documents of 20
metrics each (6.8 MB): the client takes the bytes in 30 ms, the same operations as dicts in 420 ms
(it ``json.dumps`` every line on the event loop, at every attempt); the raw
``perform_request`` would save nothing more and skip the client's API checks. A document that alone exceeds
``bulk.max_bytes`` is dropped (``too_large``).

Delivery: every bulk body is a record of a bounded queue (``bridge.queued.QueuedSender``, on disk
under ``queue.path``, surviving restarts; in memory without one), sent in order by one task. A
request that fails as a whole (no connection, a timeout, 408/429/5xx) is retried with
``bridge.delivery.Backoff`` (``queue.min_backoff`` to ``queue.max_backoff``, ``Retry-After``
honoured) and stays queued; another whole-request answer (4xx) drops the request, counted
(``http_<status>``) and logged. Each item's result is read: 429 and 5xx items are queued again
(after a backoff) and counted as ``retries``; a 409 (the document exists: a time series
document's ``_id`` is its dimensions and timestamp, so a resend after a restart lands here) counts
as delivered (``duplicates``); any other failed item (a mapping error) is dropped, counted by
its error type (``dropped{reason=<type>}``) and logged with Elasticsearch's reason (bounded).
An answer larger than ``max_response_bytes`` (``integrations.elasticsearch.client``: no bulk
answer Elasticsearch gives comes near it with the export's ``filter_path``) drops its request's
documents (``answer_too_large``): whether they were written cannot be known.
``export`` queues the round and waits (within its timeout) for the queue to drain; a failing
delivery is a retryable result, the requests staying queued.

Self-metrics (``self_metrics``), ``monbridge.elasticsearch.export.``: ``documents.sent``,
``requests.sent``, ``retries`` (requests and items), ``duplicates``, ``dropped`` (documents,
by reason), ``skipped`` (points, by reason), ``alerts.sent`` and ``queue.bytes``/``queue.pending``.

Secrets (API key, password, bearer token) are the client's alone; what the client's errors say is
redacted and bounded before it is logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bridge.api import Alert, AlertState, ExportResult, ExportStatus, Metric, MetricBatch, MetricKind
from bridge.delivery import Backoff, classify_error, classify_status
from bridge.helpers import peer_excerpt
from bridge.queued import QueuedSender, Sent
from integrations.elasticsearch.client import describe, too_large
from integrations.elasticsearch.config import ElasticsearchConfig
from integrations.elasticsearch.events import (
    LOG_FLUSH_S,
    SEVERITY_NUMBERS,
    AlertRecordExporter,
    LogShipper,
    alert_document,
)
from integrations.elasticsearch.mapping import Mapper, Point
from integrations.elasticsearch.templates import install

__all__ = ["SEVERITY_NUMBERS", "ElasticExporter", "pack", "pack_lines"]

log = logging.getLogger("monbridge.elasticsearch.export")

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_LOG_REASONS_MAX = 5
#: What of a bulk answer is read: Elasticsearch leaves out the rest of each item (``_id``,
#: ``_version``, ``_shards`` ...), most of the answer's bytes and of the client's parsing on the loop.
_FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"
_MAX_REASONS = 32
#: The attributes of a point whose series the mapping knows (it does not read them).
_KNOWN: dict[str, Any] = {}
#: ``_bulk``'s status for an answer larger than ``max_response_bytes``.
_TOO_LARGE = -1
_REASON = re.compile(r"[^A-Za-z0-9_.]")


def pack(ops: Sequence[tuple[bytes, bytes]], max_documents: int, max_bytes: int,
         ) -> tuple[list[tuple[bytes, int]], list[int]]:
    """Bulk bodies of ``ops`` (action and document lines): (body, documents) each within the
    bounds, and the indexes of operations that alone exceed ``max_bytes``."""
    return pack_lines([a for a, _ in ops], [d for _, d in ops], max_documents, max_bytes)


def pack_lines(actions: Sequence[Any], docs: Sequence[Any], max_documents: int, max_bytes: int,
               ) -> tuple[list[tuple[bytes, int]], list[int]]:
    """``pack`` of action and document lines given apart, as bytes or as text (the mapping's:
    JSON with non-ASCII escaped, so that its length in characters is its length in bytes; a
    line that is not ASCII is measured encoded). A body of text is encoded once, whole."""
    out: list[tuple[bytes, int]] = []
    too_large: list[int] = []
    text = bool(actions) and isinstance(actions[0], str)
    nl: Any = "\n" if text else b"\n"
    cur: list[Any] = []
    size = 0

    def body() -> bytes:
        joined = nl.join(cur) + nl
        return joined.encode("utf-8", "surrogatepass") if text else joined  # type: ignore[no-any-return]

    for i in range(len(actions)):
        action, doc = actions[i], docs[i]
        k = len(action) + len(doc) + 2
        if text and not (action.isascii() and doc.isascii()):
            k = len((action + doc).encode("utf-8", "surrogatepass")) + 2
        if k > max_bytes:
            too_large.append(i)
            continue
        if cur and (len(cur) >= 2 * max_documents or size + k > max_bytes):
            out.append((body(), len(cur) // 2))
            cur, size = [], 0
        cur.append(action)
        cur.append(doc)
        size += k
    if cur:
        out.append((body(), len(cur) // 2))
    return out, too_large


class _Sent:
    __slots__ = ("name", "state", "severity", "labels", "starts_at", "trace_id")

    def __init__(self, name: str, state: str, severity: str, labels: dict[str, str], starts_at: float,
                 trace_id: str | None) -> None:
        self.name, self.state, self.severity, self.labels = name, state, severity, labels
        self.starts_at, self.trace_id = starts_at, trace_id

    def dump(self) -> list[Any]:
        return [self.name, self.state, self.severity, self.labels, self.starts_at, self.trace_id]


class ElasticExporter:
    """Metrics and alert events into Elasticsearch (see the module doc)."""

    def __init__(self, cfg: ElasticsearchConfig, client: Any) -> None:
        self.cfg = cfg
        self.client = client
        self.target = describe(cfg)
        q = cfg.queue
        self._base = Path(q.path) if q.path else None
        self._sender = QueuedSender("elasticsearch_export", "elasticsearch export", "documents", self.target,
                                    self._base / "queue" if self._base else None, q.max_bytes, q.fsync,
                                    Backoff(q.min_backoff, q.max_backoff), logger=log)
        self._mapper = Mapper(cfg)
        self._map_lock = asyncio.Lock()
        self._templates_ok = not cfg.templates.install
        self._last_time: dict[object, int] = {}
        self._alerts: dict[str, _Sent] = {}
        self._started = False
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._shipper: LogShipper | None = None
        self._log_task: asyncio.Task[None] | None = None
        #: The alert engine's transition records reach ``submit``: ``export_alerts`` writes nothing.
        self.engine_alerts = False
        self.logs_sent = 0
        self.documents_sent = 0
        self.requests_sent = 0
        self.duplicates = 0
        self.alerts_sent = 0
        self.dropped = self._sender.dropped

    def __repr__(self) -> str:
        return f"ElasticExporter({self.target!r})"

    # ------------------------------------------------------------------ life

    @property
    def retries(self) -> int:
        return self._sender.retries

    async def start(self) -> None:
        await self._sender.open()
        if self._base is not None:
            await asyncio.to_thread(self._load)
        self._started = True
        if self.cfg.templates.install:
            await self._install()
        log.info("elasticsearch export to %s (%s mapping): queue %s, %d documents pending", self.target,
                 self.cfg.mapping, self._sender.where(), self._sender.pending)
        self._loop = asyncio.get_running_loop()
        self._sender.start(self._send, "elasticsearch-export")
        if self.cfg.logs:
            self._shipper = LogShipper(self.cfg.namespace, logging.getLevelName(self.cfg.log_level.upper()))
            logging.getLogger().addHandler(self._shipper)
            self._log_task = self._loop.create_task(self._ship_logs(), name="elasticsearch-logs")

    async def _install(self) -> ExportResult:
        """Install the templates; until they are, nothing is written (a data stream created from
        another template would refuse every document). A cluster that cannot be reached (or
        answers 408, 429, 5xx) is tried again before the next write; another answer (403: no
        privilege to manage templates) is logged and writing goes on with the templates there are."""
        from elasticsearch import ApiError

        try:
            await install(self.cfg, self.client)
        except asyncio.CancelledError:
            raise
        except ApiError as e:
            status = int(getattr(e.meta, "status", 0) or 0)
            result = classify_status(status, f"templates: HTTP {status}: {self._why(e)}")
            if result.status is ExportStatus.RETRYABLE:
                log.warning("elasticsearch export: %s; installed before the first write", result.reason)
                return result
            log.warning("elasticsearch export: %s; writing with the templates the cluster has", result.reason)
        except Exception as e:  # noqa: BLE001 - the cluster may be down: documents wait in the queue
            reason = f"templates: {self._why(e)}"
            log.warning("elasticsearch export: %s; installed before the first write", reason)
            return ExportResult.retryable(reason)
        self._templates_ok = True
        return ExportResult.success()

    async def force_flush(self, timeout: float) -> bool:
        return await self._drained(timeout, stop_on_failure=False) is None

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._stopped:
            return
        if self._shipper is not None:
            logging.getLogger().removeHandler(self._shipper)
            if self._log_task is not None:
                self._log_task.cancel()
                try:
                    await self._log_task
                except asyncio.CancelledError:
                    pass
            await self._flush_logs()  # the records logged up to now
        if self._pending:
            await asyncio.wait(self._pending, timeout=timeout or None)
        self._stopped = True
        await self._sender.close(timeout)

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        assert self._base is not None
        path = self._base / "alerts.json"
        try:
            doc = json.loads(path.read_text())
            if not isinstance(doc, dict):
                raise ValueError("not an object of alerts")
            for fp, e in doc.items():
                if (isinstance(e, list) and len(e) == 6 and isinstance(e[0], str) and isinstance(e[1], str)
                        and isinstance(e[2], str) and isinstance(e[3], dict) and isinstance(e[4], (int, float))):
                    self._alerts[str(fp)] = _Sent(e[0], e[1], e[2], {str(k): str(v) for k, v in e[3].items()},
                                                  float(e[4]), e[5] if isinstance(e[5], str) else None)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as e:
            log.warning("elasticsearch export: %s cannot be read (%s); starting without it", path, e)

    def _save_alerts(self) -> None:
        if self._base is None:
            return
        path = self._base / "alerts.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({fp: s.dump() for fp, s in self._alerts.items()}, separators=(",", ":")))
            os.replace(tmp, path)
        except OSError as e:
            log.warning("elasticsearch export: cannot write %s: %s", path, e)

    # ------------------------------------------------------------------ the queue

    def _why(self, e: BaseException) -> str:
        text = str(e)
        for secret in self._secrets():
            text = text.replace(secret, "<secret>")
        return f"{type(e).__name__}: {peer_excerpt(text)}"

    def _secrets(self) -> list[str]:
        c = self.cfg
        out = [s.get_secret_value() for s in (c.api_key, c.bearer_token) if s is not None]
        if c.basic_auth is not None:
            out.append(c.basic_auth.password.get_secret_value())
        return [s for s in out if len(s) >= 3]

    def _count_drop(self, n: int, reason: str, detail: str = "") -> None:
        self._sender.count_drop(n, reason, detail)

    async def _enqueue(self, records: list[tuple[bytes, int]]) -> None:
        if self._stopped:
            self._count_drop(sum(n for _, n in records), "stopped")
            return
        await self._sender.put(records, "a bulk request")

    def _bodies(self, index: str, docs: list[dict[str, Any]], what: str) -> list[tuple[bytes, int]]:
        """Bulk bodies of ``create`` operations of ``docs`` into ``index`` (too large ones dropped, counted)."""
        action = json.dumps({"create": {"_index": index}}).encode()
        ops = [(action, json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
               for d in docs]
        bodies, big = pack(ops, self.cfg.bulk.max_documents, self.cfg.bulk.max_bytes)
        if big:
            self._count_drop(len(big), "too_large", f"{what} larger than bulk.max_bytes")
        return bodies

    # ------------------------------------------------------------------ the engine's alerts, the agent's logs

    def telemetry_exporters(self) -> tuple[None, AlertRecordExporter] | None:
        """The alert engine's transition records as alert events (see the module doc)."""
        if not self.cfg.alerts:
            return None
        self.engine_alerts = True
        return None, AlertRecordExporter(self.cfg.namespace, self.submit_alerts)

    def submit_alerts(self, docs: list[dict[str, Any]]) -> bool:
        """Queue alert events from any thread (the engine's telemetry thread). False when the
        exporter is not running: the engine keeps handing its records to an instance a reload
        replaced (its processors cannot be removed), and the instance that replaced it writes
        them; they are not counted as dropped here."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopped:
            return False
        bodies = self._bodies(f"logs-monbridge.alerts-{self.cfg.namespace}", docs, "an alert event")

        def go() -> None:
            if self._stopped:
                return
            self.alerts_sent += len(docs)
            task = asyncio.get_running_loop().create_task(self._enqueue(bodies))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        try:
            loop.call_soon_threadsafe(go)
        except RuntimeError:  # the loop closed meanwhile
            return False
        return True

    async def _ship_logs(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_S)
            try:
                await self._flush_logs()
            except OSError as e:
                log.warning("elasticsearch export: cannot queue log records: %s", e.strerror or e)

    async def _flush_logs(self) -> None:
        assert self._shipper is not None
        docs, dropped = self._shipper.take()
        if dropped:
            self._count_drop(dropped, "log_buffer_full", "log records beyond the log buffer")
        if not docs:
            return
        bodies = await asyncio.to_thread(self._bodies, f"logs-monbridge.log-{self.cfg.namespace}", docs,
                                         "a log record")
        await self._enqueue(bodies)
        self.logs_sent += len(docs)

    async def _bulk(self, body: bytes) -> tuple[ExportResult, int, Any]:
        """One bulk request: its outcome, HTTP status (0 when none came) and the parsed answer."""
        from elasticsearch import ApiError

        try:
            resp = await self.client.bulk(operations=body, filter_path=_FILTER_PATH)
            return ExportResult.success(), 200, resp.body
        except asyncio.CancelledError:
            raise
        except ApiError as e:
            status = int(getattr(e.meta, "status", 0) or 0)
            headers = getattr(e.meta, "headers", None) or {}
            return classify_status(status, f"_bulk: HTTP {status}: {self._why(e)}", headers.get("Retry-After")), \
                status, None
        except Exception as e:  # noqa: BLE001 - connection errors, timeouts: classified, never raised
            big = too_large(e)
            if big is not None:  # no answer Elasticsearch gives: the request's documents are dropped
                return ExportResult.permanent(f"_bulk: {big}"), _TOO_LARGE, None
            result = classify_error(e, f"_bulk: {self._why(e)}")
            name = type(e).__name__
            if result.status is ExportStatus.PERMANENT and name in ("ConnectionError", "ConnectionTimeout",
                                                                    "TransportError", "SerializationError"):
                result = ExportResult.retryable(result.reason)
            return result, 0, None

    def _items(self, body: bytes, answer: Any, n_ops: int | None = None) -> tuple[int, list[bytes], int]:
        """Read a bulk answer's items: (documents accepted, operations to retry, documents dropped).
        ``n_ops``: the body's operations when known (its queue record's count), else counted."""
        items = answer.get("items") if isinstance(answer, dict) else None
        if n_ops is None:
            n_ops = body.count(b"\n") // 2
        if not isinstance(items, list) or len(items) != n_ops:
            self._count_drop(n_ops, "bad_answer", f"a bulk answer of {len(items) if isinstance(items, list) else 0} "
                                                  f"items to {n_ops} operations")
            return 0, [], n_ops
        if answer.get("errors") is False:
            return n_ops, [], 0
        lines = body.split(b"\n")
        ok = dropped = 0
        retry: list[bytes] = []
        reasons: dict[str, list[str]] = defaultdict(list)
        for i, item in enumerate(items):
            res: Any = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
            status = res.get("status", 0) if isinstance(res, dict) else 0
            status = status if isinstance(status, int) else 0
            if 200 <= status < 300:
                ok += 1
            elif status == 409:
                self.duplicates += 1
                ok += 1
            elif status == 429 or status >= 500:
                retry += (lines[2 * i], b"\n", lines[2 * i + 1], b"\n")
            else:
                err: Any = res.get("error") if isinstance(res, dict) else None
                kind = f"http_{status}"
                if isinstance(err, dict) and isinstance(err.get("type"), str):
                    kind = _REASON.sub("_", err["type"])[:64]
                if kind not in self.dropped and len(self.dropped) >= _MAX_REASONS:
                    kind = "other"  # a peer's error types are no label values without bound
                why = err.get("reason") if isinstance(err, dict) else None
                reasons[kind].append(peer_excerpt(str(why)) if why else f"HTTP {status}")
                dropped += 1
        for kind, why in reasons.items():
            self.dropped[kind] += len(why)
            log.warning("elasticsearch export: %d documents dropped: %s: %s", len(why), kind,
                        "; ".join(why[:_LOG_REASONS_MAX]))
        return ok, retry, dropped

    async def _send(self, payloads: list[bytes], n: int) -> Sent:
        """One queued bulk request (its templates installed first)."""
        body = payloads[0]
        if not self._templates_ok:
            installed = await self._install()
            if not installed.ok:
                return Sent(installed)
        result, status, answer = await self._bulk(body)
        if not result.ok:
            return Sent(result, drop_reason="answer_too_large" if status == _TOO_LARGE
                        else f"http_{status}" if status else "refused")
        ok, retry, _ = await asyncio.to_thread(self._items, body, answer, n)
        self.requests_sent += 1
        self.documents_sent += ok
        return Sent(result, ok, requeue=[(b"".join(retry), len(retry) // 4)] if retry else [])

    async def _drained(self, timeout: float, stop_on_failure: bool = True) -> str | None:
        """None once the queue is empty; else why not (``bridge.delivery.drained``)."""
        return await self._sender.drained(timeout, stop_on_failure)

    # ------------------------------------------------------------------ metrics

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        def points() -> Iterable[Point]:
            # A point already written (the series was not collected again since) is not written
            # twice: its time series document exists (Elasticsearch would answer 409).
            # A series the mapping knows (by its identity) has its attributes not read again. One
            # Point is filled for every series (the mapping reads a point when it comes).
            last, seen, known = self._last_time, {}, self._mapper.series
            p = Point("", MetricKind.GAUGE, 0.0, _KNOWN, 0)
            for f in batch.families():
                p.name, p.kind = f.name, f.kind
                for s in f.series:
                    t = s.time_ns
                    key = s.identity
                    seen[key] = t
                    prev = last.get(key)
                    if prev is not None and t <= prev:
                        self._mapper.counts.unchanged += 1
                        continue
                    p.value, p.time_ns, p.key = s.value, t, key
                    p.attributes = _KNOWN if key in known else s.attributes
                    yield p
            self._last_time = seen  # only the batch's series: a series gone is forgotten

        return await self._export_points(points, dict(batch.resource_attributes), timeout)

    async def export_metrics(self, metrics: Sequence[Metric]) -> ExportResult:
        """The plugin API's export: the same documents from a list of ``Metric``."""
        now = time.time_ns()

        def points() -> Iterable[Point]:
            for m in metrics:
                yield Point(m.name, m.kind, m.value, m.attributes, m.timestamp_ns or now)

        return await self._export_points(points, None, self.cfg.request_timeout)

    async def _export_points(self, points: Callable[[], Iterable[Point]], resource: dict[str, Any] | None,
                             timeout: float) -> ExportResult:
        if not self._started:
            return ExportResult.permanent("elasticsearch export is not started")
        async with self._map_lock:
            last = self._last_time
            records, too_large = await asyncio.to_thread(self._build, points, resource)
            if too_large:
                self._count_drop(too_large, "too_large", "a document larger than bulk.max_bytes")
            try:
                await self._enqueue(records)
            except OSError as e:
                self._last_time = last  # not queued: written again next round
                return ExportResult.retryable(f"elasticsearch export queue: {e.strerror or e}")
        reason = await self._drained(timeout * 0.9)
        return ExportResult.success() if reason is None else ExportResult.retryable(reason)

    def _build(self, points: Callable[[], Iterable[Point]], resource: dict[str, Any] | None,
               ) -> tuple[list[tuple[bytes, int]], int]:
        """Map and pack (in a worker thread): bulk bodies with their document counts, documents too large."""
        if resource is not None and resource != self._mapper.resource:
            counts = self._mapper.counts
            self._mapper = Mapper(self.cfg, resource)
            self._mapper.counts = counts
        return self._mapper.bodies(points(), self.cfg.bulk.max_documents, self.cfg.bulk.max_bytes)

    # ------------------------------------------------------------------ alerts

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        """ECS events for the transitions since the last call (``alerts``: the active ones)."""
        if not self._started or self.engine_alerts:
            return
        now = time.time()
        active: dict[str, Alert] = {}
        resolved: dict[str, Alert] = {}
        for a in alerts:
            (resolved if a.state is AlertState.RESOLVED else active)[a.fingerprint or a.id] = a
        before = dict(self._alerts)
        events: list[dict[str, Any]] = []
        for fp, a in active.items():
            prev = self._alerts.get(fp)
            state = a.state.value
            if prev is not None and prev.state == state and prev.severity == (a.severity or ""):
                continue
            tid = a.annotations.get("trace_id", "").lower()
            sent = _Sent(a.name, state, a.severity or "", {k: v for k, v in a.labels.items()}, a.starts_at,
                         tid if _TRACE_ID.match(tid) else None)
            self._alerts[fp] = sent
            events.append(self._event(fp, sent, state, a, now, None))
        for fp in [fp for fp in self._alerts if fp not in active]:
            sent = self._alerts.pop(fp)
            r = resolved.get(fp)
            events.append(self._event(fp, sent, "resolved", r, now, (r.ends_at if r and r.ends_at else now)))
        if not events:
            return
        bodies = self._bodies(f"logs-monbridge.alerts-{self.cfg.namespace}", events, "an alert event")
        try:
            await self._enqueue(bodies)
        except OSError as e:  # not queued: tried again at the next call
            self._alerts = before
            log.warning("elasticsearch export: the queue refused %d alert events (%s); tried again next round",
                        len(events), e.strerror or e)
            return
        self.alerts_sent += len(events)
        await asyncio.to_thread(self._save_alerts)

    def _event(self, fp: str, sent: _Sent, action: str, a: Alert | None, now: float,
               end: float | None) -> dict[str, Any]:
        summary = (a.annotations.get("summary") or a.annotations.get("description") or "") if a is not None else ""
        return alert_document(self.cfg.namespace, fingerprint=fp, name=sent.name, severity=sent.severity,
                              action=action, labels=sent.labels, starts_at=sent.starts_at, now=now, end=end,
                              value=a.value if a is not None else None, summary=summary, trace_id=sent.trace_id)

    # ------------------------------------------------------------------ self-metrics

    def self_metrics(self) -> list[Metric]:
        prefix = "monbridge.elasticsearch.export."
        q = self._sender
        c = self._mapper.counts
        out = [
            Metric(prefix + "documents.sent", MetricKind.COUNTER, float(self.documents_sent), "{document}",
                   "documents Elasticsearch accepted"),
            Metric(prefix + "requests.sent", MetricKind.COUNTER, float(self.requests_sent), "{request}",
                   "bulk requests Elasticsearch answered"),
            Metric(prefix + "retries", MetricKind.COUNTER, float(self.retries), "{request}",
                   "bulk requests and documents that failed and are retried"),
            Metric(prefix + "duplicates", MetricKind.COUNTER, float(self.duplicates), "{document}",
                   "documents Elasticsearch had already (HTTP 409)"),
            Metric(prefix + "alerts.sent", MetricKind.COUNTER, float(self.alerts_sent), "{event}",
                   "alert events queued"),
            Metric(prefix + "logs.sent", MetricKind.COUNTER, float(self.logs_sent), "{record}",
                   "monbridge's log records queued"),
            Metric(prefix + "queue.bytes", MetricKind.GAUGE, float(q.queued_bytes), "By",
                   "bytes of bulk requests waiting for delivery"),
            Metric(prefix + "queue.pending", MetricKind.GAUGE, float(q.pending), "{document}",
                   "documents waiting for delivery"),
        ]
        for reason, n in sorted(self.dropped.items()):
            out.append(Metric(prefix + "dropped", MetricKind.COUNTER, float(n), "{document}",
                              "documents dropped, by reason", {"reason": reason}))
        for reason in ("non_finite", "empty_histogram", "unchanged"):
            out.append(Metric(prefix + "skipped", MetricKind.COUNTER, float(getattr(c, reason)), "{point}",
                              "points that wrote nothing, by reason", {"reason": reason}))
        return out
