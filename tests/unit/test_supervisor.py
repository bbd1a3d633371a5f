"""The supervisor: own schedules, timeouts, isolation, restarts with backoff, lifecycle."""

from __future__ import annotations

import asyncio

import pytest

from bridge.api import ExportResult
from bridge.delivery import Backoff, ManualClock
from bridge.lifecycle import IllegalTransition, Lifecycle, PluginState
from bridge.pipeline import Pipeline
from bridge.supervisor import Supervisor, SupervisorSettings
from tests.unit.plugins_for_tests import FailingCollector, FunctionSink, HangingCollector, SteadyCollector, SteadyConfig


def add(sup, plugin, **cfg):
    parsed = SteadyConfig.model_validate(cfg)
    return sup.add(plugin.plugin_id, lambda: plugin, cfg, parsed)


def on(clock: ManualClock, *plugins: SteadyCollector) -> float:
    """Time ``plugins``' calls by ``clock``; the time now."""
    for p in plugins:
        p.clock = clock.monotonic
    return clock.monotonic()


def since(t0: float, times: list[float]) -> list[float]:
    return [round(t - t0, 9) for t in times]


async def test_hanging_plugin_does_not_delay_a_normal_one():
    clock = ManualClock()
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=1000), clock=clock)
    steady, hanging = SteadyCollector(), HangingCollector()
    t0 = on(clock, steady, hanging)
    r_steady = add(sup, steady, collection_interval=0.1)
    r_hang = add(sup, hanging, collection_interval=0.1, timeout=0.5)
    await sup.start_all()
    await clock.advance(1.25)
    await sup.stop_all()
    # The normal one kept its 100 ms schedule: 13 runs in 1.25 s, 100 ms apart.
    assert since(t0, steady.calls) == [round(0.1 * i, 9) for i in range(13)]
    # The hanging one was cut off by its timeout each time (at 0.5 s and 1 s), and that was recorded;
    # its next run kept the phase (the ticks that passed were skipped).
    assert since(t0, hanging.calls) == [0.0, 0.5, 1.0]
    assert r_hang.timeouts == 2 and r_hang.last_error == "collection timed out" and r_hang.missed_ticks == 8
    assert r_steady.errors == 0 and r_steady.missed_ticks == 0
    assert not sup.pipeline.family("steady.value").series  # its series went away when it stopped


async def test_failing_plugin_is_restarted_with_backoff():
    FailingCollector.instances.clear()
    clock = ManualClock()

    def failing() -> FailingCollector:
        p = FailingCollector()
        on(clock, p)
        return p

    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=2, backoff_initial=0.1, backoff_max=0.2), clock=clock)
    runner = sup.add("monitoring.metrics.failing", failing, {},
                     SteadyConfig.model_validate({"collection_interval": 0.05}))
    steady = SteadyCollector()
    t0 = on(clock, steady)
    add(sup, steady, collection_interval=0.05)
    await sup.start_all()
    await clock.advance(0.75)
    status = {s["plugin_id"]: s for s in sup.statuses()}
    await sup.stop_all()
    # Each instance failed twice, 50 ms apart (max_failures), then waited its restart's backoff:
    # 0.1 s, then 0.2 s (the cap), each less up to 20 % of jitter, before the next instance ran.
    runs = [since(t0, p.calls) for p in FailingCollector.instances if p.calls]
    assert len(runs) == runner.restarts + 1 >= 3
    assert all(len(r) == 2 and r[1] - r[0] == pytest.approx(0.05) for r in runs[:-1]), runs
    for attempt, (before, after) in enumerate(zip(runs, runs[1:], strict=False), start=1):
        nominal = Backoff(0.1, 0.2).nominal(attempt)
        assert min(nominal, 0.2 * 0.8) - 1e-9 <= after[0] - before[-1] <= min(nominal * 1.2, 0.2) + 1e-9, runs
    assert runner.restarts >= 2
    assert len(FailingCollector.instances) == runner.restarts + 1  # a fresh instance each restart
    assert FailingCollector.instances[0].events[-1] == "shutdown"
    assert "RuntimeError: backend said no" in status["monitoring.metrics.failing"]["last_error"]
    assert status["monitoring.metrics.steady"]["errors"] == 0
    assert since(t0, steady.calls) == [round(0.05 * i, 9) for i in range(16)]  # its own schedule throughout


async def test_initialize_failure_fails_then_restarts():
    class BadInit(SteadyCollector):
        attempts = 0

        async def initialize(self, config):
            BadInit.attempts += 1
            if BadInit.attempts < 3:
                raise ValueError("not yet")
            await super().initialize(config)

    clock = ManualClock()
    sup = Supervisor(Pipeline(), SupervisorSettings(backoff_initial=0.05, backoff_max=0.1), clock=clock)
    runner = sup.add("monitoring.metrics.badinit", BadInit, {}, SteadyConfig.model_validate({"collection_interval": 0.05}))
    await sup.start_all()
    assert runner.state is PluginState.FAILED and not sup.ready()
    # The restarts' waits: 50 ms, then 100 ms (the cap), each less up to 20 % of jitter.
    for attempt, (low, high) in enumerate([(0.05, 0.06), (0.08, 0.1)], start=1):
        [wait] = clock.pending()
        assert low - 1e-9 <= wait <= high + 1e-9 and runner.restarts == attempt - 1
        await clock.advance(wait - 0.001)
        assert runner.restarts == attempt - 1 and runner.state is PluginState.FAILED  # not before its wait
        await clock.advance(0.001)
    assert runner.state is PluginState.RUNNING and sup.ready()
    assert runner.restarts == 2
    await sup.stop_all()
    assert runner.state is PluginState.SHUT_DOWN


async def test_graceful_stop_runs_the_whole_lifecycle():
    clock = ManualClock()
    sup = Supervisor(Pipeline(), clock=clock)
    steady = SteadyCollector()
    runner = add(sup, steady, collection_interval=10)
    assert runner.state is PluginState.REGISTERED
    await sup.start_all()
    assert runner.state is PluginState.RUNNING
    await clock.advance(0.05)
    await sup.stop_all()
    assert steady.events == ["initialize", "start", "stop", "shutdown"]
    assert runner.state is PluginState.SHUT_DOWN


def test_illegal_transitions_are_refused():
    lc = Lifecycle("monitoring.metrics.x")
    with pytest.raises(IllegalTransition, match="cannot go from registered to running"):
        lc.to(PluginState.RUNNING)
    lc.to(PluginState.INITIALIZED)
    lc.to(PluginState.RUNNING)
    with pytest.raises(IllegalTransition):
        lc.to(PluginState.SHUT_DOWN)  # must stop first
    lc.to(PluginState.STOPPED)
    lc.to(PluginState.SHUT_DOWN)
    with pytest.raises(IllegalTransition, match="allowed: none"):
        lc.to(PluginState.INITIALIZED)


async def test_self_metrics_report_plugin_state():
    from bridge.exposition import render

    clock = ManualClock()
    sup = Supervisor(Pipeline(), clock=clock)
    add(sup, SteadyCollector(), collection_interval=10)
    await sup.start_all()
    await clock.advance(0.05)
    sup.refresh_self_metrics()
    body = render(sup.pipeline.families(), {}).decode()
    await sup.stop_all()
    assert 'monbridge_plugin_up{plugin_id="monitoring.metrics.steady",plugin_type="metric_collector"} 1' in body
    assert 'monbridge_plugin_runs_total{plugin_id="monitoring.metrics.steady",plugin_type="metric_collector",result="success"} 1' in body
    assert 'monbridge_series_dropped_total{reason="cardinality"} 0' in body
    assert "monbridge_plugin_run_duration_seconds{" in body


async def test_ready_after_the_first_run():
    clock = ManualClock()

    class Slow(SteadyCollector):
        async def collect_metrics(self):
            await clock.sleep(0.3)
            return await super().collect_metrics()

    sup = Supervisor(Pipeline(), clock=clock)
    runner = sup.add("monitoring.metrics.slow", Slow, {}, SteadyConfig.model_validate({"collection_interval": 10}))
    await sup.start_all()
    assert runner.state is PluginState.RUNNING and not sup.ready()
    await clock.advance(0.299)
    assert not sup.ready()  # its first run has not ended
    await clock.advance(0.001)
    assert sup.ready() and sup.pipeline.family("steady.value").series
    await sup.stop_all()


async def eventually(predicate, what: str, tries: int = 400, step: float = 0.025):
    """Poll ``predicate`` until it holds (a bound on waiting, not a timing assertion)."""
    for _ in range(tries):
        if predicate():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"never happened: {what}")


async def test_a_plugin_that_swallows_cancellation_is_timed_out_and_failed():
    from tests.unit.plugins_for_tests import SwallowingCollector

    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=2, backoff_initial=3600, cancel_grace=0.05))
    swallow, steady = SwallowingCollector(), SteadyCollector()
    r_swallow = add(sup, swallow, collection_interval=0.05, timeout=0.05)
    r_steady = add(sup, steady, collection_interval=0.05, timeout=30)
    await sup.start_all()
    try:
        await eventually(lambda: r_swallow.state is PluginState.FAILED, "the swallowing plugin failed")
        n = len(steady.calls)
        await eventually(lambda: len(steady.calls) >= n + 3, "the other plugin kept collecting")
        await sup.stop_all(timeout=1.0)
    finally:
        swallow.release.set()
    assert r_swallow.timeouts == 2 and r_swallow.last_error == "collection timed out"
    assert swallow.cancellations >= 2
    assert r_swallow.abandoned == 2  # both collections were left running, counted
    assert r_steady.errors == 0 and r_steady.state is PluginState.SHUT_DOWN
    sup.refresh_self_metrics()
    fam = sup.pipeline.family("monbridge.plugin.abandoned_tasks")
    assert {dict(s.attributes)["plugin_id"]: s.value for s in fam.series.values()}[r_swallow.plugin_id] == 2


async def test_stop_all_abandons_a_plugin_that_will_not_stop(caplog):
    from tests.unit.plugins_for_tests import StuckCollector

    sup = Supervisor(Pipeline(), SupervisorSettings(cancel_grace=0.05))
    stubborn, steady = StuckCollector(), SteadyCollector()
    r_stubborn = add(sup, stubborn, collection_interval=10)
    r_steady = add(sup, steady, collection_interval=10)
    await sup.start_all()
    await eventually(lambda: r_stubborn.runs == 1, "the first collection")  # the next is 10 s away
    try:
        await sup.stop_all(timeout=0.3)
    finally:
        stubborn.release.set()
    assert r_steady.state is PluginState.SHUT_DOWN
    assert r_stubborn.abandoned >= 1
    assert f"plugin {r_stubborn.plugin_id} did not stop within 0.3s" in caplog.text


async def test_restart_backoff_grows_until_a_run_succeeds():
    delays: list[float] = []

    async def record(d: float) -> None:
        delays.append(d)
        await asyncio.sleep(0)

    class FailsThenWorks(SteadyCollector):
        plugin_id = "monitoring.metrics.flaky"
        collections = 0

        async def collect_metrics(self):
            FailsThenWorks.collections += 1
            if FailsThenWorks.collections != 6:  # one success, the 6th, between failures
                raise RuntimeError("backend said no")
            return await super().collect_metrics()

    settings = SupervisorSettings(max_failures=1, backoff_initial=1.0, backoff_max=8.0)
    sup = Supervisor(Pipeline(), settings, sleep=record)
    schedule = SteadyConfig.model_validate({"collection_interval": 0.01, "timeout": 30})
    runner = sup.add(FailsThenWorks.plugin_id, FailsThenWorks, {}, schedule)
    await sup.start_all()
    # A restart is counted after its wait (and the failed instance's shutdown): wait for both.
    await eventually(lambda: len(delays) >= 9 and runner.restarts >= 9, "nine restarts")
    await sup.stop_all()
    # Every start succeeded; collections 1-5 failed, the 6th succeeded, 7-10 failed: the backoff
    # doubled from 1 s up to the 8 s cap (±20 % jitter), went back to 1 s only after the success.
    expected = [1, 2, 4, 8, 8, 1, 2, 4, 8]
    for d, e in zip(delays, expected, strict=False):
        assert 0.8 * e <= d <= 1.2 * e, (delays, expected)
    assert runner.restarts >= 9


async def test_a_failing_sink_is_its_own_state_not_the_plugins(caplog):
    import logging

    from bridge import IntegrationConfig, Metric, MetricKind, MonitoringIntegrationPlugin, PluginMetadata, PluginType

    class TwoSinks(MonitoringIntegrationPlugin):
        def __init__(self):
            self.good: list[int] = []
            self.bad_fails = True
            self.imports = 0

        def metadata(self):
            return PluginMetadata("monitoring.integration.twosinks", "two sinks", "1", "tests", "",
                                  PluginType.INTEGRATION)

        async def initialize(self, config):
            pass

        async def shutdown(self):
            pass

        async def import_metrics(self):
            self.imports += 1
            return [Metric("imported.value", MetricKind.GAUGE, 1.0)]

        async def import_alerts(self):
            return []

        async def export_alerts(self, alerts):
            pass

        async def export_metrics(self, metrics):
            raise AssertionError("the sinks are called, not export_metrics")

        async def good_sink(self, batch, timeout):
            self.good.append(len(batch.metrics()))
            return ExportResult.success()

        async def bad_sink(self, batch, timeout):
            if self.bad_fails:
                raise ConnectionRefusedError("backend down")
            return ExportResult.success()

        def export_sinks(self):
            return {"good": FunctionSink(self.good_sink), "bad": FunctionSink(self.bad_sink)}

    plugin = TwoSinks()
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=2))
    runner = sup.add("monitoring.integration.twosinks", lambda: plugin, {},
                     IntegrationConfig.model_validate({"interval": 0.02, "timeout": 30}))
    caplog.set_level(logging.INFO, logger="monbridge.supervisor")
    await sup.start_all()
    await eventually(lambda: runner.sinks.get("bad") is not None and runner.sinks["bad"].errors >= 6, "six failed exports")
    plugin.bad_fails = False
    await eventually(lambda: runner.sinks["bad"].ok, "the sink recovered")
    status = {s["name"]: s for s in runner.status()["sinks"]}
    sup.refresh_self_metrics()
    await sup.stop_all()
    assert runner.restarts == 0 and runner.errors == 0
    assert len(plugin.good) >= 6 and all(n > 0 for n in plugin.good)
    assert status["bad"]["state"] == "ok" and status["bad"]["errors"] >= 6
    assert "ConnectionRefusedError: backend down" in status["bad"]["last_error"]
    assert status["good"] == {**status["good"], "state": "ok", "errors": 0}
    assert caplog.text.count("sink bad is failing") == 1 and caplog.text.count("sink bad recovered") == 1
    exports = sup.pipeline.family("monbridge.plugin.sink.exports")
    by = {(dict(s.attributes)["sink"], dict(s.attributes)["result"]): s.value for s in exports.series.values()}
    assert by[("bad", "error")] >= 6 and by[("good", "error")] == 0 and by[("good", "success")] >= 6


async def test_a_plugin_raising_cancelled_error_is_a_failure_not_the_end_of_its_schedule():
    class RaisesCancelled(SteadyCollector):
        plugin_id = "monitoring.metrics.raises_cancelled"

        async def collect_metrics(self):
            self.calls.append(0.0)
            raise asyncio.CancelledError

    plugin = RaisesCancelled()
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=1000))
    runner = add(sup, plugin, collection_interval=0.02, timeout=30)
    await sup.start_all()
    await eventually(lambda: runner.errors >= 3, "three failed collections")
    assert not runner.task.done()  # its schedule goes on
    await sup.stop_all()
    assert "RuntimeError: the call ended cancelled" in runner.last_error


async def test_a_large_collection_is_built_with_the_cyclic_gc_paused():
    """A collector that reported a large batch builds the next one with the cyclic collector held
    off (its Metrics would otherwise trigger full collections over every held series), and the
    collector runs again afterwards; a small one never pauses it."""
    import gc

    from bridge.api import Metric, MetricKind
    from bridge.pipeline import GC_PAUSE_MIN_BATCH

    class Large(SteadyCollector):
        plugin_id = "monitoring.metrics.large"
        gc_during: list[bool] = []

        async def collect_metrics(self):
            self.gc_during.append(gc.isenabled())
            await asyncio.sleep(0)  # the pause holds across an await (the loop runs other tasks meanwhile)
            return [Metric("large.value", MetricKind.GAUGE, float(i), "1", "v", {"i": str(i)})
                    for i in range(GC_PAUSE_MIN_BATCH)]

    class Small(SteadyCollector):
        gc_during: list[bool] = []

        async def collect_metrics(self):
            self.gc_during.append(gc.isenabled())
            return await super().collect_metrics()

    assert gc.isenabled()
    sup = Supervisor(Pipeline(cardinality_limit=GC_PAUSE_MIN_BATCH))
    large, small = Large(), Small()
    r_large = add(sup, large, collection_interval=3600)
    r_small = add(sup, small, collection_interval=3600)
    await sup.start_all()
    try:
        for _ in range(3):
            assert await sup._once(r_large, 30.0)
            assert await sup._once(r_small, 30.0)
            assert gc.isenabled()
        assert len(sup.pipeline.family("large.value").series) == GC_PAUSE_MIN_BATCH
    finally:
        await sup.stop_all()
    # the scheduled first run (and one started before it ended) had no size to go by; every run
    # after a large one paused, and the collector ran again after each
    assert large.gc_during[0] is True and large.gc_during[-2:] == [False, False]
    assert all(small.gc_during) and len(small.gc_during) >= 3
    assert r_large.last_batch_size == GC_PAUSE_MIN_BATCH and r_small.last_batch_size == 1


async def test_plugin_transitions_and_self_metrics_call_the_hooks():
    """``on_change`` is called at every lifecycle transition of a plugin (a restart's too: the
    alert engine takes up a new instance then), and ``self_metrics_hooks`` after each record of
    the supervisor's own metrics."""
    FailingCollector.instances.clear()
    clock = ManualClock()
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=1, backoff_initial=0.1, backoff_max=0.1), clock=clock)
    states: list[str] = []
    recorded: list[int] = []
    sup.add("monitoring.metrics.failing", FailingCollector, {}, SteadyConfig.model_validate({"collection_interval": 0.05}))
    sup.on_change = lambda: states.append(sup.runners["monitoring.metrics.failing"].state.value)
    sup.self_metrics_hooks.append(lambda: recorded.append(len(sup.pipeline.snapshot())))
    await sup.start_all()
    await clock.advance(0.3)
    sup.refresh_self_metrics()
    await sup.stop_all()
    assert states[:2] == ["initialized", "running"]
    assert "failed" in states and states.count("running") >= 2  # failed, then running again (a new instance)
    assert states[-1] in ("stopped", "shut_down")
    assert recorded and recorded[0] > 0  # called after the supervisor's own metrics were recorded
