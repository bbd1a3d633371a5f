"""Fuzzing the WASM host's ``emit_metrics`` (a batch of records a guest hands the host): whatever
bytes a guest passes, the host answers with the number of records taken or a documented error
code, takes only well-formed records (valid names and attributes, at most ``max_metrics``), never
raises, and stays within bounded time and memory.

Seeds: well-formed batches in ``corpus/wasm_batch/`` (three kinds, 200 series, unicode values).
"""

from __future__ import annotations

import struct

import pytest
import wasmtime

from bridge.isolation import Grants, Limits
from bridge.wasmhost import _NAME, ERR_BOUNDS, ERR_INVALID, ERR_LIMIT, ERR_TOO_LARGE, WasmBounds, WasmPlugin
from tests.fuzz.harness import CORPUS, run_fuzz, seeds

#: collect() hands the host the batch at 65536 of the length at 0, and keeps the answer at 4.
GUEST = """
(module
  (import "monbridge" "emit_metrics" (func $emit_metrics (param i32 i32) (result i32)))
  (memory (export "memory") 18)
  (func (export "monbridge_abi_version") (result i32) (i32.const 1))
  (func (export "alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "init") (param i32 i32) (result i32) (i32.const 0))
  (func (export "collect") (result i32)
    (i32.store (i32.const 4) (call $emit_metrics (i32.const 65536) (i32.load (i32.const 0))))
    (i32.const 0)))
"""
MANIFEST = {"id": "monitoring.metrics.fuzz", "plugin_type": "metric_collector"}
TOKENS = [struct.pack("<BBHd", 0, 4, 0, 1.0), struct.pack("<BBHd", 1, 255, 4096, 2.0), struct.pack("<BBHd", 3, 0, 0, 0.0),
          b"\x00", b"name", b"k\x00v\x00", b"\xff\xfe", b"9bad", b"a=b\x00c\x00"]


def make_target():  # noqa: ANN201 - the harness takes any callable
    import asyncio

    plugin = WasmPlugin(wasmtime.wat2wasm(GUEST), MANIFEST, Limits(cpu_percent=100 * 1024, cpu_burst_percent=100 * 1024),
                        Grants(), WasmBounds(max_metrics=100))
    asyncio.run(plugin.initialize({"collection_interval": 60}))

    def collect(call):  # noqa: ANN001, ANN202 - the host's call record
        plugin._export_status(call, "collect")
        return call.metrics

    def target(data: bytes) -> tuple[int, list]:
        data = data[: 1 << 20]
        assert plugin._memory is not None and plugin._store is not None
        plugin._memory.write(plugin._store, struct.pack("<i", len(data)), 0)
        plugin._memory.write(plugin._store, data, 65536)
        metrics = plugin._guarded("collect", collect)  # the plugin thread's path, in this thread
        answer = struct.unpack("<i", plugin._memory.read(plugin._store, 4, 8))[0]
        assert answer >= 0 or answer in (ERR_BOUNDS, ERR_INVALID, ERR_TOO_LARGE, ERR_LIMIT), answer
        if answer >= 0:
            assert len(metrics) == answer
        elif answer != ERR_LIMIT:
            assert metrics == []
        assert len(metrics) <= 100
        for m in metrics:
            assert _NAME.match(m.name) and all(_NAME.match(k) for k in m.attributes)
        return answer, metrics

    return target


def test_the_seeds_are_taken() -> None:
    target = make_target()
    answers = {p.name: target(p.read_bytes()) for p in sorted((CORPUS / "wasm_batch").iterdir())}
    answer, metrics = answers["three_kinds.bin"]
    assert answer == 3
    assert [(m.name, m.kind.value, m.value, dict(m.attributes)) for m in metrics] == [
        ("temp", "gauge", 21.5, {"host": "db1"}), ("requests_total", "counter", 42.0, {"code": "200", "path": "/a"}),
        ("queue.depth", "updowncounter", -3.0, {})]
    answer, metrics = answers["many_series.bin"]  # 200 records, 100 taken: the bound
    assert answer == ERR_LIMIT and [m.attributes["id"] for m in metrics] == [str(i) for i in range(100)]
    answer, metrics = answers["unicode_values.bin"]
    assert answer == 1 and dict(metrics[0].attributes) == {"k": "välue ☃", "e": ""}


@pytest.mark.fuzz
def test_fuzz_wasm_batch() -> None:
    pool = seeds("wasm_batch")
    assert run_fuzz(make_target(), pool, allowed=(), tokens=TOKENS) >= len(pool)
