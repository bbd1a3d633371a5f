"""The WASM plugin host: a plugin as a WebAssembly module run by wasmtime, limited and sandboxed.

``WasmPlugin(module, manifest, limits, grants)`` is a plugin of the manifest's ``plugin_type``
(``metric_collector``: a ``MetricCollectorPlugin``; ``alert_processor``: an
``AlertProcessorPlugin``; ``integration``: a ``MonitoringIntegrationPlugin``; dashboard components
are not run in WASM), so the supervisor runs it like any other. Every call into the guest
runs in the plugin's own thread, off the event loop, under these limits:

- time: the engine has epoch interruption; each call's deadline is the plugin's ``timeout``
  (a collector's ``timeout``, default its ``collection_interval``; an integration's ``timeout``
  or ``interval``; else 30 s), for instantiation and ``init`` too: guest code still running then
  traps and the call raises ``LimitExceeded(TIMEOUT)``. The epoch advances when a call starts and
  at each running call's deadline (one thread, asleep in between), so deadlines hold to a few
  milliseconds with no periodic wake-ups. A host function waiting for a fetch waits no longer than
  the deadline: the call is stopped then too.
- CPU: the thread CPU time of every call (guest and host functions) is accounted over
  ``limits.cpu_window`` (at most ``cpu_percent`` % of a core) and ``limits.cpu_burst_window``
  (``cpu_burst_percent`` %); a call that takes the plugin over either raises
  ``LimitExceeded(CPU_LIMIT)``. Each call also gets a fuel budget (wasmtime's ``consume_fuel``):
  what is left of both budgets at the fuel the cheapest loop burns per CPU second (measured once
  per process), so a spinning guest runs out of fuel within its CPU budget and traps, also
  ``CPU_LIMIT``. (Code doing more per instruction burns fuel faster and runs out sooner, up to
  ~10x: fuel bounds guest instructions, the thread CPU time everything.) The plugin's thread runs
  at nice +10, so a guest spinning until it is stopped takes CPU from the event loop only when
  the loop leaves it.
- memory: the store's limits: ``limits.memory_mb`` MiB of linear memory, one instance, one
  memory, one table of at most 10 000 elements. ``memory.grow`` beyond that fails (returns -1);
  a module declaring more, or a call that traps or fails while its memory is within a tenth (at
  least 1 MiB) of the limit (a grow has failed), raises ``LimitExceeded(MEMORY_LIMIT)``. What the
  host holds for a guest is bounded too (see ``WasmBounds``).
- any other trap raises ``LimitExceeded(CRASHED)`` with the trap's message; so does a failure of
  a host function (a bug of the host, logged with its traceback).

After a ``LimitExceeded`` the instance is dropped (its memory freed) and every later call raises
``PluginError``: the supervisor restarts the plugin with a new instance.

Sandbox: WASI preview 1 with no arguments, no environment, no stdin, stdout and stderr captured
into the agent's log (at most 4 KiB per call, the rest dropped and counted), and no preopened
directory but those of ``grants.paths`` (each at its own path): a file can be opened only inside
them. A module may import only the host functions below and WASI preview 1 but ``poll_oneoff``
(a sleep in the host would outlast the call's deadline: the epoch interrupts guest code only);
any other import is refused at load, naming it. WASI preview 1 has no call that runs a program or opens a socket of its
own (``sock_*`` work only on preopened sockets, and none are given), so a WASM plugin has no
shell and no network but ``http_fetch``.

ABI version 1
=============

All integers are ``i32`` unless said otherwise; pointers and lengths are offsets and byte counts
in the guest's exported memory; strings are UTF-8 (not NUL-terminated). Every pointer/length pair
the guest passes is checked against the memory's size and against the bound of what it carries.

Exports (the guest provides)
----------------------------

``memory``                            the linear memory (required)
``monbridge_abi_version() -> i32``    must return 1 (checked when the plugin initializes)
``alloc(size) -> ptr``                memory of ``size`` bytes the host may write to (config, an
                                      alert, a batch); 0 when there is none. The memory stays the
                                      guest's: the host never frees it, and the guest may reuse
                                      it once the call it was allocated for returned
``init(ptr, len) -> i32``             the plugin's config as JSON (``len`` bytes at ``ptr``, which
                                      ``alloc`` returned); 0 is success, any other value an error
``shutdown() -> i32``                 optional; called once when the plugin stops
collectors (``metric_collector``):
``collect() -> i32``                  one collection: the metrics ``emit_metric`` emitted during
                                      the call are its result; 0 is success
alert processors (``alert_processor``):
``process_alert(ptr, len) -> i32``    one alert as JSON: ``{"id", "name", "severity", "state",
                                      "labels": {..}, "annotations": {..}, "value"}``; the guest
                                      changes it with ``alert_set``; 0 is success
``acknowledge(ptr, len) -> i32``      optional: an alert id was acknowledged
``resolve(ptr, len) -> i32``          optional: an alert id was resolved
integrations (``integration``), each optional (a missing one does nothing):
``import_metrics() -> i32``           one import round: the metrics ``emit_metric(s)`` emitted
                                      during the call are imported; 0 is success
``import_alerts() -> i32``            the alerts ``raise_alert`` raised during the call are imported
``export_metrics(ptr, len) -> i32``   the round's series, as ``emit_metrics`` records (numbers
                                      only: histograms and summaries are left out and counted);
                                      0 is success, 2 a permanent failure, others retryable
``export_alerts(ptr, len) -> i32``    alerts as a JSON array of ``process_alert``'s objects

A nonzero return of an export is a failed call (``PluginError`` naming the export and the value).

Imports (module ``monbridge``; the host provides)
-------------------------------------------------

``emit_metric(kind, name_ptr, name_len, value: f64, attrs_ptr, attrs_len) -> i32``
    One series' value. ``kind``: 0 gauge, 1 counter (cumulative, monotonic), 2 up-down counter.
    ``name``: at most 255 bytes of ``[A-Za-z_:][A-Za-z0-9_.:/-]*``. Attributes: pairs of key and
    value, each of the two followed by a NUL byte (``"host\\0db1\\0role\\0primary\\0"``), at most
    4 KiB and 32 pairs; keys as names, values any UTF-8 without NUL. At most ``max_metrics``
    (default 20 000) per collection; one beyond returns ``ERR_LIMIT`` and is counted.
    Only during ``collect`` and ``import_metrics``.
``emit_metrics(ptr, len) -> i32``
    Many series in one call (a host call costs far more than a record): ``len`` bytes of records
    back to back, each ``kind: u8 | name_len: u8 | attrs_len: u16 | value: f64 | name | attrs``
    (little-endian, unaligned; name and attributes as for ``emit_metric``), at most 16 MiB.
    Returns the number of records taken. A malformed record (a bad kind, name or attributes, a
    record running past ``len``) is ``ERR_INVALID`` and none of the batch is taken; records
    beyond ``max_metrics`` are dropped and counted, those before are taken, and the answer is
    ``ERR_LIMIT``. Only during ``collect`` and ``import_metrics``.
``raise_alert(name_ptr, name_len, severity_ptr, severity_len, labels_ptr, labels_len,
annotations_ptr, annotations_len) -> i32``
    Fire an alert (labels and annotations encoded as attributes): in an alert processor into the
    alert engine (``fire``); in an integration's ``import_alerts`` as what it imports. At most
    100 per call.
``alert_set(field, key_ptr, key_len, value_ptr, value_len) -> i32``
    During ``process_alert``: set a label (``field`` 0), an annotation (1) or the severity (2;
    the key is ignored) of the alert being processed.
``config_value(key_ptr, key_len, buf_ptr, buf_cap) -> i32``
    The value of the top-level config key: a string as it is, any other value as JSON. Copies at
    most ``buf_cap`` bytes to ``buf_ptr`` and returns the value's whole length (call again with a
    larger buffer when it is larger than ``buf_cap``); ``ERR_NOT_FOUND`` when there is no such key.
``log(level, ptr, len) -> i32``
    A log line of the plugin: level 0 debug, 1 info, 2 warning, 3 error. At most 1 KiB (the rest
    is cut) and 20 lines per 10 s (beyond: ``ERR_LIMIT``, dropped and counted).
``http_fetch(url_ptr, url_len) -> i32``
    Start a GET of an ``http://`` or ``https://`` URL (at most 2 KiB) on a connection of its own;
    returns a handle (>= 0). The URL's host (and port) must be in ``grants.hosts``
    (``ERR_NOT_GRANTED``, logged and counted); at most ``limits.connections`` fetches are open at
    once (``ERR_CONNECTIONS``, logged and counted): a fetch counts from ``http_fetch`` until its
    connection is closed and its handle is (``http_close``, or the call's end). No redirects are
    followed; a fetch (connect, request, every byte of the answer) is over within 10 s and the
    call's deadline, however slowly the peer sends; its body is at most 1 MiB (``ERR_TOO_LARGE``).
``http_status(handle) -> i32``
    Wait for the fetch: the HTTP status, or an error code. A wait reaching the call's deadline
    stops the call (``TIMEOUT``).
``http_response(handle, buf_ptr, buf_cap) -> i32``
    Wait for the fetch (as ``http_status``): copies at most ``buf_cap`` bytes of the body,
    returns the body's length.
``http_close(handle) -> i32``
    Forget the handle. Handles are per call: all are forgotten when the call into the guest ends.

Error codes (negative returns of the imports)
---------------------------------------------

==  ====================  =========================================================
-1  ``ERR_BOUNDS``        a pointer/length outside the memory
-2  ``ERR_INVALID``       bad UTF-8, kind, name, attribute encoding or handle
-3  ``ERR_TOO_LARGE``     a string, an encoding or a response body beyond its bound
-4  ``ERR_LIMIT``         too many metrics, alerts or log lines
-5  ``ERR_NOT_GRANTED``   the host is not in ``grants.hosts``
-6  ``ERR_CONNECTIONS``   ``limits.connections`` fetches are open
-7  ``ERR_NETWORK``       the fetch failed (connect, TLS, protocol)
-8  ``ERR_TIMEOUT``       the fetch's 10 s passed
-9  ``ERR_NOT_FOUND``     no such config key
-10 ``ERR_UNSUPPORTED``   the import is not available in this export or plugin type
==  ====================  =========================================================

The example is ``collectors/wasm/example_collector.wat``. ``wasmtime`` is imported when a WASM
plugin is first built, never by reading a config.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import math
import os
import re
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ConfigDict

from bridge.api import (
    Alert,
    AlertProcessorPlugin,
    AlertState,
    CollectorConfig,
    ExportResult,
    IntegrationConfig,
    Metric,
    MetricBatch,
    MetricCollectorPlugin,
    MetricKind,
    MonitoringIntegrationPlugin,
    Plugin,
    PluginConfig,
    PluginError,
    PluginMetadata,
    PluginType,
)
from bridge.isolation import Grants, LimitExceeded, Limits, StopReason, host_port

if TYPE_CHECKING:
    import wasmtime

__all__ = ["ABI_VERSION", "WasmBounds", "WasmPlugin", "wasm_plugin_factory"]

log = logging.getLogger("bridge.wasmhost")

ABI_VERSION = 1
IMPORT_MODULE = "monbridge"
WASI_MODULE = "wasi_snapshot_preview1"

ERR_BOUNDS, ERR_INVALID, ERR_TOO_LARGE, ERR_LIMIT, ERR_NOT_GRANTED = -1, -2, -3, -4, -5
ERR_CONNECTIONS, ERR_NETWORK, ERR_TIMEOUT, ERR_NOT_FOUND, ERR_UNSUPPORTED = -6, -7, -8, -9, -10

_KINDS = (MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.UP_DOWN_COUNTER)
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_.:/-]*\Z")
_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
_PAGE = 65536
_TICK = 0.005  # seconds an epoch stands for (deadlines are in epochs)
_RECORD = struct.Struct("<BBHd")  # an emit_metrics record's head: kind, name length, attributes' length, value
_NAME_CACHE = 4096  # names and attribute keys checked once per plugin instance
_NICE = 10  # how much lower a plugin thread's priority is than the event loop's
#: WASI preview 1's functions (wasi_snapshot_preview1.witx).
_WASI_PREVIEW1 = (
    "args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "clock_res_get", "clock_time_get",
    "fd_advise", "fd_allocate", "fd_close", "fd_datasync", "fd_fdstat_get", "fd_fdstat_set_flags",
    "fd_fdstat_set_rights", "fd_filestat_get", "fd_filestat_set_size", "fd_filestat_set_times", "fd_pread",
    "fd_prestat_get", "fd_prestat_dir_name", "fd_pwrite", "fd_read", "fd_readdir", "fd_renumber", "fd_seek",
    "fd_sync", "fd_tell", "fd_write", "path_create_directory", "path_filestat_get", "path_filestat_set_times",
    "path_link", "path_open", "path_readlink", "path_remove_directory", "path_rename", "path_symlink",
    "path_unlink_file", "poll_oneoff", "proc_exit", "proc_raise", "sched_yield", "random_get", "sock_accept",
    "sock_recv", "sock_send", "sock_shutdown",
)
#: WASI calls a plugin may not import, and why.
_REFUSED_WASI = {
    "poll_oneoff": "it sleeps in the host, where the call's deadline cannot interrupt it (a plugin is "
                   "scheduled by the agent and does not wait)",
}
_EMITTING = frozenset(("collect", "import_metrics"))  # the exports during which metrics may be emitted


@dataclass(frozen=True, slots=True)
class WasmBounds:
    """What a guest may hand the host, per call (see the ABI in the module docstring)."""

    max_metrics: int = 20_000
    max_batch_bytes: int = 16 << 20
    max_name: int = 255
    max_attrs_bytes: int = 4096
    max_attrs: int = 32
    max_alerts: int = 100
    max_log_bytes: int = 1024
    log_lines: int = 20  # per log_window seconds
    log_window: float = 10.0
    max_output: int = 4096  # captured stdout+stderr per call
    max_url: int = 2048
    http_timeout: float = 10.0
    http_max_body: int = 1 << 20
    max_config: int = 1 << 20


# --------------------------------------------------------------------------- the engine


class _Engine:
    """The one wasmtime engine (fuel and epochs), its compiled modules and its epoch ticker."""

    def __init__(self) -> None:
        import wasmtime

        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self._modules: dict[str, wasmtime.Module] = {}
        self._wasi_names: frozenset[str] | None = None
        self._lock = threading.Lock()
        self._deadlines: dict[object, float] = {}  # of the calls running
        self._last = time.monotonic()  # when the epoch was last advanced
        self._wake = threading.Condition(self._lock)
        # Started here, by the thread building the first WASM plugin (the event loop's): a thread
        # started by a plugin's thread would inherit its lower priority.
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()
        self.fuel_per_second = self._measure_fuel()

    def wasi_names(self) -> frozenset[str]:
        """The functions of WASI preview 1 the host provides."""
        if self._wasi_names is None:
            import wasmtime

            store, linker = wasmtime.Store(self.engine), wasmtime.Linker(self.engine)
            linker.define_wasi()
            names = set()
            for name in _WASI_PREVIEW1:
                with contextlib.suppress(wasmtime.WasmtimeError):
                    linker.get(store, WASI_MODULE, name)
                    names.add(name)
            self._wasi_names = frozenset(names)
        return self._wasi_names

    def module(self, code: bytes) -> wasmtime.Module:
        import wasmtime

        key = hashlib.sha256(code).hexdigest()
        with self._lock:
            cached = self._modules.get(key)
        if cached is None:
            cached = wasmtime.Module(self.engine, code)
            with self._lock:
                cached = self._modules.setdefault(key, cached)
        return cached

    def _measure_fuel(self) -> float:
        """Fuel burnt per CPU second by the cheapest loop there is (one branch per iteration, one
        fuel): converted at this rate, a call's fuel never outlasts its CPU budget. Code doing more
        per instruction burns fuel faster (up to ~10x here) and runs out sooner; the thread CPU
        accounting after each call bounds the rest (host functions burn no fuel)."""
        import wasmtime

        store = wasmtime.Store(self.engine)
        store.set_epoch_deadline(1 << 40)
        module = wasmtime.Module(self.engine, bytes(wasmtime.wat2wasm('(module (func (export "spin") (loop (br 0))))')))
        spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
        assert isinstance(spin, wasmtime.Func)
        fuel = 20_000_000
        store.set_fuel(fuel)
        t0 = time.thread_time()
        try:
            spin(store)
        except wasmtime.Trap:
            pass  # out of fuel, as meant
        return fuel / max(time.thread_time() - t0, 1e-4)

    @contextlib.contextmanager
    def running(self, deadline: float) -> Iterator[None]:
        """While a call with this (monotonic) deadline runs: the epoch is current when it starts,
        and the ticker wakes at its deadline at the latest."""
        token = object()
        with self._lock:
            self._advance()
            self._deadlines[token] = deadline
            self._wake.notify()
        try:
            yield
        finally:
            with self._lock:
                del self._deadlines[token]

    def _advance(self) -> None:
        """Bring the epoch up to the ``_TICK`` s of monotonic time since the last advance (with
        the lock held). Between advances it stands still: a store's deadline is set right after
        one (``running``), and the ticker advances at every deadline, so a guest is interrupted
        at its deadline (plus the ticker's wake-up), never before, with no periodic wake-ups."""
        now = time.monotonic()
        if not self._deadlines:
            self._last = now  # idle time is not counted
            return
        missed = int((now - self._last) / _TICK)
        self._last += missed * _TICK
        for _ in range(missed):
            self.engine.increment_epoch()

    def _tick(self) -> None:
        with self._lock:
            while True:
                if self._deadlines:
                    self._wake.wait(max(min(self._deadlines.values()) - time.monotonic(), 0.0) + _TICK)
                else:
                    self._wake.wait()
                self._advance()


_ENGINE: _Engine | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Engine:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Engine()
        return _ENGINE


# --------------------------------------------------------------------------- config models


class WasmCollectorConfig(CollectorConfig):
    """A WASM collector's config: the schedule keys plus whatever the module reads."""

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True, defer_build=True)


class WasmPluginConfig(PluginConfig):
    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True, defer_build=True)
    timeout: float = 30.0


# --------------------------------------------------------------------------- the ABI's imports

_I32, _F64 = "i32", "f64"
#: name: (params, results) of every host function.
_IMPORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "emit_metric": ((_I32, _I32, _I32, _F64, _I32, _I32), (_I32,)),
    "emit_metrics": ((_I32, _I32), (_I32,)),
    "raise_alert": ((_I32,) * 8, (_I32,)),
    "alert_set": ((_I32,) * 5, (_I32,)),
    "config_value": ((_I32,) * 4, (_I32,)),
    "log": ((_I32,) * 3, (_I32,)),
    "http_fetch": ((_I32,) * 2, (_I32,)),
    "http_status": ((_I32,), (_I32,)),
    "http_response": ((_I32,) * 3, (_I32,)),
    "http_close": ((_I32,), (_I32,)),
}


class _GuestError(Exception):
    """A host function's answer to bad input: its error code."""

    def __init__(self, code: int) -> None:
        self.code = code


class _Fetch:
    """One ``http_fetch``: its thread holds one of the plugin's connection slots until it is done."""

    def __init__(self) -> None:
        self.future: Future[tuple[int, bytes]] = Future()


@dataclass(slots=True)
class _Call:
    """What one call into the guest gathers."""

    export: str
    deadline: float
    metrics: list[Metric] = dataclasses.field(default_factory=list)
    alerts: list[Alert] = dataclasses.field(default_factory=list)
    alert: Alert | None = None
    fetches: dict[int, _Fetch] = dataclasses.field(default_factory=dict)
    timed_out: bool = False  # a host function's wait reached the deadline
    output: bytearray = dataclasses.field(default_factory=bytearray)


class WasmPlugin(Plugin):
    """A plugin whose code is a WASM module (see the module docstring for the ABI and the limits).

    ``WasmPlugin(module, manifest, limits, grants)`` builds the plugin class of the manifest's
    ``plugin_type``; a module that does not compile, imports what the host does not provide or
    lacks an export of its type is refused here (``PluginError`` naming it)."""

    _by_type: ClassVar[dict[PluginType, type[WasmPlugin]]] = {}
    exports_required: ClassVar[tuple[str, ...]] = ()

    def __new__(cls, module: bytes, manifest: Mapping[str, Any], limits: Limits, grants: Grants,
                bounds: WasmBounds | None = None) -> WasmPlugin:
        if cls is WasmPlugin:
            try:
                plugin_type = PluginType(str(manifest.get("plugin_type")))
            except ValueError:
                raise PluginError(f"WASM plugin {manifest.get('id')!r}: plugin_type "
                                  f"{manifest.get('plugin_type')!r} is not one of the plugin types") from None
            sub = WasmPlugin._by_type.get(plugin_type)
            if sub is None:
                raise PluginError(f"WASM plugin {manifest.get('id')!r}: the WASM host does not run "
                                  f"{plugin_type.value} plugins")
            cls = sub
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        WasmPlugin._by_type[cls.plugin_type] = cls

    def __init__(self, module: bytes, manifest: Mapping[str, Any], limits: Limits, grants: Grants,
                 bounds: WasmBounds | None = None) -> None:
        self.id = str(manifest.get("id", "?"))
        self._meta = PluginMetadata(id=self.id, name=str(manifest.get("name", self.id)),
                                    version=str(manifest.get("version", "")), author=str(manifest.get("author", "")),
                                    description=str(manifest.get("description", "")), plugin_type=self.plugin_type)
        self.limits, self.grants, self.bounds = limits, grants, bounds or WasmBounds()
        #: Refusals and drops of this instance: refused_hosts, refused_connections, dropped_metrics,
        #: dropped_logs, dropped_output, rejected_calls (host calls answered with an error code),
        #: unexported_metrics (an integration's series the ABI cannot carry: histograms, summaries).
        self.counters: dict[str, int] = dict.fromkeys(
            ("refused_hosts", "refused_connections", "dropped_metrics", "dropped_logs", "dropped_output",
             "rejected_calls", "unexported_metrics"), 0)
        self._grants = [host_port(h) for h in grants.hosts]
        self._eng = _engine()
        try:
            self._module = self._eng.module(module)
        except Exception as e:  # wasmtime.WasmtimeError: not a valid module
            raise PluginError(f"WASM plugin {self.id}: the module does not compile: {e}") from None
        self._check_module()
        self._config: Mapping[str, Any] = {}
        self._timeout = 30.0
        self._cpu: deque[tuple[float, float]] = deque()  # (monotonic end, CPU seconds) per call
        self._log_times: deque[float] = deque()
        self._slots = threading.BoundedSemaphore(limits.connections) if limits.connections else None
        self._executor: ThreadPoolExecutor | None = None
        self._store: wasmtime.Store | None = None
        self._instance: wasmtime.Instance | None = None
        self._memory: wasmtime.Memory | None = None
        self._call: _Call | None = None
        self._stopped: str | None = None
        self._names: dict[str, str] = {}  # attribute keys already checked (at most _NAME_CACHE)
        self._batch_names: dict[bytes, str] = {}  # emit_metrics names already checked, by their bytes

    # ------------------------------------------------------------------ load-time checks

    def _check_module(self) -> None:
        import wasmtime

        for imp in self._module.imports:
            name = f"{imp.module}.{imp.name}"
            if imp.module == IMPORT_MODULE and imp.name in _IMPORTS:
                ty = imp.type
                params, results = _IMPORTS[imp.name]
                if not isinstance(ty, wasmtime.FuncType) or (
                        tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)) != (params, results):
                    raise PluginError(f"WASM plugin {self.id}: import {name} has the wrong type "
                                      f"(expected ({', '.join(params)}) -> {', '.join(results)})")
            elif imp.module == WASI_MODULE and imp.name in _REFUSED_WASI:
                raise PluginError(f"WASM plugin {self.id}: the module imports {name}, which the WASM host "
                                  f"refuses: {_REFUSED_WASI[imp.name]}")
            elif imp.module != WASI_MODULE or imp.name not in self._eng.wasi_names():
                raise PluginError(f"WASM plugin {self.id}: the module imports {name}, which the WASM host "
                                  "does not provide")
        exports = {e.name: e.type for e in self._module.exports}
        missing = [e for e in ("memory", "monbridge_abi_version", "alloc", "init", *self.exports_required)
                   if e not in exports]
        if missing:
            raise PluginError(f"WASM plugin {self.id}: the module does not export {', '.join(missing)} "
                              f"(ABI version {ABI_VERSION}, {self.plugin_type.value})")
        if not isinstance(exports["memory"], wasmtime.MemoryType):
            raise PluginError(f"WASM plugin {self.id}: the export memory is not a memory")
        for name in ("monbridge_abi_version", "alloc", "init", *self.exports_required):
            if not isinstance(exports[name], wasmtime.FuncType):
                raise PluginError(f"WASM plugin {self.id}: the export {name} is not a function")

    # ------------------------------------------------------------------ the plugin API

    def metadata(self) -> PluginMetadata:
        return self._meta

    async def initialize(self, config: Mapping[str, Any]) -> None:
        parsed = config if isinstance(config, PluginConfig) else self.parse_config(config)
        self._timeout = float(getattr(parsed, "timeout", None) or getattr(parsed, "collection_interval", None) or 30.0)
        self._config = parsed.model_dump() if isinstance(parsed, PluginConfig) else dict(config)
        data = json.dumps(self._config, separators=(",", ":")).encode()
        if len(data) > self.bounds.max_config:
            raise PluginError(f"WASM plugin {self.id}: its config is {len(data)} bytes as JSON "
                              f"(at most {self.bounds.max_config})")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"wasm:{self.id}", initializer=_lower_priority)
        await self._run("init", lambda call: self._init(call, data))

    async def shutdown(self, timeout: float | None = None) -> None:
        """The guest's ``shutdown`` when it has one, then the instance is dropped, in the plugin's
        thread after any call still running there (one the supervisor gave up on ends by its
        deadline)."""
        if self._store is not None and self._stopped is None and self._has_export("shutdown"):
            try:
                await self._run("shutdown", lambda call: self._export_status(call, "shutdown"))
            except (LimitExceeded, PluginError) as e:
                log.warning("WASM plugin %s: shutdown failed: %s", self.id, e)
        if self._executor is None:
            self._drop("shut down")
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._drop, "shut down")
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ calls into the guest

    async def _run(self, export: str, body: Callable[[_Call], Any]) -> Any:
        if self._stopped is not None:
            raise PluginError(f"WASM plugin {self.id} is stopped ({self._stopped})")
        if self._executor is None:
            raise PluginError(f"WASM plugin {self.id} is not initialized")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, export, body)

    def _guarded(self, export: str, body: Callable[[_Call], Any]) -> Any:
        """Run ``body`` (calls into the guest) in the plugin's thread, under its deadline, fuel and CPU."""
        import wasmtime

        if self._stopped is not None:
            raise PluginError(f"WASM plugin {self.id} is stopped ({self._stopped})")
        call = _Call(export, time.monotonic() + self._timeout)
        self._call = call
        t0 = time.thread_time()
        try:
            with self._eng.running(call.deadline):
                if self._store is None:
                    self._instantiate()  # its start function runs under the deadline too
                store = self._store
                assert store is not None
                store.set_epoch_deadline(math.ceil(self._timeout / _TICK) + 1)
                store.set_fuel(max(int(self._cpu_left() * self._eng.fuel_per_second), 1))
                result = body(call)
            if call.timed_out:  # a host function's wait ended at the deadline and the guest went on
                raise LimitExceeded(StopReason.TIMEOUT, f"{export} still running after {self._timeout:g} s")
            return result
        except LimitExceeded as e:
            self._stop(e)
            raise
        except wasmtime.Trap as trap:
            raise self._stop(self._trap_reason(trap, call)) from None
        except wasmtime.WasmtimeError as e:
            raise self._stop(self._failure(str(e))) from None
        except PluginError:
            raise  # an export's nonzero answer: a failed call, the instance is sound
        except Exception as e:  # a host function failed: the guest stopped in the middle of a call
            log.exception("WASM plugin %s: %s failed in the host", self.id, export)
            raise self._stop(LimitExceeded(StopReason.CRASHED, f"{export}: {type(e).__name__}: {e}")) from None
        finally:
            self._call = None
            spent = time.thread_time() - t0
            self._close_fetches(call)
            self._flush_output(call)
            over = self._account(spent)
            if over and self._stopped is None:
                raise self._stop(LimitExceeded(StopReason.CPU_LIMIT, over))

    def _instantiate(self) -> None:
        import wasmtime

        store = wasmtime.Store(self._eng.engine)
        store.set_limits(memory_size=int(self.limits.memory_mb * 1024 * 1024), table_elements=10_000,
                         instances=1, tables=1, memories=1)
        wasi = wasmtime.WasiConfig()
        wasi.stdout_custom = self._output
        wasi.stderr_custom = self._output
        for path in self.grants.paths:
            wasi.preopen_dir(path, path)
        store.set_wasi(wasi)
        store.set_epoch_deadline(math.ceil(self._timeout / _TICK) + 1)
        store.set_fuel(max(int(self._cpu_left() * self._eng.fuel_per_second), 1))
        linker = wasmtime.Linker(self._eng.engine)
        linker.define_wasi()
        for name, (params, results) in _IMPORTS.items():
            ty = wasmtime.FuncType([_valtype(p) for p in params], [_valtype(r) for r in results])
            linker.define_func(IMPORT_MODULE, name, ty, self._host(name), access_caller=True)
        try:
            instance = linker.instantiate(store, self._module)
        except wasmtime.WasmtimeError as e:
            if "exceeds memory limits" in str(e):  # the module declares more memory than its limit
                raise LimitExceeded(StopReason.MEMORY_LIMIT, f"instantiation: {_last_line(str(e))}") from None
            raise
        exports = instance.exports(store)
        memory, abi_version = exports["memory"], exports["monbridge_abi_version"]
        assert isinstance(memory, wasmtime.Memory) and isinstance(abi_version, wasmtime.Func)
        version = abi_version(store)
        if version != ABI_VERSION:  # the instance is not kept: every call tries (and refuses) again
            raise PluginError(f"WASM plugin {self.id}: ABI version {version}; this host runs version {ABI_VERSION}")
        self._store, self._instance, self._memory = store, instance, memory

    def _has_export(self, name: str) -> bool:
        return any(e.name == name for e in self._module.exports)

    def _export(self, name: str) -> wasmtime.Func:
        import wasmtime

        assert self._instance is not None and self._store is not None
        func = self._instance.exports(self._store).get(name)
        if not isinstance(func, wasmtime.Func):
            raise PluginError(f"WASM plugin {self.id}: {name} is not an exported function")
        return func

    def _export_status(self, call: _Call, name: str, *args: Any) -> None:
        assert self._store is not None
        status = self._export(name)(self._store, *args)
        if status != 0:
            raise PluginError(f"WASM plugin {self.id}: {name} returned {status}")

    def _copy_in(self, data: bytes) -> tuple[int, int]:
        """``data`` in guest memory (from the guest's ``alloc``): (pointer, length)."""
        assert self._store is not None and self._memory is not None
        ptr = self._export("alloc")(self._store, len(data))
        if not isinstance(ptr, int) or ptr <= 0 or ptr + len(data) > self._memory.data_len(self._store):
            raise PluginError(f"WASM plugin {self.id}: alloc({len(data)}) returned {ptr}, not a place in its memory")
        self._memory.write(self._store, data, ptr)
        return ptr, len(data)

    def _init(self, call: _Call, data: bytes) -> None:
        self._export_status(call, "init", *self._copy_in(data))

    async def _call_export(self, export: str, *payload: bytes) -> _Call:
        """Call ``export`` with each payload copied into the guest (as ptr, len); the call's record
        holds what the guest emitted and raised meanwhile."""
        def run(call: _Call) -> _Call:
            self._export_status(call, export, *(arg for data in payload for arg in self._copy_in(data)))
            return call

        done: _Call = await self._run(export, run)
        return done

    # ------------------------------------------------------------------ stopping

    def _trap_reason(self, trap: Any, call: _Call) -> LimitExceeded:
        import wasmtime

        code = trap.trap_code
        if self._memory_full() and code != wasmtime.TrapCode.OUT_OF_FUEL:
            return self._memory_exceeded(f"{call.export} trapped: {trap.message}")
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return LimitExceeded(StopReason.CPU_LIMIT, f"{call.export} used up its CPU budget (out of fuel)")
        if code == wasmtime.TrapCode.INTERRUPT or call.timed_out:
            return LimitExceeded(StopReason.TIMEOUT, f"{call.export} still running after {self._timeout:g} s")
        return LimitExceeded(StopReason.CRASHED, f"{call.export} trapped: {_last_line(trap.message)}")

    def _failure(self, message: str) -> LimitExceeded:
        if self._memory_full():
            return self._memory_exceeded(message)
        return LimitExceeded(StopReason.CRASHED, _last_line(message) or "failed")

    def _memory_full(self) -> bool:
        """The memory is within a tenth (at least 1 MiB) of its limit: a grow has likely failed."""
        if self._memory is None or self._store is None:
            return False
        limit = self.limits.memory_mb * 1024 * 1024
        return self._memory.data_len(self._store) + max(limit / 10, 16 * _PAGE) > limit

    def _memory_exceeded(self, what: str) -> LimitExceeded:
        return LimitExceeded(StopReason.MEMORY_LIMIT, f"{what} (memory at its {self.limits.memory_mb:g} MiB limit)")

    def _stop(self, e: LimitExceeded) -> LimitExceeded:
        log.warning("WASM plugin %s stopped: %s", self.id, e)
        self._drop(e.reason.value)
        return e

    def _drop(self, why: str) -> None:
        self._stopped = self._stopped or why
        self._store = self._instance = self._memory = None

    # ------------------------------------------------------------------ CPU accounting

    def _windows(self) -> tuple[tuple[float, float], tuple[float, float]]:
        lim = self.limits
        return ((lim.cpu_window, lim.cpu_percent / 100 * lim.cpu_window),
                (lim.cpu_burst_window, lim.cpu_burst_percent / 100 * lim.cpu_burst_window))

    def _cpu_used(self, window: float, now: float) -> float:
        return sum(cpu for end, cpu in self._cpu if end > now - window)

    def _cpu_left(self) -> float:
        now = time.monotonic()
        return max(min(allowed - self._cpu_used(window, now) for window, allowed in self._windows()), 0.0)

    def _account(self, spent: float) -> str:
        """Record ``spent`` CPU seconds; what it took over a limit ('' when nothing)."""
        now = time.monotonic()
        self._cpu.append((now, spent))
        horizon = now - max(self.limits.cpu_window, self.limits.cpu_burst_window)
        while self._cpu and self._cpu[0][0] <= horizon:
            self._cpu.popleft()
        for window, allowed in self._windows():
            used = self._cpu_used(window, now)
            if used > allowed:
                return f"{used:.3f} CPU seconds in {window:g} s (at most {allowed:.3f})"
        return ""

    # ------------------------------------------------------------------ host functions

    def _host(self, name: str) -> Callable[..., int]:
        impl: Callable[..., int] = getattr(self, f"_h_{name}")

        def host(caller: Any, *args: Any) -> int:
            call = self._call
            if call is None:
                return ERR_UNSUPPORTED
            try:
                return impl(caller, call, *args)
            except _GuestError as e:
                self.counters["rejected_calls"] += 1
                return e.code

        return host

    def _bytes(self, caller: Any, ptr: int, length: int, bound: int) -> bytes:
        assert self._memory is not None
        if ptr < 0 or length < 0:
            raise _GuestError(ERR_BOUNDS)
        if length > bound:
            raise _GuestError(ERR_TOO_LARGE)
        if ptr + length > self._memory.data_len(caller):
            raise _GuestError(ERR_BOUNDS)
        return bytes(self._memory.read(caller, ptr, ptr + length))

    def _text(self, caller: Any, ptr: int, length: int, bound: int) -> str:
        try:
            return self._bytes(caller, ptr, length, bound).decode()
        except UnicodeDecodeError:
            raise _GuestError(ERR_INVALID) from None

    def _name(self, caller: Any, ptr: int, length: int) -> str:
        name = self._text(caller, ptr, length, self.bounds.max_name)
        if not _NAME.match(name):
            raise _GuestError(ERR_INVALID)
        return name

    def _pairs(self, caller: Any, ptr: int, length: int) -> dict[str, str]:
        """Attributes encoded as key NUL value NUL ... (see the ABI)."""
        if length == 0:
            return {}
        return self._decode_pairs(self._bytes(caller, ptr, length, self.bounds.max_attrs_bytes))

    def _decode_pairs(self, data: bytes) -> dict[str, str]:
        try:
            fields = data.decode().split("\0")
        except UnicodeDecodeError:
            raise _GuestError(ERR_INVALID) from None
        if fields[-1] != "" or len(fields) % 2 != 1 or len(fields) // 2 > self.bounds.max_attrs:
            raise _GuestError(ERR_INVALID)
        pairs = dict(zip(fields[:-1:2], fields[1::2], strict=True))
        for k in pairs:
            if k not in self._names:
                self._key(k)
        return pairs

    def _key(self, key: str) -> None:
        """Check an attribute key (a name) not seen before, and remember it."""
        if not _NAME.match(key) or len(key.encode()) > self.bounds.max_name:
            raise _GuestError(ERR_INVALID)
        if len(self._names) < _NAME_CACHE:
            self._names[key] = key

    def _batch_name(self, raw: bytes) -> str:
        """An emit_metrics record's name not seen before, checked and remembered."""
        try:
            name = raw.decode()
        except UnicodeDecodeError:
            raise _GuestError(ERR_INVALID) from None
        if not _NAME.match(name):
            raise _GuestError(ERR_INVALID)
        if len(self._batch_names) < _NAME_CACHE:
            self._batch_names[raw] = name
        return name

    def _copy_out(self, caller: Any, data: bytes, ptr: int, cap: int) -> int:
        assert self._memory is not None
        if ptr < 0 or cap < 0 or ptr + cap > self._memory.data_len(caller):
            raise _GuestError(ERR_BOUNDS)
        if cap and data:
            self._memory.write(caller, data[:cap], ptr)
        return len(data)

    def _h_emit_metric(self, caller: Any, call: _Call, kind: int, name_ptr: int, name_len: int, value: float,
                       attrs_ptr: int, attrs_len: int) -> int:
        if call.export not in _EMITTING:
            raise _GuestError(ERR_UNSUPPORTED)
        if len(call.metrics) >= self.bounds.max_metrics:
            self._dropped_metrics(1)
            raise _GuestError(ERR_LIMIT)
        if not 0 <= kind < len(_KINDS):
            raise _GuestError(ERR_INVALID)
        name = self._name(caller, name_ptr, name_len)
        call.metrics.append(Metric(name, _KINDS[kind], value, attributes=self._pairs(caller, attrs_ptr, attrs_len)))
        return 0

    def _h_emit_metrics(self, caller: Any, call: _Call, ptr: int, length: int) -> int:
        if call.export not in _EMITTING:
            raise _GuestError(ERR_UNSUPPORTED)
        data = self._bytes(caller, ptr, length, self.bounds.max_batch_bytes)
        room = self.bounds.max_metrics - len(call.metrics)
        taken: list[Metric] = []
        dropped, pos, end, unpack = 0, 0, len(data), _RECORD.unpack_from
        max_attrs, max_fields, head = self.bounds.max_attrs_bytes, 2 * self.bounds.max_attrs + 1, _RECORD.size
        names, keys, kinds = self._batch_names, self._names, _KINDS
        try:
            while pos < end:
                if pos + head > end:
                    raise _GuestError(ERR_INVALID)
                kind, name_len, attrs_len, value = unpack(data, pos)
                pos += head
                stop = pos + name_len + attrs_len
                if kind >= 3 or stop > end or attrs_len > max_attrs:
                    raise _GuestError(ERR_INVALID)
                raw = data[pos:pos + name_len]
                name = names.get(raw)
                if name is None:
                    name = self._batch_name(raw)
                attrs: dict[str, str] = {}
                if attrs_len:
                    fields = data[pos + name_len:stop].decode().split("\0")
                    n = len(fields)
                    if fields[-1] or not n & 1 or n > max_fields:
                        raise _GuestError(ERR_INVALID)
                    attrs = {fields[0]: fields[1]} if n == 3 else dict(zip(fields[:-1:2], fields[1::2], strict=True))
                    for k in attrs:
                        if k not in keys:
                            self._key(k)
                pos = stop
                if len(taken) < room:
                    taken.append(Metric(name, kinds[kind], value, attributes=attrs))
                else:
                    dropped += 1
        except UnicodeDecodeError:
            raise _GuestError(ERR_INVALID) from None
        call.metrics.extend(taken)
        if dropped:
            self._dropped_metrics(dropped)
            raise _GuestError(ERR_LIMIT)
        return len(taken)

    def _dropped_metrics(self, n: int) -> None:
        if not self.counters["dropped_metrics"]:
            log.warning("WASM plugin %s: more than %d metrics in one collection; the rest are dropped",
                        self.id, self.bounds.max_metrics)
        self.counters["dropped_metrics"] += n

    def _h_raise_alert(self, caller: Any, call: _Call, name_ptr: int, name_len: int, sev_ptr: int, sev_len: int,
                       labels_ptr: int, labels_len: int, ann_ptr: int, ann_len: int) -> int:
        if self.plugin_type is not PluginType.ALERT_PROCESSOR and call.export != "import_alerts":
            raise _GuestError(ERR_UNSUPPORTED)
        if len(call.alerts) >= self.bounds.max_alerts:
            raise _GuestError(ERR_LIMIT)
        name = self._name(caller, name_ptr, name_len)
        severity = self._text(caller, sev_ptr, sev_len, self.bounds.max_name)
        call.alerts.append(Alert(id="", name=name, severity=severity, labels=self._pairs(caller, labels_ptr, labels_len),
                                 annotations=self._pairs(caller, ann_ptr, ann_len)))
        return 0

    def _h_alert_set(self, caller: Any, call: _Call, field: int, key_ptr: int, key_len: int, val_ptr: int,
                     val_len: int) -> int:
        if call.alert is None:
            raise _GuestError(ERR_UNSUPPORTED)
        value = self._text(caller, val_ptr, val_len, self.bounds.max_attrs_bytes)
        if field == 2:
            call.alert.severity = value
        elif field in (0, 1):
            target = call.alert.labels if field == 0 else call.alert.annotations
            if len(target) >= 4 * self.bounds.max_attrs:
                raise _GuestError(ERR_LIMIT)
            target[self._name(caller, key_ptr, key_len)] = value
        else:
            raise _GuestError(ERR_INVALID)
        return 0

    def _h_config_value(self, caller: Any, call: _Call, key_ptr: int, key_len: int, buf_ptr: int, cap: int) -> int:
        key = self._text(caller, key_ptr, key_len, self.bounds.max_name)
        if key not in self._config:
            raise _GuestError(ERR_NOT_FOUND)
        value = self._config[key]
        data = (value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))).encode()
        return self._copy_out(caller, data, buf_ptr, cap)

    def _h_log(self, caller: Any, call: _Call, level: int, ptr: int, length: int) -> int:
        if not 0 <= level < len(_LEVELS):
            raise _GuestError(ERR_INVALID)
        text = self._bytes(caller, ptr, min(length, self.bounds.max_log_bytes), self.bounds.max_log_bytes)
        now = time.monotonic()
        while self._log_times and self._log_times[0] <= now - self.bounds.log_window:
            self._log_times.popleft()
        if len(self._log_times) >= self.bounds.log_lines:
            self.counters["dropped_logs"] += 1
            raise _GuestError(ERR_LIMIT)
        self._log_times.append(now)
        log.log(_LEVELS[level], "WASM plugin %s: %s", self.id, _printable(text))
        return 0

    def _h_http_fetch(self, caller: Any, call: _Call, url_ptr: int, url_len: int) -> int:
        url = self._text(caller, url_ptr, url_len, self.bounds.max_url)
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise _GuestError(ERR_INVALID) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _GuestError(ERR_INVALID)
        host = parts.hostname.lower()
        port = port or (443 if parts.scheme == "https" else 80)
        if not any(gh == host and gp in (None, port) for gh, gp in self._grants):
            self.counters["refused_hosts"] += 1
            log.warning("WASM plugin %s: fetch of %s:%d refused: the host is not granted", self.id, host, port)
            raise _GuestError(ERR_NOT_GRANTED)
        if len(call.fetches) >= self.limits.connections or not self._slots or not self._slots.acquire(blocking=False):
            self.counters["refused_connections"] += 1
            log.warning("WASM plugin %s: fetch of %s:%d refused: %d connections are open (its limit)",
                        self.id, host, port, self.limits.connections)
            raise _GuestError(ERR_CONNECTIONS)
        fetch = _Fetch()
        handle = max(call.fetches, default=-1) + 1
        call.fetches[handle] = fetch
        deadline = min(time.monotonic() + self.bounds.http_timeout, call.deadline)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        threading.Thread(target=self._fetch, args=(fetch, parts.scheme, host, port, target, deadline),
                         name=f"wasm-fetch:{self.id}", daemon=True).start()
        return handle

    def _fetch(self, fetch: _Fetch, scheme: str, host: str, port: int, target: str, deadline: float) -> None:
        """One GET on a connection of its own (in a thread of its own), over by ``deadline`` however
        slowly the peer sends; frees its slot when done."""
        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        try:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(host, port, timeout=left())
            try:
                conn.request("GET", target, headers={"User-Agent": f"monbridge-wasm/{self.id}"})
                response = conn.getresponse()
                body = bytearray()
                while len(body) <= self.bounds.http_max_body:
                    if conn.sock is not None:
                        conn.sock.settimeout(left())
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    body += chunk
            finally:
                conn.close()
            if len(body) > self.bounds.http_max_body:
                fetch.future.set_exception(_GuestError(ERR_TOO_LARGE))
            else:
                fetch.future.set_result((response.status, bytes(body)))
        except TimeoutError:
            fetch.future.set_exception(_GuestError(ERR_TIMEOUT))
        except (OSError, http.client.HTTPException) as e:
            log.info("WASM plugin %s: fetch of %s:%d failed: %s", self.id, host, port, e)
            fetch.future.set_exception(_GuestError(ERR_NETWORK))
        finally:
            assert self._slots is not None
            self._slots.release()

    def _result(self, call: _Call, handle: int) -> tuple[int, bytes]:
        fetch = call.fetches.get(handle)
        if fetch is None:
            raise _GuestError(ERR_INVALID)
        try:
            return fetch.future.result(timeout=max(call.deadline - time.monotonic(), 0.0))
        except TimeoutError:  # the call's deadline: the epoch interrupts the guest as it goes on
            call.timed_out = True
            raise _GuestError(ERR_TIMEOUT) from None

    def _h_http_status(self, caller: Any, call: _Call, handle: int) -> int:
        return self._result(call, handle)[0]

    def _h_http_response(self, caller: Any, call: _Call, handle: int, buf_ptr: int, cap: int) -> int:
        return self._copy_out(caller, self._result(call, handle)[1], buf_ptr, cap)

    def _h_http_close(self, caller: Any, call: _Call, handle: int) -> int:
        if call.fetches.pop(handle, None) is None:
            raise _GuestError(ERR_INVALID)
        return 0

    def _close_fetches(self, call: _Call) -> None:
        call.fetches.clear()  # a fetch still running keeps its slot until its own timeout

    # ------------------------------------------------------------------ stdout and stderr

    def _output(self, data: bytes) -> int:
        call = self._call
        if call is None or len(call.output) + len(data) > self.bounds.max_output:
            self.counters["dropped_output"] += 1
        else:
            call.output += data
        return len(data)

    def _flush_output(self, call: _Call) -> None:
        for line in bytes(call.output).splitlines():
            log.info("WASM plugin %s output: %s", self.id, _printable(line))


def _lower_priority() -> None:
    """Run this thread (a plugin's) at nice ``_NICE`` above the process': a guest spinning until its
    deadline or fuel runs out takes CPU from the agent's event loop only when the loop leaves it."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux, or not allowed: the same priority
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + _NICE, 19))


def _last_line(message: str) -> str:
    """The cause of a wasmtime error (its last line: ``wasm trap: integer divide by zero``)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _printable(data: bytes) -> str:
    return data.decode(errors="replace").translate({c: " " for c in range(32)})


def _valtype(name: str) -> wasmtime.ValType:
    import wasmtime

    return wasmtime.ValType.i32() if name == _I32 else wasmtime.ValType.f64()


# --------------------------------------------------------------------------- the plugin types


class WasmCollector(WasmPlugin, MetricCollectorPlugin):
    """A collector in WASM: ``collect()`` per collection, its ``emit_metric`` calls are the result."""

    config_model: ClassVar[type[PluginConfig]] = WasmCollectorConfig
    exports_required = ("collect",)

    async def collect_metrics(self) -> Sequence[Metric]:
        return (await self._call_export("collect")).metrics

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class WasmAlertProcessor(WasmPlugin, AlertProcessorPlugin):
    """An alert processor in WASM: ``process_alert`` with the alert as JSON, changed by ``alert_set``;
    alerts it raises are fired into the alert engine (``attach``)."""

    config_model: ClassVar[type[PluginConfig]] = WasmPluginConfig
    exports_required = ("process_alert",)

    def __init__(self, module: bytes, manifest: Mapping[str, Any], limits: Limits, grants: Grants,
                 bounds: WasmBounds | None = None) -> None:
        super().__init__(module, manifest, limits, grants, bounds)
        self.ctx: Any = None

    def attach(self, ctx: Any) -> None:
        self.ctx = ctx

    async def process_alert(self, alert: Alert) -> Alert:
        changed = dataclasses.replace(alert, labels=dict(alert.labels), annotations=dict(alert.annotations))
        data = json.dumps(_alert_json(alert)).encode()

        def process(call: _Call) -> list[Alert]:
            call.alert = changed  # what alert_set changes
            self._export_status(call, "process_alert", *self._copy_in(data))
            return call.alerts

        self._fire(await self._run("process_alert", process))
        return changed

    async def handle_acknowledgment(self, alert_id: str) -> None:
        await self._notify("acknowledge", alert_id)

    async def handle_resolution(self, alert_id: str) -> None:
        await self._notify("resolve", alert_id)

    async def _notify(self, export: str, alert_id: str) -> None:
        if self._has_export(export):
            self._fire((await self._call_export(export, alert_id.encode())).alerts)

    def _fire(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            if self.ctx is None:
                log.warning("WASM plugin %s raised alert %s with no alert engine attached; dropped", self.id, alert.name)
                continue
            alert.state = AlertState.FIRING
            self.ctx.engine.fire(alert, by=self.id)


class WasmIntegrationConfig(IntegrationConfig):
    """A WASM integration's config: the schedule keys plus whatever the module reads."""

    model_config = ConfigDict(extra="allow", frozen=True, hide_input_in_errors=True, defer_build=True)


class WasmIntegration(WasmPlugin, MonitoringIntegrationPlugin):
    """An integration in WASM: each of ``import_metrics``, ``import_alerts``, ``export_metrics`` and
    ``export_alerts`` is the export of that name when the module has it, else does nothing."""

    config_model: ClassVar[type[PluginConfig]] = WasmIntegrationConfig

    async def import_metrics(self) -> Sequence[Metric]:
        return (await self._call_export("import_metrics")).metrics if self._has_export("import_metrics") else []

    async def import_alerts(self) -> Sequence[Alert]:
        return (await self._call_export("import_alerts")).alerts if self._has_export("import_alerts") else []

    async def export(self, batch: MetricBatch, timeout: float) -> ExportResult:
        """The batch's numbers to ``export_metrics``: 0 is success, 2 a permanent failure, any
        other answer a retryable one."""
        return await self._export_records(batch.metrics())

    async def export_metrics(self, metrics: Sequence[Metric]) -> None:
        result = await self._export_records(metrics)
        if not result.ok:
            raise PluginError(result.reason)

    async def _export_records(self, metrics: Sequence[Metric]) -> ExportResult:
        if not self._has_export("export_metrics"):
            return ExportResult.success()
        data, skipped = self._records(metrics)
        if skipped:
            self.counters["unexported_metrics"] += skipped

        def run(call: _Call) -> int:
            assert self._store is not None
            status = self._export("export_metrics")(self._store, *self._copy_in(data))
            return int(status)

        try:
            status = await self._run("export_metrics", run)
        except PluginError as e:
            return ExportResult.retryable(str(e))
        if status == 0:
            return ExportResult.success()
        text = f"WASM plugin {self.id}: export_metrics returned {status}"
        return ExportResult.permanent(text) if status == 2 else ExportResult.retryable(text)

    async def export_alerts(self, alerts: Sequence[Alert]) -> None:
        if not self._has_export("export_alerts") or not alerts:
            return
        await self._call_export("export_alerts", json.dumps([_alert_json(a) for a in alerts]).encode())

    def _records(self, metrics: Sequence[Metric]) -> tuple[bytes, int]:
        """``metrics`` as emit_metrics records (the numbers of the kinds the ABI has; each record
        within the ABI's bounds): the bytes, and how many were left out."""
        out, skipped, pack = bytearray(), 0, _RECORD.pack
        for m in metrics:
            if m.kind not in _KIND_CODE or not isinstance(m.value, int | float):
                skipped += 1
                continue
            name = m.name.encode()
            attrs = b"".join(f"{k}\0{v}\0".encode() for k, v in m.attributes.items())
            if len(name) > self.bounds.max_name or len(attrs) > self.bounds.max_attrs_bytes or \
                    len(out) + _RECORD.size + len(name) + len(attrs) > self.bounds.max_batch_bytes:
                skipped += 1
                continue
            out += pack(_KIND_CODE[m.kind], len(name), len(attrs), float(m.value))
            out += name
            out += attrs
        return bytes(out), skipped


_KIND_CODE = {kind: code for code, kind in enumerate(_KINDS)}


def _alert_json(alert: Alert) -> dict[str, Any]:
    return {"id": alert.id, "name": alert.name, "severity": alert.severity, "state": alert.state.value,
            "labels": alert.labels, "annotations": alert.annotations, "value": alert.value}


def wasm_plugin_factory(module: bytes, manifest: Mapping[str, Any], limits: Limits, grants: Grants,
                        bounds: WasmBounds | None = None) -> Callable[[], Plugin]:
    """A ``make_plugin`` for the supervisor: a new instance (a new store) each call. The module is
    compiled and checked now, so a refused module is refused at load."""
    WasmPlugin(module, manifest, limits, grants, bounds)

    def make() -> Plugin:
        return WasmPlugin(module, manifest, limits, grants, bounds)

    return make
