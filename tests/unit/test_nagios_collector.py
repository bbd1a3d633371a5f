"""``monitoring.metrics.nagios``: running plugins (real processes, hostile ones included), Nagios'
soft and hard states, the metrics of a check and its perfdata, and alerts through the engine."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.api import AlertSourceHook, AlertState, MetricKind, ReportHook
from bridge.notifiers import fingerprint
from integrations.nagios.collector import CheckState, NagiosCollector, next_state, perfdata_metric
from integrations.nagios.execute import run_plugin
from integrations.nagios.output import State
from integrations.nagios.perfdata import parse_perfdata

ROOT = Path(__file__).resolve().parents[2]
DUMMY = "/usr/lib/nagios/plugins/check_dummy"


def plugin(tmp_path: Path, name: str, body: str) -> str:
    """A test plugin: a shell script named ``name`` in tmp_path."""
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    p.chmod(0o755)
    return str(p)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its parent counts as gone
            return f.read().split(") ", 1)[1][0] != "Z"
    except (ProcessLookupError, FileNotFoundError):  # gone, or reaped in between
        return False


# --------------------------------------------------------------------------- running one plugin


async def test_a_plugin_runs_from_argv_without_a_shell(tmp_path):
    marker = tmp_path / "owned"
    p = plugin(tmp_path, "echo_args", 'printf "%s|" "$@"; echo; exit 1\n')
    r = await run_plugin([p, "a b", f"; touch {marker}", "$(id)"], 5)
    assert r.state is State.WARNING and r.ran and r.failure is None
    assert r.output.text == "a b"  # the argument reached the plugin whole; '|' starts perfdata
    assert not marker.exists()


async def test_bare_names_are_looked_up_in_plugin_paths_in_order(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir(), second.mkdir()
    plugin(second, "check_x", "echo from two\n")
    plugin(first, "check_x", "echo from one\n")
    r = await run_plugin(["check_x"], 5, plugin_paths=[str(first), str(second)])
    assert r.output.text == "from one"
    r = await run_plugin(["check_x"], 5, plugin_paths=[str(second)])
    assert r.output.text == "from two"


@pytest.mark.parametrize("body, state, failure, text", [
    ("exit 7\n", State.UNKNOWN, "no_output", "(No output returned from plugin) (exit code 7)"),
    ("echo out of range; exit 7\n", State.UNKNOWN, "exit_code", "(Return code of 7 is out of bounds) out of range"),
    ("echo broken >&2; exit 2\n", State.UNKNOWN, "no_output", "(No output on stdout) stderr: broken (exit code 2)"),
    ("kill -SEGV $$\n", State.UNKNOWN, "signal", "plugin killed by signal SIGSEGV (11)"),
    ("printf 'bad \\377\\376 bytes | a=1\\n'; exit 0\n", State.UNKNOWN, "not_utf8",
     "plugin output is not UTF-8 (byte 0xff at offset 4): bad \ufffd\ufffd bytes | a=1"),
    ("echo 'CRIT | t=1s'; exit 2\n", State.CRITICAL, None, "CRIT"),
    ("printf 'fine\\000 | hidden=1'; exit 0\n", State.OK, None, "fine"),
])
async def test_plugin_faults_are_unknown_with_a_clear_text(tmp_path, body, state, failure, text):
    r = await run_plugin([plugin(tmp_path, "p", body)], 5)
    assert (r.state, r.failure, r.output.text) == (state, failure, text)


async def test_missing_and_not_executable_plugins(tmp_path):
    r = await run_plugin(["check_absent"], 5, plugin_paths=[str(tmp_path)])
    assert (r.state, r.failure, r.ran) == (State.UNKNOWN, "not_found", False)
    assert r.output.text == f"plugin 'check_absent' in {tmp_path} not found"
    (tmp_path / "check_noexec").write_text("#!/bin/sh\necho hi\n")
    r = await run_plugin(["check_noexec"], 5, plugin_paths=[str(tmp_path)])
    assert (r.state, r.failure) == (State.UNKNOWN, "not_executable")
    assert r.output.text == f"plugin {tmp_path}/check_noexec is not executable"


async def test_a_hung_plugin_is_killed_with_its_whole_process_group(tmp_path):
    pids = tmp_path / "pids"
    p = plugin(tmp_path, "hang", f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; wait\n")
    r = await run_plugin([p], 0.5)
    assert (r.state, r.failure, r.ran) == (State.UNKNOWN, "timeout", False)
    assert r.output.text == "timed out after 0.5 s"
    child, parent = (int(x) for x in pids.read_text().split())
    for _ in range(50):
        if not alive(child) and not alive(parent):
            break
        await asyncio.sleep(0.1)
    assert not alive(child) and not alive(parent)


async def test_a_child_left_holding_the_output_does_not_hold_the_result(tmp_path):
    pids = tmp_path / "pids"
    p = plugin(tmp_path, "daemon", f"sleep 300 & echo $! > {pids}; echo 'OK - forked | x=1'; exit 0\n")
    r = await run_plugin([p], 30)
    assert (r.state, r.output.text, r.failure) == (State.OK, "OK - forked", None)
    assert r.duration < 30  # ended at the plugin's exit, not at the timeout
    child = int(pids.read_text())
    for _ in range(50):
        if not alive(child):
            break
        await asyncio.sleep(0.1)
    assert not alive(child)  # the leftover of the plugin's group was killed


async def test_output_is_cut_at_nagios_limit_and_a_flood_is_killed(tmp_path):
    long = plugin(tmp_path, "long", "echo 'OK - long | a=1'; head -c 100000 /dev/zero | tr '\\0' x; echo\n")
    r = await run_plugin([long], 10)
    assert (r.state, r.output.text, r.truncated) == (State.OK, "OK - long", True)
    assert len(r.output.long_text) == 8192 - len("OK - long | a=1\n")
    flood = plugin(tmp_path, "flood", "echo 'OK - flood'; exec yes\n")
    r = await run_plugin([flood], 30, flood_bytes=1 << 20)
    assert (r.state, r.failure) == (State.UNKNOWN, "flood")
    assert r.output.text == "plugin wrote more than 1048576 bytes of output; killed"


async def test_a_multibyte_character_cut_by_the_limit_is_dropped_not_an_error(tmp_path):
    p = plugin(tmp_path, "euro", "printf 'OK\\n'; i=0; while [ $i -lt 3000 ]; do printf '\\342\\202\\254'; i=$((i+1)); done\n")
    r = await run_plugin([p], 10)
    assert (r.state, r.failure, r.truncated) == (State.OK, None, True)
    assert set(r.output.long_text) == {"\u20ac"}


async def test_the_environment_is_small_and_the_check_adds_to_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    p = plugin(tmp_path, "env", "echo \"$SECRET_TOKEN|$LC_ALL|$EXTRA|$PATH\"\n")
    r = await run_plugin([p], 5, env={"EXTRA": "yes"})
    assert r.output.text == ""  # SECRET_TOKEN is not passed, so the line starts with '|'
    assert r.output.perfdata_text == "C|yes|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --------------------------------------------------------------------------- soft and hard states


def walk(results: list[State], max_attempts: int) -> list[tuple[str, bool, int]]:
    s, out = CheckState(), []
    for r in results:
        s = next_state(s, r, max_attempts)
        out.append((s.state.name, s.hard, s.attempt))
    return out


def test_soft_then_hard_as_nagios_counts_attempts():
    W, C, OK = State.WARNING, State.CRITICAL, State.OK
    assert walk([W, W, W, W, OK], 3) == [("WARNING", False, 1), ("WARNING", False, 2), ("WARNING", True, 3),
                                        ("WARNING", True, 3), ("OK", True, 1)]
    # a soft recovery, and a change between non-OK states while soft still counts attempts
    assert walk([C, OK, W, C, C], 3) == [("CRITICAL", False, 1), ("OK", True, 1), ("WARNING", False, 1),
                                        ("CRITICAL", False, 2), ("CRITICAL", True, 3)]
    assert walk([C, W], 1) == [("CRITICAL", True, 1), ("WARNING", True, 1)]  # a hard state change
    s = CheckState()
    for r in (W, W):
        s = next_state(s, r, 3)
    assert s.hard_state is State.OK  # the last hard state stays until the soft one turns hard


# --------------------------------------------------------------------------- metrics


def test_perfdata_metrics_by_unit_with_thresholds_kept_as_attributes():
    items = parse_perfdata("'rta'=1.5ms;100;@200:300;0;1000 used=2GB;;;0;8 cpu=42%;80;90 n=7 pkts=123c temp=21degC;30 u=U").items
    ms = [perfdata_metric(i, {"nagios.check": "c1"}) for i in items]
    assert ms[-1] is None  # undetermined: no point
    rta, used, cpu, n, pkts, temp = ms[:-1]
    assert (rta.name, rta.unit, rta.value, rta.kind) == ("nagios.perfdata.time", "s", 0.0015, MetricKind.GAUGE)
    assert dict(rta.attributes) == {"nagios.check": "c1", "nagios.label": "rta", "nagios.uom": "ms",
                                    "nagios.warn": "100", "nagios.crit": "@200:300", "nagios.min": "0",
                                    "nagios.max": "1000"}
    assert (used.name, used.unit, used.value) == ("nagios.perfdata.size", "By", 2 * 1024 ** 3)
    assert (cpu.name, cpu.unit, cpu.value) == ("nagios.perfdata.utilization", "%", 42.0)
    assert (n.name, n.unit, n.value, dict(n.attributes)) == ("nagios.perfdata", "", 7.0,
                                                             {"nagios.check": "c1", "nagios.label": "n"})
    assert (pkts.name, pkts.kind, pkts.value) == ("nagios.perfdata.count", MetricKind.COUNTER, 123.0)
    assert (temp.name, temp.value, temp.attributes["nagios.uom"]) == ("nagios.perfdata", 21.0, "degC")


async def collector(tmp_path: Path, checks: list[dict], **config) -> NagiosCollector:
    c = NagiosCollector()
    await c.initialize({"checks": checks, "plugin_paths": [str(tmp_path)], **config})
    return c


async def run_all(c: NagiosCollector) -> None:
    c._sem = c._sem or asyncio.Semaphore(4)
    loop = asyncio.get_running_loop()
    for ch in c.checks:
        await c._run(ch, loop.time())


async def test_metrics_of_a_check_and_the_drops_counted(tmp_path):
    plugin(tmp_path, "check_tricky", "echo \"OK - tricky | a=1s a=2s bad=x 'q''d'=3\"; exit 0\n")
    c = await collector(tmp_path, [{"name": "t", "command": ["check_tricky"], "labels": {"team": "db"}},
                                   {"name": "gone", "command": ["check_gone"]}])
    await run_all(c)
    await c.collect_metrics()  # drops are counted per run, however often the metrics are collected
    got = {(m.name, m.attributes.get("nagios.label", ""), m.attributes.get("reason", ""),
            m.attributes["nagios.check"]): m for m in await c.collect_metrics()}
    assert got["nagios.check.state", "", "", "t"].value == 0 and got["nagios.check.state", "", "", "gone"].value == 3
    assert got["nagios.check.ran", "", "", "t"].value == 1 and got["nagios.check.ran", "", "", "gone"].value == 0
    assert got["nagios.check.executions", "", "", "t"].kind is MetricKind.COUNTER
    assert got["nagios.check.state", "", "", "t"].attributes["team"] == "db"
    assert got["nagios.perfdata.time", "a", "", "t"].value == 1.0  # the first of a repeated label
    assert got["nagios.perfdata", "q'd", "", "t"].value == 3.0
    assert got["monbridge.nagios.perfdata.dropped", "", "duplicate", "t"].value == 1
    assert got["monbridge.nagios.perfdata.dropped", "", "invalid", "t"].value == 1
    assert got["monbridge.nagios.check.failures", "", "not_found", "gone"].value == 1


async def test_hard_states_raise_alerts_recovery_resolves_them(tmp_path):
    state = tmp_path / "state"
    plugin(tmp_path, "check_file", f"read code text < {state}; echo \"$text\"; exit $code\n")
    c = await collector(tmp_path, [{"name": "db", "command": ["check_file"], "max_check_attempts": 2,
                                    "labels": {"service": "db"}}], unknown_severity="none")
    assert isinstance(c, AlertSourceHook)

    async def result(code: int, text: str) -> list:
        state.write_text(f"{code} {text}\n")
        await run_all(c)
        return list(await c.import_alerts())

    assert await result(2, "CRIT one") == []  # soft
    [a] = await result(2, "CRIT two")  # hard: fires
    assert (a.name, a.severity, a.state, a.value) == ("db", "critical", AlertState.FIRING, 2.0)
    assert a.labels == {"service": "db", "alertname": "db", "severity": "critical", "nagios_check": "db"}
    assert a.annotations["summary"] == "CRIT two" and a.annotations["nagios_state"] == "CRITICAL"
    [again] = await result(2, "CRIT three")  # still firing, same alert
    assert again.fingerprint == a.fingerprint
    firing, resolved = await result(1, "WARN now")  # a hard state change: the critical one resolved
    assert (firing.severity, firing.state) == ("warning", AlertState.FIRING)
    assert (resolved.fingerprint, resolved.state) == (a.fingerprint, AlertState.RESOLVED)
    [gone] = await result(0, "OK")  # recovery
    assert (gone.fingerprint, gone.state) == (firing.fingerprint, AlertState.RESOLVED)
    assert await result(0, "OK") == []
    await result(3, "UNK")
    assert await result(3, "UNK") == []  # unknown_severity: none


async def test_an_alert_that_fired_and_ended_between_two_imports_reaches_the_engine(tmp_path):
    state = tmp_path / "state"
    plugin(tmp_path, "check_file", f"read code text < {state}; echo \"$text\"; exit $code\n")
    c = await collector(tmp_path, [{"name": "db", "command": ["check_file"], "max_check_attempts": 1}])
    state.write_text("0 OK\n")
    await run_all(c)
    stale = await c.import_alerts()  # a first hard OK: alerts of an earlier run of the agent are resolved
    assert sorted((a.severity, a.state) for a in stale) == [("critical", AlertState.RESOLVED),
                                                            ("warning", AlertState.RESOLVED)]
    assert {a.fingerprint for a in stale} == {
        fingerprint({"alertname": "db", "severity": s, "nagios_check": "db"}) for s in ("warning", "critical")}
    state.write_text("2 CRIT\n")
    await run_all(c)
    state.write_text("0 OK\n")
    await run_all(c)
    fired, ended = await c.import_alerts()
    assert (fired.state, ended.state, fired.fingerprint) == (AlertState.FIRING, AlertState.RESOLVED, ended.fingerprint)
    assert await c.import_alerts() == []


async def test_the_engine_takes_a_collectors_alerts(tmp_path):
    from tests.unit.alerting_helpers import EngineUnderTest

    state = tmp_path / "state"
    state.write_text("2 CRITICAL - down\n")
    plugin(tmp_path, "check_file", f"read code text < {state}; echo \"$text\"; exit $code\n")
    c = await collector(tmp_path, [{"name": "web", "command": ["check_file"], "max_check_attempts": 1}])
    t = EngineUnderTest(tmp_path / "alerts", [("monitoring.metrics.nagios", c)], import_interval=0.1)
    await t.engine.start()
    try:
        await run_all(c)
        for _ in range(100):
            if t.engine.store.active_alerts():
                break
            await asyncio.sleep(0.05)
        [a] = t.engine.store.active_alerts()
        assert (a.name, a.severity, a.annotations["summary"]) == ("web", "critical", "CRITICAL - down")
        state.write_text("0 OK - up\n")
        await run_all(c)
        for _ in range(100):
            if t.engine.store.get(a.id).state is AlertState.RESOLVED:
                break
            await asyncio.sleep(0.05)
        assert t.engine.store.get(a.id).state is AlertState.RESOLVED
    finally:
        await t.engine.stop()


async def test_the_schedule_retries_at_retry_interval_while_soft(tmp_path):
    plugin(tmp_path, "check_crit", "echo CRIT; exit 2\n")
    c = await collector(tmp_path, [{"name": "x", "command": ["check_crit"], "interval": 3600, "retry_interval": 0.05,
                                    "max_check_attempts": 3}])
    await c.start()
    try:
        for _ in range(200):
            if c.checks[0].executions >= 3:
                break
            await asyncio.sleep(0.05)
        # three runs well inside the hour of the normal interval: the retries used retry_interval
        assert (c.checks[0].executions, c.checks[0].state.hard, c.checks[0].state.attempt) == (3, True, 3)
    finally:
        await c.stop()
    assert (c._timer, c._queue, c._runner) == (None, [], None)  # nothing scheduled or running after stop


async def test_stopping_kills_running_plugins(tmp_path):
    pids = tmp_path / "pids"
    plugin(tmp_path, "check_hang", f"echo $$ > {pids}; exec sleep 300\n")
    c = await collector(tmp_path, [{"name": "h", "command": ["check_hang"], "timeout": 600}])
    await c.start()
    for _ in range(100):
        if pids.exists() and pids.read_text().strip():
            break
        await asyncio.sleep(0.05)
    pid = int(pids.read_text())
    await c.stop()
    for _ in range(50):
        if not alive(pid):
            break
        await asyncio.sleep(0.1)
    assert not alive(pid)


async def test_test_report_runs_every_check_and_describes_it(tmp_path):
    plugin(tmp_path, "check_p", "echo \"WARN - p | 'x y'=5ms;1;10 n=U\"; echo more; exit 1\n")
    c = await collector(tmp_path, [{"name": "p", "command": ["check_p"]}])
    assert isinstance(c, ReportHook)
    await c.start()
    lines = await c.test_report()
    await c.stop()
    assert lines[0].startswith("p: WARNING (SOFT 1/3, exit 1, ") and lines[0].endswith("): WARN - p")
    assert lines[1:] == ["    | more", "    perfdata 'x y'=5ms;1;10  ->  x y = 0.005 s", "    perfdata n=U  ->  n = U"]


def test_monbridge_test_prints_state_text_and_perfdata(tmp_path):
    plugin(tmp_path, "check_p", "echo \"CRITICAL - p | used=3MB;;;0;10\"; exit 2\n")
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"plugins:\n  - plugin_id: monitoring.metrics.nagios\n    config:\n      plugin_paths: [{tmp_path}]\n"
                   "      checks:\n        - {name: p, command: [check_p]}\n"
                   f"        - {{name: d, command: [{DUMMY}, '0', 'fine']}}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "bridge.cli", "test", "--plugin", "monitoring.metrics.nagios",
                          "--config", str(cfg)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "# monitoring.metrics.nagios"
    assert lines[1].startswith("p: CRITICAL (SOFT 1/3, exit 2, ") and lines[1].endswith("): CRITICAL - p")
    assert lines[2] == "    perfdata used=3MB;;;0;10  ->  used = 3145728 By"
    assert lines[3].startswith("d: OK (HARD 1/3, exit 0, ") and lines[3].endswith("): OK: fine")
    assert 'nagios.check.state{nagios.check="p"} 2.0  gauge' in lines
    assert any(line.startswith('nagios.perfdata.size{nagios.check="p",nagios.label="used",nagios.max="10",'
                               'nagios.min="0",nagios.uom="MB"} 3145728.0') for line in lines)


def test_validating_a_nagios_config_loads_none_of_its_code(tmp_path):
    from tests.unit.test_import_graph import RUN_TIME_ONLY, found, loaded_validating

    cfg = tmp_path / "nagios.yaml"
    cfg.write_text("plugins:\n  - plugin_id: monitoring.metrics.nagios\n    config:\n      checks:\n"
                   "        - {name: d, command: [check_dummy, '0'], interval: 60, labels: {team: x}}\n")
    modules = loaded_validating(cfg, tmp_path)
    assert "integrations.nagios.config" in modules
    assert found(modules, ("integrations.nagios.collector", "integrations.nagios.execute",
                           "integrations.nagios.perfdata", *RUN_TIME_ONLY, "asyncio")) == []


def test_config_errors_name_the_check(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("plugins:\n  - plugin_id: monitoring.metrics.nagios\n    config:\n      checks:\n"
                   "        - {name: a, command: [x]}\n        - {name: a, command: [y]}\n"
                   "        - {name: b, command: [], labels: {severity: x}}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "bridge.cli", "validate", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 2
    assert "checks[2].command" in out.stderr and "checks[2].labels" in out.stderr


async def test_without_pidfds_the_exit_is_polled(tmp_path, monkeypatch):
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    r = await run_plugin([plugin(tmp_path, "p", "echo 'WARN | a=1'; exit 1\n")], 5)
    assert (r.state, r.output.text, r.output.perfdata[0].value) == (State.WARNING, "WARN", 1.0)
    r = await run_plugin([plugin(tmp_path, "h", "exec sleep 300\n")], 0.3)
    assert (r.state, r.failure) == (State.UNKNOWN, "timeout")


def test_an_agent_with_its_stdio_closed_still_reads_plugin_output(tmp_path):
    # Pipes then get the numbers 0-2, which the plugin's own stdin, stdout and stderr take.
    result = tmp_path / "result"
    code = ("import asyncio, os\n"
            "from integrations.nagios.execute import run_plugin\n"
            "os.close(0); os.close(1); os.close(2)\n"
            f"r = asyncio.run(run_plugin([{DUMMY!r}, '2', 'still read'], 5))\n"
            f"open({str(result)!r}, 'w').write(f'{{int(r.state)}} {{r.output.text}}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True, cwd=tmp_path)
    assert result.read_text() == "2 CRITICAL: still read"


# --------------------------------------------------------------------------- the runner's hardening


def _pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()]


async def _all_gone(pids: list[int]) -> bool:
    for _ in range(50):
        if not any(alive(p) for p in pids):
            return True
        await asyncio.sleep(0.1)
    return False


def stubborn(tmp_path: Path, pids: Path) -> str:
    """A plugin that ignores SIGTERM, with two children and a grandchild; the five pids go to ``pids``."""
    return plugin(tmp_path, "stubborn", f"""\
        trap '' TERM
        sh -c 'sleep 300 & echo $! >> {pids}; echo $$ >> {pids}; wait' &
        echo $! >> {pids}
        sleep 300 &
        echo $! >> {pids}
        echo $$ >> {pids}
        while :; do wait; done
        """)


async def test_a_timeout_kills_a_plugin_that_ignores_sigterm_and_its_grandchildren(tmp_path):
    pids = tmp_path / "pids"
    p = stubborn(tmp_path, pids)
    r = await run_plugin([p], 0.5)
    assert (r.state, r.failure, r.output.text) == (State.UNKNOWN, "timeout", "timed out after 0.5 s")
    got = _pids(pids)
    assert len(got) == 5  # the plugin, its two children and its grandchild (and the shell between)
    assert await _all_gone(got)


async def test_output_longer_than_the_limit_is_cut_and_counted(tmp_path):
    plugin(tmp_path, "check_big", "echo 'WARNING - big | a=1'; head -c 50000 /dev/zero | tr '\\0' y; echo; exit 1\n")
    c = await collector(tmp_path, [{"name": "big", "command": ["check_big"]}])
    await run_all(c)
    await run_all(c)
    r = c.checks[0].last
    assert r is not None and (r.state, r.truncated, r.output.text) == (State.WARNING, True, "WARNING - big")
    assert len("WARNING - big | a=1\n") + len(r.output.long_text) == 8192
    got = {m.name: m for m in await c.collect_metrics() if m.attributes.get("nagios.check") == "big"}
    assert got["monbridge.nagios.output.truncated"].value == 2  # each run counted
    assert got["nagios.perfdata"].value == 1.0


async def test_a_plugin_that_closes_its_output_early_is_waited_for_until_it_exits(tmp_path):
    early = plugin(tmp_path, "early", "echo 'OK - early | a=1'; exec >&- 2>&-; sleep 0.5; exit 1\n")
    r = await run_plugin([early], 10)
    # the exit code 1 is the plugin's own, given after its output was closed: the run waited for it
    assert (r.state, r.output.text, r.exit_code, r.ran) == (State.WARNING, "OK - early", 1, True)
    pids = tmp_path / "pids"
    lingering = plugin(tmp_path, "lingering", f"echo $$ > {pids}; echo 'OK - then hangs'; exec >&- 2>&-; exec sleep 300\n")
    r = await run_plugin([lingering], 0.5)
    assert (r.state, r.failure) == (State.UNKNOWN, "timeout")
    assert await _all_gone(_pids(pids))


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _zombie_children() -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    state, ppid = f.read().rsplit(") ", 1)[1].split()[:2]
            except OSError:
                continue
            if int(ppid) == os.getpid() and state == "Z":
                out.append(int(d))
    return out


async def test_many_concurrent_checks_leave_no_file_descriptor_or_zombie(tmp_path):
    plugin(tmp_path, "check_ok", "echo 'OK | a=1'\n")
    plugin(tmp_path, "check_long", "echo OK; head -c 30000 /dev/zero | tr '\\0' z\n")
    plugin(tmp_path, "check_hang", "echo hanging; exec sleep 300\n")
    plugin(tmp_path, "check_crash", "kill -SEGV $$\n")
    plugin(tmp_path, "check_fork", "sleep 300 & echo 'OK - forked'\n")
    plugin(tmp_path, "check_flood", "exec yes\n")
    kinds = ["check_ok", "check_long", "check_hang", "check_crash", "check_fork", "check_flood", "check_missing"]
    checks = [{"name": f"c{i}", "command": [kinds[i % len(kinds)]], "timeout": 1, "interval": 0.5}
              for i in range(70)]  # all first runs within half a second
    before, zombies = _fds(), set(_zombie_children())
    c = await collector(tmp_path, checks, concurrency=32, flood_bytes=65536)
    await c.start()
    try:
        for _ in range(300):
            if all(ch.executions for ch in c.checks):
                break
            await asyncio.sleep(0.05)
        assert all(ch.executions for ch in c.checks)
    finally:
        await c.stop()
    states = {ch.cfg.command[0]: (ch.last.state, ch.last.failure) for ch in c.checks if ch.last is not None}
    assert states == {"check_ok": (State.OK, None), "check_long": (State.OK, None),
                      "check_hang": (State.UNKNOWN, "timeout"), "check_crash": (State.UNKNOWN, "signal"),
                      "check_fork": (State.OK, None), "check_flood": (State.UNKNOWN, "flood"),
                      "check_missing": (State.UNKNOWN, "not_found")}
    results = await asyncio.gather(*(run_plugin([kinds[i % 2]], 5, plugin_paths=[str(tmp_path)]) for i in range(40)))
    assert {r.state for r in results} == {State.OK}
    for _ in range(50):  # plugins killed at the end are reaped as they go
        if set(_zombie_children()) <= zombies:
            break
        await asyncio.sleep(0.1)
    assert _fds() == before
    assert set(_zombie_children()) <= zombies


async def test_checks_due_within_a_start_window_start_together_at_its_end(tmp_path):
    plugin(tmp_path, "check_ok", "echo OK\n")
    checks = [{"name": f"c{i}", "command": ["check_ok"], "interval": 3600} for i in range(3)]
    c = await collector(tmp_path, checks, start_window=2.5)
    await c.start()
    try:
        first = c._queue[0][0]
        assert c._timer is not None
        assert c._timer.when() == math.ceil(first / 2.5) * 2.5 >= first  # the end of the first check's window
        c._timer.cancel()
        c._queue = [(first - 1, 0, c.checks[0]), (first - 0.5, 1, c.checks[1]), (first + 1000, 2, c.checks[2])]
        c._timer = None
        c._wake()  # two are due: both start in this one wakeup, the third stays queued
        assert (c._runner.running, [q[2].cfg.name for q in c._queue]) == (2, ["c2"])
    finally:
        await c.stop()
    c = await collector(tmp_path, checks, start_window=0)
    await c.start()
    try:
        assert c._timer is not None and c._timer.when() == c._queue[0][0]  # each at its own time
    finally:
        await c.stop()
