"""Per-process metrics (CPU time, memory, threads, open file descriptors) for processes picked by
name, command-line and user globs, read with psutil and named by the OpenTelemetry process
semantic conventions. Opt-in: a host has many processes, and each is a set of series.

Table-driven like ``collectors.system``: each metric is one row of ``PROCESS_METRICS``. Processes
that exit or deny access while being read are skipped; a process that exited is simply absent
from the next collection. At most ``max_processes`` are reported (lowest pids first), and how
many were left out is logged and kept in ``left_out``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

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
from collectors.config import ProcessConfig, ProcessMatch
from collectors.system import MetricSpec, Point, metrics_from_table, set_procfs_path

__all__ = [
    "PLUGIN_ID",
    "PROCESS_METRICS",
    "ProcessConfig",
    "ProcessMatch",
    "ProcessMetricsCollector",
    "ProcessSample",
]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.process", PluginType.METRIC_COLLECTOR)

log = logging.getLogger("monbridge.collectors.process")

T = TypeVar("T")

# A process that is gone (ZombieProcess is a NoSuchProcess) or can no longer be read as a whole.
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)


# --------------------------------------------------------------------------- samples and the table


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process as read in one collection; ``None`` where access was denied."""

    pid: int
    name: str
    owner: str | None
    command: str | None
    cpu_times: Any | None  # psutil pcputimes
    memory: Any | None  # psutil pmem
    num_threads: int | None
    num_fds: int | None

    @property
    def attributes(self) -> dict[str, AttributeValue]:
        attrs: dict[str, AttributeValue] = {"process.pid": self.pid, "process.executable.name": self.name}
        if self.owner is not None:
            attrs["process.owner"] = self.owner
        if self.command:
            attrs["process.command"] = self.command
        return attrs


def _cpu_time(p: ProcessSample) -> Iterator[Point]:
    if p.cpu_times is not None:
        yield {"cpu.mode": "user"}, p.cpu_times.user
        yield {"cpu.mode": "system"}, p.cpu_times.system


def _one(get: Callable[[ProcessSample], float | None]) -> Callable[[ProcessSample], Iterator[Point]]:
    def read(p: ProcessSample) -> Iterator[Point]:
        value = get(p)
        if value is not None:
            yield {}, value

    return read


_C, _U = MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER

PROCESS_METRICS: tuple[MetricSpec[ProcessSample], ...] = (
    MetricSpec("process.cpu.time", _C, "s", "CPU seconds the process spent in user and system mode", _cpu_time),
    MetricSpec(
        "process.memory.usage", _U, "By", "Resident set size of the process",
        _one(lambda p: p.memory.rss if p.memory is not None else None),
    ),
    MetricSpec(
        "process.memory.virtual", _U, "By", "Virtual memory size of the process",
        _one(lambda p: p.memory.vms if p.memory is not None else None),
    ),
    MetricSpec("process.thread.count", _U, "{thread}", "Threads of the process", _one(lambda p: p.num_threads)),
    MetricSpec(
        "process.open_file_descriptor.count", _U, "{file_descriptor}", "File descriptors the process has open",
        _one(lambda p: p.num_fds),
    ),
)


# --------------------------------------------------------------------------- the collector


def _denied_is_none(read: Callable[[], T]) -> T | None:
    """Run one per-field read; AccessDenied on that field leaves it out (NoSuchProcess propagates)."""
    try:
        return read()
    except psutil.AccessDenied:
        return None


class ProcessMetricsCollector(MetricCollectorPlugin):
    """Per-process metrics from psutil (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = ProcessConfig

    def __init__(self) -> None:
        self._config: ProcessConfig | None = None
        self.left_out = 0
        """Matching processes left out of the last collection by ``max_processes``."""
        self.read_errors = 0
        """Metric rows that failed since initialize."""

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="Process metrics",
            version="0.1.0",
            author="monbridge",
            description="CPU time, memory, threads and open file descriptors of selected processes",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def initialize(self, config: Mapping[str, Any]) -> None:
        cfg: ProcessConfig = self.parse_config(config)
        set_procfs_path(cfg.procfs_path)
        self._config = cfg
        self.left_out = 0
        self.read_errors = 0

    async def start(self) -> None:
        """Nothing to start: the supervisor schedules the collections."""

    async def stop(self) -> None:
        """Nothing runs between collections."""

    async def shutdown(self) -> None:
        """No resources are held between collections."""

    async def collect_metrics(self) -> Sequence[Metric]:
        if self._config is None:
            raise PluginError(f"{PLUGIN_ID}: collect_metrics called before initialize")
        samples = await asyncio.to_thread(self._snapshot, self._config)
        out: list[Metric] = []
        for sample in samples:
            out.extend(metrics_from_table(PROCESS_METRICS, sample, self._row_failed, sample.attributes))
        return out

    def _row_failed(self, name: str, exc: BaseException) -> None:
        self.read_errors += 1
        log.warning("process metrics: cannot compute %s, skipped: %s: %s", name, type(exc).__name__, exc)

    # ----------------------------------------------------------------- reading (worker thread)

    def _snapshot(self, cfg: ProcessConfig) -> list[ProcessSample]:
        matched: list[psutil.Process] = []
        for proc in psutil.process_iter():
            try:
                if _matches(proc, cfg.match):
                    matched.append(proc)
            except _GONE:
                continue
        matched.sort(key=lambda p: p.pid)
        left_out = max(len(matched) - cfg.max_processes, 0)
        if left_out and left_out != self.left_out:
            log.warning(
                "process metrics: max_processes=%d reached, %d matching processes left out (lowest pids kept)",
                cfg.max_processes,
                left_out,
            )
        elif self.left_out and not left_out:
            log.info("process metrics: all %d matching processes reported again", len(matched))
        self.left_out = left_out
        samples: list[ProcessSample] = []
        for proc in matched[: cfg.max_processes]:
            try:
                sample = _sample(proc)
            except _GONE:  # exited (or became a zombie) since it was matched
                continue
            if sample is not None:
                samples.append(sample)
        return samples


def _matches(proc: psutil.Process, entries: Sequence[ProcessMatch]) -> bool:
    """Whether ``proc`` matches any entry (no entries: every process). Fields are read only when an
    entry needs them; a field that cannot be read (AccessDenied) matches no glob."""
    if not entries:
        return True
    cache: dict[str, str | None] = {}

    def get(key: str) -> str | None:
        if key not in cache:
            if key == "name":
                cache[key] = _denied_is_none(proc.name)
            elif key == "cmdline":
                argv = _denied_is_none(proc.cmdline)
                cache[key] = " ".join(argv) if argv is not None else None
            else:
                cache[key] = _denied_is_none(proc.username)
        return cache[key]

    for entry in entries:
        ok = True
        for key, pattern in (("name", entry.name), ("cmdline", entry.cmdline), ("user", entry.user)):
            if pattern is None:
                continue
            value = get(key)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                ok = False
                break
        if ok:
            return True
    return False


def _sample(proc: psutil.Process) -> ProcessSample | None:
    """Read one process; None for a zombie. Raises NoSuchProcess if it exits meanwhile."""
    with proc.oneshot():
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        argv = _denied_is_none(proc.cmdline)
        num_fds = getattr(proc, "num_fds", None)  # not on Windows
        return ProcessSample(
            pid=proc.pid,
            name=proc.name(),
            owner=_denied_is_none(proc.username),
            command=argv[0] if argv else None,
            cpu_times=_denied_is_none(proc.cpu_times),
            memory=_denied_is_none(proc.memory_info),
            num_threads=_denied_is_none(proc.num_threads),
            num_fds=_denied_is_none(num_fds) if num_fds is not None else None,
        )
