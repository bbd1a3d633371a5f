"""The DogStatsD server on real sockets (loopback UDP, Unix datagram sockets in tmp_path): Datadog's
own ``DogStatsd`` client, raw datagrams for the protocol's corners and its malformed cases, a full
agent run, hostile input. In every test what was sent = messages taken + messages dropped (by
reason), read from the server's own counts."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from bridge.api import AlertState, MetricKind
from bridge.pipeline import Pipeline, PipelineIngest
from integrations.datadog import dsd_server
from integrations.datadog.config import DogStatsDConfig
from integrations.datadog.dogstatsd import ERROR_REASONS
from integrations.datadog.dsd_server import DogStatsDServer

pytestmark = pytest.mark.integration


class Running:
    """A DogStatsDServer on its own event loop thread, feeding a real pipeline."""

    def __init__(self, server: DogStatsDServer, pipeline: Pipeline, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.pipeline = pipeline
        self.loop = loop

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def counts(self) -> dict[str, Any]:
        return self.server.counts()

    def taken(self) -> int:
        """Messages taken plus messages dropped."""
        c = self.counts()
        return sum(c["messages"].values()) + sum(c["dropped"].values())

    def wait_datagrams(self, n: int) -> None:
        wait_until(lambda: sum(self.counts()["datagrams"].values()) >= n, what=f"{n} datagrams read ({self.counts()})")
        assert sum(self.counts()["datagrams"].values()) == n

    def flush(self) -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
        """Flush the interval; the pipeline's series of the server, by name and attributes."""
        self.server.flush()
        return {(m.name, tuple(sorted(m.attributes.items()))): m for m in self.pipeline.snapshot()
                if not m.name.startswith("monbridge.")}


@contextmanager
def dogstatsd(tmp_path: Path, **cfg: Any) -> Iterator[Running]:
    cfg.setdefault("listen_udp", "127.0.0.1:0")
    cfg.setdefault("flush_interval", 3600)  # the tests flush themselves
    cfg.setdefault("so_rcvbuf", 4 << 20)
    config = DogStatsDConfig(**cfg)
    pipeline = Pipeline()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = DogStatsDServer(config, PipelineIngest(pipeline, "dogstatsd", 300))
    running = Running(server, pipeline, loop)
    running.call(server.start())
    try:
        yield running
    finally:
        running.call(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def udp_sender(r: Running) -> Callable[[bytes], None]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = r.server.udp_bound
    assert addr is not None
    return lambda data: s.sendto(data, addr)  # type: ignore[return-value]


def uds_sender(path: str) -> Callable[[bytes], None]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    return lambda data: s.sendto(data, path)  # type: ignore[return-value]


def short_socket_path(tmp_path: Path, name: str = "dsd.socket") -> str:
    """A socket path within the 107 bytes a Unix socket's address holds."""
    path = str(tmp_path / name)
    if len(path.encode()) > 100:
        import tempfile

        path = os.path.join(tempfile.mkdtemp(prefix="dsd"), name)
    return path


# ---------------------------------------------------------------------------- Datadog's client


def client_stream(client: Any, tag: str) -> tuple[int, int, int]:
    """Every type Datadog's client sends, tagged ``via:tag``; (metrics, events, service checks) sent."""
    tags = [f"via:{tag}", "env:test", "flag"]
    client.increment("app.requests", tags=tags)
    client.increment("app.requests", 4, tags=tags)
    client.decrement("app.requests", tags=tags)
    client.count("app.bytes", 100, tags=tags)
    client.gauge("app.temperature", 20.5, tags=tags)
    client.gauge("app.temperature", 21.5, tags=tags)  # the last value of the interval stays
    for v in (1, 2, 3, 4):
        client.histogram("app.latency", v, tags=tags)
        client.distribution("app.size", v * 10, tags=tags)
        client.timing("app.query", v * 100, tags=tags)
    for user in ("ann", "bob", "ann"):
        client.set("app.users", user, tags=tags)
    client.gauge_with_timestamp("app.stamped", 7.0, int(time.time()) - 5, tags=tags)
    client.count_with_timestamp("app.stamped_count", 3, int(time.time()) - 5, tags=tags)
    client.event("Deploy", "version 2 is out", alert_type="info", aggregation_key="deploy", tags=tags,
                 hostname="web1")
    client.service_check("app.db", client.OK, tags=tags, hostname="web1", message="db is up")
    return 23, 1, 1


def make_client(**kw: Any) -> Any:
    from datadog.dogstatsd.base import DogStatsd

    return DogStatsd(disable_telemetry=True, disable_buffering=True, disable_aggregation=True,
                     origin_detection_enabled=False, **kw)


@pytest.mark.parametrize("transport", ["udp", "uds"])
def test_datadog_client_every_type(tmp_path, transport):
    path = short_socket_path(tmp_path)
    with dogstatsd(tmp_path, listen_uds=path) as r:
        if transport == "udp":
            host, port = r.server.udp_bound  # type: ignore[misc]
            client = make_client(host=host, port=port, container_id="c0ffee")
        else:
            # (blocking sends: a full Unix socket makes the client wait, where by default it drops)
            client = make_client(socket_path=path, container_id="c0ffee", socket_timeout=10)
        metrics, events, checks = client_stream(client, transport)
        # Sampled counts: the client sends about half of them, each standing for two.
        random.seed(13)
        expected_sampled = sum(random.random() <= 0.5 for _ in range(40))
        random.seed(13)
        for _ in range(40):
            client.increment("app.sampled", sample_rate=0.5, tags=[f"via:{transport}"])
        client.close_socket()
        sent = metrics + events + checks + expected_sampled
        r.wait_datagrams(sent)  # (unbuffered: one datagram a message)
        c = r.counts()
        assert c["datagrams"] == Counter({transport: sent})
        assert c["messages"] == {"metric": metrics + expected_sampled, "event": events, "service_check": checks}
        assert not c["dropped"]
        series = r.flush()
        attrs = (("env", "test"), ("unnamed_flag", "flag"), ("via", transport))

        def value(name: str, a: tuple[tuple[str, Any], ...] = attrs) -> Any:
            m = series.get((name, a))
            assert m is not None, f"{name}{dict(a)} not among {sorted(series)}"
            return m

        assert value("app.requests").value == 4.0  # 1 + 4 - 1
        assert value("app.requests").kind is MetricKind.COUNTER
        assert value("app.bytes").value == 100.0
        assert value("app.temperature").value == 21.5  # the last value
        assert value("app.sampled", (("via", transport),)).value == expected_sampled * 2  # scaled by 1/rate
        assert value("app.users").value == 2.0  # distinct members
        # Histograms and timers: the Agent's default aggregates (max, median, avg, count) and 95th percentile.
        for name, scale, unit in (("app.latency", 1, ""), ("app.query", 100, "ms")):
            assert {s: value(f"{name}.{s}").value for s in ("max", "median", "avg", "count", "95percentile")} == {
                "max": 4.0 * scale, "median": 2.0 * scale, "avg": 2.5 * scale, "count": 4.0,
                "95percentile": 4.0 * scale}
            assert value(f"{name}.avg").unit == unit
        size = value("app.size")  # a distribution: an exponential histogram
        assert size.kind is MetricKind.EXPONENTIAL_HISTOGRAM and (size.value.count, size.value.sum) == (4, 100.0)
        assert value("app.stamped").value == 7.0 and value("app.stamped_count").value == 3.0
        assert len(series) == 18, sorted(series)  # nothing more
        assert r.server.take_alerts() == []  # an OK of a check never failing raises nothing
    assert not os.path.exists(path)  # removed at stop


# ---------------------------------------------------------------------------- raw datagrams


def test_several_messages_in_a_datagram_and_bad_lines_among_good_ones(tmp_path):
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        send(b"multi.a:1|c\nmulti.b:2|g\nmulti.c:1:2:3|d\n")  # three messages, a trailing newline
        send(b"page.views:3|c|@0.5|#page:home")
        bad = [b"no_value|c", b"x:1|q", b"x:abc|g", b"\xff\xfe:1|c", b"_sc|broken", b"_e{5,4}:ab"]
        for line in bad:
            send(b"good.before:1|c\n" + line + b"\ngood.after:1|c")
        for blank in (b"", b"\n", b"\r\n\n", b"\n\r"):
            send(blank)  # no message: dropped as empty
        r.wait_datagrams(2 + len(bad) + 4)
        c = r.counts()
        assert c["messages"]["metric"] == 3 + 1 + 2 * len(bad)  # the neighbours of each bad line kept
        assert c["dropped"] == Counter({"bad_format": 1, "bad_type": 1, "bad_value": 1, "not_utf8": 1,
                                        "bad_service_check": 1, "bad_event": 1, "empty": 4})
        assert set(c["dropped"]) <= set(ERROR_REASONS)
        series = r.flush()
        assert series[("good.before", ())].value == len(bad)
        assert series[("good.after", ())].value == len(bad)
        assert series[("page.views", (("page", "home"),))].value == 6.0


def test_drops_are_logged_once_per_reason_with_their_first_bytes(tmp_path, caplog):
    caplog.set_level("WARNING", logger="monbridge.dogstatsd")
    with dogstatsd(tmp_path, buffer_size=512) as r:
        send = udp_sender(r)
        for i in range(5):
            send(b"ok:1|c\nbad.type:%d|zz\x01\xff" % i)
        send(b"\x1b[31m" * 200)
        r.wait_datagrams(6)
        c = r.counts()
        assert c["messages"]["metric"] == 5 and sum(c["dropped"].values()) == 6
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "monbridge.dogstatsd"]
    assert len(lines) == 2, lines  # one per reason, though the bad line came five times
    bad = next(x for x in lines if "bad line" in x)
    assert "first bytes 'bad.type:0|zz\\x01\\xff';" in bad and "monbridge_dogstatsd_dropped_total" in bad
    cut = next(x for x in lines if "(truncated)" in x)
    assert "a udp datagram of 1000 bytes, longer than buffer_size (512), dropped (truncated)" in cut
    assert "\x1b" not in cut and cut.count("\\x1b[31m") == 64 // 5 and "\\x1b[31'...;" in cut


def test_ipv6_loopback(tmp_path):
    with dogstatsd(tmp_path, listen_udp="[::1]:0") as r:
        assert r.server.udp_bound is not None and r.server.udp_bound[0] == "::1"
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.sendto(b"six:6|g", r.server.udp_bound)
        r.wait_datagrams(1)
        assert r.flush()[("six", ())].value == 6.0


def test_a_datagram_longer_than_the_buffer_is_dropped_whole_and_counted(tmp_path):
    path = short_socket_path(tmp_path)
    with dogstatsd(tmp_path, buffer_size=512, listen_uds=path) as r:
        long = b"\n".join(b"cut.me:%d|c" % i for i in range(100))
        assert len(long) > 512
        for send in (udp_sender(r), uds_sender(path)):
            send(long)
            send(b"kept:1|c")
        r.wait_datagrams(4)
        c = r.counts()
        assert c["dropped"] == Counter({"truncated": 2})
        assert c["messages"]["metric"] == 2
        series = r.flush()
        assert series[("kept", ())].value == 2.0
        assert not any(n == "cut.me" for n, _ in series)


def test_datagrams_the_kernel_drops_are_counted(tmp_path):
    """A UDP burst beyond what the smallest receive buffer holds: the datagrams the kernel drops
    are counted (reason receive_buffer), so taken + dropped = sent still."""
    with dogstatsd(tmp_path, so_rcvbuf=4096) as r:
        send = udp_sender(r)
        line = b"burst:1|c|#" + b",".join(b"pad%d:%s" % (i, b"p" * 140) for i in range(6))
        for _ in range(3000):
            send(line)
        wait_until(lambda: r.taken() == 3000, what=f"3000 messages taken or dropped ({r.counts()})")
        c = r.counts()
        assert c["dropped"]["receive_buffer"] > 0
        assert set(c["dropped"]) == {"receive_buffer"}
        pads = tuple((f"pad{i}", "p" * 140) for i in range(6))
        assert r.flush()[("burst", pads)].value == c["messages"]["metric"]


def test_the_reader_queue_holds_what_the_socket_cannot_and_then_the_kernel_drops(tmp_path):
    """The reader held up (the aggregator's lock taken, as a long flush would): the watchdog thread
    empties a small receive buffer into the reader's queue until the queue has no room left; then
    the socket fills and the kernel drops, counted (receive_buffer). Once the reader goes on,
    taken + dropped = sent, and far more was taken than the socket holds."""
    with dogstatsd(tmp_path, so_rcvbuf=16384, reader_queue_bytes=1 << 20) as r:
        send = udp_sender(r)
        line = b"held:1|c|#" + b",".join(b"pad%d:%s" % (i, b"p" * 140) for i in range(6))
        queue = r.server._readers[0].queue
        sent = 0
        deadline = time.monotonic() + 60
        with r.server.aggregator._lock:  # (the reader takes a first batch and waits for the lock with it)
            while not queue.full:  # (paced: the socket holds ~20 of these, the watchdog reads them in turn)
                assert time.monotonic() < deadline, f"the reader's queue never full ({queue.held} bytes held)"
                for _ in range(5):
                    send(line)
                sent += 5
                time.sleep(0.002)
            assert queue.held > 1_000_000 and queue.dropped == 0 and queue.pumped > 1000
            for _ in range(300):  # (no room: the watchdog leaves them to the socket, which drops most)
                send(line)
            sent += 300
            time.sleep(0.2)
        wait_until(lambda: r.taken() == sent, what=f"{sent} messages taken or dropped ({r.counts()})")
        c = r.counts()
        assert set(c["dropped"]) == {"receive_buffer"} and c["dropped"]["receive_buffer"] >= 200
        assert c["messages"]["metric"] > 1000  # (the socket alone holds ~20 of these)
        pads = tuple((f"pad{i}", "p" * 140) for i in range(6))
        assert r.flush()[("held", pads)].value == c["messages"]["metric"]


def test_max_contexts_drops_are_counted(tmp_path):
    with dogstatsd(tmp_path, max_contexts=5) as r:
        send = udp_sender(r)
        for i in range(8):
            send(b"ctx:1|c|#n:%d" % i)
        r.wait_datagrams(8)
        c = r.counts()
        assert c["dropped"] == Counter({"max_contexts": 3})
        assert c["messages"]["metric"] == 5
        assert len([n for n, _ in r.flush() if n == "ctx"]) == 5


def test_self_metrics_reach_the_pipeline(tmp_path):
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        send(b"a:1|c\nbad")
        r.wait_datagrams(1)
        r.flush()

        def own_metrics() -> dict[tuple[str, tuple[tuple[str, Any], ...]], Any]:
            return {(m.name, tuple(sorted(m.attributes.items()))): m.value for m in r.pipeline.snapshot()
                    if m.name.startswith("monbridge.dogstatsd.")}

        r.loop.call_soon_threadsafe(r.server.round)  # as the plugin calls it: on the loop, done in a thread
        own = wait_until(own_metrics, what="the self-metrics pushed")
        assert own[("monbridge.dogstatsd.datagrams", (("transport", "udp"),))] == 1.0
        assert own[("monbridge.dogstatsd.messages", (("type", "metric"),))] == 1.0
        assert sum(v for (n, _), v in own.items() if n == "monbridge.dogstatsd.dropped") == 1.0
        assert own[("monbridge.dogstatsd.points", (("reason", ""), ("result", "accepted")))] == 1.0
        assert own[("monbridge.dogstatsd.receive_buffer", (("transport", "udp"),))] == r.server.receive_buffer["udp"]
        send(b"b:1|c")
        r.wait_datagrams(2)
        r.server.round()  # off the loop: done at once
        assert own_metrics()[("monbridge.dogstatsd.messages", (("type", "metric"),))] == 2.0


def test_the_receive_buffer_the_kernel_gave_is_reported(tmp_path, caplog):
    path = short_socket_path(tmp_path)
    with dogstatsd(tmp_path, so_rcvbuf=4096, listen_uds=path) as r:
        assert r.server.receive_buffer == {"udp": 8192, "uds": 8192}  # (Linux doubles what is asked)
    assert not [rec for rec in caplog.records if "receive buffer" in rec.getMessage()]
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    with dogstatsd(tmp_path, so_rcvbuf=1 << 30) as r:
        assert r.server.receive_buffer == {"udp": 2 * rmem_max}
    assert [rec.getMessage() for rec in caplog.records if "receive buffer" in rec.getMessage()] == [
        f"dogstatsd: udp receive buffer is {2 * rmem_max} bytes, not so_rcvbuf's {1 << 30} (the system's bound, "
        "net.core.rmem_max, is lower)"]


def test_a_flush_pushes_in_chunks_and_every_point_arrives(tmp_path, monkeypatch):
    monkeypatch.setattr(dsd_server, "PUSH_CHUNK", 2)
    with dogstatsd(tmp_path) as r:
        udp_sender(r)(b"\n".join([b"chunk.c:%d|c|#n:%d" % (i, i) for i in range(5)] +
                                  [b"chunk.g:%d|g|#n:%d" % (i, i) for i in range(3)]))
        r.wait_datagrams(1)
        series = r.flush()
        assert {(n, a[0][1], m.value) for (n, a), m in series.items()} == {
            *(("chunk.c", str(i), float(i)) for i in range(5)), *(("chunk.g", str(i), float(i)) for i in range(3))}
        assert r.counts()["points"] == Counter({("accepted", ""): 8})


def test_points_the_pipeline_rejects_are_counted(tmp_path):
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        send(b"clash:1|c")
        r.wait_datagrams(1)
        r.flush()
        send(b"clash:1|g")  # a gauge where the pipeline holds a counter family: rejected, conflict
        r.wait_datagrams(2)
        r.flush()
        assert r.counts()["points"] == Counter({("accepted", ""): 1, ("rejected", "conflict"): 1})


def test_graceful_stop_flushes_what_was_read(tmp_path):
    pipeline = Pipeline()

    async def run() -> None:
        server = DogStatsDServer(DogStatsDConfig(listen_udp="127.0.0.1:0", flush_interval=3600),
                                 PipelineIngest(pipeline, "dogstatsd", 300))
        await server.start()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(10):
            s.sendto(b"last:1|c", server.udp_bound)  # type: ignore[arg-type]
        while sum(server.counts()["datagrams"].values()) < 10:
            await asyncio.sleep(0.02)
        await server.stop()

    asyncio.run(run())
    assert [m.value for m in pipeline.snapshot() if m.name == "last"] == [10.0]


def test_the_flush_loop_pushes_every_interval(tmp_path):
    with dogstatsd(tmp_path, flush_interval=0.2) as r:
        send = udp_sender(r)
        send(b"ticks:2|c")
        wait_until(lambda: [m.value for m in r.pipeline.snapshot() if m.name == "ticks"] == [2.0],
                   what="the flush loop's push")
        send(b"ticks:3|c")
        wait_until(lambda: [m.value for m in r.pipeline.snapshot() if m.name == "ticks"] == [5.0],
                   what="the next interval's push")


def test_udp_workers_share_the_port(tmp_path):
    with dogstatsd(tmp_path, workers=3) as r:
        readers = [x for x in r.server._readers if x.transport == "udp"]
        assert len(readers) == 3 and len({x.sock.getsockname() for x in readers}) == 1
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(30)]
        for i, s in enumerate(senders):
            s.sendto(b"spread:1|c|#n:%d" % (i % 3), r.server.udp_bound)  # type: ignore[arg-type]
        r.wait_datagrams(30)
        assert sum(1 for x in readers if x.datagrams) >= 2  # (30 source ports over 3 sockets)
        series = r.flush()
        assert sum(m.value for (n, _), m in series.items() if n == "spread") == 30.0


def test_a_port_in_use_is_an_error_naming_the_key(tmp_path):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    from bridge.api import PluginError

    server = DogStatsDServer(DogStatsDConfig(listen_udp=f"127.0.0.1:{port}"),
                             PipelineIngest(Pipeline(), "dogstatsd", 300))
    with pytest.raises(PluginError, match=rf"dogstatsd.listen_udp: cannot listen on 127.0.0.1:{port}: "):
        asyncio.run(server.start())
    taken.close()


# ---------------------------------------------------------------------------- the Unix socket


def test_unix_socket_mode_stale_file_and_refusals(tmp_path):
    from bridge.api import PluginError

    path = short_socket_path(tmp_path)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()  # a former run's file, nobody reading it
    with dogstatsd(tmp_path, listen_uds=path, uds_mode=0o600) as r:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        # A second server on the same path: the file is a live server's, not replaced.
        other = DogStatsDServer(DogStatsDConfig(listen_uds=path), PipelineIngest(Pipeline(), "other", 300))
        with pytest.raises(PluginError, match="dogstatsd.listen_uds: cannot listen on .*running server"):
            asyncio.run(other.start())
        uds_sender(path)(b"still.mine:1|c")
        r.wait_datagrams(1)
    assert not os.path.exists(path)
    plain = tmp_path / "plain"
    plain.write_text("data")
    server = DogStatsDServer(DogStatsDConfig(listen_uds=str(plain)), PipelineIngest(Pipeline(), "dogstatsd", 300))
    with pytest.raises(PluginError, match="is not a socket"):
        asyncio.run(server.start())
    assert plain.read_text() == "data"


@pytest.mark.parametrize("mode", [0o660, 0o666])
def test_unix_socket_mode_is_the_configured_one(tmp_path, mode):
    path = short_socket_path(tmp_path)
    with dogstatsd(tmp_path, listen_uds=path, uds_mode=mode):
        assert stat.S_IMODE(os.stat(path).st_mode) == mode


# ---------------------------------------------------------------------------- alerts


def test_service_checks_raise_change_and_resolve_alerts(tmp_path):
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        send(b"_sc|db.up|2|h:db1|#env:prod,flag|m:connection refused")
        send(b"_sc|db.up|2|h:db2|#env:prod")  # another host: another alert
        send(b"_sc|db.up|0|h:nowhere")  # OK of a check never failing: nothing
        send(b"_sc|db.up|3|h:db1|#env:prod,flag")  # UNKNOWN: the alert stays as it is
        r.wait_datagrams(4)
        first = r.server.take_alerts()
        assert [(a.name, a.severity, a.state, a.labels.get("host")) for a in first] == [
            ("db.up", "critical", AlertState.FIRING, "db1"), ("db.up", "critical", AlertState.FIRING, "db2")]
        a = first[0]
        assert a.labels == {"alertname": "db.up", "severity": "critical", "host": "db1", "env": "prod",
                            "unnamed_flag": "flag", "dd_source": "service_check"}  # (tags as metric attributes)
        assert a.annotations["summary"] == "connection refused"
        assert r.server.take_alerts() == []
        send(b"_sc|db.up|1|h:db1|#flag,env:prod")  # WARNING (tags in another order): the critical one ends
        r.wait_datagrams(5)
        change = r.server.take_alerts()
        assert [(x.severity, x.state) for x in change] == [("critical", AlertState.RESOLVED),
                                                            ("warning", AlertState.FIRING)]
        assert change[0].fingerprint == a.fingerprint and change[0].ends_at is not None
        send(b"_sc|db.up|0|h:db1|#env:prod,flag")
        r.wait_datagrams(6)
        ok = r.server.take_alerts()
        assert [(x.severity, x.state, x.fingerprint) for x in ok] == [
            ("warning", AlertState.RESOLVED, change[1].fingerprint)]
        c = r.counts()
        assert c["messages"]["service_check"] == 6 and not c["dropped"]


def test_an_alert_starts_at_its_check_time_never_in_the_future(tmp_path):
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        send(b"_sc|past|2|d:1700000000")
        send(b"_sc|future|2|d:4000000000")
        r.wait_datagrams(2)
        before = time.time()
        past, future = r.server.take_alerts()
        assert past.starts_at == 1_700_000_000.0
        assert future.starts_at <= before


def test_a_check_failing_and_recovering_between_two_takes_gives_both(tmp_path):
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        send(b"_sc|flappy|2")
        send(b"_sc|flappy|0")
        r.wait_datagrams(2)
        assert [x.state for x in r.server.take_alerts()] == [AlertState.FIRING, AlertState.RESOLVED]
        send(b"_sc|flappy|2")
        send(b"_sc|flappy|0")
        send(b"_sc|flappy|2")
        r.wait_datagrams(5)
        assert [x.state for x in r.server.take_alerts()] == [AlertState.FIRING]


def test_events_are_logged_and_error_events_alert(tmp_path, caplog):
    caplog.set_level("INFO", logger="monbridge.dogstatsd.events")
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        send(b"_e{6,9}:Backup|all saved|t:info|#team:ops")
        send(b"_e{11,4}:Disk failed|sda1|t:error|k:disk-sda|h:db1|#team:ops")
        send(b"_e{8,4}:Disk hot|sdb1|t:warning|h:db1")
        r.wait_datagrams(3)
        fired = r.server.take_alerts()
        assert [(x.name, x.severity, x.state) for x in fired] == [("Disk failed", "critical", AlertState.FIRING),
                                                                   ("Disk hot", "warning", AlertState.FIRING)]
        assert fired[0].labels["dd_aggregation_key"] == "disk-sda"
        assert fired[0].annotations == {"summary": "Disk failed", "description": "sda1"}
        send(b"_e{13,0}:Disk replaced||t:success|k:disk-sda|h:db1|#team:ops")  # same key: resolves
        r.wait_datagrams(4)
        assert [(x.name, x.state) for x in r.server.take_alerts()] == [("Disk failed", AlertState.RESOLVED)]
        assert r.counts()["messages"]["event"] == 4
    records = [json.loads(rec.getMessage().split(" ", 2)[2]) for rec in caplog.records
               if rec.name == "monbridge.dogstatsd.events"]
    assert [(d["title"], d["alert_type"]) for d in records] == [
        ("Backup", "info"), ("Disk failed", "error"), ("Disk hot", "warning"), ("Disk replaced", "success")]
    assert records[0]["tags"] == ["team:ops"] and records[1]["hostname"] == "db1"


def test_events_logged_are_bounded(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="monbridge.dogstatsd.events")
    monkeypatch.setattr(dsd_server, "EVENT_LOGS_PER_S", 2)
    with dogstatsd(tmp_path) as r:
        udp_sender(r)(b"\n".join(b"_e{2,1}:e%d|x" % i for i in range(5)))  # five in one datagram
        r.wait_datagrams(1)
        assert r.counts()["messages"]["event"] == 5
        logged = [rec for rec in caplog.records if rec.name == "monbridge.dogstatsd.events"]
        assert len(logged) + r.server.events_unlogged == 5 and r.server.events_unlogged >= 1


def test_alerts_held_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(dsd_server, "MAX_ALERTS", 3)
    with dogstatsd(tmp_path) as r:
        send = udp_sender(r)
        for i in range(5):
            send(b"_sc|check%d|2" % i)
        r.wait_datagrams(5)
        assert len(r.server.take_alerts()) == 3
        c = r.counts()
        assert c["dropped"] == Counter({"max_alerts": 2}) and c["messages"]["service_check"] == 3
        send(b"_sc|check0|0")  # an active one still resolves
        r.wait_datagrams(6)
        assert [x.state for x in r.server.take_alerts()] == [AlertState.RESOLVED]


# ---------------------------------------------------------------------------- hostile input


def test_random_datagrams_never_stop_the_listener(tmp_path):
    """Fuzz-style: random bytes (one line each, some longer than the buffer) among good
    datagrams: every one is a message or a counted drop, the good ones all arrive."""
    path = short_socket_path(tmp_path)
    rng = random.Random(int(os.environ.get("MONBRIDGE_FUZZ_SEED", "20261201")))
    alphabet = bytes(b for b in range(256) if b != 0x0A)
    with dogstatsd(tmp_path, listen_uds=path, buffer_size=1024) as r:
        send = uds_sender(path)  # (a Unix datagram socket loses nothing: the sender waits)
        n_random = good = 0
        for i in range(3000):
            if i % 10 == 0:
                send(b"good:1|c|#k:v")
                good += 1
                continue
            size = rng.choice((1, 2, 8, 40, 200, 1500))
            data = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, size)))
            if rng.random() < 0.3:  # a protocol-looking prefix takes the parser further
                data = rng.choice((b"m:", b"m:1|", b"m:1|c|", b"_e{", b"_sc|", b"m:1|c|#", b"m:1|d|@")) + data
            send(data)
            n_random += 1
        r.wait_datagrams(3000)
        c = r.counts()
        assert sum(c["messages"].values()) + sum(c["dropped"].values()) == 3000
        assert r.flush()[("good", (("k", "v"),))].value == good


def send_among_flood(path: str, good: list[bytes], seed: int, between: Callable[[int], None] | None = None) -> int:
    """Send the ``good`` datagrams to the Unix socket ``path`` while another thread floods it
    with random bytes and datagrams beyond a 512-byte buffer (``between(i)`` after the i-th good
    one); return how many datagrams were sent in all."""
    stop = threading.Event()
    flooded = 0

    def flood() -> None:
        nonlocal flooded
        send = uds_sender(path)
        rng = random.Random(seed)
        while not stop.is_set():
            send(rng.randbytes(rng.randint(1, 400)).replace(b"\n", b" ") if rng.random() < 0.7 else b"x" * 2000)
            flooded += 1

    t = threading.Thread(target=flood)
    t.start()
    try:
        send = uds_sender(path)
        for i, data in enumerate(good):
            send(data)
            if between is not None:
                between(i)
    finally:
        stop.set()
        t.join()
    return flooded + len(good)


def test_hostile_flood_while_good_datagrams_are_all_counted(tmp_path):
    path = short_socket_path(tmp_path)
    with dogstatsd(tmp_path, listen_uds=path, buffer_size=512) as r:
        total = send_among_flood(path, [b"survivor:1|c|#n:%d" % (i % 5) for i in range(500)], seed=5)
        r.wait_datagrams(total)
        c = r.counts()
        assert sum(c["messages"].values()) + sum(c["dropped"].values()) == total
        assert c["dropped"]["truncated"] > 0
        series = r.flush()
        assert sum(m.value for (n, _), m in series.items() if n == "survivor") == 500.0


# ---------------------------------------------------------------------------- a full agent


def _metrics_text(mb: Any) -> str:
    status, _, body = mb.get("/metrics")
    assert status == 200
    return body.decode()


def _sample(text: str, name: str, labels: str = "") -> float | None:
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and (not labels or labels in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def _total(text: str, *prefixes: str) -> float:
    """The sum of the samples on /metrics whose line starts with one of ``prefixes``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefixes))


def _alerts(mb: Any, state: str = "all") -> list[dict[str, Any]]:
    status, _, body = mb.get(f"/api/v1/alerts?state={state}")
    assert status == 200
    return json.loads(body)["data"]


def test_agent_aggregates_serves_and_alerts(run_monbridge, free_port, tmp_path):
    port = free_port()
    path = short_socket_path(tmp_path, "agent.socket")
    mb = run_monbridge({
        "alerting": {"import_interval": 0.5, "state_dir": str(tmp_path / "alerts")},
        "plugins": [{"plugin_id": "monitoring.integration.datadog", "config": {
            "interval": 0.5,
            "dogstatsd": {"listen_udp": f"127.0.0.1:{port}", "listen_uds": path, "flush_interval": 0.5,
                          "buffer_size": 1024}}}],
    })
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    client = make_client(host="127.0.0.1", port=port)
    for _ in range(3):
        client.increment("shop.orders", tags=["shop:paris"])
    client.gauge("shop.queue", 12, tags=["shop:paris"])
    for ms in (100, 200, 300):
        client.timing("shop.checkout", ms, tags=["shop:paris"])
        client.distribution("shop.basket", ms / 100, tags=["shop:paris"])
    uds = uds_sender(path)
    uds(b"shop.orders:2|c|#shop:paris\nnot a metric")
    client.service_check("shop.db", client.CRITICAL, tags=["shop:paris"], hostname="db1", message="down")
    client.close_socket()

    def orders() -> float | None:
        return _sample(_metrics_text(mb), "shop_orders_total", 'shop="paris"')

    assert wait_until(lambda: orders() == 5.0, what="shop_orders_total 5 on /metrics")
    wait_until(lambda: _sample(_metrics_text(mb), "shop_basket_count", 'shop="paris"') == 3.0
               and _sample(_metrics_text(mb), "shop_checkout_count_value_total", 'shop="paris"') == 3.0,
               what="the timer and the distribution on /metrics")
    text = _metrics_text(mb)
    assert _sample(text, "shop_queue", 'shop="paris"') == 12.0
    # A timer: the Agent's aggregates, in milliseconds; its count a counter.
    assert _sample(text, "shop_checkout_avg_milliseconds", 'shop="paris"') == 200.0
    assert _sample(text, "shop_checkout_max_milliseconds", 'shop="paris"') == 300.0
    # (".count" is a counter: Prometheus' names keep _count for histograms, so it is _count_value_total)
    assert _sample(text, "shop_checkout_count_value_total", 'shop="paris"') == 3.0
    # A distribution: a histogram (the sketch's exponential buckets) with its count and sum.
    assert _sample(text, "shop_basket_count", 'shop="paris"') == 3.0
    assert _sample(text, "shop_basket_sum", 'shop="paris"') == 6.0
    wait_until(lambda: _sample(_metrics_text(mb), "monbridge_dogstatsd_datagrams_total", 'transport="udp"') == 11.0,
               what="the self-metrics")
    text = _metrics_text(mb)
    assert _sample(text, "monbridge_dogstatsd_datagrams_total", 'transport="udp"') == 11.0
    assert _sample(text, "monbridge_dogstatsd_messages_total", 'type="metric"') == 11.0
    assert _sample(text, "monbridge_dogstatsd_messages_total", 'type="service_check"') == 1.0
    assert _total(text, "monbridge_dogstatsd_dropped_total{") == 1.0

    firing = wait_until(lambda: [a for a in _alerts(mb, "active") if a["name"] == "shop.db"], what="the alert")
    assert firing[0]["severity"] == "critical" and firing[0]["labels"]["host"] == "db1"
    client.service_check("shop.db", client.OK, tags=["shop:paris"], hostname="db1")
    client.close_socket()
    wait_until(lambda: not [a for a in _alerts(mb, "active") if a["name"] == "shop.db"], what="the alert resolved")
    assert [a["state"] for a in _alerts(mb) if a["name"] == "shop.db"] == ["resolved"]


def test_agent_answers_during_a_flood(run_monbridge, free_port, tmp_path):
    path = short_socket_path(tmp_path, "flood.socket")
    mb = run_monbridge({"plugins": [{"plugin_id": "monitoring.integration.datadog", "config": {
        "interval": 0.5, "dogstatsd": {"listen_uds": path, "flush_interval": 0.5, "buffer_size": 512}}}]})

    def answers(i: int) -> None:
        if i % 50 == 0:
            assert _metrics_text(mb)  # /metrics answers meanwhile

    total = send_among_flood(path, [b"calm:1|c|#n:%d" % (i % 4) for i in range(200)], seed=9, between=answers)

    def counted() -> bool:
        text = _metrics_text(mb)
        return _total(text, "monbridge_dogstatsd_dropped_total{", "monbridge_dogstatsd_messages_total{") == total

    wait_until(counted, timeout=60, what=f"{total} messages taken or dropped")
    text = _metrics_text(mb)
    assert _total(text, "calm_total{") == 200
    assert _sample(text, "monbridge_dogstatsd_dropped_total", 'reason="truncated"')
    assert mb.proc.poll() is None


def test_agent_keeps_its_schedule_during_a_udp_flood(run_monbridge, free_port, tmp_path):
    """A UDP flood at full speed, valid lines of many contexts among random bytes, read by the
    default readers (the C batch and its watchdog where built): /metrics keeps answering, another
    plugin keeps its schedule, and the datagrams taken are counted."""
    from liveness import Liveness, steady_collector

    port = free_port()
    mb = run_monbridge({"plugins": [
        {"plugin_id": "monitoring.integration.datadog", "config": {
            "interval": 0.5, "dogstatsd": {"listen_udp": f"127.0.0.1:{port}", "flush_interval": 0.5,
                                           "max_contexts": 5000}}},
        steady_collector(tmp_path)]})
    stop = threading.Event()
    sent = [0, 0]

    def flood(seed: int) -> None:
        rng = random.Random(seed)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                if rng.random() < 0.8:
                    data = b"\n".join(b"flood.m%d:%d|%s|#k:%d" % (rng.randrange(2000), rng.randrange(100),
                                                                 rng.choice((b"c", b"g", b"h", b"d")), rng.randrange(5))
                                      for _ in range(rng.randint(1, 8)))
                else:
                    data = rng.randbytes(rng.randint(1, 1400))
                try:
                    s.sendto(data, ("127.0.0.1", port))
                except OSError:  # (a full socket buffer on the sending side)
                    continue
                sent[seed] += 1

    with Liveness(mb) as watch:
        threads = [threading.Thread(target=flood, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        time.sleep(4.0)
        stop.set()
        for t in threads:
            t.join()
        time.sleep(1.0)
    watch.check()
    assert sum(sent) > 1000, sent

    def taken() -> float:
        return _total(_metrics_text(mb), "monbridge_dogstatsd_datagrams_total{")

    wait_until(lambda: taken() > 0.1 * sum(sent), what="the flood's datagrams counted")
    assert taken() <= sum(sent)
    assert _total(_metrics_text(mb), "flood_m") > 0
    assert mb.proc.poll() is None
