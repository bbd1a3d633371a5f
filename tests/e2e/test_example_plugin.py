"""A third-party plugin, installed as its own distribution, is found through its entry point.

``tests/e2e/example_plugin`` is the distribution ``monbridge-example-plugin``; .ci/test installs
it (``pip install ./tests/e2e/example_plugin``). Nothing here registers it by hand.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from bridge import CollectorConfig, MetricCollectorPlugin, MetricKind, PluginType

example = pytest.importorskip(
    "monbridge_example_plugin",
    reason="the example plugin is not installed: pip install ./tests/e2e/example_plugin (.ci/test does)",
)

PLUGIN_ID = "monitoring.metrics.example"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_config(path: Path, plugin_config: dict) -> Path:
    path.write_text(
        yaml.safe_dump({"plugins": [{"plugin_id": PLUGIN_ID, "enabled": True, "config": plugin_config}]}, sort_keys=False)
    )
    return path


def test_installed_with_its_entry_point():
    dist = metadata.distribution("monbridge-example-plugin")
    assert [r.split(";")[0].strip() for r in dist.requires or []] == ["monbridge"]
    eps = [ep for ep in metadata.entry_points(group="monbridge.collectors") if ep.name == PLUGIN_ID]
    assert [ep.value for ep in eps] == ["monbridge_example_plugin:ExampleCollector"]
    assert eps[0].load() is example.ExampleCollector


def test_the_plugin_itself():
    plugin = example.ExampleCollector()
    assert isinstance(plugin, MetricCollectorPlugin)
    meta = plugin.metadata()
    assert (meta.id, meta.plugin_type) == (PLUGIN_ID, PluginType.METRIC_COLLECTOR)
    assert issubclass(plugin.config_model, CollectorConfig)
    assert plugin.parse_config({}).value == 42.0
    with pytest.raises(ValueError):
        plugin.parse_config({"valu": 1})  # unknown keys are errors

    async def run() -> list:
        await plugin.initialize({"value": 7.5, "collection_interval": 5})
        await plugin.start()
        try:
            return list(await plugin.collect_metrics())
        finally:
            await plugin.stop()
            await plugin.shutdown()

    [metric] = asyncio.run(run())
    assert (metric.name, metric.kind, metric.unit, metric.value) == ("example.value", MetricKind.GAUGE, "1", 7.5)
    assert dict(metric.attributes) == {"source": "example"}


def test_registry_discovers_it():
    from bridge.registry import PluginRegistry

    registry = PluginRegistry()
    registry.discover()
    plugin = registry.get_plugin(PLUGIN_ID, PluginType.METRIC_COLLECTOR)
    assert isinstance(plugin, example.ExampleCollector), plugin


def test_cli_validate_finds_it_beside_builtins_and_checks_it_with_its_own_model(tmp_path):
    config = tmp_path / "monbridge.yaml"
    config.write_text(f"plugins:\n  - plugin_id: monitoring.metrics.system\n  - plugin_id: {PLUGIN_ID}\n"
                      "    config: {value: 7.5}\n")
    result = cli("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (2 enabled plugins" in result.stdout
    config.write_text(f"plugins:\n  - plugin_id: monitoring.metrics.system\n  - plugin_id: {PLUGIN_ID}\n"
                      "    config:\n      valu: 7.5\n")
    result = cli("validate", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "line 5: plugins[1].config.valu" in result.stderr, result.stderr
    assert "value" in result.stderr.split("plugins[1].config.valu", 1)[1], result.stderr  # did you mean


def test_cli_plugins_lists_it(tmp_path):
    result = cli("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert PLUGIN_ID in result.stdout, result.stdout


@pytest.mark.parametrize(("plugin_config", "expected"), [({}, "42"), ({"value": 7.5}, "7.5")])
def test_cli_test_runs_it(tmp_path, plugin_config, expected):
    config = write_config(tmp_path / "monbridge.yaml", plugin_config)
    result = cli("test", "--config", str(config), "--plugin", PLUGIN_ID, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [
        line
        for line in result.stdout.splitlines()
        if ("example.value" in line or "example_value" in line) and expected in line
    ]
    assert lines, f"no line with example.value and {expected}:\n{result.stdout}\n{result.stderr}"
