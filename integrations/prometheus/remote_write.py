"""Prometheus remote write 1.0: samples out through a bounded, persistent queue, delivered at least once.

``append`` writes samples into the queue (``bridge.delivery.DiskQueue``: per-shard segment files, or memory when
``queue.path`` is not set — then a restart loses what was not yet sent) and returns; a few shard
senders (asyncio tasks sharing one aiohttp session) read the queue in order and POST it as
snappy-compressed protobuf ``WriteRequest``s. A series always maps to the same shard (crc32 of its
label bytes, stable across restarts), and a shard sends its records strictly in order, so a
series' backlog reaches the receiver before its new samples.

Retries follow the remote-write spec and Prometheus' queue manager, by ``bridge.delivery``: 5xx,
429 (as Prometheus with ``retry_on_http_429``) and 408 are retried with exponential backoff
(``min_backoff`` doubling up to ``max_backoff``, with jitter: ``bridge.delivery.Backoff``), and a
longer ``Retry-After`` (seconds or an HTTP date, at most ``max_retry_after``) sets the wait
instead; connection errors and timeouts are retried; any other status drops the batch (counted,
and logged with the status and the start of the body). Retries go on until the batch is delivered
or the writer stops; stopped, the batch stays in the queue for the next start.

Hand-written on purpose: the protobuf encoding. Four tiny messages, encoded on the hot path of
every sample; each sample is stored in the queue already encoded as one ``TimeSeries`` entry of
a ``WriteRequest`` (the series' cached ``encode_labels`` bytes plus the sample), so a send is a
concatenation and a snappy call — no generated prompb module, no per-send object tree.

Config (``RemoteWriteConfig``)::

    url: http://prometheus:9090/api/v1/write
    name: main                   # in logs and self-metrics (default: the url's host:port)
    headers: {X-Scope-OrgID: t1} # secret values
    basic_auth: {username: u, password: p}   # or bearer_token (secret)
    timeout: 30                  # seconds per request
    queue: {path: /var/lib/monbridge/rw, max_bytes: 268435456, max_samples_per_send: 500, shards: 4,
            min_backoff: 0.03, max_backoff: 5, max_retry_after: 300, batch_send_deadline: 5, fsync: false}
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import threading
import time
import urllib.parse
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.api import ExportStatus, Metric, MetricKind
from bridge.delivery import REAL_CLOCK, Backoff, Batch, Clock, DiskQueue, DropCounts, Retries, classify_error, classify_status
from bridge.helpers import EXCERPT_BYTES, cancel_and_wait, peer_excerpt
from bridge.ledger import loss_counter
from integrations.prometheus.config import BasicAuth, QueueConfig, RemoteWriteConfig

__all__ = [
    "STALE_NAN",
    "BasicAuth",
    "QueueConfig",
    "RemoteWriteConfig",
    "RemoteWriter",
    "encode_labels",
    "encode_named_labels",
    "encode_native_histogram",
    "encode_sample",
]

log = logging.getLogger("monbridge.integrations.prometheus.remote_write")

#: Prometheus' staleness marker: a NaN with this exact bit pattern (``value.StaleNaN``).
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]

METRIC_PREFIX = "monbridge.remote_write."
LOG_INTERVAL_S = 30.0  # a repeated failure is logged at most this often per remote (with the count since)


# ---------------------------------------------------------------------------- protobuf, by hand


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # int64: two's complement, ten bytes
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field_bytes(tag: int, data: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(data)) + data


def _label_field(name: str, value: str) -> bytes:
    """One ``labels`` entry: a Label {1: name, 2: value}."""
    nb, vb = name.encode(), value.encode()
    ln, lv = len(nb), len(vb)
    if ln + lv + 4 < 0x80:  # every length one byte: the common case, in one step
        return bytes((0x0A, ln + lv + 4, 0x0A, ln)) + nb + bytes((0x12, lv)) + vb
    return _field_bytes(0x0A, _field_bytes(0x0A, nb) + _field_bytes(0x12, vb))


# Encoded Label entries by (name, value): most pairs recur across a target's series (job,
# instance, code="200"). Bounded: emptied when full, and what recurs comes back at once.
_LABEL_FIELDS: dict[tuple[str, str], bytes] = {}
_LABEL_FIELDS_MAX = 1 << 14


def encode_labels(labels: Iterable[tuple[str, str]]) -> bytes:
    """The ``labels`` field (1) of a TimeSeries for ``labels``, sorted by name, as the receiver
    requires. A label with an empty value is left out (in Prometheus it is the same as no label);
    a name given twice is a ValueError."""
    parts = []
    previous = None
    fields = _LABEL_FIELDS
    for name, value in sorted(labels):
        if name == previous:
            raise ValueError(f"label {name!r} given twice")
        previous = name
        if value == "":
            continue
        pair = (name, value)
        b = fields.get(pair)
        if b is None:
            if len(fields) >= _LABEL_FIELDS_MAX:
                fields.clear()
            b = fields[pair] = _label_field(name, value)
        parts.append(b)
    return b"".join(parts)


def encode_named_labels(name: str, labels: Iterable[tuple[str, str]]) -> bytes:
    """``encode_labels((("__name__", name), *labels))`` for ``labels`` already sorted by name, with
    unique names other than ``__name__`` and string values: one pass, no sort."""
    fields = _LABEL_FIELDS
    if len(fields) >= _LABEL_FIELDS_MAX:
        fields.clear()
    head = ("__name__", name)
    first = fields.get(head)
    if first is None:
        first = fields[head] = _label_field(*head)
    parts = []
    for pair in labels:
        if first and pair[0] > "__name__":
            parts.append(first)
            first = b""
        b = fields.get(pair)
        if b is None:
            if not pair[1]:
                continue
            # bounded: past the cap new pairs are encoded each time, until the next call empties it
            b = _label_field(*pair)
            if len(fields) < _LABEL_FIELDS_MAX:
                fields[pair] = b
        parts.append(b)
    if first:
        parts.append(first)
    return b"".join(parts)


_DOUBLE = struct.Struct("<d")
_PREFIXES = 4096
_ENTRY_PREFIXES = [b"\x0a" + _varint(n) for n in range(_PREFIXES)]  # the timeseries entry's tag and length


def encode_sample(labels: bytes, value: float, timestamp_ms: int) -> bytes:
    """One ``timeseries`` entry (WriteRequest field 1) holding ``labels`` and one Sample. The value
    is copied bit for bit (so STALE_NAN stays STALE_NAN)."""
    sample = b"\x09" + _DOUBLE.pack(value) + b"\x10" + _varint(timestamp_ms)
    series = labels + b"\x12" + _varint(len(sample)) + sample
    return b"\x0a" + _varint(len(series)) + series


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _packed(tag: int, values: Iterable[int]) -> bytes:
    return _field_bytes(tag, b"".join(_varint(v) for v in values))


#: Prometheus' native histogram schemas (its ``schema`` is OTel's exponential histogram ``scale``).
NATIVE_SCHEMAS = range(-4, 9)


def encode_native_histogram(labels: bytes, h: Any, timestamp_ms: int) -> bytes | None:
    """One ``timeseries`` entry holding ``labels`` and one native histogram (TimeSeries field 4)
    made from an OTel exponential histogram ``h`` (``bridge.api.ExponentialHistogramValue``) as the
    OTel → Prometheus compatibility rules say: scale is the schema (a scale over 8 is downscaled to
    8), bucket ``i`` is Prometheus' bucket ``i + 1`` (upper-bound indexed), each side one span of
    delta-encoded counts, a zero threshold of 0 becomes 1e-128. None for a scale under -4, which
    Prometheus cannot take."""
    from bridge.otel import downscale

    scale = h.scale
    if scale < NATIVE_SCHEMAS.start:
        return None
    by = max(scale - (NATIVE_SCHEMAS.stop - 1), 0)
    out = bytearray(b"\x08" + _varint(h.count))  # count_int
    out += b"\x19" + _DOUBLE.pack(h.sum if h.sum is not None else math.nan)  # sum
    out += b"\x20" + _varint(_zigzag(scale - by))  # schema (sint32)
    out += b"\x29" + _DOUBLE.pack(h.zero_threshold or 1e-128)  # zero_threshold
    out += b"\x30" + _varint(h.zero_count)  # zero_count_int
    for (offset, counts), span_tag, delta_tag in (
            (downscale(h.negative_offset, h.negative_counts, by), 0x42, 0x4A),
            (downscale(h.positive_offset, h.positive_counts, by), 0x5A, 0x62)):
        if not counts:
            continue
        out += _field_bytes(span_tag, b"\x08" + _varint(_zigzag(offset + 1)) + b"\x10" + _varint(len(counts)))
        out += _packed(delta_tag, (_zigzag(c - p) for c, p in zip(counts, (0, *counts), strict=False)))
    out += b"\x78" + _varint(timestamp_ms)  # timestamp
    series = labels + _field_bytes(0x22, bytes(out))
    return b"\x0a" + _varint(len(series)) + series


def display_url(url: str) -> str:
    """``url`` as logs show it: scheme, host, port and path; no credentials, no query (it may hold a key)."""
    u = urllib.parse.urlsplit(url)
    netloc = u.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if u.port is not None:
        netloc += f":{u.port}"
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))


# ---------------------------------------------------------------------------- the writer


class _Throttle:
    """Lets a kind of log line through once per LOG_INTERVAL_S, counting what it held back."""

    def __init__(self, interval: float = LOG_INTERVAL_S) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = defaultdict(int)

    def __call__(self, kind: str) -> int | None:
        """None: do not log; else the number of lines held back since the last one."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] += 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)


def _suffix(held: int) -> str:
    return f" ({held} similar lines held back)" if held else ""


class RemoteWriter:
    """Queues samples and sends them to one remote-write endpoint."""

    def __init__(self, config: RemoteWriteConfig, *, clock: Clock = REAL_CLOCK) -> None:
        self.config = config
        self._clock = clock  # the retry waits and the batch deadline's time: a virtual one in tests
        u = urllib.parse.urlsplit(config.url)
        self.name = config.name or (f"{u.hostname}:{u.port}" if u.port else (u.hostname or config.url))
        self.url = display_url(config.url)
        self._secrets = config.secrets()
        qc = config.queue
        self._queue = DiskQueue(qc.path, qc.shards, qc.max_bytes, qc.fsync, on_drop=self._on_queue_drop)
        self._backoff = Backoff(qc.min_backoff, qc.max_backoff, retry_after_max=qc.max_retry_after)
        self._opened = False
        self._stopped = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: list[asyncio.Event] = []
        self._progress: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: Any = None
        self._flushing = 0
        self._throttle = _Throttle()
        # self-metrics
        self.samples_sent = 0
        self.samples_retried = 0
        self.dropped: dict[str, int] = loss_counter("remote_write")
        self.requests: dict[str, int] = defaultdict(int)
        self.last_send_time: float | None = None

    def __repr__(self) -> str:
        return f"RemoteWriter(name={self.name!r}, url={self.url!r})"

    def _redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "<secret>")
        return text

    # ------------------------------------------------------------------ queue

    def _open(self) -> None:
        with self._lock:
            if self._opened:
                return
            torn = self._queue.open()
            self._opened = True
        if torn.records:
            self.dropped["torn_record"] += torn.samples
        qc = self.config.queue
        where = f"on disk at {qc.path}" if qc.path else "in memory (lost on restart)"
        log.info("remote write %s to %s: queue %s, %d samples pending, %d shards", self.name, self.url, where,
                 self._queue.pending_samples, len(self._queue.shards))

    def _on_queue_drop(self, counts: DropCounts, reason: str) -> None:
        self.dropped[reason] += counts.samples
        held = self._throttle("drop:" + reason)
        if held is not None and reason != "max_bytes":
            log.warning("remote write %s (%s): dropped %d queued samples (%d bytes) not yet delivered: %s%s", self.name,
                        self.url, counts.samples, counts.bytes, reason, _suffix(held))
        elif held is not None:
            log.warning("remote write %s (%s): queue reached max_bytes=%d: dropped the oldest %d samples (%d bytes) "
                        "not yet delivered%s", self.name, self.url, self.config.queue.max_bytes, counts.samples,
                        counts.bytes, _suffix(held))

    def append(self, samples: Sequence[tuple[bytes, float, int]]) -> int:
        """Queue ``samples`` — (``encode_labels`` bytes, value, timestamp in ms) — and return how many
        were accepted. Once this returns they are in the queue (written to the OS with a disk
        queue) and will be delivered at least once. Thread-safe; opens the queue if needed."""
        if self._stopped:
            self.dropped["stopped"] += len(samples)
            held = self._throttle("stopped")
            if held is not None:
                log.warning("remote write %s: %d samples appended after stop were dropped%s", self.name, len(samples),
                            _suffix(held))
            return 0
        if not self._opened:
            self._open()
        nshards = len(self._queue.shards)
        per_shard: dict[int, list[bytes]] = defaultdict(list)
        crc = zlib.crc32
        pack = _DOUBLE.pack
        prefixes = _ENTRY_PREFIXES
        tails: dict[int, tuple[bytes, bytes, int]] = {}
        # encode_sample, inlined: a round's samples share a few timestamps, so the sample's
        # framing is built once per timestamp and each sample is one join (the measured hot path).
        for labels, value, ts in samples:
            t = tails.get(ts)
            if t is None:
                tv = _varint(ts)
                t = tails[ts] = (b"\x12" + bytes((10 + len(tv),)) + b"\x09", b"\x10" + tv, 12 + len(tv))
            n = len(labels) + t[2]
            per_shard[crc(labels) % nshards].append(b"".join((
                prefixes[n] if n < _PREFIXES else b"\x0a" + _varint(n), labels, t[0], pack(value), t[1])))
        return self._enqueue(per_shard)

    def append_encoded(self, entries: Sequence[tuple[bytes, bytes]]) -> int:
        """Queue already encoded ``timeseries`` entries (``encode_native_histogram``), each with its
        ``encode_labels`` bytes (which pick the shard); as ``append`` otherwise."""
        if self._stopped:
            self.dropped["stopped"] += len(entries)
            return 0
        if not self._opened:
            self._open()
        nshards = len(self._queue.shards)
        per_shard: dict[int, list[bytes]] = defaultdict(list)
        for labels, entry in entries:
            per_shard[zlib.crc32(labels) % nshards].append(entry)
        return self._enqueue(per_shard)

    def _enqueue(self, per_shard: dict[int, list[bytes]]) -> int:
        queue = self._queue
        max_per = self.config.queue.max_samples_per_send
        accepted = 0
        for index, encoded in per_shard.items():
            shard = queue.shards[index]
            for i in range(0, len(encoded), max_per):
                chunk = encoded[i:i + max_per]
                try:
                    ok = shard.append(b"".join(chunk), len(chunk))
                except OSError as e:
                    self.dropped["write_error"] += len(chunk)
                    held = self._throttle("write_error")
                    if held is not None:
                        log.error("remote write %s: cannot write to the queue at %s: %s; %d samples dropped%s",
                                  self.name, self.config.queue.path, e, len(chunk), _suffix(held))
                    continue
                if not ok:
                    self.dropped["too_large"] += len(chunk)
                    log.error("remote write %s: %d samples (%d bytes encoded) exceed queue.max_bytes=%d and were dropped",
                              self.name, len(chunk), sum(map(len, chunk)), self.config.queue.max_bytes)
                    continue
                accepted += len(chunk)
            self._wake_shard(index)
        return accepted

    def _wake_shard(self, index: int) -> None:
        loop = self._loop
        if loop is None or index >= len(self._wake):
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake[index].set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake[index].set)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open (replay) the queue and start one sender task per shard."""
        import aiohttp

        from bridge import __version__

        if self._tasks:
            return
        await asyncio.to_thread(self._open)
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        self._progress = asyncio.Event()
        self._wake = [asyncio.Event() for _ in self._queue.shards]
        headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            "User-Agent": f"monbridge/{__version__}",
        }
        headers.update({k: v.get_secret_value() for k, v in self.config.headers.items()})
        auth = None
        if self.config.basic_auth is not None:
            auth = aiohttp.BasicAuth(self.config.basic_auth.username, self.config.basic_auth.password.get_secret_value())
        if self.config.bearer_token is not None:
            headers["Authorization"] = "Bearer " + self.config.bearer_token.get_secret_value()
        self._session = aiohttp.ClientSession(
            headers=headers, auth=auth,
            connector=aiohttp.TCPConnector(limit=len(self._queue.shards)),
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
        )
        self._tasks = [asyncio.create_task(self._run_shard(i), name=f"remote-write {self.name} shard {i}")
                       for i in range(len(self._queue.shards))]

    async def flush(self, timeout: float) -> bool:
        """Wait until everything appended before this call is delivered (or dropped); False on timeout."""
        if not self._opened:
            return True
        targets = [s.end_position() for s in self._queue.shards]

        def done() -> bool:
            return all(s.delivered_position() >= t for s, t in zip(self._queue.shards, targets, strict=True))

        if done():
            return True
        if not self._tasks or self._progress is None:
            return False
        self._flushing += 1
        for event in self._wake:
            event.set()
        deadline = time.monotonic() + timeout
        try:
            while not done():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._progress.clear()
                if done():
                    break
                try:
                    await asyncio.wait_for(self._progress.wait(), remaining)
                except TimeoutError:
                    return done()
            return True
        finally:
            self._flushing -= 1

    async def stop(self, timeout: float) -> None:
        """Flush for up to ``timeout`` seconds, then stop the senders; what is undelivered stays in the
        queue (on disk: for the next start). Idempotent."""
        if self._stopped:
            return
        delivered = await self.flush(timeout) if self._tasks else True
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)
        if self._session is not None:
            await self._session.close()
            self._session = None
        pending = self._queue.pending_samples if self._opened else 0
        self._queue.close()
        self._opened = False
        self._queue = DiskQueue(self.config.queue.path, self.config.queue.shards, self.config.queue.max_bytes,
                                self.config.queue.fsync, on_drop=self._on_queue_drop)
        if not delivered or pending:
            kept = f"kept at {self.config.queue.path} for the next start" if self.config.queue.path else "lost (memory queue)"
            log.warning("remote write %s (%s) stopped with %d samples undelivered: %s", self.name, self.url, pending, kept)

    # ------------------------------------------------------------------ senders

    async def _run_shard(self, index: int) -> None:
        shard = self._queue.shards[index]
        qc = self.config.queue
        wake = self._wake[index]
        waiting_since: float | None = None
        while True:
            wake.clear()
            pending = shard.pending_samples
            if pending == 0:
                waiting_since = None
                await wake.wait()
                continue
            now = self._clock.monotonic()
            if waiting_since is None:
                waiting_since = now
            if pending < qc.max_samples_per_send and not self._flushing and now - waiting_since < qc.batch_send_deadline:
                try:
                    await asyncio.wait_for(wake.wait(), qc.batch_send_deadline - (now - waiting_since))
                except TimeoutError:
                    pass
                continue
            try:
                batch = shard.read_batch(qc.max_samples_per_send)
                if batch is None:
                    # Samples are pending but none is readable: a drop for room is under way.
                    await self._clock.sleep(qc.min_backoff)
                    continue
                await self._deliver(index, batch)
                shard.ack(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a sender must outlive a bad disk or a bug in one round
                if self._throttle("sender_error") is not None:
                    log.exception("remote write %s: shard %d failed; trying again in %g s", self.name, index, qc.max_backoff)
                await self._clock.sleep(qc.max_backoff)
                continue
            waiting_since = None
            assert self._progress is not None
            self._progress.set()

    async def _deliver(self, index: int, batch: Batch) -> None:
        """POST ``batch`` until it is delivered or dropped for a status that must not be retried."""
        import aiohttp
        import cramjam

        body = bytes(cramjam.snappy.compress_raw(b"".join(batch.payloads)))
        retries = Retries(self._backoff)
        while True:
            try:
                async with self._session.post(self.config.url, data=body) as response:
                    status = response.status
                    self.requests[str(status)] += 1
                    result = classify_status(status, retry_after=response.headers.get("Retry-After"))
                    if result.ok:
                        await response.read()
                        self.samples_sent += batch.samples
                        self.last_send_time = self._clock.time()
                        if retries.attempts and self._throttle("recovered") is not None:
                            log.info("remote write %s (%s): delivered again (HTTP %d) after %d failed attempts",
                                     self.name, self.url, status, retries.attempts)
                        return
                    text = (await response.content.read(EXCERPT_BYTES)).decode("utf-8", "replace")
                    reason = response.reason or ""
                    if result.status is ExportStatus.RETRYABLE:
                        why = f"HTTP {status} {reason}".rstrip()
                        if text.strip():
                            why += f": {peer_excerpt(self._redact(text))}"
                    else:
                        self.dropped["http_4xx" if 400 <= status < 500 else f"http_{status}"] += batch.samples
                        held = self._throttle(f"drop:{status}")
                        if held is not None:
                            log.error("remote write %s (%s): HTTP %d %s: %s; dropped %d samples (not retried)%s",
                                      self.name, self.url, status, reason, peer_excerpt(self._redact(text)),
                                      batch.samples, _suffix(held))
                        return
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                if isinstance(e, TimeoutError):
                    self.requests["timeout"] += 1
                    why = f"no answer within {self.config.timeout:g} s"
                else:
                    self.requests["connection_error"] += 1
                    why = f"{type(e).__name__}: {self._redact(str(e))}"
                result = classify_error(e, why)
            self.samples_retried += batch.samples
            delay = retries.next(result.retry_after)  # jitter: shards do not retry in step
            held = self._throttle("retry")
            if held is not None:
                log.warning("remote write %s (%s): %s; retrying %d samples of shard %d in %.2f s%s%s", self.name,
                            self.url, why, batch.samples, index, delay,
                            " (Retry-After)" if result.retry_after is not None else "", _suffix(held))
            await self._clock.sleep(delay)

    # ------------------------------------------------------------------ self-metrics

    def self_metrics(self) -> list[Metric]:
        """``monbridge.remote_write.*``, each with the attribute ``remote_name``."""
        base = {"remote_name": self.name}
        queue = self._queue
        out = [
            Metric(METRIC_PREFIX + "queue.samples", MetricKind.GAUGE, float(queue.pending_samples if self._opened else 0),
                   "{sample}", "samples in the queue, not yet delivered", base),
            Metric(METRIC_PREFIX + "queue.bytes", MetricKind.GAUGE, float(queue.total_bytes if self._opened else 0),
                   "By", "bytes the queue takes (bounded by queue.max_bytes)", base),
            Metric(METRIC_PREFIX + "samples.sent", MetricKind.COUNTER, float(self.samples_sent),
                   "{sample}", "samples delivered", base),
            Metric(METRIC_PREFIX + "samples.retried", MetricKind.COUNTER, float(self.samples_retried),
                   "{sample}", "samples sent again after a failed request", base),
        ]
        for reason, n in sorted(self.dropped.items()):
            out.append(Metric(METRIC_PREFIX + "samples.dropped", MetricKind.COUNTER, float(n), "{sample}",
                              "samples given up, by reason", {**base, "reason": reason}))
        for status, n in sorted(self.requests.items()):
            out.append(Metric(METRIC_PREFIX + "requests", MetricKind.COUNTER, float(n), "{request}",
                              "requests by HTTP status (or connection_error, timeout)", {**base, "status": status}))
        if self.last_send_time is not None:
            out.append(Metric(METRIC_PREFIX + "last_send.timestamp", MetricKind.GAUGE, self.last_send_time,
                              "s", "Unix time of the last delivered request", base))
        return out
