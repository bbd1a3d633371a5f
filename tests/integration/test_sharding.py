"""Sharded scraping with real monbridge processes: replicas split the targets by hashmod.

Tiny HTTP servers in the test process stand for the targets, each on its own loopback port.
Two monbridge processes (``--shard-index 0|1 --shard-count 2``) scrape the same target list; the
``up`` series of each one's ``/metrics`` show which targets it scraped. Together they must scrape
every target exactly once, each the targets ``shard_of`` gives it, and adding a target (a config
reload) must move no other. A third process started the way a StatefulSet pod is (only
``MONBRIDGE_SHARD_COUNT`` and ``HOSTNAME=<name>-<ordinal>`` in its environment) takes its shard
from the ordinal.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from integrations.prometheus.sharding import shard_of

pytestmark = pytest.mark.integration

SHARDS = 2
PER_SHARD = 6  # 12 targets, 6 in each shard
INTERVAL = 1.0
TIMEOUT = 15.0


class _Exporter(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = b"# TYPE demo_value gauge\ndemo_value 1\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Targets:
    """Exporters on 127.0.0.1: ``initial`` (PER_SHARD in each shard of SHARDS) and one ``extra``."""

    def __init__(self) -> None:
        self.servers: list[http.server.ThreadingHTTPServer] = []
        by_shard: dict[int, list[str]] = {i: [] for i in range(SHARDS)}
        # Ports are whatever the kernel gives, so the split of any fixed number of them is random:
        # keep starting exporters until every shard has PER_SHARD (a shard with none would prove nothing).
        while min(len(v) for v in by_shard.values()) < PER_SHARD:
            url = self._start()
            shard = shard_of(url, SHARDS)
            if len(by_shard[shard]) < PER_SHARD:
                by_shard[shard].append(url)
        self.initial = sorted(u for urls in by_shard.values() for u in urls)
        self.extra = self._start()

    def _start(self) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exporter)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/metrics"

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    t = Targets()
    yield t
    t.close()


def instance(url: str) -> str:
    return url.split("/")[2]


def scrape_config(urls: list[str]) -> dict:
    return {
        "plugins": [
            {
                "plugin_id": "monitoring.integration.prometheus",
                "config": {
                    "scrape": {
                        "interval": INTERVAL,
                        "timeout": INTERVAL,
                        "targets": [{"job": "demo", "url": u, "labels": {"source": "sharding-test"}} for u in urls],
                    }
                },
            }
        ]
    }


def up_series(mb) -> dict[str, float]:
    """instance -> value of the ``up{job="demo"}`` series on monbridge's /metrics."""
    status, _, body = mb.get("/metrics")
    assert status == 200, f"GET /metrics: HTTP {status}"
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "up":
            for s in family.samples:
                if s.labels.get("job") == "demo":
                    assert s.labels["source"] == "sharding-test"
                    out[s.labels["instance"]] = s.value
    return out


def wait_for_up(mb, expected: set[str], what: str) -> dict[str, float]:
    """Poll /metrics until its up{job="demo"} instances are exactly ``expected``, then check that a
    later round still scrapes exactly those (nothing else turns up)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        up = up_series(mb)
        if set(up) == expected:
            break
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: scraped {sorted(up)}, expected {sorted(expected)}\n"
                        f"missing {sorted(expected - set(up))}, extra {sorted(set(up) - expected)}\n{mb.log_text()}",
                        pytrace=False)
        time.sleep(0.2)
    time.sleep(2 * INTERVAL)
    up = up_series(mb)
    assert set(up) == expected, f"{what}: a later round scraped {sorted(up)}"
    assert all(v == 1 for v in up.values()), f"{what}: a target is down: {up}"
    return up


def expected_shard(urls: list[str], index: int) -> set[str]:
    return {instance(u) for u in urls if shard_of(u, SHARDS) == index}


def reload(mb) -> None:
    request = urllib.request.Request(mb.url + "/-/reload", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = json.loads(response.read())
    assert payload["status"] == "success", payload


def configured_targets(mb) -> int:
    _, _, body = mb.get("/api/v1/plugins")
    [plugin] = [p for p in json.loads(body)["data"] if p["plugin_id"] == "monitoring.integration.prometheus"]
    return len(plugin["config"]["scrape"]["targets"])


def test_two_replicas_scrape_every_target_exactly_once_and_adding_one_moves_none(run_monbridge, targets, monkeypatch):
    monkeypatch.delenv("MONBRIDGE_SHARD_INDEX", raising=False)
    monkeypatch.delenv("MONBRIDGE_SHARD_COUNT", raising=False)
    config = scrape_config(targets.initial)
    replicas = [run_monbridge(config, args=["--shard-index", str(i), "--shard-count", str(SHARDS)], wait=False)
                for i in range(SHARDS)]
    for mb in replicas:
        mb.wait_ready()

    scraped = [set(wait_for_up(mb, expected_shard(targets.initial, i), f"shard {i}")) for i, mb in enumerate(replicas)]
    everything = {instance(u) for u in targets.initial}
    assert scraped[0] | scraped[1] == everything, "some target is scraped by no replica"
    assert not scraped[0] & scraped[1], f"targets scraped by both replicas: {sorted(scraped[0] & scraped[1])}"
    assert all(len(s) == PER_SHARD for s in scraped)
    for i, mb in enumerate(replicas):
        assert f"scraping shard {i} of {SHARDS}" in mb.log_text()

    # One more target, the same new list on both replicas (as one ConfigMap change would give them).
    grown = [*targets.initial, targets.extra]
    for mb in replicas:
        mb.config_path.write_text(yaml.safe_dump({**yaml.safe_load(mb.config_path.read_text()),
                                                  "plugins": scrape_config(grown)["plugins"]}, sort_keys=False))
        reload(mb)
        assert configured_targets(mb) == len(grown)
    owner = shard_of(targets.extra, SHARDS)
    after = [set(wait_for_up(mb, expected_shard(grown, i), f"shard {i} after the reload")) for i, mb in enumerate(replicas)]
    assert after[owner] == scraped[owner] | {instance(targets.extra)}
    assert after[1 - owner] == scraped[1 - owner], "adding a target moved another one"
    assert after[0] | after[1] == {instance(u) for u in grown} and not after[0] & after[1]


def test_statefulset_pod_takes_its_shard_from_the_ordinal_in_hostname(run_monbridge, targets, monkeypatch):
    monkeypatch.delenv("MONBRIDGE_SHARD_INDEX", raising=False)
    mb = run_monbridge(scrape_config(targets.initial), env={"MONBRIDGE_SHARD_COUNT": str(SHARDS), "HOSTNAME": "monbridge-1"})
    scraped = wait_for_up(mb, expected_shard(targets.initial, 1), "pod monbridge-1")
    assert len(scraped) == PER_SHARD
    assert f"scraping shard 1 of {SHARDS}" in mb.log_text()
