"""The export contract (``export(batch, timeout) -> ExportResult``, ``force_flush``, idempotent
``shutdown(timeout)``) as the supervisor drives it, and the pipeline's read-only batch."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from bridge import ExportResult, ExportStatus, IntegrationConfig, Metric, MetricKind
from bridge.api import HistogramValue, SummaryValue
from bridge.pipeline import Pipeline
from bridge.supervisor import Supervisor, SupervisorSettings
from tests.unit.plugins_for_tests import FunctionSink, SpecIntegration
from tests.unit.test_supervisor import eventually


def gauges(n: int = 3, value: float = 1.0) -> list[Metric]:
    return [Metric("test.value", MetricKind.GAUGE, value, "", "a value", {"k": f"v{i}"}) for i in range(n)]


# --------------------------------------------------------------------------- the contract


async def test_the_spec_adapter_hands_export_metrics_the_batch_as_metrics():
    p = Pipeline()
    p.record("src", gauges())
    plugin = SpecIntegration()
    batch = p.batch()
    result = await plugin.export(batch, 5.0)
    assert result is ExportResult.success() and result.ok
    (got,) = plugin.exported
    assert sorted((m.name, m.value, dict(m.attributes)["k"]) for m in got) == [
        ("test.value", 1.0, "v0"), ("test.value", 1.0, "v1"), ("test.value", 1.0, "v2")]
    assert plugin.export_sinks() == {"export": plugin}


async def test_an_exception_in_export_metrics_is_a_retryable_result_not_a_crash():
    p = Pipeline()
    p.record("src", gauges())
    plugin = SpecIntegration()
    plugin.fail = ConnectionRefusedError("backend down")
    result = await plugin.export(p.batch(), 5.0)
    assert result.status is ExportStatus.RETRYABLE and not result.ok
    assert result.reason == "ConnectionRefusedError: backend down"


def _integration(sup: Supervisor, plugin, interval: float = 0.02, timeout: float = 30):
    return sup.add(plugin.plugin_id, lambda: plugin, {},
                   IntegrationConfig.model_validate({"interval": interval, "timeout": timeout}))


async def test_a_spec_only_integration_runs_under_the_supervisor_and_its_failures_are_its_sinks():
    plugin = SpecIntegration()
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=2))
    sup.pipeline.record("src", gauges())
    runner = _integration(sup, plugin)
    await sup.start_all()
    await eventually(lambda: len(plugin.exported) >= 2, "two exports")
    plugin.fail = RuntimeError("no route")
    await eventually(lambda: runner.sinks["export"].errors >= 3, "three failed exports")
    state = runner.sinks["export"].status()
    await sup.stop_all()
    assert runner.restarts == 0 and runner.errors == 0  # the sink's failure is not the plugin's
    assert state["state"] == "failing" and state["last_status"] == "retryable" and state["retryable"] >= 3
    assert "RuntimeError: no route" in state["last_error"]
    assert any("test.value" == m.name for m in plugin.exported[0])
    assert plugin.shutdowns == 1  # the specification's shutdown(), without a timeout


class SinksIntegration(SpecIntegration):
    """An integration with the sinks it is given; its shutdown takes the timeout."""

    plugin_id = "monitoring.integration.sinks"

    def __init__(self, sinks) -> None:
        super().__init__()
        self.sinks = sinks
        self.shutdown_timeouts: list[float | None] = []

    def export_sinks(self):
        return self.sinks

    async def shutdown(self, timeout: float | None = None) -> None:
        self.shutdown_timeouts.append(timeout)


async def test_results_and_timeouts_land_in_each_sinks_state(caplog):
    seen_timeouts: list[float] = []

    async def ok(batch, timeout):
        seen_timeouts.append(timeout)
        return ExportResult.success()

    async def permanent(batch, timeout):
        return ExportResult.permanent("HTTP 400: out of order sample")

    async def retryable(batch, timeout):
        return ExportResult.retryable("HTTP 503", retry_after=2.0)

    async def hangs(batch, timeout):
        await asyncio.sleep(3600)

    async def not_a_result(batch, timeout):
        return None

    sinks = {n: FunctionSink(f) for n, f in (("ok", ok), ("permanent", permanent), ("retryable", retryable),
                                              ("hangs", hangs), ("bad", not_a_result))}
    plugin = SinksIntegration(sinks)
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=2))
    runner = _integration(sup, plugin, interval=0.05, timeout=0.2)
    caplog.set_level(logging.INFO, logger="monbridge.supervisor")
    await sup.start_all()
    await eventually(lambda: "hangs" in runner.sinks and runner.sinks["hangs"].timeouts >= 2, "two timed-out exports")
    sup.refresh_self_metrics()
    st = {s["name"]: s for s in runner.status()["sinks"]}
    await sup.stop_all()
    assert runner.restarts == 0
    assert st["ok"]["state"] == "ok" and st["ok"]["last_status"] == "success" and st["ok"]["errors"] == 0
    assert st["permanent"]["last_status"] == "permanent" and st["permanent"]["permanent"] >= 2
    assert st["permanent"]["last_error"] == "export failed (permanent): HTTP 400: out of order sample"
    assert st["retryable"]["last_status"] == "retryable" and st["retryable"]["retryable"] >= 2
    assert st["hangs"]["last_status"] == "timeout" and st["hangs"]["last_error"] == "export timed out"
    assert st["bad"]["last_status"] == "error" and "not an ExportResult" in st["bad"]["last_error"]
    assert seen_timeouts and all(0 < t <= 0.2 for t in seen_timeouts)  # the round's remaining time
    failures = sup.pipeline.family("monbridge.plugin.sink.failures")
    by = {(dict(s.attributes)["sink"], dict(s.attributes)["kind"]): s.value for s in failures.series.values()}
    assert by[("permanent", "permanent")] >= 2 and by[("retryable", "retryable")] >= 2
    assert by[("hangs", "timeout")] >= 2 and by[("bad", "exception")] >= 2 and by[("ok", "permanent")] == 0
    exports = sup.pipeline.family("monbridge.plugin.sink.exports")
    results = {(dict(s.attributes)["sink"], dict(s.attributes)["result"]): s.value for s in exports.series.values()}
    assert results[("permanent", "error")] >= 2 and results[("hangs", "timeout")] >= 2
    assert caplog.text.count("sink permanent is failing") == 1


async def test_a_graceful_stop_flushes_every_sink_then_shuts_down_once():
    async def ok(batch, timeout):
        return ExportResult.success()

    sinks = {"a": FunctionSink(ok), "b": FunctionSink(ok, flushed=False)}
    plugin = SinksIntegration(sinks)
    sup = Supervisor(Pipeline(), SupervisorSettings(call_timeout=7.0))
    runner = _integration(sup, plugin, interval=0.05)
    await sup.start_all()
    await eventually(lambda: runner.runs >= 1, "a round")
    await sup.stop_all()
    await runner.host.shutdown(1.0)  # a second shutdown of the same instance does nothing
    assert len(sinks["a"].flushes) == 1 and len(sinks["b"].flushes) == 1
    assert 0 < sinks["a"].flushes[0] <= 2.5
    assert plugin.shutdown_timeouts == [7.0]


async def test_a_restart_shuts_the_failed_instance_down_with_the_timeout():
    class FailsImport(SinksIntegration):
        async def import_metrics(self):
            raise RuntimeError("import broke")

    plugin = FailsImport({})
    sleeps: list[float] = []

    async def no_sleep(d: float) -> None:
        sleeps.append(d)
        await asyncio.sleep(0)

    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=1, call_timeout=3.0), sleep=no_sleep)
    runner = _integration(sup, plugin)
    await sup.start_all()
    await eventually(lambda: runner.restarts >= 1, "a restart")
    await sup.stop_all()
    assert plugin.shutdown_timeouts[0] == 3.0


# --------------------------------------------------------------------------- the batch


def _pipeline() -> Pipeline:
    p = Pipeline()
    p.record("col", gauges(3) + [Metric("test.ops", MetricKind.COUNTER, 7, "{op}", "ops", {"code": 200})])
    p.record("imp", [
        Metric("lat", MetricKind.HISTOGRAM, HistogramValue((0.5, 1.0), (1, 2, 1), 2.5, 4), "", "latency",
               {"job": "api"}, timestamp_ns=1_700_000_000_000_000_000, start_time_ns=1_600_000_000_000_000_000),
        Metric("rpc", MetricKind.SUMMARY, SummaryValue(((0.5, 0.1), (0.9, 0.3)), 3.0, 10.0), "", "rpc",
               {"job": "api"}, timestamp_ns=1_700_000_000_000_000_000, start_time_ns=1_600_000_000_000_000_000),
    ], prometheus_names=True)
    return p


def test_a_batch_is_read_only():
    b = _pipeline().batch()
    fam = b.families()[0]
    s = fam.series[0]
    with pytest.raises(AttributeError):
        b._families = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        fam.name = "other"
    with pytest.raises(AttributeError):
        fam.series = ()
    with pytest.raises(AttributeError):
        s.value = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.attributes["k"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        fam.series[0] = s  # type: ignore[index]
    with pytest.raises(AttributeError):
        s.prom.name = "x"  # type: ignore[misc]


def test_later_records_do_not_change_a_batch_already_taken():
    p = Pipeline()
    p.record("src", gauges(2, 1.0))
    b = p.batch()
    metrics_before = [(m.value, dict(m.attributes)["k"]) for m in b.metrics()]
    p.record("src", gauges(2, 5.0) + [Metric("test.other", MetricKind.GAUGE, 1.0)])
    p.record("src", gauges(1, 9.0))  # v1 expires
    assert [s.value for f in b.families() for s in f.series] == [1.0, 1.0]
    assert [f.name for f in b.families()] == ["test.value"]
    assert [(m.value, dict(m.attributes)["k"]) for m in b.metrics()] == metrics_before
    points = b.to_otel().resource_metrics[0].scope_metrics[0].metrics[0].data.data_points
    assert sorted(pt.value for pt in points) == [1.0, 1.0]
    now = p.batch()
    assert [s.value for f in now.families() for s in f.series] == [9.0]


def test_unchanged_families_are_reused_and_a_held_batch_is_shared():
    p = Pipeline()
    p.record("a", gauges(3))
    p.record("b", [Metric("other.value", MetricKind.GAUGE, 1.0)])
    b1 = p.batch()
    assert p.batch() is b1  # nothing changed while it is held: the same batch (and its caches)
    p.record("b", [Metric("other.value", MetricKind.GAUGE, 2.0)])
    b2 = p.batch()
    assert b2 is not b1
    f1 = {f.name: f for f in b1.families()}
    f2 = {f.name: f for f in b2.families()}
    assert f2["test.value"] is f1["test.value"]  # not copied again: nothing of it changed
    assert f2["other.value"] is not f1["other.value"]
    # A record that only brings new sample times is a change too (remote write sends them).
    p.record("a", gauges(3))
    assert p.batch().families()[1] is not f2["test.value"]


def test_an_emptied_family_does_not_keep_its_expired_series_through_its_last_snapshot():
    p = Pipeline()
    p.record("a", gauges(2))
    p.batch()
    assert p.family("test.value").frozen is not None
    p.record("a", [])  # every series of the family expires
    assert [f.name for f in p.batch().families()] == []
    assert p.family("test.value").frozen is None


def test_metrics_and_to_otel_are_built_once_and_shared_across_threads():
    b = _pipeline().batch()
    results: list[object] = []

    def take() -> None:
        results.append(b.to_otel())

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert b.to_otel() is results[0]
    m1, m2 = b.metrics(), b.metrics()
    assert m1 == m2 and m1 is not m2 and all(a is c for a, c in zip(m1, m2, strict=True))


def test_to_otel_is_built_from_the_snapshot():
    p = _pipeline()
    b = p.batch()
    (rm,) = b.to_otel().resource_metrics
    assert rm.resource is p.resource
    scopes = {sm.scope.name: {m.name: m for m in sm.metrics} for sm in rm.scope_metrics}
    assert set(scopes) == {"monbridge", "monbridge.preaggregated"}
    own = scopes["monbridge"]
    assert set(own) == {"test.value", "test.ops"}
    (ops,) = own["test.ops"].data.data_points
    assert own["test.ops"].data.is_monotonic and ops.value == 7 and dict(ops.attributes) == {"code": 200}
    first = p.family("test.ops").series[(("code", 200),)].first_ns
    assert ops.start_time_unix_nano == first  # a cumulative point without a start starts when first seen
    (lat,) = scopes["monbridge.preaggregated"]["lat"].data.data_points
    assert (list(lat.bucket_counts), list(lat.explicit_bounds), lat.count) == ([1, 2, 1], [0.5, 1.0], 4)
    assert (lat.start_time_unix_nano, lat.time_unix_nano) == (1_600_000_000_000_000_000, 1_700_000_000_000_000_000)
    (rpc,) = scopes["monbridge.preaggregated"]["rpc"].data.data_points
    assert list(rpc.quantile_values) == [(0.5, 0.1), (0.9, 0.3)]


def test_select_takes_match_selectors_on_the_prometheus_view():
    b = _pipeline().batch()

    def names(sel: list[str]) -> list[tuple[str, tuple]]:
        return [(f.name, tuple(s.prom.labels)) for f in b.select(sel).families() for s in f.series]

    assert names(["lat"]) == [("lat", (("job", "api"),))]
    assert names(["test_ops_total"]) == [("test.ops", (("code", "200"),))]  # the exposed name
    assert names(['{k=~"v[01]"}']) == [("test.value", (("k", "v0"),)), ("test.value", (("k", "v1"),))]
    assert names(['test_value{k!="v1"}', 'rpc{job="api"}']) == [
        ("rpc", (("job", "api"),)), ("test.value", (("k", "v0"),)), ("test.value", (("k", "v2"),))]
    assert names(['{job="nope"}']) == []
    for bad in ['{k=~".*"}', "lat{", '{k="unterminated}', '{k=~"("}', "", '{1k="x"}']:
        with pytest.raises(ValueError, match="selector"):
            b.select([bad])


def test_a_selected_part_of_a_family_is_rendered_as_that_part():
    from bridge.exposition import render

    p = _pipeline()
    full = render(p.batch().families()).decode()
    part = render(p.batch().select(['{k="v1"}']).families()).decode()
    assert 'test_value{k="v1"} 1.0' in part and 'k="v0"' not in part
    assert render(p.batch().families()).decode() == full  # the whole family's cached text is untouched
