"""OTLP receive end to end: OpenTelemetry SDK applications (``otlp_sdk_app.py``, the SDK's own
OTLP exporters over gRPC and HTTP, cumulative and delta) push to monbridge; the real Prometheus
2.42 scrapes monbridge's ``/metrics`` and receives its remote write. Every point the apps
recorded is read back from Prometheus, both ways, with its type and labels; a client that stops
pushing has its series expire, and Prometheus sees them go stale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
APP = HERE / "otlp_sdk_app.py"
sys.path.insert(0, str(HERE))
from otlp_sdk_app import BOUNDS, ROUNDS  # noqa: E402

# The apps' resource: job from service.namespace/service.name, the rest on target_info.
JOB = "demo/shop"
SCOPE = {"otel_scope_name": "app", "otel_scope_version": "1.0"}
CLIENTS = [("http", "cumulative"), ("http", "delta"), ("grpc", "cumulative"), ("grpc", "delta")]


def run_app(protocol: str, endpoint: str, temporality: str, instance: str) -> None:
    out = subprocess.run([sys.executable, str(APP), protocol, endpoint, temporality, instance],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert results == [{"exported": True}] * len(ROUNDS), (results, out.stderr)


def monbridge_config(free_port, prom_url: str, tmp_path: Path, expire_after: float = 300) -> tuple[dict, int, int]:
    grpc_port, http_port = free_port(), free_port()
    return {
        "plugins": [
            {"plugin_id": "monitoring.integration.otlp", "config": {
                "interval": 0.5,
                "receive": {"grpc": {"listen": f"127.0.0.1:{grpc_port}"}, "http": {"listen": f"127.0.0.1:{http_port}"},
                            "expire_after": expire_after}}},
            {"plugin_id": "monitoring.integration.prometheus", "config": {
                "interval": 0.5,
                "remote_write": [{"url": f"{prom_url}/api/v1/write", "queue": {
                    "path": str(tmp_path / "rwq"), "batch_send_deadline": 0.1}}]}},
        ],
    }, grpc_port, http_port


def start_prometheus(prometheus_server, free_port):
    """Prometheus receiving remote write, and scraping monbridge (its port chosen now) with
    ``honor_labels`` (the pushed targets' job and instance are kept) and ``via="scrape"`` added,
    so the scraped and the remote-written copies of a series can be told apart."""
    mb_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "monbridge", "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{mb_port}"]}],
            "metric_relabel_configs": [{"target_label": "via", "replacement": "scrape"}],
        }],
    }
    return prometheus_server(config=config, extra_args=["--web.enable-remote-write-receiver"]), mb_port


def values(prom, selector: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in prom.query(selector)}


def expected_series(instance: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every Prometheus sample the app's recordings make, by metric name: (labels, value)."""
    base = {"job": JOB, "instance": instance, **SCOPE}
    route = {**base, "route": "/a"}
    latency = [v for r in ROUNDS for v in r["latency"]]
    sizes = [v for r in ROUNDS for v in r["size"]]
    out: dict[str, list[tuple[dict[str, str], float]]] = {
        "app_requests_total": [(route, float(sum(v for r in ROUNDS for v in r["requests"])))],
        "app_queue_depth": [(route, float(sum(v for r in ROUNDS for v in r["queue"])))],
        "app_temperature_celsius": [({**base, "room": "a"}, ROUNDS[-1]["temperature"])],
        "app_latency_seconds_count": [(route, float(len(latency)))],
        "app_latency_seconds_sum": [(route, sum(latency))],
        "app_latency_seconds_bucket": [({**route, "le": le}, float(sum(1 for v in latency if v <= b)))
                                       for le, b in [(repr(b), b) for b in BOUNDS] + [("+Inf", float("inf"))]],
        "app_size_bytes_count": [(route, float(len(sizes)))],
        "app_size_bytes_sum": [(route, float(sum(sizes)))],
        "target_info": [({"job": JOB, "instance": instance, "deployment_environment": "test",
                          "telemetry_sdk_language": "python", "telemetry_sdk_name": "opentelemetry"}, 1.0)],
    }
    return out


def check_client(prom, instance: str, via: str) -> None:
    sel = f'instance="{instance}",via="{via}"'
    for name, samples in expected_series(instance).items():
        got = values(prom, f"{name}{{{sel}}}")
        for labels, value in samples:
            want = {**labels, "__name__": name, **({"via": via} if via else {})}
            match = [v for k, v in got.items() if all(dict(k).get(n) == x for n, x in want.items())]
            assert match == [pytest.approx(value)], (name, want, got)
            if name != "target_info":  # target_info also carries the SDK's version
                assert any(dict(k) == want for k in got), (name, want, got)
    # The exponential histogram's buckets: each boundary counts exactly the values at or under it.
    sizes = [v for r in ROUNDS for v in r["size"]]
    buckets = prom.query(f"app_size_bytes_bucket{{{sel}}}")
    assert len(buckets) >= 4, buckets
    for r in buckets:
        le = float(r["metric"]["le"])
        assert float(r["value"][1]) == sum(1 for v in sizes if v <= le), (le, r)
    # Types as Prometheus took them (metadata from the scrape).
    if via == "scrape":
        _, _, body = prom.get("/api/v1/metadata")
        meta = json.loads(body)["data"]
        assert meta["app_requests"][0]["type"] == "counter"  # OpenMetrics: the family is named without _total
        assert meta["app_queue_depth"][0]["type"] == "gauge"
        assert meta["app_latency_seconds"][0]["type"] == "histogram"
        assert meta["app_size_bytes"][0]["type"] == "histogram"
        assert meta["app_temperature_celsius"][0]["type"] == "gauge"


def test_sdk_apps_over_grpc_and_http_reach_prometheus(prometheus_server, run_monbridge, free_port, tmp_path,
                                                      require_binary):
    prom, mb_port = start_prometheus(prometheus_server, free_port)
    config, grpc_port, http_port = monbridge_config(free_port, prom.url, tmp_path)
    config["server"] = {"listen": f"127.0.0.1:{mb_port}"}
    mb = run_monbridge(config)
    for protocol, temporality in CLIENTS:
        endpoint = f"127.0.0.1:{grpc_port}" if protocol == "grpc" else f"http://127.0.0.1:{http_port}/v1/metrics"
        run_app(protocol, endpoint, temporality, f"{protocol}-{temporality}")
    _, _, text = mb.get("/metrics")
    assert b"monbridge_otlp_receive_points_total" in text
    # The exposition with every pushed kind passes promtool's lint.
    lint = subprocess.run([require_binary("promtool"), "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, b""), lint
    for protocol, temporality in CLIENTS:
        instance = f"{protocol}-{temporality}"
        wait_until(lambda i=instance: prom.query(f'app_size_bytes_count{{instance="{i}",via="scrape"}}')
                   and prom.query(f'app_size_bytes_count{{instance="{i}",via=""}}'), 30, f"{instance}'s series")
        for via in ("scrape", ""):
            wait_until(lambda i=instance, v=via: _settled(prom, i, v), 30, f"{instance}'s final values ({via or 'remote write'})")
            check_client(prom, instance, via)
    # Nothing was rejected.
    assert not prom.query('monbridge_otlp_receive_points_total{result="rejected"} > 0')


def _settled(prom, instance: str, via: str) -> bool:
    got = values(prom, f'app_requests_total{{instance="{instance}",via="{via}"}}')
    return list(got.values()) == [7.0]


def test_a_client_that_stops_expires_and_goes_stale(prometheus_server, run_monbridge, free_port, tmp_path):
    prom, mb_port = start_prometheus(prometheus_server, free_port)
    config, _, http_port = monbridge_config(free_port, prom.url, tmp_path, expire_after=8)
    config["server"] = {"listen": f"127.0.0.1:{mb_port}"}
    mb = run_monbridge(config)
    run_app("http", f"http://127.0.0.1:{http_port}/v1/metrics", "delta", "gone")
    for via in ("scrape", ""):
        # Samples over the last minutes, not the instant value: on a busy machine the series may
        # already have expired (and gone stale) by the time this first asks.
        wait_until(lambda v=via: prom.query(f'count_over_time(app_requests_total{{instance="gone",via="{v}"}}[5m])'),
                   30, f"the series ({via or 'remote write'})")
    # No more pushes: after expire_after the series leave /metrics, and Prometheus marks them stale
    # (the scrape no longer has them; remote write sends staleness markers), well before its
    # 5-minute lookback would drop them.
    wait_until(lambda: b'instance="gone"' not in mb.get("/metrics")[2], 30, "the series to leave /metrics")
    for via in ("scrape", ""):
        wait_until(lambda v=via: not prom.query(f'app_requests_total{{instance="gone",via="{v}"}}')
                   and not prom.query(f'app_size_bytes_bucket{{instance="gone",via="{v}"}}'), 20,
                   f"staleness ({via or 'remote write'})")
    # What expired is counted: the app's five series and its target_info.
    _, _, text = mb.get("/metrics")
    expired = [line for line in text.decode().splitlines() if line.startswith("monbridge_series_expired_total")]
    assert expired and float(expired[0].split()[-1]) >= 6, expired


def test_exponential_histograms_remote_written_as_native_histograms(prometheus_server, run_monbridge, free_port,
                                                                     tmp_path):
    """With ``send_native_histograms`` the exponential histograms reach Prometheus (native
    histograms on) as native histograms: count, sum and every bucket as the app recorded them;
    when the client stops they go stale."""
    prom = prometheus_server(config={"global": {"scrape_interval": "15s"}, "scrape_configs": []},
                             extra_args=["--web.enable-remote-write-receiver", "--enable-feature=native-histograms"])
    config, _, http_port = monbridge_config(free_port, prom.url, tmp_path, expire_after=4)
    config["plugins"][1]["config"]["remote_write"][0]["send_native_histograms"] = True
    mb = run_monbridge(config)
    run_app("http", f"http://127.0.0.1:{http_port}/v1/metrics", "delta", "native")
    sizes = [v for r in ROUNDS for v in r["size"]]

    def histogram():
        result = prom.query('app_size_bytes{instance="native"}')
        return result[0] if result and "histogram" in result[0] else None

    found = wait_until(lambda: (h := histogram()) and float(h["histogram"][1]["count"]) == len(sizes) and h,
                       30, "the native histogram with every value")
    assert found["metric"] == {"__name__": "app_size_bytes", "instance": "native", "job": JOB, "route": "/a", **SCOPE}
    h = found["histogram"][1]
    assert float(h["sum"]) == sum(sizes)
    # Each bucket (boundary rule, lower, upper, count) counts exactly the values that fall in it.
    for rule, lower, upper, count in h["buckets"]:
        lo, hi = float(lower), float(upper)
        inside = [v for v in sizes if (lo < v or (rule in (1, 3) and v == lo)) and (v < hi or (rule in (0, 3) and v == hi))]
        assert float(count) == len(inside), (rule, lower, upper, count)
    assert sum(float(b[3]) for b in h["buckets"]) == len(sizes)
    # No explicit-bucket copy went to this writer.
    assert not prom.query('app_size_bytes_bucket{instance="native"}')
    # The client is gone: the native histogram goes stale.
    wait_until(lambda: b'instance="native"' not in mb.get("/metrics")[2], 20, "expiry")
    wait_until(lambda: not prom.query('app_size_bytes{instance="native"}'), 20, "the native histogram's staleness")
