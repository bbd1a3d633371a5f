"""The ``monbridge`` command as a user runs it: validate, run, signals, reload, test, --help."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

CLI = [sys.executable, "-m", "bridge.cli"]


def run_cli(*args, env=None, timeout=60):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_ready(url, proc, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"monbridge exited early with {proc.returncode}")
        try:
            if get(url + "/-/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("monbridge never became ready")


def write_config(path, port, interval=1, extra=""):
    path.write_text(f"""
server:
  listen: "127.0.0.1:{port}"
plugins:
  - plugin_id: monitoring.metrics.system
    enabled: true
    config:
      collection_interval: {interval}
{extra}""")


def test_help_explains_every_command():
    out = run_cli("--help").stdout
    for cmd in ("run", "validate", "plugins", "test"):
        assert cmd in out
    run_help = run_cli("run", "--help").stdout
    for opt in ("--config", "--listen", "--log-level", "--log-format"):
        assert opt in run_help


def test_validate_good_and_bad(tmp_path, free_port):
    good = tmp_path / "good.yaml"
    write_config(good, free_port())
    r = run_cli("validate", "--config", str(good))
    assert r.returncode == 0 and "valid (1 enabled plugin" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("plugins:\n  - plugin_id: monitoring.metrics.system\n    config:\n      collection_interval: fast\n")
    r = run_cli("validate", "--config", str(bad))
    assert r.returncode == 2
    assert f"invalid config {bad}" in r.stderr
    assert "line 4: plugins[0].config.collection_interval: input should be a valid number" in r.stderr


BAD_EVERYWHERE = """\
server:
  listen: "127.0.0.1:{port}"
  auth: {{basic: {{usernam: u, password: p}}}}
pipeline: {{cardinality_limt: 3}}
plugins:
  - plugin_id: monitoring.metrics.system
    config:
      collection_intervl: 1
  - plugin_id: monitoring.metrics.process
    config: {{collection_interval: fast}}
"""
BAD_EVERYWHERE_ISSUES = [
    "  line 3: server.auth.basic.username: required key is missing",
    "  line 3: server.auth.basic.usernam: unknown key, did you mean 'username'? (expected one of: username, password)",
    "  line 4: pipeline.cardinality_limt: unknown key, did you mean 'cardinality_limit'? (expected one of: "
    "cardinality_limit)",
    "  line 8: plugins[0].config.collection_intervl: unknown key, did you mean 'collection_interval'? (expected one "
    "of: collection_interval, timeout, devices, mountpoints, filesystem_types, interfaces, procfs_path, rootfs_path, "
    "filesystem_timeout)",
    "  line 10: plugins[1].config.collection_interval: input should be a valid number, unable to parse string as a "
    "number",
]


@pytest.mark.parametrize("text,issue", [
    ("", "line 1: the config is empty (expected a mapping with keys server, pipeline, plugins, alerting, packages, "
     "dashboard)"),
    ("? [a, b]\n: 1\n", "line 1: (top level): a mapping key must be a string, not a list"),
    ("server:\n  listen: !!float ''\n", "line 2: server.listen: not a valid !!float value"),
])
def test_validate_refuses_hostile_documents_without_a_traceback(tmp_path, text, issue):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    r = run_cli("validate", "--config", str(bad))
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"error: invalid config {bad}:\n  {issue}\n")


def test_validate_reports_every_problem_and_reload_answers_the_same(tmp_path, free_port):
    port = free_port()
    cfg = tmp_path / "agent.yaml"
    write_config(cfg, port)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_EVERYWHERE.format(port=port))
    r = run_cli("validate", "--config", str(bad))
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"error: invalid config {bad}:", *BAD_EVERYWHERE_ISSUES]

    proc = subprocess.Popen([*CLI, "run", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        cfg.write_text(bad.read_text())
        req = urllib.request.Request(url + "/-/reload", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 400
        body = json.loads(e.value.read())
        assert body["message"].splitlines() == [f"invalid config {cfg}:", *BAD_EVERYWHERE_ISSUES]
        assert get(url + "/-/ready")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_run_with_invalid_config_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  listen: nowhere\n")
    r = run_cli("run", "--config", str(bad), timeout=30)
    assert r.returncode == 2 and "server.listen" in r.stderr


def test_test_command_collects_once_and_prints(tmp_path):
    r = run_cli("test", "--plugin", "monitoring.metrics.system")
    assert r.returncode == 0, r.stderr
    assert "# monitoring.metrics.system" in r.stdout
    assert "system.memory.usage{" in r.stdout and "system.cpu.time{" in r.stdout
    r = run_cli("test", "--plugin", "monitoring.metrics.nope")
    assert r.returncode == 2 and "not found" in r.stderr and "monitoring.metrics.system" in r.stderr


def test_run_default_config_json_logs_sigterm_within_5s(tmp_path, free_port):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.Popen([*CLI, "run", "--listen", f"127.0.0.1:{port}", "--log-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "system_cpu_time_seconds_total{" in body
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5.0
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert any("embedded default config" in line["msg"] for line in lines)
    assert lines[-1]["msg"] == "stopped"


def run_agent(tmp_path, port):
    """``monbridge run`` on a config file ``write_config`` wrote: (config path, process, base URL)."""
    cfg = tmp_path / "agent.yaml"
    write_config(cfg, port)
    proc = subprocess.Popen([*CLI, "run", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    return cfg, proc, f"http://127.0.0.1:{port}"


def test_sighup_reload_keeps_old_config_when_new_is_invalid(tmp_path, free_port):
    port = free_port()
    cfg, proc, url = run_agent(tmp_path, port)
    try:
        wait_ready(url, proc)
        cfg.write_text(cfg.read_text().replace("collection_interval: 1", "collection_interval: -1"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None
        status, body = get(url + "/api/v1/plugins")
        assert json.loads(body)["data"][0]["state"] == "running"
        # A valid change is applied: the process collector appears.
        write_config(cfg, port, extra="""  - plugin_id: monitoring.metrics.process
    config: {collection_interval: 1, match: [{name: "python*"}]}
""")
        proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            ids = [p["plugin_id"] for p in json.loads(get(url + "/api/v1/plugins")[1])["data"]]
            if "monitoring.metrics.process" in ids:
                break
            time.sleep(0.1)
        else:
            pytest.fail("reload did not add the process collector")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert "reload refused, the running config stays" in err
    assert "plugins[0].config.collection_interval" in err


def test_port_in_use_says_which_setting(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_cli("run", "--listen", f"127.0.0.1:{port}", timeout=30)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (server.listen or --listen)" in r.stderr


def test_sighup_reload_that_cannot_be_applied_logs_why_and_keeps_serving(tmp_path, free_port):
    port = free_port()
    cfg, proc, url = run_agent(tmp_path, port)
    missing = tmp_path / "tls" / "cert.pem"
    try:
        wait_ready(url, proc)
        cfg.write_text(cfg.read_text().replace(
            f'  listen: "127.0.0.1:{port}"\n',
            f'  listen: "127.0.0.1:{port}"\n  tls: {{cert_file: {missing}, key_file: {tmp_path}/tls/key.pem}}\n'))
        proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            body = get(url + "/metrics")[1]  # plain HTTP: the running server stays
            if "\nmonbridge_config_last_reload_successful 0\n" in body:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the failed reload never showed in monbridge_config_last_reload_successful")
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"reload refused, the running config stays: cannot apply {cfg}: server.tls.cert_file: cannot read {missing}" in err
