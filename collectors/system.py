"""Host metrics (CPU, memory, paging, disks, filesystems, network, load, process counts) read with
psutil and named by the OpenTelemetry system semantic conventions (``system.cpu.time``, ...).

Every metric is one row of ``SYSTEM_METRICS``: name, kind, unit, description and a function that
reads ``(attributes, value)`` pairs from a ``SystemSnapshot``; adding a metric is adding a row. The
snapshot is taken in a worker thread (psutil blocks), and a failing read (a mount that denies
access or hangs, a missing /proc file) loses only what it was reading: it is skipped, counted in
``read_errors`` and logged.

In a container (a node agent), ``procfs_path`` names the node's /proc (e.g. /host/proc) and
``rootfs_path`` the node's / (e.g. /host/root, mounted with HostToContainer propagation). Then, like
node_exporter's ``--path.rootfs``, the filesystems are the node's: the mount table is read from
``<procfs_path>/1/mounts`` (the node's init process, not monbridge's own mount namespace), each mount
is stat'ed at ``<rootfs_path>/<mount point>``, and is reported under the node's mount point.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import psutil

from bridge.api import (
    AttributeValue,
    Metric,
    MetricCollectorPlugin,
    MetricKind,
    PluginConfig,
    PluginError,
    PluginMetadata,
    PluginType,
    validate_plugin_id,
)
from collectors.config import (
    DeviceFilter,
    FilesystemTypeFilter,
    GlobFilter,
    InterfaceFilter,
    MountpointFilter,
    SystemConfig,
    default_procfs_path,
    default_rootfs_path,
)

__all__ = [
    "PLUGIN_ID",
    "SYSTEM_METRICS",
    "DeviceFilter",
    "Filesystem",
    "FilesystemTypeFilter",
    "GlobFilter",
    "InterfaceFilter",
    "MetricSpec",
    "MountpointFilter",
    "Partition",
    "Point",
    "SystemConfig",
    "SystemMetricsCollector",
    "SystemSnapshot",
    "cpu_modes",
    "default_procfs_path",
    "default_rootfs_path",
    "memory_states",
    "metrics_from_table",
    "read_mounts",
    "set_procfs_path",
]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.system", PluginType.METRIC_COLLECTOR)

log = logging.getLogger("monbridge.collectors.system")

Attributes = Mapping[str, AttributeValue]
Point = tuple[Attributes, float]
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class MetricSpec(Generic[S]):
    """One metric of a table-driven collector: ``read`` yields its points from one sample ``S``."""

    name: str
    kind: MetricKind
    unit: str
    description: str
    read: Callable[[S], Iterable[Point]]


# --------------------------------------------------------------------------- configuration
# SystemConfig and its filters are in collectors.config: validating a config imports them alone.


def set_procfs_path(path: str) -> None:
    """Point psutil at ``path`` for /proc reads (a process-wide psutil setting), on systems that use one."""
    if hasattr(psutil, "PROCFS_PATH"):
        if not os.path.isdir(path):
            raise PluginError(f"procfs_path {path!r} is not a directory")
        psutil.PROCFS_PATH = path


# --------------------------------------------------------------------------- the snapshot


class Partition(NamedTuple):
    """One mount, shaped like psutil's ``sdiskpart``."""

    device: str
    mountpoint: str
    fstype: str
    opts: str


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """Undo the kernel's octal escapes in a mounts field (``\\040`` space, ``\\011`` tab, ``\\012``, ``\\134``)."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(path: str) -> list[Partition]:
    """The mounts of a ``/proc/<pid>/mounts`` file (``device mountpoint fstype options dump pass``).

    Decoded as psutil decodes paths (filesystem encoding, undecodable bytes kept as surrogates); a
    device of ``none`` becomes ``""`` as in psutil. Lines with fewer than four fields are skipped.
    """
    out: list[Partition] = []
    with open(path, encoding=sys.getfilesystemencoding(), errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 4:
                continue
            device, mountpoint, fstype, opts = (_unescape(x) for x in fields[:4])
            out.append(Partition("" if device == "none" else device, mountpoint, fstype, opts))
    return out


@dataclass(frozen=True, slots=True)
class Filesystem:
    device: str
    mountpoint: str
    fstype: str
    mode: str  # "rw" | "ro"
    total: int
    used: int
    free: int  # available to unprivileged users

    @property
    def reserved(self) -> int:
        """Blocks kept for root: neither used nor available to users."""
        return max(self.total - self.used - self.free, 0)

    @property
    def attributes(self) -> dict[str, AttributeValue]:
        return {
            "system.device": self.device,
            "system.filesystem.mountpoint": self.mountpoint,
            "system.filesystem.type": self.fstype,
            "system.filesystem.mode": self.mode,
        }


@dataclass(slots=True)
class SystemSnapshot:
    """What one collection read from psutil, already filtered; ``None``/empty where a read failed."""

    cpu_times: Sequence[Mapping[str, float]] | None = None  # per logical CPU: cpu.mode -> seconds
    previous_cpu_times: Sequence[Mapping[str, float]] | None = None  # the last collection's, for deltas
    memory: Mapping[str, float] | None = None  # system.memory.state -> bytes
    memory_total: float | None = None
    paging: Mapping[str, float] | None = None  # system.paging.state -> bytes
    disk_io: Mapping[str, Any] = field(default_factory=dict)  # device -> psutil sdiskio
    filesystems: Sequence[Filesystem] = ()
    network: Mapping[str, Any] = field(default_factory=dict)  # interface -> psutil snetio
    load_average: tuple[float, float, float] | None = None
    process_states: Mapping[str, int] | None = None  # process.state -> count


# psutil cpu_times field -> cpu.mode. guest and guest_nice are left out: Linux already counts them
# in user and nice. Several fields may fold into one mode (irq + softirq -> interrupt).
_CPU_MODES = {
    "user": "user",
    "nice": "nice",
    "system": "system",
    "idle": "idle",
    "iowait": "iowait",
    "irq": "interrupt",
    "softirq": "interrupt",
    "interrupt": "interrupt",  # Windows
    "dpc": "interrupt",  # Windows
    "steal": "steal",
}

# psutil process status -> semantic-convention process.state
_PROCESS_STATES = {
    psutil.STATUS_RUNNING: "running",
    psutil.STATUS_WAKING: "running",
    psutil.STATUS_STOPPED: "stopped",
    psutil.STATUS_TRACING_STOP: "stopped",
    psutil.STATUS_ZOMBIE: "defunct",
    psutil.STATUS_DEAD: "defunct",
}


def cpu_modes(times: Any) -> dict[str, float]:
    """Fold one psutil ``scputimes`` into semantic-convention ``cpu.mode`` -> seconds."""
    modes: dict[str, float] = {}
    for name, mode in _CPU_MODES.items():
        value = getattr(times, name, None)
        if value is not None:
            modes[mode] = modes.get(mode, 0.0) + float(value)
    return modes


def memory_states(vm: Any) -> dict[str, float]:
    """``system.memory.state`` -> bytes, summing to total where psutil gives buffers and cached."""
    buffers = getattr(vm, "buffers", None)
    cached = getattr(vm, "cached", None)
    if buffers is not None and cached is not None:
        used = max(vm.total - vm.free - buffers - cached, 0)
        return {"used": float(used), "free": float(vm.free), "buffers": float(buffers), "cached": float(cached)}
    return {"used": float(vm.used), "free": float(vm.free)}


# --------------------------------------------------------------------------- the metric table


def _cpu_time(s: SystemSnapshot) -> Iterator[Point]:
    for cpu, modes in enumerate(s.cpu_times or ()):
        for mode, seconds in modes.items():
            yield {"cpu.logical_number": cpu, "cpu.mode": mode}, seconds


def _cpu_utilization(s: SystemSnapshot) -> Iterator[Point]:
    """Each mode's share of the CPU time that passed since the previous collection (none on the first)."""
    if not s.cpu_times or not s.previous_cpu_times or len(s.cpu_times) != len(s.previous_cpu_times):
        return
    for cpu, (now, before) in enumerate(zip(s.cpu_times, s.previous_cpu_times, strict=False)):
        deltas = {mode: max(seconds - before.get(mode, seconds), 0.0) for mode, seconds in now.items()}
        elapsed = sum(deltas.values())
        if elapsed <= 0:
            continue
        for mode, delta in deltas.items():
            yield {"cpu.logical_number": cpu, "cpu.mode": mode}, delta / elapsed


def _memory_usage(s: SystemSnapshot) -> Iterator[Point]:
    for state, value in (s.memory or {}).items():
        yield {"system.memory.state": state}, value


def _memory_utilization(s: SystemSnapshot) -> Iterator[Point]:
    if s.memory and s.memory_total:
        for state, value in s.memory.items():
            yield {"system.memory.state": state}, value / s.memory_total


def _paging_usage(s: SystemSnapshot) -> Iterator[Point]:
    for state, value in (s.paging or {}).items():
        yield {"system.paging.state": state}, value


def _per_disk(read_field: str, write_field: str) -> Callable[[SystemSnapshot], Iterator[Point]]:
    def read(s: SystemSnapshot) -> Iterator[Point]:
        for device, counters in s.disk_io.items():
            yield {"system.device": device, "disk.io.direction": "read"}, getattr(counters, read_field)
            yield {"system.device": device, "disk.io.direction": "write"}, getattr(counters, write_field)

    return read


def _per_interface(transmit_field: str, receive_field: str) -> Callable[[SystemSnapshot], Iterator[Point]]:
    def read(s: SystemSnapshot) -> Iterator[Point]:
        for name, counters in s.network.items():
            yield {"network.interface.name": name, "network.io.direction": "transmit"}, getattr(counters, transmit_field)
            yield {"network.interface.name": name, "network.io.direction": "receive"}, getattr(counters, receive_field)

    return read


def _filesystem_states(fs: Filesystem) -> tuple[tuple[str, int], ...]:
    return (("used", fs.used), ("free", fs.free), ("reserved", fs.reserved))


def _filesystem_usage(s: SystemSnapshot) -> Iterator[Point]:
    for fs in s.filesystems:
        for state, value in _filesystem_states(fs):
            yield {**fs.attributes, "system.filesystem.state": state}, value


def _filesystem_utilization(s: SystemSnapshot) -> Iterator[Point]:
    for fs in s.filesystems:
        if fs.total > 0:
            for state, value in _filesystem_states(fs):
                yield {**fs.attributes, "system.filesystem.state": state}, value / fs.total


def _load_average(index: int) -> Callable[[SystemSnapshot], Iterator[Point]]:
    def read(s: SystemSnapshot) -> Iterator[Point]:
        if s.load_average is not None:
            yield {}, s.load_average[index]

    return read


def _process_count(s: SystemSnapshot) -> Iterator[Point]:
    for state, count in (s.process_states or {}).items():
        yield {"process.state": state}, count


_G, _C, _U = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER

SYSTEM_METRICS: tuple[MetricSpec[SystemSnapshot], ...] = (
    MetricSpec("system.cpu.time", _C, "s", "Seconds each logical CPU spent in each mode", _cpu_time),
    MetricSpec(
        "system.cpu.utilization", _G, "1",
        "Share of each logical CPU's time spent in each mode since the previous collection", _cpu_utilization,
    ),
    MetricSpec("system.memory.usage", _U, "By", "Physical memory in each state", _memory_usage),
    MetricSpec("system.memory.utilization", _G, "1", "Share of physical memory in each state", _memory_utilization),
    MetricSpec("system.paging.usage", _U, "By", "Swap space in use and free", _paging_usage),
    MetricSpec("system.disk.io", _C, "By", "Bytes read from and written to each disk", _per_disk("read_bytes", "write_bytes")),
    MetricSpec(
        "system.disk.operations", _C, "{operation}", "Read and write operations completed by each disk",
        _per_disk("read_count", "write_count"),
    ),
    MetricSpec("system.filesystem.usage", _U, "By", "Filesystem space used, free and reserved", _filesystem_usage),
    MetricSpec(
        "system.filesystem.utilization", _G, "1", "Share of filesystem space used, free and reserved",
        _filesystem_utilization,
    ),
    MetricSpec(
        "system.network.io", _C, "By", "Bytes transmitted and received by each interface",
        _per_interface("bytes_sent", "bytes_recv"),
    ),
    MetricSpec(
        "system.network.packets", _C, "{packet}", "Packets transmitted and received by each interface",
        _per_interface("packets_sent", "packets_recv"),
    ),
    MetricSpec(
        "system.network.errors", _C, "{error}", "Transmit and receive errors of each interface",
        _per_interface("errout", "errin"),
    ),
    MetricSpec(
        "system.network.dropped", _C, "{packet}", "Packets dropped on transmit and receive by each interface",
        _per_interface("dropout", "dropin"),
    ),
    MetricSpec("system.cpu.load_average.1m", _G, "{thread}", "Load average over 1 minute", _load_average(0)),
    MetricSpec("system.cpu.load_average.5m", _G, "{thread}", "Load average over 5 minutes", _load_average(1)),
    MetricSpec("system.cpu.load_average.15m", _G, "{thread}", "Load average over 15 minutes", _load_average(2)),
    MetricSpec("system.process.count", _U, "{process}", "Processes in each state", _process_count),
)


def metrics_from_table(
    specs: Iterable[MetricSpec[S]],
    sample: S,
    on_error: Callable[[str, BaseException], None],
    base_attributes: Attributes | None = None,
) -> list[Metric]:
    """Turn one sample into Metrics, row by row; a row that raises is reported to ``on_error`` and skipped."""
    out: list[Metric] = []
    for spec in specs:
        try:
            points = list(spec.read(sample))
        except Exception as exc:  # one broken row must not lose the others
            on_error(spec.name, exc)
            continue
        for attributes, value in points:
            attrs = {**base_attributes, **attributes} if base_attributes else dict(attributes)
            out.append(Metric(spec.name, spec.kind, float(value), spec.unit, spec.description, attrs))
    return out


# --------------------------------------------------------------------------- the collector


class _Unresponsive(Exception):
    pass


class SystemMetricsCollector(MetricCollectorPlugin):
    """Host metrics from psutil (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = SystemConfig

    def __init__(self) -> None:
        self._config: SystemConfig | None = None
        self._previous_cpu_times: Sequence[Mapping[str, float]] | None = None
        self._stuck_mounts: set[str] = set()
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self.read_errors = 0
        """Reads that failed since initialize (a section, a device or a metric row); each is also logged."""

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="System metrics",
            version="0.1.0",
            author="monbridge",
            description="CPU, memory, paging, disk, filesystem, network, load and process-count metrics of the host",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: SystemConfig = self.parse_config(config)
        set_procfs_path(cfg.procfs_path)
        if not os.path.isdir(cfg.rootfs_path):
            raise PluginError(f"rootfs_path {cfg.rootfs_path!r} is not a directory")
        self._config = cfg
        self._previous_cpu_times = None
        self._stuck_mounts = set()
        self._warned = set()
        self.read_errors = 0

    async def start(self) -> None:
        """Nothing to start: the supervisor schedules the collections."""

    async def stop(self) -> None:
        """Nothing runs between collections."""

    async def shutdown(self) -> None:
        """Forget the previous CPU sample (the only state kept between collections)."""
        self._previous_cpu_times = None

    async def collect_metrics(self) -> Sequence[Metric]:
        if self._config is None:
            raise PluginError(f"{PLUGIN_ID}: collect_metrics called before initialize")
        import asyncio  # here: validating a config that names this collector does not load asyncio

        snapshot = await asyncio.to_thread(self._snapshot, self._config)
        snapshot.previous_cpu_times = self._previous_cpu_times
        if snapshot.cpu_times is not None:
            self._previous_cpu_times = snapshot.cpu_times
        return metrics_from_table(SYSTEM_METRICS, snapshot, lambda name, exc: self._failed(f"metric {name}", exc))

    # ----------------------------------------------------------------- reading (worker thread)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Count a failed read and log it: a warning the first time for ``what``, debug after that."""
        with self._lock:
            self.read_errors += 1
            first = what not in self._warned
            self._warned.add(what)
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "system metrics: cannot read %s, skipped: %s: %s", what, type(exc).__name__, exc)

    def _read(self, what: str, fn: Callable[[], S]) -> S | None:
        try:
            return fn()
        except Exception as exc:
            self._failed(what, exc)
            return None

    def _snapshot(self, cfg: SystemConfig) -> SystemSnapshot:
        s = SystemSnapshot()
        s.cpu_times = self._read("cpu times", lambda: [cpu_modes(t) for t in psutil.cpu_times(percpu=True)])
        vm = self._read("memory", psutil.virtual_memory)
        if vm is not None:
            s.memory, s.memory_total = memory_states(vm), float(vm.total)
        swap = self._read("swap", psutil.swap_memory)
        if swap is not None:
            s.paging = {"used": float(swap.used), "free": float(swap.free)}
        disks = self._read("disk io", lambda: psutil.disk_io_counters(perdisk=True)) or {}
        s.disk_io = {d: c for d, c in disks.items() if cfg.devices.allows(d)}
        s.filesystems = self._filesystems(cfg)
        nics = self._read("network io", lambda: psutil.net_io_counters(pernic=True)) or {}
        s.network = {n: c for n, c in nics.items() if cfg.interfaces.allows(n)}
        s.load_average = self._read("load average", psutil.getloadavg)
        s.process_states = self._read("process states", _process_states)
        return s

    def _filesystems(self, cfg: SystemConfig) -> list[Filesystem]:
        """The filtered mounts, stat'ed. Own mount namespace (psutil) by default; the host's when
        ``rootfs_path`` or ``procfs_path`` is not the default (see the module docstring)."""
        partitions: Sequence[Any]  # psutil sdiskpart or Partition: device, mountpoint, fstype, opts
        if cfg.rootfs_path == "/" and cfg.procfs_path == "/proc":
            partitions = self._read("filesystems", lambda: psutil.disk_partitions(all=True)) or []
        else:
            mounts = os.path.join(cfg.procfs_path, "1", "mounts")
            partitions = self._read(f"filesystems ({mounts})", lambda: read_mounts(mounts)) or []
        chosen: dict[str, Any] = {}  # by mount point; a later mount hides an earlier one there
        for p in partitions:
            if cfg.filesystem_types.allows(p.fstype) and cfg.mountpoints.allows(p.mountpoint):
                chosen.pop(p.mountpoint, None)
                chosen[p.mountpoint] = p
        out: list[Filesystem] = []
        for p in chosen.values():
            try:
                usage = self._statfs(os.path.join(cfg.rootfs_path, p.mountpoint.lstrip("/")), cfg.filesystem_timeout)
            except Exception as exc:  # PermissionError, a vanished mount, a hung NFS server
                self._failed(f"filesystem {p.mountpoint}", exc)
                continue
            mode = "ro" if "ro" in p.opts.split(",") else "rw"
            out.append(Filesystem(p.device, p.mountpoint, p.fstype, mode, usage.total, usage.used, usage.free))
        return out

    def _statfs(self, path: str, timeout: float) -> Any:
        """``psutil.disk_usage(path)`` in a daemon thread, so a hung mount costs ``timeout`` once, then is
        skipped until its statfs returns (a non-daemon thread stuck there would also block interpreter exit)."""
        if path in self._stuck_mounts:
            raise _Unresponsive("statfs has not returned from an earlier collection; skipped until it does")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(psutil.disk_usage(path))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name="monbridge-statfs", daemon=True).start()
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            self._stuck_mounts.add(path)
            future.add_done_callback(lambda _: self._stuck_mounts.discard(path))
            raise _Unresponsive(f"statfs did not return within {timeout}s; skipped until it does") from None


def _process_states() -> dict[str, int]:
    counts = dict.fromkeys(("running", "sleeping", "stopped", "defunct"), 0)
    for proc in psutil.process_iter(["status"]):
        status = proc.info.get("status")
        if status is not None:
            state = _PROCESS_STATES.get(status, "sleeping")  # disk-sleep, idle, parked, waiting, ...
            counts[state] += 1
    return counts
