"""The scrape parser against the judge: a real Prometheus 2.42 scrapes every payload of the exposition
corpus (tests/data/exposition), and what it ingested, or its refusal, must be what our parser yields.

One Prometheus, one job per payload (scrape interval 1 s), served from a local http.server with the
Content-Type that selects Prometheus' text or OpenMetrics parser.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator

import pytest

from integrations.prometheus.textparse import parse
from tests.unit.exposition_corpus import cases, expected, is_openmetrics, payload, value_text

pytestmark = pytest.mark.integration

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                 "scrape_series_added"}


# Payloads made when the test starts, with timestamps Prometheus does not drop as too old.
LIVE: dict[str, bytes] = {}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        case = self.path.rsplit("/", 1)[-1]
        if case in LIVE:
            body = LIVE[case]
        elif case in cases():
            body = payload(case)
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", OPENMETRICS if is_openmetrics(case) else TEXT)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except BrokenPipeError:  # Prometheus gave up on this scrape (shutdown)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def corpus_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _wait_all_scraped(prom, n_jobs: int, timeout: float = 20.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        _, _, body = prom.get("/api/v1/targets")
        targets = json.loads(body)["data"]["activeTargets"]
        if len(targets) == n_jobs and all(t["health"] != "unknown" for t in targets):
            return {t["labels"]["job"]: t for t in targets}
        assert time.monotonic() < deadline, f"not every target scraped after {timeout:.0f} s: {targets}"
        time.sleep(0.3)


def _ingested(prom, job: str, at: float | None = None) -> dict[tuple, str]:
    """Series of ``job`` Prometheus holds (at ``at``, or now): (name, sorted labels) -> value text."""
    query = f'{{__name__=~".+",job="{job}"}}'
    params = {"query": query} | ({"time": repr(at)} if at is not None else {})
    _, _, body = prom.get("/api/v1/query?" + urllib.parse.urlencode(params))
    result = json.loads(body)["data"]["result"]
    out = {}
    for r in result:
        labels = dict(r["metric"])
        name = labels.pop("__name__")
        if name in SCRAPE_SERIES:
            continue
        del labels["job"], labels["instance"]
        out[(name, tuple(sorted(labels.items())))] = value_text(float(r["value"][1]))
    return out


def _ours(body: bytes, openmetrics: bool) -> tuple[dict[tuple, str], dict[int, dict[tuple, str]]]:
    """What our parser says Prometheus ingests: series without a timestamp, and those with one by timestamp.
    Empty label values are no labels to Prometheus; of duplicate series the first sample is kept."""
    now: dict[tuple, str] = {}
    stamped: dict[int, dict[tuple, str]] = {}
    for fam in parse(body, openmetrics):
        for name, labels, value, ts, _key in fam.samples:
            key = (name, tuple(sorted((k, v) for k, v in labels if v)))
            target = now if ts is None else stamped.setdefault(ts, {})
            target.setdefault(key, value_text(value))
    return now, stamped


def _live_payloads() -> dict[str, bytes]:
    """Timestamped samples a minute old: Prometheus drops the corpus' fixed (older) timestamps as too old."""
    t = int(time.time()) - 60
    return {
        "live_timestamps.prom": (f"# TYPE live gauge\nlive{{k=\"a\"}} 1 {t}000\nlive{{k=\"b\"}} 2 {t}123\n"
                                 f"live{{k=\"c\"}} 3\t{t}456 \n").encode(),
        "live_timestamps.om": (f"# TYPE live gauge\nlive{{k=\"a\"}} 1 {t}\nlive{{k=\"b\"}} 2 {t}.123\n"
                               f"live{{k=\"c\"}} 3 {t}.4567\n# TYPE ex counter\n"
                               f"ex_total 4 {t}.5 # {{id=\"x\"}} 1 {t}\n# EOF\n").encode(),
    }


def test_prometheus_ingests_what_we_parse(prometheus_server, corpus_server):
    LIVE.update(_live_payloads())
    all_cases = cases() + sorted(LIVE)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": case, "metrics_path": f"/corpus/{case}", "static_configs": [{"targets": [corpus_server]}]}
            for case in all_cases
        ],
    }
    prom = prometheus_server(config=config)
    targets = _wait_all_scraped(prom, len(all_cases))
    mismatches = []
    n_accepted = n_stamped = 0
    for case in all_cases:
        target = targets[case]
        body, om = LIVE.get(case) or payload(case), is_openmetrics(case)
        exp = expected(case) if case not in LIVE else {}
        if "error_line" in exp:
            if target["health"] != "down":
                mismatches.append(f"{case}: we reject it (line {exp['error_line']}), Prometheus scraped it fine")
            continue
        if target["health"] != "up":
            mismatches.append(f"{case}: we accept it, Prometheus failed the scrape: {target['lastError']}")
            continue
        n_accepted += 1
        now, stamped = _ours(body, om)
        if case in LIVE:  # a minute old, within the 5 min lookback of a query at "now"
            for series in stamped.values():
                now.update(series)
        got = _ingested(prom, case)
        if got != now:
            mismatches.append(f"{case}: series differ\n  ours:       {sorted(now.items())}\n  Prometheus: {sorted(got.items())}")
        for ts, series in stamped.items() if case in LIVE else ():  # the corpus' timestamps are too old to keep
            at = _ingested(prom, case, ts / 1000)
            missing = {k: v for k, v in series.items() if at.get(k) != v}
            if missing:
                mismatches.append(f"{case}: at {ts} ms Prometheus has {sorted(at.items())}, we have {sorted(missing.items())}")
            before = _ingested(prom, case, (ts - 1) / 1000)
            if any(k in before for k in series):  # nothing earlier: the sample's timestamp is exactly ts
                mismatches.append(f"{case}: Prometheus has {sorted(before.items())} at {ts - 1} ms, before our timestamp")
            n_stamped += 1
        # HELP, TYPE and UNIT as Prometheus' metadata API reports them
        _, _, md_body = prom.get("/api/v1/targets/metadata?" + urllib.parse.urlencode({"match_target": f'{{job="{case}"}}'}))
        families = {f.name: f for f in parse(body, om)}
        for md in json.loads(md_body)["data"]:
            fam = families.get(md["metric"])
            ours = None if fam is None else ("unknown" if fam.type == "untyped" else fam.type, fam.help, fam.unit)
            if ours != (md["type"], md["help"], md["unit"]):
                mismatches.append(f"{case}: metadata of {md['metric']}: Prometheus {md}, ours {ours}")
    assert not mismatches, "\n".join(mismatches)
    assert n_accepted >= 30 and n_stamped == 7, (n_accepted, n_stamped)
