"""Alerting configuration: errors name the path, secrets stay out of them, and the OTLP
integration's span and log exporters share its endpoint, protocol and headers."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, parse_config
from bridge.registry import PluginRegistry
from integrations.otlp import OtlpIntegration


def errors(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "alerts.yaml", PluginRegistry().discover(), env=env or {})
    return str(e.value)


def test_notifier_and_processor_errors_name_the_path_and_hide_secrets():
    assert "line 1: alerting.nonsense: unknown key" in errors("alerting: {state_dir: /x, nonsense: 1}\n")
    text = """
alerting: {state_dir: /var/lib/monbridge}
plugins:
  - plugin_id: monitoring.alerts.webhook
    config: {url: "ftp://x", match: ['severity=~"("']}
  - plugin_id: monitoring.alerts.email
    config: {smtp: "mail", from: a@b.c, to: ["nobody"], tls: true, starttls: true, password: "${PW}"}
  - plugin_id: monitoring.alerts.escalation
    config: {levels: [{after: 60, notify: [pager]}]}
  - plugin_id: monitoring.alerts.grouping
    config: {group_wait: -1}
"""
    msg = errors(text, {"PW": "hunter2-secret"})
    assert "line 5: plugins[0].config.url: value error, expected an http:// or https:// URL with a host" in msg
    assert "plugins[0].config.match: value error, matcher severity=~: invalid regular expression" in msg
    assert "line 7: plugins[1].config.smtp: value error, expected HOST:PORT" in msg
    assert "plugins[1].config.to: value error, 'nobody' is not an email address" in msg
    assert "plugins[2].config.levels[0].notify: value error, 'pager' is not a notifier id" in msg
    assert "plugins[3].config.group_wait: input should be greater than or equal to 0" in msg
    assert "hunter2-secret" not in msg


async def test_otlp_integration_exports_spans_and_logs_to_the_same_place():
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    http = OtlpIntegration()
    await http.initialize({"endpoint": "http://127.0.0.1:4318", "headers": {"authorization": "Bearer tok-123"},
                           "compression": "gzip"})
    spans, logs = http.telemetry_exporters()
    assert isinstance(spans, OTLPSpanExporter) and isinstance(logs, OTLPLogExporter)
    assert spans._endpoint == "http://127.0.0.1:4318/v1/traces" and logs._endpoint == "http://127.0.0.1:4318/v1/logs"
    assert str(spans._compression.value) == "gzip" and str(logs._compression.value) == "gzip"
    await http.shutdown()
    grpc = OtlpIntegration()
    await grpc.initialize({"endpoint": "http://127.0.0.1:4317", "protocol": "grpc", "insecure": True})
    spans, logs = grpc.telemetry_exporters()
    assert isinstance(spans, GrpcSpans) and isinstance(logs, GrpcLogs)
    spans.shutdown()
    logs.shutdown()
    await grpc.shutdown()
