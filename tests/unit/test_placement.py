"""Where a configured plugin runs (``bridge.pluginhost.place``) and what the runtime makes of it."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import aiohttp
import pytest

from bridge.api import PluginType
from bridge.config import parse_config
from bridge.isolation import Grants, Isolation, Limits
from bridge.pluginhost import place
from bridge.registry import PluginRegistry, RegisteredPlugin
from bridge.runtime import Runtime
from tests.unit.isolation_plugins import MisbehavingCollector
from tests.unit.plugins_for_tests import SteadyCollector

C = PluginType.METRIC_COLLECTOR
LIMITS, GRANTS = Limits(memory_mb=80), Grants(hosts=["127.0.0.1"])
REF = "tests.unit.isolation_plugins:MisbehavingCollector"


def third_party() -> RegisteredPlugin:
    ep = EntryPoint("monitoring.metrics.misbehaving", REF, "monbridge.collectors")
    return RegisteredPlugin("monitoring.metrics.misbehaving", C, entry_point=ep)


def test_a_third_party_plugin_runs_in_a_worker_by_default():
    p = place(third_party(), None, LIMITS, GRANTS)
    assert (p.isolation, p.reference, p.limits, p.grants, p.note) == (Isolation.PROCESS, REF, LIMITS, GRANTS, "")
    assert place(third_party(), Isolation.IN_PROCESS, LIMITS, GRANTS).isolation is Isolation.IN_PROCESS


def test_a_builtin_plugin_runs_in_process_unless_told_otherwise():
    reg = PluginRegistry().discover()
    system = reg.entry("monitoring.metrics.system")
    assert place(system, None, LIMITS, GRANTS).isolation is Isolation.IN_PROCESS
    p = place(system, Isolation.PROCESS, LIMITS, GRANTS)
    assert (p.isolation, p.reference) == (Isolation.PROCESS, "collectors.system:SystemMetricsCollector")


def test_a_class_registered_in_process_runs_in_a_worker_only_when_importable():
    assert place(RegisteredPlugin("monitoring.metrics.m", C, factory=MisbehavingCollector), None,
                 LIMITS, GRANTS).isolation is Isolation.IN_PROCESS
    p = place(RegisteredPlugin("monitoring.metrics.m", C, factory=MisbehavingCollector), Isolation.PROCESS,
              LIMITS, GRANTS)
    assert (p.isolation, p.reference) == (Isolation.PROCESS, REF)

    class Local(SteadyCollector):
        pass

    for reg in (RegisteredPlugin("monitoring.metrics.m", C, factory=Local),
                RegisteredPlugin("monitoring.metrics.m", C, factory=SteadyCollector, instance=SteadyCollector())):
        p = place(reg, Isolation.PROCESS, LIMITS, GRANTS)
        assert p.isolation is Isolation.IN_PROCESS
        assert p.note == "registered in-process (not importable by a worker): runs in process"


def test_alert_processors_run_in_process_and_say_so():
    reg = PluginRegistry().discover()
    p = place(reg.entry("monitoring.alerts.dedup"), Isolation.PROCESS, LIMITS, GRANTS)
    assert p.isolation is Isolation.IN_PROCESS and p.note == "alert_processor plugins run in process"


async def test_the_runtime_places_each_plugin_as_its_entry_says():
    text = """
server: {listen: "127.0.0.1:0"}
plugins:
  - plugin_id: monitoring.metrics.steady
    isolation: process
    config: {collection_interval: 60}
  - plugin_id: monitoring.metrics.misbehaving
    isolation: process
    limits: {memory_mb: 80}
    config: {collection_interval: 60}
"""
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.steady", SteadyCollector())  # an instance: stays in process
    reg.register_plugin("monitoring.metrics.misbehaving", MisbehavingCollector)
    rt = Runtime(parse_config(text, "t.yaml", reg, env={}), reg)
    await rt.start()
    try:
        host, port = rt.server.bound
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/api/v1/plugins") as r:
            data = {p["plugin_id"]: p for p in (await r.json())["data"]}
    finally:
        await rt.stop()
    steady, worker = data["monitoring.metrics.steady"], data["monitoring.metrics.misbehaving"]
    assert steady["isolation"] == "in_process" and "not importable" in steady["isolation_note"]
    assert "worker_pid" not in steady
    assert worker["isolation"] == "process" and worker["isolation_note"] is None
    assert isinstance(worker["worker_pid"], int) and worker["version"] == "2.5"
    assert worker["state"] == "running" and worker["stop_reason"] is None
    assert worker["stops"] == {"memory_limit": 0, "cpu_limit": 0, "connection_limit": 0, "timeout": 0, "crashed": 0}
    assert rt.supervisor.runners["monitoring.metrics.misbehaving"].placement.limits.memory_mb == 80
    # How its sandbox (applied in the worker) and its limits (enforced from the agent) hold.
    assert {"fs", "exec", "net", "memory", "cpu", "connections", "timeout"} <= set(worker["mechanisms"])
    assert "80 MiB" in worker["mechanisms"]["memory"]


def test_isolation_wasm_for_a_python_plugin_is_refused_at_config_load(tmp_path):
    """Only a signed WASM package runs in the WASM host: a Python plugin asking for it is an error
    naming the entry's isolation, not a plugin that fails at start."""
    from bridge.config import ConfigError

    text = (f"packages: {{dir: '{tmp_path / 'p'}', trust: '{tmp_path / 't'}'}}\n"
            "plugins:\n  - plugin_id: monitoring.metrics.system\n    isolation: wasm\n")
    with pytest.raises(ConfigError, match=r"line 4: plugins\[0\]\.isolation: .*Python plugin: isolation wasm is for "
                                          r"signed WASM packages"):
        parse_config(text, "agent.yaml", PluginRegistry().discover())
