"""The NSCA client's packets (as nsca's ``handle_connection_read`` decodes them), hostile NSCA
servers (garbage, a short init packet, silence, an early close: a failure of this sink only, the
results kept queued), the command file's lines (escaping, the PIPE_BUF bound, a full FIFO), the
output fitting and the config (names, one transport, the password never shown)."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pydantic
import pytest

from bridge.api import Metric, MetricKind
from bridge.pipeline import Pipeline
from integrations.nagios.export import PIPE_BUF, CommandFile, DeliveryError, NagiosExporter, command_line, fit_output
from integrations.nagios.export_config import NagiosExportConfig
from integrations.nagios.nsca import INIT_PACKET_SIZE, PACKET_SIZE, NscaError, NscaResult, _Cipher, encode_packet, send_results
from integrations.nagios.perfdata import PerfItem
from integrations.nagios.ranges import parse_range

IV = bytes(range(128))


def decode(packet: bytes) -> tuple[int, int, int, str, str, str]:
    """A plain packet as nsca reads it: version, timestamp, code, host, service, output (CRC checked)."""
    assert len(packet) == PACKET_SIZE == 4304
    version, crc, ts, code = struct.unpack_from("!hxxIIh", packet)
    zeroed = packet[:4] + b"\x00" * 4 + packet[8:]
    assert zlib.crc32(zeroed) == crc

    def cstr(o: int, n: int) -> str:
        return packet[o:o + n].split(b"\x00", 1)[0].decode()

    return version, ts, code, cstr(14, 64), cstr(78, 128), cstr(206, 4096)


def test_a_packet_is_the_c_struct_with_its_crc() -> None:
    p = encode_packet(NscaResult("web-01", "memory", 2, "CRITICAL - x | a=1\nlong"), 1234567890)
    assert decode(p) == (3, 1234567890, 2, "web-01", "memory", "CRITICAL - x | a=1\nlong")
    host = decode(encode_packet(NscaResult("web-01", "", 0, "UP"), 1))
    assert host[4] == "" and host[2] == 0


def test_output_is_cut_at_4095_bytes_on_a_character_boundary_and_long_names_are_refused() -> None:
    out = decode(encode_packet(NscaResult("h", "s", 0, "é" * 3000), 1))[5]
    assert len(out.encode()) <= 4095 and set(out) == {"é"} and len(out) == 2047
    with pytest.raises(ValueError, match="host name"):
        encode_packet(NscaResult("h" * 64, "s", 0, ""), 1)
    with pytest.raises(ValueError, match="service description"):
        encode_packet(NscaResult("h", "s" * 128, 0, ""), 1)


def test_xor_is_the_iv_then_the_password_rotated_over_each_packet() -> None:
    packet = encode_packet(NscaResult("h", "s", 1, "x"), 7)
    enc = _Cipher(1, b"pw", IV).encrypt(packet)
    expect = bytes(b ^ IV[i % 128] ^ b"pw"[i % 2] for i, b in enumerate(packet))
    assert enc == expect and _Cipher(0, b"pw", IV).encrypt(packet) == packet
    with pytest.raises(ValueError, match="not supported"):
        _Cipher(8, b"pw", IV)


# --------------------------------------------------------------------------- hostile servers


async def _server(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                  ) -> AsyncIterator[int]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


async def _good(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, got: list[bytes]) -> None:
    writer.write(IV + struct.pack("!I", 99))
    await writer.drain()
    data = await reader.read()  # until the client's end of file
    got.append(data)
    writer.close()


async def test_a_well_behaved_server_gets_every_packet_and_the_close_confirms_it() -> None:
    got: list[bytes] = []
    async for port in _server(lambda r, w: _good(r, w, got)):
        await send_results("127.0.0.1", port, [NscaResult("h", "a", 0, "x"), NscaResult("h", "", 0, "UP")],
                           method=1, password=b"secret", timeout=5)
    (data,) = got
    assert len(data) == 2 * PACKET_SIZE
    plain = _Cipher(1, b"secret", IV)
    first = decode(plain.encrypt(data[:PACKET_SIZE]))
    assert first[:5] == (3, 99, 0, "h", "a")


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(os.urandom(INIT_PACKET_SIZE + 4096))  # an init packet and then more: not NSCA
    await writer.drain()
    await asyncio.sleep(2)
    writer.close()


async def _short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"\x01" * 100)  # a 100-byte IV, then the close
    await writer.drain()
    writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _closes_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(IV + b"\x00\x00\x00\x01")
    await writer.drain()
    await asyncio.sleep(30)  # neither reads the packets nor closes


@pytest.mark.parametrize("handler,reason", [
    (_garbage, "besides its init packet"),
    (_short, "after 100 of the 132 bytes"),
    (_silent, "no answer within 0.5 s"),
    (_closes_at_once, "after 0 of the 132 bytes"),
    (_never_reads, "no answer within 0.5 s"),
])
async def test_a_hostile_server_is_an_nsca_error_naming_it(handler, reason: str) -> None:
    async for port in _server(handler):
        with pytest.raises(NscaError, match=reason) as e:
            await send_results("127.0.0.1", port, [NscaResult("h", "s", 0, "x" * 4000)] * 100, method=1,
                               password=b"the-password", timeout=0.5)
        assert f"127.0.0.1:{port}" in str(e.value) and "the-password" not in str(e.value)


@pytest.mark.parametrize("handler", [_garbage, _short, _silent, _closes_at_once])
async def test_a_hostile_server_is_this_sinks_retryable_failure_and_loses_nothing(handler, tmp_path: Path,
                                                                                 caplog) -> None:
    caplog.set_level("DEBUG")
    p = Pipeline()
    p.record("t", [Metric("x.y", MetricKind.GAUGE, 1.0)])
    async for port in _server(handler):
        exporter = NagiosExporter()
        await exporter.initialize({"nsca": {"host": "127.0.0.1", "port": port, "password": "the-password",
                                            "timeout": 0.5},
                                   "host": "h", "checks": [{"service": "s", "metric": "x.y"}],
                                   "queue": {"path": str(tmp_path), "min_backoff": 0.05, "max_backoff": 0.1}})
        try:
            result = await exporter.export(p.batch(), 3.0)
            assert not result.ok and f"NSCA server 127.0.0.1:{port}" in result.reason
            assert "the-password" not in result.reason
            metrics = {m.name: m.value for m in await exporter.import_metrics()}
            assert metrics["monbridge.nagios.results.queued"] == 2 and metrics["monbridge.nagios.send.failures"] >= 1
            assert metrics["monbridge.nagios.results.sent"] == 0 and not exporter.dropped
            assert "nagios export: NSCA server" in caplog.text and "the-password" not in caplog.text
        finally:
            await exporter.shutdown()
    # the queue is on disk: a good server later gets both results
    got: list[bytes] = []
    async for port in _server(lambda r, w: _good(r, w, got)):
        exporter = NagiosExporter()
        await exporter.initialize({"nsca": {"host": "127.0.0.1", "port": port, "encryption": "none"}, "host": "h",
                                   "host_check": False, "queue": {"path": str(tmp_path)}})
        try:
            assert await exporter.force_flush(5.0)
        finally:
            await exporter.shutdown()
    packets = [decode(b"".join(got)[i:i + PACKET_SIZE]) for i in range(0, len(b"".join(got)), PACKET_SIZE)]
    assert [(p[3], p[4], p[2], p[5]) for p in packets] == [
        ("h", "s", 0, "OK - x.y avg 1 (1 series) | x.y=1"), ("h", "", 0, "UP - monbridge exporting: 1 metric checks, "
                                                                         "0 alert services")]


# --------------------------------------------------------------------------- the command file


def test_a_command_escapes_backslashes_and_newlines_and_drops_cr_and_nul() -> None:
    line = command_line("web", "mem", 2, "CRIT; a\\b\r\nlong\x00 | p=1", 5)
    assert line == b"[5] PROCESS_SERVICE_CHECK_RESULT;web;mem;2;CRIT; a\\\\b\\nlong | p=1\n"
    assert command_line("web", "", 0, "UP", 5) == b"[5] PROCESS_HOST_CHECK_RESULT;web;0;UP\n"


def test_a_command_is_at_most_pipe_buf_bytes_and_never_ends_in_half_an_escape() -> None:
    for n in range(4040, 4080):
        line = command_line("web", "mem", 0, "x" * n + "\\" * 50, 5)
        assert len(line) <= PIPE_BUF and line.endswith(b"\n")
        body = line.rstrip(b"\n").rsplit(b";", 1)[1]
        assert (len(body) - len(body.rstrip(b"\\"))) % 2 == 0
    assert len(command_line("web", "mem", 0, "é" * 5000, 5).decode()) > 0  # cut on a character boundary


def test_a_bar_in_text_or_long_text_is_a_space_it_would_start_perfdata() -> None:
    assert fit_output("OK - a|b", [PerfItem("p", 1.0)], "c|d\ne", 100) == "OK - a b | p=1\nc d\ne"
    assert fit_output("OK - a\nb; c", [], "d; e", 100) == "OK - a b: c\nd; e"


def test_output_that_does_not_fit_loses_long_text_then_perfdata_then_text() -> None:
    perf = [PerfItem("a", 1.0, "s", parse_range("10"), None), PerfItem("b", 2.0)]
    assert fit_output("OK - t", perf, "long", 100) == "OK - t | a=1s;10 b=2\nlong"
    assert fit_output("OK - t", perf, "long" * 30, 100) == "OK - t | a=1s;10 b=2"
    assert fit_output("OK - t", perf, "", 16) == "OK - t | a=1s;10"
    assert fit_output("OK - t", perf, "", 5) == "OK - "


async def test_a_full_fifo_does_not_block_the_loop_and_fails_after_the_timeout(tmp_path: Path) -> None:
    fifo = tmp_path / "nagios.cmd"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a Nagios that never reads
    try:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.get_running_loop().create_task(tick())
        results = [["h", "s", 0, "x" * 4000, 1]] * 200
        with pytest.raises(DeliveryError, match="full"):
            await CommandFile(str(fifo)).send(results, 0.5)
        t.cancel()
        assert ticks > 5  # the loop ran while the FIFO was full
        data = os.read(reader, 1 << 20)
        assert data and all(line.startswith(b"[1] PROCESS_SERVICE_CHECK_RESULT;h;s;0;x") for line in data.split(b"\n")[:-1])
    finally:
        os.close(reader)


async def test_a_command_file_that_is_not_a_fifo_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "plain"
    f.write_text("")
    with pytest.raises(DeliveryError, match="not a FIFO"):
        await CommandFile(str(f)).send([["h", "s", 0, "x", 1]], 1.0)
    with pytest.raises(DeliveryError, match="command file"):
        await CommandFile(str(tmp_path / "missing")).send([["h", "s", 0, "x", 1]], 1.0)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("config,error", [
    ({"host": "h"}, "exactly one of command_file and nsca"),
    ({"host": "h", "command_file": "/x", "nsca": {"host": "n"}}, "exactly one of command_file and nsca"),
    ({"host": "a;b", "command_file": "/x"}, "holds ';'"),
    ({"host": "h", "command_file": "/x", "checks": [{"service": "s\n", "metric": "m"}]}, "control character"),
    ({"host": "h", "command_file": "/x", "checks": [{"service": "s", "metric": "m", "warning": "5:1"}]}, "above end"),
    ({"host": "h", "command_file": "/x", "checks": [{"service": "s", "metric": "m"}, {"service": "s", "metric": "n"}]},
     "named by an earlier check"),
    ({"host": "h" * 64, "nsca": {"host": "n"}}, "longer than NSCA's 63 bytes"),
])
def test_config_errors_name_what_is_wrong(config: dict, error: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=error):
        NagiosExportConfig.model_validate(config)


def test_the_nsca_password_is_never_shown() -> None:
    cfg = NagiosExportConfig.model_validate({"host": "h", "nsca": {"host": "n", "password": "hunter2"}})
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.model_dump())
    with pytest.raises(pydantic.ValidationError) as e:
        NagiosExportConfig.model_validate({"host": "h", "nsca": {"host": "n", "password": "hunter2" * 100}})
    assert "hunter2" not in str(e.value)


# --------------------------------------------------------------------------- what goes out


def _pipeline_batch():
    p = Pipeline()
    p.record("t", [
        Metric("system.memory.utilization", MetricKind.GAUGE, 0.5, "1", "", {"state": "used", "host": "a"}),
        Metric("system.memory.utilization", MetricKind.GAUGE, 0.9, "1", "", {"state": "used", "host": "b"}),
        Metric("system.memory.utilization", MetricKind.GAUGE, 0.1, "1", "", {"state": "free", "host": "a"}),
        Metric("system.memory.utilization", MetricKind.GAUGE, float("nan"), "1", "", {"state": "used", "host": "c"}),
        Metric("disk.io", MetricKind.COUNTER, 12.0, "By", "", {"up": True}),
        Metric("disk.size", MetricKind.GAUGE, 2048.0, "By", ""),
        Metric("http.duration", MetricKind.GAUGE, 0.25, "s", ""),
    ])
    return p.batch()


@pytest.mark.parametrize("check,expect", [
    ({"metric": "system.memory.utilization", "match": {"state": "used"}, "aggregate": "max", "critical": "0.8"},
     (2, "system.memory.utilization max 0.9 (2 series matching state=used)", "system.memory.utilization=0.9;;0.8")),
    ({"metric": "system.memory.utilization", "match": {"state": "used"}, "aggregate": "avg", "warning": "0.6",
      "label": "mem used"}, (1, "system.memory.utilization avg 0.7 (2 series matching state=used)",
                             "'mem used'=0.7;0.6")),
    ({"metric": "system.memory.utilization", "aggregate": "min", "warning": "0.2:"},
     (1, "system.memory.utilization min 0.1 (3 series)", "system.memory.utilization=0.1;0.2:")),
    ({"metric": "disk.io", "match": {"up": "true"}, "aggregate": "sum"}, (0, "disk.io sum 12 (1 series matching up=true)",
                                                                          "disk.io=12c")),
    ({"metric": "disk_io_bytes_total", "aggregate": "last"}, (0, "disk_io_bytes_total last 12 (1 series)",
                                                              "disk_io_bytes_total=12c")),
    ({"metric": "disk.size", "critical": "@1024:"}, (2, "disk.size avg 2048 (1 series)", "disk.size=2048B;;@1024:")),
    ({"metric": "http.duration"}, (0, "http.duration avg 0.25 (1 series)", "http.duration=0.25s")),
    ({"metric": "system.memory.utilization", "match": {"state": "gone"}, "aggregate": "count", "critical": "1:"},
     (2, "system.memory.utilization count 0 (0 series matching state=gone)", "system.memory.utilization=0;;1:")),
    ({"metric": "no.such", "missing": "critical"}, (2, "no series of no.such", "")),
    ({"metric": "no.such"}, (3, "no series of no.such", "")),
])
def test_a_metric_check_aggregates_the_matching_series_against_its_ranges(check: dict, expect: tuple) -> None:
    from integrations.nagios.export import evaluate, family_index
    from integrations.nagios.export_config import MetricCheck
    from integrations.nagios.perfdata import format_perfdata

    state, text, perf = evaluate(MetricCheck.model_validate({"service": "s", **check}), family_index(_pipeline_batch()))
    assert (int(state), text, format_perfdata(perf)) == expect


class _Recorder:
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[list] = []

    def describe(self) -> str:
        return "recorder"

    async def send(self, results, timeout: float) -> None:
        self.got.extend(results)


async def _exporter(tmp_path: Path, **config) -> tuple[NagiosExporter, _Recorder]:
    e = NagiosExporter()
    await e.initialize({"command_file": str(tmp_path / "cmd"), "host": "web", "host_check": False,
                        "queue": {"path": str(tmp_path / "q")}, **config})
    rec = _Recorder()
    e._transport = rec  # the delivery reads its transport at each send
    return e, rec


async def test_alerts_become_one_result_per_service_in_the_worst_state_sent_on_change(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    from bridge.api import Alert

    e, rec = await _exporter(tmp_path, alerts={"states": {"critical": "CRITICAL", "page": "UNKNOWN"},
                                               "other_state": "OK", "resend_interval": 100})
    try:
        a = Alert("a", "Load", "page", labels={"nagios_host": "db;1\n"}, fingerprint="1")
        b = Alert("b", "Load2", "critical", labels={"nagios_host": "db;1\n", "nagios_service": "Load"}, fingerprint="2")
        c = Alert("c", "Odd", "whatever", annotations={"summary": "bad \udcff bytes | not perfdata"}, fingerprint="3")
        await e.export_alerts([a, b, c])
        assert await e.force_flush(5)
        got = {(r[0], r[1]): (r[2], r[3]) for r in rec.got}
        assert got == {("db_1_", "Load"): (2, "CRITICAL - 2 alerts: Load2, Load | alerts=2;;;0\n"
                                             "Load2 [critical]\nLoad [page]"),
                       ("web", "Odd"): (0, "OK - Odd [whatever]: bad \udcff bytes   not perfdata | alerts=1;;;0")}
        rec.got.clear()
        await e.export_alerts([a, b, c])  # unchanged: nothing
        assert await e.force_flush(5) and rec.got == []
        now = __import__("time").time()
        monkeypatch.setattr("integrations.nagios.export.time.time", lambda: now + 101)
        await e.export_alerts([b, c])  # resend_interval passed: both again, the group changed
        assert await e.force_flush(5)
        assert sorted((r[0], r[1], r[2]) for r in rec.got) == [("db_1_", "Load", 2), ("web", "Odd", 0)]
        rec.got.clear()
        await e.export_alerts([])
        assert await e.force_flush(5)
        assert sorted((r[1], r[2], r[3]) for r in rec.got) == [("Load", 0, "OK - resolved: Load2"),
                                                               ("Odd", 0, "OK - resolved: Odd")]
    finally:
        await e.shutdown()


async def test_a_record_that_is_not_a_result_is_dropped_and_counted_not_retried(tmp_path: Path) -> None:
    e, rec = await _exporter(tmp_path)
    try:
        e._sender.queue.shards[0].append_many([(b"not json", 1), (b'["h", "s", 9, "x", 1]', 1), (b'["h", "s", 1, "x", 1]', 1)])
        e._sender._wake.set()
        assert await e.force_flush(5)
        assert rec.got == [["h", "s", 1, "x", 1]] and e.dropped == {"bad_record": 2}
    finally:
        await e.shutdown()


async def test_results_beyond_max_bytes_drop_the_oldest_counted(tmp_path: Path) -> None:
    p = Pipeline()
    p.record("t", [Metric("x", MetricKind.GAUGE, 1.0)])
    e = NagiosExporter()
    await e.initialize({"command_file": str(tmp_path / "missing.cmd"), "host": "h",
                        "checks": [{"service": f"s{i}", "metric": "x"} for i in range(40)],
                        "queue": {"path": str(tmp_path / "q"), "max_bytes": 1 << 16, "min_backoff": 5, "max_backoff": 5}})
    try:
        for _ in range(40):
            assert not (await e.export(p.batch(), 0.2)).ok
        m = {(x.name, x.attributes.get("reason")): x.value for x in await e.import_metrics()}
        assert m[("monbridge.nagios.results.dropped", "max_bytes")] > 0
        assert m[("monbridge.nagios.results.queued", None)] + m[("monbridge.nagios.results.dropped", "max_bytes")] \
            == 40 * 41
    finally:
        await e.shutdown()


async def test_alert_results_the_queue_refuses_are_counted_and_sent_next_round(tmp_path: Path, monkeypatch) -> None:
    from bridge.api import Alert

    e, rec = await _exporter(tmp_path)
    try:
        shard = e._sender.queue.shards[0]
        real = shard.append_many

        def full(records):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(shard, "append_many", full)
        alert = Alert("a", "Load", "critical", fingerprint="1")
        await e.export_alerts([alert])
        assert e.dropped == {"queue_error": 1} and e._alert_sent == {}
        monkeypatch.setattr(shard, "append_many", real)
        await e.export_alerts([alert])
        assert await e.force_flush(5)
        assert [(r[1], r[2]) for r in rec.got] == [("Load", 2)]
    finally:
        await e.shutdown()
