"""monitoring.metrics.cloudwatch's plan of GetMetricData calls: period-aligned windows ``delay``
before now, cloudwatch_exporter's names, the API's limits per call (500 queries, 100,800 data
points), and config errors naming their path. The calls themselves are tested against moto's
server in tests/integration/test_cloudwatch_moto.py."""

from __future__ import annotations

import pytest

from bridge.config import ConfigError, parse_config
from bridge.registry import PluginRegistry
from collectors import cloud
from collectors.cloudwatch import MAX_DATAPOINTS, MAX_QUERIES, CloudWatchConfig, batches, plan

NOW = 1_700_000_123.4  # 1_700_000_100 is a minute boundary (1_700_000_100 / 60 = 28_333_335)


def config(**kw) -> CloudWatchConfig:
    return CloudWatchConfig.model_validate({"region": "eu-west-1", **kw})


def test_windows_end_delay_before_now_on_a_period_boundary():
    cfg = config(delay=600, range=600, metrics=[
        {"namespace": "AWS/EC2", "name": "CPUUtilization", "dimensions": {"InstanceId": "i-0abc"},
         "statistics": ["Average", "p99"]},
        {"namespace": "AWS/ELB", "name": "RequestCount", "statistics": ["Sum"], "period": 300, "delay": 0, "range": 100},
        {"namespace": "Custom", "name": "HighRes", "period": 10, "range": 25},
    ])
    q = plan(cfg, NOW)
    assert [(x.id, x.where, x.name, dict(x.attributes)) for x in q] == [
        ("q0_0", "metrics[0]", "aws_ec2_cpuutilization_average", {"instance_id": "i-0abc"}),
        ("q0_1", "metrics[0]", "aws_ec2_cpuutilization_p99", {"instance_id": "i-0abc"}),
        ("q1_0", "metrics[1]", "aws_elb_request_count_sum", {}),
        ("q2_0", "metrics[2]", "custom_high_res_average", {}),
    ]
    assert (q[0].start, q[0].end) == (1_699_999_500 - 600, 1_699_999_500)
    assert (q[2].start, q[2].end) == (1_700_000_100 - 300, 1_700_000_100)  # no delay; a window of one period
    assert (q[3].start, q[3].end) == (1_699_999_520 - 30, 1_699_999_520)  # 25 s: three 10 s periods
    assert q[0].request() == {"Id": "q0_0", "ReturnData": True, "MetricStat": {
        "Metric": {"Namespace": "AWS/EC2", "MetricName": "CPUUtilization",
                   "Dimensions": [{"Name": "InstanceId", "Value": "i-0abc"}]},
        "Period": 60, "Stat": "Average"}}


def test_queries_of_one_window_share_calls_whatever_their_period():
    cfg = config(metrics=[{"namespace": "N", "name": "a"}, {"namespace": "N", "name": "b", "period": 300}])
    q = plan(cfg, NOW)
    assert (q[0].start, q[0].end) == (q[1].start, q[1].end) == (1_699_998_900, 1_699_999_500)
    assert [len(c) for c in batches(q)] == [2]


def test_calls_hold_at_most_500_queries_and_one_window():
    cfg = config(max_queries=5000, metrics=[{"namespace": "N", "name": f"m{i}", "statistics": ["Sum", "Average"]}
                                            for i in range(600)]
                 + [{"namespace": "N", "name": "other", "period": 300, "delay": 0}])
    calls = batches(plan(cfg, NOW))
    assert [len(c) for c in calls] == [MAX_QUERIES, MAX_QUERIES, 200, 1]
    for c in calls:
        assert len({(q.start, q.end) for q in c}) == 1


def test_calls_hold_at_most_100800_data_points():
    # one-second periods over an hour: 3600 points a query, so 28 queries a call
    cfg = config(range=3600, metrics=[{"namespace": "N", "name": f"m{i}", "period": 1} for i in range(60)])
    calls = batches(plan(cfg, NOW))
    assert [len(c) for c in calls] == [28, 28, 4]
    assert all(sum(q.datapoints for q in c) <= MAX_DATAPOINTS for c in calls)


def test_bad_config_names_its_path():
    reg = PluginRegistry().discover()
    text = """plugins:
  - plugin_id: monitoring.metrics.cloudwatch
    config:
      region: eu-west-1
      metrics:
        - {namespace: AWS/EC2, name: CPUUtilization}
        - {namespace: AWS/EC2, name: NetworkIn, statistics: [Avg], period: 45}
"""
    with pytest.raises(ConfigError) as e:
        parse_config(text, "agent.yaml", reg)
    msg = str(e.value)
    assert "plugins[0].config.metrics[1].statistics" in msg and "unknown statistic 'Avg'" in msg
    assert "plugins[0].config.metrics[1].period" in msg and "multiple of 60" in msg
    with pytest.raises(ConfigError) as e:
        parse_config(text.replace("\n        - {namespace: AWS/EC2, name: NetworkIn, statistics: [Avg], period: 45}", "")
                     + "      max_queries: 0\n", "agent.yaml", reg)
    assert "plugins[0].config.max_queries" in str(e.value)


def test_a_missing_client_library_is_a_config_error_naming_the_extra(monkeypatch):
    real = cloud.importlib.util.find_spec
    monkeypatch.setattr(cloud.importlib.util, "find_spec", lambda name, *a: None if name == "boto3" else real(name, *a))
    reg = PluginRegistry().discover()
    text = "plugins:\n  - plugin_id: monitoring.metrics.cloudwatch\n    config: {metrics: [{namespace: A, name: B}]}\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text, "agent.yaml", reg)
    assert "plugins[0].config" in str(e.value)
    assert "needs the boto3 package" in str(e.value) and "pip install 'monbridge[cloud]'" in str(e.value)


def test_the_readme_examples_of_the_collectors_validate(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Collectors"):readme.index("## Receiving OTLP")]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    text = "plugins:\n" + "".join("  " + line + "\n" for block in blocks for line in block.splitlines())
    loaded = parse_config(text, "README.md", PluginRegistry().discover())
    assert set(loaded.plugin_configs) == {"monitoring.metrics.textfile", "monitoring.metrics.cloudwatch",
                                          "monitoring.metrics.gcp", "monitoring.metrics.azure"}


def test_next_token_pages_are_followed_and_a_refused_query_is_counted(monkeypatch, tmp_path, caplog):
    """moto answers in one page, so the pages are given by botocore's Stubber (the library's own
    answers, checked against the API's model) on the collector's real client."""
    import asyncio
    import logging
    from datetime import UTC, datetime

    from botocore.stub import Stubber

    from collectors.cloudwatch import CloudWatchCollector

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTESTING")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-testing-key")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    c = CloudWatchCollector()
    asyncio.run(c.initialize({"region": "eu-west-1", "metrics": [{"namespace": "N", "name": "a"},
                                                                 {"namespace": "N", "name": "b"}]}))
    sent: list[dict] = []
    c._client.meta.events.register("provide-client-params.cloudwatch.GetMetricData",
                                   lambda params, **kw: sent.append(dict(params)))
    t1, t2 = datetime.fromtimestamp(1_699_999_380, UTC), datetime.fromtimestamp(1_699_999_440, UTC)
    with Stubber(c._client) as stub:
        stub.add_response("get_metric_data", {"MetricDataResults": [
            {"Id": "q0_0", "Timestamps": [t1], "Values": [1.0], "StatusCode": "PartialData"}], "NextToken": "page-2"})
        stub.add_response("get_metric_data", {"MetricDataResults": [
            {"Id": "q0_0", "Timestamps": [t2], "Values": [2.0], "StatusCode": "Complete"},
            {"Id": "q1_0", "Timestamps": [], "Values": [], "StatusCode": "Forbidden",
             "Messages": [{"Code": "Forbidden", "Value": "not authorized for N b"}]}]})
        with caplog.at_level(logging.WARNING, "monbridge.collectors.cloudwatch"):
            got = {(m.name, tuple(sorted(m.attributes.items()))): m for m in c.collect_at(NOW)}
    assert [p.get("NextToken") for p in sent] == [None, "page-2"]
    assert got[("n_a_average", ())].value == 2.0  # the newest point over both pages
    assert ("n_b_average", ()) not in got
    assert c._state.errors == {"query_forbidden": 1} and c._state.requests == 2
    assert "metrics[1] N b Average: Forbidden: not authorized for N b" in caplog.text
