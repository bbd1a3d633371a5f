"""Public plugin API for Prometheus-shaped sinks: the Prometheus text format and names.

``render`` writes the pipeline's families as Prometheus text 0.0.4 (``CONTENT_TYPE_TEXT``), as
``/metrics`` serves them; ``family_name``, ``prometheus_labels``, ``le_texts`` and
``quantile_texts`` give a family's Prometheus name, a series' label set and the ``le``/``quantile``
label values, as ``/metrics`` writes them (a batch's series carry them already, in ``.prom``);
``parse_selector`` reads a ``match[]``-style series selector (``up{job="node"}``) for a sink's
own match rules (``MetricBatch.select`` takes the same text); ``as_histogram`` gives an
exponential histogram's explicit buckets as ``/metrics`` shows them.

Plugins import these names from here, never from ``bridge.exposition``.
"""

from bridge.exposition import CONTENT_TYPE_TEXT, as_histogram, family_name, le_texts, prometheus_labels, quantile_texts, render
from bridge.selector import parse_selector

__all__ = ["CONTENT_TYPE_TEXT", "as_histogram", "family_name", "le_texts", "parse_selector", "prometheus_labels",
           "quantile_texts", "render"]
