"""A real process that exits: its series leave /metrics and the OTel data at the next collection.

Runs the process collector against the real host (psutil, /proc) through a running runtime.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import aiohttp

from bridge.config import parse_config
from bridge.registry import PluginRegistry
from bridge.runtime import Runtime


async def test_exited_process_series_expire():
    marker = "monbridge-expiry-probe"
    child = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(120)  # {marker}"])
    text = f"""
server: {{listen: "127.0.0.1:0"}}
plugins:
  - plugin_id: monitoring.metrics.process
    config:
      collection_interval: 0.2
      match: [{{cmdline: "*{marker}*"}}]
"""
    reg = PluginRegistry().discover()
    rt = Runtime(parse_config(text, "t.yaml", reg, env={}), reg)
    await rt.start()
    host, port = rt.server.bound
    pid_label = f'process_pid="{child.pid}"'
    try:
        async with aiohttp.ClientSession() as s:
            async def body() -> str:
                async with s.get(f"http://{host}:{port}/metrics") as r:
                    return await r.text()

            for _ in range(50):
                if pid_label in await body():
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the child process never appeared in /metrics")
            before = [line for line in (await body()).splitlines() if pid_label in line]
            assert any(line.startswith("process_memory_usage_bytes{") for line in before)
            child.kill()
            child.wait()
            for _ in range(50):
                await asyncio.sleep(0.1)
                if pid_label not in await body():
                    break
            else:
                raise AssertionError("series of the exited process are still exported")
        from tests.otlp_view import attributes, metrics_of, points

        data = await asyncio.to_thread(metrics_of, rt.pipeline)
        pids = {attributes(pt.attributes).get("process.pid") for m in data.values() for pt in points(m)}
        assert child.pid not in pids and str(child.pid) not in pids
        assert rt.pipeline.expired_total >= len(before)
    finally:
        if child.poll() is None:
            child.kill()
        await rt.stop()
