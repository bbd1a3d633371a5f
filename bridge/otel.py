"""Public plugin API for OpenTelemetry-shaped sinks: the pipeline's data as OTel SDK metric data.

``default_resource`` is monbridge's resource (``service.name``, ``host.name``,
``OTEL_RESOURCE_ATTRIBUTES``); ``otel_point``/``otel_metric`` build SDK data points and metrics
as they are (nothing re-aggregated); ``Summary``/``SummaryDataPoint`` are OTLP's summary data,
which the SDK has no type for. ``MAX_BUCKETS`` is the most buckets an exponential histogram
keeps when deltas of other scales are merged into it; ``downscale`` re-buckets one at a coarser
scale.

Plugins import these names from here, never from ``bridge.pipeline``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bridge.accumulate import MAX_BUCKETS, downscale

if TYPE_CHECKING:
    from bridge.pipeline import Summary, SummaryDataPoint, default_resource, otel_metric, otel_point

__all__ = ["MAX_BUCKETS", "Summary", "SummaryDataPoint", "default_resource", "otel_metric", "otel_point", "downscale"]


_PIPELINE = ("Summary", "SummaryDataPoint", "default_resource", "otel_metric", "otel_point")


def __getattr__(name: str) -> Any:
    # The pipeline (and the OTel SDK with it) is loaded when a name of it is first used, so a
    # plugin's config model can be validated without it (``monbridge validate``).
    if name in _PIPELINE:
        from bridge import pipeline

        value = getattr(pipeline, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bridge.otel' has no attribute {name!r}")
