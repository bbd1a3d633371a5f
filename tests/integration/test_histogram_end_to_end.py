"""A pre-aggregated histogram end to end: a third-party plugin (installed, found through its entry
point) reports bucket counts; they reach the real Prometheus through /metrics and an OTLP
receiver through push exactly as reported: never re-aggregated."""

from __future__ import annotations

import subprocess
from typing import Any

import otlp_receiver
import pytest
from otlp_receiver import attributes, metrics_by_name

otlp_http_receiver = otlp_receiver.otlp_http_receiver

pytestmark = pytest.mark.integration

BOUNDS = [0.1, 0.5, 1.0]
COUNTS = [10, 20, 10, 0]  # per bucket: (..0.1], (0.1..0.5], (0.5..1.0], (1.0..+Inf)
SUM = 18.5


def test_histogram_reaches_prometheus_and_otlp_unchanged(run_monbridge, prometheus_server, free_port,
                                                         otlp_http_receiver, require_binary):
    promtool = require_binary("promtool")
    port = free_port()
    mb = run_monbridge({
        "server": {"listen": f"127.0.0.1:{port}"},
        "plugins": [
            {"plugin_id": "monitoring.metrics.example",
             "config": {"collection_interval": 1,
                        "histogram": {"bounds": BOUNDS, "bucket_counts": COUNTS, "sum": SUM}}},
            {"plugin_id": "monitoring.integration.otlp",
             "config": {"endpoint": otlp_http_receiver.endpoint, "interval": 1}},
        ],
    })
    # OTLP: one histogram point with the very buckets, sum, count and the plugin's start time.
    received = otlp_http_receiver.wait_for_metric("example.latency", timeout=20)
    m = metrics_by_name(received.request)["example.latency"]
    assert m.unit == "s" and m.WhichOneof("data") == "histogram"
    assert m.histogram.aggregation_temporality == 2  # cumulative
    (pt,) = m.histogram.data_points
    assert list(pt.explicit_bounds) == BOUNDS and list(pt.bucket_counts) == COUNTS
    assert pt.sum == SUM and pt.count == sum(COUNTS)
    assert 0 < pt.start_time_unix_nano < pt.time_unix_nano
    assert attributes(pt.attributes) == {"source": "example"}
    assert not pt.HasField("min") and not pt.HasField("max")  # unknown, so left out
    # The self-metrics go out too, without anyone scraping /metrics. The example collector (a
    # third-party plugin, in a worker of its own) may be reported starting (0) in the first rounds.
    def up_states(r: Any) -> dict[str, float]:
        up = metrics_by_name(r.request).get("monbridge.plugin.up")
        return {} if up is None else {attributes(p.attributes)["plugin_id"]: p.as_int or p.as_double
                                      for p in up.gauge.data_points}

    want = {"monitoring.metrics.example": 1, "monitoring.integration.otlp": 1}
    otlp_http_receiver.wait_for(lambda r: up_states(r) == want, timeout=30)  # fails the test if never so

    # Prometheus: cumulative buckets, and a quantile computed from them by the real server.
    prom = prometheus_server([f"127.0.0.1:{port}"])
    buckets = prom.wait_for('example_latency_seconds_bucket{job="monbridge"}')
    got = {r["metric"]["le"]: float(r["value"][1]) for r in buckets}
    assert got == {"0.1": 10.0, "0.5": 30.0, "1.0": 40.0, "+Inf": 40.0}
    (count,) = prom.wait_for('example_latency_seconds_count{job="monbridge"}')
    assert float(count["value"][1]) == 40.0
    (median,) = prom.wait_for('histogram_quantile(0.5, example_latency_seconds_bucket{job="monbridge"})')
    # Rank 20 of 40 falls 10/20 of the way through the (0.1, 0.5] bucket.
    assert float(median["value"][1]) == pytest.approx(0.3)

    # And the body is clean for promtool.
    status, _, body = mb.get("/metrics")
    assert status == 200
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert lint.returncode == 0 and lint.stdout == b"" and lint.stderr == b"", lint.stdout + lint.stderr
