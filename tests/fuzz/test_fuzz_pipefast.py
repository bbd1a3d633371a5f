"""Fuzzing the pipeline's C loops (``bridge._pipefast``) against their Python twins: the input's
8-byte words read as doubles (every bit pattern: subnormals, NaNs, infinities) and as ints, its
text as label values, are recorded as one family and rendered with the C loops and with the
Python ones; the bodies must be the same, and every finite double's text must be ``repr``'s.

Seeds: ``corpus/pipefast/``.
"""

from __future__ import annotations

import math
import struct

import pytest

from bridge import exposition, pipeline
from bridge.api import Metric, MetricKind
from bridge.pipeline import Pipeline
from tests.fuzz.harness import require_extension, run_fuzz, seeds


def _body(pipe: Pipeline, c: bool) -> bytes:
    exposition._pipefast = pipeline._pipefast if c else None
    pipeline._store_run = pipeline._store_run_c if c else pipeline._store_run_py
    try:
        for f in pipe.families():
            f.render_cache.clear()
        return exposition.render(pipe.batch().families(), {})
    finally:
        exposition._pipefast = pipeline._pipefast
        pipeline._store_run = pipeline._store_run_c


def target(data: bytes) -> None:
    fast = pipeline._pipefast
    words = [data[i:i + 8] for i in range(0, len(data) - 7, 8)][:2000]
    text = data.decode("utf-8", "replace")[:200]
    values: list[float | int] = []
    for w in words:
        x = struct.unpack("<d", w)[0]
        if math.isfinite(x):
            assert fast.float_repr(x) == repr(x), (x, fast.float_repr(x))
        values.append(x)
        values.append(int.from_bytes(w, "little", signed=True) >> (w[0] % 64))
    pipes = [Pipeline(cardinality_limit=10_000), Pipeline(cardinality_limit=10_000)]
    for rnd in range(2):
        for pipe, c in zip(pipes, (True, False), strict=True):
            pipeline._store_run = pipeline._store_run_c if c else pipeline._store_run_py
            try:
                pipe.record("s", [Metric("f.g", MetricKind.GAUGE, v, "", "", {"i": i, "t": text[: i % 50]})
                                  for i, v in enumerate(values[rnd:])])
            finally:
                pipeline._store_run = pipeline._store_run_c
    assert _body(pipes[0], True) == _body(pipes[1], False)


@pytest.mark.fuzz
def test_fuzz_pipefast() -> None:
    require_extension(pipeline._pipefast, "bridge._pipefast")
    pool = seeds("pipefast")
    for data in pool:
        target(data)
    # An input of 16 kB (the most the target reads) is 4,000 values recorded twice into two
    # pipelines, once through the Python loops, and rendered twice: ~0.12 s, more than the default
    # bound of 0.1 s for 100 kB of input. The C loops themselves are linear (and bounded here).
    assert run_fuzz(target, pool, allowed=(), cpu_per_100kb=0.5) >= len(pool)
