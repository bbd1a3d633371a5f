"""The DogStatsD server of ``monitoring.integration.datadog`` (its ``dogstatsd`` section).

Sockets: ``listen_udp`` (``workers`` UDP sockets on the same address, bound with
``SO_REUSEPORT`` so the kernel spreads datagrams over them) and ``listen_uds`` (a Unix datagram
socket whose file gets ``uds_mode``; a stale file left by a former run is replaced, a live
server's socket or any other file is not; the file is removed at stop). ``so_rcvbuf`` sets the
sockets' receive buffer; what the kernel gave is logged and exposed as
``monbridge.dogstatsd.receive_buffer``.

Each socket is read by a thread of its own, up to ``BATCH`` datagrams at once, with a watchdog
thread beside it that never holds the interpreter lock (``_dsdfast.Queue.pump``): while the reader
does not read (it waits for the interpreter lock, held by a flush or the event loop, or for
datagrams), the watchdog empties the socket into a ring of ``reader_queue_bytes``, which the reader
takes first when it comes back. The reader parses them (``integrations.datadog.dogstatsd``; each
line on its own) and adds their samples to the interval's aggregator
(``integrations.datadog.aggregate``), both at once for the lines of a context it has seen (its
``LineCache``, whose loop is in C too). With ``reader_queue_bytes: 0`` there is no watchdog
(``_dsdfast.recv``), and where the C extension is not built the reader uses one ``recvmmsg(2)``
a batch through ctypes (Linux) or ``recv_into`` a datagram. The event loop only
runs the flush, every ``flush_interval`` seconds, which pushes the interval's gauges
and its deltas (counts, distributions) into the pipeline. ``stop`` closes the sockets, waits for
the readers and flushes once more: nothing read is lost on a graceful stop.

What comes in is counted (``monbridge.dogstatsd.*``, pushed every round):

* ``datagrams{transport}``: datagrams read;
* ``messages{type}``: metric samples, events and service checks taken;
* ``dropped{reason}``: messages dropped, by reason: the parser's reasons (a bad line of a
  datagram; the datagram's other lines are kept), ``max_contexts`` (a sample beyond the
  interval's contexts), ``max_alerts`` (a service check or event whose alert found the alerts
  held full), ``internal_error``; and, counted once a datagram whatever the number of lines it
  held (those are lost uncounted: how many there were is not known), ``truncated`` (a datagram
  longer than ``buffer_size``, dropped whole), ``receive_buffer`` (a UDP datagram the kernel
  dropped, the socket's receive buffer full: read from /proc/net/udp; the watchdog does not read
  into a full ring, so the socket fills) and ``reader_queue`` (a datagram the ring had no room for
  after all: the watchdog reads only as many as surely fit, so this is a guard, not expected);
* ``points{result, reason}``: the aggregated points pushed into the pipeline, accepted or
  rejected by the pipeline (by its reason); a point aggregates many messages, so these are
  counted apart from ``dropped``.

So for every stream: messages sent = ``messages`` + ``dropped`` (a truncated or kernel-dropped datagram
counting as one).
A dropped message is logged at most once per reason every ``LOG_EVERY_S`` seconds, with the
first bytes of the bad line, escaped.

Service checks and events: a service check CRITICAL (2) fires an alert of severity
``critical``, WARNING (1) one of severity ``warning``, OK (0) resolves the alert of the same
check, host and tags; UNKNOWN (3) leaves it as it is. An event of ``alert_type`` ``error`` fires
a ``critical`` alert, ``warning`` a ``warning`` one, ``success`` resolves the alert of the same
``aggregation_key`` (or, without one, title), host and tags; an ``info`` event raises nothing.
Every event is logged as a JSON record on the logger ``monbridge.dogstatsd.events`` (at most
``EVENT_LOGS_PER_S`` a second; beyond, ``events_unlogged`` counts them). An alert's labels:
``alertname`` (the check's name, the event's title), ``severity``, ``host``, ``dd_source``
(``service_check`` or ``event``), an event's ``dd_aggregation_key``, and the tags as the
aggregator makes them attributes (``k:v`` -> ``k=v``, a flag -> ``unnamed_flag=flag``); the
check's message (the event's title and text) are its annotations. At most ``MAX_ALERTS`` alerts
are held (active, and waiting for ``take_alerts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from bridge.api import Alert, AlertState, IngestResult, Metric, MetricIngest, MetricKind, PluginError
from bridge.helpers import LogLimit, parse_listen
from bridge.ledger import loss_counter
from bridge.notifiers import fingerprint
from integrations.datadog.aggregate import Aggregator, LineCache, _dsdfast, tags_to_attributes
from integrations.datadog.config import DogStatsDConfig
from integrations.datadog.dogstatsd import Event, Parsed, ServiceCheck

__all__ = ["LOG_EVERY_S", "MAX_ALERTS", "DogStatsDServer"]

log = logging.getLogger("monbridge.dogstatsd")
event_log = logging.getLogger("monbridge.dogstatsd.events")

#: Seconds between two log lines of the same drop reason.
LOG_EVERY_S = 60.0
#: Alerts held at once: active ones (to resolve) and those waiting for ``take_alerts``.
MAX_ALERTS = 10_000
#: Events logged a second at most.
EVENT_LOGS_PER_S = 50
#: Points pushed into the pipeline at once by a flush.
PUSH_CHUNK = 1000
#: Seconds ``stop`` waits for a reader thread to end.
JOIN_TIMEOUT_S = 5.0
#: How much nicer than the readers the thread of the flushes and rounds runs: on a busy machine the
#: kernel gives the CPU to the socket's watchdog and reader first (a flush has a whole interval).
FLUSH_NICE = 10
#: Datagrams read (what is queued, without waiting) and parsed at once.
BATCH = 64
#: The bytes a datagram of blank lines holds.
_BLANK = frozenset(b"\r\n")
#: Bytes of a bad line or datagram shown in the log.
EXCERPT_BYTES = 64

SEVERITY = {2: "critical", 1: "warning"}
EVENT_SEVERITY = {"error": "critical", "warning": "warning"}
_STATUS = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN"}


def excerpt(data: bytes) -> str:
    """The first bytes of ``data``, printable: non-ASCII and control bytes escaped."""
    cut = data[:EXCERPT_BYTES]
    text = cut.decode("ascii", "backslashreplace")
    text = "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii") for c in text)
    return f"'{text}'" + ("..." if len(data) > EXCERPT_BYTES else "")


class _Reader:
    """One socket and the thread reading it; its counts, written by that thread alone."""

    __slots__ = ("datagrams", "inode", "queue", "samples", "sock", "thread", "transport")

    def __init__(self, sock: socket.socket, transport: str) -> None:
        self.sock = sock
        self.transport = transport
        self.inode = os.fstat(sock.fileno()).st_ino  # (its line in /proc/net/udp)
        self.thread: threading.Thread | None = None
        self.queue: Any = None  # (the C reader's _dsdfast.Queue)
        self.datagrams = 0
        self.samples = 0


class DogStatsDServer:
    """DogStatsD over UDP and a Unix datagram socket, aggregated per ``flush_interval`` into ``ingest``."""

    def __init__(self, config: DogStatsDConfig, ingest: MetricIngest) -> None:
        self.config = config
        self.ingest = ingest
        #: Whether the readers use the C loop (``integrations.datadog._dsdfast``) where it is built.
        self.fast = True
        ingest.expire_after = config.expire_after
        self.aggregator = Aggregator(config)
        self._readers: list[_Reader] = []
        self._stopping = False
        self._flush_task: asyncio.Task[None] | None = None
        #: The flushes' and rounds' thread, at a lower CPU priority than the readers (``FLUSH_NICE``).
        self._executor: ThreadPoolExecutor | None = None
        self._round_future: asyncio.Future[None] | None = None
        self._flush_lock = threading.Lock()
        self._uds_path: str | None = None
        #: The address the UDP sockets are bound to, and the receive buffer each transport got.
        self.udp_bound: tuple[str, int] | None = None
        self.receive_buffer: dict[str, int] = {}
        # Written under _lock by any reader (rare paths: bad lines, events, service checks).
        self._lock = threading.Lock()
        self.dropped: Counter[str] = loss_counter("dogstatsd")
        self.notes: Counter[str] = Counter()  # events and service_checks taken
        self.points: Counter[tuple[str, str]] = Counter()  # (result, reason) of pushed points
        self.events_unlogged = 0
        self._kernel_drops = 0
        self._logged = LogLimit(LOG_EVERY_S)
        self._event_second = 0
        self._event_logs = 0
        # Alerts: the active one of each identity, and the changes not taken yet (keyed so that a
        # state change replaces the one before it; a firing alert resolved before it was taken
        # goes with its resolution).
        self._active: dict[tuple[Any, ...], Alert] = {}
        self._pending: dict[tuple[str, AlertState], Alert] = {}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind the sockets and start their readers and the flush loop; PluginError naming the
        config key when a socket cannot be bound."""
        try:
            if self.config.listen_udp is not None:
                self._bind_udp(self.config.listen_udp)
            if self.config.listen_uds is not None:
                self._bind_uds(self.config.listen_uds)
        except BaseException:
            await self.stop()
            raise
        for r in self._readers:
            if _dsdfast is not None and self.fast and self.config.reader_queue_bytes:
                r.queue = _dsdfast.Queue(r.sock.fileno(), self.config.buffer_size, BATCH, self.config.reader_queue_bytes)
            r.thread = threading.Thread(target=self._read, args=(r,), name=f"dogstatsd-{r.transport}", daemon=True)
            r.thread.start()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dogstatsd-flush", initializer=_lower_priority)
        self._flush_task = asyncio.create_task(self._flush_loop(), name="dogstatsd:flush")

    def _buffer(self, sock: socket.socket, transport: str) -> None:
        if self.config.so_rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.so_rcvbuf)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.receive_buffer[transport] = got
        if self.config.so_rcvbuf is not None and got < self.config.so_rcvbuf:
            # (a warning when the user asked for it; the default's asking is only said)
            say = log.warning if "so_rcvbuf" in self.config.model_fields_set else log.info
            say("dogstatsd: %s receive buffer is %d bytes, not so_rcvbuf's %d (the system's bound, net.core.rmem_max, "
                "is lower)", transport, got, self.config.so_rcvbuf)

    def _bind_udp(self, listen: str) -> None:
        host, port = parse_listen(listen)
        try:
            family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
            for _ in range(self.config.workers):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self._readers.append(_Reader(sock, "udp"))
                if self.config.workers > 1:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                self._buffer(sock, "udp")
                sock.bind(addr)
                addr = sock.getsockname()  # the others bind the port the first got (port 0 in tests)
        except OSError as e:
            raise PluginError(f"dogstatsd.listen_udp: cannot listen on {listen}: {e.strerror or e}") from None
        self.udp_bound = (str(addr[0]), int(addr[1]))
        log.info("DogStatsD on udp://%s:%s (%d socket%s)", *self.udp_bound, self.config.workers,
                 "s" if self.config.workers > 1 else "")

    def _bind_uds(self, path: str) -> None:
        try:
            _remove_stale(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._readers.append(_Reader(sock, "uds"))
            # The socket's mode before bind is the file's (less the umask): the file is never
            # more open than uds_mode, even for the moment before the chmod.
            os.fchmod(sock.fileno(), self.config.uds_mode)
            self._buffer(sock, "uds")
            sock.bind(path)
            self._uds_path = path
            os.chmod(path, self.config.uds_mode)
        except OSError as e:
            raise PluginError(f"dogstatsd.listen_uds: cannot listen on {path}: {e.strerror or e}") from None
        log.info("DogStatsD on unix://%s (mode %o)", path, self.config.uds_mode)

    async def stop(self) -> None:
        """Close the sockets, wait for the readers, stop the flush loop and flush what was read."""
        if not self._stopping:
            self.kernel_drops()  # (the last count, before the sockets go)
        self._stopping = True
        for r in self._readers:
            if r.queue is not None:
                r.queue.stop()
            with contextlib.suppress(OSError):
                r.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv_into (ENOTCONN but done)
        for r in self._readers:
            if r.thread is not None:
                await asyncio.to_thread(r.thread.join, JOIN_TIMEOUT_S)
                if r.thread.is_alive():
                    log.warning("dogstatsd: the %s reader did not end in %gs", r.transport, JOIN_TIMEOUT_S)
        for r in self._readers:
            r.sock.close()
        if self._uds_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._uds_path)
            self._uds_path = None
        if self._flush_task is not None:
            task, self._flush_task = self._flush_task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await asyncio.to_thread(self.flush)
        if self._round_future is not None:
            await asyncio.wait([self._round_future])
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ reading (one thread per socket)

    def _read(self, r: _Reader) -> None:
        if r.queue is not None:
            self._read_fast(r)
        elif _dsdfast is not None and self.fast:
            self._read_c(r)
        elif _RECVMMSG is not None:
            self._read_mmsg(r)
        else:
            self._read_each(r)

    def _read_fast(self, r: _Reader) -> None:
        """``_read_mmsg`` in C (``_dsdfast.Queue.take``: the batch's system call, per-datagram checks
        and copies), with a watchdog thread (``Queue.pump``, which never holds the interpreter lock)
        that empties the socket into a ring of ``reader_queue_bytes`` while this thread does not
        read it (waiting for the interpreter lock, or for datagrams); this thread takes the ring's
        datagrams before it reads the socket again, so they keep their order. The datagrams it
        leaves (empty, truncated, blank lines alone) are dropped here as ``_read_mmsg`` drops them."""
        size = self.config.buffer_size
        buf = bytearray(BATCH * (size + 1))
        view = memoryview(buf)
        q = r.queue
        pump = threading.Thread(target=q.pump, name=f"dogstatsd-{r.transport}-pump", daemon=True)
        pump.start()
        take = q.take
        feed = LineCache(self.aggregator, self.config.max_tags).feed
        ring_drops = 0
        try:
            while True:
                got, off, special, errors = take(buf, BATCH)
                for err in errors:
                    self._drop("socket_error", f"a {r.transport} read failed ({os.strerror(err)}), its datagram", b"")
                if errors and got == 0:
                    time.sleep(0.1)  # (an error that repeats does not spin)
                if (n := q.dropped) != ring_drops:
                    with self._lock:
                        self.dropped["reader_queue"] += n - ring_drops
                        due = self._logged.due("reader_queue")
                    if due:
                        log.warning("dogstatsd: %d %s datagrams dropped, the reader's queue full (reader_queue_bytes "
                                    "%d); counted in monbridge_dogstatsd_dropped_total, logged at most once every %gs",
                                    n - ring_drops, r.transport, self.config.reader_queue_bytes, LOG_EVERY_S)
                    ring_drops = n
                if got < 0:
                    return  # (the pump ended at the stop and everything it read is taken)
                taken = got - self._specials(r, special, False)
                if taken:
                    self._batch(r, feed, view, off, taken)
        finally:
            pump.join(JOIN_TIMEOUT_S)

    def _read_c(self, r: _Reader) -> None:
        """``_read_mmsg`` with the batch's system call and its per-datagram checks and copies in
        C (``_dsdfast.recv``); the datagrams it leaves (empty, truncated, blank lines alone) are
        dropped here as ``_read_mmsg`` drops them."""
        size = self.config.buffer_size
        slot = size + 1
        rbuf = bytearray(BATCH * slot)
        buf = bytearray(BATCH * slot)
        view = memoryview(buf)
        fd = r.sock.fileno()
        recv = _dsdfast.recv
        feed = LineCache(self.aggregator, self.config.max_tags).feed
        while True:
            stopping = self._stopping
            got, off, special = recv(fd, rbuf, size, BATCH, not stopping, buf)
            if got <= 0:
                if stopping or self._stopping:
                    return  # (what was queued at the stop is read: this read found nothing more)
                if got == 0 or -got in (errno.EINTR, errno.EAGAIN):
                    continue
                self._drop("socket_error", f"a {r.transport} read failed ({os.strerror(-got)}), its datagram", b"")
                time.sleep(0.1)  # (an error that repeats does not spin)
                continue
            taken = got - self._specials(r, special, self._stopping)
            if taken:
                self._batch(r, feed, view, off, taken)

    def _specials(self, r: _Reader, special: list[tuple[int, int, bytes]], stopping: bool) -> int:
        """Drop the datagrams the C reader left (empty, truncated, blank lines alone) as
        ``_read_mmsg`` drops them; how many there were. An empty one at the stop is the shutdown's
        wake-up, not a datagram."""
        for _k, n, first in special:
            if n == 0:
                if stopping:
                    continue
                r.datagrams += 1
                self._drop("empty", f"an empty {r.transport} datagram", b"")
            elif not self._refused(r, n, memoryview(first)):  # (blank or too long: always refused)
                r.datagrams += 1
                self._drop("internal_error", f"a {r.transport} datagram left by the C reader", first)
        return len(special)

    def _read_each(self, r: _Reader) -> None:
        """Read ``r``'s socket until stop: a blocking read, then what else is queued (up to
        ``BATCH`` datagrams, without waiting), parsed as one text (each line is parsed on its own
        whichever datagram it came in, so this is the parse of each; one call for many datagrams
        costs a third less a datagram) and aggregated."""
        size = self.config.buffer_size
        buf = bytearray(BATCH * (size + 1))  # (each datagram and the newline that ends it)
        view = memoryview(buf)
        recv_into = r.sock.recv_into
        first, more = socket.MSG_TRUNC, socket.MSG_TRUNC | socket.MSG_DONTWAIT
        feed = LineCache(self.aggregator, self.config.max_tags).feed
        ending = False
        while not ending:
            off = got = 0
            flags = first
            while got < BATCH:
                try:
                    # With MSG_TRUNC: the datagram's length, even where it was cut.
                    n = recv_into(view[off:off + size], size, flags)
                except BlockingIOError:
                    break
                except OSError as e:
                    if self._stopping:
                        ending = True  # (what the batch holds is parsed first)
                        break
                    self._drop("socket_error", f"a {r.transport} read failed ({e}), its datagram", b"")
                    time.sleep(0.1)  # (an error that repeats does not spin)
                    break
                flags = more
                if n == 0:
                    if self._stopping:
                        ending = True
                        break
                    r.datagrams += 1
                    self._drop("empty", f"an empty {r.transport} datagram", b"")
                    continue
                if (n > size or buf[off] in _BLANK) and self._refused(r, n, view[off:off + min(n, size)]):
                    continue
                off += n
                if buf[off - 1] != 10:
                    buf[off] = 10
                    off += 1
                got += 1
            if got:
                self._batch(r, feed, view, off, got)

    def _refused(self, r: _Reader, n: int, data: memoryview) -> bool:
        """Whether a datagram of ``n`` bytes (what was read of it in ``data``) is read and dropped:
        longer than ``buffer_size`` (``truncated``), or blank lines alone (``empty``: alone it
        would be refused as empty, among others it would vanish)."""
        size = self.config.buffer_size
        if n > size:
            r.datagrams += 1
            self._drop("truncated", f"a {r.transport} datagram of {n} bytes, longer than buffer_size ({size}),",
                       data[:EXCERPT_BYTES + 1].tobytes())
            return True
        if data.tobytes().strip(b"\r\n"):
            return False
        r.datagrams += 1
        self._drop("empty", f"a {r.transport} datagram of blank lines", data.tobytes())
        return True

    def _batch(self, r: _Reader, feed: Callable[[memoryview], tuple[int, Parsed]], view: memoryview, off: int,
               got: int) -> None:
        """Parse and aggregate the ``got`` datagrams in ``view[:off]`` (each ending with a newline)."""
        try:
            taken, p = feed(view[:off])
            r.samples += taken
            if p.errors:
                for reason, line in p.errors:
                    self._drop(reason, "a bad line", line)
            if p.events or p.service_checks:
                self._notes(p.events, p.service_checks)
        except Exception:  # noqa: BLE001 - a datagram never stops the listener
            for _ in range(got):  # (each datagram of the batch counted as one drop)
                self._drop("internal_error", "a datagram that failed", view[:EXCERPT_BYTES + 1].tobytes(),
                           exc=True)
        finally:
            # Counted read once what they hold is counted too (a reader of the counts never sees
            # a datagram read whose messages are not yet taken or dropped).
            r.datagrams += got

    def _read_mmsg(self, r: _Reader) -> None:
        """``_read`` with one ``recvmmsg(2)`` a batch: it waits for one datagram and takes up to
        ``BATCH`` (one system call and one release of the interpreter for them all, where a
        ``recv_into`` each cost more than parsing a datagram's line); each is checked as ``_read``
        checks it and copied after the one before, a newline between them."""
        size = self.config.buffer_size
        slot = size + 1
        rbuf = ctypes.create_string_buffer(BATCH * slot)
        rview = memoryview(rbuf).cast("B")
        buf = bytearray(BATCH * slot)
        view = memoryview(buf)
        iov = (_Iovec * BATCH)()
        mm = (_Mmsghdr * BATCH)()
        base = ctypes.addressof(rbuf)
        for k in range(BATCH):
            iov[k].iov_base = base + k * slot
            iov[k].iov_len = size
            mm[k].msg_hdr.msg_iov = ctypes.addressof(iov[k])
            mm[k].msg_hdr.msg_iovlen = 1
        fd = r.sock.fileno()
        recvmmsg = _RECVMMSG
        assert recvmmsg is not None
        # (plain ints: socket's flags are an enum, whose '&' costs more than the rest of a datagram's checks)
        truncated = int(socket.MSG_TRUNC)
        wait, nowait = _MSG_WAITFORONE | truncated, int(socket.MSG_DONTWAIT) | truncated
        feed = LineCache(self.aggregator, self.config.max_tags).feed
        while True:
            stopping = self._stopping
            got = recvmmsg(fd, mm, BATCH, nowait if stopping else wait, None)
            if got <= 0:
                err = ctypes.get_errno() if got < 0 else 0
                if stopping or self._stopping:
                    return  # (what was queued at the stop is read: this read found nothing more)
                if got == 0 or err in (errno.EINTR, errno.EAGAIN):
                    continue
                self._drop("socket_error", f"a {r.transport} read failed ({os.strerror(err)}), its datagram", b"")
                time.sleep(0.1)  # (an error that repeats does not spin)
                continue
            off = taken = 0
            for k in range(got):
                m = mm[k]
                n = m.msg_len  # (with MSG_TRUNC: the datagram's length, even where it was cut)
                start = k * slot
                if n == 0:
                    if self._stopping:
                        continue  # (the shutdown's wake-up)
                    r.datagrams += 1
                    self._drop("empty", f"an empty {r.transport} datagram", b"")
                    continue
                if m.msg_hdr.msg_flags & truncated:
                    n = max(n, size + 1)
                if (n > size or rview[start] in _BLANK) and self._refused(r, n, rview[start:start + min(n, size)]):
                    continue
                view[off:off + n] = rview[start:start + n]
                off += n
                if buf[off - 1] != 10:
                    buf[off] = 10
                    off += 1
                taken += 1
            if taken:
                self._batch(r, feed, view, off, taken)

    def _drop(self, reason: str, what: str, data: bytes, exc: bool = False) -> None:
        with self._lock:
            self.dropped[reason] += 1
            if not self._logged.due(reason):
                return
        log.warning("dogstatsd: %s dropped (%s)%s; counted in monbridge_dogstatsd_dropped_total, logged at most "
                    "once every %gs per reason", what, reason, f", first bytes {excerpt(data)}" if data else "", LOG_EVERY_S,
                    exc_info=exc)

    # ------------------------------------------------------------------ events and service checks

    def _notes(self, events: Sequence[Event], checks: Sequence[ServiceCheck]) -> None:
        for e in events:
            self._log_event(e)
            severity = EVENT_SEVERITY.get(e.alert_type or "info")
            if severity is None and e.alert_type != "success":
                with self._lock:
                    self.notes["event"] += 1
                continue
            name = e.title[:200]
            identity = ("event", e.aggregation_key or e.title, e.hostname, frozenset(e.tags))
            annotations = {"summary": e.title[:1000]}
            if e.text:
                annotations["description"] = e.text[:4000]
            extra = {"dd_aggregation_key": e.aggregation_key} if e.aggregation_key else {}
            self._alert("event", identity, name, severity, e.hostname, e.tags, annotations, extra, e.timestamp)
        for c in checks:
            severity = SEVERITY.get(c.status)
            identity = ("service_check", c.name, c.hostname, frozenset(c.tags))
            annotations = {"summary": (c.message or f"{c.name} is {_STATUS.get(c.status, c.status)}")[:1000],
                           "dd_status": _STATUS.get(c.status, str(c.status))}
            if c.status == 3:
                with self._lock:
                    self.notes["service_check"] += 1
                continue
            self._alert("service_check", identity, c.name[:200], severity, c.hostname, c.tags, annotations, {},
                        c.timestamp)

    def _log_event(self, e: Event) -> None:
        second = int(time.monotonic())
        with self._lock:
            if second != self._event_second:
                self._event_second, self._event_logs = second, 0
            self._event_logs += 1
            if self._event_logs > EVENT_LOGS_PER_S:
                self.events_unlogged += 1
                return
        doc = {"title": e.title, "text": e.text[:4000], "timestamp": e.timestamp, "hostname": e.hostname,
               "aggregation_key": e.aggregation_key, "priority": e.priority, "source_type": e.source_type,
               "alert_type": e.alert_type, "tags": list(e.tags)}
        event_log.info("dogstatsd event %s", json.dumps(doc, ensure_ascii=True))

    def _alert(self, kind: str, identity: tuple[Any, ...], name: str, severity: str | None, host: str | None,
               tags: Collection[str], annotations: dict[str, str], extra: dict[str, str],
               timestamp: float | None) -> None:
        """Fire (``severity``) or resolve (None) the alert of ``identity``; counts the message."""
        now = time.time()
        labels = tags_to_attributes(sorted(set(tags)))  # (as the metrics' attributes)
        labels.update(extra)
        labels.update({"alertname": name, "dd_source": kind})
        if host:
            labels["host"] = host
        with self._lock:
            active = self._active.get(identity)
            if severity is None or (active is not None and active.severity != severity):
                if active is not None:
                    del self._active[identity]
                    self._queue(replace(active, state=AlertState.RESOLVED, ends_at=now))
                if severity is None:
                    self.notes[kind] += 1
                    return
            if active is None and (len(self._active) >= MAX_ALERTS or len(self._pending) >= MAX_ALERTS):
                self.dropped["max_alerts"] += 1
                return
            labels["severity"] = severity
            alert = Alert(id="", name=name, severity=severity, labels=labels, annotations=annotations,
                          starts_at=active.starts_at if active is not None and active.severity == severity
                          else min(timestamp or now, now), fingerprint=fingerprint(labels))
            self._active[identity] = alert
            self._queue(alert)
            self.notes[kind] += 1

    def _queue(self, alert: Alert) -> None:
        fp = alert.fingerprint
        if alert.state is AlertState.FIRING:
            self._pending.pop((fp, AlertState.RESOLVED), None)
            self._pending.pop((fp, AlertState.FIRING), None)
        self._pending[(fp, alert.state)] = alert  # (re-inserted: after what came before)

    def take_alerts(self) -> list[Alert]:
        """The alerts fired, updated or resolved since the last call, in order."""
        with self._lock:
            pending, self._pending = self._pending, {}
        return [replace(a, labels=dict(a.labels), annotations=dict(a.annotations)) for a in pending.values()]

    # ------------------------------------------------------------------ flushing

    async def _flush_loop(self) -> None:
        interval = self.config.flush_interval
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time())  # (a flush late by more than an interval is not repeated)
            try:
                await loop.run_in_executor(self._executor, self.flush)
            except Exception:  # noqa: BLE001 - a failed flush is logged; the next one comes
                log.exception("dogstatsd: flush failed")

    def flush(self) -> None:
        """Close the interval: push its gauges and its deltas into the pipeline (in a worker
        thread), ``PUSH_CHUNK`` points at a time, the readers let in between (a large interval's
        push holds no reader off for long, which would overflow its socket)."""
        with self._flush_lock:
            out = self.aggregator.flush(time.time())
            for metrics, delta in ((out.gauges, False), (out.deltas, True)):
                for i in range(0, len(metrics), PUSH_CHUNK):
                    self._count_points(self.ingest.push(metrics[i:i + PUSH_CHUNK], delta=delta))
                    time.sleep(0)  # (gives the interpreter to a reader with datagrams waiting)

    def _count_points(self, res: IngestResult) -> None:
        with self._lock:
            if res.accepted:
                self.points[("accepted", "")] += res.accepted
            for reason, n in res.rejected.items():
                self.points[("rejected", reason)] += n
        if res.rejected_total:
            with self._lock:
                due = self._logged.due("ingest:" + ",".join(sorted(res.rejected)))
            if due:
                log.warning("dogstatsd: the pipeline rejected %d aggregated points: %s; counted in "
                            "monbridge_dogstatsd_points_total{result=\"rejected\"}", res.rejected_total,
                            res.message[:500])

    # ------------------------------------------------------------------ rounds and self-metrics

    def round(self) -> None:
        """The plugin's round: expire the series not sent for ``expire_after``, push the
        self-metrics; in a worker thread when called on the event loop (the pipeline's lock may be
        held by a flush pushing a large interval), the former round's still running skips it."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._round()
            return
        if self._round_future is None or self._round_future.done():
            self._round_future = loop.run_in_executor(self._executor, self._round)

    def _round(self) -> None:
        try:
            self.ingest.expire()
            self.ingest.push(self.self_metrics())
        except Exception:  # noqa: BLE001 - the next round comes
            log.exception("dogstatsd: a round failed")

    def counts(self) -> dict[str, Any]:
        """What was read, taken and dropped so far (the self-metrics' values)."""
        with self._lock:
            dropped = Counter(self.dropped)
            notes = Counter(self.notes)
            points = Counter(self.points)
        agg_dropped = Counter(self.aggregator.dropped)
        dropped.update(agg_dropped)
        if kernel := self.kernel_drops():
            dropped["receive_buffer"] += kernel
        datagrams: Counter[str] = Counter()
        samples = 0
        for r in self._readers:
            datagrams[r.transport] += r.datagrams
            samples += r.samples
        messages = {"metric": samples - sum(agg_dropped.values()), "event": notes["event"],
                    "service_check": notes["service_check"]}
        return {"datagrams": datagrams, "messages": messages, "dropped": dropped, "points": points}

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on the UDP sockets, their receive buffer full (read on
        Linux from /proc/net/udp; the last count read stays once the sockets are closed)."""
        inodes = {r.inode for r in self._readers if r.transport == "udp"}
        if inodes and not self._stopping and (n := _proc_drops(inodes)) is not None:
            self._kernel_drops = max(self._kernel_drops, n)
        return self._kernel_drops

    def self_metrics(self) -> list[Metric]:
        C, G = MetricKind.COUNTER, MetricKind.GAUGE
        c = self.counts()
        out = [Metric("monbridge.dogstatsd.datagrams", C, float(n), "{datagram}", "DogStatsD datagrams read, by "
                      "transport", {"transport": t}) for t, n in sorted(c["datagrams"].items())]
        out += [Metric("monbridge.dogstatsd.messages", C, float(n), "{message}", "DogStatsD messages taken, by type "
                       "(metric samples, events, service checks)", {"type": t}) for t, n in c["messages"].items()]
        out += [Metric("monbridge.dogstatsd.dropped", C, float(n), "{message}", "DogStatsD messages dropped, by "
                       "reason (truncated: a datagram longer than buffer_size, dropped whole)", {"reason": why})
                for why, n in sorted(c["dropped"].items())]
        out += [Metric("monbridge.dogstatsd.points", C, float(n), "{point}", "aggregated points pushed into the "
                       "pipeline, by result and the pipeline's reason of a rejection", {"result": res, "reason": why})
                for (res, why), n in sorted(c["points"].items())]
        out += [Metric("monbridge.dogstatsd.receive_buffer", G, float(n), "By", "the receive buffer the kernel gave "
                       "each socket", {"transport": t}) for t, n in sorted(self.receive_buffer.items())]
        out.append(Metric("monbridge.dogstatsd.contexts", G, float(self.aggregator.contexts), "{context}",
                          "metric contexts in the current interval"))
        out.append(Metric("monbridge.dogstatsd.events_unlogged", C, float(self.events_unlogged), "{event}",
                          f"events not logged (beyond {EVENT_LOGS_PER_S} a second)"))
        return out


def _lower_priority() -> None:
    """The calling thread's niceness raised by ``FLUSH_NICE`` (Linux: per thread; anyone may)."""
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + FLUSH_NICE)


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.c_void_p), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_MSG_WAITFORONE = 0x10000


def _libc_recvmmsg() -> Any:
    """libc's ``recvmmsg(2)`` (Linux), called without the interpreter lock; None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        f = ctypes.CDLL(None, use_errno=True).recvmmsg
    except (OSError, AttributeError):
        return None
    f.argtypes = [ctypes.c_int, ctypes.POINTER(_Mmsghdr), ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    f.restype = ctypes.c_int
    return f


_RECVMMSG = _libc_recvmmsg()


def _proc_drops(inodes: set[int]) -> int | None:
    """The datagrams the kernel dropped on the UDP sockets ``inodes`` (their receive buffer
    full), from /proc/net/udp and udp6; None where they cannot be read."""
    total, found = 0, False
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                    parts = line.split()
                    if len(parts) > 12 and int(parts[9]) in inodes:
                        total += int(parts[12])
                        found = True
        except (OSError, ValueError):
            continue
    return total if found else None


def _remove_stale(path: str) -> None:
    """Remove the socket file a former run left at ``path``; OSError if it is in use or no socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket (not replaced)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody reads it: a stale file
        return
    finally:
        probe.close()
    raise OSError(f"{path} is the socket of a running server")
