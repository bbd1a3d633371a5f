"""Config paths at their edges: the default config's OTLP push, ``listen`` forms, document
shapes, and the line each error names."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, load_config, parse_config, parse_listen
from bridge.registry import PluginRegistry

TOP = "expected a mapping with keys server, pipeline, plugins, alerting, packages, dashboard"


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry().discover()


def issues(registry, text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "a.yaml", registry, env={})
    return e.value.issues


@pytest.mark.parametrize(("env", "otlp"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4318/v1/metrics"}, True),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ""}, False),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318"}, False),
])
def test_the_default_config_pushes_otlp_when_an_endpoint_is_set(registry, env, otlp):
    loaded = load_config(None, registry, env=env)
    enabled = [p.plugin_id for p in loaded.enabled_plugins]
    assert enabled == ["monitoring.metrics.system"] + (["monitoring.integration.otlp"] if otlp else [])
    assert loaded.model.server.listen == "127.0.0.1:9464"


@pytest.mark.parametrize(("listen", "parsed"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ("localhost:0", ("localhost", 0)),
    (":9464", ("0.0.0.0", 9464)),
    ("[::1]:9464", ("::1", 9464)),
    ("[::]:65535", ("::", 65535)),
    ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
])
def test_listen_forms(listen, parsed):
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize("listen", ["127.0.0.1:65536", "127.0.0.1", "127.0.0.1:", "h:-1", "h:+1", "h:1.5", "h:٣",
                                    "h:９", "[::1:9464", "::1]:9464", "h: 80", ""])
def test_listen_refusals(registry, listen):
    with pytest.raises(ValueError, match=r"expected HOST:PORT, e\.g\. 127\.0\.0\.1:9464 or \[::1\]:9464"):
        parse_listen(listen)
    assert issues(registry, f"server:\n  listen: '{listen}'\n") == [
        "line 2: server.listen: value error, expected HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"]


def test_listen_in_a_document(registry):
    assert parse_config("server:\n  listen: '[::1]:65535'\n", "a.yaml", registry, env={}).model.server.listen == \
        "[::1]:65535"
    assert issues(registry, "server:\n  listen: 9464\n") == ["line 2: server.listen: input should be a valid string"]


@pytest.mark.parametrize(("text", "expected"), [
    ("", f"line 1: the config is empty ({TOP})"),
    ("null\n", f"line 1: the config is empty ({TOP})"),
    ("---\n...\n", f"line 1: the config is empty ({TOP})"),
    ("[]\n", f"line 1: (top level): {TOP}"),
    ("\n\n- a\n", f"line 3: (top level): {TOP}"),
    ("# c\n'text'\n", f"line 2: (top level): {TOP}"),
    ("\n7\n", f"line 2: (top level): {TOP}"),
])
def test_documents_that_are_not_a_mapping(registry, text, expected):
    assert issues(registry, text) == [expected]


@pytest.mark.parametrize(("text", "expected"), [
    # An error about a key's value is reported at the key's line, not the line its value starts on.
    ("server:\n  - listen\n", ["line 1: server: input should be a valid dictionary or instance of ServerConfig"]),
    ("pipeline: {}\nserver:\n\n\n  - x\n", ["line 2: server: input should be a valid dictionary or instance of "
                                             "ServerConfig"]),
    ("server:\n  listen: x\n", ["line 2: server.listen: value error, expected HOST:PORT, e.g. 127.0.0.1:9464 or "
                                "[::1]:9464"]),
    ("a: 1\nserver:\n\n  listen: x\n", [
        "line 1: a: unknown key (expected one of: server, pipeline, plugins, alerting, packages, dashboard)",
        "line 4: server.listen: value error, expected HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"]),
    ("plugins:\n  -\n", ["line 2: plugins[0]: input should be a valid dictionary or instance of PluginEntry"]),
    ("plugins:\n\n  - plugin_id: x\n    enabled: maybe\n", [
        "line 4: plugins[0].enabled: input should be a valid boolean, unable to interpret input"]),
])
def test_errors_are_reported_at_the_line_of_their_key(registry, text, expected):
    assert issues(registry, text) == expected
