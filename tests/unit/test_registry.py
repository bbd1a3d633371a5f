"""The plugin registry: entry-point discovery, the built-in table, in-process registration, clear lookups."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from bridge import MetricCollectorPlugin, PluginType
from bridge.api import validate_plugin_id
from bridge.config import ConfigError, parse_config
from bridge.registry import BUILTIN_PLUGINS, PluginNotFoundError, PluginRegistry
from collectors.system import SystemMetricsCollector
from tests.unit.plugins_for_tests import SteadyCollector


def test_builtins_are_found_through_entry_points():
    reg = PluginRegistry().discover()
    assert "monitoring.metrics.system" in reg.get_plugin_ids_by_type(PluginType.METRIC_COLLECTOR)
    assert "monitoring.integration.otlp" in reg.get_plugin_ids_by_type("integration")
    plugin = reg.get_plugin("monitoring.metrics.system", MetricCollectorPlugin)
    assert isinstance(plugin, SystemMetricsCollector)
    assert plugin.metadata().id == "monitoring.metrics.system"
    assert reg.entry("monitoring.metrics.system").distribution == "monbridge"


def test_register_instance_as_the_spec_does():
    reg = PluginRegistry()
    inst = SteadyCollector()
    reg.register_plugin("monitoring.metrics.steady", inst)
    assert reg.get_plugin("monitoring.metrics.steady", PluginType.METRIC_COLLECTOR) is inst
    assert reg.get_plugin_ids_by_type("metric_collector") == ["monitoring.metrics.steady"]


def test_unknown_id_says_what_is_installed():
    reg = PluginRegistry().discover()
    with pytest.raises(PluginNotFoundError) as e:
        reg.get_plugin("monitoring.metrics.nope", PluginType.METRIC_COLLECTOR)
    msg = str(e.value)
    assert "'monitoring.metrics.nope' not found in entry point group 'monbridge.collectors'" in msg
    assert "monitoring.metrics.system" in msg
    with pytest.raises(PluginNotFoundError, match="integration plugin 'monitoring.metrics.system' not found"):
        reg.get_plugin("monitoring.metrics.system", PluginType.INTEGRATION)


@pytest.mark.parametrize("bad", ["system", "monitoring.system", "monitoring.widgets.x", "monitoring.metrics.Bad"])
def test_plugin_ids_follow_the_convention(bad):
    with pytest.raises(ValueError, match="monitoring.<kind>.<name>"):
        validate_plugin_id(bad)


def test_id_kind_must_match_type():
    reg = PluginRegistry()
    with pytest.raises(ValueError, match="does not match its type"):
        reg.register_plugin("monitoring.alerts.steady", SteadyCollector)


def _pyproject_entry_points() -> dict[str, tuple[str, str]]:
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    return {pid: (group, ref) for group, eps in project["entry-points"].items() for pid, ref in eps.items()}


def test_the_builtin_table_is_the_entry_points_of_monbridge():
    declared = _pyproject_entry_points()
    assert {pid: (ptype.entry_point_group, ref) for pid, (ptype, ref, _) in BUILTIN_PLUGINS.items()} == declared


@pytest.mark.parametrize("plugin_id", sorted(BUILTIN_PLUGINS))
def test_a_builtin_is_validated_with_its_plugins_own_model(plugin_id):
    reg = PluginRegistry().discover()
    entry = reg.entry(plugin_id)
    assert (entry.plugin_type, entry.distribution) == (BUILTIN_PLUGINS[plugin_id][0], "monbridge")
    model = entry.config_model()  # before the plugin class is loaded: from the table's module if it names one
    cls = entry.plugin_class()
    assert model is cls.config_model
    assert cls.plugin_type is entry.plugin_type
    assert entry.config_model() is model


@pytest.fixture
def entry_point_reads(monkeypatch):
    """The calls of importlib.metadata.entry_points (the real function, counted)."""
    calls: list[dict] = []
    real = importlib.metadata.entry_points

    def counted(**kw):
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", counted)
    return calls


def test_builtins_are_looked_up_and_validated_without_reading_entry_points(entry_point_reads, tmp_path):
    reg = PluginRegistry().discover()
    text = "plugins:\n" + "".join(f"  - plugin_id: {pid}\n" for pid in BUILTIN_PLUGINS)
    with pytest.raises(ConfigError) as e:  # some need config: their models say so
        parse_config(text, "built-ins.yaml", reg)
    assert "plugins[6].config.url: required key is missing" in str(e.value)
    assert "not found" not in str(e.value)
    valid = {"monitoring.metrics.system": {}, "monitoring.metrics.process": {}, "monitoring.alerts.grouping": {},
             "monitoring.integration.otlp": {"endpoint": "http://127.0.0.1:4318"},
             "monitoring.alerts.webhook": {"url": "http://127.0.0.1:5001/hook"}}
    loaded = parse_config(json.dumps({"plugins": [{"plugin_id": k, "config": v} for k, v in valid.items()],
                                      "alerting": {"state_dir": str(tmp_path)}}), "built-ins.json", reg)
    assert set(loaded.plugin_configs) == set(valid)
    assert entry_point_reads == []
    # an id that is not built in is looked for among the entry points, once
    with pytest.raises(PluginNotFoundError, match="monitoring.metrics.system"):
        reg.entry("monitoring.metrics.nope")
    with pytest.raises(PluginNotFoundError):
        reg.entry("monitoring.metrics.nope2")
    assert entry_point_reads == [{}]


def test_listing_the_plugins_reads_the_entry_points(entry_point_reads):
    reg = PluginRegistry().discover()
    assert "monitoring.metrics.system" in reg.get_plugin_ids_by_type(PluginType.METRIC_COLLECTOR)
    assert [e.plugin_id for e in reg.entries()] == sorted(e.plugin_id for e in reg.entries())
    assert entry_point_reads == [{}]


def test_an_in_process_registration_wins_over_a_builtin():
    reg = PluginRegistry()
    reg.register_plugin("monitoring.metrics.system", SteadyCollector)
    reg.discover()
    assert reg.entry("monitoring.metrics.system").plugin_class() is SteadyCollector
    assert reg.entry("monitoring.metrics.system").config_model() is SteadyCollector.config_model


def test_a_builtin_plugin_config_error_comes_from_its_model():
    reg = PluginRegistry().discover()
    with pytest.raises(ConfigError) as e:
        parse_config("plugins:\n  - plugin_id: monitoring.metrics.system\n    config: {interfaces: {exclud: [lo]}}\n",
                     "c.yaml", reg)
    assert "line 3" in str(e.value) and "plugins[0].config.interfaces.exclud" in str(e.value)
    assert "exclude" in str(e.value)  # did you mean
