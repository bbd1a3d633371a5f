"""Round trips through a full agent (``python -m bridge.cli run``) with one
``monitoring.integration.datadog`` plugin: what Datadog's own clients send in (the ``datadog``
package's ``DogStatsd`` over UDP, ``datadog-api-client`` to the intake) checked value by value in
the payloads the export sends to the receiving Datadog API of ``test_datadog_export`` (which
deserializes each with datadog-api-client's models and refuses what they refuse).

What Datadog would show, and what does not round-trip: the host of a DogStatsD metric (the
client sends none) is the export's ``hostname``, or the tag ``host:h``'s (as the Agent does it);
a tag ``k:v`` comes out as ``k:v``; a bare tag ``flag``, the attribute ``unnamed_flag=flag`` in
the pipeline (a Prometheus label needs a name), comes out as ``flag`` again; a key given twice
(``team:a``, ``team:b``), one attribute ``team=a,b`` in the pipeline, comes out as the one tag
``team:a,b`` (that does not round-trip: the export cannot tell it from a value with a comma).
A distribution's values come out as the values of their DDSketch buckets (within the sketch's
relative accuracy), its count and sum exact; an intake rate comes out as a gauge of the same
per-second value. An intake count's first point arrives whole, though its window starts before the
exporter's first run (the pipeline marks the totals it built from delta pushes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v1.api.service_checks_api import ServiceChecksApi
from datadog_api_client.v1.model.service_check import ServiceCheck
from datadog_api_client.v1.model.service_check_status import ServiceCheckStatus
from datadog_api_client.v1.model.service_checks import ServiceChecks
from datadog_api_client.v2.api.metrics_api import MetricsApi
from datadog_api_client.v2.model.metric_intake_type import MetricIntakeType
from datadog_api_client.v2.model.metric_payload import MetricPayload
from datadog_api_client.v2.model.metric_point import MetricPoint
from datadog_api_client.v2.model.metric_resource import MetricResource
from datadog_api_client.v2.model.metric_series import MetricSeries

from tests.integration.conftest import REPO_ROOT, wait_until
from tests.integration.test_datadog_export import KEY, DatadogApi, dd_api  # noqa: F401 - dd_api: the fixture
from tests.integration.test_dogstatsd import _alerts as alerts
from tests.integration.test_dogstatsd import _metrics_text as metrics_text
from tests.integration.test_dogstatsd import _sample as sample

pytestmark = pytest.mark.integration

INTAKE_KEY = "in7a4e0123456789abcdef0123456789"
COUNT, RATE, GAUGE = 1, 2, 3
#: The DDSketch mapping's relative accuracy (gamma = 2^(1/32)), and a hair for a value at a bucket's bound.
ACCURACY = (2 ** (1 / 32) - 1) / (2 ** (1 / 32) + 1) * (1 + 1e-9)


# --------------------------------------------------------------------------- helpers


def make_client(port: int) -> Any:
    """Datadog's DogStatsd client, buffering: what is sent between ``open_buffer`` and
    ``close_buffer`` goes as one datagram, so it falls into one flush interval."""
    from datadog.dogstatsd.base import DogStatsd

    return DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True, disable_buffering=False,
                     disable_aggregation=True, origin_detection_enabled=False)


def one_datagram(client: Any, send: Callable[[], None]) -> None:
    client.open_buffer()
    send()
    client.close_buffer()


def intake_client(url: str, key: str = INTAKE_KEY) -> ApiClient:
    cfg = Configuration(host=url)
    cfg.api_key["apiKeyAuth"] = key
    return ApiClient(cfg)


def plugin(export: dict[str, Any] | None = None, **parts: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"interval": 0.5, **parts}
    if export is not None:
        config["export"] = export
    return {"plugin_id": "monitoring.integration.datadog", "config": config}


def export_section(api: DatadogApi, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return {"url": api.url, "api_key": KEY, "interval": 0.5, "hostname": "testhost", "tags": ["env:ci"],
            "queue": {"path": str(tmp_path / "ddq"), "min_backoff": 0.05, "max_backoff": 0.2}, **kw}


def points(api: DatadogApi, name: str, kind: int) -> list[tuple[float, dict[str, Any]]]:
    """(value, series) of every point of ``name`` of type ``kind`` the server took, in order."""
    return [(p["value"], s) for s in api.series(name) if s.get("type") == kind for p in s["points"]]


def total(api: DatadogApi, name: str) -> float:
    return sum(v for v, _ in points(api, name, COUNT))


def last(api: DatadogApi, name: str, kind: int = GAUGE) -> float | None:
    got = points(api, name, kind)
    return got[-1][0] if got else None


def settle(api: DatadogApi, rounds: int = 3) -> None:
    """Let ``rounds`` more exports reach the server (nothing sent twice shows then)."""
    n = len(api.docs("/api/v2/series"))
    wait_until(lambda: len(api.docs("/api/v2/series")) >= n + rounds, what=f"{rounds} more exports")


# --------------------------------------------------------------------------- DogStatsD → Datadog


def test_dogstatsd_to_datadog_payloads(dd_api, run_monbridge, free_port, tmp_path, monkeypatch):  # noqa: F811
    import datadog.dogstatsd.base

    monkeypatch.setattr(datadog.dogstatsd.base, "random", lambda: 0.0)  # the client sends every sampled value
    port = free_port()
    run_monbridge({"plugins": [plugin(export_section(dd_api, tmp_path),
                                      dogstatsd={"listen_udp": f"127.0.0.1:{port}", "flush_interval": 0.5})]})
    client = make_client(port)
    tags = ["svc:shop", "flag"]
    # counters: 3 + 5/0.25 + 2/0.5 = 27 in all, sent in two intervals apart

    def counts() -> None:
        for _ in range(3):
            client.increment("rt.hits", tags=tags)
        client.count("rt.hits", 5, sample_rate=0.25, tags=tags)

    one_datagram(client, counts)
    wait_until(lambda: total(dd_api, "rt.hits") == 23, what="the first counts at the Datadog API")
    one_datagram(client, lambda: client.increment("rt.hits", 2, sample_rate=0.5, tags=tags))

    def rest() -> None:
        client.gauge("rt.temp", 20.5, tags=tags)
        client.gauge("rt.temp", 21.5, tags=tags)  # the interval's last value
        for user in ("ann", "bob", "ann", "cy"):
            client.set("rt.users", user, tags=tags)
        client.gauge("rt.remote", 1.0, tags=["host:web9", "svc:shop"])  # a host tag: the series' host

    one_datagram(client, rest)

    def histograms() -> None:
        for v in range(1, 11):
            client.histogram("rt.lat", v, tags=tags)
        for ms in (100, 200, 300):
            client.timing("rt.query", ms, sample_rate=0.5, tags=tags)  # each weighs 2

    one_datagram(client, histograms)
    sent = [0.5, 1.0, 3.0, 7.25, 150.0, 1000.0, 1000.0, 123456.0]
    one_datagram(client, lambda: [client.distribution("rt.size", v, tags=tags) for v in sent])
    client.close_socket()

    wait_until(lambda: total(dd_api, "rt.hits") == 27, what="every count at the Datadog API")
    wait_until(lambda: dd_api.distributions("rt.size") and last(dd_api, "rt.users") is not None
               and last(dd_api, "rt.query.avg") is not None, what="every type at the Datadog API")
    settle(dd_api)
    # counts: deltas adding up to what was sent scaled by the rates, the first interval's included, none twice
    assert total(dd_api, "rt.hits") == 27
    assert [v for v, _ in points(dd_api, "rt.hits", COUNT) if v] == [23, 4]
    (_, hits), *_ = points(dd_api, "rt.hits", COUNT)
    assert hits["interval"] > 0
    # host and tags as Datadog shows them: the export's host; k:v and the bare flag as sent, the export's own
    assert hits["resources"] == [{"name": "testhost", "type": "host"}]
    assert sorted(hits["tags"]) == ["env:ci", "flag", "svc:shop"]
    # gauges: the last value; a set its cardinality
    assert last(dd_api, "rt.temp") == 21.5 and 20.5 not in [v for v, _ in points(dd_api, "rt.temp", GAUGE)]
    assert last(dd_api, "rt.users") == 3
    ((remote, series), *_) = points(dd_api, "rt.remote", GAUGE)
    assert remote == 1.0 and series["resources"] == [{"name": "web9", "type": "host"}]
    assert sorted(series["tags"]) == ["env:ci", "svc:shop"]
    # a histogram: the Agent's aggregates and percentile as gauges, its count as counts
    lat = {agg: last(dd_api, f"rt.lat.{agg}") for agg in ("max", "median", "avg", "95percentile")}
    assert lat == {"max": 10, "median": 5, "avg": 5.5, "95percentile": 10}
    assert total(dd_api, "rt.lat.count") == 10
    # a timer at rate 0.5: each value weighs 2
    query = {agg: last(dd_api, f"rt.query.{agg}") for agg in ("max", "median", "avg", "95percentile")}
    assert query == {"max": 300, "median": 200, "avg": 200, "95percentile": 300}
    assert total(dd_api, "rt.query.count") == 6
    # a distribution: its sketch's values, each within the relative accuracy; count and sum exact
    (dist,) = dd_api.distributions("rt.size")
    assert dist["host"] == "testhost" and sorted(dist["tags"]) == ["env:ci", "flag", "svc:shop"]
    ((_, values),) = dist["points"]
    assert sorted(values) == pytest.approx(sorted(sent), rel=ACCURACY)
    assert total(dd_api, "rt.size.count") == len(sent)
    assert total(dd_api, "rt.size.sum") == sum(sent)
    assert not dd_api.refused


# --------------------------------------------------------------------------- intake → Datadog


def _submit_series(url: str, now: int, count: float, gauge: float, rate: float) -> None:
    host = [MetricResource(name="web1", type="host")]
    tags = ["env:prod", "role:db", "canary", "team:b", "team:a"]
    with intake_client(url) as c:
        MetricsApi(c).submit_metrics(body=MetricPayload(series=[
            MetricSeries(metric="in.orders", type=MetricIntakeType.COUNT, interval=10, resources=host, tags=tags,
                         points=[MetricPoint(timestamp=now, value=count)]),
            MetricSeries(metric="in.temp", type=MetricIntakeType.GAUGE, resources=host, tags=tags,
                         points=[MetricPoint(timestamp=now, value=gauge)]),
            MetricSeries(metric="in.bytes", type=MetricIntakeType.RATE, interval=10, resources=host, tags=tags,
                         points=[MetricPoint(timestamp=now, value=rate)]),
        ]))


def _intake_round_trip(api: DatadogApi, run_monbridge: Any, free_port: Any, tmp_path: Path) -> None:
    """Two submissions 10 s apart (as an Agent's counts of interval 10) through a full agent."""
    intake_port = free_port()
    run_monbridge({"plugins": [plugin(export_section(api, tmp_path),
                                      intake={"listen": f"127.0.0.1:{intake_port}", "api_keys": [INTAKE_KEY]})]})
    url = f"http://127.0.0.1:{intake_port}"
    now = int(time.time())
    _submit_series(url, now, 3.0, 21.5, 12.5)
    wait_until(lambda: last(api, "in.temp") == 21.5, what="the gauge at the Datadog API")
    settle(api, 2)
    _submit_series(url, now + 10, 4.0, 22.0, 2.5)
    wait_until(lambda: last(api, "in.temp") == 22.0 and last(api, "in.bytes") == 2.5,
               what="the second submission at the Datadog API")
    settle(api)


def test_intake_series_to_datadog_payloads(dd_api, run_monbridge, free_port, tmp_path):  # noqa: F811
    """v2 series from datadog-api-client: a gauge as a gauge, a rate as a gauge of the same
    per-second value (the intake's mapping), a count as count deltas (after the first, see the
    next test); the host resource as the host, the tags as sent plus the export's."""
    _intake_round_trip(dd_api, run_monbridge, free_port, tmp_path)
    assert [v for v, _ in points(dd_api, "in.temp", GAUGE)][0] == 21.5
    assert [v for v, _ in points(dd_api, "in.bytes", GAUGE)][0] == 12.5
    assert not points(dd_api, "in.bytes", RATE) and not points(dd_api, "in.orders", GAUGE)
    counts = [(v, s) for v, s in points(dd_api, "in.orders", COUNT) if v]
    assert counts[-1][0] == 4.0 and counts[-1][1]["interval"] == 10
    assert sum(v for v, _ in points(dd_api, "in.orders", COUNT)) <= 7.0  # nothing sent twice
    for name in ("in.orders", "in.temp", "in.bytes"):
        (_, s), *_ = points(dd_api, name, COUNT if name == "in.orders" else GAUGE)
        assert s["resources"] == [{"name": "web1", "type": "host"}], name
        assert sorted(s["tags"]) == ["canary", "env:ci", "env:prod", "role:db", "team:a,b"], name
    assert not dd_api.refused


def test_intake_counts_arrive_whole_the_first_included(dd_api, run_monbridge, free_port, tmp_path):  # noqa: F811
    """Count deltas equal to the submitted counts: 3 then 4, none lost, none twice."""
    _intake_round_trip(dd_api, run_monbridge, free_port, tmp_path)
    assert [v for v, _ in points(dd_api, "in.orders", COUNT) if v] == [3.0, 4.0]


# --------------------------------------------------------------------------- all three parts at once


def test_all_parts_in_one_plugin(dd_api, run_monbridge, free_port, tmp_path):  # noqa: F811
    """DogStatsD and intake series side by side on /metrics and at the Datadog API, each part
    expiring only its own series; a service check CRITICAL (DogStatsD) and a check run CRITICAL
    (intake) each an alert, an event and a check run at the Datadog API; OK resolves both."""
    dsd_port, intake_port = free_port(), free_port()
    mb = run_monbridge({
        "alerting": {"import_interval": 0.5, "state_dir": str(tmp_path / "alerts")},
        "plugins": [plugin(export_section(dd_api, tmp_path),
                           dogstatsd={"listen_udp": f"127.0.0.1:{dsd_port}", "flush_interval": 0.5,
                                      "expire_after": 6},
                           intake={"listen": f"127.0.0.1:{intake_port}", "api_keys": [INTAKE_KEY],
                                   "expire_after": 2})]})
    url = f"http://127.0.0.1:{intake_port}"
    client = make_client(dsd_port)

    def intake_gauge(value: float) -> None:
        with intake_client(url) as c:
            MetricsApi(c).submit_metrics(body=MetricPayload(series=[MetricSeries(
                metric="both.intake", type=MetricIntakeType.GAUGE, tags=["via:intake"],
                points=[MetricPoint(timestamp=int(time.time()), value=value)])]))

    one_datagram(client, lambda: client.gauge("both.dsd", 7.0, tags=["via:dsd"]))
    intake_gauge(8.0)
    wait_until(lambda: last(dd_api, "both.dsd") == 7.0 and last(dd_api, "both.intake") == 8.0,
               what="both parts' series at the Datadog API")
    text = metrics_text(mb)
    assert sample(text, "both_dsd", 'via="dsd"') == 7.0 and sample(text, "both_intake", 'via="intake"') == 8.0
    # the intake's expiry (2 s) takes its series, not DogStatsD's (6 s)
    wait_until(lambda: sample(metrics_text(mb), "both_intake", 'via="intake"') is None, what="the intake's expiry")
    assert sample(metrics_text(mb), "both_dsd", 'via="dsd"') == 7.0
    # DogStatsD's expiry takes its series, not the intake's (kept fresh)
    deadline = time.monotonic() + 30
    while sample(metrics_text(mb), "both_dsd", 'via="dsd"') is not None:
        assert time.monotonic() < deadline, "DogStatsD's series never expired"
        intake_gauge(9.0)
        time.sleep(0.5)
    intake_gauge(9.0)
    wait_until(lambda: sample(metrics_text(mb), "both_intake", 'via="intake"') == 9.0, what="the intake's gauge")

    # alerts: one from each part
    one_datagram(client, lambda: client.service_check("dsd.db", client.CRITICAL, tags=["via:dsd"], hostname="db1",
                                                       message="db down"))

    def check_run(status: ServiceCheckStatus) -> None:
        with intake_client(url) as c:
            ServiceChecksApi(c).submit_service_check(body=ServiceChecks([ServiceCheck(
                check="intake.disk", host_name="web1", status=status, tags=["via:intake"], message="disk")]))

    check_run(ServiceCheckStatus.CRITICAL)
    firing = wait_until(lambda: {a["name"]: a for a in alerts(mb, "active")
                                 if a["name"] in ("dsd.db", "intake.disk")}.keys() == {"dsd.db", "intake.disk"}
                        and {a["name"]: a for a in alerts(mb, "active")}, what="an alert of each part")
    assert firing["dsd.db"]["severity"] == "critical" and firing["dsd.db"]["labels"]["host"] == "db1"
    assert firing["intake.disk"]["severity"] == "critical" and firing["intake.disk"]["labels"]["host"] == "web1"

    def check_runs(name: str) -> list[dict[str, Any]]:
        return [c for d in dd_api.docs("/api/v1/check_run") for c in d if c["check"] == f"monbridge.alert.{name}"]

    def events(name: str) -> list[dict[str, Any]]:
        keys = {firing[name]["fingerprint"]} if "fingerprint" in firing[name] else set()
        return [e for e in dd_api.docs("/api/v1/events")
                if e.get("aggregation_key") in keys or name in e.get("title", "")]

    for name, host in (("dsd.db", "db1"), ("intake.disk", "web1")):
        wait_until(lambda n=name: check_runs(n) and events(n), what=f"{name}'s event and check run")
        (run,) = check_runs(name)
        assert (run["status"], run["host_name"]) == (2, host)
        (event,) = events(name)
        assert event["alert_type"] == "error" and event["host"] == host

    one_datagram(client, lambda: client.service_check("dsd.db", client.OK, tags=["via:dsd"], hostname="db1"))
    check_run(ServiceCheckStatus.OK)
    client.close_socket()
    wait_until(lambda: not [a for a in alerts(mb, "active") if a["name"] in ("dsd.db", "intake.disk")],
               what="both alerts resolved")
    for name in ("dsd.db", "intake.disk"):
        wait_until(lambda n=name: [c["status"] for c in check_runs(n)] == [2, 0], what=f"{name}'s OK check run")
        assert [e["alert_type"] for e in events(name)] == ["error", "success"]
    assert not dd_api.refused


# --------------------------------------------------------------------------- the keys


def test_the_api_keys_are_in_no_log_line_or_api_output(dd_api, run_monbridge, free_port, tmp_path):  # noqa: F811
    """The intake's key and the export's key, given in the environment, never in the agent's log
    (at debug, with refusals of a wrong key and Datadog answers that echo the key), in
    /api/v1/plugins or /metrics, or in what ``validate`` and ``run`` print of a config, valid or not."""
    dsd_port, intake_port = free_port(), free_port()
    config = {"plugins": [plugin({**export_section(dd_api, tmp_path), "api_key": None},
                                 dogstatsd={"listen_udp": f"127.0.0.1:{dsd_port}", "flush_interval": 0.5},
                                 intake={"listen": f"127.0.0.1:{intake_port}", "api_keys": ["${DD_INTAKE_KEY}"]})]}
    env = {"DD_API_KEY": KEY, "DD_INTAKE_KEY": INTAKE_KEY}
    dd_api.answer("/api/v2/series", 503, f"upstream said: DD-API-KEY={KEY}")
    dd_api.answer("/api/v2/series", 400, f"bad request for key {KEY}")
    mb = run_monbridge(config, args=["--log-level", "debug"], env=env)
    url = f"http://127.0.0.1:{intake_port}"
    with intake_client(url) as c:
        MetricsApi(c).submit_metrics(body=MetricPayload(series=[MetricSeries(
            metric="k.g", type=MetricIntakeType.GAUGE, points=[MetricPoint(timestamp=int(time.time()), value=1.0)])]))
    from datadog_api_client.exceptions import ForbiddenException

    with intake_client(url, key=INTAKE_KEY[::-1]) as c, pytest.raises(ForbiddenException):
        MetricsApi(c).submit_metrics(body=MetricPayload(series=[MetricSeries(
            metric="k.g", type=MetricIntakeType.GAUGE, points=[MetricPoint(timestamp=int(time.time()), value=1.0)])]))
    wait_until(lambda: last(dd_api, "k.g") == 1.0, what="the intake's series at the Datadog API")
    assert "upstream said" in mb.log_text() and "bad request for key" in mb.log_text()
    status, _, body = mb.get("/api/v1/plugins")
    assert status == 200 and b"monitoring.integration.datadog" in body
    outputs = {"log": mb.log_text(), "/api/v1/plugins": body.decode(), "/metrics": metrics_text(mb)}
    # the config as checked: valid, and with errors next to each key (a key of the wrong type)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"plugins": [plugin(
        {**export_section(dd_api, tmp_path), "api_key": ["${DD_API_KEY}"], "url": "ftp://nowhere"},
        intake={"listen": "127.0.0.1:0", "api_keys": "${DD_INTAKE_KEY}"})]}))
    for name, path, code in (("validate", mb.config_path, 0), ("validate (invalid)", bad, 2), ("run (invalid)", bad, 2)):
        done = subprocess.run([sys.executable, "-m", "bridge.cli", name.split()[0], "--config", str(path)],
                              capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env={**os.environ, **env})
        assert done.returncode == code, (name, done.stdout, done.stderr)
        outputs[name] = done.stdout + done.stderr
    assert "api_keys" in outputs["validate (invalid)"] and "api_key" in outputs["run (invalid)"]
    for where, text in outputs.items():
        for key in (KEY, INTAKE_KEY):
            assert key not in text, f"a key in {where}"

