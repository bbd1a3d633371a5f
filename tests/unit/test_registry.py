"""The plugin registry: entry-point discovery, in-process registration, clear lookups."""

from __future__ import annotations

import pytest

from bridge import MetricCollectorPlugin, PluginType
from bridge.api import validate_plugin_id
from bridge.registry import PluginNotFoundError, PluginRegistry
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
