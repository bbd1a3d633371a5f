"""The OTLP view of a pipeline, for tests: what the OTLP push would send, decoded with
``opentelemetry-proto`` (the requests of one push merged back into one metric per name)."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from integrations.otlp_wire import OtlpEncoder

__all__ = ["attributes", "decoded", "metrics_of", "points", "scopes_of", "value_of", "without_otel_env"]


def without_otel_env(monkeypatch: Any) -> None:
    """A fixture body: no OTEL_* variable of the developer's shell reaches the code under test."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def decoded(bodies: list[bytes]) -> list[ExportMetricsServiceRequest]:
    return [ExportMetricsServiceRequest.FromString(b) for b in bodies]


def encode(pipeline: Any, encoder: OtlpEncoder | None = None) -> list[ExportMetricsServiceRequest]:
    enc = encoder or OtlpEncoder()
    return decoded(enc.encode([(f, list(f.series.values())) for f in pipeline.families()], pipeline.resource))


def metrics_of(requests: list[ExportMetricsServiceRequest] | Any) -> dict[str, Any]:
    """Every metric by name (a metric split across requests merged back); accepts a pipeline."""
    if not isinstance(requests, list):
        requests = encode(requests)
    out: dict[str, Any] = {}
    for r in requests:
        for rm in r.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name in out:
                        kind = m.WhichOneof("data")
                        getattr(out[m.name], kind).data_points.extend(getattr(m, kind).data_points)
                    else:
                        out[m.name] = m
    return out


def scopes_of(requests: list[ExportMetricsServiceRequest]) -> dict[str, str]:
    """Metric name -> the name of its instrumentation scope."""
    return {m.name: sm.scope.name for r in requests for rm in r.resource_metrics for sm in rm.scope_metrics
            for m in sm.metrics}


def points(metric: Any) -> list[Any]:
    if metric is None:
        return []
    return list(getattr(metric, metric.WhichOneof("data")).data_points)


def value_of(v: Any) -> Any:
    """A protobuf ``AnyValue`` as a Python value."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


def number(pt: Any) -> Any:
    """A NumberDataPoint's value (as_int or as_double)."""
    return getattr(pt, pt.WhichOneof("value"))
