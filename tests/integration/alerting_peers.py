"""Real peers of the alerting integration tests: Alertmanager 0.25 (``alertmanager_server``) and
helpers to drive a running monbridge's alert API.

``alertmanager_server(config) -> handle`` runs ``prometheus-alertmanager`` on a loopback port with
clustering off and its storage in tmp_path, waits for ``/-/ready``, and stops it at the end
of the test (its log is printed then). ``handle.alerts()`` is ``GET /api/v2/alerts``;
``handle.post_alerts(list)`` is ``POST /api/v2/alerts``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ServerProcess, _start, _stop_all


class AlertmanagerProcess(ServerProcess):
    name = "alertmanager"

    def alerts(self) -> list[dict[str, Any]]:
        status, _, body = self.get("/api/v2/alerts")
        assert status == 200, body
        return json.loads(body)

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        req = urllib.request.Request(self.url + "/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200


@pytest.fixture
def alertmanager_server(tmp_path: Path, free_port,
                        require_binary) -> Iterator[Callable[[Mapping[str, Any]], AlertmanagerProcess]]:
    started: list[ServerProcess] = []

    def start(config: Mapping[str, Any]) -> AlertmanagerProcess:
        binary = require_binary("prometheus-alertmanager")
        workdir = tmp_path / f"alertmanager-{len(started)}"
        (workdir / "data").mkdir(parents=True)
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
        port = free_port()
        args = [binary, f"--config.file={workdir / 'alertmanager.yml'}", f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"]
        handle = AlertmanagerProcess(_start(args, workdir / "alertmanager.log", workdir), port,
                                     workdir / "alertmanager.log")
        started.append(handle)
        handle.wait_ready()
        return handle

    yield start
    _stop_all(started)


def api(base: str, method: str, path: str, body: Any = None) -> Any:
    """A call to monbridge's API; returns the ``data`` of its answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())["data"]
