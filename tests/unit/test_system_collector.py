"""SystemMetricsCollector against a faked psutil (namedtuples), plus one smoke run on the real host."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import namedtuple
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from bridge.api import Metric, MetricKind, PluginType
from collectors.system import PLUGIN_ID, SYSTEM_METRICS, Partition, SystemConfig, SystemMetricsCollector, read_mounts

scputimes = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")
svmem = namedtuple("svmem", "total available percent used free active inactive buffers cached shared slab")
sswap = namedtuple("sswap", "total used free percent sin sout")
sdiskio = namedtuple(
    "sdiskio",
    "read_count write_count read_bytes write_bytes read_time write_time read_merged_count write_merged_count busy_time",
)
sdiskpart = namedtuple("sdiskpart", "device mountpoint fstype opts")
sdiskusage = namedtuple("sdiskusage", "total used free percent")
snetio = namedtuple("snetio", "bytes_sent bytes_recv packets_sent packets_recv errin errout dropin dropout")

GiB = 1024**3


class FakeHost:
    """The psutil functions the collector calls, answering from mutable fields."""

    def __init__(self) -> None:
        self.cpu = [
            scputimes(100.0, 1.0, 50.0, 800.0, 5.0, 1.0, 2.0, 0.5, 3.0, 0.0),
            scputimes(200.0, 0.0, 40.0, 700.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
        ]
        self.memory = svmem(16 * GiB, 10 * GiB, 37.5, 6 * GiB, 8 * GiB, 0, 0, 1 * GiB, 2 * GiB, 0, 0)
        self.swap = sswap(4 * GiB, 1 * GiB, 3 * GiB, 25.0, 0, 0)
        self.disks: dict[str, Any] = {
            "sda": sdiskio(10, 20, 4096, 8192, 0, 0, 0, 0, 0),
            "nvme0n1": sdiskio(1, 2, 512, 1024, 0, 0, 0, 0, 0),
            "loop0": sdiskio(5, 0, 100, 0, 0, 0, 0, 0, 0),
        }
        self.partitions = [
            sdiskpart("/dev/sda1", "/", "ext4", "rw,relatime"),
            sdiskpart("/dev/sdb1", "/data", "xfs", "ro,noatime"),
            sdiskpart("proc", "/proc", "proc", "rw"),
            sdiskpart("tmpfs", "/dev/shm", "tmpfs", "rw"),
            sdiskpart("overlay", "/var/lib/docker/overlay2/abc/merged", "overlay", "rw"),
        ]
        self.usage: dict[str, Any] = {
            "/": sdiskusage(100 * GiB, 40 * GiB, 55 * GiB, 42.1),  # 5 GiB reserved
            "/data": sdiskusage(10 * GiB, 1 * GiB, 9 * GiB, 10.0),
        }
        self.failing_mounts: set[str] = set()
        self.nics: dict[str, Any] = {
            "eth0": snetio(1000, 2000, 10, 20, 1, 2, 3, 4),
            "lo": snetio(5, 5, 1, 1, 0, 0, 0, 0),
            "veth1234": snetio(7, 7, 1, 1, 0, 0, 0, 0),
        }
        self.load = (0.5, 0.25, 0.125)
        self.statuses = ["running", "sleeping", "sleeping", "disk-sleep", "zombie", "stopped", "idle"]
        self.statfs_calls: list[str] = []
        self.cpu_advances = True  # each read moves every CPU's idle time on by 10 s

    def cpu_times(self, percpu: bool = False) -> list[Any]:
        now = list(self.cpu)
        if self.cpu_advances:
            self.cpu = [t._replace(idle=t.idle + 10) for t in self.cpu]
        return now

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(psutil, "cpu_times", self.cpu_times)
        monkeypatch.setattr(psutil, "virtual_memory", lambda: self.memory)
        monkeypatch.setattr(psutil, "swap_memory", lambda: self.swap)
        monkeypatch.setattr(psutil, "disk_io_counters", lambda perdisk=False, nowrap=True: dict(self.disks))
        monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: list(self.partitions))
        monkeypatch.setattr(psutil, "disk_usage", self.disk_usage)
        monkeypatch.setattr(psutil, "net_io_counters", lambda pernic=False, nowrap=True: dict(self.nics))
        monkeypatch.setattr(psutil, "getloadavg", lambda: self.load)
        monkeypatch.setattr(
            psutil,
            "process_iter",
            lambda attrs=None, ad_value=None: iter([SimpleNamespace(info={"status": s}) for s in self.statuses]),
        )

    def disk_usage(self, path: str) -> Any:
        self.statfs_calls.append(path)
        if path in self.failing_mounts:
            raise PermissionError(13, "Permission denied", path)
        return self.usage[path]


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    # default procfs_path and rootfs_path: the mount table is psutil's (the host's paths are set per test)
    monkeypatch.delenv("PROCFS_PATH", raising=False)
    monkeypatch.delenv("MONBRIDGE_ROOTFS", raising=False)
    h = FakeHost()
    h.install(monkeypatch)
    return h


async def make(config: Mapping[str, Any] | None = None) -> SystemMetricsCollector:
    c = SystemMetricsCollector()
    await c.initialize(config or {})
    await c.start()
    return c


def points(metrics: Sequence[Metric], name: str) -> dict[tuple[tuple[str, Any], ...], float]:
    """``{sorted attribute items: value}`` of the series named ``name``; asserts no duplicate series."""
    out: dict[tuple[tuple[str, Any], ...], float] = {}
    for m in metrics:
        if m.name == name:
            key = tuple(sorted(m.attributes.items()))
            assert key not in out, f"duplicate series {name} {key}"
            assert isinstance(m.value, float)
            out[key] = m.value
    return out


def key(**attrs: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k.replace("__", "."), v) for k, v in attrs.items()))


def one(metrics: Sequence[Metric], name: str) -> Metric:
    found = [m for m in metrics if m.name == name]
    assert found, f"no {name}"
    return found[0]


# --------------------------------------------------------------------------- metadata and config


def test_metadata() -> None:
    md = SystemMetricsCollector().metadata()
    assert md.id == PLUGIN_ID == "monitoring.metrics.system"
    assert md.plugin_type is PluginType.METRIC_COLLECTOR
    assert (md.version, md.author) == ("0.1.0", "monbridge")
    assert SystemMetricsCollector.config_model is SystemConfig


@pytest.mark.parametrize(
    "config",
    [
        {"bogus": 1},
        {"mountpoints": {"include": ["/"], "exlude": ["/boot"]}},
        {"interfaces": ["eth0"]},
        {"collection_interval": 0},
        {"rootfs": "/host/root"},
        {"rootfs_path": ""},
    ],
)
async def test_config_rejects_unknown_keys_and_bad_values(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        await SystemMetricsCollector().initialize(config)


def test_config_is_frozen_and_defaults_are_sensible() -> None:
    cfg = SystemConfig.model_validate({})
    with pytest.raises(ValidationError):
        setattr(cfg, "procfs_path", "/x")
    assert not cfg.mountpoints.allows("/proc/sys")
    assert not cfg.mountpoints.allows("/sys")
    assert cfg.mountpoints.allows("/")
    assert not cfg.filesystem_types.allows("tmpfs")
    assert cfg.filesystem_types.allows("ext4")
    assert not cfg.devices.allows("loop3")
    assert not cfg.interfaces.allows("lo")
    # include alone keeps the type's default excludes
    cfg2 = SystemConfig.model_validate({"mountpoints": {"include": ["/*"]}})
    assert cfg2.mountpoints.exclude == SystemConfig.model_validate({}).mountpoints.exclude


def test_procfs_path_default_comes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCFS_PATH", "/host/proc")
    assert SystemConfig.model_validate({}).procfs_path == "/host/proc"
    monkeypatch.delenv("PROCFS_PATH")
    assert SystemConfig.model_validate({}).procfs_path == "/proc"


def test_rootfs_path_default_comes_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONBRIDGE_ROOTFS", "/host/root")
    assert SystemConfig.model_validate({}).rootfs_path == "/host/root"
    monkeypatch.delenv("MONBRIDGE_ROOTFS")
    assert SystemConfig.model_validate({}).rootfs_path == "/"


async def test_initialize_rejects_a_rootfs_path_that_is_not_a_directory(tmp_path: Path) -> None:
    from bridge.api import PluginError

    with pytest.raises(PluginError, match="rootfs_path"):
        await SystemMetricsCollector().initialize({"rootfs_path": str(tmp_path / "missing")})


async def test_initialize_sets_psutil_procfs_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(psutil, "PROCFS_PATH", "/proc", raising=False)
    await SystemMetricsCollector().initialize({"procfs_path": str(tmp_path)})
    assert psutil.PROCFS_PATH == str(tmp_path)


async def test_collect_before_initialize_is_an_error() -> None:
    from bridge.api import PluginError

    with pytest.raises(PluginError):
        await SystemMetricsCollector().collect_metrics()


# --------------------------------------------------------------------------- values


async def test_table_declares_exactly_what_is_emitted(host: FakeHost) -> None:
    c = await make()
    await c.collect_metrics()  # the first collection has no cpu.utilization (no delta yet)
    metrics = await c.collect_metrics()
    assert {m.name for m in metrics} == {s.name for s in SYSTEM_METRICS}
    by_name = {s.name: s for s in SYSTEM_METRICS}
    assert len(by_name) == len(SYSTEM_METRICS)
    for m in metrics:
        spec = by_name[m.name]
        assert (m.kind, m.unit, m.description) == (spec.kind, spec.unit, spec.description)
        assert m.start_time_ns is None  # cumulative counters go through OTel observable instruments
    assert c.read_errors == 0


async def test_kinds_and_units(host: FakeHost) -> None:
    expected = {
        "system.cpu.time": (MetricKind.COUNTER, "s"),
        "system.cpu.utilization": (MetricKind.GAUGE, "1"),
        "system.memory.usage": (MetricKind.UP_DOWN_COUNTER, "By"),
        "system.memory.utilization": (MetricKind.GAUGE, "1"),
        "system.paging.usage": (MetricKind.UP_DOWN_COUNTER, "By"),
        "system.disk.io": (MetricKind.COUNTER, "By"),
        "system.disk.operations": (MetricKind.COUNTER, "{operation}"),
        "system.filesystem.usage": (MetricKind.UP_DOWN_COUNTER, "By"),
        "system.filesystem.utilization": (MetricKind.GAUGE, "1"),
        "system.network.io": (MetricKind.COUNTER, "By"),
        "system.network.packets": (MetricKind.COUNTER, "{packet}"),
        "system.network.errors": (MetricKind.COUNTER, "{error}"),
        "system.network.dropped": (MetricKind.COUNTER, "{packet}"),
        "system.cpu.load_average.1m": (MetricKind.GAUGE, "{thread}"),
        "system.cpu.load_average.5m": (MetricKind.GAUGE, "{thread}"),
        "system.cpu.load_average.15m": (MetricKind.GAUGE, "{thread}"),
        "system.process.count": (MetricKind.UP_DOWN_COUNTER, "{process}"),
    }
    assert {s.name: (s.kind, s.unit) for s in SYSTEM_METRICS} == expected


async def test_cpu_time(host: FakeHost) -> None:
    metrics = await (await make()).collect_metrics()
    got = points(metrics, "system.cpu.time")
    assert got == {
        key(cpu__logical_number=0, cpu__mode="user"): 100.0,  # guest (3.0) is inside user, not added
        key(cpu__logical_number=0, cpu__mode="nice"): 1.0,
        key(cpu__logical_number=0, cpu__mode="system"): 50.0,
        key(cpu__logical_number=0, cpu__mode="idle"): 800.0,
        key(cpu__logical_number=0, cpu__mode="iowait"): 5.0,
        key(cpu__logical_number=0, cpu__mode="interrupt"): 3.0,  # irq + softirq
        key(cpu__logical_number=0, cpu__mode="steal"): 0.5,
        key(cpu__logical_number=1, cpu__mode="user"): 200.0,
        key(cpu__logical_number=1, cpu__mode="nice"): 0.0,
        key(cpu__logical_number=1, cpu__mode="system"): 40.0,
        key(cpu__logical_number=1, cpu__mode="idle"): 700.0,
        key(cpu__logical_number=1, cpu__mode="iowait"): 0.0,
        key(cpu__logical_number=1, cpu__mode="interrupt"): 0.0,
        key(cpu__logical_number=1, cpu__mode="steal"): 0.0,
    }
    assert one(metrics, "system.cpu.time").kind is MetricKind.COUNTER
    assert not points(metrics, "system.cpu.utilization")  # first collection: no delta yet


async def test_cpu_utilization_from_deltas(host: FakeHost) -> None:
    host.cpu_advances = False
    c = await make()
    await c.collect_metrics()
    # cpu0: +30 user, +10 system, +60 idle = 100 s; cpu1: nothing moved (skipped: no elapsed time)
    host.cpu = [scputimes(130.0, 1.0, 60.0, 860.0, 5.0, 1.0, 2.0, 0.5, 3.0, 0.0), host.cpu[1]]
    got = points(await c.collect_metrics(), "system.cpu.utilization")
    assert got == pytest.approx(
        {
            key(cpu__logical_number=0, cpu__mode="user"): 0.3,
            key(cpu__logical_number=0, cpu__mode="nice"): 0.0,
            key(cpu__logical_number=0, cpu__mode="system"): 0.1,
            key(cpu__logical_number=0, cpu__mode="idle"): 0.6,
            key(cpu__logical_number=0, cpu__mode="iowait"): 0.0,
            key(cpu__logical_number=0, cpu__mode="interrupt"): 0.0,
            key(cpu__logical_number=0, cpu__mode="steal"): 0.0,
        }
    )
    # the next delta is against the second collection, not the first
    host.cpu = [scputimes(130.0, 1.0, 60.0, 870.0, 5.0, 1.0, 2.0, 0.5, 3.0, 0.0), host.cpu[1]]
    got = points(await c.collect_metrics(), "system.cpu.utilization")
    assert got[key(cpu__logical_number=0, cpu__mode="idle")] == 1.0
    assert got[key(cpu__logical_number=0, cpu__mode="user")] == 0.0


async def test_memory_and_paging(host: FakeHost) -> None:
    metrics = await (await make()).collect_metrics()
    # used = total - free - buffers - cached, so the states add up to total
    usage = {
        key(system__memory__state="used"): 5.0 * GiB,
        key(system__memory__state="free"): 8.0 * GiB,
        key(system__memory__state="buffers"): 1.0 * GiB,
        key(system__memory__state="cached"): 2.0 * GiB,
    }
    assert points(metrics, "system.memory.usage") == usage
    assert points(metrics, "system.memory.utilization") == {k: v / (16 * GiB) for k, v in usage.items()}
    assert points(metrics, "system.paging.usage") == {
        key(system__paging__state="used"): 1.0 * GiB,
        key(system__paging__state="free"): 3.0 * GiB,
    }


async def test_disk_io_and_default_device_exclude(host: FakeHost) -> None:
    metrics = await (await make()).collect_metrics()
    assert points(metrics, "system.disk.io") == {
        key(system__device="sda", disk__io__direction="read"): 4096.0,
        key(system__device="sda", disk__io__direction="write"): 8192.0,
        key(system__device="nvme0n1", disk__io__direction="read"): 512.0,
        key(system__device="nvme0n1", disk__io__direction="write"): 1024.0,
    }
    assert points(metrics, "system.disk.operations") == {
        key(system__device="sda", disk__io__direction="read"): 10.0,
        key(system__device="sda", disk__io__direction="write"): 20.0,
        key(system__device="nvme0n1", disk__io__direction="read"): 1.0,
        key(system__device="nvme0n1", disk__io__direction="write"): 2.0,
    }


def fs_key(device: str, mountpoint: str, fstype: str, mode: str, state: str) -> tuple[tuple[str, Any], ...]:
    return key(
        system__device=device,
        system__filesystem__mountpoint=mountpoint,
        system__filesystem__type=fstype,
        system__filesystem__mode=mode,
        system__filesystem__state=state,
    )


async def test_filesystems_with_default_excludes(host: FakeHost) -> None:
    metrics = await (await make()).collect_metrics()
    assert points(metrics, "system.filesystem.usage") == {
        fs_key("/dev/sda1", "/", "ext4", "rw", "used"): 40.0 * GiB,
        fs_key("/dev/sda1", "/", "ext4", "rw", "free"): 55.0 * GiB,
        fs_key("/dev/sda1", "/", "ext4", "rw", "reserved"): 5.0 * GiB,
        fs_key("/dev/sdb1", "/data", "xfs", "ro", "used"): 1.0 * GiB,
        fs_key("/dev/sdb1", "/data", "xfs", "ro", "free"): 9.0 * GiB,
        fs_key("/dev/sdb1", "/data", "xfs", "ro", "reserved"): 0.0,
    }
    assert points(metrics, "system.filesystem.utilization") == {
        fs_key("/dev/sda1", "/", "ext4", "rw", "used"): 0.4,
        fs_key("/dev/sda1", "/", "ext4", "rw", "free"): 0.55,
        fs_key("/dev/sda1", "/", "ext4", "rw", "reserved"): 0.05,
        fs_key("/dev/sdb1", "/data", "xfs", "ro", "used"): 0.1,
        fs_key("/dev/sdb1", "/data", "xfs", "ro", "free"): 0.9,
        fs_key("/dev/sdb1", "/data", "xfs", "ro", "reserved"): 0.0,
    }
    assert sorted(host.statfs_calls) == ["/", "/data"]  # excluded mounts are not even stat'ed


async def test_network_and_default_interface_exclude(host: FakeHost) -> None:
    metrics = await (await make()).collect_metrics()

    def nic(direction: str) -> tuple[tuple[str, Any], ...]:
        return key(network__interface__name="eth0", network__io__direction=direction)

    assert points(metrics, "system.network.io") == {nic("transmit"): 1000.0, nic("receive"): 2000.0}
    assert points(metrics, "system.network.packets") == {nic("transmit"): 10.0, nic("receive"): 20.0}
    assert points(metrics, "system.network.errors") == {nic("transmit"): 2.0, nic("receive"): 1.0}
    assert points(metrics, "system.network.dropped") == {nic("transmit"): 4.0, nic("receive"): 3.0}


async def test_load_average_and_process_count(host: FakeHost) -> None:
    metrics = await (await make()).collect_metrics()
    assert points(metrics, "system.cpu.load_average.1m") == {(): 0.5}
    assert points(metrics, "system.cpu.load_average.5m") == {(): 0.25}
    assert points(metrics, "system.cpu.load_average.15m") == {(): 0.125}
    assert points(metrics, "system.process.count") == {
        key(process__state="running"): 1.0,
        key(process__state="sleeping"): 4.0,  # sleeping x2, disk-sleep, idle
        key(process__state="stopped"): 1.0,
        key(process__state="defunct"): 1.0,
    }


# --------------------------------------------------------------------------- filtering


async def test_include_and_exclude_globs(host: FakeHost) -> None:
    c = await make(
        {
            "devices": {"include": ["sd*", "loop*"], "exclude": []},
            "mountpoints": {"include": ["/data*"]},
            "interfaces": {"include": ["*"], "exclude": ["veth*"]},
        }
    )
    metrics = await c.collect_metrics()
    assert {dict(k)["system.device"] for k in points(metrics, "system.disk.io")} == {"sda", "loop0"}
    assert {dict(k)["system.filesystem.mountpoint"] for k in points(metrics, "system.filesystem.usage")} == {"/data"}
    assert {dict(k)["network.interface.name"] for k in points(metrics, "system.network.io")} == {"eth0", "lo"}


async def test_filesystem_type_filter(host: FakeHost) -> None:
    c = await make({"filesystem_types": {"include": ["xfs", "tmpfs"], "exclude": []}, "mountpoints": {"exclude": []}})
    host.usage["/dev/shm"] = sdiskusage(GiB, 0, GiB, 0.0)
    metrics = await c.collect_metrics()
    assert {dict(k)["system.filesystem.mountpoint"] for k in points(metrics, "system.filesystem.usage")} == {
        "/data",
        "/dev/shm",
    }


# --------------------------------------------------------------------------- failures


async def test_a_failing_mount_loses_only_that_mount(host: FakeHost, caplog: pytest.LogCaptureFixture) -> None:
    host.failing_mounts.add("/data")
    c = await make()
    with caplog.at_level(logging.DEBUG, logger="monbridge.collectors.system"):
        metrics = await c.collect_metrics()
        metrics2 = await c.collect_metrics()
    mounts = {dict(k)["system.filesystem.mountpoint"] for k in points(metrics, "system.filesystem.usage")}
    assert mounts == {"/"}
    assert {m.name for m in metrics2} == {s.name for s in SYSTEM_METRICS}  # everything else is there
    assert c.read_errors == 2
    records = [r for r in caplog.records if "/data" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]  # warned once, then quiet
    assert "PermissionError" in records[0].getMessage()


async def test_a_failing_section_loses_only_that_section(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise OSError("cannot read it")

    monkeypatch.setattr(psutil, "disk_io_counters", boom)
    monkeypatch.setattr(psutil, "getloadavg", boom)
    c = await make()
    metrics = await c.collect_metrics()
    names = {m.name for m in metrics}
    assert "system.disk.io" not in names and "system.cpu.load_average.1m" not in names
    assert {"system.cpu.time", "system.memory.usage", "system.filesystem.usage", "system.network.io"} <= names
    assert c.read_errors == 2


async def test_a_broken_row_loses_only_that_row(host: FakeHost) -> None:
    host.nics["eth0"] = SimpleNamespace(bytes_sent=1, bytes_recv=2)  # lacks the packet/error fields
    c = await make()
    metrics = await c.collect_metrics()
    names = {m.name for m in metrics}
    assert "system.network.io" in names
    assert not names & {"system.network.packets", "system.network.errors", "system.network.dropped"}
    assert c.read_errors == 3


async def test_a_hung_mount_is_skipped_until_it_answers(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = host.disk_usage

    def disk_usage(path: str) -> Any:
        if path == "/data":
            release.wait(10)
        return real(path)

    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    c = await make({"filesystem_timeout": 0.05})

    def mounts(metrics: Sequence[Metric]) -> set[str]:
        return {str(dict(k)["system.filesystem.mountpoint"]) for k in points(metrics, "system.filesystem.usage")}

    assert mounts(await c.collect_metrics()) == {"/"}
    calls = len(host.statfs_calls)
    assert mounts(await c.collect_metrics()) == {"/"}  # not waited for again
    assert len(host.statfs_calls) == calls + 1
    release.set()
    for _ in range(100):  # the stuck statfs returns, and the mount is read again
        got = mounts(await c.collect_metrics())
        if got == {"/", "/data"}:
            break
        await asyncio.sleep(0.01)
    assert got == {"/", "/data"}


async def test_collection_runs_off_the_event_loop(host: FakeHost, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def cpu_times(percpu: bool = False) -> list[Any]:
        seen.append(threading.get_ident())
        return host.cpu_times(percpu)

    monkeypatch.setattr(psutil, "cpu_times", cpu_times)
    await (await make()).collect_metrics()
    assert seen and loop_thread not in seen


# --------------------------------------------------------------------------- the real host


async def test_smoke_real_psutil() -> None:
    c = await make()
    await c.collect_metrics()
    await asyncio.sleep(0.05)
    metrics = await c.collect_metrics()
    names = {m.name for m in metrics}
    assert {
        "system.cpu.time",
        "system.cpu.utilization",
        "system.memory.usage",
        "system.memory.utilization",
        "system.paging.usage",
        "system.process.count",
    } <= names
    if hasattr(psutil, "getloadavg"):
        assert "system.cpu.load_average.1m" in names
    assert names <= {s.name for s in SYSTEM_METRICS}
    for m in metrics:
        assert isinstance(m.value, float) and m.value >= 0, m
    await c.stop()
    await c.shutdown()


async def test_through_the_pipeline_to_otlp(host: FakeHost) -> None:
    """Faked host → collector → pipeline → OTLP: semantic-convention names, units, kinds."""
    from bridge.exposition import render
    from bridge.pipeline import Pipeline
    from tests.otlp_view import attributes, metrics_of, number

    pipeline = Pipeline()
    collector = await make()
    pipeline.record(PLUGIN_ID, await collector.collect_metrics())
    got = metrics_of(pipeline)
    cpu = got["system.cpu.time"]
    assert cpu.WhichOneof("data") == "sum" and cpu.sum.is_monotonic and cpu.unit == "s"
    user0 = [number(p) for p in cpu.sum.data_points
             if attributes(p.attributes) == {"cpu.logical_number": 0, "cpu.mode": "user"}]
    assert user0 == [100.0]
    mem = got["system.memory.usage"]
    assert mem.WhichOneof("data") == "sum" and not mem.sum.is_monotonic and mem.unit == "By"
    assert got["system.memory.utilization"].WhichOneof("data") == "gauge"
    assert {spec.name for spec in SYSTEM_METRICS} - {"system.cpu.utilization"} == set(got)  # it needs 2 samples
    body = render(pipeline.families(), {}).decode()
    assert 'system_cpu_time_seconds_total{cpu_logical_number="0",cpu_mode="user"} 100.0' in body
    pipeline.shutdown()


# --------------------------------------------------------------------------- the host's filesystems from a container

# <procfs>/1/mounts of the host's init process: octal escapes, a later mount over an earlier one,
# mounts the default filters drop (by type and by mount point), a malformed line.
HOST_MOUNTS = r"""/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /run/user/1000 tmpfs rw,nosuid,nodev 0 0
none /srv/scratch tmpfs rw 0 0
/dev/sdb1 /mnt/backup\040disk xfs ro,noatime 0 0
/dev/sdc1 /data ext4 rw 0 0
/dev/sdd1 /data xfs rw 0 0
/dev/sda1 /var/lib/kubelet/pods/abc/volumes ext4 rw 0 0
truncated-line
"""


@pytest.fixture
def host_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A fake host procfs (``1/mounts``) and rootfs."""
    monkeypatch.setattr(psutil, "PROCFS_PATH", "/proc", raising=False)
    procfs, rootfs = tmp_path / "proc", tmp_path / "root"
    (procfs / "1").mkdir(parents=True)
    (procfs / "1" / "mounts").write_text(HOST_MOUNTS)
    rootfs.mkdir()
    return procfs, rootfs


def test_read_mounts_decodes_escapes_and_skips_malformed_lines(host_root: tuple[Path, Path]) -> None:
    procfs, _ = host_root
    mounts = read_mounts(str(procfs / "1" / "mounts"))
    assert mounts[0] == Partition("/dev/sda1", "/", "ext4", "rw,relatime")
    assert Partition("/dev/sdb1", "/mnt/backup disk", "xfs", "ro,noatime") in mounts
    assert Partition("", "/srv/scratch", "tmpfs", "rw") in mounts  # "none" -> "", as psutil does
    assert len(mounts) == 8


@pytest.mark.parametrize(
    ("config", "statfs", "mounts"),
    [
        # the Helm chart's hostMetrics preset: statfs under the host's / mount, host mount points reported
        pytest.param(
            {"procfs_path": "{procfs}", "rootfs_path": "{rootfs}"},
            ["{rootfs}/", "{rootfs}/mnt/backup disk", "{rootfs}/data"],
            {"/", "/mnt/backup disk", "/data"},
            id="rootfs-and-procfs",
        ),
        # the host's mount table, statfs on the same paths (node_exporter with --path.procfs only)
        pytest.param(
            {"procfs_path": "{procfs}"},
            ["/", "/mnt/backup disk", "/data"],
            {"/", "/mnt/backup disk", "/data"},
            id="procfs-only",
        ),
        # filters apply to the host's mount points, not the prefixed paths
        pytest.param(
            {"procfs_path": "{procfs}", "rootfs_path": "{rootfs}", "mountpoints": {"include": ["/mnt/*"]}},
            ["{rootfs}/mnt/backup disk"],
            {"/mnt/backup disk"},
            id="filters",
        ),
        pytest.param(
            {
                "procfs_path": "{procfs}",
                "rootfs_path": "{rootfs}",
                "filesystem_types": {"include": ["tmpfs"], "exclude": []},
                "mountpoints": {"exclude": []},
            },
            ["{rootfs}/run/user/1000", "{rootfs}/srv/scratch"],
            {"/run/user/1000", "/srv/scratch"},
            id="type-filter",
        ),
    ],
)
async def test_host_filesystems_are_read_through_procfs_1_mounts_and_rootfs(
    host: FakeHost,
    host_root: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, Any],
    statfs: list[str],
    mounts: set[str],
) -> None:
    procfs, rootfs = host_root

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(procfs=procfs, rootfs=rootfs)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    def disk_partitions(all: bool = False) -> list[Any]:
        raise AssertionError("psutil.disk_partitions reads monbridge's own mount namespace")

    monkeypatch.setattr(psutil, "disk_partitions", disk_partitions)
    calls: list[str] = []

    def disk_usage(path: str) -> Any:
        calls.append(path)
        return sdiskusage(10 * GiB, 4 * GiB, 5 * GiB, 40.0)

    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    c = await make(fill(config))
    metrics = await c.collect_metrics()
    assert sorted(calls) == sorted(fill(statfs))
    series = points(metrics, "system.filesystem.usage")
    assert {dict(k)["system.filesystem.mountpoint"] for k in series} == mounts
    assert c.read_errors == 0


async def test_host_filesystem_attributes_are_the_hosts(host: FakeHost, host_root: tuple[Path, Path]) -> None:
    procfs, rootfs = host_root
    host.usage = {
        f"{rootfs}/": sdiskusage(100 * GiB, 40 * GiB, 55 * GiB, 42.1),
        f"{rootfs}/mnt/backup disk": sdiskusage(10 * GiB, 1 * GiB, 9 * GiB, 10.0),
        f"{rootfs}/data": sdiskusage(20 * GiB, 2 * GiB, 18 * GiB, 10.0),
    }
    c = await make({"procfs_path": str(procfs), "rootfs_path": str(rootfs)})
    got = points(await c.collect_metrics(), "system.filesystem.usage")
    assert got == {
        fs_key("/dev/sda1", "/", "ext4", "rw", "used"): 40.0 * GiB,
        fs_key("/dev/sda1", "/", "ext4", "rw", "free"): 55.0 * GiB,
        fs_key("/dev/sda1", "/", "ext4", "rw", "reserved"): 5.0 * GiB,
        fs_key("/dev/sdb1", "/mnt/backup disk", "xfs", "ro", "used"): 1.0 * GiB,
        fs_key("/dev/sdb1", "/mnt/backup disk", "xfs", "ro", "free"): 9.0 * GiB,
        fs_key("/dev/sdb1", "/mnt/backup disk", "xfs", "ro", "reserved"): 0.0,
        # the later /data mount hides the earlier one
        fs_key("/dev/sdd1", "/data", "xfs", "rw", "used"): 2.0 * GiB,
        fs_key("/dev/sdd1", "/data", "xfs", "rw", "free"): 18.0 * GiB,
        fs_key("/dev/sdd1", "/data", "xfs", "rw", "reserved"): 0.0,
    }
    assert all(path.startswith(str(rootfs)) for path in host.statfs_calls)


async def test_default_paths_keep_psutil_disk_partitions(
    host: FakeHost, host_root: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """procfs_path /proc and rootfs_path /: psutil's mount table, stat'ed where it is (no /proc/1/mounts)."""
    opened: list[str] = []

    def read_mounts(path: str) -> list[Partition]:
        opened.append(path)
        return []

    monkeypatch.setattr("collectors.system.read_mounts", read_mounts)
    c = await make()
    assert c._config is not None and (c._config.procfs_path, c._config.rootfs_path) == ("/proc", "/")
    mounts = {dict(k)["system.filesystem.mountpoint"] for k in points(await c.collect_metrics(), "system.filesystem.usage")}
    assert mounts == {"/", "/data"}
    assert sorted(host.statfs_calls) == ["/", "/data"]
    assert opened == []


async def test_an_unreadable_host_mount_table_is_a_read_error(
    host: FakeHost, host_root: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    procfs, rootfs = host_root
    (procfs / "1" / "mounts").unlink()
    c = await make({"procfs_path": str(procfs), "rootfs_path": str(rootfs)})
    with caplog.at_level(logging.WARNING, logger="monbridge.collectors.system"):
        metrics = await c.collect_metrics()
    names = {m.name for m in metrics}
    assert "system.filesystem.usage" not in names
    assert {"system.cpu.time", "system.memory.usage", "system.network.io"} <= names
    assert c.read_errors == 1
    assert host.statfs_calls == []
    assert any("1/mounts" in r.getMessage() and "FileNotFoundError" in r.getMessage() for r in caplog.records)


async def test_a_failing_or_hung_host_mount_loses_only_that_mount(
    host: FakeHost, host_root: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    procfs, rootfs = host_root
    release = threading.Event()
    host.usage = {f"{rootfs}/": sdiskusage(GiB, 0, GiB, 0.0), f"{rootfs}/data": sdiskusage(GiB, 0, GiB, 0.0)}
    host.failing_mounts.add(f"{rootfs}/mnt/backup disk")
    real = host.disk_usage

    def disk_usage(path: str) -> Any:
        if path == f"{rootfs}/data":
            release.wait(10)
        return real(path)

    monkeypatch.setattr(psutil, "disk_usage", disk_usage)
    c = await make({"procfs_path": str(procfs), "rootfs_path": str(rootfs), "filesystem_timeout": 0.05})

    def mounts(metrics: Sequence[Metric]) -> set[str]:
        return {str(dict(k)["system.filesystem.mountpoint"]) for k in points(metrics, "system.filesystem.usage")}

    assert mounts(await c.collect_metrics()) == {"/"}
    assert c.read_errors == 2  # /mnt/backup disk denied, /data hung
    calls = host.statfs_calls.count(f"{rootfs}/data")
    assert mounts(await c.collect_metrics()) == {"/"}
    assert host.statfs_calls.count(f"{rootfs}/data") == calls  # not stat'ed again while stuck
    release.set()
    for _ in range(100):
        got = mounts(await c.collect_metrics())
        if got == {"/", "/data"}:
            break
        await asyncio.sleep(0.01)
    assert got == {"/", "/data"}
