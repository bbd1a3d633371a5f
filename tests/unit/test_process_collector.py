"""ProcessMetricsCollector against a faked psutil process table, plus one smoke run on the real host."""

from __future__ import annotations

import logging
import os
from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from bridge.api import Metric, MetricKind, PluginError, PluginType
from collectors.process import PLUGIN_ID, PROCESS_METRICS, ProcessConfig, ProcessMetricsCollector

pcputimes = namedtuple("pcputimes", "user system children_user children_system iowait")
pmem = namedtuple("pmem", "rss vms shared text lib data dirty")


class FakeProcess:
    def __init__(
        self,
        pid: int,
        name: str,
        cmdline: Sequence[str] = (),
        user: str = "alice",
        *,
        status: str = psutil.STATUS_SLEEPING,
        denied: Sequence[str] = (),
        exits_when_read: bool = False,
    ) -> None:
        self.pid = pid
        self._name = name
        self._cmdline = list(cmdline)
        self._user = user
        self._status = status
        self.denied = set(denied)
        self.gone = False
        self.exits_when_read = exits_when_read

    def _check(self, what: str) -> None:
        if self.gone:
            raise psutil.NoSuchProcess(self.pid)
        if what in self.denied:
            raise psutil.AccessDenied(self.pid)

    @contextmanager
    def oneshot(self) -> Iterator[None]:
        if self.exits_when_read:
            self.gone = True
        yield

    def name(self) -> str:
        self._check("name")
        return self._name

    def cmdline(self) -> list[str]:
        self._check("cmdline")
        return self._cmdline

    def username(self) -> str:
        self._check("username")
        return self._user

    def status(self) -> str:
        self._check("status")
        return self._status

    def cpu_times(self) -> Any:
        self._check("cpu_times")
        return pcputimes(self.pid + 0.5, self.pid / 4, 0.0, 0.0, 0.0)

    def memory_info(self) -> Any:
        self._check("memory_info")
        return pmem(self.pid * 1024, self.pid * 4096, 0, 0, 0, 0, 0)

    def num_threads(self) -> int:
        self._check("num_threads")
        return self.pid % 7 + 1

    def num_fds(self) -> int:
        self._check("num_fds")
        return self.pid % 5 + 3


class FakeTable:
    def __init__(self) -> None:
        self.procs: list[FakeProcess] = [
            FakeProcess(10, "python3", ["/usr/bin/python3", "-m", "foo.server", "--port=80"], "root"),
            FakeProcess(20, "python3.11", ["python3.11", "worker.py"], "alice"),
            FakeProcess(30, "nginx", ["nginx: master process"], "root"),
            FakeProcess(40, "bash", ["-bash"], "alice"),
        ]

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(psutil, "process_iter", lambda *a, **k: iter(list(self.procs)))

    def get(self, pid: int) -> FakeProcess:
        return next(p for p in self.procs if p.pid == pid)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> FakeTable:
    t = FakeTable()
    t.install(monkeypatch)
    return t


async def make(config: Mapping[str, Any]) -> ProcessMetricsCollector:
    c = ProcessMetricsCollector()
    await c.initialize(config)
    await c.start()
    return c


def pids(metrics: Sequence[Metric]) -> set[Any]:
    return {m.attributes["process.pid"] for m in metrics}


def series(metrics: Sequence[Metric]) -> dict[tuple[str, tuple[tuple[str, Any], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
    for m in metrics:
        k = (m.name, tuple(sorted(m.attributes.items())))
        assert k not in out, f"duplicate series {k}"
        assert isinstance(m.value, float)
        out[k] = m.value
    return out


# --------------------------------------------------------------------------- metadata and config


def test_metadata() -> None:
    md = ProcessMetricsCollector().metadata()
    assert md.id == PLUGIN_ID == "monitoring.metrics.process"
    assert md.plugin_type is PluginType.METRIC_COLLECTOR
    assert (md.version, md.author) == ("0.1.0", "monbridge")
    assert ProcessMetricsCollector.config_model is ProcessConfig


@pytest.mark.parametrize(
    "config",
    [
        {"matches": [{"name": "x"}]},  # unknown key
        {"match": [{"name": "x", "exe": "y"}]},  # unknown key in an entry
        {"match": [{}]},  # an entry that would match everything by accident
        {"match": {"name": "x"}},  # not a list
        {"max_processes": 0},
    ],
)
async def test_config_rejects(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        await ProcessMetricsCollector().initialize(config)


def test_config_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROCFS_PATH", raising=False)
    cfg = ProcessConfig.model_validate({})
    assert (cfg.match, cfg.max_processes, cfg.procfs_path) == ((), 500, "/proc")


async def test_collect_before_initialize_is_an_error() -> None:
    with pytest.raises(PluginError):
        await ProcessMetricsCollector().collect_metrics()


# --------------------------------------------------------------------------- values


async def test_metrics_of_one_process(table: FakeTable) -> None:
    metrics = await (await make({"match": [{"name": "nginx"}]})).collect_metrics()
    base = {
        "process.pid": 30,
        "process.executable.name": "nginx",
        "process.owner": "root",
        "process.command": "nginx: master process",
    }

    def k(name: str, **extra: Any) -> tuple[str, tuple[tuple[str, Any], ...]]:
        return name, tuple(sorted({**base, **{a.replace("__", "."): v for a, v in extra.items()}}.items()))

    assert series(metrics) == {
        k("process.cpu.time", cpu__mode="user"): 30.5,
        k("process.cpu.time", cpu__mode="system"): 7.5,
        k("process.memory.usage"): 30.0 * 1024,
        k("process.memory.virtual"): 30.0 * 4096,
        k("process.thread.count"): 3.0,
        k("process.open_file_descriptor.count"): 3.0,
    }
    expected = {
        "process.cpu.time": (MetricKind.COUNTER, "s"),
        "process.memory.usage": (MetricKind.UP_DOWN_COUNTER, "By"),
        "process.memory.virtual": (MetricKind.UP_DOWN_COUNTER, "By"),
        "process.thread.count": (MetricKind.UP_DOWN_COUNTER, "{thread}"),
        "process.open_file_descriptor.count": (MetricKind.UP_DOWN_COUNTER, "{file_descriptor}"),
    }
    assert {m.name: (m.kind, m.unit) for m in metrics} == expected
    assert {s.name: (s.kind, s.unit) for s in PROCESS_METRICS} == expected  # declared set == emitted set
    assert all(m.start_time_ns is None for m in metrics)


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ([{"name": "python*"}], {10, 20}),
        ([{"cmdline": "*foo*"}], {10}),
        ([{"user": "root"}], {10, 30}),
        ([{"name": "python*", "user": "root"}], {10}),  # every given field must match
        ([{"name": "python*", "cmdline": "*worker*", "user": "root"}], set()),
        ([{"name": "nginx"}, {"cmdline": "*worker.py"}], {20, 30}),  # any entry
        ([{"name": "Python*"}], set()),  # case-sensitive
        ([], {10, 20, 30, 40}),  # no entries: every process
    ],
)
async def test_matching(table: FakeTable, match: list[dict[str, str]], expected: set[int]) -> None:
    assert pids(await (await make({"match": match})).collect_metrics()) == expected


async def test_exited_process_disappears_next_collection(table: FakeTable) -> None:
    c = await make({"match": [{"name": "python*"}]})
    first = await c.collect_metrics()
    assert pids(first) == {10, 20}
    table.procs = [p for p in table.procs if p.pid != 20]
    second = await c.collect_metrics()
    assert pids(second) == {10}
    assert {k for k in series(second)} == {k for k in series(first) if dict(k[1])["process.pid"] == 10}


async def test_vanishing_and_zombie_processes_are_skipped(table: FakeTable, caplog: pytest.LogCaptureFixture) -> None:
    table.procs += [
        FakeProcess(50, "python3", exits_when_read=True),  # matched, then gone while read
        FakeProcess(60, "python3", status=psutil.STATUS_ZOMBIE),
        FakeProcess(70, "python3", denied=["name"]),  # cannot even be named
    ]
    table.get(20).gone = True  # gone before it was matched
    c = await make({"match": [{"name": "python*"}]})
    with caplog.at_level(logging.WARNING):
        metrics = await c.collect_metrics()
    assert pids(metrics) == {10}
    assert not caplog.records
    assert c.read_errors == 0


async def test_access_denied_on_one_field_loses_only_that_metric(table: FakeTable) -> None:
    table.get(10).denied = {"num_fds", "username"}
    metrics = await (await make({"match": [{"name": "python3"}]})).collect_metrics()
    assert {m.name for m in metrics} == {s.name for s in PROCESS_METRICS} - {"process.open_file_descriptor.count"}
    assert all("process.owner" not in m.attributes for m in metrics)


async def test_unreadable_field_does_not_match(table: FakeTable) -> None:
    table.get(10).denied = {"cmdline"}
    assert pids(await (await make({"match": [{"cmdline": "*"}]})).collect_metrics()) == {20, 30, 40}


async def test_max_processes_bounds_and_logs_what_was_left_out(
    table: FakeTable, caplog: pytest.LogCaptureFixture
) -> None:
    table.procs.reverse()  # the bound keeps the lowest pids whatever the iteration order
    c = await make({"max_processes": 2})
    with caplog.at_level(logging.INFO, logger="monbridge.collectors.process"):
        assert pids(await c.collect_metrics()) == {10, 20}
        assert c.left_out == 2
        assert pids(await c.collect_metrics()) == {10, 20}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # logged when the count changes, not every collection
    assert "2 matching processes left out" in warnings[0].getMessage()
    caplog.clear()
    table.procs = table.procs[-2:]
    with caplog.at_level(logging.INFO, logger="monbridge.collectors.process"):
        await c.collect_metrics()
    assert c.left_out == 0
    assert [r.levelno for r in caplog.records] == [logging.INFO]


# --------------------------------------------------------------------------- the real host


async def test_smoke_real_psutil() -> None:
    me = psutil.Process()
    c = await make({"match": [{"name": me.name(), "user": me.username()}]})
    metrics = await c.collect_metrics()
    mine = [m for m in metrics if m.attributes["process.pid"] == os.getpid()]
    assert {m.name for m in mine} == {s.name for s in PROCESS_METRICS}
    assert all(isinstance(m.value, float) and m.value >= 0 for m in mine)
    await c.stop()
    await c.shutdown()
