"""Graceful stop within 5 s even when the OTLP backend hangs (a TCP listener that accepts and
never answers, on loopback, stands for a backend that stopped responding mid-export), and
even when a plugin swallows its cancellation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def start_agent(tmp_path: Path, port: int, plugins: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``monbridge run`` on 127.0.0.1:``port`` with the system collector and ``plugins`` (YAML list items)."""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
server: {{listen: "127.0.0.1:{port}"}}
plugins:
  - plugin_id: monitoring.metrics.system
    config: {{collection_interval: 1}}
{plugins}""")
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)


def sigterm(proc: subprocess.Popen) -> tuple[str, str, float]:
    """SIGTERM ``proc``; its stdout, stderr and the seconds it took to exit."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return out, err, time.monotonic() - t0


def test_sigterm_exits_within_5s_while_an_export_hangs(tmp_path, free_port):
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hung.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(hung.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    port = free_port()
    proc = start_agent(tmp_path, port, f"""\
  - plugin_id: monitoring.integration.otlp
    config: {{endpoint: "http://127.0.0.1:{hung.getsockname()[1]}", interval: 1, timeout: 30}}
""")
    try:
        deadline = time.monotonic() + 20
        while not accepted and time.monotonic() < deadline:  # an export is now blocked on the socket
            time.sleep(0.1)
        assert accepted, "monbridge never connected to the OTLP endpoint"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=2) as r:
            assert r.status == 200
        _, err, elapsed = sigterm(proc)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        for c in accepted:
            c.close()
        hung.close()
    assert elapsed < 5.0, f"took {elapsed:.1f}s to stop; log:\n{err}"
    assert proc.returncode == 0
    assert "stopped" in err


def install_entry_point(site: Path, group: str, plugin_id: str, obj: str) -> None:
    """A distribution in ``site`` (a directory for PYTHONPATH) registering ``obj`` as ``plugin_id``
    under the entry-point group ``group``: monbridge finds it as it finds any installed plugin."""
    info = site / "monbridge_test_plugins-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: monbridge-test-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{plugin_id} = {obj}\n")


def test_sigterm_exits_within_5s_when_a_plugin_swallows_cancellation(tmp_path, free_port):
    site = tmp_path / "site"
    install_entry_point(site, "monbridge.collectors", "monitoring.metrics.stuck",
                        "tests.unit.plugins_for_tests:StuckCollector")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    proc = start_agent(tmp_path, port, """\
  - plugin_id: monitoring.metrics.stuck
    isolation: in_process  # a third-party plugin would run in a worker, killed at its timeout
    config: {collection_interval: 0.5, timeout: 0.5}
""", env)

    def stuck_status() -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/plugins", timeout=2) as r:
                plugins = {p["plugin_id"]: p for p in json.load(r)["data"]}
        except OSError:
            return {}
        return plugins["monitoring.metrics.stuck"]

    try:
        deadline = time.monotonic() + 30
        status: dict = {}
        while time.monotonic() < deadline and proc.poll() is None:
            status = stuck_status()
            if status.get("timeouts", 0) >= 2:  # it has hung, swallowed its cancellation, and hangs again
                break
            time.sleep(0.1)
        assert status.get("timeouts", 0) >= 2, f"the stuck plugin was never timed out: {status}"
        assert status["abandoned_tasks"] >= 2
        out, err, elapsed = sigterm(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert elapsed < 5.0, f"took {elapsed:.1f}s to stop; log:\n{err}"
    assert proc.returncode == 0, err
    assert "monitoring.metrics.stuck: cancellation swallowed" in out
    assert "plugin monitoring.metrics.stuck did not stop within" in err
    assert "stopped" in err
