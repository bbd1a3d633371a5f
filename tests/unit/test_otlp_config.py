"""The OTLP integration's config model: shape, defaults from the OpenTelemetry environment
variables, endpoint normalization, secrets kept out of reprs and errors."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from bridge.config import ConfigError, parse_config, redact
from bridge.registry import PluginRegistry
from integrations.otlp import OtlpConfig, OtlpIntegration

SECRET = "Bearer very-secret-token"


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def test_defaults():
    c = OtlpConfig.model_validate({})
    assert (c.protocol, c.endpoint, c.interval, c.timeout, c.compression, c.headers, c.insecure, c.tls) == (
        "http/protobuf", None, 60.0, None, None, {}, None, None)


def test_full_shape():
    c = OtlpConfig.model_validate({
        "endpoint": "https://otel.example.com:4318", "protocol": "http/protobuf", "interval": 10, "timeout": 5,
        "compression": "gzip", "headers": {"Authorization": SECRET},
        "tls": {"ca_file": "/etc/ca.pem", "cert_file": "/etc/c.pem", "key_file": "/etc/k.pem"},
    })
    assert c.endpoint == "https://otel.example.com:4318/v1/metrics"
    assert (c.interval, c.timeout, c.compression) == (10, 5, "gzip")
    assert c.headers["authorization"].get_secret_value() == SECRET  # names are lower-cased (gRPC metadata)
    assert str(c.tls.ca_file) == "/etc/ca.pem"


@pytest.mark.parametrize("key", ["endpiont", "url", "retry"])
def test_unknown_key_rejected(key):
    with pytest.raises(ValidationError) as e:
        OtlpConfig.model_validate({key: "x"})
    assert e.value.errors()[0]["type"] == "extra_forbidden"


def test_unknown_tls_key_rejected():
    with pytest.raises(ValidationError):
        OtlpConfig.model_validate({"tls": {"ca": "/x"}})


@pytest.mark.parametrize("protocol", ["http/json", "http", "GRPC", "", "udp"])
def test_protocol_enum(protocol):
    with pytest.raises(ValidationError):
        OtlpConfig.model_validate({"protocol": protocol})


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_protocol_values(protocol):
    assert OtlpConfig.model_validate({"protocol": protocol}).protocol == protocol


def test_compression_enum():
    assert OtlpConfig.model_validate({"compression": "none"}).compression == "none"
    with pytest.raises(ValidationError):
        OtlpConfig.model_validate({"compression": "zstd"})


@pytest.mark.parametrize("interval", [0, -1, "soon"])
def test_interval_must_be_positive(interval):
    with pytest.raises(ValidationError):
        OtlpConfig.model_validate({"interval": interval})


# --------------------------------------------------------------------------- defaults from the environment


def test_interval_default_from_otel_metric_export_interval(monkeypatch):
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "1500")
    assert OtlpConfig.model_validate({}).interval == 1.5
    assert OtlpConfig.model_validate({"interval": 7}).interval == 7  # the config wins


@pytest.mark.parametrize("raw", ["0", "-5", "ten", "nan"])
def test_invalid_otel_metric_export_interval_is_an_error(monkeypatch, raw):
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", raw)
    with pytest.raises(ValidationError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        OtlpConfig.model_validate({})


def test_protocol_default_from_env(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert OtlpConfig.model_validate({}).protocol == "grpc"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")  # the signal's own wins
    assert OtlpConfig.model_validate({}).protocol == "http/protobuf"
    assert OtlpConfig.model_validate({"protocol": "grpc"}).protocol == "grpc"  # the config wins


def test_unsupported_protocol_from_env_is_an_error(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValidationError, match="http/json"):
        OtlpConfig.model_validate({})


def test_headers_from_env_are_secrets_and_merged(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20env-token,x-tenant=a")
    c = OtlpConfig.model_validate({})
    assert c.headers["authorization"].get_secret_value() == "Bearer env-token"
    assert "env-token" not in repr(c)
    c = OtlpConfig.model_validate({"headers": {"X-Tenant": "b"}})
    assert {k: v.get_secret_value() for k, v in c.headers.items()} == {"authorization": "Bearer env-token",
                                                                        "x-tenant": "b"}


def test_endpoint_from_env_is_left_to_the_sdk(monkeypatch):
    """The endpoint stays unset in the model: the SDK reads OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT itself
    (and appends /v1/metrics to the generic one)."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert OtlpConfig.model_validate({}).endpoint is None


async def test_sdk_resolves_env_endpoint(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    plugin = OtlpIntegration()
    await plugin.initialize({})
    try:
        assert plugin.endpoint == "http://collector:4318/v1/metrics"
    finally:
        await plugin.shutdown()


# --------------------------------------------------------------------------- endpoint


@pytest.mark.parametrize(("given", "expected"), [
    ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/metrics"),
    ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/metrics"),
    ("https://otel.example.com", "https://otel.example.com/v1/metrics"),
    ("http://127.0.0.1:4318/v1/metrics", "http://127.0.0.1:4318/v1/metrics"),
    ("http://gw.example.com/otlp", "http://gw.example.com/otlp/v1/metrics"),
    ("http://gw.example.com/otlp/v1/metrics", "http://gw.example.com/otlp/v1/metrics"),
])
def test_http_endpoint_gets_v1_metrics(given, expected):
    assert OtlpConfig.model_validate({"endpoint": given}).endpoint == expected


def test_v1_metrics_appended_when_protocol_comes_from_env(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert OtlpConfig.model_validate({"endpoint": "http://c:4317"}).endpoint == "http://c:4317"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert OtlpConfig.model_validate({"endpoint": "http://c:4318"}).endpoint == "http://c:4318/v1/metrics"


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:4317", "https://c.example.com:4317", "c.example.com:4317"])
def test_grpc_endpoint_unchanged(endpoint):
    assert OtlpConfig.model_validate({"endpoint": endpoint, "protocol": "grpc"}).endpoint == endpoint


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4318", "ftp://h/", "http://", ""])
def test_bad_http_endpoint(endpoint):
    with pytest.raises(ValidationError):
        OtlpConfig.model_validate({"endpoint": endpoint})


# --------------------------------------------------------------------------- consistency


def test_insecure_is_for_grpc_only():
    assert OtlpConfig.model_validate({"protocol": "grpc", "insecure": True}).insecure is True
    with pytest.raises(ValidationError, match="grpc only"):
        OtlpConfig.model_validate({"protocol": "http/protobuf", "insecure": True})


def test_insecure_contradicts_tls():
    with pytest.raises(ValidationError, match="contradict"):
        OtlpConfig.model_validate({"protocol": "grpc", "insecure": True, "tls": {"ca_file": "/ca.pem"}})


def test_client_cert_needs_key():
    with pytest.raises(ValidationError, match="cert_file and key_file"):
        OtlpConfig.model_validate({"tls": {"cert_file": "/c.pem"}})


async def test_unreadable_tls_file_fails_initialize(tmp_path):
    from bridge.api import PluginError

    plugin = OtlpIntegration()
    with pytest.raises(PluginError, match="tls.ca_file"):
        await plugin.initialize({"endpoint": "https://h:4318", "tls": {"ca_file": str(tmp_path / "missing.pem")}})


# --------------------------------------------------------------------------- secrets


def test_header_values_not_in_repr_or_str():
    c = OtlpConfig.model_validate({"headers": {"authorization": SECRET, "x-api-key": "k3y-value"}})
    for text in (repr(c), str(c), repr(c.headers), str(c.model_dump()), str(redact(c))):
        assert "very-secret-token" not in text and "k3y-value" not in text
    assert redact(c)["headers"] == {"authorization": "<secret>", "x-api-key": "<secret>"}


def test_header_value_not_in_validation_errors():
    with pytest.raises(ValidationError) as e:
        OtlpConfig.model_validate({"headers": {"authorization": "Bearer abc\r\ndef"}})
    assert "abc" not in str(e.value)


# --------------------------------------------------------------------------- through the config loader


def test_config_errors_name_the_path():
    registry = PluginRegistry().discover()
    text = ("plugins:\n"
            "  - plugin_id: monitoring.integration.otlp\n"
            "    config:\n"
            "      protokol: grpc\n"
            "      compression: brotli\n")
    with pytest.raises(ConfigError) as e:
        parse_config(text, "t.yaml", registry, env={})
    issues = "\n".join(e.value.issues)
    assert "line 4: plugins[0].config.protokol: unknown key" in issues
    assert "plugins[0].config.compression" in issues


def test_config_substitutes_secret_header_from_env():
    registry = PluginRegistry().discover()
    text = ("plugins:\n"
            "  - plugin_id: monitoring.integration.otlp\n"
            "    config:\n"
            "      endpoint: http://127.0.0.1:4318\n"
            "      headers: {authorization: \"Bearer ${OTLP_TOKEN}\"}\n")
    loaded = parse_config(text, "t.yaml", registry, env={"OTLP_TOKEN": "tok-123"})
    cfg = loaded.plugin_configs["monitoring.integration.otlp"]
    assert cfg.headers["authorization"].get_secret_value() == "Bearer tok-123"
    assert cfg.endpoint == "http://127.0.0.1:4318/v1/metrics"
    assert "tok-123" not in repr(cfg)


def test_default_config_adds_otlp_with_env():
    """The embedded default config adds this plugin when OTEL_EXPORTER_OTLP_ENDPOINT is set, and it validates."""
    from bridge.config import load_config

    registry = PluginRegistry().discover()
    loaded = load_config(None, registry, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert "monitoring.integration.otlp" in loaded.plugin_configs


# --------------------------------------------------------------------------- temporality and the send target


@pytest.mark.parametrize(("raw", "expected"), [("delta", "delta"), ("LOWMEMORY", "lowmemory"),
                                               (" Cumulative ", "cumulative")])
def test_temporality_from_env(monkeypatch, raw, expected):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", raw)
    assert OtlpConfig.model_validate({}).temporality == expected
    assert OtlpConfig.model_validate({"temporality": "cumulative"}).temporality == "cumulative"  # the config wins


def test_unknown_temporality_from_env_is_an_error(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "sometimes")
    with pytest.raises(ValidationError, match="OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"):
        OtlpConfig.model_validate({})
    with pytest.raises(ValidationError):
        OtlpConfig.model_validate({"temporality": "delta-ish"})


@pytest.mark.parametrize(("name", "value"), [("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
                                             ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "brotli"),
                                             ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")])
async def test_bad_send_variables_fail_initialize_naming_them(monkeypatch, name, value):
    from bridge.api import PluginError

    monkeypatch.setenv(name, value)
    with pytest.raises(PluginError, match=name.replace("METRICS_", "").replace("OTEL_EXPORTER_OTLP_", "")):
        await OtlpIntegration().initialize({})


@pytest.mark.parametrize(("env", "endpoint"), [
    ({}, "localhost:4317"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example.com:4317"}, "c.example.com:4317"),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4317", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:1"}, "m:4317"),
])
async def test_grpc_endpoint_from_env(monkeypatch, env, endpoint):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    plugin = OtlpIntegration()
    await plugin.initialize({"protocol": "grpc"})
    try:
        assert plugin.endpoint == endpoint
    finally:
        await plugin.shutdown()
