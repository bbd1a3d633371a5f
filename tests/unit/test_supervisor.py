"""The supervisor: own schedules, timeouts, isolation, restarts with backoff, lifecycle."""

from __future__ import annotations

import asyncio

import pytest

from bridge.lifecycle import IllegalTransition, Lifecycle, PluginState
from bridge.pipeline import Pipeline
from bridge.supervisor import Supervisor, SupervisorSettings
from tests.unit.plugins_for_tests import FailingCollector, HangingCollector, SteadyCollector, SteadyConfig


def add(sup, plugin, **cfg):
    parsed = SteadyConfig.model_validate(cfg)
    return sup.add(plugin.plugin_id, lambda: plugin, cfg, parsed)


async def test_hanging_plugin_does_not_delay_a_normal_one():
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=1000))
    steady, hanging = SteadyCollector(), HangingCollector()
    r_steady = add(sup, steady, collection_interval=0.1)
    r_hang = add(sup, hanging, collection_interval=0.1, timeout=0.5)
    await sup.start_all()
    await asyncio.sleep(1.25)
    await sup.stop_all()
    # The normal one kept its 100 ms schedule: ~13 runs in 1.25 s, evenly spaced.
    assert len(steady.calls) >= 11
    gaps = [b - a for a, b in zip(steady.calls, steady.calls[1:])]
    assert max(gaps) < 0.2, gaps
    # The hanging one was cut off by its timeout each time, and that was recorded.
    assert r_hang.timeouts >= 2 and r_hang.last_error == "collection timed out"
    assert r_steady.errors == 0 and r_steady.missed_ticks == 0
    assert not sup.pipeline.family("steady.value").series  # its series went away when it stopped


async def test_failing_plugin_is_restarted_with_backoff():
    FailingCollector.instances.clear()
    sup = Supervisor(Pipeline(), SupervisorSettings(max_failures=2, backoff_initial=0.1, backoff_max=0.2))
    runner = sup.add("monitoring.metrics.failing", FailingCollector, {},
                     SteadyConfig.model_validate({"collection_interval": 0.05}))
    steady = SteadyCollector()
    add(sup, steady, collection_interval=0.05)
    await sup.start_all()
    await asyncio.sleep(1.0)
    status = {s["plugin_id"]: s for s in sup.statuses()}
    await sup.stop_all()
    assert runner.restarts >= 2
    assert len(FailingCollector.instances) == runner.restarts + 1  # a fresh instance each restart
    assert FailingCollector.instances[0].events[-1] == "shutdown"
    assert "RuntimeError: backend said no" in status["monitoring.metrics.failing"]["last_error"]
    assert status["monitoring.metrics.steady"]["errors"] == 0
    assert len(steady.calls) >= 15


async def test_initialize_failure_fails_then_restarts():
    class BadInit(SteadyCollector):
        attempts = 0

        async def initialize(self, config):
            BadInit.attempts += 1
            if BadInit.attempts < 3:
                raise ValueError("not yet")
            await super().initialize(config)

    sup = Supervisor(Pipeline(), SupervisorSettings(backoff_initial=0.05, backoff_max=0.1))
    runner = sup.add("monitoring.metrics.badinit", BadInit, {}, SteadyConfig.model_validate({"collection_interval": 0.05}))
    await sup.start_all()
    assert runner.state is PluginState.FAILED and not sup.ready()
    for _ in range(50):
        await asyncio.sleep(0.05)
        if runner.state is PluginState.RUNNING:
            break
    assert runner.state is PluginState.RUNNING and sup.ready()
    assert runner.restarts == 2
    await sup.stop_all()
    assert runner.state is PluginState.SHUT_DOWN


async def test_graceful_stop_runs_the_whole_lifecycle():
    sup = Supervisor(Pipeline())
    steady = SteadyCollector()
    runner = add(sup, steady, collection_interval=10)
    assert runner.state is PluginState.REGISTERED
    await sup.start_all()
    assert runner.state is PluginState.RUNNING
    await asyncio.sleep(0.05)
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

    sup = Supervisor(Pipeline())
    add(sup, SteadyCollector(), collection_interval=10)
    await sup.start_all()
    await asyncio.sleep(0.05)
    sup.refresh_self_metrics()
    body = render(sup.pipeline.families(), {}).decode()
    await sup.stop_all()
    assert 'monbridge_plugin_up{plugin_id="monitoring.metrics.steady",plugin_type="metric_collector"} 1' in body
    assert 'monbridge_plugin_runs_total{plugin_id="monitoring.metrics.steady",plugin_type="metric_collector",result="success"} 1' in body
    assert 'monbridge_series_dropped_total{reason="cardinality"} 0' in body
    assert "monbridge_plugin_run_duration_seconds{" in body


async def test_ready_after_the_first_run():
    class Slow(SteadyCollector):
        async def collect_metrics(self):
            await asyncio.sleep(0.3)
            return await super().collect_metrics()

    sup = Supervisor(Pipeline())
    runner = sup.add("monitoring.metrics.slow", Slow, {}, SteadyConfig.model_validate({"collection_interval": 10}))
    await sup.start_all()
    assert runner.state is PluginState.RUNNING and not sup.ready()
    await asyncio.sleep(0.5)
    assert sup.ready() and sup.pipeline.family("steady.value").series
    await sup.stop_all()
