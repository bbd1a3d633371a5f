"""An application instrumented with the OpenTelemetry SDK, pushing OTLP to an endpoint: the
client of the OTLP receive tests. Run as a subprocess::

    python otlp_sdk_app.py PROTOCOL ENDPOINT TEMPORALITY INSTANCE

``PROTOCOL`` is ``grpc`` or ``http``; ``TEMPORALITY`` ``cumulative`` or ``delta`` (the SDK's
preference: counters and histograms then export deltas). It records ``ROUNDS`` (below) one after
the other, exporting after each (``force_flush``), prints one JSON line per export result, and
exits. What it records is fixed here, so the tests know every expected value.
"""

from __future__ import annotations

import json
import sys

# Each round: counter adds, up-down counter adds, histogram and exponential histogram records, gauge value.
ROUNDS = [
    {"requests": [3], "queue": [5], "latency": [0.05, 0.3], "size": [1, 2], "temperature": 21.5},
    {"requests": [4, 0], "queue": [-2], "latency": [0.7, 2.0], "size": [4, 1000], "temperature": -3.25},
]
BOUNDS = (0.1, 0.5, 1.0)
SERVICE = {"service.name": "shop", "service.namespace": "demo", "deployment.environment": "test"}
SCOPE = ("app", "1.0")


def main() -> None:
    protocol, endpoint, temporality, instance = sys.argv[1:5]
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import (
        ExplicitBucketHistogramAggregation,
        ExponentialBucketHistogramAggregation,
        View,
    )
    from opentelemetry.sdk.resources import Resource

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        kwargs = {"endpoint": endpoint, "insecure": True}
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        kwargs = {"endpoint": endpoint}
    t = AggregationTemporality.DELTA if temporality == "delta" else AggregationTemporality.CUMULATIVE
    exporter = OTLPMetricExporter(preferred_temporality={Counter: t, Histogram: t, UpDownCounter:
                                                         AggregationTemporality.CUMULATIVE}, **kwargs)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({**SERVICE, "service.instance.id": instance}),
        metric_readers=[reader],
        views=[View(instrument_name="app.latency", aggregation=ExplicitBucketHistogramAggregation(BOUNDS)),
               View(instrument_name="app.size", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter(*SCOPE)
    requests = meter.create_counter("app.requests", unit="{request}", description="requests served")
    queue = meter.create_up_down_counter("app.queue.depth", unit="{item}", description="items queued")
    latency = meter.create_histogram("app.latency", unit="s", description="request latency")
    size = meter.create_histogram("app.size", unit="By", description="response size")
    temperature = [0.0]
    meter.create_observable_gauge("app.temperature", [lambda _o: [Observation(temperature[0], {"room": "a"})]],
                                  unit="Cel", description="temperature")
    attrs = {"route": "/a"}
    for r in ROUNDS:
        for v in r["requests"]:
            requests.add(v, attrs)
        for v in r["queue"]:
            queue.add(v, attrs)
        for v in r["latency"]:
            latency.record(v, attrs)
        for v in r["size"]:
            size.record(v, attrs)
        temperature[0] = r["temperature"]
        ok = reader.force_flush(timeout_millis=10_000)
        print(json.dumps({"exported": ok}), flush=True)
    provider.shutdown()


if __name__ == "__main__":
    main()
