"""``/metrics`` stays valid in both formats whatever is bridged: the agent scrapes the real
node_exporter 1.5 (its gauge ``go_memstats_alloc_bytes`` and counter ``go_memstats_alloc_bytes_total``
claim one OpenMetrics family name) and every payload of the hostile exposition corpus
(tests/data/exposition and the scrape fuzzer's corpus), each a target of its own; then
prometheus_client's strict OpenMetrics parser reads its OpenMetrics, and a real Prometheus 2.42
scrapes it (OpenMetrics, which it asks for first) without an error, ingesting every sample."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from peers import peers  # noqa: F401 - the fixture
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from integrations.prometheus.textparse import parse
from tests.unit.exposition_corpus import cases, is_openmetrics, payload

pytestmark = pytest.mark.integration

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "scrape"


def _bodies() -> dict[str, tuple[bytes, bool]]:
    out = {c.replace(".", "_"): (payload(c), is_openmetrics(c)) for c in cases()}
    out.update({"fuzz_" + f.name.replace(".", "_"): (f.read_bytes(), f.suffix == ".om")
                for f in sorted(SCRAPE_CORPUS.iterdir())})
    return out


BODIES = _bodies()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        case = BODIES.get(self.path.rsplit("/", 1)[-1])
        if case is None:
            self.send_error(404)
            return
        body, om = case
        self.send_response(200)
        self.send_header("Content-Type", OPENMETRICS if om else TEXT)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def corpus_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_bridged_node_exporter_and_corpus_stay_valid_for_prometheus_and_a_strict_parser(
        peers, corpus_url, run_monbridge, prometheus_server):  # noqa: F811
    node = peers.node_exporter()
    targets = [{"job": "node", "url": f"{node.url}/metrics"}]
    targets += [{"job": job, "url": f"{corpus_url}/{job}"} for job in BODIES]
    # ~170 targets a round: time enough for a loaded machine.
    mb = run_monbridge({"plugins": [{"plugin_id": "monitoring.integration.prometheus", "config": {
        "interval": 5, "timeout": 10, "scrape": {"interval": 5, "timeout": 5, "targets": targets}}}]})

    def body(accept: str) -> str:
        status, _, raw = mb.get("/metrics", {"Accept": accept})
        assert status == 200
        return raw.decode()

    wait_until(lambda: 'go_memstats_alloc_bytes_total{' in body(TEXT) and 'job="text_basic_prom"' in body(TEXT),
               what="node_exporter and the corpus bridged", timeout=60)
    om = body(OPENMETRICS)
    fams = {f.name: f for f in parse_openmetrics(om)}  # strict: raises on any invalidity
    assert fams["go_memstats_alloc_bytes"].type == "gauge"
    assert fams["go_memstats_alloc_bytes_total"].type == "unknown"  # its counter name is the gauge's
    text_fams = {f.name: f for f in parse_text(body(TEXT))}
    assert text_fams["go_memstats_alloc_bytes"].type == "counter"  # the text format's go_memstats_alloc_bytes_total
    # Both formats hold the same series (read by the agent's own parser: prometheus_client's text
    # parser adds _total to the samples of a counter whose name lacks it).
    om_series = {(n, tuple(sorted(lb))) for f in parse(om.encode(), True) for n, lb, _, _, _ in f.samples}
    text_series = {(n, tuple(sorted(lb))) for f in parse(body(TEXT).encode(), False) for n, lb, _, _, _ in f.samples}
    changing = {"monbridge_", "process_", "go_", "node_"}  # self-metrics and node's may come and go between scrapes
    assert {k for k in om_series if not k[0].startswith(tuple(changing))} == \
        {k for k in text_series if not k[0].startswith(tuple(changing))}

    # A real Prometheus scrapes it, OpenMetrics first, and ingests it all without an error.
    prom = prometheus_server([f"127.0.0.1:{mb.port}"])
    prom.wait_for('go_memstats_alloc_bytes_total{exported_job="node"}')

    def target() -> dict | None:
        _, _, raw = prom.get("/api/v1/targets")
        active = json.loads(raw)["data"]["activeTargets"]
        return active[0] if active and active[0]["lastScrape"] != "0001-01-01T00:00:00Z" else None

    t = wait_until(target, what="Prometheus' first scrape of monbridge")
    assert t["health"] == "up" and t["lastError"] == "", t
    scraped = prom.query('scrape_samples_scraped{job="monbridge",exported_job=""}')  # Prometheus' own
    assert float(scraped[0]["value"][1]) >= len(om_series) * 0.9
    # (the corpus' targets are bridged in rounds of their own: under load, a later scrape brings them)
    wait_until(lambda: {r["metric"]["__name__"] for r in prom.query('{exported_job="om_lenient_semantics_om"}')}
               >= {"nan_counter_total", "neg_total"}, what="the lenient corpus ingested by Prometheus", timeout=60)
