"""Every query of the generated Grafana dashboards against a real Prometheus (2.42) scraping a
running monbridge: each parses (Prometheus answers ``success``; ``promtool check rules`` takes
them all as rule expressions), and each returns data, on the default config and on a config
running every integration it can here (the Prometheus scrape and a failing Pushgateway, OTLP
receive, DogStatsD and the Datadog intake, the Nagios checks and NSCA export, Grafana against its
stand-in of Grafana's documented HTTP API, the process collector in a worker process, the database
collectors against a real PostgreSQL, MariaDB and Redis (tests/integration/dbservers.py: one of
each, started at once, each read as a superuser and as an account that lacks one grant), the
textfile collector on a directory of one good and one bad file, the CloudWatch and Cloud
Monitoring collectors calling an endpoint that refuses, the web dashboard's API refusing a
request). The few metrics that need a peer or an
event these runs cannot produce are named in ``PARSE_ONLY`` with the reason: their queries are
checked by parsing only, and the test fails when one of them returns data (then it belongs out
of the list) or when any other returns none."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from conftest import REPO_ROOT, wait_until

from integrations.grafana.dashboards import dashboards
from tests.grafana_standin import GrafanaStandIn
from tests.integration.dbservers import SUPERUSER_PASSWORD, Mariadb, Postgres, Redis, ServerFailed, ServerMissing

pytestmark = pytest.mark.integration

#: What Grafana puts in place of the variables when "All" is chosen, and of the rate interval.
SUBSTITUTE = {"$job": ".*", "$instance": ".*", "$host_name": ".*", "$__rate_interval": "30s"}
NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")

#: Metrics whose queries are checked by parsing only: why these runs give them no series.
PARSE_ONLY = {
    "monbridge_elasticsearch_cluster_up": "needs an Elasticsearch cluster (none runs here)",
    "monbridge_elasticsearch_cluster_duration_seconds": "needs an Elasticsearch cluster",
    "monbridge_elasticsearch_cluster_failures_total": "needs an Elasticsearch cluster",
    "monbridge_elasticsearch_query_up": "needs an Elasticsearch cluster",
    "monbridge_elasticsearch_query_duration_seconds": "needs an Elasticsearch cluster",
    "monbridge_elasticsearch_query_failures_total": "needs an Elasticsearch cluster",
    "monbridge_elasticsearch_query_series_dropped_total": "needs an Elasticsearch cluster",
    "monbridge_scrape_file_sd_errors_total": "counted only when a file_sd file fails to read on a refresh",
    "monbridge_nagios_results_dropped_total": "counted only when the NSCA queue overflows",
    "monbridge_nagios_output_truncated_total": "counted only for a plugin output over 8192 bytes",
    "monbridge_nagios_perfdata_dropped_total": "counted only for perfdata items left out",
    "postgresql_replication_data_delay_bytes": "read from pg_stat_replication: needs a standby streaming (one server "
                                               "runs here; tests/integration/test_db_postgresql.py runs a replica)",
    "postgresql_wal_lag_seconds": "read from pg_stat_replication: needs a standby streaming",
    "postgresql_replication_lag_seconds": "reported by a standby only",
    "mysql_replica_io_running_ratio": "reported by a replica only (test_db_mysql.py runs one)",
    "mysql_replica_sql_running_ratio": "reported by a replica only",
    "mysql_replica_time_behind_source_seconds": "reported by a replica only",
    "redis_replica_lag_seconds": "reported by a primary for each replica connected (test_db_redis.py runs one)",
    "redis_replica_offset_bytes": "reported by a primary for each replica connected",
    "redis_replication_master_link_up_ratio": "reported by a replica only",
    "redis_replication_master_last_io_seconds": "reported by a replica only",
    "azure_monitor_up": "Azure's credential chain (DefaultAzureCredential) probes the instance metadata service "
                        "off loopback before any endpoint is called, and no Azure Monitor emulator exists "
                        "(tests/unit/test_azure_collector.py drives the collector with a client of its own)",
    "azure_monitor_requests_total": "needs Azure's credential chain (see azure_monitor_up)",
    "azure_monitor_errors_total": "needs Azure's credential chain (see azure_monitor_up)",
    "azure_monitor_queries_without_data": "needs Azure's credential chain (see azure_monitor_up)",
}


def dashboard_queries(docs: dict[str, dict] | None = None) -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL with the variables substituted) of every panel target."""
    out = []
    for key, doc in (dashboards() if docs is None else docs).items():
        for panel in doc["panels"]:
            for t in panel["targets"]:
                expr = t["expr"]
                for var, value in SUBSTITUTE.items():
                    expr = expr.replace(var, value)
                assert "$" not in expr, expr
                out.append((key, panel["title"], expr))
    return out


def metric_of(expr: str) -> str:
    names = {n for n in NAME.findall(expr) if n != "target_info"}
    assert len(names) == 1, expr
    name = names.pop()
    return re.sub(r"_(bucket|sum|count)$", "", name) if name.endswith(("_bucket", "_sum", "_count")) else name


def test_every_query_is_a_valid_promql_expression_for_promtool(tmp_path, require_binary):
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"monbridge:panel_{i}", "expr": expr} for i, (_, _, expr) in enumerate(dashboard_queries())]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run([require_binary("promtool"), "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules['groups'][0]['rules'])} rules found" in r.stdout


def _base(name: str) -> str:
    return re.sub(r"_total$", "", name)


def _families_on(text: str) -> set[str]:
    """The families of a Prometheus text exposition, without a counter's ``_total``."""
    return {_base(line.split()[2]) for line in text.splitlines() if line.startswith("# TYPE ")}


def _no_data(prom, queries) -> dict[str, list[str]]:
    """Metric -> the panels whose query returned nothing (every query must parse: prom.query asserts success)."""
    empty: dict[str, list[str]] = {}
    for key, title, expr in queries:
        if not prom.query(expr):
            empty.setdefault(metric_of(expr), []).append(f"{key}: {title}: {expr}")
    return empty


def _wait_for_rates(prom) -> None:
    # Rates need two samples in the window: wait until one of monbridge's counters has them.
    prom.wait_for('rate(monbridge_plugin_runs_total{result="success"}[30s]) >= 0', timeout=60)


def test_default_config_every_panel_of_what_it_exposes_returns_data(run_monbridge, prometheus_server):
    config = yaml.safe_load((REPO_ROOT / "bridge" / "default-config.yaml").read_text())
    del config["server"]["listen"]
    mb = run_monbridge(config)
    prom = prometheus_server([f"127.0.0.1:{mb.port}"])
    _wait_for_rates(prom)
    exposed = _families_on(mb.get("/metrics")[2].decode())
    queries = dashboard_queries()
    covered = {metric_of(expr) for _, _, expr in queries}
    # Every family the default config exposes has a panel: the static metadata covers a real run.
    assert {f for f in exposed if f != "target_info"} - {_base(c) for c in covered} == set()
    on_default = [q for q in queries if _base(metric_of(q[2])) in exposed]
    assert {q[0] for q in on_default} >= {"host", "monbridge", "alerting"}
    assert _no_data(prom, on_default) == {}
    # Derived from the real run, nothing is left over: every family the default config exposes is declared.
    assert set(_generate(f"{mb.url}/metrics")) == {f"monbridge-{k}" for k in dashboards()}


def _generate(metrics_url: str) -> dict[str, dict]:
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "grafana", "dashboards", "--metrics-url", metrics_url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {d["uid"]: d for d in json.loads(r.stdout)}


class _Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        # A duplicate series: the second is dropped and counted.
        body = b"# TYPE demo_requests_total counter\ndemo_requests_total 7\ndemo_requests_total 8\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def scrape_target() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


@pytest.fixture
def grafana_standin() -> Iterator[tuple[GrafanaStandIn, str]]:
    """The Grafana stand-in (tests/grafana_standin.py) on a loop of its own in a thread."""
    standin = GrafanaStandIn("glsa_it")
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def serve() -> None:
        runner = web.AppRunner(standin.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = runner.addresses[0][1]
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(serve()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield standin, f"http://127.0.0.1:{holder['port']}"
    asyncio.run_coroutine_threadsafe(holder["runner"].cleanup(), loop).result(10)  # type: ignore[union-attr]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


PLAIN_PASSWORD = "gr-pl4in-pw-5e7"


@pytest.fixture(scope="module")
def db_servers() -> Iterator[tuple[Postgres, Mariadb, Redis]]:
    """One PostgreSQL, MariaDB and Redis server, started side by side, each with data to show and
    an account ``plain`` that lacks one grant the collector needs (its section is lost, counted)."""
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(cls) for cls in (Postgres, Mariadb, Redis)]
        concurrent.futures.wait(futures)
    started = [f.result() for f in futures if f.exception() is None]
    try:
        for f in futures:
            if f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        pg, maria, rd = started
        asyncio.run(_db_setup(pg, maria, rd))
        yield pg, maria, rd
    except (ServerMissing, ServerFailed) as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        for server in started:
            server.stop()


async def _db_setup(pg: Postgres, maria: Mariadb, rd: Redis) -> None:
    import aiomysql
    import asyncpg
    import redis.asyncio

    conn = await asyncpg.connect(pg.dsn(), password=SUPERUSER_PASSWORD)
    try:
        for sql in ("CREATE EXTENSION pg_stat_statements",  # the top statements
                    f"CREATE ROLE plain LOGIN PASSWORD '{PLAIN_PASSWORD}'",  # no pg_monitor: the WAL section is lost
                    "CREATE TABLE jobs AS SELECT generate_series(1, 100) AS id"):
            await conn.execute(sql)
    finally:
        await conn.close()
    my = await aiomysql.connect(host="127.0.0.1", port=maria.port, user="root", password="", autocommit=True)
    try:
        async with my.cursor() as cur:
            for sql in (f"CREATE USER plain@'127.0.0.1' IDENTIFIED BY '{PLAIN_PASSWORD}'",  # no replication grant
                        "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB",
                        "INSERT INTO app.t SELECT seq FROM app.seq_1_to_100"):
                await cur.execute(sql)
    finally:
        my.close()
    client = redis.asyncio.Redis(host="127.0.0.1", port=rd.port, password=SUPERUSER_PASSWORD)
    try:  # without SLOWLOG: the slow log section is lost
        await client.execute_command("ACL", "SETUSER", "plain", "on", f">{PLAIN_PASSWORD}", "+@connection", "+info")
        await client.set("job:1", "queued", ex=3600)
    finally:
        await client.aclose()


def _db_plugins(pg: Postgres, maria: Mariadb, rd: Redis) -> list[dict]:
    def targets(superuser: dict, plain: str) -> dict:
        return {"collection_interval": 1, "targets": [superuser, {"dsn": plain, "password": PLAIN_PASSWORD}]}

    return [
        {"plugin_id": "monitoring.metrics.postgresql", "config": targets(
            {"dsn": pg.dsn(), "password": SUPERUSER_PASSWORD}, pg.dsn("plain"))},
        {"plugin_id": "monitoring.metrics.mysql", "config": targets({"dsn": maria.dsn()}, maria.dsn("plain"))},
        {"plugin_id": "monitoring.metrics.redis", "config": targets(
            {"dsn": rd.url(), "password": SUPERUSER_PASSWORD}, f"redis://plain@127.0.0.1:{rd.port}/0")},
    ]


def _cloud_plugins(closed: str, tmp_path: Path) -> tuple[list[dict], dict[str, str]]:
    """The CloudWatch and Cloud Monitoring collectors against an endpoint nothing listens on (each
    call fails, counted by reason), with credentials from the environment only: nothing leaves loopback."""
    env = {"AWS_ACCESS_KEY_ID": "AKIDTESTING", "AWS_SECRET_ACCESS_KEY": "secret-testing-key",
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws"),
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_MAX_ATTEMPTS": "1",
           "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "no-gcp-credentials.json"), "GCE_METADATA_HOST": closed,
           "GCE_METADATA_IP": closed}
    return [
        {"plugin_id": "monitoring.metrics.cloudwatch", "config": {
            "collection_interval": 1, "region": "eu-west-1", "endpoint_url": f"http://{closed}",
            "metrics": [{"namespace": "AWS/EC2", "name": "CPUUtilization", "dimensions": {"InstanceId": "i-0abc"}}]}},
        {"plugin_id": "monitoring.metrics.gcp", "config": {
            "collection_interval": 1, "project_id": "demo-project", "api_endpoint": closed,
            "metrics": [{"type": "compute.googleapis.com/instance/cpu/utilization"}]}},
    ], env


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_every_panel_returns_data_with_the_integrations_running(run_monbridge, prometheus_server, free_port,
                                                                 scrape_target, grafana_standin, db_servers,
                                                                 tmp_path: Path):
    standin, grafana_url = grafana_standin
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    (textfiles / "backup.prom").write_text("# TYPE demo_backup_age_seconds gauge\ndemo_backup_age_seconds 42\n")
    (textfiles / "broken.prom").write_text("demo_broken{ 1\n")  # read error: counted, scrape_error 1
    clouds, cloud_env = _cloud_plugins(f"127.0.0.1:{free_port()}", tmp_path)
    # The first alert's annotation is refused (400): dropped and counted; the second's is written.
    standin.faults.append(("POST /api/annotations", 400, {"message": "bad request"}, {}))
    udp, intake, otlp_http = free_port(), free_port(), free_port()
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: the Pushgateway push fails, counted
    mb = run_monbridge({"server": {"listen": f"127.0.0.1:{free_port()}", "read_timeout": 1}, "plugins": [
        {"plugin_id": "monitoring.metrics.system", "config": {"collection_interval": 1}},
        {"plugin_id": "monitoring.metrics.process", "isolation": "process", "grants": {"paths": ["/proc"]},
         "config": {"collection_interval": 1, "max_processes": 5}},
        {"plugin_id": "monitoring.integration.prometheus", "config": {
            "interval": 1, "scrape": {"interval": 1, "timeout": 1, "targets": [{"job": "demo", "url": scrape_target}]},
            "pushgateway": {"url": closed, "job": "monbridge", "timeout": 1}}},
        {"plugin_id": "monitoring.integration.otlp", "config": {
            "interval": 1, "receive": {"http": {"listen": f"127.0.0.1:{otlp_http}"}}}},
        {"plugin_id": "monitoring.integration.datadog", "config": {
            "interval": 1, "dogstatsd": {"listen_udp": f"127.0.0.1:{udp}", "flush_interval": 1},
            "intake": {"listen": f"127.0.0.1:{intake}", "api_keys": ["dd-key"]}}},
        {"plugin_id": "monitoring.metrics.nagios", "config": {
            "collection_interval": 1, "plugin_paths": ["/usr/lib/nagios/plugins"],
            "checks": [{"name": "web", "command": ["check_dummy", "0", "fine | load=1;5;10 hits=5c"], "interval": 1},
                       {"name": "db", "command": ["check_dummy", "2", "db down"], "interval": 1,
                        "max_check_attempts": 1},
                       {"name": "cache", "command": ["check_dummy", "2", "cache down"], "interval": 1,
                        "max_check_attempts": 1},
                       {"name": "gone", "command": ["check_not_installed"], "interval": 1}]}},
        {"plugin_id": "monitoring.integration.nagios", "config": {
            "interval": 1, "host": "monbridge", "nsca": {"host": "127.0.0.1", "port": free_port()},
            "queue": {"path": str(tmp_path / "nsca")}}},
        {"plugin_id": "monitoring.integration.grafana", "config": {
            "interval": 1, "url": grafana_url, "token": "glsa_it", "dashboards": {"families": ["grafana"]}}},
        {"plugin_id": "monitoring.metrics.textfile", "config": {"collection_interval": 1, "directory": str(textfiles)}},
        *_db_plugins(*db_servers),
        *clouds,
    ]}, env=cloud_env)
    prom = prometheus_server([f"127.0.0.1:{mb.port}"])

    # What the integrations count: DogStatsD datagrams, intake requests (one refused), an OTLP push,
    # a forged browser request refused by the server.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(b"demo.hits:1|c|#env:test\ndemo.temp:21|g", ("127.0.0.1", udp))
    sock.sendto(b"\n\n", ("127.0.0.1", udp))  # blank lines: dropped, counted
    sock.close()
    now = int(time.time())
    series = json.dumps({"series": [{"metric": "demo.intake", "points": [[now, 1]], "type": "gauge"}]}).encode()
    assert _post(f"http://127.0.0.1:{intake}/api/v1/series", series, {"DD-API-KEY": "dd-key",
                                                                       "Content-Type": "application/json"}) == 202
    assert _post(f"http://127.0.0.1:{intake}/api/v1/series", series, {"DD-API-KEY": "wrong"}) == 403
    runs = json.dumps([{"check": "demo.check", "host_name": "h", "status": 0, "timestamp": now}]).encode()
    assert _post(f"http://127.0.0.1:{intake}/api/v1/check_run", runs, {"DD-API-KEY": "dd-key",
                                                                       "Content-Type": "application/json"}) == 202
    _otlp_push(f"http://127.0.0.1:{otlp_http}/v1/metrics")
    assert _post(f"{mb.url}/-/reload", b"", {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}) == 403
    with socket.create_connection(("127.0.0.1", mb.port), timeout=10) as silent:  # no request within read_timeout
        assert silent.recv(1) == b""  # (closed by the server, counted)
    with pytest.raises(urllib.error.HTTPError, match="404"):  # the web dashboard's API refuses it, counted
        urllib.request.urlopen(f"{mb.url}/api/v1/components/nope/data", timeout=10)
    wait_until(lambda: "monbridge-grafana" in standin.dashboards, what="the Grafana dashboard provisioned")
    wait_until(lambda: standin.annotations, timeout=60, what="an alert (a CRITICAL Nagios check) annotated")

    _wait_for_rates(prom)
    for metric in ("monbridge_dogstatsd_points_total", "monbridge_otlp_receive_points_total",
                   "monbridge_datadog_intake_check_runs_total", "monbridge_http_requests_refused_total",
                   "monbridge_plugin_worker_cpu_seconds_total", "system_cpu_utilization_ratio", "scrape_series_added",
                   "monbridge_pushgateway_pushes_total", "monbridge_grafana_dashboards_total", "nagios_check_state",
                   "monbridge_grafana_annotations_total", "monbridge_nagios_check_failures_total",
                   "postgresql_collector_errors_total", "mysql_collector_errors_total", "redis_collector_errors_total",
                   "postgresql_statement_calls_total", "monbridge_textfile_errors_total", "aws_cloudwatch_errors_total",
                   "gcp_monitoring_errors_total", "monbridge_dashboard_requests_refused_total",
                   "monbridge_http_silent_connections_total"):
        prom.wait_for(f"{metric}", timeout=60)
    time.sleep(3)  # two samples of each in the rate window
    empty = _no_data(prom, dashboard_queries())
    assert set(empty) - set(PARSE_ONLY) == set(), "panels without data:\n" + "\n".join(
        q for m in sorted(set(empty) - set(PARSE_ONLY)) for q in empty[m])
    assert set(PARSE_ONLY) - set(empty) == set(), f"these return data now; take them out of PARSE_ONLY: " \
                                                  f"{sorted(set(PARSE_ONLY) - set(empty))}"

    # What no plugin declares (the scraped, pushed and sent series) is read from the running
    # monbridge's /metrics into a dashboard of its own, whose panels return data too.
    other = _generate(f"{mb.url}/metrics")["monbridge-other"]
    queries = dashboard_queries({"other": other})
    assert {metric_of(q) for _, _, q in queries} >= {"demo_requests_total", "demo_otlp_requests_total", "demo_hits_total"}
    assert _no_data(prom, queries) == {}


def _otlp_push(url: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url, timeout=5), export_interval_millis=60_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("demo").create_counter("demo.otlp.requests").add(3, {"route": "/a"})
    assert provider.force_flush(10_000)
    provider.shutdown()
