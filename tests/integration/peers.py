"""Real Prometheus-ecosystem peers for the bridge's integration tests: node_exporter 1.5 and
Pushgateway (Debian packages), each on a loopback port, logging to a file, stopped (and its log
printed) when the test ends. ``peers`` is the fixture: ``peers.node_exporter()``. Alertmanager is
``alertmanager_server`` in alerting_peers.py."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ServerProcess, _start, _stop_all, http_get


class Peers:
    def __init__(self, tmp_path: Path, free_port: Callable[[], int], require_binary: Callable[[str], str]) -> None:
        self.tmp_path = tmp_path
        self.free_port = free_port
        self.require_binary = require_binary
        self.started: list[ServerProcess] = []

    def _run(self, name: str, binary: str, args: list[str], port: int, ready_path: str) -> ServerProcess:
        workdir = self.tmp_path / f"{name}-{len(self.started)}"
        workdir.mkdir(parents=True)
        proc = _start([self.require_binary(binary), *args], workdir / f"{name}.log", workdir)
        server = ServerProcess(proc, port, workdir / f"{name}.log")
        server.name = name
        server.ready_path = ready_path
        self.started.append(server)
        server.wait_ready()
        return server

    def node_exporter(self) -> ServerProcess:
        port = self.free_port()
        # A fixed, small set of collectors keeps the scrape's series set stable between scrapes.
        args = [f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                "--collector.cpu", "--collector.meminfo", "--collector.loadavg", "--collector.uname",
                "--collector.filesystem", "--collector.stat", "--collector.time"]
        return self._run("node_exporter", "prometheus-node-exporter", args, port, "/metrics")

    def pushgateway(self) -> ServerProcess:
        port = self.free_port()
        args = [f"--web.listen-address=127.0.0.1:{port}", f"--persistence.file={self.tmp_path / f'pg-{port}.db'}"]
        return self._run("pushgateway", "prometheus-pushgateway", args, port, "/-/ready")

    def stop_all(self) -> None:
        _stop_all(self.started)


def push(pushgateway: ServerProcess, job: str, body: str) -> None:
    """PUT a text-format body into a Pushgateway group ``job``."""
    req = urllib.request.Request(f"{pushgateway.url}/metrics/job/{job}", data=body.encode(), method="PUT",
                                 headers={"Content-Type": "text/plain; version=0.0.4"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status in (200, 202), resp.status


@pytest.fixture
def peers(tmp_path: Path, free_port, require_binary) -> Iterator[Peers]:
    p = Peers(tmp_path, free_port, require_binary)
    yield p
    p.stop_all()


__all__ = ["Peers", "http_get", "peers", "push"]
