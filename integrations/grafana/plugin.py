"""``monitoring.integration.grafana``: the dashboards of ``monbridge grafana dashboards``
provisioned through Grafana's HTTP API, and alert transitions written as Grafana annotations.

Dashboards (the sink's ``export``, until done): the folder is looked up (``GET /api/folders/:uid``)
and created when missing (``POST /api/folders``); each dashboard is read
(``GET /api/dashboards/uid/:uid``) and saved (``POST /api/dashboards/db`` in that folder, with
``overwrite`` and a ``message`` naming monbridge's version) only when missing or different, so
Grafana's version history holds one version per change; one changed in Grafana is replaced with
``dashboards.overwrite`` (the default) and left alone, reported, without. A retryable failure
(no answer, 408, 429, 5xx) is tried again after a backoff; a permanent one (another 4xx) stops
provisioning until the config changes and shows as the sink's error.

Annotations (``export_alerts``, every alert round with the active alerts): a new alert becomes
an annotation at its start (``POST /api/annotations``; tags: the configured ones, ``alertname``,
``severity``, ``state`` and each label as ``key:value``); a change of state (acknowledged) is a
``PATCH /api/annotations/:id`` of its tags and text; a resolved one (or one no longer active) ends
the region: ``PATCH`` with ``timeEnd``. What fails retryably is tried again the next round after
the backoff (nothing is lost: the next round compares what is active with what was sent); what
fails permanently is dropped, counted (``monbridge.grafana.annotations_dropped``) and logged. With
``annotations.state_path`` the alert → annotation map survives a restart.

Every answer is read up to ``max_response_bytes`` (a larger one is refused, not read whole) and
every error quotes a bounded, redacted excerpt of it; the token never reaches a log or an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.api import (
    Alert,
    AlertState,
    ExportResult,
    ExportStatus,
    Metric,
    MetricBatch,
    MetricKind,
    MonitoringIntegrationPlugin,
    PluginError,
    PluginMetadata,
    PluginType,
    validate_plugin_id,
)
from bridge.delivery import Backoff, Retries, classify_error, classify_status
from bridge.helpers import EXCERPT_BYTES, peer_excerpt, read_up_to
from bridge.ledger import count_loss
from integrations.grafana.config import GrafanaConfig

__all__ = ["PLUGIN_ID", "GrafanaIntegration", "annotation_id", "annotation_tags", "parse_state", "read_answer",
           "stored_dashboard"]

PLUGIN_ID = validate_plugin_id("monitoring.integration.grafana", PluginType.INTEGRATION)

log = logging.getLogger("monbridge.grafana")

#: Grafana keeps tags short; a label longer than this is cut.
MAX_TAG_CHARS = 100
MAX_TAGS = 50
MAX_TEXT_CHARS = 4000
#: The most alerts over ``annotations.max_alerts`` remembered, so that each is counted once.
MAX_OVER_LIMIT = 100_000
#: The most bytes of the state file read at start.
MAX_STATE_BYTES = 64 << 20


def annotation_tags(alert: Alert, base: Sequence[str]) -> list[str]:
    """An alert's annotation tags: ``base``, then alertname, severity and state, then each label as ``key:value``."""
    tags = [*base, f"alertname:{alert.name}", f"severity:{alert.severity}", f"state:{alert.state.value}"]
    tags += [f"{k}:{v}" for k, v in sorted(alert.labels.items()) if k not in ("alertname", "severity")]
    out: list[str] = []
    for t in tags:
        t = t[:MAX_TAG_CHARS]
        if t not in out:
            out.append(t)
    return out[:MAX_TAGS]


def _text(alert: Alert) -> str:
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    value = f" (value {alert.value:g})" if alert.value is not None else ""
    return f"[{alert.state.value}] {alert.name} ({alert.severity}){value}{': ' + summary if summary else ''}"[:MAX_TEXT_CHARS]


@dataclass(slots=True)
class _Sent:
    """What Grafana has of one alert: its annotation (None when it could not be created) and state."""

    id: int | None
    state: str
    name: str
    tags: list[str]


@dataclass(slots=True)
class _Answer:
    result: ExportResult
    status: int
    doc: Any = None


def read_answer(status: int, body: bytes | str, what: str, limit: int, retry_after: str | None = None) -> _Answer:
    """Grafana's answer to ``what``: a 2xx's body (at most ``limit`` bytes, read up to ``limit + 1``)
    as JSON, else the status classified with an excerpt of the body (already redacted)."""
    if not 200 <= status < 300:
        text = body if isinstance(body, str) else body.decode("utf-8", "replace")
        return _Answer(classify_status(status, f"{what}: HTTP {status}: {peer_excerpt(text)}", retry_after), status)
    if len(body) > limit:
        return _Answer(ExportResult.permanent(f"{what}: HTTP {status}: the answer is larger than max_response_bytes "
                                              f"({limit})"), status)
    try:
        doc = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError) as e:
        return _Answer(ExportResult.permanent(f"{what}: HTTP {status}: the answer is not JSON "
                                              f"({peer_excerpt(str(e))})"), status)
    return _Answer(ExportResult.success(), status, doc)


def annotation_id(doc: Any) -> int | None:
    """The ``id`` of Grafana's answer to ``POST /api/annotations``: a positive integer, else None."""
    ident = doc.get("id") if isinstance(doc, dict) else None
    return ident if isinstance(ident, int) and not isinstance(ident, bool) and ident > 0 else None


def stored_dashboard(doc: Any) -> tuple[dict[str, Any], str | None] | None:
    """The dashboard and its folder's uid in Grafana's answer to ``GET /api/dashboards/uid/:uid``; None
    when the answer has no dashboard object."""
    if not isinstance(doc, dict) or not isinstance(doc.get("dashboard"), dict):
        return None
    meta = doc.get("meta")
    folder = meta.get("folderUid") if isinstance(meta, dict) else None
    return doc["dashboard"], folder if isinstance(folder, str) else None


class GrafanaIntegration(MonitoringIntegrationPlugin):
    config_model = GrafanaConfig

    def __init__(self) -> None:
        self.config: GrafanaConfig | None = None
        self._session: Any = None
        self._headers: dict[str, str] = {}
        self._docs: list[dict[str, Any]] | None = None
        self._provisioned = False
        self._provision_error: ExportResult | None = None  # a permanent failure: provisioning stops
        self._provision_retries: Retries | None = None
        self._provision_not_before = 0.0
        self._sent: dict[str, _Sent] = {}
        self._alert_retries: Retries | None = None
        self._alerts_not_before = 0.0
        self._requests: dict[tuple[str, str], int] = {}
        self._dashboards: dict[str, int] = {}
        self._annotations: dict[tuple[str, str], int] = {}
        self._dropped: dict[str, int] = {}
        self._over_limit: set[str] = set()

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "Grafana", __version__, "monbridge",
                              "Grafana dashboards provisioned over the HTTP API, alerts as annotations",
                              PluginType.INTEGRATION)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        import aiohttp

        cfg = self.config = GrafanaConfig.model_validate(config)
        backoff = Backoff(initial=cfg.backoff_initial, maximum=max(cfg.backoff_max, cfg.backoff_initial))
        self._provision_retries, self._alert_retries = Retries(backoff), Retries(backoff)
        self._headers = {"Accept": "application/json", "Content-Type": "application/json",
                         "User-Agent": f"monbridge/{__version__}"}
        if cfg.token is not None:
            self._headers["Authorization"] = f"Bearer {cfg.token.get_secret_value()}"
        if cfg.org_id is not None:
            self._headers["X-Grafana-Org-Id"] = str(cfg.org_id)
        if cfg.annotations.enabled and cfg.annotations.state_path:
            self._sent = await asyncio.to_thread(self._load, Path(cfg.annotations.state_path))
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4))

    # ------------------------------------------------------------------ HTTP

    def _redact(self, text: str) -> str:
        token = self.config.token.get_secret_value() if self.config and self.config.token else ""
        return text.replace(token, "<secret>") if len(token) >= 3 else text

    async def _call(self, method: str, path: str, endpoint: str, body: Any = None) -> _Answer:
        """One request to Grafana: its outcome (classified), status (0: no answer) and JSON answer."""
        import aiohttp

        assert self.config is not None
        cfg = self.config
        url = cfg.url.rstrip("/") + path
        what = f"{method} {path}"
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._session.request(method, url, data=data, headers=self._headers, allow_redirects=False,
                                             timeout=aiohttp.ClientTimeout(total=cfg.request_timeout)) as r:
                status = r.status
                ok = 200 <= status < 300
                answer = await read_up_to(r.content, cfg.max_response_bytes + 1) if ok else \
                    await r.content.read(EXCERPT_BYTES)
                if not ok:
                    return self._count(endpoint, read_answer(status, self._redact(answer.decode("utf-8", "replace")),
                                                             what, cfg.max_response_bytes, r.headers.get("Retry-After")))
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return self._count(endpoint, _Answer(ExportResult.retryable(f"{what}: no answer within "
                                                                        f"{cfg.request_timeout:g} s"), 0))
        except Exception as e:  # noqa: BLE001 - connection errors and the like: classified, never raised
            return self._count(endpoint, _Answer(classify_error(e, f"{what}: {type(e).__name__}: "
                                                                   f"{peer_excerpt(self._redact(str(e)))}"), 0))
        return self._count(endpoint, read_answer(status, answer, what, cfg.max_response_bytes))

    def _count(self, endpoint: str, a: _Answer) -> _Answer:
        key = (endpoint, a.result.status.value)
        self._requests[key] = self._requests.get(key, 0) + 1
        return a

    # ------------------------------------------------------------------ dashboards

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        """Provision the dashboards (until done); metrics themselves are not sent to Grafana."""
        assert self.config is not None and self._provision_retries is not None
        if not self.config.dashboards.enabled or self._provisioned:
            return ExportResult.success()
        if self._provision_error is not None:
            return self._provision_error
        if time.monotonic() < self._provision_not_before:
            return ExportResult.retryable("provisioning: waiting to retry")
        result = await self._provision()
        if result.status is ExportStatus.RETRYABLE:
            self._provision_not_before = time.monotonic() + self._provision_retries.next(result.retry_after)
            log.warning("grafana: provisioning failed, retried later: %s", result.reason)
        elif result.status is ExportStatus.PERMANENT:
            self._provision_error = result
            log.error("grafana: provisioning failed and is not retried: %s", result.reason)
        else:
            self._provision_retries.reset()
            self._provisioned = True
        return result

    async def _provision(self) -> ExportResult:
        from integrations.grafana.catalog import FAMILIES
        from integrations.grafana.dashboards import build

        assert self.config is not None
        cfg = self.config
        if self._docs is None:
            wanted = cfg.dashboards.families
            families = [f for f in FAMILIES if wanted is None or f.key in wanted]
            self._docs = await asyncio.to_thread(lambda: [build(f) for f in families])  # reads sources: off the loop
        folder = urllib.parse.quote(cfg.folder.uid, safe="")
        got = await self._call("GET", f"/api/folders/{folder}", "folders")
        if got.status == 404:
            got = await self._call("POST", "/api/folders", "folders", {"uid": cfg.folder.uid, "title": cfg.folder.title})
        if not got.result.ok:
            return got.result
        for doc in self._docs:
            result = await self._dashboard(doc)
            if not result.ok:
                return result
        return ExportResult.success()

    async def _dashboard(self, doc: dict[str, Any]) -> ExportResult:
        assert self.config is not None
        cfg = self.config
        uid = doc["uid"]
        got = await self._call("GET", f"/api/dashboards/uid/{urllib.parse.quote(uid, safe='')}", "dashboards")
        body: dict[str, Any] = {"dashboard": dict(doc), "folderUid": cfg.folder.uid,
                                "message": f"monbridge {__version__}", "overwrite": cfg.dashboards.overwrite}
        if got.status == 200:
            stored = stored_dashboard(got.doc)
            if stored is None:
                return ExportResult.permanent(f"GET /api/dashboards/uid/{uid}: the answer has no dashboard object")
            existing, folder = stored
            if {k: v for k, v in existing.items() if k not in ("id", "version")} == doc and folder == cfg.folder.uid:
                self._counted(self._dashboards, "unchanged")
                return ExportResult.success()
            if not cfg.dashboards.overwrite:
                self._counted(self._dashboards, "kept")
                log.warning("grafana: dashboard %s differs from monbridge's and dashboards.overwrite is off: kept", uid)
                return ExportResult.success()
            body["dashboard"].update({"id": existing.get("id"), "version": existing.get("version")})
        elif not got.result.ok and got.status != 404:
            return got.result
        else:
            body["dashboard"]["id"] = None
        saved = await self._call("POST", "/api/dashboards/db", "dashboards", body)
        if saved.result.ok:
            self._counted(self._dashboards, "updated" if got.status == 200 else "created")
            version = saved.doc.get("version") if isinstance(saved.doc, dict) else None
            log.info("grafana: dashboard %s saved in folder %s (version %s)", uid, cfg.folder.uid, version)
        return saved.result

    @staticmethod
    def _counted(counts: dict[Any, int], key: Any) -> None:
        counts[key] = counts.get(key, 0) + 1

    # ------------------------------------------------------------------ annotations

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        """Annotations for what changed since the last call (``alerts``: the active ones)."""
        assert self.config is not None and self._alert_retries is not None
        cfg = self.config.annotations
        if not cfg.enabled or time.monotonic() < self._alerts_not_before:
            return
        active: dict[str, Alert] = {}
        ended_at: dict[str, float] = {}
        for a in alerts:
            fp = a.fingerprint or a.id
            if a.state is AlertState.RESOLVED:
                ended_at[fp] = a.ends_at or time.time()
            else:
                active[fp] = a
        budget = self.config.max_requests_per_round
        changed = False
        try:
            for fp, a in active.items():
                if budget <= 0:
                    break
                sent = self._sent.get(fp)
                if sent is None:
                    if len(self._sent) >= cfg.max_alerts:
                        if fp not in self._over_limit and len(self._over_limit) < MAX_OVER_LIMIT:
                            self._over_limit.add(fp)
                            self._drop("max_alerts", f"alert {a.name} ({fp}): {cfg.max_alerts} alerts followed already")
                        continue
                    budget -= 1
                    changed |= await self._create(fp, a)
                elif sent.state != a.state.value and sent.id is not None:
                    budget -= 1
                    changed |= await self._update(fp, a, sent)
            for fp in [fp for fp in self._sent if fp not in active]:
                if budget <= 0:
                    break
                budget -= 1
                changed |= await self._end(fp, ended_at.get(fp, time.time()))
            self._over_limit.intersection_update(active)
            self._alert_retries.reset()
        except _Retry as r:
            self._alerts_not_before = time.monotonic() + self._alert_retries.next(r.result.retry_after)
            log.warning("grafana: annotations failed, retried later: %s", r.result.reason)
        finally:
            if changed and cfg.state_path:
                await asyncio.to_thread(self._save, Path(cfg.state_path), dict(self._sent))

    def _annotation_outcome(self, op: str, answer: _Answer) -> bool:
        """True when ``answer`` succeeded; raises _Retry for a retryable failure; a permanent one is counted."""
        self._counted(self._annotations, (op, answer.result.status.value))
        if answer.result.status is ExportStatus.RETRYABLE:
            raise _Retry(answer.result)
        if answer.result.status is ExportStatus.PERMANENT:
            self._drop("permanent", f"annotation {op}: {answer.result.reason}")
            return False
        return True

    async def _create(self, fp: str, a: Alert) -> bool:
        assert self.config is not None
        cfg = self.config.annotations
        tags = annotation_tags(a, cfg.tags)
        body: dict[str, Any] = {"time": int(a.starts_at * 1000), "tags": tags, "text": _text(a)}
        if cfg.dashboard_uid:
            body["dashboardUID"] = cfg.dashboard_uid
        got = await self._call("POST", "/api/annotations", "annotations", body)
        ident = annotation_id(got.doc)
        if got.result.ok and ident is None:
            got = _Answer(ExportResult.permanent("POST /api/annotations: the answer has no annotation id"), got.status)
        ok = self._annotation_outcome("create", got)
        self._sent[fp] = _Sent(ident if ok else None, a.state.value, a.name, tags)
        return True

    async def _update(self, fp: str, a: Alert, sent: _Sent) -> bool:
        assert self.config is not None
        tags = annotation_tags(a, self.config.annotations.tags)
        got = await self._call("PATCH", f"/api/annotations/{sent.id}", "annotations", {"tags": tags, "text": _text(a)})
        self._annotation_outcome("update", got)
        sent.state, sent.tags = a.state.value, tags  # a permanent failure is not tried again
        return True

    async def _end(self, fp: str, at: float) -> bool:
        sent = self._sent[fp]
        if sent.id is not None:
            tags = [t for t in sent.tags if not t.startswith("state:")] + ["state:resolved"]
            got = await self._call("PATCH", f"/api/annotations/{sent.id}", "annotations",
                                   {"timeEnd": int(at * 1000), "tags": tags[:MAX_TAGS],
                                    "text": f"[resolved] {sent.name}"[:MAX_TEXT_CHARS]})
            self._annotation_outcome("end", got)
        del self._sent[fp]
        return True

    def _drop(self, reason: str, why: str) -> None:
        self._counted(self._dropped, reason)
        count_loss("grafana_annotations", reason)
        log.warning("grafana: dropped %s", self._redact(why))

    # ------------------------------------------------------------------ state

    @staticmethod
    def _load(path: Path) -> dict[str, _Sent]:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise PluginError(f"annotations.state_path {path}: {e.strerror}") from None
        try:
            if len(data) > MAX_STATE_BYTES:
                raise ValueError(f"larger than {MAX_STATE_BYTES} bytes")
            return parse_state(data)
        except ValueError as e:
            log.warning("grafana: annotations.state_path %s is not a state file (%s); starting without it", path, e)
            return {}

    @staticmethod
    def _save(path: Path, sent: dict[str, _Sent]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({fp: [s.id, s.state, s.name, s.tags] for fp, s in sent.items()}))
            os.replace(tmp, path)
        except OSError as e:
            log.warning("grafana: cannot write annotations.state_path %s: %s", path, e.strerror)

    # ------------------------------------------------------------------ the rest of the contract

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        return None

    async def import_metrics(self) -> Sequence[Metric]:
        C = MetricKind.COUNTER
        return [
            *(Metric("monbridge.grafana.requests", C, float(n), "{request}", "requests to Grafana by endpoint and result",
                     {"endpoint": e, "result": r}) for (e, r), n in sorted(self._requests.items())),
            *(Metric("monbridge.grafana.dashboards", C, float(n), "{dashboard}",
                     "dashboards provisioned, by result (created, updated, unchanged, kept)", {"result": r})
              for r, n in sorted(self._dashboards.items())),
            *(Metric("monbridge.grafana.annotations", C, float(n), "{request}",
                     "annotation requests by operation (create, update, end) and result", {"operation": o, "result": r})
              for (o, r), n in sorted(self._annotations.items())),
            *(Metric("monbridge.grafana.annotations_dropped", C, float(n), "{alert}",
                     "alert transitions not written, by reason (max_alerts, permanent)", {"reason": r})
              for r, n in sorted(self._dropped.items())),
            Metric("monbridge.grafana.annotations_open", MetricKind.GAUGE, float(len(self._sent)), "{annotation}",
                   "alerts whose annotation region is open"),
        ]

    async def import_alerts(self) -> Sequence[Alert]:
        return []

    async def shutdown(self, timeout: float | None = None) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def parse_state(data: bytes) -> dict[str, _Sent]:
    """The state file's alerts (fingerprint -> [annotation id or null, state, name, tags]); ValueError
    naming what is wrong."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise ValueError("not an object of alerts")
    out: dict[str, _Sent] = {}
    for fp, e in doc.items():
        if not (isinstance(e, list) and len(e) == 4 and (e[0] is None or annotation_id({"id": e[0]}) is not None)
                and isinstance(e[1], str) and isinstance(e[2], str) and isinstance(e[3], list)
                and all(isinstance(t, str) for t in e[3])):
            raise ValueError(f"alert {fp[:100]!r}: expected [annotation id or null, state, name, [tags]]")
        out[fp] = _Sent(e[0], e[1], e[2], e[3][:MAX_TAGS])
    return out


class _Retry(Exception):
    def __init__(self, result: ExportResult) -> None:
        super().__init__(result.reason)
        self.result = result
