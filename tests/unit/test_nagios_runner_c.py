"""The Nagios plugin runner in C (``integrations.nagios._run`` behind ``CRunner``) against the
pure-Python one (``PyRunner``): the same hostile plugins give the same results, the same
processes are killed, nothing is left behind, and ended runs reach Python in batches.

Without the extension these tests skip on a developer's machine and fail in CI (``CI`` set)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import pytest

from integrations.nagios import execute
from integrations.nagios.execute import CRunner, PyRunner, RunResult
from integrations.nagios.output import State
from tests.conftest import in_ci
from tests.unit.test_nagios_collector import _all_gone as all_gone
from tests.unit.test_nagios_collector import _fds, _zombie_children, plugin, stubborn

DUMMY = "/usr/lib/nagios/plugins/check_dummy"


@pytest.fixture(autouse=True)
def _built() -> None:
    if execute._run is None:
        message = ("integrations.nagios._run is not built: python setup.py build_ext --inplace "
                   "(the collector then runs plugins with PyRunner)")
        if in_ci():
            pytest.fail(f"{message} (CI is set: the C runner must be built and tested)", pytrace=False)
        pytest.skip(message)


RUNNERS: dict[str, Callable[[asyncio.AbstractEventLoop], Any]] = {
    "python": PyRunner,
    "c": CRunner,
    "c-polled": functools.partial(CRunner, use_pidfd=False),  # as on a kernel without pidfds
}


async def run_on(kind: str, argv: list[str], timeout: float, **kw: Any) -> RunResult:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[RunResult] = loop.create_future()
    runner = RUNNERS[kind](loop)
    try:
        runner.start(argv, timeout, got.set_result, **kw)
        return await got
    finally:
        runner.close()


def essence(r: RunResult) -> tuple[Any, ...]:
    """All of a result but its timing."""
    o = r.output
    return (r.state, r.failure, r.exit_code, r.ran, r.truncated, r.argv, o.text, o.long_text, o.perfdata_text,
            o.perfdata, o.perfdata_errors)


# name -> (script body, timeout, options); each a plugin as a site may have, or a hostile one
CASES: dict[str, tuple[str, float, dict[str, Any]]] = {
    "ok_with_perfdata": ("echo \"OK - fine | 'a b'=1ms;2;3;0;10 c=5c\"; echo long; echo 'more | d=1%'\n", 10, {}),
    "warning": ("echo 'WARN - x'; exit 1\n", 10, {}),
    "exit_code_out_of_range": ("echo out of range; exit 7\n", 10, {}),
    "no_output": ("exit 2\n", 10, {}),
    "stderr_only": ("echo broken >&2; exit 2\n", 10, {}),
    "crash_by_signal": ("kill -SEGV $$\n", 10, {}),
    "a_signal_the_agent_catches_kills_the_plugin": ("kill -INT $$\n", 10, {}),
    "bad_bytes": ("printf 'bad \\377\\376 bytes | a=1\\n'; exit 0\n", 10, {}),
    "nul_in_output": ("printf 'fine\\000 | hidden=1'; exit 0\n", 10, {}),
    "multibyte_cut_by_the_limit": (
        "printf 'OK\\n'; i=0; while [ $i -lt 3000 ]; do printf '\\342\\202\\254'; i=$((i+1)); done\n", 10, {}),
    "longer_than_the_limit": ("echo 'OK - long | a=1'; head -c 100000 /dev/zero | tr '\\0' x; echo\n", 10, {}),
    "small_output_limit": ("echo 'OK - cut early | a=1'; echo second line\n", 10, {"max_output": 10}),
    "flood_on_stdout": ("echo 'OK - flood'; exec yes\n", 30, {"flood_bytes": 1 << 20}),
    "flood_on_stderr": ("echo 'OK - flood'; yes >&2\n", 30, {"flood_bytes": 100000}),
    "hang": ("echo hanging; exec sleep 300\n", 0.5, {}),
    "closes_output_early": ("echo 'OK - early | a=1'; exec >&- 2>&-; sleep 0.5; exit 1\n", 10, {}),
    "closes_output_then_hangs": ("echo 'OK - then hangs'; exec >&- 2>&-; exec sleep 300\n", 0.5, {}),
    "leaves_a_child_holding_the_output": ("sleep 300 & echo 'OK - forked | x=1'; exit 0\n", 30, {}),
    "environment": ("echo \"$LC_ALL|$EXTRA|$PATH|$HOME\"\n", 10, {"env": {"EXTRA": "yes"}}),
    "argv_without_a_shell": ('printf "%s|" "$@"; echo\n', 10, {"args": ["a b", "; touch x", "$(id)"]}),
    "big_stderr_then_ok": ("head -c 70000 /dev/zero >&2; echo 'OK - after stderr'\n", 10, {}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_the_c_runner_gives_what_the_python_runner_gives(tmp_path, case):
    body, timeout, opts = CASES[case]
    opts = dict(opts)
    argv = [plugin(tmp_path, "check_case", body), *opts.pop("args", [])]
    results = {kind: essence(await run_on(kind, argv, timeout, **opts)) for kind in RUNNERS}
    assert results["c"] == results["python"]
    assert results["c-polled"] == results["python"]


async def test_missing_not_executable_and_unstartable_plugins_alike(tmp_path):
    (tmp_path / "check_noexec").write_text("#!/bin/sh\necho hi\n")
    bad = tmp_path / "check_badinterp"
    bad.write_text("#!/nonexistent/interpreter\n")
    bad.chmod(0o755)
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "check_dir").mkdir(parents=True)  # a directory of the plugin's name is passed over
    second.mkdir()
    plugin(second, "check_dir", "echo 'OK - from second'\n")
    (first / "check_shadow").write_text("#!/bin/sh\necho shadowed\n")  # a file that is not executable stops the search
    plugin(second, "check_shadow", "echo 'OK - never'\n")
    paths = [str(tmp_path), str(first), str(second)]
    for argv in (["check_absent"], ["check_noexec"], ["check_badinterp"], [str(tmp_path / "nowhere" / "x")],
                 ["check_dir"], ["check_shadow"], [str(first / "check_dir")]):
        results = {kind: essence(await run_on(kind, argv, 5, plugin_paths=paths)) for kind in RUNNERS}
        assert results["c"] == results["python"] == results["c-polled"], argv
        assert results["c"][0] is (State.OK if argv == ["check_dir"] else State.UNKNOWN), argv
    assert (await run_on("c", ["check_badinterp"], 5, plugin_paths=paths)).failure == "spawn"
    assert (await run_on("c", ["check_shadow"], 5, plugin_paths=paths)).failure == "not_executable"
    results = {kind: essence(await run_on(kind, ["check_x"], 5, plugin_paths=[])) for kind in RUNNERS}
    assert results["c"] == results["python"] and results["c"][6] == "plugin 'check_x' not found: no plugin_paths to look in"


@pytest.mark.parametrize("kind", list(RUNNERS))
async def test_a_timeout_kills_the_whole_group_of_a_plugin_that_ignores_sigterm(tmp_path, kind):
    pids = tmp_path / "pids"
    r = await run_on(kind, [stubborn(tmp_path, pids)], 0.5)
    assert (r.state, r.failure, r.output.text) == (State.UNKNOWN, "timeout", "timed out after 0.5 s")
    got = [int(x) for x in pids.read_text().split()]
    assert len(got) == 5
    assert await all_gone(got)


@pytest.mark.parametrize("kind", ["c", "c-polled"])
async def test_what_is_left_of_a_group_after_its_exit_is_killed(tmp_path, kind):
    pids = tmp_path / "pids"
    p = plugin(tmp_path, "daemon", f"sleep 300 & echo $! > {pids}; echo 'OK - forked'; exit 0\n")
    r = await run_on(kind, [p], 30)
    assert (r.state, r.output.text, r.exit_code) == (State.OK, "OK - forked", 0)
    assert await all_gone([int(pids.read_text())])


@pytest.mark.parametrize("use_pidfd", [True, False])
async def test_many_at_once_then_closed_mid_run_leave_no_descriptor_process_or_zombie(tmp_path, use_pidfd):
    kinds = {
        "ok": "echo 'OK | a=1'\n",
        "long": "echo OK; head -c 30000 /dev/zero | tr '\\0' z\n",
        "crash": "kill -SEGV $$\n",
        "fork": "sleep 300 & echo 'OK - forked'\n",
        "flood": "exec yes\n",
    }
    paths = {k: plugin(tmp_path, f"check_{k}", body) for k, body in kinds.items()}
    hang_pids = tmp_path / "hang_pids"
    hang = plugin(tmp_path, "check_hang", f"echo $$ >> {hang_pids}; exec sleep 300\n")
    before, zombies = _fds(), set(_zombie_children())
    loop = asyncio.get_running_loop()
    runner = CRunner(loop, use_pidfd=use_pidfd)
    results: dict[str, list[tuple[State, str | None]]] = {}
    n = 0
    for i in range(60):
        k = list(kinds)[i % len(kinds)]
        runner.start([paths[k]], 10, lambda r, k=k: results.setdefault(k, []).append((r.state, r.failure)),
                     flood_bytes=65536)
        n += 1
    for _ in range(4):
        runner.start([hang], 600, lambda r: results.setdefault("hang", []).append((r.state, r.failure)))
    for _ in range(300):
        if sum(len(v) for v in results.values()) == n:
            break
        await asyncio.sleep(0.05)
    assert {k: set(v) for k, v in results.items()} == {
        "ok": {(State.OK, None)}, "long": {(State.OK, None)}, "crash": {(State.UNKNOWN, "signal")},
        "fork": {(State.OK, None)}, "flood": {(State.UNKNOWN, "flood")}}
    assert sum(len(v) for v in results.values()) == n
    for _ in range(600):
        if hang_pids.exists() and len(hang_pids.read_text().split()) == 4:
            break
        await asyncio.sleep(0.05)
    assert len(hang_pids.read_text().split()) == 4  # all four started
    assert runner.running == 4
    runner.close()  # the four hung ones: killed, reaped, no result
    await asyncio.sleep(0)
    assert "hang" not in results
    assert await all_gone([int(x) for x in hang_pids.read_text().split()])
    for _ in range(50):
        if set(_zombie_children()) <= zombies:
            break
        await asyncio.sleep(0.1)
    assert set(_zombie_children()) <= zombies
    assert _fds() == before
    with pytest.raises(RuntimeError, match="closed"):
        runner.start([paths["ok"]], 10, lambda r: None)


class _CountingEngine:
    """The engine, counting the hand-overs that brought ended runs."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.batches = engine, []

    def collect(self) -> list[Any]:
        got = self.engine.collect()
        if got:
            self.batches.append(len(got))
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


async def test_runs_ending_together_reach_python_in_one_batch(tmp_path):
    loop = asyncio.get_running_loop()
    runner = CRunner(loop, batch_delay=60)  # a batch goes once no run is left going
    counting = _CountingEngine(runner._engine)
    runner._engine = counting
    slow = plugin(tmp_path, "check_slow", "sleep 0.3; echo 'OK - slow'\n")
    got: list[RunResult] = []
    try:
        for i in range(6):
            runner.start([DUMMY if i else slow, "0", "quick"], 10, got.append)
        for _ in range(200):
            if len(got) == 6:
                break
            await asyncio.sleep(0.05)
    finally:
        runner.close()
    # the five quick ones ended long before the slow one, and waited for it: one wakeup for six runs
    assert counting.batches == [6]
    assert sorted(r.output.text for r in got) == ["OK - slow"] + ["OK: quick"] * 5


async def test_a_batch_goes_after_batch_delay_while_a_run_still_goes(tmp_path):
    loop = asyncio.get_running_loop()
    runner = CRunner(loop, batch_delay=0.05)
    hang = plugin(tmp_path, "check_hang", "exec sleep 300\n")
    got: list[RunResult] = []
    try:
        runner.start([hang], 600, got.append)
        runner.start([DUMMY, "1", "alone"], 10, got.append)
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
        assert [r.output.text for r in got] == ["WARNING: alone"]  # not held back by the hung one
        assert runner.running == 1
    finally:
        runner.close()


async def test_deferred_results_wait_for_collect_now_or_for_defer_0(tmp_path):
    """``defer``: ended runs are not handed over on their own (not even with none left going)
    until ``collect_now`` takes them, or ``defer(0)`` lets them go; the results are PyRunner's."""
    loop = asyncio.get_running_loop()
    runner = CRunner(loop)
    counting = _CountingEngine(runner._engine)
    runner._engine = counting
    got: list[RunResult] = []
    try:
        runner.defer(600)
        runner.start([DUMMY, "2", "first"], 10, got.append)
        runner.start([DUMMY, "0", "second"], 10, got.append)
        for _ in range(200):  # both end (their slots free), and wait
            if counting.engine.running == 0:
                break
            await asyncio.sleep(0.05)
        for _ in range(5):
            await asyncio.sleep(0)
        assert got == [] and runner.running == 2
        runner.collect_now()
        assert sorted(r.output.text for r in got) == ["CRITICAL: first", "OK: second"] and runner.running == 0
        assert [essence(r) for r in sorted(got, key=lambda r: r.output.text)] == [
            essence(await run_on("python", [DUMMY, "2", "first"], 10)),
            essence(await run_on("python", [DUMMY, "0", "second"], 10))]
        runner.start([DUMMY, "1", "third"], 10, got.append)
        for _ in range(200):
            if counting.engine.running == 0:
                break
            await asyncio.sleep(0.05)
        assert len(got) == 2
        runner.defer(0)  # what waits goes now, through the event loop
        for _ in range(200):
            if len(got) == 3:
                break
            await asyncio.sleep(0.05)
        assert got[2].output.text == "WARNING: third"
        assert counting.batches == [2, 1]
    finally:
        runner.close()
    other = CRunner(loop)
    try:
        with pytest.raises(ValueError):
            other._engine.linger(-1.0)
    finally:
        other.close()


async def test_a_result_handler_that_raises_does_not_stop_the_others(tmp_path, caplog):
    loop = asyncio.get_running_loop()
    runner = CRunner(loop, batch_delay=60)
    got: list[str] = []

    def bad(r: RunResult) -> None:
        raise ValueError("handler fault")

    try:
        runner.start([DUMMY, "0", "a"], 10, bad)
        runner.start([DUMMY, "0", "b"], 10, lambda r: got.append(r.output.text))
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
    finally:
        runner.close()
    assert got == ["OK: b"]
    assert "handling the result of" in caplog.text
