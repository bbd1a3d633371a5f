"""A plugin's worker process: ``python -m bridge.worker FD``, started by ``bridge.pluginhost``.

FD is this process's end of a socket pair (see ``bridge.wire``). The first frame is the setup:
the plugin's reference (``module:Class``), its id, type, limits and grants. The config comes
later, with ``initialize``: neither travels in argv or the environment, which other users of
the machine may read. The worker applies the sandbox (``bridge.sandbox``, where present) before
the plugin's module is imported, makes the plugin, answers the setup with what the agent shows
(version, the sandbox's mechanisms), then serves calls, each in a task of its own on this
process's event loop, until the socket closes: when the agent goes away, so does the worker (and
the kernel kills it with the agent's death even while the plugin blocks its loop).
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import Any

from bridge.api import ExportResult, MetricCollectorPlugin, MonitoringIntegrationPlugin, Plugin, PluginType
from bridge.ledger import LEDGER
from bridge.tasks import gc_paused
from bridge.wire import (
    MAX_LEDGER_ENTRIES,
    T_BATCH,
    T_CALL,
    T_ERROR,
    T_LEDGER,
    T_METRICS,
    T_RESULT,
    T_SETUP,
    WireLimits,
    alert_from_value,
    alert_value,
    call_id,
    decode_frame_header,
    decode_metrics,
    decode_value,
    encode_metrics,
    encode_value,
    frame,
    pack_id,
)

log = logging.getLogger("monbridge.worker")

#: What the worker accepts from the agent (trusted, but bounded all the same).
AGENT_LIMITS = WireLimits(max_frame=1 << 30, max_series=10_000_000, max_depth=64)
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the agent dies (Linux), even mid-spin."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the socket's EOF is the signal
        return
    if os.getppid() == 1:  # the agent died before prctl
        os._exit(1)


def plugin_dirs(reference: str) -> list[str]:
    """The directories of the plugin's top-level package when it is a namespace package (no
    ``__init__.py``): the sandbox lets a worker read only the regular packages and modules of a
    directory on ``sys.path``. Found without running any of the plugin's code."""
    top = reference.partition(":")[0].split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin not in (None, "namespace") or not spec.submodule_search_locations:
        return []
    return list(dict.fromkeys(spec.submodule_search_locations))


def apply_sandbox(reference: str, limits: Mapping[str, Any], grants: Mapping[str, Any]) -> dict[str, str]:
    """Sandbox this worker (``bridge.sandbox.apply``) before the plugin's module is imported;
    what holds, by guarantee."""
    from bridge import sandbox
    from bridge.isolation import Grants, Limits

    return sandbox.apply(Limits.model_validate(limits), Grants.model_validate(grants),
                         extra_read=plugin_dirs(reference))


class Worker:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.plugin: Plugin | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.batches: dict[int, Any] = {}
        self.last_batch_size = 0
        self.losses_sent: dict[tuple[str, str], float] = {}

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read(self) -> tuple[int, memoryview] | None:
        try:
            n = decode_frame_header(await self.reader.readexactly(4), AGENT_LIMITS)
            body = memoryview(await self.reader.readexactly(n))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        return body[0], body[1:]

    async def setup(self) -> bool:
        got = await self.read()
        if got is None or got[0] != T_SETUP:
            return False
        setup = decode_value(got[1], AGENT_LIMITS, "setup")
        try:
            mechanisms = apply_sandbox(setup["reference"], setup.get("limits") or {}, setup.get("grants") or {})
            from bridge.registry import load_reference

            factory = load_reference(setup["reference"])
            plugin = factory()
            ptype = PluginType(setup["plugin_type"])
            if not isinstance(plugin, Plugin) or plugin.plugin_type is not ptype:
                raise TypeError(f"{setup['reference']} does not make a {ptype.value} plugin")
            self.plugin = plugin
            if ptype is PluginType.INTEGRATION:  # its rounds' batches need the pipeline: imported now, not in a round
                import opentelemetry.sdk.resources  # noqa: F401

                import bridge.pipeline  # noqa: F401
            info = {"version": plugin.metadata().version, "pid": os.getpid(), "mechanisms": mechanisms,
                    "imports_prometheus_names": bool(getattr(plugin, "imports_prometheus_names", False))}
        except Exception as e:  # noqa: BLE001 - told to the agent, which shows it
            self.send(frame(T_ERROR, pack_id(0), encode_value([type(e).__name__, str(e)])))
            return False
        self.send(frame(T_RESULT, pack_id(0), encode_value(info)))
        return True

    async def serve(self) -> None:
        while True:
            got = await self.read()
            if got is None:
                return
            mtype, body = got
            if mtype == T_BATCH:
                self.take_batch(body)
            elif mtype == T_CALL:
                cid = call_id(body)
                call = decode_value(body[4:], AGENT_LIMITS, "call")
                t = asyncio.create_task(self.call(cid, call["m"], call.get("a") or []))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)

    def take_batch(self, body: memoryview) -> None:
        from opentelemetry.sdk.resources import Resource

        from bridge.pipeline import Pipeline

        seq = call_id(body)
        n = call_id(body[4:])
        resource = decode_value(body[8:8 + n], AGENT_LIMITS, "batch resource")
        metrics, native = decode_metrics(body[8 + n:], AGENT_LIMITS)
        pipeline = Pipeline(Resource(resource), cardinality_limit=max(len(metrics), 1))
        pipeline.record("batch", [m for m in metrics if m.name not in native])
        pipeline.record("batch.native", [m for m in metrics if m.name in native], prometheus_names=True)
        self.batches = {seq: pipeline.batch()}  # one batch at a time: the round's

    async def call(self, cid: int, method: str, args: list[Any]) -> None:
        try:
            mtype, payload = await self.dispatch(method, args)
        except Exception as e:  # noqa: BLE001 - the plugin's failure, told to the agent
            self.send_losses()
            self.send(frame(T_ERROR, pack_id(cid), encode_value([type(e).__name__, str(e)])))
        else:
            self.send_losses()
            self.send(frame(mtype, pack_id(cid), payload))
        await self.writer.drain()

    def send_losses(self) -> None:
        """What the plugin counted in this process's loss ledger since the last call, for the
        agent's ledger (where ``monbridge_dropped_total`` and ``/api/v1/plugins`` read it)."""
        counts: dict[tuple[str, str], float] = {}
        for (component, reason, _), n in LEDGER.counts().items():
            counts[component, reason] = counts.get((component, reason), 0) + n
        sent = self.losses_sent
        delta = [[c, r, n - sent.get((c, r), 0)] for (c, r), n in counts.items() if n > sent.get((c, r), 0)]
        self.losses_sent = counts
        for i in range(0, len(delta), MAX_LEDGER_ENTRIES):
            self.send(frame(T_LEDGER, pack_id(0), encode_value(delta[i:i + MAX_LEDGER_ENTRIES])))

    async def dispatch(self, method: str, args: list[Any]) -> tuple[int, bytes]:
        plugin = self.plugin
        assert plugin is not None
        result: Any = None
        if method == "initialize":
            await plugin.initialize(args[0])
            if isinstance(plugin, MonitoringIntegrationPlugin):
                result = {"sinks": list(plugin.export_sinks())}
        elif method == "start":
            if isinstance(plugin, MetricCollectorPlugin):
                await plugin.start()
        elif method == "stop":
            if isinstance(plugin, MetricCollectorPlugin):
                await plugin.stop()
        elif method == "shutdown":
            await self.shutdown(plugin, args[0])
        elif method in ("collect", "import"):
            # As in process: a plugin that reported a large batch builds one again, and the
            # cyclic GC waits meanwhile (see bridge.pipeline.paused_gc).
            with gc_paused(self.last_batch_size):
                if method == "collect":
                    assert isinstance(plugin, MetricCollectorPlugin)
                    metrics = await plugin.collect_metrics()
                else:
                    assert isinstance(plugin, MonitoringIntegrationPlugin)
                    metrics = await plugin.import_metrics()
                self.last_batch_size = len(metrics)
                return T_METRICS, encode_metrics(metrics)
        elif method == "export":
            assert isinstance(plugin, MonitoringIntegrationPlugin)
            sink, seq, timeout = args
            res = await plugin.export_sinks()[sink].export(self.batches[seq], timeout)
            if not isinstance(res, ExportResult):
                raise TypeError(f"export to {sink} returned {type(res).__name__}, not an ExportResult")
            result = [res.status.value, res.reason, res.retry_after]
        elif method == "import_alerts":
            assert isinstance(plugin, MonitoringIntegrationPlugin)
            result = [alert_value(a) for a in await plugin.import_alerts()]
        elif method == "export_alerts":
            assert isinstance(plugin, MonitoringIntegrationPlugin)
            await plugin.export_alerts([alert_from_value(a, f"alert {i}") for i, a in enumerate(args[0])])
        elif method == "force_flush":
            assert isinstance(plugin, MonitoringIntegrationPlugin)
            sink, timeout = args
            result = bool(await plugin.export_sinks()[sink].force_flush(timeout))
        else:
            raise ValueError(f"unknown call {method!r}")
        return T_RESULT, encode_value(result)

    @staticmethod
    async def shutdown(plugin: Plugin, timeout: float | None) -> None:
        import inspect

        shutdown: Any = plugin.shutdown
        if timeout is not None and "timeout" in inspect.signature(shutdown).parameters:
            await shutdown(timeout=timeout)
        else:
            await shutdown()


async def run(fd: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
    worker = Worker(reader, writer)
    if not await worker.setup():
        await writer.drain()
        return 2
    await writer.drain()
    await worker.serve()
    return 0


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m bridge.worker FD (started by the monbridge agent)", file=sys.stderr)
        raise SystemExit(2)
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the agent's to handle
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s")
    code = asyncio.run(run(int(args[0])))
    sys.stderr.flush()
    # The plugin's threads (non-daemon ones too) must not keep the worker alive without its agent.
    os._exit(code)


if __name__ == "__main__":
    main()
