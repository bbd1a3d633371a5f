"""Graceful stop within 5 s even when the OTLP backend hangs: a TCP listener that accepts and
never answers (loopback) stands for a backend that stopped responding mid-export."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request


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
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
server: {{listen: "127.0.0.1:{port}"}}
plugins:
  - plugin_id: monitoring.metrics.system
    config: {{collection_interval: 1}}
  - plugin_id: monitoring.integration.otlp
    config: {{endpoint: "http://127.0.0.1:{hung.getsockname()[1]}", interval: 1, timeout: 30}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not accepted and time.monotonic() < deadline:  # an export is now blocked on the socket
            time.sleep(0.1)
        assert accepted, "monbridge never connected to the OTLP endpoint"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=2) as r:
            assert r.status == 200
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - t0
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


STUCK_PLUGIN = '''
import asyncio

from bridge import CollectorConfig, Metric, MetricCollectorPlugin, MetricKind, PluginMetadata, PluginType


class StuckCollector(MetricCollectorPlugin):
    """Collects once, then hangs in every call and swallows every cancellation."""

    config_model = CollectorConfig

    def __init__(self):
        self.collections = 0

    def metadata(self):
        return PluginMetadata("monitoring.metrics.stuck", "stuck", "1.0", "tests", "swallows cancellation",
                              PluginType.METRIC_COLLECTOR)

    async def initialize(self, config):
        pass

    async def start(self):
        pass

    async def collect_metrics(self):
        self.collections += 1
        if self.collections > 1:
            await self._forever()
        return [Metric("stuck.collections", MetricKind.GAUGE, float(self.collections))]

    async def stop(self):
        await self._forever()

    async def shutdown(self):
        await self._forever()

    async def _forever(self):
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                print("stuck plugin: cancellation swallowed", flush=True)
'''


def install_plugin(site, module: str, source: str, group: str, plugin_id: str, obj: str) -> None:
    """A distribution in ``site`` (a directory for PYTHONPATH) registering ``plugin_id`` under the
    entry-point group ``group``: monbridge finds it as it finds any installed plugin."""
    site.mkdir()
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{plugin_id} = {module}:{obj}\n")


def test_sigterm_exits_within_5s_when_a_plugin_swallows_cancellation(tmp_path, free_port):
    import json
    import os
    from pathlib import Path

    site = tmp_path / "site"
    install_plugin(site, "stuck_plugin", STUCK_PLUGIN, "monbridge.collectors", "monitoring.metrics.stuck",
                   "StuckCollector")
    port = free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
server: {{listen: "127.0.0.1:{port}"}}
plugins:
  - plugin_id: monitoring.metrics.system
    config: {{collection_interval: 1}}
  - plugin_id: monitoring.metrics.stuck
    config: {{collection_interval: 0.5, timeout: 0.5}}
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).resolve().parents[2])

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
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert elapsed < 5.0, f"took {elapsed:.1f}s to stop; log:\n{err}"
    assert proc.returncode == 0, err
    assert "stuck plugin: cancellation swallowed" in out
    assert "plugin monitoring.metrics.stuck did not stop within" in err
    assert "stopped" in err
