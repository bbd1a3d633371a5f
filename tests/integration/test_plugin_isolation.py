"""Plugins in worker processes inside a running agent: a plugin that blocks or spins is killed at
its timeout and restarted while ``/metrics`` keeps answering and an in-process collector keeps
its schedule; SIGTERM to the agent ends its workers (none is left behind)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from bridge.config import parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime
from bridge.supervisor import SupervisorSettings
from tests.integration.test_shutdown import install_entry_point
from tests.unit.isolation_plugins import MisbehavingCollector
from tests.unit.plugins_for_tests import SteadyCollector

REPO_ROOT = Path(__file__).resolve().parents[2]
STEADY_INTERVAL = 1.0


@pytest.mark.parametrize("misbehaviour", ["sleep", "spin"])
async def test_a_blocking_plugin_is_killed_and_restarted_while_the_agent_answers(misbehaviour):
    text = f"""
server: {{listen: "127.0.0.1:0"}}
plugins:
  - plugin_id: monitoring.metrics.steady
    config: {{collection_interval: {STEADY_INTERVAL}}}
  - plugin_id: monitoring.metrics.misbehaving
    isolation: process
    config: {{collection_interval: 1, timeout: 1, {misbehaviour}: 3600, token: s3cret-token}}
"""
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.steady", SteadyCollector)
    reg.register_plugin("monitoring.metrics.misbehaving", MisbehavingCollector)
    rt = Runtime(parse_config(text, "t.yaml", reg, env={}), reg,
                 settings=SupervisorSettings(backoff_initial=0.2, backoff_max=0.4))
    await rt.start()
    host, port = rt.server.bound
    base = f"http://{host}:{port}"
    bad = rt.supervisor.runners["monitoring.metrics.misbehaving"]
    pids: set[int] = set()
    answered = 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            deadline = time.monotonic() + 7.0
            while time.monotonic() < deadline:
                async with s.get(f"{base}/metrics") as r:
                    assert r.status == 200
                    await r.text()
                    answered += 1
                if bad.host is not None and getattr(bad.host, "pid", None):
                    pids.add(bad.host.pid)
                await asyncio.sleep(0.1)
            metrics = await (await s.get(f"{base}/metrics")).text()
            plugins = (await (await s.get(f"{base}/api/v1/plugins")).json())["data"]
        steady = rt.supervisor.runners["monitoring.metrics.steady"].host.plugin.calls
    finally:
        await rt.stop()
    assert answered > 30
    st = {p["plugin_id"]: p for p in plugins}
    b = st["monitoring.metrics.misbehaving"]
    assert b["isolation"] == "process" and b["stop_reason"] == "timeout"
    assert "collection did not end within 1s" in b["stop_detail"]
    assert b["stops"]["timeout"] >= 2 and b["restarts"] >= 2 and b["timeouts"] >= 2
    assert "mechanisms" in b and "s3cret-token" not in json.dumps(b)
    assert st["monitoring.metrics.steady"]["isolation"] == "in_process"
    assert st["monitoring.metrics.steady"]["stop_reason"] is None
    assert len(pids) >= 2, "each restart runs a fresh worker"
    stops = [line for line in metrics.splitlines()
             if line.startswith("monbridge_plugin_stops_total{") and 'reason="timeout"' in line
             and "misbehaving" in line]
    assert stops and float(stops[0].rsplit(" ", 1)[1]) >= 2
    # The in-process collector kept its schedule: jitter within 10 % of its interval.
    gaps = [b - a for a, b in zip(steady, steady[1:], strict=False)]
    assert len(gaps) >= 5
    assert max(abs(g - STEADY_INTERVAL) for g in gaps) <= 0.1 * STEADY_INTERVAL, gaps
    for pid in pids:  # every worker it started has ended
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.parametrize(("sig", "blocked"), [(signal.SIGTERM, False), (signal.SIGTERM, True), (signal.SIGKILL, True)],
                         ids=["sigterm-idle", "sigterm-blocked", "sigkill-blocked"])
def test_the_agents_end_ends_its_workers(tmp_path, free_port, sig, blocked):
    """SIGTERM: the agent stops its workers (a blocked one is killed); SIGKILL: the kernel kills
    the worker with it (PR_SET_PDEATHSIG), even one blocked in the plugin's code."""
    site = tmp_path / "site"
    install_entry_point(site, "monbridge.collectors", "monitoring.metrics.misbehaving",
                        "tests.unit.isolation_plugins:MisbehavingCollector")  # a third-party plugin
    port = free_port()
    sleep = 3600 if blocked else 0
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
server: {{listen: "127.0.0.1:{port}"}}
plugins:
  - plugin_id: monitoring.metrics.misbehaving
    config: {{collection_interval: 0.5, timeout: 60, sleep: {sleep}}}
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(site)])}
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(cfg)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = None
        for _ in range(200):
            time.sleep(0.1)
            try:
                data = _get(f"http://127.0.0.1:{port}/api/v1/plugins")["data"]
            except OSError:
                continue
            st = data[0]
            if st["worker_pid"] and (blocked or st["runs"] > 0):
                pid = st["worker_pid"]
                break
        assert pid is not None, proc.stderr.read() if proc.poll() is not None else "no worker came up"
        assert st["isolation"] == "process" and st["isolation_note"] is None
        assert Path(f"/proc/{pid}").exists()
        time.sleep(0.5 if blocked else 0)  # a blocked worker is inside its collection
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == (0 if sig == signal.SIGTERM else -signal.SIGKILL), err
    for _ in range(20):  # the worker is not the agent's child any more once the agent exited
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"worker {pid} outlived the agent"


async def test_an_integration_in_a_worker_runs_its_rounds_and_the_alert_flow(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    text = f"""
server: {{listen: "127.0.0.1:0"}}
alerting: {{import_interval: 0.3, state_dir: {json.dumps(str(tmp_path / "state"))}}}
plugins:
  - plugin_id: monitoring.metrics.steady
    config: {{collection_interval: 0.3}}
  - plugin_id: monitoring.integration.recording
    isolation: process
    grants: {{paths: [{json.dumps(str(out))}]}}
    config: {{interval: 1, out: {json.dumps(str(out))}, imported: 6.5}}
"""
    from tests.unit.isolation_plugins import RecordingIntegration

    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.steady", SteadyCollector)
    reg.register_plugin("monitoring.integration.recording", RecordingIntegration)
    rt = Runtime(parse_config(text, "t.yaml", reg, env={}), reg)
    await rt.start()
    host, port = rt.server.bound
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            for _ in range(150):
                await asyncio.sleep(0.1)
                alerts = (await (await s.get(f"http://{host}:{port}/api/v1/alerts")).json())["data"]
                if alerts and (out / "alerts.json").exists() and (out / "export-3.json").exists():
                    break
            metrics = await (await s.get(f"http://{host}:{port}/metrics")).text()
        worker_pid = rt.supervisor.runners["monitoring.integration.recording"].host.pid
    finally:
        await rt.stop()
    assert [a["name"] for a in alerts] == ["QueueStuck"]  # imported from the worker, fired by the engine
    # The engine's active alerts (with the labels it adds) went back to the worker's export_alerts.
    assert json.loads((out / "alerts.json").read_text()) == [
        ["QueueStuck", "firing", {"queue": "a", "alertname": "QueueStuck", "severity": "critical"}]]
    export = json.loads((out / "export-3.json").read_text())
    assert export["pid"] == worker_pid != os.getpid()
    names = {r["name"] for r in export["rows"]}
    assert {"steady.value", "recording_imported"} <= names  # the collector's and its own import, in the batch
    assert f'recording_imported{{pid="{worker_pid}"}} 6.5' in metrics
    assert 'monbridge_plugin_worker_resident_memory_bytes{plugin_id="monitoring.integration.recording"' in metrics
    assert 'monbridge_plugin_worker_cpu_seconds_total{plugin_id="monitoring.integration.recording"' in metrics
