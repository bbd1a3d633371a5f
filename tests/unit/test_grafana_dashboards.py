"""The Grafana dashboards: read from what the plugins declare, built and checked with Grafana's own
``grafana-foundation-sdk`` types, panels chosen by kind, queries templated; the CLI command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import panelcfg_config
from grafana_foundation_sdk.models.dashboard import Dashboard, Panel
from grafana_foundation_sdk.models.prometheus import Dataquery

from bridge.api import MetricKind
from integrations.grafana.catalog import FAMILIES, CatalogError, MetricInfo, catalog, scan_source
from integrations.grafana.dashboards import VARIABLES, build, dashboards, panel_queries

register_default_plugins()


def test_every_family_declares_metrics_and_every_declaration_is_read():
    for f in FAMILIES:
        metrics = catalog(f)
        assert metrics, f"family {f.key} has no metrics"
        for m in metrics:
            assert m.name and isinstance(m.kind, MetricKind), m
    host = {m.name: m for m in catalog(FAMILIES[0])}
    assert host["system.cpu.time"].kind is MetricKind.COUNTER and host["system.cpu.time"].unit == "s"
    assert host["system.cpu.time"].prom_name == "system_cpu_time_seconds"
    assert host["process.memory.usage"].kind is MetricKind.UP_DOWN_COUNTER


def test_no_declared_metric_name_is_the_namespace_of_another():
    """A dotted name that is another's prefix (``a.b`` beside ``a.b.c``) cannot be both a value and an
    object in the documents of dotted-name backends: Elasticsearch refuses every such document."""
    names = {m.name for f in FAMILIES for m in catalog(f) if not m.native}
    assert len(names) > 50
    clashes = sorted((n, m) for n in names for m in names if m.startswith(n + "."))
    assert not clashes


def test_the_scanner_reads_aliases_tuples_and_keywords_and_names_a_declaration_it_cannot_read():
    src = ("from bridge.api import Metric, MetricKind\n"
           "G, C = MetricKind.GAUGE, MetricKind.COUNTER\n"
           "_H = MetricKind.HISTOGRAM\n"
           "def f(x):\n"
           "    if x:\n"
           "        up, dur = ('a.query.up', 'a.query.duration')\n"
           "    else:\n"
           "        up, dur = ('a.cluster.up', 'a.cluster.duration')\n"
           "    return [Metric(up, G, 1.0, '', 'up or not'), Metric(dur, kind=G, value=1.0, unit='s'),\n"
           "            Metric('a.runs', C, 3, '{run}', 'runs'), Metric('a.latency', _H, h, 's', 'latency'),\n"
           "            Metric(f'a.{x}', C, 1)]\n")
    got = {m.name: (m.kind, m.unit, m.description) for m in scan_source(src, "mod.py")}
    assert got == {
        "a.query.up": (MetricKind.GAUGE, "", "up or not"), "a.cluster.up": (MetricKind.GAUGE, "", "up or not"),
        "a.query.duration": (MetricKind.GAUGE, "s", ""), "a.cluster.duration": (MetricKind.GAUGE, "s", ""),
        "a.runs": (MetricKind.COUNTER, "{run}", "runs"), "a.latency": (MetricKind.HISTOGRAM, "s", "latency")}
    with pytest.raises(CatalogError, match=r"^mod\.py:2: metric 'b': its kind"):
        list(scan_source("from x import kind\nMetric('b', kind(), 1)\n", "mod.py"))
    with pytest.raises(CatalogError, match=r"^bad\.py:1: "):
        list(scan_source("Metric('b',", "bad.py"))


def test_f_string_names_are_filled_in_from_calls_and_class_attributes_of_the_same_source():
    src = ("from bridge.api import Metric, MetricKind\n"
           "from x import MetricSpec\n"
           "def own(prefix, api):\n"
           "    g = MetricKind.GAUGE\n"
           "    return [MetricSpec(f'{prefix}_up', g, '', f'1 if {api} answered', None),\n"
           "            MetricSpec(f'{prefix}_{api!r}', g, '', '', None)]\n"
           "A = own('aws_cw', 'GetMetricData')\n"
           "B = own(api='ListTimeSeries', prefix='gcp_mon')\n"
           "C = own(name_from_config(), 'x')\n"
           "class Base:\n"
           "    system = ''\n"
           "    def collect(self, q):\n"
           "        return [Metric(f'{self.system}.up', MetricKind.GAUGE, 1.0, '1', f'{self.system} up'),\n"
           "                Metric(f'{q.name}.value', MetricKind.GAUGE, 1.0)]\n"
           "class Pg(Base):\n"
           "    system: str = 'postgresql'\n"
           "class Replica(Pg):\n"
           "    pass\n"
           "class Redis(Base):\n"
           "    system = 'redis'\n"
           "    def tagged(self, prefix):\n"
           "        return [Metric(f'{prefix}.hits', MetricKind.COUNTER, 1.0)]\n"
           "H = Redis().tagged('cache')\n"
           "I = tagged('plain')\n")
    got = sorted((m.name, m.kind, m.unit, m.description, m.where) for m in scan_source(src, "mod.py"))
    # The template is named where it is declared; each call or class gives one name (the subclass
    # of a subclass too, the base's empty system none); what only a run knows is not a declaration.
    assert got == [("aws_cw_up", MetricKind.GAUGE, "", "1 if GetMetricData answered", "mod.py:5"),
                   ("cache.hits", MetricKind.COUNTER, "", "", "mod.py:22"),  # self is no argument; tagged() is no method's call
                   ("gcp_mon_up", MetricKind.GAUGE, "", "1 if ListTimeSeries answered", "mod.py:5"),
                   ("postgresql.up", MetricKind.GAUGE, "1", "postgresql up", "mod.py:13"),
                   ("redis.up", MetricKind.GAUGE, "1", "redis up", "mod.py:13")]
    with pytest.raises(CatalogError, match=r"^mod\.py:2: metric 'a_up': its kind"):
        list(scan_source("def f(p, kind):\n    return Metric(f'{p}_up', kind, 1)\nf('a', None)\n", "mod.py"))


def test_the_new_families_read_their_plugins_declarations():
    fam = {f.key: f for f in FAMILIES}
    by = {k: {m.name: m for m in catalog(fam[k])} for k in ("postgresql", "mysql", "redis", "textfile", "cloudwatch",
                                                           "gcp", "azure", "monbridge")}
    for system in ("postgresql", "mysql", "redis"):
        # The shared collector's up and error count, under each server's own name only.
        up = by[system][f"{system}.up"]
        assert up.where.endswith("collectors/db.py:" + up.where.rsplit(":", 1)[1]) and up.unit == "1"
        assert by[system][f"{system}.collector.errors"].kind is MetricKind.COUNTER
        assert all(n.startswith(f"{system}.") for n in by[system]), sorted(by[system])
    # Collectors that import Prometheus names report their own undotted names as they are.
    cw = by["cloudwatch"]["aws_cloudwatch_up"]
    assert cw.native and cw.prom_name == "aws_cloudwatch_up" and "GetMetricData" in cw.description
    assert set(by["azure"]) == {"azure_monitor_up", "azure_monitor_requests_total", "azure_monitor_errors_total",
                                "azure_monitor_queries_without_data"}
    assert by["gcp"]["gcp_monitoring_errors_total"].native
    assert by["textfile"]["node_textfile_mtime_seconds"].native and "monbridge_textfile_errors_total" in by["textfile"]
    assert not any(m.native for m in by["postgresql"].values())
    assert {"monbridge.dashboard.history.series", "monbridge.dashboard.requests.refused"} <= set(by["monbridge"])


def _panels(doc):
    return [p for p in doc["panels"] if p["type"] != "row"]


def test_dashboards_are_valid_grafana_json_models_by_the_sdk_types():
    docs = dashboards()
    assert set(docs) == {f.key for f in FAMILIES}
    for key, doc in docs.items():
        model = Dashboard.from_json(doc)
        assert json.loads(json.dumps(model.to_json(), default=lambda o: o.to_json())) == doc, key
        assert model.uid == f"monbridge-{key}" and len(model.uid) <= 40
        assert [v.name for v in model.templating.list_val] == ["datasource", *VARIABLES]
        for p in model.panels:
            assert isinstance(p, Panel) and panelcfg_config(p.type_val) is not None, p.type_val
            assert p.targets and all(isinstance(t, Dataquery) for t in p.targets), p.title
            assert p.datasource.type_val == "prometheus" and p.datasource.uid == "${datasource}"
            for t in p.targets:
                for var in ("$job", "$instance", "$host_name"):
                    assert var in t.expr, (p.title, t.expr)
        ys = [(p.grid_pos.x, p.grid_pos.y) for p in model.panels]
        assert len(set(ys)) == len(ys), f"{key}: panels overlap"


def test_panels_follow_the_metric_kind():
    def panel_types(m):
        return [p["type"] for p in _family_panels(m)]

    counter = MetricInfo("x.requests", MetricKind.COUNTER, "{request}", "", "here")
    assert panel_queries(counter) == [
        '(rate(x_requests_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))'
        ' * on (job, instance) group_left () group by (job, instance) (target_info{host_name=~"$host_name"})']
    hist = MetricInfo("x.latency", MetricKind.HISTOGRAM, "s", "", "here")
    qs = panel_queries(hist)
    assert qs[0].startswith("sum by (le) ((rate(x_latency_seconds_bucket{")
    assert [q.split(",")[0] for q in qs[1:]] == ["histogram_quantile(0.5", "histogram_quantile(0.9",
                                                  "histogram_quantile(0.99"]
    summary = MetricInfo("x.rpc", MetricKind.SUMMARY, "s", "", "here")
    assert 'x_rpc_seconds{job=~"$job",instance=~"$instance",quantile!=""}' in panel_queries(summary)[0]
    assert "rate(x_rpc_seconds_sum{" in panel_queries(summary)[1]
    assert panel_types(counter) == ["timeseries"]
    assert panel_types(hist) == ["heatmap", "timeseries"]
    assert panel_types(summary) == ["timeseries"]
    assert panel_types(MetricInfo("x.up", MetricKind.GAUGE, "", "", "here")) == ["stat"]
    assert panel_types(MetricInfo("x.up", MetricKind.GAUGE, "1", "", "here")) == ["stat"]
    assert panel_types(MetricInfo("x_up", MetricKind.GAUGE, "", "", "here", native=True)) == ["stat"]
    assert panel_types(MetricInfo("x.warm_up", MetricKind.GAUGE, "", "", "here")) == ["timeseries"]
    assert panel_types(MetricInfo("x.last_timestamp", MetricKind.GAUGE, "s", "", "here")) == ["stat"]
    assert panel_types(MetricInfo("x.usage", MetricKind.UP_DOWN_COUNTER, "By", "", "here")) == ["timeseries"]
    heat = _family_panels(hist)[0]
    assert heat["targets"][0]["format"] == "heatmap" and heat["options"]["calculate"] is False


def _family_panels(m):
    from integrations.grafana import dashboards as mod

    return [json.loads(json.dumps(p.build(), default=lambda o: o.to_json())) for p in mod._panels(m)]


def test_the_command_writes_one_file_per_family_and_refuses_an_unknown_family(tmp_path):
    out = tmp_path / "d"
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "grafana", "dashboards", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"monbridge-{f.key}.json" for f in FAMILIES)
    assert json.loads((out / "monbridge-host.json").read_text()) == build(FAMILIES[0])
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "grafana", "dashboards", "--family", "nagios"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and [d["uid"] for d in json.loads(r.stdout)] == ["monbridge-nagios"]
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "grafana", "dashboards", "--family", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown family nope" in r.stderr and "host, monbridge" in r.stderr
    (tmp_path / "file").write_text("")
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "grafana", "dashboards", "--out", str(tmp_path / "file" / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "file" in r.stderr


def test_metrics_no_plugin_declares_are_read_from_a_real_exposition():
    from integrations.grafana.catalog import OTHER, from_exposition

    body = (b"# TYPE monbridge_plugin_runs_total counter\nmonbridge_plugin_runs_total 3\n"
            b"# TYPE target_info gauge\ntarget_info{host_name=\"h\"} 1\n"
            b"# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total 7\n"
            b"# TYPE app_latency_seconds histogram\napp_latency_seconds_bucket{le=\"1\"} 1\n"
            b"app_latency_seconds_bucket{le=\"+Inf\"} 2\napp_latency_seconds_sum 3\napp_latency_seconds_count 2\n"
            b"# TYPE app_rpc summary\napp_rpc{quantile=\"0.5\"} 1\napp_rpc_sum 1\napp_rpc_count 1\n"
            b"app_untyped 4\n")
    got = from_exposition(body, "http://h/metrics")
    assert [(m.name, m.kind, m.description) for m in got] == [
        ("app_requests_total", MetricKind.COUNTER, "Requests."), ("app_latency_seconds", MetricKind.HISTOGRAM, ""),
        ("app_rpc", MetricKind.SUMMARY, ""), ("app_untyped", MetricKind.GAUGE, "")]
    assert all(m.native and m.prom_name == m.name for m in got)
    queries = [q for m in got for q in panel_queries(m)]
    assert queries[0].startswith("(rate(app_requests_total{") and "app_latency_seconds_bucket{" in queries[1]
    doc = build(OTHER, got)
    assert doc["uid"] == "monbridge-other" and len(doc["panels"]) == 5  # the histogram has two
    with pytest.raises(CatalogError, match=r"^http://h/metrics: "):
        from_exposition(b"app 1 2 3 4\n", "http://h/metrics")
    with pytest.raises(CatalogError, match="4 families no plugin declares, more than the 3"):
        from_exposition(body, "http://h/metrics", limit=3)
