"""``monitoring.integration.nagios``: passive check results into Nagios.

What goes out:

* **alerts** (``export_alerts``, every alerting import round): the active alerts grouped by
  (host, service) — the service is the alert's ``nagios_service`` label, else its name; the host
  its ``nagios_host`` label, else the configured host — as one result each, in the worst state of
  the group's severities (``alerts.states``: critical CRITICAL, warning WARNING, info OK, others
  ``other_state``). A result is sent when it changes and again every ``resend_interval``. A
  service whose alerts are all gone (resolved) gets one OK result. What was last sent is kept in
  ``<queue.path>/alerts.json``, so a restart still sends the OK of an alert resolved meanwhile;
* **metric checks** (``export``, every round): each check's series (by name, with ``match``)
  aggregated and compared with its ``warning``/``critical`` Nagios ranges, the value as perfdata
  (``'label'=value[UOM];warn;crit``, UOM from the unit: s, B, %, c for counters);
* **a host result** for monbridge itself (UP) each round, when ``host_check`` is set.

Transports: Nagios' external command file (``PROCESS_SERVICE_CHECK_RESULT``,
``PROCESS_HOST_CHECK_RESULT``) or an NSCA server (``integrations.nagios.nsca``).

The command file is a FIFO Nagios reads. It is opened non-blocking for each delivery (no reader,
i.e. Nagios not running: ENXIO, a retryable failure), each command is one ``write`` of at most
``PIPE_BUF`` (4096) bytes, so it is atomic among the FIFO's writers (an NSCA daemon, other
tools) and never half-written; a full FIFO waits for room on the event loop, bounded by the
round's timeout. In the output ``\\`` is written ``\\\\`` and a newline ``\\n`` (Nagios' own
escaping, undone by ``unescape_check_result_output``), carriage returns and NULs are left out;
names with ``;`` or control characters are refused by the config (alert labels: replaced by
``_``). An output that does not fit loses its long text, then perfdata items from the end, then
the end of its text.

Delivery: results go into a bounded queue (``bridge.queued.QueuedSender``, on disk under
``queue.path``, surviving restarts; in memory without one) and a sender delivers them in order,
retrying with ``bridge.delivery.Backoff`` (``min_backoff`` to ``max_backoff``, jitter) while
the transport fails; nothing is lost but what the queue's ``max_bytes`` drops (the oldest,
counted and logged). ``export`` queues the round's results and waits, within its timeout, for the
queue to drain: a failing transport is a retryable result naming it (the results stay queued).

Self-metrics (``import_metrics``): ``monbridge.nagios.results.sent``,
``monbridge.nagios.results.dropped`` (by reason), ``monbridge.nagios.results.queued``,
``monbridge.nagios.send.failures``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import re
import stat
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from bridge.api import (
    Alert,
    AlertState,
    ExportResult,
    FamilyView,
    Metric,
    MetricBatch,
    MetricKind,
    MonitoringIntegrationPlugin,
    PluginConfig,
    PluginMetadata,
    PluginType,
)
from bridge.delivery import Backoff
from bridge.ledger import loss_counter
from bridge.queued import QueuedSender, Sent
from integrations.nagios.export_config import AlertResults, MetricCheck, NagiosExportConfig
from integrations.nagios.nsca import ENCRYPTIONS, MAX_DESCRIPTION, MAX_HOSTNAME, NscaError, NscaResult, send_results
from integrations.nagios.output import State
from integrations.nagios.perfdata import PerfItem, format_perfdata
from integrations.nagios.ranges import format_number

__all__ = ["PLUGIN_ID", "NagiosExporter", "command_line", "escape_output", "fit_output"]

PLUGIN_ID = "monitoring.integration.nagios"
log = logging.getLogger("monbridge.nagios.export")

#: The most one command written to the FIFO may take: writes up to PIPE_BUF are atomic.
PIPE_BUF = 4096
#: The longest host name or service description a result may have (for the command file; NSCA's are shorter).
MAX_NAME_BYTES = 1024
_BAD_NAME = re.compile(r"[;\x00-\x1f\x7f]")
#: Nagios' worst-first order of service states (UNKNOWN between WARNING and CRITICAL).
_RANK = {State.OK: 0, State.WARNING: 1, State.UNKNOWN: 2, State.CRITICAL: 3}
_UOM = {"s": "s", "By": "B", "%": "%"}


class DeliveryError(Exception):
    """A delivery that failed; the message is safe to log."""


# --------------------------------------------------------------------------- formatting


def escape_output(text: str) -> str:
    """Plugin output as an external command carries it (Nagios unescapes ``\\\\`` and ``\\n``)."""
    return text.replace("\x00", "").replace("\r", "").replace("\\", "\\\\").replace("\n", "\\n")


def _utf8_size(s: str) -> int:
    return len(s.encode("utf-8", "replace"))


def fit_output(text: str, perfdata: Sequence[PerfItem], long_text: str, limit: int,
               size: Callable[[str], int] = _utf8_size) -> str:
    """``TEXT | PERFDATA`` and the long text on later lines, in at most ``limit`` (``size(out)``,
    default UTF-8 bytes): without the long text, then perfdata items from the end, then with
    the text cut, as needed. A ``|`` in the text or long text becomes a space (Nagios would read
    what follows it as perfdata), and so does a line break in the text (it is one line); a ``;``
    in the text becomes ``:``, as Nagios makes it, so that Nagios shows the text as sent."""
    text = text.replace("|", " ").replace("\r", " ").replace("\n", " ").replace(";", ":")
    long_text = long_text.replace("|", " ")
    items = list(perfdata)

    def build(long: str, n: int) -> str:
        perf = format_perfdata(items[:n])
        return text + (f" | {perf}" if perf else "") + (f"\n{long}" if long else "")

    out = build(long_text, len(items))
    if size(out) <= limit:
        return out
    for n in range(len(items), -1, -1):
        out = build("", n)
        if size(out) <= limit:
            return out
    lo, hi = 0, len(text)  # the longest prefix of the text that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if size(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def _head(host: str, service: str, code: int, when: int) -> bytes:
    if service:
        return f"[{when}] PROCESS_SERVICE_CHECK_RESULT;{host};{service};{code};".encode("utf-8", "replace")
    return f"[{when}] PROCESS_HOST_CHECK_RESULT;{host};{code};".encode("utf-8", "replace")


def command_room(host: str, service: str) -> int:
    """The bytes of escaped output a command for host and service can carry within PIPE_BUF."""
    return PIPE_BUF - len(_head(host, service, 0, 10**10)) - 1


def command_line(host: str, service: str, code: int, output: str, when: int) -> bytes:
    """One external command (host result when ``service`` is empty), at most PIPE_BUF bytes
    (host and service of at most MAX_NAME_BYTES each)."""
    head_bytes = _head(host, service, code, when)
    room = PIPE_BUF - len(head_bytes) - 1
    body = escape_output(output)
    data = body.encode("utf-8", "replace")
    if len(data) > room:
        data = data[:room].decode("utf-8", "ignore").encode()
        if data.endswith(b"\\") and (len(data) - len(data.rstrip(b"\\"))) % 2:
            data = data[:-1]  # never a lone backslash of a cut escape
    return head_bytes + data + b"\n"


def _decode(payload: bytes) -> list[Any] | None:
    """A queued result ``[host, service, code, output, time]``, or None when the record is not one."""
    try:
        r = json.loads(payload)
    except ValueError:
        return None
    if (isinstance(r, list) and len(r) == 5 and isinstance(r[0], str) and isinstance(r[1], str)
            and type(r[2]) is int and 0 <= r[2] <= 3 and isinstance(r[3], str) and type(r[4]) is int):
        return r
    return None


def _name(v: str) -> str:
    return _BAD_NAME.sub("_", v).strip() or "_"


def _attr(v: object) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def family_index(batch: MetricBatch) -> dict[str, FamilyView]:
    """The batch's families by name and by Prometheus name (the name wins where they collide)."""
    index: dict[str, FamilyView] = {}
    for f in batch.families():
        if f.series:
            index.setdefault(f.series[0].prom.name, f)
    index.update((f.name, f) for f in batch.families())
    return index


def evaluate(check: MetricCheck, families: Mapping[str, FamilyView]) -> tuple[State, str, list[PerfItem]]:
    """A metric check on a batch's families (``family_index``): state, text and perfdata. With
    ``count`` no matching series is a count of 0; with the others it is ``missing``."""
    fam = families.get(check.metric)
    where = (" matching " + ",".join(f"{k}={v}" for k, v in check.match.items())) if check.match else ""
    values: list[float] = []
    if fam is not None:
        for s in fam.series:
            v = s.value
            if isinstance(v, (int, float)) and not math.isnan(v) and all(
                    _attr(s.attributes.get(k, "")) == want for k, want in check.match.items()):
                values.append(float(v))
    warn, crit = check.ranges()
    label = check.label or check.metric
    if not values and check.aggregate != "count":
        return State[check.missing.upper()], f"no series of {check.metric}{where}", []
    agg = check.aggregate
    aggregates: dict[str, Callable[[list[float]], float]] = {
        "avg": lambda v: sum(v) / len(v), "min": min, "max": max, "sum": sum, "count": lambda v: float(len(v)),
        "last": lambda v: v[-1]}
    result = aggregates[agg](values)
    state = State.OK
    if crit is not None and crit.alerts(result):
        state = State.CRITICAL
    elif warn is not None and warn.alerts(result):
        state = State.WARNING
    uom = "" if agg == "count" or fam is None else "c" if fam.kind is MetricKind.COUNTER else _UOM.get(fam.unit, "")
    n = len(values)
    text = f"{check.metric} {agg} {format_number(result)} ({n} series{where})"
    return state, text, [PerfItem(label, result, uom, warn, crit)]


# --------------------------------------------------------------------------- transports


class CommandFile:
    """Nagios' external command file: a FIFO, written without blocking the event loop."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return f"command file {self.path}"

    async def send(self, results: Sequence[list[Any]], timeout: float) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as e:
            why = "no reader (Nagios is not running)" if e.errno == errno.ENXIO else (e.strerror or str(e))
            raise DeliveryError(f"{self.describe()}: {why}") from None
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise DeliveryError(f"{self.describe()}: not a FIFO (is it Nagios' command_file?)")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            for r in results:
                line = command_line(r[0], r[1], r[2], r[3], r[4])
                while True:
                    try:
                        os.write(fd, line)  # <= PIPE_BUF: all of it or EAGAIN
                        break
                    except BlockingIOError:
                        await self._writable(loop, fd, deadline)
                    except BrokenPipeError:
                        raise DeliveryError(f"{self.describe()}: Nagios closed it (stopped?)") from None
        except OSError as e:
            raise DeliveryError(f"{self.describe()}: {e.strerror or e}") from None
        finally:
            os.close(fd)

    async def _writable(self, loop: asyncio.AbstractEventLoop, fd: int, deadline: float) -> None:
        ready = loop.create_future()
        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, wake)
        try:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeliveryError(f"{self.describe()}: full (Nagios is not reading it)")
            try:
                await asyncio.wait_for(ready, remaining)
            except TimeoutError:
                raise DeliveryError(f"{self.describe()}: full (Nagios is not reading it)") from None
        finally:
            loop.remove_writer(fd)


class Nsca:
    """An NSCA server."""

    def __init__(self, host: str, port: int, method: int, password: bytes, timeout: float) -> None:
        self.host, self.port, self.method, self.timeout = host, port, method, timeout
        self._password = password

    def describe(self) -> str:
        return f"NSCA server {self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"Nsca({self.host!r}, {self.port}, method={self.method})"

    async def send(self, results: Sequence[list[Any]], timeout: float) -> None:
        packets = [NscaResult(r[0], r[1], r[2], r[3]) for r in results]
        try:
            await send_results(self.host, self.port, packets, method=self.method, password=self._password,
                               timeout=min(timeout, self.timeout))
        except NscaError as e:
            raise DeliveryError(str(e)) from None


# --------------------------------------------------------------------------- the integration


class NagiosExporter(MonitoringIntegrationPlugin):
    """Passive check results into Nagios (see the module doc)."""

    config_model: ClassVar[type[PluginConfig]] = NagiosExportConfig

    def __init__(self) -> None:
        self.config: NagiosExportConfig | None = None
        self._transport: CommandFile | Nsca | None = None
        self._sender: QueuedSender | None = None
        self._alert_sent: dict[tuple[str, str], list[Any]] = {}
        self._alert_file: Path | None = None
        self._stopped = False
        self.sent = 0
        self.failures = 0
        self.dropped: dict[str, int] = loss_counter("nagios_export")  # its sender's too

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(id=PLUGIN_ID, name="Nagios passive results", version="0.1.0", author="monbridge",
                              description="alerts, metric checks and a host result as passive check results "
                                          "through Nagios' command file or NSCA",
                              plugin_type=PluginType.INTEGRATION)

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: NagiosExportConfig = config if isinstance(config, NagiosExportConfig) else self.parse_config(config)
        self.config = cfg
        if cfg.nsca is not None:
            n = cfg.nsca
            self._transport = Nsca(n.host, n.port, ENCRYPTIONS[n.encryption], n.password.get_secret_value().encode(),
                                   n.timeout)
        else:
            assert cfg.command_file is not None
            self._transport = CommandFile(cfg.command_file)
        q = cfg.queue
        base = Path(q.path) if q.path else None
        self._sender = sender = QueuedSender("nagios_export", "nagios export", "results", self._transport.describe(),
                                             base / "queue" if base else None, q.max_bytes, q.fsync,
                                             Backoff(q.min_backoff, q.max_backoff), q.max_results_per_send, log,
                                             dropped=self.dropped)
        await sender.open()
        if base is not None:
            self._alert_file = base / "alerts.json"
            self._alert_sent = await asyncio.to_thread(self._load_alerts)
        log.info("nagios export to %s: queue %s, %d results pending", self._transport.describe(), sender.where(),
                 sender.pending)
        sender.start(self._send, "nagios-export")

    # ------------------------------------------------------------------ queue

    def _count_drop(self, n: int, reason: str) -> None:
        if self._sender is not None:
            self._sender.count_drop(n, reason)
        elif n > 0:
            self.dropped[reason] += n
            log.warning("nagios export: %d results dropped: %s", n, reason)

    def _carried(self, results: list[list[Any]]) -> list[list[Any]]:
        """The results the transport can carry; the others (names too long for NSCA) dropped and counted."""
        host_max, service_max = ((MAX_HOSTNAME - 1, MAX_DESCRIPTION - 1) if isinstance(self._transport, Nsca)
                                 else (MAX_NAME_BYTES, MAX_NAME_BYTES))
        fits = [r for r in results if _utf8_size(r[0]) <= host_max and _utf8_size(r[1]) <= service_max]
        if len(fits) < len(results):
            self._count_drop(len(results) - len(fits), "name_too_long")
            log.warning("nagios export: results carry host names of up to %d bytes and services of up to %d: %s",
                        host_max, service_max,
                        ", ".join(f"{r[0][:70]!r}/{r[1][:130]!r}" for r in results if r not in fits)[:500])
        return fits

    async def _enqueue(self, results: list[list[Any]]) -> None:
        if not results or self._sender is None:
            return
        if self._stopped:
            self._count_drop(len(results), "stopped")
            return
        results = self._carried(results)
        # ASCII: lone surrogates survive as escapes
        await self._sender.put([(json.dumps(r).encode(), 1) for r in results], "a result")

    async def _send(self, payloads: list[bytes], n: int) -> Sent:
        """Queued results, sent in one go; any failure keeps them queued."""
        assert self._transport is not None and self.config is not None
        decoded = [_decode(payload) for payload in payloads]
        results = [r for r in decoded if r is not None]
        if len(results) < len(decoded):
            self._count_drop(len(decoded) - len(results), "bad_record")
        results = self._carried(results)
        try:
            if results:
                await self._transport.send(results, self.config.timeout or self.config.interval)
        except (DeliveryError, Exception) as e:  # noqa: BLE001 - any failure keeps the results queued
            if not isinstance(e, DeliveryError):
                log.exception("nagios export: delivery to %s failed", self._transport.describe())
                e = DeliveryError(f"{self._transport.describe()}: {type(e).__name__}")
            self.failures += 1
            return Sent(ExportResult.retryable(str(e)))
        self.sent += len(results)
        return Sent(ExportResult.success(), len(results))

    async def _drained(self, timeout: float, stop_on_failure: bool = True) -> str | None:
        """None once the queue is empty; else why not (``bridge.delivery.drained``)."""
        assert self._sender is not None
        return await self._sender.drained(timeout, stop_on_failure)

    # ------------------------------------------------------------------ export

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        cfg = self.config
        if cfg is None:
            return ExportResult.permanent("not initialized")
        now = int(time.time())
        results: list[list[Any]] = []
        if cfg.checks:
            results.extend(await asyncio.to_thread(self._evaluate_all, batch, now) if len(cfg.checks) > 50
                           else self._evaluate_all(batch, now))
        if cfg.host_check:
            results.append([cfg.host, "", 0, self._fit(
                f"UP - monbridge exporting: {len(cfg.checks)} metric checks, {len(self._alert_sent)} alert services", [],
                "", cfg.host, ""), now])
        try:
            await self._enqueue(results)
        except OSError as e:
            return ExportResult.retryable(f"nagios result queue: {e.strerror or e}")
        reason = await self._drained(timeout * 0.9)
        return ExportResult.success() if reason is None else ExportResult.retryable(reason)

    def _evaluate_all(self, batch: MetricBatch, now: int) -> list[list[Any]]:
        """The metric checks' results (many of them: in a worker thread, off the event loop)."""
        assert self.config is not None
        families = family_index(batch)
        out: list[list[Any]] = []
        for check in self.config.checks:
            state, text, perf = evaluate(check, families)
            host = check.host or self.config.host
            out.append([host, check.service, int(state), self._fit(f"{state.name} - {text}", perf, "", host,
                                                                   check.service), now])
        return out

    def _fit(self, text: str, perf: Sequence[PerfItem], long_text: str, host: str, service: str) -> str:
        """The output within what the transport carries for host and service (NSCA: 4095 bytes;
        the command file: one PIPE_BUF line)."""
        limit = 4095 if isinstance(self._transport, Nsca) else max(0, command_room(host, service))
        return fit_output(text, perf, long_text, limit, lambda s: _utf8_size(escape_output(s)))

    async def force_flush(self, timeout: float) -> bool:
        return self._sender is None or await self._drained(timeout, stop_on_failure=False) is None

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        return None  # export() evaluates the checks on the batch

    # ------------------------------------------------------------------ alerts

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        cfg = self.config
        if cfg is None or not cfg.alerts.enabled:
            return
        ac = cfg.alerts
        groups: dict[tuple[str, str], list[Alert]] = defaultdict(list)
        for a in alerts:
            if a.state is AlertState.RESOLVED:
                continue
            host = _name(a.labels.get(ac.host_label) or cfg.host)
            service = _name(a.labels.get(ac.service_label) or a.name)
            groups[(host, service)].append(a)
        now = time.time()
        results: list[list[Any]] = []
        changed = False
        before = {k: list(v) for k, v in self._alert_sent.items()}
        for key, group in groups.items():
            code, output = self._alert_result(ac, group, *key)
            last = self._alert_sent.get(key)
            if last is None or last[0] != code or last[1] != output or now - last[2] >= ac.resend_interval:
                results.append([key[0], key[1], code, output, int(now)])
                self._alert_sent[key] = [code, output, now]
                changed = True
        for key in [k for k in self._alert_sent if k not in groups]:
            names = self._alert_sent.pop(key)[3:] or [key[1]]
            results.append([key[0], key[1], 0, self._fit(f"OK - resolved: {', '.join(map(str, names))}", [], "",
                                                         *key), int(now)])
            changed = True
        for key, group in groups.items():  # remember the names for the OK text
            self._alert_sent[key][3:] = sorted({a.name for a in group})
        try:
            await self._enqueue(results)
        except OSError as e:  # not queued: sent as if new at the next round
            self._alert_sent = before
            self._count_drop(len(results), "queue_error")
            log.warning("nagios export: the result queue refused %d alert results (%s); they are tried again "
                        "next round", len(results), e.strerror or e)
            return
        if changed and self._alert_file is not None:
            await asyncio.to_thread(self._save_alerts)

    def _alert_result(self, ac: AlertResults, group: list[Alert], host: str, service: str) -> tuple[int, str]:
        states = [State[ac.states.get(a.severity, ac.other_state)] for a in group]
        worst = max(states, key=_RANK.__getitem__)
        group = sorted(group, key=lambda a: (-_RANK[State[ac.states.get(a.severity, ac.other_state)]], a.name))

        def line(a: Alert) -> str:
            summary = a.annotations.get("summary") or a.annotations.get("description") or ""
            value = f" (value {format_number(a.value)})" if a.value is not None and math.isfinite(a.value) else ""
            return f"{a.name} [{a.severity or 'none'}]{value}" + (f": {summary}" if summary else "")

        if len(group) == 1:
            text, long_text = f"{worst.name} - {line(group[0])}", ""
        else:
            text = f"{worst.name} - {len(group)} alerts: " + ", ".join(a.name for a in group[:10])
            long_text = "\n".join(line(a) for a in group)
        perf = [PerfItem("alerts", float(len(group)), "", None, None, 0.0)]
        return int(worst), self._fit(text, perf, long_text, host, service)

    def _load_alerts(self) -> dict[tuple[str, str], list[Any]]:
        assert self._alert_file is not None
        try:
            doc = json.loads(self._alert_file.read_text())
            return {(str(e[0]), str(e[1])): list(e[2:]) for e in doc if isinstance(e, list) and len(e) >= 5}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, IndexError) as e:
            log.warning("nagios export: %s cannot be read (%s): alerts resolved while monbridge was down get no "
                        "OK result", self._alert_file, e)
            return {}

    def _save_alerts(self) -> None:
        assert self._alert_file is not None
        tmp = self._alert_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps([[*k, *v] for k, v in self._alert_sent.items()]))
            os.replace(tmp, self._alert_file)
        except OSError as e:
            log.warning("nagios export: cannot write %s: %s", self._alert_file, e)

    # ------------------------------------------------------------------ the rest

    async def import_metrics(self) -> Sequence[Metric]:
        labels = {"transport": "nsca" if isinstance(self._transport, Nsca) else "command_file"}
        pending = self._sender.pending if self._sender is not None else 0
        return [
            Metric("monbridge.nagios.results.sent", MetricKind.COUNTER, float(self.sent), "{result}",
                   "passive results delivered to Nagios", labels),
            Metric("monbridge.nagios.results.queued", MetricKind.GAUGE, float(pending), "{result}",
                   "passive results waiting for delivery", labels),
            Metric("monbridge.nagios.send.failures", MetricKind.COUNTER, float(self.failures), "{failure}",
                   "deliveries that failed (retried)", labels),
            *(Metric("monbridge.nagios.results.dropped", MetricKind.COUNTER, float(n), "{result}",
                     "passive results dropped, by reason", {**labels, "reason": r}) for r, n in sorted(self.dropped.items())),
        ]

    async def import_alerts(self) -> Sequence[Alert]:
        return []

    async def shutdown(self, timeout: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._sender is not None:
            await self._sender.close(timeout)
