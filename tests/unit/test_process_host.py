"""ProcessHost: a plugin in a worker process of its own (real worker processes, over a real socket pair)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from pathlib import Path

import pytest

from bridge.api import Alert, AlertState, ExportStatus, Metric, MetricKind, MonitoringIntegrationPlugin, PluginType
from bridge.isolation import Grants, Isolation, LimitExceeded, Limits, StopReason
from bridge.ledger import LEDGER
from bridge.pipeline import Pipeline
from bridge.pluginhost import Placement, ProcessHost, WorkerError
from bridge.wire import T_LEDGER, T_METRICS, encode_metrics, encode_value, frame, pack_id
from tests.unit.isolation_plugins import REF, all_kinds

COLLECTOR = PluginType.METRIC_COLLECTOR


def host(cls: str, ptype: PluginType = COLLECTOR, grants: Grants | None = None) -> ProcessHost:
    return ProcessHost(f"monitoring.metrics.{cls.lower()}", ptype,
                       Placement(Isolation.PROCESS, f"{REF}:{cls}", grants=grants or Grants()))


def gone(pid: int) -> bool:
    """The process has exited and been reaped (no /proc entry, or a zombie no longer ours)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


async def started(h: ProcessHost, config: dict | None = None) -> ProcessHost:
    await h.initialize(config or {}, 30.0)
    await h.start(5.0)
    return h


async def test_metrics_arrive_exactly_as_the_plugin_made_them():
    h = await started(host("AllKindsCollector"))
    try:
        got = await h.collect(10.0)
        assert got == all_kinds()
        assert [type(m.value) for m in got] == [type(m.value) for m in all_kinds()]
        assert h.pid != os.getpid() and h.info["version"] == "2.5"
        st = h.status()
        assert st["isolation"] == "process" and st["worker_pid"] == h.pid and st["worker_rss_bytes"] > 0
    finally:
        await h.shutdown(5.0)
    assert gone(h.pid) and h.proc.returncode == 0


async def test_a_blocking_collection_is_killed_at_its_timeout():
    h = await started(host("MisbehavingCollector"), {"sleep": 3600})
    pid = h.pid
    t0 = time.monotonic()
    with pytest.raises(LimitExceeded) as e:
        await h.collect(1.0)
    took = time.monotonic() - t0
    assert e.value.reason is StopReason.TIMEOUT and "collection did not end within 1s" in e.value.detail
    assert took <= 1.1, f"stopped after {took:.2f}s, beyond the timeout + 10 %"
    assert gone(pid) and h.dead.is_set()
    with pytest.raises(LimitExceeded):  # every later call says the same
        await h.collect(1.0)
    await h.shutdown(1.0)


async def test_a_spinning_collection_is_killed_at_its_timeout():
    h = await started(host("MisbehavingCollector"), {"spin": 3600})
    t0 = time.monotonic()
    with pytest.raises(LimitExceeded) as e:
        await h.collect(1.5)
    assert e.value.reason is StopReason.TIMEOUT
    assert time.monotonic() - t0 <= 1.65
    assert gone(h.pid)


async def test_a_worker_that_exits_has_crashed_with_its_exit_code():
    h = await started(host("MisbehavingCollector"), {"exit_code": 7})
    with pytest.raises(LimitExceeded) as e:
        await h.collect(10.0)
    assert e.value.reason is StopReason.CRASHED
    assert "exit code 7" in e.value.detail
    assert h.malformed_frames == 0


async def test_a_killed_worker_has_crashed_with_its_signal():
    h = await started(host("MisbehavingCollector"), {"sleep": 3600})
    call = asyncio.create_task(h.collect(30.0))
    await asyncio.sleep(0.2)
    os.kill(h.pid, 9)
    with pytest.raises(LimitExceeded) as e:
        await call
    assert e.value.reason is StopReason.CRASHED and "killed by SIGKILL" in e.value.detail


def _garbage() -> list[tuple[str, bytes, str]]:
    m = encode_metrics([Metric("x", MetricKind.GAUGE, 1.0, attributes={"a": "b"})])
    n_str, n_text = struct.unpack_from("=II", m)
    u_at = 24 + 4 * n_str + n_text  # the u32 stream: the family count, then the first family's name
    bad_index = bytearray(m)
    struct.pack_into("=I", bad_index, u_at + 4, 10_000)
    return [
        ("unknown type", frame(ord("Z"), b"junk"), "unknown message type 0x5a"),
        ("oversized", b"\xff\xff\xff\xff", "over the limit"),
        ("empty", b"\x00\x00\x00\x00", "empty frame"),
        ("unasked answer", frame(T_METRICS, pack_id(999), bytes(m)), "call 999, which is not waiting for one"),
        ("truncated metrics", frame(T_METRICS, pack_id(3), m[:-3]), "the f64 stream (1 entries) run past the end"),
        ("bad index", frame(T_METRICS, pack_id(3), bytes(bad_index)), "family 0: a string index is past the table"),
        ("negative loss", frame(T_LEDGER, pack_id(0), encode_value([["c", "r", -1]])), "ledger: entry 0 is not"),
        ("loss not a list", frame(T_LEDGER, pack_id(0), encode_value({"c": 1})), "ledger: not a list"),
        ("loss of a long name", frame(T_LEDGER, pack_id(0), encode_value([["c" * 201, "r", 1]])),
         "names of 1 to 200 characters"),
    ]


@pytest.mark.parametrize(("name", "data", "where"), _garbage(), ids=[g[0] for g in _garbage()])
async def test_a_worker_sending_garbage_has_crashed_saying_where(name, data, where, caplog):
    h = await started(host("MisbehavingCollector"), {"garbage": data.hex()})
    with pytest.raises(LimitExceeded) as e:
        await h.collect(20.0)
    assert e.value.reason is StopReason.CRASHED
    # Frames 1-3 answered the setup (call 0), initialize and start; the collection is call 3, frame 4.
    assert "malformed frame 4" in e.value.detail and where in e.value.detail, e.value.detail
    assert h.malformed_frames == 1
    assert gone(h.pid)
    assert any("malformed frame" in r.getMessage() for r in caplog.records)


async def test_what_a_worker_drops_is_counted_in_the_agents_ledger_for_its_plugin():
    h = await started(host("MisbehavingCollector"), {"drop": 3})
    before = LEDGER.total("misbehaving", "made_up", h.plugin_id)
    try:
        await h.collect(10.0)
        assert LEDGER.total("misbehaving", "made_up", h.plugin_id) - before == 3
        await h.collect(10.0)  # each collection's own drops, not the worker's total again
        assert LEDGER.total("misbehaving", "made_up", h.plugin_id) - before == 6
        assert LEDGER.of_plugin(h.plugin_id)["misbehaving"]["made_up"] >= 6
    finally:
        await h.shutdown(5.0)


async def test_a_plugin_error_is_the_plugins_not_a_crash():
    h = host("MisbehavingCollector")
    with pytest.raises(WorkerError, match="ValidationError"):
        await h.initialize({"spin": "not a number"}, 30.0)
    assert h.stopped is None and not gone(h.pid)  # the worker lives on; the supervisor decides
    await h.shutdown(2.0)
    assert gone(h.pid)


async def test_an_unimportable_reference_fails_the_start():
    h = ProcessHost("monitoring.metrics.nope", COLLECTOR, Placement(Isolation.PROCESS, "tests.unit.nothing_here:Nope"))
    with pytest.raises(WorkerError, match="ModuleNotFoundError"):
        await h.initialize({}, 30.0)
    await h.shutdown(1.0)


async def test_an_integration_exports_in_the_worker_and_imports_from_it(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    h = host("RecordingIntegration", PluginType.INTEGRATION, Grants(paths=[str(out)]))
    await started(h, {"out": str(out), "answer": "retryable", "imported": 4.5})
    try:
        assert h.sink_names() == ["export"]
        p = Pipeline()
        p.record("collector", [Metric("app.requests", MetricKind.COUNTER, 3.0, "", "", {"route": "/a"}, 10**18)])
        assert await h.import_round(p, 5.0) == 1
        batch = await h.export_batch(p)
        result = await h.export("export", batch, 5.0)
        assert (result.status, result.reason, result.retry_after) == (ExportStatus.RETRYABLE, "backend said 503", 2.5)
        assert await h.export("export", batch, 5.0)  # the same batch is not sent twice; exported again
        assert await h.force_flush("export", 2.0) is False
        got = json.loads((out / "export-1.json").read_text())
        assert got["pid"] == h.pid and got["timeout"] == 5.0
        assert got["resource"] == dict(batch.resource_attributes)
        rows = {r["name"]: r for r in got["rows"]}
        assert rows["app.requests"]["prom"] == "app_requests_total" and rows["app.requests"]["value"] == 3.0
        assert rows["app.requests"]["attributes"] == {"route": "/a"} and rows["app.requests"]["time_ns"] == 10**18
        imported = rows["recording_imported"]
        assert imported["native"] is True and imported["value"] == 4.5
        assert imported["attributes"] == {"pid": str(h.pid)}
        assert (out / "export-2.json").exists()
        # The alert engine's side of it: through the proxy, into the worker and back.
        proxy = h.alert_proxy(5.0)
        assert isinstance(proxy, MonitoringIntegrationPlugin)
        imported_alerts = await proxy.import_alerts()
        assert imported_alerts == [Alert("a1", "QueueStuck", "critical", AlertState.FIRING, {"queue": "a"},
                                         {"summary": "stuck"}, 9.0, 1_700_000_000.5, None, "fp-1")]
        await proxy.export_alerts([*imported_alerts, Alert("a2", "Gone", "info", AlertState.RESOLVED, {"x": "y"})])
        assert json.loads((out / "alerts.json").read_text()) == [["QueueStuck", "firing", {"queue": "a"}],
                                                                 ["Gone", "resolved", {"x": "y"}]]
    finally:
        await h.shutdown(5.0)
    assert gone(h.pid)


async def test_a_late_answer_to_a_call_given_up_on_is_dropped():
    h = await started(host("MisbehavingCollector"), {"sleep": 0.5})
    try:
        first = asyncio.create_task(h.collect(10.0))
        await asyncio.sleep(0.1)
        first.cancel()  # the caller gives up; the worker answers later
        got = await h.collect(10.0)
        assert [m.value for m in got] == [h.pid] and h.stopped is None and h.malformed_frames == 0
        assert h._late == {}  # the late answer came, and was dropped
    finally:
        await h.shutdown(5.0)


async def test_a_worker_over_its_memory_limit_is_stopped_for_it():
    pytest.importorskip("bridge.limits", reason="the limits' enforcement (bridge.limits) is not in this tree")
    h = ProcessHost("monitoring.metrics.leaky", COLLECTOR,
                    Placement(Isolation.PROCESS, f"{REF}:MisbehavingCollector", limits=Limits(memory_mb=60)))
    await started(h, {"leak_mb": 20})
    assert "memory" in h.mechanisms()
    with pytest.raises(LimitExceeded) as e:
        for _ in range(40):
            await h.collect(10.0)
            await asyncio.sleep(0.3)
    assert e.value.reason is StopReason.MEMORY_LIMIT, e.value
    assert h.stopped is e.value and gone(h.pid)  # a call fails with the stop once the worker has exited
