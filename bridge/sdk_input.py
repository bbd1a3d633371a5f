"""The OpenTelemetry metrics API as an input of the pipeline.

Plugins may report through ``opentelemetry.metrics`` instruments (counters, up-down counters,
histograms, gauges and their observable forms) instead of returning ``Metric`` tables. Each
pipeline has an ``SdkInput``: an SDK ``MeterProvider`` (made on first use) with one reader,
collected into the pipeline as the source ``opentelemetry.metrics`` each time the pipeline is
read (``Pipeline.families``/``snapshot``: before a ``/metrics`` render and before an export
round). What the SDK aggregates is recorded as it is, cumulative (sums and histograms keep the
SDK's start times; nothing is re-aggregated), and the pipeline's limits, expiry and sinks apply
to it as to any source. The SDK keeps the aggregation state of the plugins' instruments (as it
would in any application); the pipeline keeps the series; no sink keeps a copy of its own.

The collection runs the observable instruments' callbacks on the caller's thread (the event
loop for a render or an export round): they are plugin code, like a collector's
``collect_metrics``, and must not block.

``install_global(pipeline)`` (the runtime calls it) makes ``opentelemetry.metrics.get_meter``
hand out meters of that pipeline's provider. The OpenTelemetry API lets a process set its
global provider once, so the global one is a thin delegate that always serves the pipeline
installed last; a meter keeps the provider it came from.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel_metrics

from bridge.api import ExponentialHistogramValue, HistogramValue, Metric, MetricKind

if TYPE_CHECKING:
    from bridge.pipeline import Pipeline

__all__ = ["SOURCE", "SdkInput", "install_global", "metrics_from_sdk"]

log = logging.getLogger("monbridge.pipeline")

#: The pipeline source of the OpenTelemetry metrics API's data.
SOURCE = "opentelemetry.metrics"


def metrics_from_sdk(data: Any) -> list[Metric]:
    """An SDK ``MetricsData`` (cumulative) as plugin-API Metrics, grouped by name, as they are."""
    from opentelemetry.sdk.metrics.export import ExponentialHistogram, Gauge, Histogram, Sum

    out: list[Metric] = []
    add = out.append
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                d: Any = m.data
                p: Any
                name, unit, desc = m.name, m.unit or "", m.description or ""
                if isinstance(d, Sum):
                    kind = MetricKind.COUNTER if d.is_monotonic else MetricKind.UP_DOWN_COUNTER
                    for p in d.data_points:
                        add(Metric(name, kind, p.value, unit, desc, p.attributes or {}, p.time_unix_nano,
                                   p.start_time_unix_nano))
                elif isinstance(d, Gauge):
                    for p in d.data_points:
                        add(Metric(name, MetricKind.GAUGE, p.value, unit, desc, p.attributes or {}, p.time_unix_nano))
                elif isinstance(d, Histogram):
                    for p in d.data_points:
                        known = p.count > 0
                        value = HistogramValue(tuple(p.explicit_bounds), tuple(p.bucket_counts), float(p.sum), p.count,
                                               _finite(p.min) if known else None, _finite(p.max) if known else None)
                        add(Metric(name, MetricKind.HISTOGRAM, value, unit, desc, p.attributes or {},
                                   p.time_unix_nano, p.start_time_unix_nano))
                elif isinstance(d, ExponentialHistogram):
                    for p in d.data_points:
                        known = p.count > 0
                        ev: Any = ExponentialHistogramValue(
                            scale=p.scale, zero_count=p.zero_count,
                            positive_offset=p.positive.offset, positive_counts=tuple(p.positive.bucket_counts),
                            negative_offset=p.negative.offset, negative_counts=tuple(p.negative.bucket_counts),
                            count=p.count, sum=float(p.sum),
                            min=_finite(p.min) if known else None, max=_finite(p.max) if known else None)
                        add(Metric(name, MetricKind.EXPONENTIAL_HISTOGRAM, ev, unit, desc, p.attributes or {},
                                   p.time_unix_nano, p.start_time_unix_nano))
    return out


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


class SdkInput:
    """One pipeline's OpenTelemetry metrics API input (see the module docstring)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._provider: Any = None
        self._reader: Any = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def meter_provider(self) -> Any:
        """The SDK ``MeterProvider`` whose instruments are recorded into the pipeline."""
        with self._lock:
            if self._provider is None:
                self._provider, self._reader = self._make()
            return self._provider

    def _make(self) -> tuple[Any, Any]:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import MetricReader
        from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

        class _Reader(MetricReader):
            """Cumulative for every instrument (the pipeline holds cumulative data); the last
            collection is taken by ``take``."""

            def __init__(self) -> None:
                # The SDK's default histogram aggregation, as its OTLP exporters choose it.
                aggregation = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION", "").strip()
                from opentelemetry.sdk.metrics import Histogram as HistogramInstrument

                preferred: dict[type, Any] | None = ({HistogramInstrument: ExponentialBucketHistogramAggregation()}
                             if aggregation == "base2_exponential_bucket_histogram" else None)
                super().__init__(preferred_aggregation=preferred)
                self.data: Any = None

            def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
                self.data = metrics_data

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                pass

        reader = _Reader()
        # The SDK folds series past its own cap (2,000 by default) silently into one overflow
        # point. The pipeline's limit is enforced on recording, each series over it counted and
        # logged; the SDK's is set at twice that (plus its overflow point), so the pipeline
        # counts every drop up to there, and past it the SDK's overflow point (then dropped and
        # counted too) bounds the SDK's memory.
        limit = 2 * self._pipeline.cardinality_limit + 1
        provider = MeterProvider(resource=self._pipeline.resource, metric_readers=[reader],
                                 views=[View(instrument_name="*", aggregation_cardinality_limit=limit)])
        return provider, reader

    def collect(self) -> int:
        """Record what the instruments hold now into the pipeline; the number of series recorded.
        Nothing to do (and nothing imported) until a plugin has asked for a meter."""
        reader = self._reader
        if reader is None or self._closed:
            return 0
        with self._lock:
            reader.data = None
            try:
                reader.collect()
            except Exception as e:  # noqa: BLE001 - a plugin's callback failing must not fail a render
                log.warning("collecting the OpenTelemetry metrics API's instruments failed: %s: %s",
                            type(e).__name__, e)
                return 0
            metrics = metrics_from_sdk(reader.data)
            reader.data = None
        return self._pipeline.record(SOURCE, metrics)

    def shutdown(self) -> None:
        global _current
        with self._lock:
            self._closed = True
            provider, self._provider = self._provider, None
            self._reader = None
        if _current is self:
            _current = None
        if provider is not None:
            provider.shutdown()


# ---------------------------------------------------------------------------- the global provider

_current: SdkInput | None = None
_installed = False
_install_lock = threading.Lock()


class _Delegate(otel_metrics.MeterProvider):
    """The process' global MeterProvider: meters of the pipeline installed last."""

    def get_meter(self, name: str, version: str | None = None, schema_url: str | None = None,
                  attributes: Any = None) -> otel_metrics.Meter:
        current = _current
        if current is None:
            return otel_metrics.NoOpMeterProvider().get_meter(name, version, schema_url, attributes)
        provider: otel_metrics.MeterProvider = current.meter_provider
        return provider.get_meter(name, version, schema_url, attributes)


def install_global(pipeline: Pipeline) -> bool:
    """Make ``opentelemetry.metrics.get_meter`` serve ``pipeline``'s input; False (and a warning)
    when the process already has a global MeterProvider of someone else's."""
    global _current, _installed
    with _install_lock:
        _current = pipeline.inputs
        if _installed:
            return True
        from opentelemetry.metrics._internal import _ProxyMeterProvider

        if not isinstance(otel_metrics.get_meter_provider(), _ProxyMeterProvider):
            log.warning("a global OpenTelemetry MeterProvider is already set in this process: plugins' "
                        "opentelemetry.metrics instruments report to it, not into monbridge's pipeline")
            return False
        otel_metrics.set_meter_provider(_Delegate())
        _installed = True
        return True
