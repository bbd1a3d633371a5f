"""A reload that replaces a changed plugin keeps its series on view until the new instance's first
collection lands, fails, or a bound passes: ``/metrics`` has no gap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

import aiohttp
from prometheus_client.parser import text_string_to_metric_families as parse_text

from bridge import supervisor
from bridge.api import CollectorConfig, Metric, MetricKind
from bridge.config import parse_config
from bridge.pipeline import Pipeline
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from bridge.supervisor import SupervisorSettings
from tests.unit.plugins_for_tests import SteadyCollector


class SlowConfig(CollectorConfig):
    value: float = 1.0
    delay: float = 0.0  # seconds each collection takes
    fail: bool = False  # every collection raises
    other: bool = False  # reports another series than ``k=v``


class SlowCollector(SteadyCollector):
    """A gauge whose every collection takes ``delay`` seconds (as a remote query does)."""

    config_model: ClassVar[type[CollectorConfig]] = SlowConfig
    plugin_id = "monitoring.metrics.slow"

    async def initialize(self, config):  # type: ignore[no-untyped-def]
        self.cfg = self.parse_config(config)

    async def collect_metrics(self) -> Sequence[Metric]:
        await asyncio.sleep(self.cfg.delay)
        if self.cfg.fail:
            raise RuntimeError("the source is down")
        return [Metric("slow.value", MetricKind.GAUGE, self.cfg.value, "1", "a value",
                       {"k": "w" if self.cfg.other else "v"})]


def config(**kw: object) -> str:
    cfg = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in
                    {"collection_interval": 0.2, "timeout": 2, "value": 1.0, "delay": 0.0, **kw}.items())
    return f"""
server:
  listen: "127.0.0.1:0"
plugins:
  - plugin_id: monitoring.metrics.slow
    config: {{{cfg}}}
"""


async def started(text: str) -> tuple[Runtime, dict[str, str], str]:
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.slow", SlowCollector)
    holder = {"text": text}
    rt = Runtime(parse_config(text, "test.yaml", reg, env={}), reg,
                 reload_config=lambda: parse_config(holder["text"], "test.yaml", reg, env={}),
                 settings=SupervisorSettings(backoff_initial=0.05, max_failures=1))
    await rt.start()
    host, port = rt.server.bound  # type: ignore[misc]
    return rt, holder, f"http://{host}:{port}"


def values(text: str) -> dict[str, float]:
    fams = {f.name: f for f in parse_text(text)}
    fam = fams.get("slow_value_ratio")
    return {s.labels["k"]: s.value for s in fam.samples} if fam else {}


async def scrape_during_reload(url: str, rt: Runtime) -> list[dict[str, float]]:
    """Scrape ``/metrics`` back to back while a reload runs and for 1.5 s after it."""
    seen: list[dict[str, float]] = []
    async with aiohttp.ClientSession() as s:
        async def reload() -> tuple[bool, str]:
            return await rt.reload()

        task = asyncio.create_task(reload())
        loop = asyncio.get_running_loop()
        end: float | None = None
        while end is None or loop.time() < end:
            async with s.get(f"{url}/metrics") as r:
                seen.append(values(await r.text()))
            if task.done() and end is None:
                assert task.result()[0], task.result()
                end = loop.time() + 1.5
            await asyncio.sleep(0.01)
    return seen


async def wait_for(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out waiting"
        await asyncio.sleep(0.02)


async def test_a_changed_plugin_s_series_stay_on_view_until_its_successor_s_first_collection():
    rt, holder, url = await started(config(value=1.0, delay=0.5))
    try:
        await wait_for(lambda: rt.pipeline.family("slow.value") is not None and rt.supervisor.ready())
        holder["text"] = config(value=7.0, delay=0.5)
        seen = await scrape_during_reload(url, rt)
    finally:
        await rt.stop()
    # Every scrape shows the series: the old value until the new instance's first collection
    # (which takes 0.5 s) lands, then the new one, never nothing.
    assert len(seen) > 10
    assert all(v.get("v") in (1.0, 7.0) for v in seen), [v for v in seen if v.get("v") not in (1.0, 7.0)][:3]
    assert seen[0]["v"] == 1.0 and seen[-1]["v"] == 7.0
    # and once the new value shows, the old one never comes back
    first_new = next(i for i, v in enumerate(seen) if v["v"] == 7.0)
    assert all(v["v"] == 7.0 for v in seen[first_new:])


async def test_series_the_successor_does_not_report_expire_when_its_first_collection_lands():
    rt, holder, url = await started(config())
    try:
        await wait_for(lambda: rt.supervisor.ready())
        holder["text"] = config(other=True)
        seen = await scrape_during_reload(url, rt)
    finally:
        await rt.stop()
    assert all(v for v in seen)  # never empty
    assert seen[-1] == {"w": 1.0}


async def test_a_successor_whose_first_collection_fails_lets_the_old_series_go():
    rt, holder, url = await started(config())
    try:
        await wait_for(lambda: rt.supervisor.ready())
        holder["text"] = config(fail=True, delay=0.3)
        ok, msg = await rt.reload()
        assert ok, msg
        fam = rt.pipeline.family("slow.value")
        assert fam is not None and fam.series  # kept while the first collection runs
        runner = rt.supervisor.runners["monitoring.metrics.slow"]
        await wait_for(lambda: runner.errors > 0)
        assert not fam.series  # it failed: the old values are not news
        assert runner.handover is None
    finally:
        await rt.stop()


async def test_the_old_series_go_when_the_bound_passes_without_a_collection(monkeypatch):
    monkeypatch.setattr(supervisor, "HANDOVER_UNSCHEDULED_S", 0.3)
    rt, holder, url = await started(config())
    sup = rt.supervisor
    try:
        await wait_for(lambda: sup.ready())
        old = sup.runners.pop("monitoring.metrics.slow")
        held = await sup.stop(old, keep_series=True)
        fam = rt.pipeline.family("slow.value")
        assert held is not None and fam is not None and fam.series
        # A successor without a schedule (a push receiver's kind): no collection will replace them.
        new = rt._runner_for(rt.loaded, "monitoring.metrics.slow")
        new.interval = None
        assert await sup.start_staged(new)
        sup.adopt(new, held)
        assert fam.series and new.handover is held
        await wait_for(lambda: not fam.series)
        assert new.handover is None
    finally:
        await rt.stop()


def test_release_expires_only_what_was_not_reported_again():
    p = Pipeline()
    g = MetricKind.GAUGE
    p.record("a", [Metric("x", g, 1.0, attributes={"k": "1"}), Metric("x", g, 2.0, attributes={"k": "2"})])
    ingest = p.ingest("a", 300).part("push")
    ingest.push([Metric("y", g, 1.0, attributes={"k": "1"}, timestamp_ns=10),
                 Metric("y", g, 2.0, attributes={"k": "2"}, timestamp_ns=10)])
    held = p.retain("a")
    # Nothing reported since: all of it expires.
    assert p.release(p.retain("a")) == 4
    assert not p.family("x").series and not p.family("y").series  # type: ignore[union-attr]
    # Again, with a successor that reports part of it.
    p.record("a", [Metric("x", g, 1.0, attributes={"k": "1"}), Metric("x", g, 2.0, attributes={"k": "2"})])
    ingest.push([Metric("y", g, 1.0, attributes={"k": "1"}, timestamp_ns=10),
                 Metric("y", g, 2.0, attributes={"k": "2"}, timestamp_ns=10)])
    held = p.retain("a")
    p.record("a", [Metric("x", g, 5.0, attributes={"k": "1"})])  # k=2 expires here, as any record does
    ingest.push([Metric("y", g, 5.0, attributes={"k": "2"}, timestamp_ns=20)])
    assert p.release(held) == 1  # y{k=1}, not pushed again
    assert [s.key for s in p.family("x").series.values()] == [(("k", "1"),)]  # type: ignore[union-attr]
    assert [s.key for s in p.family("y").series.values()] == [(("k", "2"),)]  # type: ignore[union-attr]
