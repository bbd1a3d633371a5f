"""Remote write: the hand-written protobuf (decoded here by an independent little decoder), the
disk queue (replay, torn records, the byte bound, acknowledgements) and the senders' retry rules
against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import struct
import time
from pathlib import Path

import cramjam
import pytest
from aiohttp import web
from pydantic import ValidationError

from bridge.api import MetricKind
from bridge.delivery import Clock, DiskQueue, retry_after_seconds
from integrations.prometheus.remote_write import (
    STALE_NAN,
    RemoteWriteConfig,
    RemoteWriter,
    encode_labels,
    encode_sample,
)

TOKEN = "tok-very-secret-123"
HEADER_SECRET = "tenant-key-456"

# ---------------------------------------------------------------------------- a protobuf decoder


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) of a message: bytes for length-delimited, raw 8 bytes for fixed64."""
    out = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        out.append((number, wire, v))
    return out


def decode_write_request(body: bytes) -> list[tuple[dict[str, str], list[tuple[bytes, int]]]]:
    """[(labels, [(value as 8 raw bytes, timestamp ms)])] of a WriteRequest, in wire order."""
    series = []
    for number, wire, ts in _fields(body):
        assert (number, wire) == (1, 2)
        labels: dict[str, str] = {}
        names: list[str] = []
        samples = []
        for n2, w2, v in _fields(ts):
            if n2 == 1:
                kv = dict((f, val.decode()) for f, _, val in _fields(v))
                labels[kv[1]] = kv[2]
                names.append(kv[1])
            else:
                assert (n2, w2) == (2, 2)
                s = dict((f, val) for f, _, val in _fields(v))
                t = s.get(2, 0)
                samples.append((s[1], t - (1 << 64) if t >= 1 << 63 else t))
        assert names == sorted(names), "labels must be sorted by name"
        series.append((labels, samples))
    return series


def value_of(raw: bytes) -> float:
    return struct.unpack("<d", raw)[0]


def labels_of(name: str, **labels: str) -> bytes:
    return encode_labels([("__name__", name), *labels.items()])


# ---------------------------------------------------------------------------- encoding


def test_encoding_decodes_with_exact_bits():
    lab = encode_labels([("zone", "b"), ("__name__", "up"), ("job", "node"), ("empty", "")])
    body = encode_sample(lab, 1.5, 1_700_000_000_123) + encode_sample(lab, STALE_NAN, -5) + encode_sample(lab, 0.0, 0)
    decoded = decode_write_request(body)
    assert [d[0] for d in decoded] == [{"__name__": "up", "job": "node", "zone": "b"}] * 3
    assert [(value_of(v), t) for v, t in decoded[0][1]] == [(1.5, 1_700_000_000_123)]
    stale_raw, ts = decoded[1][1][0]
    assert stale_raw == struct.pack("<Q", 0x7FF0000000000002) and ts == -5
    assert decoded[2][1][0] == (struct.pack("<d", 0.0), 0)
    assert struct.pack("<d", STALE_NAN) == struct.pack("<Q", 0x7FF0000000000002) and math.isnan(STALE_NAN)


def test_labels_utf8_and_duplicates():
    decoded = decode_write_request(encode_sample(encode_labels([("__name__", "t"), ("city", "Zürich")]), 1, 1))
    assert decoded[0][0] == {"__name__": "t", "city": "Zürich"}
    with pytest.raises(ValueError, match="'a' given twice"):
        encode_labels([("a", "1"), ("a", "2")])


def test_config_defaults_and_secrets():
    c = RemoteWriteConfig.model_validate({"url": "http://u:pw-secret@example.com:9090/api/v1/write?key=abc",
                                          "headers": {"X-Key": HEADER_SECRET}})
    q = c.queue
    assert (q.path, q.max_bytes, q.max_samples_per_send, q.shards, q.min_backoff, q.max_backoff,
            q.batch_send_deadline, q.fsync) == (None, 256 << 20, 500, 4, 0.03, 5.0, 5.0, False)
    assert c.timeout == 30
    assert HEADER_SECRET not in repr(c) and HEADER_SECRET not in str(c.model_dump())
    w = RemoteWriter(c)
    assert w.name == "example.com:9090"
    assert w.url == "http://example.com:9090/api/v1/write"
    with pytest.raises(ValidationError) as e:
        RemoteWriteConfig.model_validate({"url": "http://x/", "bearer_token": TOKEN, "basic_auth": {"username": "u",
                                                                                                    "password": TOKEN}})
    assert TOKEN not in str(e.value) and "only one of basic_auth and bearer_token" in str(e.value)
    with pytest.raises(ValidationError):
        RemoteWriteConfig.model_validate({"url": "ftp://x/"})


def test_retry_after_parsing():
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("0.5") == 0.5
    now = time.time()
    assert 29 <= retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) <= 31
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


# ---------------------------------------------------------------------------- the disk queue


def payload(i: int) -> bytes:
    return f"record-{i:05d}".encode() * 3


def drain(queue: DiskQueue, max_samples: int = 1000) -> list[bytes]:
    out = []
    for shard in queue.shards:
        while (batch := shard.read_batch(max_samples)) is not None:
            out += batch.payloads
            shard.ack(batch)
    return out


def test_queue_replays_after_reopen_and_persists_acks(tmp_path):
    q = DiskQueue(tmp_path, shards=2, max_bytes=1 << 20)
    q.open()
    for i in range(10):
        assert q.shards[i % 2].append(payload(i), 1)
    batch = q.shards[0].read_batch(3)
    assert batch.payloads == [payload(0), payload(2), payload(4)] and batch.samples == 3
    q.shards[0].ack(batch)
    assert q.pending_samples == 7
    q.close()  # as after kill -9: nothing but the files survives

    q2 = DiskQueue(tmp_path, shards=2, max_bytes=1 << 20)
    assert q2.open().records == 0
    assert q2.pending_samples == 7
    assert sorted(drain(q2)) == sorted(payload(i) for i in (1, 3, 5, 6, 7, 8, 9))
    assert q2.pending_samples == 0
    q2.close()
    q3 = DiskQueue(tmp_path, shards=2, max_bytes=1 << 20)
    q3.open()
    assert q3.pending_samples == 0 and drain(q3) == []
    assert not list(tmp_path.glob("shard-*/*.seg")) or all(p.stat().st_size == 0 for p in tmp_path.glob("shard-*/*.seg"))


def test_delivered_segments_are_deleted(tmp_path):
    q = DiskQueue(tmp_path, shards=1, max_bytes=8 * 4096)  # 4 KiB segments
    q.open()
    for i in range(400):
        q.shards[0].append(payload(i), 1)
    assert len(list(tmp_path.glob("shard-0/*.seg"))) > 3
    assert len(drain(q)) == 400
    # Only the head segment (still open for appends) remains.
    assert len(list(tmp_path.glob("shard-0/*.seg"))) == 1
    assert q.total_bytes == q.shards[0].segments[0].size


@pytest.mark.parametrize("cut", [1, 5, 12, 20])
def test_torn_last_record_is_skipped_and_counted(tmp_path, cut):
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()
    for i in range(3):
        q.shards[0].append(payload(i), 4)
    q.close()
    (seg,) = tmp_path.glob("shard-0/*.seg")
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - cut)  # the last write was cut short by a kill

    q2 = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    torn = q2.open()
    assert (torn.records, torn.samples) == (1, 4)
    assert q2.pending_samples == 8
    q2.shards[0].append(payload(3), 1)  # the queue goes on after the cut
    assert drain(q2) == [payload(0), payload(1), payload(3)]


def test_garbage_and_zero_tails_are_torn_records(tmp_path):
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()
    q.shards[0].append(payload(0), 1)
    q.close()
    (seg,) = tmp_path.glob("shard-0/*.seg")
    with open(seg, "ab") as f:
        f.write(b"\0" * 64)
    q2 = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    assert q2.open().records == 1
    assert drain(q2) == [payload(0)]


def test_max_bytes_drops_oldest_and_counts(tmp_path):
    drops = []
    q = DiskQueue(tmp_path, shards=2, max_bytes=40_000, on_drop=lambda counts, reason: drops.append((counts, reason)))
    q.open()
    n = 2000
    for i in range(n):
        q.shards[i % 2].append(payload(i), 1)
        assert q.total_bytes <= 40_000
    dropped = sum(c.samples for c, _ in drops)
    assert dropped > 0 and {r for _, r in drops} == {"max_bytes"}
    assert dropped + q.pending_samples == n
    kept = sorted(drain(q))
    assert len(kept) == n - dropped
    # What is kept is the newest data of each shard.
    for parity in (0, 1):
        mine = sorted(int(p[7:12]) for p in kept if int(p[7:12]) % 2 == parity)
        assert mine == list(range(mine[0], n, 2)[:len(mine)]) and mine[-1] >= n - 2


def test_drop_while_a_batch_is_in_flight(tmp_path):
    q = DiskQueue(tmp_path, shards=1, max_bytes=20_000)
    q.open()
    for i in range(10):
        q.shards[0].append(payload(i), 1)
    batch = q.shards[0].read_batch(5)
    for i in range(10, 2000):
        q.shards[0].append(payload(i), 1)
    q.shards[0].ack(batch)  # its segment is gone: the ack changes nothing
    pending = q.pending_samples
    rest = drain(q)
    assert len(rest) == pending and q.pending_samples == 0
    assert payload(1999) in rest and payload(0) not in rest


def test_fsync_queue(tmp_path):
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20, fsync=True)
    q.open()
    q.shards[0].append(payload(0), 1)
    q.shards[0].append(payload(1), 1)
    batch = q.shards[0].read_batch(1)
    q.shards[0].ack(batch)
    q.close()
    q2 = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20, fsync=True)
    q2.open()
    assert drain(q2) == [payload(1)]


def test_shard_count_changes_only_once_the_backlog_is_delivered(tmp_path, caplog):
    q = DiskQueue(tmp_path, shards=3, max_bytes=1 << 20)
    q.open()
    for i in range(3):
        q.shards[i].append(payload(i), 1)
    q.close()
    q2 = DiskQueue(tmp_path, shards=2, max_bytes=1 << 20)
    q2.open()
    assert len(q2.shards) == 3 and "holds data for 3 shards; 2 shards are configured" in caplog.text
    assert sorted(drain(q2)) == [payload(0), payload(1), payload(2)]
    q2.close()
    q3 = DiskQueue(tmp_path, shards=2, max_bytes=1 << 20)
    q3.open()
    assert len(q3.shards) == 2 and not (tmp_path / "shard-2").exists()


def test_memory_queue(tmp_path):
    q = DiskQueue(None, shards=1, max_bytes=1 << 20)
    q.open()
    q.shards[0].append(payload(0), 2)
    assert q.pending_samples == 2 and drain(q) == [payload(0)] and q.pending_samples == 0
    assert not list(tmp_path.iterdir())


def test_oversized_record_is_refused(tmp_path):
    q = DiskQueue(tmp_path, shards=1, max_bytes=100)
    q.open()
    assert q.shards[0].append(b"x" * 200, 1) is False
    assert q.pending_samples == 0


# ---------------------------------------------------------------------------- the senders


class Receiver:
    """A remote-write receiver on 127.0.0.1: answers each request from ``script`` (status, headers,
    body; the last entry repeats) and records what it accepted (2xx)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/api/v1/write"
        self.script: list[tuple[int, dict[str, str], str]] = [(204, {}, "")]
        self.requests: list[tuple[float, int, dict[str, str], list]] = []
        self.accepted: list[tuple[dict[str, str], float | bytes, int]] = []
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        series = decode_write_request(bytes(cramjam.snappy.decompress_raw(body)))
        status, headers, text = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.requests.append((time.monotonic(), status, dict(request.headers), series))
        if 200 <= status < 300:
            for labels, samples in series:
                for raw, ts in samples:
                    self.accepted.append((labels, value_of(raw) if raw != struct.pack("<d", STALE_NAN) else raw, ts))
        return web.Response(status=status, headers=headers, text=text)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/write", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def receiver(free_port):
    r = Receiver(free_port())
    await r.start()
    yield r
    await r.stop()


def config(url: str, path: Path | None = None, **queue) -> RemoteWriteConfig:
    q = {"min_backoff": 0.01, "max_backoff": 0.05, "batch_send_deadline": 0.05, **queue}
    if path is not None:
        q["path"] = str(path)
    return RemoteWriteConfig.model_validate({"url": url, "name": "test", "queue": q})


def samples(n: int, series: int = 3, start: int = 0) -> list[tuple[bytes, float, int]]:
    labels = [labels_of("rw_test", s=str(s)) for s in range(series)]
    return [(labels[i % series], float(i), 1_700_000_000_000 + i) for i in range(start, start + n)]


def metric_values(writer: RemoteWriter) -> dict[tuple[str, tuple], float]:
    out = {}
    for m in writer.self_metrics():
        assert m.attributes["remote_name"] == "test"
        out[(m.name.removeprefix("monbridge.remote_write."), tuple(sorted((k, v) for k, v in m.attributes.items()
                                                                           if k != "remote_name")))] = m.value
    return out


async def test_request_shape_and_headers(receiver):
    cfg = RemoteWriteConfig.model_validate({"url": receiver.url, "name": "test", "bearer_token": TOKEN,
                                            "headers": {"X-Scope-OrgID": HEADER_SECRET}})
    w = RemoteWriter(cfg)
    await w.start()
    assert w.append([(labels_of("up", job="a"), 1.0, 1000), (labels_of("up", job="a"), STALE_NAN, 2000)]) == 2
    assert await w.flush(5)
    await w.stop(1)
    (_, status, headers, series), = receiver.requests
    assert headers["Content-Encoding"] == "snappy"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["User-Agent"].startswith("monbridge/")
    assert headers["Authorization"] == f"Bearer {TOKEN}" and headers["X-Scope-OrgID"] == HEADER_SECRET
    assert receiver.accepted == [({"__name__": "up", "job": "a"}, 1.0, 1000),
                                 ({"__name__": "up", "job": "a"}, struct.pack("<Q", 0x7FF0000000000002), 2000)]
    m = metric_values(w)
    assert m[("samples.sent", ())] == 2 and m[("requests", (("status", "204"),))] == 1
    assert {m.kind for m in w.self_metrics() if m.name.endswith("samples.sent")} == {MetricKind.COUNTER}


async def test_batches_respect_max_samples_and_series_order(receiver):
    receiver.script = [(500, {}, "busy"), (204, {}, ""), (503, {}, ""), (204, {}, "")]
    w = RemoteWriter(config(receiver.url, max_samples_per_send=50, shards=3))
    await w.start()
    for i in range(0, 1000, 100):
        assert w.append(samples(100, series=7, start=i)) == 100
    assert await w.flush(10)
    await w.stop(1)
    assert all(sum(len(s) for _, s in req[3]) <= 50 for req in receiver.requests)
    by_series: dict[str, list[int]] = {}
    for labels, _, ts in receiver.accepted:
        by_series.setdefault(labels["s"], []).append(ts)
    assert sorted(t for ts in by_series.values() for t in ts) == [1_700_000_000_000 + i for i in range(1000)]
    assert all(ts == sorted(ts) for ts in by_series.values())
    m = metric_values(w)
    assert m[("samples.sent", ())] == 1000 and m[("samples.retried", ())] > 0
    assert m[("requests", (("status", "500"),))] == 1 and m[("requests", (("status", "503"),))] == 1


class VirtualClock(Clock):
    """Time that jumps over every wait a sender asks for (recorded in ``sleeps``) instead of waiting."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.skipped = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def time(self) -> float:
        return time.time() + self.skipped

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.skipped += seconds
        await asyncio.sleep(0)


async def test_500_then_200_retries_with_backoff(receiver, caplog):
    receiver.script = [(500, {}, "oops"), (500, {}, "oops"), (200, {}, "")]
    clock = VirtualClock()
    w = RemoteWriter(config(receiver.url, min_backoff=0.2, max_backoff=1.0), clock=clock)
    await w.start()
    w.append(samples(5, series=1))
    assert await w.flush(10)
    await w.stop(1)
    assert [r[1] for r in receiver.requests] == [500, 500, 200]
    assert len(clock.sleeps) == 2  # 0.2 s, then 0.4 s, each plus jitter
    assert 0.2 <= clock.sleeps[0] <= 0.24 and 0.4 <= clock.sleeps[1] <= 0.48
    assert w.last_send_time is not None and w.last_send_time >= time.time() + 0.6 - 1
    assert len(receiver.accepted) == 5
    m = metric_values(w)
    assert m[("samples.retried", ())] == 10 and m[("samples.sent", ())] == 5
    lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert lines and "remote write test (http://127.0.0.1:" in lines[0] and "HTTP 500 Internal Server Error" in lines[0]
    assert len(lines) == 1  # the second failure within 30 s is held back


async def test_429_honours_retry_after(receiver):
    receiver.script = [(429, {"Retry-After": "1"}, "slow down"), (204, {}, "")]
    clock = VirtualClock()
    w = RemoteWriter(config(receiver.url), clock=clock)
    await w.start()
    w.append(samples(3, series=1))
    assert await w.flush(10)
    await w.stop(1)
    assert [r[1] for r in receiver.requests] == [429, 204]
    assert clock.sleeps == [1.0]  # the Retry-After, longer than the backoff
    assert len(receiver.accepted) == 3


async def test_503_honours_a_retry_after_date(receiver):
    """The receiver (aiohttp on loopback) asks for a wait as an HTTP date, 2 s ahead (the date has
    a resolution of one second): the retry comes no sooner than the date's second."""
    sent = time.time()
    when = email.utils.formatdate(sent + 2, usegmt=True)
    receiver.script = [(503, {"Retry-After": when}, "maintenance"), (204, {}, "")]
    clock = VirtualClock()
    w = RemoteWriter(config(receiver.url), clock=clock)
    await w.start()
    w.append(samples(3, series=1))
    assert await w.flush(10)
    await w.stop(1)
    assert [r[1] for r in receiver.requests] == [503, 204]
    (wait,) = clock.sleeps
    assert sent + wait >= email.utils.parsedate_to_datetime(when).timestamp() - 1  # waits for the date's second
    assert 0.95 <= wait <= 2.0
    assert len(receiver.accepted) == 3


async def test_a_hostile_retry_after_is_capped_and_a_zero_one_does_not_retry_at_once(receiver, caplog):
    receiver.script = [(429, {"Retry-After": "9" * 40}, ""), (429, {"Retry-After": "0"}, ""),
                       (408, {"Retry-After": "-1"}, ""), (204, {}, "")]
    clock = VirtualClock()
    w = RemoteWriter(config(receiver.url, min_backoff=0.2, max_backoff=1.0, max_retry_after=0.3), clock=clock)
    w._throttle.interval = 0  # every retry logged
    await w.start()
    w.append(samples(3, series=1))
    assert await w.flush(20)
    await w.stop(1)
    assert [r[1] for r in receiver.requests] == [429, 429, 408, 204]  # 408 (a request timeout) is retried too
    assert clock.sleeps[1] >= 0.4 and clock.sleeps[2] >= 0.8  # the backoff, not an immediate retry
    delays = [float(r.getMessage().split(" in ")[1].split(" s")[0]) for r in caplog.records if "retrying" in r.getMessage()]
    assert len(delays) == 3 and delays[0] <= 0.3  # capped at max_retry_after, not 10^40 s
    assert [round(d, 2) for d in clock.sleeps] == delays
    assert 0.4 <= delays[1] <= 0.48 and 0.8 <= delays[2] <= 1.0


async def test_400_is_dropped_counted_and_logged(receiver, caplog):
    receiver.script = [(400, {}, f"out of order sample; your token {TOKEN} ..."), (204, {}, "")]
    cfg = RemoteWriteConfig.model_validate({"url": receiver.url, "name": "test", "bearer_token": TOKEN,
                                            "queue": {"batch_send_deadline": 0.05}})
    w = RemoteWriter(cfg)
    await w.start()
    w.append(samples(4, series=1))
    assert await w.flush(5)
    w.append(samples(2, series=1, start=10))
    assert await w.flush(5)
    await w.stop(1)
    assert [r[1] for r in receiver.requests] == [400, 204]
    assert [ts for _, _, ts in receiver.accepted] == [1_700_000_000_010, 1_700_000_000_011]
    m = metric_values(w)
    assert m[("samples.dropped", (("reason", "http_4xx"),))] == 4
    assert m[("samples.retried", ())] == 0
    (line,) = [r.getMessage() for r in caplog.records if "HTTP 400" in r.getMessage()]
    assert "remote write test (http://127.0.0.1:" in line and "out of order sample" in line and "dropped 4 samples" in line
    assert TOKEN not in caplog.text and "<secret>" in line


async def test_connection_refused_then_up(free_port, tmp_path):
    r = Receiver(free_port())
    w = RemoteWriter(config(r.url, tmp_path / "q"))
    await w.start()
    assert w.append(samples(20)) == 20
    assert not await w.flush(0.5)  # nothing listens yet
    m = metric_values(w)
    assert m[("requests", (("status", "connection_error"),))] >= 2
    assert m[("queue.samples", ())] == 20 and m[("queue.bytes", ())] > 0
    await r.start()
    try:
        assert await w.flush(10)
        await w.stop(1)
    finally:
        await r.stop()
    assert len(r.accepted) == 20
    assert metric_values(w)[("samples.sent", ())] == 20


async def test_acks_persist_across_restarts(receiver, tmp_path):
    path = tmp_path / "q"
    w = RemoteWriter(config(receiver.url, path))
    await w.start()
    w.append(samples(30))
    assert await w.flush(5)
    await w.stop(1)
    w2 = RemoteWriter(config(receiver.url, path))
    await w2.start()
    w2.append(samples(10, start=30))
    assert await w2.flush(5)
    await w2.stop(1)
    # The normal path delivers exactly once.
    assert sorted(ts for _, _, ts in receiver.accepted) == [1_700_000_000_000 + i for i in range(40)]


async def test_at_least_once_after_a_crash_between_send_and_ack(receiver, tmp_path, monkeypatch):
    path = tmp_path / "q"
    w = RemoteWriter(config(receiver.url, path, shards=1))
    w._open()
    shard = w._queue.shards[0]
    monkeypatch.setattr(shard, "ack", lambda batch: None)  # the process dies right after the send
    await w.start()
    w.append(samples(10, series=2))
    deadline = time.monotonic() + 5
    while len(receiver.accepted) < 10 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for t in w._tasks:  # kill: no flush, no ack
        t.cancel()
    await asyncio.gather(*w._tasks, return_exceptions=True)
    await w._session.close()
    assert len(receiver.accepted) == 10

    w2 = RemoteWriter(config(receiver.url, path, shards=1))
    await w2.start()
    assert metric_values(w2)[("queue.samples", ())] == 10
    assert await w2.flush(5)
    await w2.stop(1)
    stamps = sorted(ts for _, _, ts in receiver.accepted)
    assert stamps == sorted([1_700_000_000_000 + i for i in range(10)] * 2)


async def test_undelivered_data_stays_on_disk_after_stop(free_port, tmp_path, caplog):
    r = Receiver(free_port())
    r.script = [(503, {}, "")]
    await r.start()
    try:
        w = RemoteWriter(config(r.url, tmp_path / "q"))
        await w.start()
        w.append(samples(15))
        t0 = time.monotonic()
        await w.stop(0.3)
        assert time.monotonic() - t0 < 2
        assert "stopped with 15 samples undelivered" in caplog.text
        assert w.append(samples(1)) == 0
        r.script = [(204, {}, "")]
        w2 = RemoteWriter(config(r.url, tmp_path / "q"))
        await w2.start()
        assert await w2.flush(5)
        await w2.stop(1)
    finally:
        await r.stop()
    assert len(r.accepted) == 15


async def test_queue_full_drops_oldest_with_a_log_line(free_port, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    w = RemoteWriter(config(f"http://127.0.0.1:{free_port()}/api/v1/write", tmp_path / "q", max_bytes=30_000,
                            max_samples_per_send=10))
    for i in range(0, 3000, 10):
        assert w.append(samples(10, start=i)) == 10
    m = metric_values(w)
    dropped = m[("samples.dropped", (("reason", "max_bytes"),))]
    assert dropped > 0 and dropped + m[("queue.samples", ())] == 3000
    assert m[("queue.bytes", ())] <= 30_000
    (line, *_) = [r.getMessage() for r in caplog.records if "max_bytes" in r.getMessage()]
    assert "remote write test" in line and "dropped the oldest" in line
    await w.stop(0)
    assert os.path.isdir(tmp_path / "q" / "shard-0")


async def test_a_series_backlog_goes_before_its_new_samples_across_restarts(receiver, tmp_path):
    receiver.script = [(503, {}, "")]
    w = RemoteWriter(config(receiver.url, tmp_path / "q", shards=4, max_samples_per_send=5))
    await w.start()
    w.append(samples(40, series=6))
    await w.stop(0.2)
    receiver.script = [(204, {}, "")]
    w2 = RemoteWriter(config(receiver.url, tmp_path / "q", shards=4, max_samples_per_send=5))
    await w2.start()
    w2.append(samples(40, series=6, start=40))  # appended at once, while the backlog is being sent
    assert await w2.flush(10)
    await w2.stop(1)
    by_series: dict[str, list[int]] = {}
    for labels, _, ts in receiver.accepted:
        by_series.setdefault(labels["s"], []).append(ts)
    assert sum(map(len, by_series.values())) == 80
    assert all(ts == sorted(ts) for ts in by_series.values())
