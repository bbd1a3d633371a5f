"""monitoring.metrics.textfile: node_exporter's textfile semantics on real files in tmp_path (what
node_exporter itself exposes for the same files is compared in
tests/integration/test_textfile_node_exporter.py)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from bridge.api import HistogramValue, MetricKind, SummaryValue
from bridge.config import ConfigError, parse_config
from bridge.ledger import LEDGER
from bridge.pipeline import Pipeline
from bridge.pluginhost import InProcessHost
from bridge.registry import PluginRegistry
from collectors.textfile import TextfileCollector, TextfileError, convert_textfile, read_textfile

GOOD = """\
# HELP backup_last_success_timestamp_seconds When the last backup succeeded.
# TYPE backup_last_success_timestamp_seconds gauge
backup_last_success_timestamp_seconds{db="main"} 1.7e+09
# TYPE backup_runs_total counter
backup_runs_total 42
job:backup_rate5m 3
backup_files_count 7
# TYPE backup_seconds histogram
backup_seconds_bucket{le="10"} 1
backup_seconds_bucket{le="60"} 2
backup_seconds_bucket{le="+Inf"} 3
backup_seconds_sum 95.5
backup_seconds_count 3
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds_sum 4
rpc_seconds_count 10
"""


def collect(collector: TextfileCollector) -> dict[tuple[str, tuple], object]:
    metrics = asyncio.run(collector.collect_metrics())
    return {(m.name, tuple(sorted(m.attributes.items()))): m for m in metrics}


def make(directory: Path, **config) -> TextfileCollector:
    c = TextfileCollector()
    asyncio.run(c.initialize({"directory": str(directory), **config}))
    return c


def test_a_file_becomes_its_families_kinds_kept_and_its_mtime(tmp_path):
    (tmp_path / "backup.prom").write_text(GOOD)
    (tmp_path / "notes.txt").write_text("not_read 1\n")
    os.utime(tmp_path / "backup.prom", (1_700_000_000.75, 1_700_000_000.75))
    got = collect(make(tmp_path))
    path = str(tmp_path / "backup.prom")
    g = got[("backup_last_success_timestamp_seconds", (("db", "main"),))]
    assert (g.kind, g.value, g.description) == (MetricKind.GAUGE, 1.7e9, "When the last backup succeeded.")
    c = got[("backup_runs_total", ())]
    assert (c.kind, c.value, c.description) == (MetricKind.COUNTER, 42.0, f"Metric read from {path}")
    assert got[("job:backup_rate5m", ())].value == 3.0
    h = got[("backup_seconds", ())].value
    assert isinstance(h, HistogramValue)
    assert (h.bounds, h.bucket_counts, h.sum, h.count) == ((10.0, 60.0), (1, 1, 1), 95.5, 3)
    s = got[("rpc_seconds", ())].value
    assert isinstance(s, SummaryValue) and (s.quantiles, s.sum, s.count) == (((0.5, 0.2),), 4.0, 10.0)
    assert got[("node_textfile_mtime_seconds", (("file", path),))].value == 1_700_000_000.0  # whole seconds
    assert got[("node_textfile_scrape_error", ())].value == 0.0
    assert not any(name == "not_read" for name, _ in got)


def test_names_are_recorded_as_prometheus_names(tmp_path):
    """Through the supervisor's host: job:rate5m keeps its colon, a gauge named *_count stays as written."""
    (tmp_path / "backup.prom").write_text(GOOD)
    collector = make(tmp_path)
    host = InProcessHost(collector)
    assert host.imports_prometheus_names
    pipeline = Pipeline()
    pipeline.record("textfile", asyncio.run(host.collect()), prometheus_names=host.imports_prometheus_names)
    assert {"job:backup_rate5m", "backup_files_count", "backup_runs_total", "backup_seconds"} <= {
        f.name for f in pipeline.batch().families() if f.native}
    exposed = {s.prom.name for f in pipeline.batch().families() for s in f.series}
    assert {"job:backup_rate5m", "backup_files_count", "backup_runs_total", "node_textfile_scrape_error"} <= exposed
    assert "backup_files_count_value" not in exposed and "backup_runs_total_total" not in exposed


def test_a_broken_file_is_reported_with_its_line_and_its_last_good_content_dropped(tmp_path, caplog):
    f = tmp_path / "job.prom"
    f.write_text("job_ok 1\njob_items 5\n")
    collector = make(tmp_path)
    got = collect(collector)
    assert got[("job_items", ())].value == 5.0
    assert got[("node_textfile_scrape_error", ())].value == 0.0
    f.write_text("job_ok 1\njob_items{ 6\n")
    before = LEDGER.total("textfile", "parse")
    with caplog.at_level(logging.WARNING, "monbridge.collectors.textfile"):
        got = collect(collector)
    assert LEDGER.total("textfile", "parse") - before == 1  # in monbridge_dropped_total too
    assert ("job_items", ()) not in got and ("job_ok", ()) not in got  # nothing of the file, not the old content
    assert ("node_textfile_mtime_seconds", (("file", str(f)),)) not in got
    assert got[("node_textfile_scrape_error", ())].value == 1.0
    assert got[("monbridge_textfile_errors_total", (("reason", "parse"),))].value == 1.0
    assert f"textfile {f}:2: " in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, "monbridge.collectors.textfile"):
        collect(collector)
    assert caplog.text == ""  # the same error is logged once
    assert collect(collector)[("monbridge_textfile_errors_total", (("reason", "parse"),))].value == 3.0
    f.write_text("job_ok 1\njob_items 7\n")
    got = collect(collector)
    assert got[("job_items", ())].value == 7.0 and got[("node_textfile_scrape_error", ())].value == 0.0


def test_a_file_with_timestamps_is_skipped_whole_naming_the_line(tmp_path, caplog):
    (tmp_path / "ts.prom").write_text("a 1\n# a comment\nb{x=\"1\"} 2 1700000000000\n")
    (tmp_path / "z.prom").write_text("z 1\n")
    with caplog.at_level(logging.WARNING, "monbridge.collectors.textfile"):
        got = collect(make(tmp_path))
    assert ("a", ()) not in got and got[("z", ())].value == 1.0
    assert got[("monbridge_textfile_errors_total", (("reason", "timestamp"),))].value == 1.0
    assert f"textfile {tmp_path / 'ts.prom'}:3: " in caplog.text and "timestamp" in caplog.text


def test_hostile_files_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo.prom")  # a reader opening it would wait for a writer forever
    (tmp_path / "dir.prom").mkdir()
    (tmp_path / "big.prom").write_bytes(b"x 1\n" * 100)
    (tmp_path / "link.prom").symlink_to("/dev/zero")
    (tmp_path / "ok.prom").write_text("ok 1\n")
    got = collect(make(tmp_path, max_file_bytes=200))
    assert got[("ok", ())].value == 1.0 and ("x", ()) not in got
    errors = {dict(k[1])["reason"]: m.value for k, m in got.items() if k[0] == "monbridge_textfile_errors_total"}
    assert errors == {"not_regular": 3.0, "too_large": 1.0}
    assert got[("node_textfile_scrape_error", ())].value == 1.0


def test_read_textfile_refuses_a_file_that_grows_past_the_bound(tmp_path):
    f = tmp_path / "a.prom"
    f.write_bytes(b"a 1\n" * 10)
    assert read_textfile(str(f), 40)[0] == b"a 1\n" * 10
    with pytest.raises(TextfileError) as e:
        read_textfile(str(f), 39)
    assert e.value.reason == "too_large"
    with pytest.raises(TextfileError) as e:
        read_textfile(str(tmp_path / "gone.prom"), 40)
    assert e.value.reason == "read"


def test_files_beyond_max_files_are_skipped_and_counted(tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}.prom").write_text(f"f{i} {i}\n")
    got = collect(make(tmp_path, max_files=3))
    assert {k[0] for k in got if k[0].startswith("f")} == {"f0", "f1", "f2"}
    assert got[("monbridge_textfile_errors_total", (("reason", "too_many_files"),))].value == 2.0
    assert got[("node_textfile_scrape_error", ())].value == 1.0


def test_a_series_in_two_files_is_kept_from_the_first(tmp_path):
    (tmp_path / "a.prom").write_text('shared{k="v"} 1\nonly_a 1\n')
    (tmp_path / "b.prom").write_text('shared{k="v"} 2\nonly_b 2\n')
    got = collect(make(tmp_path))
    assert got[("shared", (("k", "v"),))].value == 1.0 and got[("only_b", ())].value == 2.0
    assert got[("monbridge_textfile_errors_total", (("reason", "duplicate"),))].value == 1.0
    assert got[("node_textfile_scrape_error", ())].value == 0.0  # as node_exporter: the files were read


def test_a_glob_names_several_directories_and_a_missing_one_is_an_error(tmp_path):
    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "m.prom").write_text(f"m_{d} 1\n")
    got = collect(make(tmp_path / "*"))
    assert got[("m_one", ())].value == 1.0 and got[("m_two", ())].value == 1.0
    assert got[("node_textfile_scrape_error", ())].value == 0.0
    got = collect(make(tmp_path / "missing"))
    assert got[("node_textfile_scrape_error", ())].value == 1.0
    assert got[("monbridge_textfile_errors_total", (("reason", "directory"),))].value == 1.0


def test_convert_textfile_names_the_parse_error_line(tmp_path):
    from integrations.prometheus.scrape import Target, TargetScraper

    scraper = TargetScraper(Target("f.prom", {}))
    with pytest.raises(TextfileError) as e:
        convert_textfile(scraper, b"a 1\n\n# TYPE b counter\nb 1 2 3 4\n", 0)
    assert (e.value.reason, e.value.line) == ("parse", 4)


def test_a_bad_config_names_its_path(tmp_path):
    reg = PluginRegistry().discover()
    text = f"plugins:\n  - plugin_id: monitoring.metrics.textfile\n    config: {{directory: {tmp_path}, max_files: 0}}\n"
    with pytest.raises(ConfigError) as e:
        parse_config(text, "agent.yaml", reg)
    assert "plugins[0].config.max_files" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config("plugins:\n  - plugin_id: monitoring.metrics.textfile\n", "agent.yaml", reg)
    assert "plugins[0].config.directory: required key is missing" in str(e.value)
