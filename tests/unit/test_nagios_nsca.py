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
async def test_a_hostile_server_is_this_sinks_retryable_failure_and_loses_nothing(handler, tmp_path: Path) -> None:
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
