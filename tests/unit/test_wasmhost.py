"""The WASM plugin host: the example collector's metrics, and misbehaving modules stopped or
refused within their timeout + 10 % while the event loop keeps its schedule."""

from __future__ import annotations

import asyncio
import http.server
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from bridge.api import Alert, MetricKind, PluginError, PluginType
from bridge.isolation import Grants, LimitExceeded, Limits, StopReason
from bridge.pipeline import Pipeline
from bridge.supervisor import Supervisor
from bridge.wasmhost import (
    ERR_CONNECTIONS,
    ERR_NOT_GRANTED,
    WasmAlertProcessor,
    WasmBounds,
    WasmCollector,
    WasmPlugin,
    wasm_plugin_factory,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "wasm"
EXAMPLE = ROOT / "collectors" / "wasm" / "example_collector.wat"

#: Limits no test module reaches but the one under test.
ROOMY = Limits(memory_mb=16, cpu_percent=1000, cpu_burst_percent=1000)
#: How much later than its deadline a call may end, and how late the event loop's ticker may run,
#: on a loaded machine: a call not stopped would run on to its collection interval (5 s and more),
#: and a call run on the event loop would hold the ticker for the whole call (1 s and more).
SLACK = 1.0
LATE = 0.5


def wasm(path: Path) -> bytes:
    return wasmtime.wat2wasm(path.read_text())


def manifest(plugin_type: PluginType = PluginType.METRIC_COLLECTOR, name: str = "test") -> dict[str, Any]:
    return {"id": f"monitoring.{plugin_type.id_kind}.{name}", "name": name, "version": "1.0.0",
            "plugin_type": plugin_type.value, "api_version": "1", "description": "a test module", "author": "tests"}


async def collector(name: str, config: dict[str, Any], limits: Limits = ROOMY, grants: Grants | None = None) -> WasmPlugin:
    plugin = WasmPlugin(wasm(DATA / f"{name}.wat"), manifest(), limits, grants or Grants())
    await plugin.initialize(config)
    return plugin


async def ticking(aw: Awaitable[Any], interval: float = 0.5) -> tuple[Any, float, float]:
    """Await ``aw`` beside a ticker of ``interval`` s: (its result or exception, seconds it took,
    the ticker's worst lateness)."""
    loop = asyncio.get_running_loop()
    late: list[float] = []

    async def tick() -> None:
        due = loop.time()
        while True:
            due += interval
            await asyncio.sleep(max(due - loop.time(), 0))
            late.append(loop.time() - due)

    ticker = asyncio.create_task(tick())
    t0 = time.monotonic()
    try:
        outcome: Any = await aw
    except Exception as e:  # noqa: BLE001 - the outcome is what the test asserts on
        outcome = e
    took = time.monotonic() - t0
    ticker.cancel()
    return outcome, took, max(late, default=0.0)


def stopped(outcome: Any, reason: StopReason) -> LimitExceeded:
    assert isinstance(outcome, LimitExceeded), outcome
    assert outcome.reason is reason, outcome
    return outcome


# --------------------------------------------------------------------------- the example


async def test_the_example_collectors_metrics_arrive_exactly():
    plugin = WasmPlugin(wasm(EXAMPLE), manifest(name="example"), Limits(), Grants())
    assert isinstance(plugin, WasmCollector) and plugin.metadata().plugin_type is PluginType.METRIC_COLLECTOR
    await plugin.initialize({"instance": "db-1", "base": 20, "collection_interval": 5})
    rounds = [await plugin.collect_metrics() for _ in range(3)]
    await plugin.shutdown()
    for n, metrics in enumerate(rounds, 1):
        assert [(m.name, m.kind, m.value, dict(m.attributes)) for m in metrics] == [
            ("example_collections", MetricKind.COUNTER, float(n), {"instance": "db-1"}),
            ("example_temperature", MetricKind.GAUGE, 20.5, {"instance": "db-1"}),
        ]


async def test_the_supervisor_runs_a_wasm_collector_like_any_other():
    pipeline = Pipeline()
    sup = Supervisor(pipeline)
    make = wasm_plugin_factory(wasm(EXAMPLE), manifest(name="example"), Limits(), Grants())
    config = {"instance": "db-2", "base": 7, "collection_interval": 0.05}
    runner = sup.add("monitoring.metrics.example", make, config, WasmCollector.parse_config(config))
    await sup.start_all()
    for _ in range(100):
        await asyncio.sleep(0.02)
        if pipeline.family("example_temperature") is not None and pipeline.family("example_temperature").series:
            break
    got = [(s.value, dict(s.attributes)) for s in pipeline.family("example_temperature").series.values()]
    await sup.stop_all()
    assert runner.errors == 0
    assert got == [(7.5, {"instance": "db-2"})]


# --------------------------------------------------------------------------- refused at load


def test_a_module_importing_an_unknown_function_is_refused_at_load():
    with pytest.raises(PluginError, match=r"imports env\.system, which the WASM host does not provide"):
        WasmPlugin(wasm(DATA / "unknown_import.wat"), manifest(), Limits(), Grants())
    with pytest.raises(PluginError, match="env.system"):
        wasm_plugin_factory(wasm(DATA / "unknown_import.wat"), manifest(), Limits(), Grants())


def test_a_module_without_its_types_exports_is_refused_at_load():
    with pytest.raises(PluginError, match="does not export process_alert"):
        WasmPlugin(wasm(EXAMPLE), manifest(PluginType.ALERT_PROCESSOR), Limits(), Grants())
    with pytest.raises(PluginError, match="does not compile"):
        WasmPlugin(b"\0asm\1\0\0\0garbage", manifest(), Limits(), Grants())
    not_a_function = PROCESSOR.replace('(func (export "init") (param i32 i32) (result i32) (i32.const 0))',
                                       '(global (export "init") i32 (i32.const 0))')
    with pytest.raises(PluginError, match="the export init is not a function"):
        WasmPlugin(wasmtime.wat2wasm(not_a_function), manifest(PluginType.ALERT_PROCESSOR), Limits(), Grants())
    with pytest.raises(PluginError, match="does not run dashboard_component plugins"):
        WasmPlugin(wasm(EXAMPLE), manifest(PluginType.DASHBOARD_COMPONENT), Limits(), Grants())


# --------------------------------------------------------------------------- stopped within the timeout


async def test_an_endless_loop_is_stopped_at_its_timeout_and_the_loop_keeps_its_schedule():
    plugin = await collector("spin", {"collection_interval": 5, "timeout": 2})
    outcome, took, late = await ticking(plugin.collect_metrics())
    stopped(outcome, StopReason.TIMEOUT)
    assert 2 <= took <= 2 + SLACK, took
    assert late <= LATE, late
    with pytest.raises(PluginError, match="stopped"):  # the instance is gone; the supervisor makes a new one
        await plugin.collect_metrics()


async def test_an_endless_loop_over_its_cpu_budget_is_stopped_for_cpu():
    # 5 % of a core over 1 s: 0.05 CPU seconds, well before the 5 s timeout.
    limits = Limits(cpu_percent=5, cpu_window=1, cpu_burst_percent=5, cpu_burst_window=1)
    plugin = await collector("spin", {"collection_interval": 10, "timeout": 5}, limits)
    outcome, took, late = await ticking(plugin.collect_metrics())
    stopped(outcome, StopReason.CPU_LIMIT)
    assert took <= 5.5, took
    assert late <= LATE, late


async def test_a_memory_grower_is_stopped_at_its_memory_limit():
    plugin = await collector("grow", {"collection_interval": 1, "timeout": 1}, Limits(memory_mb=8, cpu_percent=1000,
                                                                                      cpu_burst_percent=1000))
    outcome, took, late = await ticking(plugin.collect_metrics())
    assert "8 MiB" in stopped(outcome, StopReason.MEMORY_LIMIT).detail
    assert took <= 1 + SLACK, took
    assert late <= LATE, late


async def test_a_trap_is_a_crash_with_its_message():
    plugin = await collector("crash", {"collection_interval": 1})
    outcome, _, _ = await ticking(plugin.collect_metrics())
    assert "divide by zero" in stopped(outcome, StopReason.CRASHED).detail


# --------------------------------------------------------------------------- network


class SlowServer(http.server.ThreadingHTTPServer):
    """A loopback server answering each GET after ``delay`` s; counts requests at once."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        self.delay, self.open, self.most, self.lock = delay, 0, 0, threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with server.lock:
                    server.open += 1
                    server.most = max(server.most, server.open)
                time.sleep(server.delay)
                with server.lock:
                    server.open -= 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away at its deadline


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    server = SlowServer(1.0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def values(metrics: Any, name: str) -> list[float]:
    return [m.value for m in metrics if m.name == name]


async def test_an_eleventh_connection_is_refused(slow_server, caplog):
    port = slow_server.server_address[1]
    plugin = await collector("fetch", {"url": f"http://127.0.0.1:{port}/slow", "count": 11, "collection_interval": 3},
                             grants=Grants(hosts=[f"127.0.0.1:{port}"]))
    with caplog.at_level(logging.WARNING, "bridge.wasmhost"):
        outcome, took, late = await ticking(plugin.collect_metrics())
    assert not isinstance(outcome, Exception), outcome
    assert values(outcome, "fetch_result") == [*map(float, range(10)), float(ERR_CONNECTIONS)]
    assert values(outcome, "fetch_status") == [200.0] * 10
    assert slow_server.most == 10
    assert plugin.counters["refused_connections"] == 1
    assert "10 connections are open" in caplog.text
    assert took <= 3.3, took
    assert late <= LATE, late


async def test_a_host_not_granted_is_refused(slow_server, caplog):
    port = slow_server.server_address[1]
    plugin = await collector("fetch", {"url": f"http://127.0.0.1:{port}/", "collection_interval": 3},
                             grants=Grants(hosts=["127.0.0.1:1"]))  # another port
    with caplog.at_level(logging.WARNING, "bridge.wasmhost"):
        outcome, took, _ = await ticking(plugin.collect_metrics())
    assert values(outcome, "fetch_result") == [float(ERR_NOT_GRANTED)]
    assert slow_server.most == 0
    assert plugin.counters["refused_hosts"] == 1
    assert f"127.0.0.1:{port} refused: the host is not granted" in caplog.text
    assert took <= 3.3, took


async def test_a_fetch_past_the_deadline_stops_the_call_at_its_timeout():
    server = SlowServer(3.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        plugin = await collector("fetch", {"url": f"http://127.0.0.1:{port}/", "collection_interval": 2, "timeout": 1},
                                 grants=Grants(hosts=["127.0.0.1"]))
        outcome, took, late = await ticking(plugin.collect_metrics())
    finally:
        server.shutdown()
        server.server_close()
    # the host's wait ended at the deadline, and the guest was interrupted when it went on
    stopped(outcome, StopReason.TIMEOUT)
    assert 1 <= took <= 1.1, took
    assert late <= LATE, late


# --------------------------------------------------------------------------- files

EBADF, ENOTCAPABLE, EPERM = 8, 76, 63


async def test_a_file_write_without_a_granted_directory_is_refused(tmp_path):
    plugin = await collector("wasi_write", {"collection_interval": 1})
    metrics = await plugin.collect_metrics()
    assert [(m.name, m.value) for m in metrics] == [("open_errno", EBADF), ("open_errno", EBADF)]  # no fd 3 at all
    assert list(tmp_path.iterdir()) == []


async def test_a_file_write_with_a_granted_directory_stays_inside_it(tmp_path):
    granted = tmp_path / "granted"
    granted.mkdir()
    plugin = await collector("wasi_write", {"collection_interval": 1}, grants=Grants(paths=[str(granted)]))
    metrics = await plugin.collect_metrics()
    got = {(m.name, m.attributes["file"]): m.value for m in metrics}
    assert got[("open_errno", "inside")] == 0 and got[("write_errno", "inside")] == 0
    assert got[("open_errno", "outside")] in (ENOTCAPABLE, EPERM) and ("write_errno", "outside") not in got
    assert (granted / "inside.txt").read_text() == "written by wasm\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["granted"]  # ../outside.txt was not written


# --------------------------------------------------------------------------- alert processors

PROCESSOR = """
(module
  (import "monbridge" "alert_set" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "team")    ;; 4
  (data (i32.const 32) "db")      ;; 2
  (data (i32.const 48) "page")    ;; 4
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "process_alert") (param i32 i32) (result i32)
    (drop (call $set (i32.const 0) (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 2)))
    (call $set (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 48) (i32.const 4))))
"""


async def test_an_alert_processor_changes_the_alert():
    plugin = WasmPlugin(wasmtime.wat2wasm(PROCESSOR), manifest(PluginType.ALERT_PROCESSOR), Limits(), Grants())
    assert isinstance(plugin, WasmAlertProcessor)
    await plugin.initialize({})
    alert = Alert(id="a1", name="HighLoad", severity="warning", labels={"host": "h1"})
    out = await plugin.process_alert(alert)
    assert (out.severity, out.labels) == ("page", {"host": "h1", "team": "db"})
    assert (alert.severity, alert.labels) == ("warning", {"host": "h1"})  # the input is left as it was


# --------------------------------------------------------------------------- bounds


async def test_every_bad_argument_gets_its_error_code_and_the_log_is_rate_limited(caplog):
    plugin = await collector("hostile_args", {"answer": "x", "collection_interval": 1})
    with caplog.at_level(logging.INFO, "bridge.wasmhost"):
        metrics = await plugin.collect_metrics()
    assert [m.value for m in metrics] == [
        -1, -1, -3, -2, -2, -2, -2, -2, -3, -9, -1, -2, -2, -10, -10, -2,
        42, 0,  # the valid emit, and its answer
        *[0] * 20, *[-4] * 5,  # log lines beyond 20 in 10 s are dropped
        0,  # stdout written
    ]
    assert plugin.counters["dropped_logs"] == 5
    assert plugin.counters["rejected_calls"] == 16 + 5
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("WASM plugin monitoring.metrics.test: printed to stdout") == 20
    assert "WASM plugin monitoring.metrics.test output: printed to stdout" in lines


async def test_metrics_beyond_the_bound_of_a_collection_are_dropped_and_counted(caplog):
    plugin = WasmPlugin(wasm(DATA / "series.wat"), manifest(), Limits(), Grants(), WasmBounds(max_metrics=5))
    await plugin.initialize({"count": 8, "collection_interval": 1})
    with caplog.at_level(logging.WARNING, "bridge.wasmhost"):
        metrics = await plugin.collect_metrics()
    assert [(m.value, dict(m.attributes)) for m in metrics] == [(8.0 + i, {"id": str(i)}) for i in range(5)]
    assert plugin.counters["dropped_metrics"] == 3  # the batch's records beyond the bound
    assert "more than 5 metrics in one collection" in caplog.text


async def test_ten_thousand_series_arrive_with_fresh_values_each_round():
    plugin = await collector("series", {"count": 10000, "collection_interval": 15})
    for round_ in (1, 2):
        metrics = await plugin.collect_metrics()
        assert len(metrics) == 10000
        assert all(m.value == round_ * 10000 + i and m.attributes == {"id": str(i)} for i, m in enumerate(metrics))


async def test_a_module_declaring_more_memory_than_its_limit_is_stopped_at_initialize():
    big = wasmtime.wat2wasm(PROCESSOR.replace('(memory (export "memory") 1)', '(memory (export "memory") 200)'))
    plugin = WasmPlugin(big, manifest(PluginType.ALERT_PROCESSOR), Limits(memory_mb=8), Grants())
    with pytest.raises(LimitExceeded) as e:
        await plugin.initialize({})
    assert e.value.reason is StopReason.MEMORY_LIMIT and "exceeds memory limits" in e.value.detail


def test_the_abi_version_is_checked():
    old = PROCESSOR.replace("(result i32) (i32.const 1))", "(result i32) (i32.const 7))", 1)
    plugin = WasmPlugin(wasmtime.wat2wasm(old), manifest(PluginType.ALERT_PROCESSOR), Limits(), Grants())
    with pytest.raises(PluginError, match="ABI version 7; this host runs version 1"):
        asyncio.run(plugin.initialize({}))


RAISER = """
(module
  (import "monbridge" "raise_alert" (func $raise (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Derived")               ;; 7
  (data (i32.const 32) "info")                  ;; 4
  (data (i32.const 48) "source\\00wasm\\00")      ;; 12
  (data (i32.const 64) "summary\\00seen\\00")     ;; 13
  (global $raised (mut i32) (i32.const 0))
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "process_alert") (param i32 i32) (result i32)
    (if (global.get $raised) (then (return (i32.const 0))))
    (global.set $raised (i32.const 1))
    (call $raise (i32.const 16) (i32.const 7) (i32.const 32) (i32.const 4)
                 (i32.const 48) (i32.const 12) (i32.const 64) (i32.const 13))))
"""


async def test_an_alert_processor_raises_alerts_into_the_alert_engine(tmp_path):
    from tests.unit.alerting_helpers import EngineUnderTest, make_alert

    plugin = WasmPlugin(wasmtime.wat2wasm(RAISER), manifest(PluginType.ALERT_PROCESSOR, "raiser"), Limits(), Grants())
    await plugin.initialize({})
    t = EngineUnderTest(tmp_path, [("monitoring.alerts.raiser", plugin)])
    await t.engine.start()
    try:
        t.engine.fire(make_alert("HighLoad", host="h1"), "test")
        for _ in range(3):
            await t.engine.drain()
        alerts = {a.name: a for a in t.engine.store.active_alerts()}
    finally:
        await t.engine.stop()
    assert sorted(alerts) == ["Derived", "HighLoad"]
    derived = alerts["Derived"]
    assert (derived.severity, derived.labels["source"], derived.annotations) == ("info", "wasm", {"summary": "seen"})


START_LOOP = """
(module
  (memory (export "memory") 1)
  (func $forever (loop $again (br $again)))
  (start $forever)
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "collect") (result i32) (i32.const 0)))
"""


async def test_a_start_function_that_never_returns_is_stopped_at_initialize():
    plugin = WasmPlugin(wasmtime.wat2wasm(START_LOOP), manifest(), ROOMY, Grants())
    outcome, took, late = await ticking(plugin.initialize({"collection_interval": 5, "timeout": 2}))
    stopped(outcome, StopReason.TIMEOUT)
    assert 2 <= took <= 2 + SLACK, took
    assert late <= LATE, late


async def test_each_call_has_its_own_deadline_and_a_good_plugin_beside_them_keeps_delivering():
    long = await collector("spin", {"collection_interval": 5, "timeout": 2})
    short = await collector("spin", {"collection_interval": 5, "timeout": 1})
    good = WasmPlugin(wasm(EXAMPLE), manifest(name="example"), ROOMY, Grants())
    await good.initialize({"instance": "db-3", "base": 1, "collection_interval": 0.2})
    delivered: list[float] = []

    async def timed(aw: Awaitable[Any]) -> tuple[Any, float]:
        outcome, took, _ = await ticking(aw)
        return outcome, took

    async def good_rounds() -> None:
        while True:
            metrics = await good.collect_metrics()
            delivered.append(metrics[0].value)
            await asyncio.sleep(0.2)

    rounds = asyncio.create_task(good_rounds())
    (long_out, long_took), (short_out, short_took) = await asyncio.gather(timed(long.collect_metrics()),
                                                                          timed(short.collect_metrics()))
    rounds.cancel()
    stopped(long_out, StopReason.TIMEOUT)
    stopped(short_out, StopReason.TIMEOUT)
    assert 1 <= short_took <= 1 + SLACK, short_took
    assert 2 <= long_took <= 2 + SLACK, long_took
    assert delivered == [float(n) for n in range(1, len(delivered) + 1)] and len(delivered) >= 5


async def test_a_trickling_peer_is_cut_off_at_the_calls_deadline():
    """The peer sends its answer a byte every 0.1 s: the call is stopped at its deadline and the
    host closes the connection then (the peer's write fails), freeing the connection's slot."""
    closed: list[float] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                while True:
                    conn.sendall(b"x")
                    time.sleep(0.1)
            except OSError:
                closed.append(time.monotonic())

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    plugin = await collector("fetch", {"url": f"http://127.0.0.1:{port}/", "collection_interval": 2, "timeout": 1},
                             Limits(connections=1, cpu_percent=1000, cpu_burst_percent=1000),
                             Grants(hosts=[f"127.0.0.1:{port}"]))
    t0 = time.monotonic()
    outcome, took, _ = await ticking(plugin.collect_metrics())
    await asyncio.to_thread(thread.join, 5)
    listener.close()
    stopped(outcome, StopReason.TIMEOUT)
    assert 1 <= took <= 1.1, took
    assert closed and closed[0] - t0 <= 1.1 + 0.1, closed  # + the peer's own 0.1 s between writes
    assert plugin._slots is not None and plugin._slots.acquire(blocking=False)  # the one slot is free again


def test_importing_the_host_loads_no_wasmtime(tmp_path):
    from tests.unit.test_import_graph import found, loaded_after

    assert found(loaded_after("import bridge.wasmhost", tmp_path), ("wasmtime",)) == []


# --------------------------------------------------------------------------- integrations

ECHO = """
(module
  (import "monbridge" "emit_metrics" (func $emit_metrics (param i32 i32) (result i32)))
  (import "monbridge" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "monbridge" "raise_alert" (func $raise (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "Imported")   ;; 8
  (data (i32.const 32) "warning")    ;; 7
  (global $heap (mut i32) (i32.const 4096))
  (global $ptr (mut i32) (i32.const 0))
  (global $len (mut i32) (i32.const 0))
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  ;; keeps what it was given, hands it back at the next import
  (func (export "export_metrics") (param $p i32) (param $n i32) (result i32)
    (global.set $ptr (local.get $p))
    (global.set $len (local.get $n))
    (i32.const 0))
  (func (export "import_metrics") (result i32)
    (if (result i32) (i32.lt_s (call $emit_metrics (global.get $ptr) (global.get $len)) (i32.const 0))
      (then (i32.const 1)) (else (i32.const 0))))
  (func (export "export_alerts") (param $p i32) (param $n i32) (result i32)
    (call $log (i32.const 1) (local.get $p) (local.get $n)))
  (func (export "import_alerts") (result i32)
    (call $raise (i32.const 16) (i32.const 8) (i32.const 32) (i32.const 7)
                 (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))))
"""


async def test_an_integration_exports_and_imports_through_the_abi(caplog):
    from bridge.api import HistogramValue, Metric, MonitoringIntegrationPlugin

    plugin = WasmPlugin(wasmtime.wat2wasm(ECHO), manifest(PluginType.INTEGRATION, "echo"), Limits(), Grants())
    assert isinstance(plugin, MonitoringIntegrationPlugin)
    await plugin.initialize({"interval": 5})
    sent = [Metric("a.gauge", MetricKind.GAUGE, 1.5, attributes={"host": "h1", "n": 3, "up": True}),
            Metric("b_total", MetricKind.COUNTER, 7, attributes={}),
            Metric("c.depth", MetricKind.UP_DOWN_COUNTER, -2.0, attributes={"q": "ü"}),
            Metric("d.latency", MetricKind.HISTOGRAM, HistogramValue((1.0,), (1, 0), 0.5, 1))]
    await plugin.export_metrics(sent)
    back = await plugin.import_metrics()
    assert [(m.name, m.kind, m.value, dict(m.attributes)) for m in back] == [
        ("a.gauge", MetricKind.GAUGE, 1.5, {"host": "h1", "n": "3", "up": "True"}),
        ("b_total", MetricKind.COUNTER, 7.0, {}),
        ("c.depth", MetricKind.UP_DOWN_COUNTER, -2.0, {"q": "ü"}),
    ]
    assert plugin.counters["unexported_metrics"] == 1  # the histogram: not in ABI version 1
    [imported] = await plugin.import_alerts()
    assert (imported.name, imported.severity) == ("Imported", "warning")
    with caplog.at_level(logging.INFO, "bridge.wasmhost"):
        await plugin.export_alerts([Alert(id="a9", name="Disk", severity="critical", labels={"dev": "sda"})])
    assert '"id": "a9", "name": "Disk", "severity": "critical"' in caplog.text
    await plugin.shutdown(timeout=1)


async def test_the_plugin_thread_runs_below_the_event_loops_priority():
    import os

    plugin = await collector("crash", {"collection_interval": 1})
    assert plugin._executor is not None
    theirs = await asyncio.wrap_future(plugin._executor.submit(
        lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert theirs == min(ours + 10, 19) and theirs > ours


SLEEPER = """
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "collect") (result i32) (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))
"""


def test_a_module_that_would_sleep_in_the_host_or_imports_no_wasi_call_is_refused_at_load():
    with pytest.raises(PluginError, match=r"imports wasi_snapshot_preview1\.poll_oneoff, which the WASM host refuses: "
                                          r"it sleeps in the host"):
        WasmPlugin(wasmtime.wat2wasm(SLEEPER), manifest(), Limits(), Grants())
    unknown = SLEEPER.replace('"poll_oneoff"', '"proc_spawn"')
    with pytest.raises(PluginError, match=r"imports wasi_snapshot_preview1\.proc_spawn, which the WASM host does not"):
        WasmPlugin(wasmtime.wat2wasm(unknown), manifest(), Limits(), Grants())


async def test_shutdown_waits_for_a_call_given_up_on_and_drops_the_instance():
    plugin = await collector("spin", {"collection_interval": 5, "timeout": 1})
    call = asyncio.ensure_future(plugin.collect_metrics())
    await asyncio.sleep(0.2)
    call.cancel()  # as the supervisor gives up on a call at its timeout
    t0 = time.monotonic()
    await plugin.shutdown()
    assert time.monotonic() - t0 <= 1 + SLACK
    assert plugin._store is None and plugin._stopped == "timeout"
    with pytest.raises(PluginError, match=r"stopped \(timeout\)"):
        await plugin.collect_metrics()


async def test_cpu_spent_in_host_functions_counts_against_the_budget():
    """Decoding 20k records costs the host tens of ms of CPU while the guest burns little fuel:
    the thread CPU accounting after the call stops the plugin."""
    limits = Limits(cpu_percent=1, cpu_window=60, cpu_burst_percent=1, cpu_burst_window=2)  # 0.02 CPU s in 2 s
    plugin = WasmPlugin(wasm(DATA / "series.wat"), manifest(), limits, Grants(), WasmBounds(max_metrics=20000))
    await plugin.initialize({"count": 20000, "collection_interval": 10})
    with pytest.raises(LimitExceeded) as e:
        await plugin.collect_metrics()
    assert e.value.reason is StopReason.CPU_LIMIT and "CPU seconds in 2 s (at most 0.020)" in e.value.detail
