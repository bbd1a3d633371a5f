"""monitoring.metrics.cloudwatch against moto's CloudWatch in server mode (a real emulator of the AWS
API, on a loopback port): data put with PutMetricData comes back through GetMetricData with the
values the statistics give, in as many calls as the API's limits need; a failing endpoint is
``up`` 0 with its reason. Credentials come from the standard chain (the environment here)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

import boto3
import pytest
from moto.server import ThreadedMotoServer

from collectors.cloudwatch import CloudWatchCollector

REGION = "eu-west-1"


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Credentials for the standard chain from the environment, and no shared files read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-testing-key")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def moto_server(free_port, aws_env):
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def collect(config: dict) -> dict[tuple, object]:
    async def run():
        c = CloudWatchCollector()
        await c.initialize(config)
        try:
            return await c.collect_metrics()
        finally:
            await c.shutdown()

    return {(m.name, tuple(sorted(m.attributes.items()))): m for m in asyncio.run(run())}


def put(endpoint: str, namespace: str, name: str, dimensions: dict[str, str], points: list[tuple[datetime, float]]):
    client = boto3.client("cloudwatch", endpoint_url=endpoint, region_name=REGION)
    client.put_metric_data(Namespace=namespace, MetricData=[
        {"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
         "Timestamp": ts, "Value": v} for ts, v in points])


def minute(offset: int) -> datetime:
    """The start of the minute ``offset`` minutes from now's, UTC."""
    now = int(time.time()) // 60 * 60
    return datetime.fromtimestamp(now + offset * 60, UTC)


def test_put_data_comes_back_with_its_statistics(moto_server):
    older, newest = minute(-8), minute(-5)
    put(moto_server, "AWS/EC2", "CPUUtilization", {"InstanceId": "i-0abc"},
        [(older, 90.0), (newest, 10.0), (newest.replace(second=20), 20.0), (newest.replace(second=40), 60.0)])
    put(moto_server, "Backup/Jobs", "NetworkIn", {"Host": "db-1", "Tier": "gold"}, [(newest, 1234.0)])
    got = collect({"region": REGION, "endpoint_url": moto_server, "delay": 180, "range": 600, "metrics": [
        {"namespace": "AWS/EC2", "name": "CPUUtilization", "dimensions": {"InstanceId": "i-0abc"},
         "statistics": ["Average", "Sum", "Minimum", "Maximum", "SampleCount"]},
        {"namespace": "Backup/Jobs", "name": "NetworkIn", "dimensions": {"Host": "db-1", "Tier": "gold"},
         "statistics": ["Sum"]},
        {"namespace": "AWS/EC2", "name": "CPUUtilization", "dimensions": {"InstanceId": "i-none"}},
    ]})
    i = (("instance_id", "i-0abc"),)
    values = {name: got[(name, i)].value for name in (
        "aws_ec2_cpuutilization_average", "aws_ec2_cpuutilization_sum", "aws_ec2_cpuutilization_minimum",
        "aws_ec2_cpuutilization_maximum", "aws_ec2_cpuutilization_sample_count")}
    # the newest minute with data in the window, not the older one
    assert values == {"aws_ec2_cpuutilization_average": 30.0, "aws_ec2_cpuutilization_sum": 90.0,
                      "aws_ec2_cpuutilization_minimum": 10.0, "aws_ec2_cpuutilization_maximum": 60.0,
                      "aws_ec2_cpuutilization_sample_count": 3.0}
    m = got[("aws_ec2_cpuutilization_average", i)]
    assert m.timestamp_ns == int(newest.timestamp()) * 10**9  # the data point's own time
    assert got[("backup_jobs_network_in_sum", (("host", "db-1"), ("tier", "gold")))].value == 1234.0
    assert ("aws_ec2_cpuutilization_average", (("instance_id", "i-none"),)) not in got
    r = (("region", REGION),)
    assert got[("aws_cloudwatch_up", r)].value == 1.0
    assert got[("aws_cloudwatch_requests_total", r)].value == 1.0  # 7 queries, one window: one call
    assert got[("aws_cloudwatch_queries_without_data", r)].value == 1.0


def test_data_newer_than_the_delay_is_not_read(moto_server):
    put(moto_server, "Fresh", "Value", {}, [(minute(-1), 5.0), (minute(-6), 3.0)])
    got = collect({"region": REGION, "endpoint_url": moto_server, "delay": 240, "range": 600,
                   "metrics": [{"namespace": "Fresh", "name": "Value"}]})
    assert got[("fresh_value_average", ())].value == 3.0  # the minute 1 min ago is still being filled


def test_many_queries_are_sent_in_calls_of_at_most_500(moto_server):
    t = minute(-5)
    client = boto3.client("cloudwatch", endpoint_url=moto_server, region_name=REGION)
    for start in range(0, 300, 20):  # PutMetricData takes 1000 items, 20 metrics of 1 point each is plenty
        client.put_metric_data(Namespace="Fleet", MetricData=[
            {"MetricName": "Load", "Dimensions": [{"Name": "Node", "Value": f"n{k}"}], "Timestamp": t, "Value": float(k)}
            for k in range(start, start + 20)])
    calls: list[int] = []
    boto3.DEFAULT_SESSION = None

    metrics = [{"namespace": "Fleet", "name": "Load", "dimensions": {"Node": f"n{k}"}, "statistics": ["Average", "Sum"]}
               for k in range(300)]  # 600 queries

    async def run():
        c = CloudWatchCollector()
        await c.initialize({"region": REGION, "endpoint_url": moto_server, "delay": 120, "metrics": metrics})
        c._client.meta.events.register(
            "provide-client-params.cloudwatch.GetMetricData",
            lambda params, **kw: calls.append(len(params["MetricDataQueries"])))
        return await c.collect_metrics()

    got = {(m.name, tuple(sorted(m.attributes.items()))): m for m in asyncio.run(run())}
    assert calls == [500, 100]
    assert all(got[("fleet_load_average", (("node", f"n{k}"),))].value == float(k) for k in range(300))
    assert got[("fleet_load_sum", (("node", "n299"),))].value == 299.0


def test_an_endpoint_that_fails_is_up_0_with_its_reason(free_port, aws_env, caplog):
    port = free_port()  # nothing listens there
    with caplog.at_level(logging.WARNING, "monbridge.collectors.cloudwatch"):
        got = collect({"region": REGION, "endpoint_url": f"http://127.0.0.1:{port}", "timeout": 2,
                       "metrics": [{"namespace": "AWS/EC2", "name": "CPUUtilization"}]})
    r = (("region", REGION),)
    assert got[("aws_cloudwatch_up", r)].value == 0.0
    assert got[("aws_cloudwatch_errors_total", (("reason", "connection"), ("region", REGION)))].value == 1.0
    assert "GetMetricData" in caplog.text and "Traceback" not in caplog.text
    assert "secret-testing-key" not in caplog.text and "AKIDTESTING" not in caplog.text


def test_an_error_the_api_answers_is_counted_by_its_code(moto_server, caplog):
    # moto answers a percentile statistic of data it holds with an internal error (HTTP 500): the
    # call's reason is the status
    put(moto_server, "Pct", "Latency", {}, [(minute(-5), 1.0)])
    with caplog.at_level(logging.WARNING, "monbridge.collectors.cloudwatch"):
        got = collect({"region": REGION, "endpoint_url": moto_server, "timeout": 5, "delay": 120,
                       "metrics": [{"namespace": "Pct", "name": "Latency", "statistics": ["p99"]}]})
    assert got[("aws_cloudwatch_up", (("region", REGION),))].value == 0.0
    errors = {dict(k[1])["reason"] for k in got if k[0] == "aws_cloudwatch_errors_total"}
    assert errors == {"500"}
    ours = [r for r in caplog.records if r.name == "monbridge.collectors.cloudwatch"]
    assert len(ours) == 1 and not ours[0].exc_info
    assert "GetMetricData" in ours[0].getMessage() and "\n" not in ours[0].getMessage()


def test_no_credentials_is_a_clear_error(moto_server, monkeypatch, caplog):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with caplog.at_level(logging.WARNING, "monbridge.collectors.cloudwatch"):
        got = collect({"region": REGION, "endpoint_url": moto_server,
                       "metrics": [{"namespace": "AWS/EC2", "name": "CPUUtilization"}]})
    assert got[("aws_cloudwatch_errors_total", (("reason", "credentials"), ("region", REGION)))].value == 1.0
    assert "no AWS credentials found by the standard chain" in caplog.text
