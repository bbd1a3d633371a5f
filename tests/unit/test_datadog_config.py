"""The Datadog integration's config model: its three parts, defaults from the Datadog Agent's
environment variables, errors naming the config path, the API keys kept out of reprs and errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.config import ConfigError, parse_config, redact
from bridge.registry import PluginRegistry
from integrations.datadog.config import DatadogConfig

KEY = "0123456789abcdef-dd-key"


@pytest.fixture(autouse=True)
def clean_dd_env(monkeypatch):
    for name in ("DD_API_KEY", "DD_SITE", "DD_HOSTNAME", "DD_TAGS"):
        monkeypatch.delenv(name, raising=False)


def test_a_part_is_needed():
    with pytest.raises(ValidationError, match="give dogstatsd, intake, export"):
        DatadogConfig.model_validate({})


def test_dogstatsd_defaults_as_the_agent():
    c = DatadogConfig.model_validate({"dogstatsd": {"listen_udp": "127.0.0.1:8125"}}).dogstatsd
    assert c is not None
    assert (c.buffer_size, c.flush_interval, c.workers, c.so_rcvbuf) == (8192, 10.0, 1, 4 << 20)
    assert c.reader_queue_bytes == 8 << 20
    assert c.histogram_aggregates == ["max", "median", "avg", "count"]
    assert c.histogram_percentiles == [0.95]


@pytest.mark.parametrize("dsd, message", [
    ({}, "needs listen_udp, listen_uds or both"),
    ({"listen_udp": "8125"}, "listen_udp"),
    ({"listen_uds": "/x/" + "a" * 120}, "at most 107 bytes"),
    ({"listen_udp": "127.0.0.1:8125", "histogram_percentiles": [95]}, "not between 0 and 1"),
    ({"listen_udp": "127.0.0.1:8125", "histogram_aggregates": ["p99"]}, "histogram_aggregates"),
    ({"listen_udp": "127.0.0.1:8125", "buffer_size": 10}, "buffer_size"),
    ({"listen_udp": "127.0.0.1:8125", "reader_queue_bytes": 4096}, "0 \\(no queue\\) or at least 131072"),
    ({"listen_udp": "127.0.0.1:8125", "buffer_size": 65535, "reader_queue_bytes": 200_000},
     "must hold at least four datagrams of buffer_size: at least 262208"),
])
def test_dogstatsd_errors(dsd, message):
    with pytest.raises(ValidationError, match=message):
        DatadogConfig.model_validate({"dogstatsd": dsd})


def test_intake_needs_keys_and_keeps_them_secret():
    with pytest.raises(ValidationError, match="api_keys"):
        DatadogConfig.model_validate({"intake": {"listen": "127.0.0.1:8126"}})
    with pytest.raises(ValidationError, match="empty key"):
        DatadogConfig.model_validate({"intake": {"api_keys": [" "]}})
    c = DatadogConfig.model_validate({"intake": {"api_keys": [KEY]}})
    assert c.intake is not None and c.intake.api_keys[0].get_secret_value() == KEY
    for text in (repr(c), str(c), str(redact(c))):
        assert KEY not in text


def test_export_needs_a_key():
    with pytest.raises(ValidationError, match="api_key \\(or DD_API_KEY"):
        DatadogConfig.model_validate({"export": {}})


def test_export_from_the_agent_environment(monkeypatch):
    monkeypatch.setenv("DD_API_KEY", KEY)
    monkeypatch.setenv("DD_SITE", "datadoghq.eu")
    monkeypatch.setenv("DD_HOSTNAME", "node-7")
    monkeypatch.setenv("DD_TAGS", "env:prod team:obs,tier:1")
    c = DatadogConfig.model_validate({"export": {}}).export
    assert c is not None and c.api_key is not None
    assert (c.api_key.get_secret_value(), c.site, c.hostname, c.tags) == (
        KEY, "datadoghq.eu", "node-7", ["env:prod", "team:obs", "tier:1"])
    assert KEY not in repr(c)


def test_config_wins_over_environment(monkeypatch):
    monkeypatch.setenv("DD_API_KEY", "from-env")
    monkeypatch.setenv("DD_SITE", "datadoghq.eu")
    c = DatadogConfig.model_validate({"export": {"api_key": KEY, "site": "us5.datadoghq.com", "tags": []}}).export
    assert c is not None and c.api_key is not None
    assert (c.api_key.get_secret_value(), c.site, c.tags) == (KEY, "us5.datadoghq.com", [])


def test_export_defaults(monkeypatch):
    c = DatadogConfig.model_validate({"export": {"api_key": KEY}})
    assert c.export is not None
    assert (c.export.site, c.export.hostname, c.export.tags, c.export.url) == ("datadoghq.com", None, [], None)
    assert c.interval == 15.0  # the integration's default round, export.interval not given


def test_export_interval_is_the_round_interval():
    assert DatadogConfig.model_validate({"export": {"api_key": KEY, "interval": 5}}).interval == 5.0
    both = DatadogConfig.model_validate({"interval": 30, "export": {"api_key": KEY, "interval": 5}})
    assert both.interval == 30.0


def test_export_url_must_be_http():
    with pytest.raises(ValidationError, match="not an http"):
        DatadogConfig.model_validate({"export": {"api_key": KEY, "url": "ftp://proxy"}})


def test_errors_name_the_path_and_hide_the_key():
    registry = PluginRegistry().discover()
    text = ("plugins:\n"
            "  - plugin_id: monitoring.integration.datadog\n"
            "    config:\n"
            "      dogstatsd: {listen_udp: \"127.0.0.1:8125\", flush_intervall: 10}\n"
            "      export: {api_key: \"${DD_KEY}\", url: \"ftp://x\"}\n")
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.yaml", registry, env={"DD_KEY": KEY})
    issues = "\n".join(e.value.issues)
    assert "plugins[0].config.dogstatsd.flush_intervall: unknown key" in issues
    assert "plugins[0].config.export" in issues
    assert KEY not in issues


def test_loaded_through_the_config_loader():
    registry = PluginRegistry().discover()
    text = ("plugins:\n"
            "  - plugin_id: monitoring.integration.datadog\n"
            "    config:\n"
            "      intake: {listen: \"127.0.0.1:8126\", api_keys: [\"${DD_INTAKE_KEY}\"]}\n")
    loaded = parse_config(text, "t.yaml", registry, env={"DD_INTAKE_KEY": KEY})
    cfg = loaded.plugin_configs["monitoring.integration.datadog"]
    assert cfg.intake.api_keys[0].get_secret_value() == KEY
