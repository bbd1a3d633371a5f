"""monitoring.metrics.textfile against node_exporter 1.5's textfile collector on the same directory:
the same samples (names, labels, values), types and HELP texts on both /metrics, for good files,
a broken one and one with timestamps; and both drop a file's content once it breaks."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import wait_until
from peers import Peers, peers  # noqa: F401 - the fixture
from prometheus_client.parser import text_string_to_metric_families

FILES = {
    "backup.prom": """\
# HELP backup_last_success_timestamp_seconds When the last backup succeeded.
# TYPE backup_last_success_timestamp_seconds gauge
backup_last_success_timestamp_seconds{db="main"} 1.7e+09
backup_last_success_timestamp_seconds{db="logs"} 1.6e+09
# TYPE backup_runs_total counter
backup_runs_total 42
backup_files_count 7
# TYPE backup_seconds histogram
backup_seconds_bucket{le="10"} 1
backup_seconds_bucket{le="60"} 2
backup_seconds_bucket{le="+Inf"} 3
backup_seconds_sum 95.5
backup_seconds_count 3
""",
    "rpc.prom": """\
# HELP rpc_seconds RPC latency.
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds{quantile="0.9"} 0.7
rpc_seconds_sum 4
rpc_seconds_count 10
# TYPE cron_up untyped
cron_up{job="rotate"} 1
""",
    "broken.prom": "broken_ok 1\nbroken_bad{ 2\n",
    "stamped.prom": "stamped 1 1700000000000\n",
    "ignored.txt": "ignored 1\n",
}


def node_exporter_textfile(started: Peers, directory: Path):
    port = started.free_port()
    args = [f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults", "--collector.textfile",
            f"--collector.textfile.directory={directory}"]
    return started._run("node_exporter", "prometheus-node-exporter", args, port, "/metrics")


def samples(server, names: set[str]) -> dict[tuple, tuple]:
    """(sample name, labels) -> (value, family type, HELP) of the families named in ``names``. An
    untyped family (node_exporter's ``unknown``) is a gauge here: the pipeline's data model (OTel's)
    has no untyped kind, and the Prometheus bridge imports untyped samples as gauges too."""
    status, _, body = server.get("/metrics")
    assert status == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name not in names:
            continue
        for s in fam.samples:
            ftype = "gauge" if fam.type == "unknown" else fam.type
            out[(s.name, tuple(sorted(s.labels.items())))] = (s.value, ftype, fam.documentation)
    return out


NAMES = {"backup_last_success_timestamp_seconds", "backup_runs", "backup_files_count", "backup_seconds", "rpc_seconds",
         "cron_up", "broken_ok", "broken_bad", "stamped", "ignored", "node_textfile_mtime_seconds",
         "node_textfile_scrape_error"}


def test_textfile_exposes_what_node_exporter_exposes(tmp_path, peers, run_monbridge):  # noqa: F811
    directory = tmp_path / "textfile"
    directory.mkdir()
    for name, text in FILES.items():
        (directory / name).write_text(text)
    node = node_exporter_textfile(peers, directory)
    agent = run_monbridge({"plugins": [{"plugin_id": "monitoring.metrics.textfile",
                                        "config": {"directory": str(directory), "collection_interval": 0.5}}]})
    expected = samples(node, NAMES)
    assert ("backup_runs_total", ()) in expected and ("node_textfile_scrape_error", ()) in expected
    assert expected[("node_textfile_scrape_error", ())][0] == 1.0  # broken.prom and stamped.prom
    assert not any(k[0] in ("broken_ok", "stamped", "ignored") for k in expected)
    got = wait_until(lambda: (s := samples(agent, NAMES)) and ("rpc_seconds_count", ()) in s and s,
                     what="the textfile metrics on monbridge's /metrics")
    assert got == expected

    # A file that breaks: both drop all of it (no last good content), and say so.
    (directory / "rpc.prom.tmp").write_text("rpc_seconds{quantile=\"0.5\"} 0.2\nrpc_seconds_sum{ 4\n")
    (directory / "rpc.prom.tmp").rename(directory / "rpc.prom")
    expected = samples(node, NAMES)
    assert not any(k[0].startswith(("rpc_", "cron_")) for k in expected)
    time.sleep(0.1)
    got = wait_until(lambda: (s := samples(agent, NAMES)) and ("rpc_seconds_count", ()) not in s and s,
                     what="rpc.prom's series to go")
    assert got == expected
    assert f"textfile {directory / 'rpc.prom'}:2: " in agent.log_text()
