"""Nagios both ways against a real Nagios 4 (Debian's nagios4) and the real monitoring-plugins:

* the same plugins (monitoring-plugins binaries and test plugins: tricky perfdata, long output,
  hang, crash, floods, bad bytes), run by that Nagios and by ``monitoring.metrics.nagios``, give
  the same state, text, long text and perfdata (Nagios' as its ``status.dat`` records them);
* ``monbridge check`` configured as active checks of that Nagios: its results show in ``status.dat``.
"""

from __future__ import annotations

import asyncio
import http.server
import re
import shlex
import socket
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from nagios_peer import NAGIOS_BIN, PLUGINS, NagiosConfig, NagiosServer, Service, unescape_long_output

from integrations.nagios.collector import NagiosCollector
from integrations.nagios.perfdata import parse_perfdata

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def nagios(tmp_path: Path, require_binary) -> Iterator:
    """``nagios(services, **config) -> NagiosServer``, running; stopped when the test ends."""
    require_binary(NAGIOS_BIN.rsplit("/", 1)[1])
    require_binary("check_dummy")
    started: list[NagiosServer] = []

    def start(services, env=None, **kw) -> NagiosServer:
        server = NagiosServer(NagiosConfig(tmp_path / f"nagios-{len(started)}", services, **kw), env)
        started.append(server)
        server.wait_running()
        return server

    yield start
    for s in started:
        s.stop()


def plugin(d: Path, name: str, body: str) -> str:
    p = d / name
    p.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    p.chmod(0o755)
    return str(p)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def local_servers(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(http port, tcp port): an HTTP server with a fixed page and a TCP listener, on loopback."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<html><body>monbridge test page</body></html>\n")
    handler = lambda *a, **kw: _Quiet(*a, directory=str(root), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(64)
    yield httpd.server_address[1], tcp.getsockname()[1]
    httpd.shutdown()
    tcp.close()


def numbers_out(text: str) -> str:
    return re.sub(r"-?\d+(\.\d+)?", "N", text)


def run_by_monbridge(checks: list[dict], paths: list[str]) -> dict[str, object]:
    async def go():
        c = NagiosCollector()
        await c.initialize({"checks": checks, "plugin_paths": paths, "concurrency": 8})
        await c.start()
        await c.test_report()
        await c.stop()
        return {ch.cfg.name: ch.last for ch in c.checks}

    return asyncio.run(go())


def test_the_same_plugins_give_the_same_results_in_nagios_and_monbridge(nagios, tmp_path, local_servers):
    http_port, tcp_port = local_servers
    d = tmp_path / "plugins"
    d.mkdir()
    tricky = plugin(d, "check_tricky", r"""
        printf '%s\n' "WARNING - tricky one | 'a b'=1.5ms;2;@3:4;0;10 'it''s'=U;~:1 pct=42.5%;80:;~:90 c=5c"
        printf '%s\n' "second line of long text" "third line, | 'more'=7KB;;;0;100 big=2TB"
        printf '%s\n' "'later'=3;10:20;@1:2;; tail=-4.5e1us"
        exit 1
    """)
    long_out = plugin(d, "check_long", """
        echo 'OK - long output | first=1;2;3'
        head -c 100000 /dev/zero | tr '\\0' x
        echo
    """)
    exit7 = plugin(d, "check_exit7", "echo 'odd exit'; exit 7\n")
    hang = plugin(d, "check_hang", "echo started; exec sleep 300\n")
    crash = plugin(d, "check_crash", "echo 'about to crash'; kill -SEGV $$\n")
    flood = plugin(d, "check_flood", "echo 'OK - flood'; exec yes\n")
    bad = plugin(d, "check_bad", "printf 'OK - bad \\377 bytes | a=1\\n'; exit 0\n")
    exact = {
        "dummy_ok": f"{PLUGINS}/check_dummy 0 all_good",
        "dummy_crit": f"{PLUGINS}/check_dummy 2 broken_thing",
        "tricky": tricky,
        "long": long_out,
    }
    alike = {  # values that move between two runs: compared with the numbers taken out
        "load": f"{PLUGINS}/check_load -w 500,400,300 -c 1000,800,600",
        "disk": f"{PLUGINS}/check_disk -w 1% -c 1% -p /",
        "procs": f"{PLUGINS}/check_procs -w 1000000 -c 2000000",
        "tcp": f"{PLUGINS}/check_tcp -H 127.0.0.1 -p {tcp_port}",
        "http": f"{PLUGINS}/check_http -H 127.0.0.1 -p {http_port} -u /index.html",
    }
    unknown = {"hang": hang, "crash": crash}
    every = {**exact, **alike, **unknown, "exit7": exit7}
    server = nagios([Service(name, line, interval=3600, retry_interval=3600) for name, line in every.items()],
                    service_check_timeout=3)
    ours = run_by_monbridge([{"name": name, "command": shlex.split(line), "timeout": 3, "max_check_attempts": 1}
                             for name, line in [*every.items(), ("bad", bad), ("flood", flood)]], [PLUGINS])
    theirs = {name: server.wait_for(name, lambda s: s.get("has_been_checked") == "1", timeout=60) for name in every}

    for name in exact:
        mine, st = ours[name], theirs[name]
        assert int(st["current_state"]) == int(mine.state), name
        assert st["plugin_output"] == mine.output.text, name
        # the same long text (Nagios 4 keeps what its worker read, all of it; monbridge cuts at 8192 bytes)
        assert unescape_long_output(st["long_plugin_output"]).startswith(mine.output.long_text), name
        nagios_perf = parse_perfdata(st["performance_data"])
        assert nagios_perf.errors == [] and nagios_perf.items == mine.output.perfdata, name
    assert [i.label for i in ours["tricky"].output.perfdata] == ["a b", "it's", "pct", "c", "more", "big", "later", "tail"]
    assert unescape_long_output(theirs["tricky"]["long_plugin_output"]) == ours["tricky"].output.long_text
    assert ours["long"].truncated and len(ours["long"].output.long_text) == 8192 - len("OK - long output | first=1;2;3\n")
    assert len(unescape_long_output(theirs["long"]["long_plugin_output"])) == 100_000

    for name in alike:
        mine, st = ours[name], theirs[name]
        assert int(st["current_state"]) == int(mine.state) == 0, (name, st["plugin_output"], mine.output.text)
        assert numbers_out(st["plugin_output"]) == numbers_out(mine.output.text), name
        nagios_perf = parse_perfdata(st["performance_data"])
        assert nagios_perf.errors == [] and mine.output.perfdata_errors == [], name
        assert [(i.label, i.uom, str(i.warn), str(i.crit)) for i in nagios_perf.items] == \
               [(i.label, i.uom, str(i.warn), str(i.crit)) for i in mine.output.perfdata], name

    for name in unknown:  # UNKNOWN both, each with its own words
        assert int(theirs[name]["current_state"]) == int(ours[name].state) == 3, (name, theirs[name]["plugin_output"])
    # An exit code outside 0-3: UNKNOWN, as the plugin API says; Nagios Core 4.4 makes it CRITICAL
    assert (ours["exit7"].state, ours["exit7"].output.text) == (3, "(Return code of 7 is out of bounds) odd exit")
    assert theirs["exit7"]["current_state"] == "2" and "out of bounds" in theirs["exit7"]["plugin_output"]
    assert ours["hang"].output.text == "timed out after 3 s"
    assert "timed out" in theirs["hang"]["plugin_output"]
    assert ours["crash"].output.text == "plugin killed by signal SIGSEGV (11)"
    # A flood (Nagios' worker reads it all, logging each line of a job it kills): monbridge kills it at 1 MiB
    assert (ours["flood"].state, ours["flood"].output.text) == (3, "plugin wrote more than 1048576 bytes of output; killed")
    # Output that is not UTF-8: Nagios keeps the bytes; monbridge says so, UNKNOWN
    assert ours["bad"].output.text == "plugin output is not UTF-8 (byte 0xff at offset 9): OK - bad \ufffd bytes | a=1"


def python_check(url: str, *args: str) -> str:
    """A Nagios command line running ``monbridge check`` from this tree."""
    return f"/usr/bin/env PYTHONPATH={REPO} {sys.executable} -m bridge.cli check {' '.join(args)} --url {url}"


def test_monbridge_check_as_an_active_check_of_nagios(nagios, run_monbridge, free_port, tmp_path):
    mb = run_monbridge({
        "alerting": {"import_interval": 1, "state_dir": str(tmp_path / "alerts")},
        "plugins": [{"plugin_id": "monitoring.metrics.nagios", "config": {
            "collection_interval": 1,
            "plugin_paths": [PLUGINS],
            "checks": [{"name": "db", "command": ["check_dummy", "2", "db down"], "interval": 1, "max_check_attempts": 1,
                        "labels": {"service": "db"}},
                       {"name": "web", "command": ["check_dummy", "0", "web fine"], "interval": 1}]}}],
    })
    closed = f"http://127.0.0.1:{free_port()}"
    server = nagios([
        Service("mb_db_state", python_check(mb.url, "metric", "--metric", "nagios.check.state", "--match",
                                            "nagios.check=db", "-w", "0", "-c", "1"), interval=2, retry_interval=2),
        Service("mb_web_state", python_check(mb.url, "metric", "--metric", "nagios_check_state", "--match",
                                             "nagios.check=web", "-w", "0", "-c", "1"), interval=2, retry_interval=2),
        Service("mb_alerts", python_check(mb.url, "alerts", "--match", "service=db"), interval=2, retry_interval=2),
        Service("mb_no_alerts", python_check(mb.url, "alerts", "--severity", "warning"), interval=2, retry_interval=2),
        Service("mb_down", python_check(closed, "alerts"), interval=2, retry_interval=2),
    ], service_check_timeout=30)

    def checked_with(text: str):
        return lambda s: s.get("has_been_checked") == "1" and text in s["plugin_output"]

    st = server.wait_for("mb_db_state", checked_with("CRITICAL"))
    assert st["current_state"] == "2"
    assert st["plugin_output"] == "MONBRIDGE CRITICAL - nagios.check.state avg 2 (1 series matching nagios.check=db)"
    assert st["performance_data"] == "nagios.check.state=2;0;1"
    st = server.wait_for("mb_web_state", checked_with("MONBRIDGE"))
    assert (st["current_state"], st["plugin_output"]) == (
        "0", "MONBRIDGE OK - nagios_check_state avg 0 (1 series matching nagios.check=web)")
    st = server.wait_for("mb_alerts", checked_with("CRITICAL"))  # the hard CRITICAL of check db, an alert
    assert st["current_state"] == "2"
    assert st["plugin_output"] == "MONBRIDGE CRITICAL - 1 active alert: db (critical)"
    assert st["performance_data"] == "alerts=1;;;0 critical=1;;;0"
    st = server.wait_for("mb_no_alerts", checked_with("MONBRIDGE"))
    assert (st["current_state"], st["plugin_output"], st["performance_data"]) == (
        "0", "MONBRIDGE OK - 0 active alerts", "alerts=0;;;0")
    st = server.wait_for("mb_down", checked_with("MONBRIDGE"))
    assert st["current_state"] == "3"
    assert st["plugin_output"].startswith(f"MONBRIDGE UNKNOWN - cannot reach monbridge at {closed}: ")


def run_check(*args: str, env: dict | None = None):
    import os
    import subprocess

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MONBRIDGE_")}
    full_env.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, "-m", "bridge.cli", "check", *args], capture_output=True, text=True,
                          timeout=60, env=full_env)


def test_monbridge_check_authenticates_and_every_failure_is_unknown(run_monbridge, tmp_path):
    mb = run_monbridge({
        "server": {"auth": {"bearer_token": "tok-123"}},
        "plugins": [{"plugin_id": "monitoring.metrics.nagios", "config": {
            "collection_interval": 1, "plugin_paths": [PLUGINS],
            "checks": [{"name": "disk", "command": ["check_dummy", "0", "ok | used=40%;80;90;0;100"], "interval": 1}]}}],
    }, wait=False)
    import time

    deadline = time.monotonic() + 30
    while True:  # ready, as the check itself sees it
        out = run_check("metric", "--url", mb.url, "--metric", "nagios.perfdata.utilization", "--match",
                        "nagios.label=used", "-w", "80", "-c", "90", "--bearer-token", "tok-123")
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (out.returncode, out.stdout) == (0, "MONBRIDGE OK - nagios.perfdata.utilization avg 40 (1 series matching "
                                                "nagios.label=used) | nagios.perfdata.utilization=40%;80;90\n")
    out = run_check("metric", "--url", mb.url, "--metric", "nagios.perfdata.utilization", "-w", "@30:50",
                    env={"MONBRIDGE_BEARER_TOKEN": "tok-123"})  # inside the range: WARNING
    assert out.returncode == 1 and out.stdout.startswith("MONBRIDGE WARNING - nagios.perfdata.utilization avg 40")
    unauthorized = run_check("alerts", "--url", mb.url)
    assert unauthorized.returncode == 3
    assert unauthorized.stdout.startswith(f"MONBRIDGE UNKNOWN - GET /api/v1/alerts?state=active from {mb.url}: HTTP 401")
    assert "tok-123" not in unauthorized.stdout
    for args, text in [
        (["metric", "--url", mb.url, "--metric", "x", "-w", "20:10", "--bearer-token", "tok-123"],
         "MONBRIDGE UNKNOWN - -w/-c: threshold '20:10': start 20 is above end 10\n"),
        (["metric", "--url", mb.url, "--metric", "no.such.metric", "--bearer-token", "tok-123"],
         f"MONBRIDGE UNKNOWN - no metric 'no.such.metric' at {mb.url} (looked for no_such_metric and "
         "no_such_metric_<unit>)\n"),
        (["metric", "--url", mb.url, "--metric", "nagios.check.state", "--match", "nagios.check=none",
          "--bearer-token", "tok-123"],
         f"MONBRIDGE UNKNOWN - no series of nagios_check_state matching nagios.check=none at {mb.url}\n"),
        (["metric", "--url", mb.url, "--metric", "x", "--match", "novalue", "--bearer-token", "tok-123"],
         "MONBRIDGE UNKNOWN - --match 'novalue': expected K=V or K!=V\n"),
        (["metric", "--url", mb.url], "MONBRIDGE UNKNOWN - usage: Missing option '--metric' / '-m'.\n"),
        (["metric", "--aggregate", "median", "--metric", "x"], None),
        (["alerts", "--url", mb.url, "--basic-auth", "nocolon"], "MONBRIDGE UNKNOWN - --basic-auth: expected USER:PASSWORD\n"),
    ]:
        out = run_check(*args)
        assert out.returncode == 3, (args, out.stdout, out.stderr)
        if text is not None:
            assert out.stdout == text, args
        else:
            assert out.stdout.startswith("MONBRIDGE UNKNOWN - usage: "), out.stdout
