"""Installed signed packages as plugins: registered from ``packages.dir`` when a config is loaded,
verified again each time, their entry's grants covering what their manifest requests, run by the
WASM host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import wasmtime

from bridge.config import ConfigError, parse_config
from bridge.package import TrustStore, generate_key, install_package, sign_package
from bridge.pipeline import Pipeline
from bridge.registry import PluginRegistry
from bridge.supervisor import Supervisor
from tests.unit.packages_for_tests import flip, manifest_bytes

ROOT = Path(__file__).resolve().parents[2]
PID = "monitoring.metrics.acme-queue"


@pytest.fixture
def agent(tmp_path):
    """An install directory holding the example WAT collector as a signed package, its trust store,
    and a config naming both."""
    key = generate_key("Acme Inc")
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "acme.pub").write_bytes(key.public_document())
    granted = tmp_path / "acme"
    granted.mkdir()
    module = wasmtime.wat2wasm((ROOT / "collectors/wasm/example_collector.wat").read_text())
    package = tmp_path / "acme.mbpkg"
    package.write_bytes(sign_package(manifest_bytes(permissions={"hosts": ["queue.internal:8080"],
                                                                 "paths": [str(granted)]}), module, key))
    _, installed = install_package(package, TrustStore.load(trust), tmp_path / "plugins")

    def config(entry: str) -> str:
        return (f"packages: {{dir: '{tmp_path / 'plugins'}', trust: '{trust}'}}\n"
                f"plugins:\n  - plugin_id: {PID}\n{entry}")

    return config, granted, installed


def test_an_installed_package_runs_as_a_plugin_in_the_wasm_host(agent):
    config, granted, _ = agent
    registry = PluginRegistry().discover()
    loaded = parse_config(config(f"    grants: {{hosts: [queue.internal], paths: ['{granted}']}}\n"
                                 "    config: {instance: q1}\n"), "agent.yaml", registry)
    entry = registry.entry(PID)
    assert entry.package is not None and entry.version == "1.2.0" and entry.distribution.startswith("package ")
    plugin = registry.new_instance(PID)
    assert type(plugin).__name__ == "WasmCollector" and plugin.metadata().author == "Acme Inc"

    async def collect() -> list[str]:
        from bridge.isolation import Grants, Limits
        from bridge.pluginhost import place

        pipeline = Pipeline()
        sup = Supervisor(pipeline)
        placement = place(entry, None, Limits(), Grants(hosts=["queue.internal"], paths=[str(granted)]))
        runner = sup.add(PID, registry.factory(PID), loaded.raw_plugin_configs[PID], loaded.plugin_configs[PID],
                         placement, entry.plugin_type)
        assert await sup.collect_once(runner), runner.last_error
        status = next(s for s in sup.statuses() if s["plugin_id"] == PID)
        assert (status["isolation"], status["version"]) == ("wasm", "1.2.0"), status
        names = sorted({m.name for m in pipeline.snapshot()})
        await sup.stop_all()
        return names

    assert asyncio.run(collect()) == ["example_collections", "example_temperature"]


def test_permissions_beyond_the_entrys_grants_are_refused_at_config_load(agent):
    config, granted, installed = agent
    with pytest.raises(ConfigError) as e:
        parse_config(config("    grants: {hosts: ['queue.internal:9090']}\n"), "agent.yaml", PluginRegistry().discover())
    assert e.value.issues == [f"line 4: plugins[0].grants: the package {installed} requests permissions not granted "
                              f"here: path {granted}, host queue.internal:8080"]
    with pytest.raises(ConfigError) as e:
        parse_config(config(""), "agent.yaml", PluginRegistry().discover())
    assert "plugins[0].grants: the package" in str(e.value)


def test_a_package_runs_in_the_wasm_host_only(agent):
    config, granted, _ = agent
    with pytest.raises(ConfigError, match=r"line 4: plugins\[0\]\.isolation: .* is a signed WASM package"):
        parse_config(config(f"    isolation: process\n    grants: {{hosts: [queue.internal], paths: ['{granted}']}}\n"),
                     "agent.yaml", PluginRegistry().discover())


def test_a_package_changed_after_installation_is_refused_when_the_config_is_loaded(agent, caplog):
    config, granted, installed = agent
    installed.write_bytes(flip(installed.read_bytes(), installed.stat().st_size // 2))
    with pytest.raises(ConfigError) as e:
        parse_config(config(f"    grants: {{hosts: [queue.internal], paths: ['{granted}']}}\n"), "agent.yaml",
                     PluginRegistry().discover())
    assert f"plugin {PID!r} not found" in str(e.value)
    assert f"(its package was refused: {installed}: " in str(e.value)
    assert "plugin package refused" in caplog.text


def test_a_package_whose_dependencies_are_not_installed_is_refused(tmp_path):
    key = generate_key("Acme Inc")
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "acme.pub").write_bytes(key.public_document())
    module = wasmtime.wat2wasm((ROOT / "collectors/wasm/example_collector.wat").read_text())
    deps = [{"id": "monitoring.metrics.system", "version": "<0.0.1"}, {"id": "monitoring.metrics.absent", "version": "*"}]
    (tmp_path / "p.mbpkg").write_bytes(sign_package(manifest_bytes(dependencies=deps, permissions={}), module, key))
    install_package(tmp_path / "p.mbpkg", TrustStore.load(tmp_path / "trust"), tmp_path / "plugins")
    config = (f"packages: {{dir: '{tmp_path / 'plugins'}', trust: '{tmp_path / 'trust'}'}}\n"
              f"plugins:\n  - plugin_id: {PID}\n")
    with pytest.raises(ConfigError) as e:
        parse_config(config, "agent.yaml", PluginRegistry().discover())
    from bridge import __version__

    assert e.value.issues == [
        f"line 3: plugins[0].plugin_id: {PID} depends on monitoring.metrics.system <0.0.1: {__version__} is installed",
        f"line 3: plugins[0].plugin_id: {PID} depends on monitoring.metrics.absent *: not installed"]


def test_a_package_removed_is_gone_at_the_next_load(agent):
    config, granted, installed = agent
    registry = PluginRegistry().discover()
    text = config(f"    grants: {{hosts: [queue.internal], paths: ['{granted}']}}\n")
    parse_config(text, "agent.yaml", registry)
    installed.unlink()
    with pytest.raises(ConfigError, match=f"plugin {PID!r} not found"):
        parse_config(text, "agent.yaml", registry)


def test_a_package_is_placed_in_the_wasm_host(agent):
    from bridge.isolation import Grants, Isolation, Limits
    from bridge.pluginhost import place

    config, granted, _ = agent
    registry = PluginRegistry().discover()
    grants = Grants(hosts=["queue.internal"], paths=[str(granted)])
    parse_config(config(f"    isolation: wasm\n    grants: {{hosts: [queue.internal], paths: ['{granted}']}}\n"),
                 "agent.yaml", registry)
    for isolation in (None, Isolation.WASM):
        placement = place(registry.entry(PID), isolation, Limits(memory_mb=20), grants)
        assert placement.isolation is Isolation.WASM and "WASM host" in placement.note
        assert placement.limits.memory_mb == 20 and placement.grants == grants
