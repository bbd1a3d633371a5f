"""Details of the ``monbridge`` command: connection options after the ``alerts`` subcommand,
amtool's durations, each plugin's distribution, ``config default``, the interval in log lines."""

from __future__ import annotations

import asyncio
import logging

import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import default_config_text
from bridge.pipeline import Pipeline
from bridge.supervisor import Supervisor
from tests.unit.alerting_helpers import Recorder, make_alert
from tests.unit.plugins_for_tests import SteadyCollector, SteadyConfig
from tests.unit.test_alert_api import TOKEN, start


async def test_alerts_connection_options_go_after_the_subcommand_too(tmp_path):
    rt, url = await start(tmp_path)
    runner = CliRunner()

    def cli(*args):
        return runner.invoke(main, ["alerts", *args])

    try:
        a = rt.alerts.fire(make_alert(host="h1"), "test")
        out = await asyncio.to_thread(cli, "list", "--url", url, "--bearer-token", TOKEN)
        assert out.exit_code == 0, out.output
        assert a.id in out.output and "host=h1" in out.output
        out = await asyncio.to_thread(cli, "ack", a.id, "--url", url, "--bearer-token", TOKEN)
        assert out.exit_code == 0, out.output
        assert out.output.strip() == f"{a.id} HighCPU: acknowledged"
        # Before and after: the one after the subcommand wins; the token given before still counts.
        out = await asyncio.to_thread(cli, "--url", "http://127.0.0.1:1", "--bearer-token", TOKEN, "resolve", a.id,
                                      "--url", url)
        assert out.exit_code == 0, out.output
        assert out.output.strip() == f"{a.id} HighCPU: resolved"
        out = await asyncio.to_thread(cli, "history", "--url", url)  # no token: the server's auth refuses
        assert out.exit_code == 1 and "HTTP 401" in out.output
        out = await asyncio.to_thread(cli, "silence", "alertname=HighCPU", "--duration", "1h30m", "--url", url,
                                      "--bearer-token", TOKEN)
        assert out.exit_code == 0, out.output
        silence_id = out.output.strip()
        out = await asyncio.to_thread(cli, "silence", "--list", "--url", url, "--bearer-token", TOKEN)
        assert out.exit_code == 0 and silence_id in out.output and 'alertname="HighCPU"' in out.output
    finally:
        await rt.stop()


@pytest.mark.parametrize("text", ["2", "1.5h", "90", "h", "1h 30m", "30m1h", "-5m", "1hour", ""])
def test_silence_duration_needs_amtools_units(text):
    out = CliRunner().invoke(main, ["alerts", "silence", "alertname=X", "--duration", text,
                                    "--url", "http://127.0.0.1:1"])
    assert out.exit_code == 2, out.output  # refused before anything is sent (the URL answers nothing)
    assert "--duration" in out.output and "expected a duration with its unit" in out.output


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("1y", 31536000),
    ("1500ms", 1.5), ("1d2h3m4s", 93784),
])
def test_silence_durations_as_amtool_reads_them(text, seconds):
    from bridge.alerting.cli import _duration

    assert _duration(text) == pytest.approx(seconds)


def test_zero_duration_is_refused():
    out = CliRunner().invoke(main, ["alerts", "silence", "alertname=X", "--duration", "0s"])
    assert out.exit_code == 2 and "must be positive" in out.output


def test_plugins_shows_each_plugins_distribution():
    out = CliRunner().invoke(main, ["plugins"])
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line.split() for line in out.output.splitlines() if line.startswith("  monitoring.")}
    assert lines["monitoring.metrics.system"][2] == "monbridge"
    assert lines["monitoring.alerts.jira"][2] == "monbridge"
    from importlib import metadata

    eps = {ep.name: ep for ep in metadata.entry_points(group="monbridge.collectors")}
    for pid, ep in eps.items():
        if ep.dist is not None and ep.dist.name != "monbridge" and pid in lines:
            assert lines[pid][2] == ep.dist.name  # a third-party plugin: the distribution that installed it


def test_config_default_prints_the_embedded_default(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", raising=False)
    out = CliRunner().invoke(main, ["config", "default"])
    assert out.exit_code == 0, out.output
    assert out.output == default_config_text({})
    doc = yaml.safe_load(out.output)
    assert doc["server"]["listen"] == "127.0.0.1:9464"
    assert [p["plugin_id"] for p in doc["plugins"]] == ["monitoring.metrics.system"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    out = CliRunner().invoke(main, ["config", "default"])
    assert [p["plugin_id"] for p in yaml.safe_load(out.output)["plugins"]] == [
        "monitoring.metrics.system", "monitoring.integration.otlp"]


async def test_log_lines_say_the_interval_or_that_there_is_none(caplog):
    caplog.set_level(logging.INFO, logger="monbridge.supervisor")
    sup = Supervisor(Pipeline())
    steady = SteadyCollector()
    sup.add(steady.plugin_id, lambda: steady, {}, SteadyConfig.model_validate({"collection_interval": 15}))
    recorder = Recorder("recorder", [])
    sup.add("monitoring.alerts.recorder", lambda: recorder, {}, None)
    await sup.start_all()
    await sup.stop_all()
    assert f"plugin {steady.plugin_id} running (interval 15s)" in caplog.text
    assert "plugin monitoring.alerts.recorder running (no interval)" in caplog.text
    assert "Nones" not in caplog.text
