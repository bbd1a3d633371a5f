"""Fuzzing what a peer's alert puts into a Nagios external command and an NSCA packet
(``integrations.nagios.export``: an alert's name, summary and ``nagios_service``/``nagios_host``
labels come from Prometheus, Alertmanager or OTLP peers): whatever they hold, the command is one
line of at most PIPE_BUF bytes with the host and service where Nagios looks for them, Nagios'
unescaping of its output gives a text without a line break and the exporter's own perfdata
(``alerts=1``) or none (when it did not fit), and the NSCA packet decodes as nsca reads it; in
bounded time and memory. A name the transport cannot carry is refused (the exporter drops it).

Input: the fields name, summary, service, host separated by ``\\x1e``, decoded as UTF-8 with
lone surrogates for bad bytes (as text a peer's JSON can carry). Seeds: ``corpus/nagios_export/``.
"""

from __future__ import annotations

import pytest

from bridge.api import Alert
from integrations.nagios.export import MAX_NAME_BYTES, PIPE_BUF, CommandFile, NagiosExporter, Nsca, _name, command_line
from integrations.nagios.export_config import AlertResults
from integrations.nagios.nsca import PACKET_SIZE, NscaResult, encode_packet
from integrations.nagios.output import parse_plugin_output
from integrations.nagios.perfdata import PerfItem
from tests.fuzz.harness import run_fuzz, seeds

TOKENS = [b"\x1e", b"|", b";", b"\n", b"\r", b"\\", b"\\n", b"\\\\", b"\x00", b"\xff", b"\xed\xa0\x80", b"'", b"=",
          b"alerts=1;;;0", b" " * 100]
SETTINGS = AlertResults()
EXPECTED_PERF = [PerfItem("alerts", 1.0, "", None, None, 0.0)]


def unescape(raw: bytes) -> bytes:
    """Nagios Core's ``unescape_check_result_output``: ``\\\\`` and ``\\n``, nothing else."""
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i:i + 1] == b"\\" and raw[i + 1:i + 2] in (b"\\", b"n"):
            out += b"\\" if raw[i + 1:i + 2] == b"\\" else b"\n"
            i += 2
        else:
            out += raw[i:i + 1]
            i += 1
    return bytes(out)


def exporter(transport: CommandFile | Nsca) -> NagiosExporter:
    e = NagiosExporter()
    e._transport = transport
    return e


COMMAND_FILE = exporter(CommandFile("/nonexistent"))
NSCA = exporter(Nsca("127.0.0.1", 5667, 1, b"", 1.0))


def target(data: bytes) -> None:
    name, summary, service, host = (data.decode("utf-8", "surrogateescape").split("\x1e") + ["", "", "", ""])[:4]
    alert = Alert("id", name or "A", "critical", labels={"nagios_service": service, "nagios_host": host},
                  annotations={"summary": summary})
    host_name = _name(alert.labels.get("nagios_host") or "web")
    service_name = _name(alert.labels.get("nagios_service") or alert.name)
    assert host_name and service_name and ";" not in host_name + service_name

    fits = len(host_name.encode("utf-8", "replace")) <= MAX_NAME_BYTES >= len(service_name.encode("utf-8", "replace"))
    if fits:
        code, output = COMMAND_FILE._alert_result(SETTINGS, [alert], host_name, service_name)
        line = command_line(host_name, service_name, code, output, 1700000000)
        assert len(line) <= PIPE_BUF and line.endswith(b"\n") and line.count(b"\n") == 1
        head, rest = line[:-1].split(b"] ", 1)
        fields = rest.split(b";", 4)
        assert fields[:4] == [b"PROCESS_SERVICE_CHECK_RESULT", host_name.encode("utf-8", "replace"),
                              service_name.encode("utf-8", "replace"), b"2"]
        parsed = parse_plugin_output(unescape(fields[4]).decode("utf-8", "replace"))
        assert parsed.perfdata in ([], EXPECTED_PERF), parsed.perfdata
        assert "\n" not in parsed.text and parsed.perfdata_errors == []

    if len(host_name.encode("utf-8", "replace")) < 64 and len(service_name.encode("utf-8", "replace")) < 128:
        code, output = NSCA._alert_result(SETTINGS, [alert], host_name, service_name)
        packet = encode_packet(NscaResult(host_name, service_name, code, output), 1)
        assert len(packet) == PACKET_SIZE
        sent = packet[206:206 + 4096].split(b"\x00", 1)[0]
        assert len(sent) <= 4095
        parsed = parse_plugin_output(sent.decode("utf-8", "replace"))  # the nsca daemon escapes newlines itself
        assert parsed.perfdata in ([], EXPECTED_PERF) and parsed.perfdata_errors == []


@pytest.mark.fuzz
def test_fuzz_nagios_export() -> None:
    pool = seeds("nagios_export")
    for data in pool:
        target(data)
    assert run_fuzz(target, pool, allowed=(), tokens=TOKENS) >= len(pool)
