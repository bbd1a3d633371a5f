"""``monitoring.integration.nagios`` against a real Nagios 4 (Debian's nagios4) and Debian's real
``nsca`` daemon feeding it: passive results through the command file and through NSCA (none,
XOR, AES), as ``status.dat`` records them (state, text, perfdata, long text); an NSCA daemon
that is down, then up, gets every result queued meanwhile, also across a restart of the exporter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nagios_peer import HOST, NAGIOS_BIN, NSCA_BIN, NagiosConfig, NagiosServer, Service, read_status, unescape_long_output

from bridge.api import Alert, Metric, MetricKind
from bridge.pipeline import Pipeline
from integrations.nagios.export import NagiosExporter
from tests.conftest import _free_port

pytestmark = pytest.mark.integration

PASSIVE = [Service(name, "/bin/true", interval=3600, active=False)
           for name in ("memory", "load", "HighLoad", "disk alerts", "nothing")]


@pytest.fixture
def nagios(tmp_path: Path, require_binary) -> Iterator[NagiosServer]:
    require_binary(NAGIOS_BIN.rsplit("/", 1)[1])
    server = NagiosServer(NagiosConfig(tmp_path / "nagios", PASSIVE))
    server.wait_running()
    yield server
    server.stop()


class NscaDaemon:
    """Debian's ``nsca`` in the foreground, writing to the Nagios' command file."""

    def __init__(self, directory: Path, command_file: Path, method: int, password: str, port: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.cfg = directory / "nsca.cfg"
        self.cfg.write_text(
            f"pid_file={directory / 'nsca.pid'}\nserver_port={port}\nserver_address=127.0.0.1\n"
            f"nsca_user={_user()}\nnsca_group={_group()}\ndebug=0\ncommand_file={command_file}\n"
            f"alternate_dump_file={directory / 'dump'}\naggregate_writes=0\nappend_to_file=0\n"
            f"max_packet_age=30\npassword={password}\ndecryption_method={method}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([NSCA_BIN, "-c", str(self.cfg), "-f", "--single"], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        import socket
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"nsca exited with {self.proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nsca did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _group() -> str:
    import grp

    return grp.getgrgid(os.getgid()).gr_name


def _batch(values: dict[str, float]):
    p = Pipeline()
    p.record("test", [Metric("system.memory.utilization", MetricKind.GAUGE, v, "1", "", {"state": k})
                      for k, v in values.items()] +
             [Metric("system.cpu.load_average.1m", MetricKind.GAUGE, 2.5, "{thread}", "")])
    return p.batch()


def _checks() -> list[dict]:
    return [
        {"service": "memory", "host": HOST, "metric": "system.memory.utilization", "aggregate": "max",
         "warning": "0.8", "critical": "0.9"},
        {"service": "load", "host": HOST, "metric": "system.cpu.load_average.1m", "warning": "~:2", "critical": "@5:"},
        {"service": "nothing", "host": HOST, "metric": "no.such.metric"},
    ]


def _host_status(server: NagiosServer) -> dict[str, str]:
    return {h["host_name"]: h for h in read_status(server.config.status_file, "hoststatus")}[HOST]


def _wait_host(server: NagiosServer, predicate, timeout: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = _host_status(server)
        if predicate(h):
            return h
        time.sleep(0.2)
    raise AssertionError(f"host status never got there: {h}\n{server.log_text()}")


def _passive(s: dict[str, str]) -> bool:
    return s.get("has_been_checked") == "1" and s.get("check_type") == "1"


async def _export_and_check(exporter: NagiosExporter, server: NagiosServer) -> None:
    result = await exporter.export(_batch({"used": 0.93, "free": 0.05}), 10.0)
    assert result.ok, result
    mem = await asyncio.to_thread(server.wait_for, "memory", _passive)
    assert (mem["current_state"], mem["plugin_output"], mem["performance_data"]) == (
        "2", "CRITICAL - system.memory.utilization max 0.93 (2 series)", "system.memory.utilization=0.93;0.8;0.9")
    load = await asyncio.to_thread(server.wait_for, "load", _passive)
    assert (load["current_state"], load["plugin_output"], load["performance_data"]) == (
        "1", "WARNING - system.cpu.load_average.1m avg 2.5 (1 series)", "system.cpu.load_average.1m=2.5;~:2;@5:")
    nothing = await asyncio.to_thread(server.wait_for, "nothing", _passive)
    assert (nothing["current_state"], nothing["plugin_output"]) == ("3", "UNKNOWN - no series of no.such.metric")
    host = await asyncio.to_thread(_wait_host, server, lambda h: h.get("check_type") == "1")
    assert (host["current_state"], host["plugin_output"]) == ("0", "UP - monbridge exporting: 3 metric checks, 0 alert services")


async def test_command_file_results_show_in_status_dat_as_sent(nagios: NagiosServer, tmp_path: Path) -> None:
    exporter = NagiosExporter()
    await exporter.initialize({"command_file": str(nagios.config.command_file), "host": HOST, "checks": _checks(),
                               "queue": {"path": str(tmp_path / "q")}})
    try:
        await _export_and_check(exporter, nagios)
        # alerts: firing -> the severity's state with long text; several in one service -> the worst
        a1 = Alert("a1", "HighLoad", "critical", annotations={"summary": "load is 9 \\ high; really"}, value=9.0,
                   fingerprint="f1")
        a2 = Alert("a2", "DiskFull", "warning", labels={"nagios_service": "disk alerts"}, fingerprint="f2")
        a3 = Alert("a3", "DiskSlow", "critical", labels={"nagios_service": "disk alerts"}, fingerprint="f3")
        await exporter.export_alerts([a1, a2, a3])
        assert await exporter.force_flush(10.0)
        hl = await asyncio.to_thread(nagios.wait_for, "HighLoad", _passive)
        assert (hl["current_state"], hl["plugin_output"], hl["performance_data"]) == (
            "2", "CRITICAL - HighLoad [critical] (value 9): load is 9 \\ high: really", "alerts=1;;;0")
        assert f"{hl['plugin_output']} | {hl['performance_data']}" == exporter._alert_sent[(HOST, "HighLoad")][1]
        disk = await asyncio.to_thread(nagios.wait_for, "disk alerts", _passive)
        assert (disk["current_state"], disk["plugin_output"], disk["performance_data"]) == (
            "2", "CRITICAL - 2 alerts: DiskSlow, DiskFull", "alerts=2;;;0")
        assert unescape_long_output(disk["long_plugin_output"]) == "DiskSlow [critical]\nDiskFull [warning]"
        # resolved -> OK, once
        await exporter.export_alerts([a1])
        assert await exporter.force_flush(10.0)
        disk = await asyncio.to_thread(nagios.wait_for, "disk alerts", lambda s: s["current_state"] == "0")
        assert disk["plugin_output"] == "OK - resolved: DiskFull, DiskSlow"
        # a restart of the exporter remembers what is open: HighLoad resolved while it was down gets its OK
        await exporter.shutdown()
        exporter = NagiosExporter()
        await exporter.initialize({"command_file": str(nagios.config.command_file), "host": HOST,
                                   "queue": {"path": str(tmp_path / "q")}})
        await exporter.export_alerts([])
        assert await exporter.force_flush(10.0)
        hl = await asyncio.to_thread(nagios.wait_for, "HighLoad", lambda s: s["current_state"] == "0")
        assert hl["plugin_output"] == "OK - resolved: HighLoad"
    finally:
        await exporter.shutdown()


async def test_command_file_without_nagios_is_retryable_and_delivered_later(tmp_path: Path, require_binary) -> None:
    require_binary(NAGIOS_BIN.rsplit("/", 1)[1])
    config = NagiosConfig(tmp_path / "nagios", PASSIVE)
    config.write()
    os.mkfifo(config.command_file)  # the FIFO of a Nagios that is not running: no reader
    exporter = NagiosExporter()
    await exporter.initialize({"command_file": str(config.command_file), "host": HOST, "checks": _checks(),
                               "queue": {"path": str(tmp_path / "q"), "min_backoff": 0.1, "max_backoff": 0.3}})
    try:
        result = await exporter.export(_batch({"used": 0.93}), 2.0)
        assert not result.ok and "no reader (Nagios is not running)" in result.reason
        assert exporter.failures >= 1 and exporter.sent == 0
        os.unlink(config.command_file)
        server = NagiosServer(config)
        try:
            server.wait_running()
            assert await exporter.force_flush(30.0)
            mem = await asyncio.to_thread(server.wait_for, "memory", _passive)
            assert mem["plugin_output"] == "CRITICAL - system.memory.utilization max 0.93 (1 series)"
            assert exporter.sent == 4 and not exporter.dropped
        finally:
            server.stop()
    finally:
        await exporter.shutdown()


@pytest.mark.parametrize("encryption,method", [("none", 0), ("xor", 1), ("aes256", 14)])
async def test_nsca_results_show_in_status_dat_as_sent(nagios: NagiosServer, tmp_path: Path, require_binary,
                                                        encryption: str, method: int) -> None:
    require_binary("nsca")
    daemon = NscaDaemon(tmp_path / "nsca", nagios.config.command_file, method, "pa55-word", _free_port())
    daemon.start()
    exporter = NagiosExporter()
    await exporter.initialize({"nsca": {"host": "127.0.0.1", "port": daemon.port, "encryption": encryption,
                                        "password": "pa55-word"}, "host": HOST, "checks": _checks()})
    try:
        await _export_and_check(exporter, nagios)
        long = Alert("a1", "HighLoad", "critical", annotations={"summary": "x"}, fingerprint="f1")
        other = Alert("a2", "Other", "warning", labels={"nagios_service": "HighLoad"}, fingerprint="f2")
        await exporter.export_alerts([long, other])
        assert await exporter.force_flush(10.0)
        hl = await asyncio.to_thread(nagios.wait_for, "HighLoad", _passive)
        assert (hl["current_state"], hl["plugin_output"], hl["performance_data"]) == (
            "2", "CRITICAL - 2 alerts: HighLoad, Other", "alerts=2;;;0")
        assert unescape_long_output(hl["long_plugin_output"]) == "HighLoad [critical]: x\nOther [warning]"
    finally:
        await exporter.shutdown()
        daemon.stop()


async def test_nsca_down_then_up_delivers_what_was_queued_across_a_restart(nagios: NagiosServer, tmp_path: Path,
                                                                           require_binary) -> None:
    require_binary("nsca")
    daemon = NscaDaemon(tmp_path / "nsca", nagios.config.command_file, 1, "pw", _free_port())
    config = {"nsca": {"host": "127.0.0.1", "port": daemon.port, "encryption": "xor", "password": "pw"},
              "host": HOST, "checks": _checks(), "queue": {"path": str(tmp_path / "q"), "min_backoff": 0.1,
                                                            "max_backoff": 0.3}}
    exporter = NagiosExporter()
    await exporter.initialize(config)
    result = await exporter.export(_batch({"used": 0.93}), 2.0)
    assert not result.ok and f"NSCA server 127.0.0.1:{daemon.port}" in result.reason and "pw" not in result.reason
    await exporter.export_alerts([Alert("a1", "HighLoad", "warning", fingerprint="f1")])
    await exporter.shutdown()  # monbridge restarts while NSCA is down: the results are on disk
    exporter = NagiosExporter()
    await exporter.initialize(config)
    try:
        assert (await exporter.import_metrics())[1].value == 5  # 4 results of the round and the alert's
        daemon.start()
        assert await exporter.force_flush(30.0)
        mem = await asyncio.to_thread(nagios.wait_for, "memory", _passive)
        assert mem["plugin_output"] == "CRITICAL - system.memory.utilization max 0.93 (1 series)"
        hl = await asyncio.to_thread(nagios.wait_for, "HighLoad", _passive)
        assert (hl["current_state"], hl["plugin_output"]) == ("1", "WARNING - HighLoad [warning]")
        assert exporter.sent == 5 and not exporter.dropped
    finally:
        await exporter.shutdown()
        daemon.stop()


def test_monbridge_run_sends_metric_checks_alerts_and_its_host_result(nagios: NagiosServer, run_monbridge,
                                                                     tmp_path: Path) -> None:
    """The whole path through ``monbridge run``: a collector's gauge as a metric check, the rule's
    alert as a service result, the host result, into the real Nagios' command file; the self-metrics."""
    config = {
        "alerting": {"state_dir": str(tmp_path / "state"), "import_interval": 0.5},
        "plugins": [
            {"plugin_id": "monitoring.metrics.example", "config": {"collection_interval": 0.2, "value": 50}},
            {"plugin_id": "monitoring.alerts.rules", "config": {"evaluation_interval": 0.5, "rules": [
                {"name": "HighLoad", "metric": "example.value", "aggregate": "max", "op": ">", "threshold": 10,
                 "for": 0, "severity": "critical", "annotations": {"summary": "example.value is {{ value }}"}}]}},
            {"plugin_id": "monitoring.integration.nagios", "config": {
                "interval": 0.5, "command_file": str(nagios.config.command_file), "host": HOST,
                "queue": {"path": str(tmp_path / "nagios-queue")},
                "checks": [{"service": "load", "metric": "example.value", "match": {"source": "example"},
                            "aggregate": "max", "warning": "20", "critical": "40"}]}},
        ],
    }
    mb = run_monbridge(config)
    load = nagios.wait_for("load", _passive)
    assert (load["current_state"], load["plugin_output"], load["performance_data"]) == (
        "2", "CRITICAL - example.value max 50 (1 series matching source=example)", "example.value=50;20;40")
    alert = nagios.wait_for("HighLoad", _passive)
    assert (alert["current_state"], alert["plugin_output"]) == (
        "2", "CRITICAL - HighLoad [critical] (value 50): example.value is 50")
    host = _wait_host(nagios, lambda h: h.get("check_type") == "1")
    assert host["plugin_output"].startswith("UP - monbridge exporting: 1 metric checks")
    deadline = time.monotonic() + 30
    while True:  # the self-metrics reach /metrics with the next import round
        status, _, body = mb.get("/metrics")
        sent = [line for line in body.decode().splitlines() if line.startswith("monbridge_nagios_results_sent_total")]
        if sent and float(sent[0].rsplit(" ", 1)[1]) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert status == 200 and sent and float(sent[0].rsplit(" ", 1)[1]) >= 3, sent
