"""Real servers for the integration tests: monbridge itself, run through its CLI, and Prometheus.

Everything listens on 127.0.0.1 only. Both fixtures are factories, so one test can start
several servers; each server is stopped (SIGTERM, then SIGKILL after 10 s) when the test ends,
and its log is printed then, which pytest shows for failing tests.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url``; returns (status, headers with lower-case names, raw body). HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition", interval: float = 0.2) -> Any:
    """Poll ``predicate()`` until it returns something truthy and return that; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)


class ServerProcess:
    """A server started as a subprocess, logging to a file."""

    name = "server"
    ready_path = "/-/ready"  # answers 200 once the server is ready

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def get(self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        return http_get(self.url + path, headers, timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll ``ready_path`` until it answers 200; fail with the log if it doesn't in time or the process exits."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with status {self.proc.returncode} before it was ready; its log:\n{self.log_text()}",
                    pytrace=False,
                )
            try:
                status, _, body = self.get(self.ready_path, timeout=1.0)
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.2)
        pytest.fail(
            f"{self.name} at {self.url} was not ready within {timeout:.0f} s (last: {last}); its log:\n{self.log_text()}",
            pytrace=False,
        )

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 10 s; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
                print(f"{self.name} did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM and was killed")
        return self.proc.returncode


class MonbridgeProcess(ServerProcess):
    name = "monbridge"

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path, config_path: Path) -> None:
        super().__init__(proc, port, log_path)
        self.config_path = config_path


class PrometheusProcess(ServerProcess):
    name = "prometheus"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; returns ``data.result`` (a list of {"metric": labels, "value": [t, "v"]})."""
        status, _, body = self.get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        payload = json.loads(body)
        assert status == 200 and payload.get("status") == "success", f"query {promql!r} failed: HTTP {status} {payload}"
        return payload["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``promql`` until it returns a non-empty result; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() >= deadline:
                _, _, targets = self.get("/api/v1/targets")
                pytest.fail(
                    f"Prometheus query {promql!r} still empty after {timeout:.0f} s; targets: {targets.decode(errors='replace')}",
                    pytrace=False,
                )
            time.sleep(0.5)


def _start(args: Sequence[str], log_path: Path, cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    log = open(log_path, "wb")
    try:
        full_env = {**os.environ, **env} if env is not None else None
        return subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=full_env)
    finally:
        log.close()  # the child has its own descriptor


def _stop_all(servers: list[ServerProcess]) -> None:
    for server in reversed(servers):
        status = server.stop()
        print(f"----- {server.name} on port {server.port} (exit status {status}), log {server.log_path}:")
        print(server.log_text())


@pytest.fixture
def run_monbridge(tmp_path: Path, free_port) -> Iterator[Callable[[Mapping[str, Any]], MonbridgeProcess]]:
    """``run_monbridge(config) -> handle``: runs ``python -m bridge.cli run`` on ``config`` (a dict,
    written as YAML) and waits for ``/-/ready``; ``args=`` adds CLI flags, ``env=`` environment
    variables, ``workdir=`` reuses a directory (a restart on the same state). Without ``server.listen`` it listens on a free
    loopback port. The handle has ``.url``, ``.port``, ``.proc``, ``.log_text()``, ``.get(path)``."""
    started: list[ServerProcess] = []

    def start(config: Mapping[str, Any], *, args: Sequence[str] = (), env: Mapping[str, str] | None = None,
              workdir: Path | None = None, wait: bool = True) -> MonbridgeProcess:
        config = copy.deepcopy(dict(config))
        server = config.setdefault("server", {})
        if "listen" not in server:
            server["listen"] = f"127.0.0.1:{free_port()}"
        host, _, port = str(server["listen"]).rpartition(":")
        assert host in ("127.0.0.1", "localhost", "[::1]"), f"tests listen on loopback only, not {host!r}"
        workdir = workdir or tmp_path / f"monbridge-{len(started)}"
        workdir.mkdir(exist_ok=True)
        config_path = workdir / "monbridge.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        log_path = workdir / f"monbridge-{len(started)}.log"
        argv = [sys.executable, "-m", "bridge.cli", "run", "--config", str(config_path), "--log-format", "json", *args]
        handle = MonbridgeProcess(_start(argv, log_path, REPO_ROOT, env), int(port), log_path, config_path)
        started.append(handle)
        if wait:
            handle.wait_ready()
        return handle

    yield start
    _stop_all(started)


def prometheus_config(scrape_targets: Sequence[str], scrape_interval: str = "1s") -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": scrape_interval,
        },
        "scrape_configs": [
            {
                "job_name": "monbridge",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": list(scrape_targets)}],
            }
        ],
    }


@pytest.fixture
def prometheus_server(tmp_path: Path, free_port, require_binary) -> Iterator[Callable[..., PrometheusProcess]]:
    """``prometheus_server(scrape_targets, scrape_interval="1s") -> handle``: the real Prometheus,
    scraping each ``host:port`` in ``scrape_targets`` at ``/metrics`` as job ``monbridge``, on a
    loopback port (or ``port``), with its TSDB in tmp_path. ``config=`` replaces the whole
    prometheus.yml, ``extra_args=`` adds flags (``--web.enable-remote-write-receiver``),
    ``agent=True`` runs agent mode. The handle has ``.url``, ``.port``, ``.proc``,
    ``.log_text()``, ``.query(promql)`` and ``.wait_for(promql, timeout)``."""
    started: list[ServerProcess] = []

    def start(scrape_targets: Sequence[str] = (), scrape_interval: str = "1s", port: int | None = None, *,
              config: Mapping[str, Any] | None = None, extra_args: Sequence[str] = (),
              agent: bool = False) -> PrometheusProcess:
        binary = require_binary("prometheus")
        for target in scrape_targets:
            assert target.rpartition(":")[0] in ("127.0.0.1", "localhost", "[::1]"), f"scrape loopback only, not {target!r}"
        workdir = tmp_path / f"prometheus-{len(started)}"
        (workdir / "data").mkdir(parents=True)
        config_path = workdir / "prometheus.yml"
        full = dict(config) if config is not None else prometheus_config(scrape_targets, scrape_interval)
        config_path.write_text(yaml.safe_dump(full, sort_keys=False))
        port = port or free_port()
        args = [
            binary,
            f"--config.file={config_path}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        if agent:
            args += ["--enable-feature=agent", f"--storage.agent.path={workdir / 'data'}"]
        else:
            args.append(f"--storage.tsdb.path={workdir / 'data'}")
        args += list(extra_args)
        handle = PrometheusProcess(_start(args, workdir / "prometheus.log", workdir), port, workdir / "prometheus.log")
        started.append(handle)
        handle.wait_ready()
        return handle

    yield start
    _stop_all(started)
