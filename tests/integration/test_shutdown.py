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
