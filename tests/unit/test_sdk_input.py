"""The OpenTelemetry metrics API as a pipeline input (bridge/sdk_input.py): recorded on every
read of the pipeline, as it is; limits, expiry and failing callbacks; exponential histograms when
the SDK is told to make them; the global provider serving the pipeline installed last."""

from __future__ import annotations

import logging

from opentelemetry import metrics as otel_metrics

from bridge.api import ExponentialHistogramValue, MetricKind
from bridge.exposition import render
from bridge.pipeline import Pipeline
from bridge.sdk_input import SOURCE, install_global


def test_nothing_happens_until_a_meter_is_asked_for():
    p = Pipeline()
    assert p.inputs.collect() == 0
    assert p.inputs._provider is None  # no SDK objects made for a pipeline nobody reports to
    assert p.families() == []


def test_recorded_on_every_read_and_expiring_with_the_callbacks():
    p = Pipeline()
    meter = p.inputs.meter_provider.get_meter("t")
    seen = {"a": 1.0, "b": 2.0}
    meter.create_observable_gauge("t.g", callbacks=[lambda _o: [otel_metrics.Observation(v, {"k": k})
                                                              for k, v in seen.items()]])
    counter = meter.create_counter("t.c", unit="By")
    counter.add(7, {"x": "1"})
    fams = {f.name: f for f in p.families()}
    assert {s.attributes["k"]: s.value for s in fams["t.g"].series.values()} == {"a": 1.0, "b": 2.0}
    (c,) = fams["t.c"].series.values()
    assert (fams["t.c"].kind, c.value, c.source, c.start_ns is not None) == (MetricKind.COUNTER, 7, SOURCE, True)
    del seen["b"]
    counter.add(3, {"x": "1"})
    snapshot = {(m.name, tuple(m.attributes.items())): m.value for m in p.snapshot()}
    assert snapshot == {("t.g", (("k", "a"),)): 1.0, ("t.c", (("x", "1"),)): 10}  # b expired
    assert "t_c_bytes_total" in render(p.families(), {}).decode()


def test_the_pipeline_limit_applies_and_is_counted(caplog):
    p = Pipeline(cardinality_limit=5)
    counter = p.inputs.meter_provider.get_meter("t").create_counter("t.many")
    for i in range(8):
        counter.add(1, {"i": str(i)})
    with caplog.at_level(logging.WARNING, "monbridge.pipeline"):
        p.families()
    assert p.dropped["cardinality"] == 3
    assert len(p.family("t.many").series) == 5


def test_a_failing_callback_is_logged_and_the_rest_recorded(caplog):
    p = Pipeline()
    meter = p.inputs.meter_provider.get_meter("t")

    def broken(_o):
        raise RuntimeError("sensor gone")

    meter.create_observable_gauge("t.broken", callbacks=[broken])
    meter.create_up_down_counter("t.ok").add(-2)
    with caplog.at_level(logging.WARNING):
        names = [f.name for f in p.families()]
    assert names == ["t.ok"]
    assert "sensor gone" in caplog.text


def test_exponential_histograms_when_the_sdk_is_told_to(monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "base2_exponential_bucket_histogram")
    p = Pipeline()
    h = p.inputs.meter_provider.get_meter("t").create_histogram("t.lat", unit="s")
    for v in (0.5, 1.0, 4.0):
        h.record(v)
    (fam,) = p.families()
    (s,) = fam.series.values()
    assert fam.kind is MetricKind.EXPONENTIAL_HISTOGRAM and isinstance(s.value, ExponentialHistogramValue)
    assert (s.value.count, s.value.sum, s.value.min, s.value.max) == (3, 5.5, 0.5, 4.0)
    assert sum(s.value.positive_counts) == 3


def test_the_global_provider_serves_the_pipeline_installed_last():
    first, second = Pipeline(), Pipeline()
    assert install_global(first)
    otel_metrics.get_meter("t").create_counter("t.first").add(1)
    assert install_global(second)
    otel_metrics.get_meter("t").create_counter("t.second").add(1)
    assert [f.name for f in first.families()] == ["t.first"]
    assert [f.name for f in second.families()] == ["t.second"]
    second.shutdown()
    otel_metrics.get_meter("t").create_counter("t.nowhere").add(1)  # no pipeline: a no-op meter
    assert [f.name for f in first.families()] == ["t.first"]
    first.shutdown()
