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

from typing import TYPE_CHECKING

from bridge.accumulate import MAX_BUCKETS, downscale
from bridge.lazy import lazy_names

if TYPE_CHECKING:
    from bridge.pipeline import Summary, SummaryDataPoint, default_resource, otel_metric, otel_point

__all__ = ["MAX_BUCKETS", "Summary", "SummaryDataPoint", "default_resource", "otel_metric", "otel_point", "downscale"]


# The pipeline (and the OTel SDK with it) is loaded when a name of it is first used, so a
# plugin's config model can be validated without it (``monbridge validate``).
__getattr__, __dir__ = lazy_names(__name__, dict.fromkeys(
    ("Summary", "SummaryDataPoint", "default_resource", "otel_metric", "otel_point"), "bridge.pipeline"), globals())
