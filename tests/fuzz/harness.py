"""The one fuzzing harness of monbridge's fuzz targets (``tests/fuzz/test_fuzz_*.py``).

A target is a function that takes ``bytes`` and either returns or raises one of the error
types its module documents. :func:`run_fuzz` feeds it, for a bounded time, with

* every seed: the target's corpus directory ``tests/fuzz/corpus/<target>/`` (crashes found
  earlier, kept as regression inputs) and the seed files the target names (``tests/data``);
* inputs that hypothesis derives from the seeds by byte-level mutation: inserted, deleted and
  spliced ranges, tokens from the target's dictionary, and one range repeated thousands of
  times (how quadratic backtracking and bomb-like inputs are found);
* plain random bytes.

For each input it asserts that

* only the documented error types escape (anything else fails with the input shown);
* the input, if under 1 MB, costs at most 100 ms of CPU time per 100 KB (at least 100 ms): CPU
  time of the calling thread, with the cyclic garbage collector paused during the call, the least
  of up to three timings;
* no call hangs: one that runs ``HANG_S`` seconds ends the process with every thread's
  traceback (printed to stderr), so a hang fails the run at once;
* over the whole run, the process's peak RSS grows by at most ``max_rss_growth`` bytes.

Time: ``MONBRIDGE_FUZZ_SECONDS`` per target (default 15, which CI uses; at most 60 is
meant for CI). A longer run, for hunting rather than regression::

    MONBRIDGE_FUZZ_SECONDS=1800 .venv/bin/python -m pytest tests/fuzz -k scrape -p no:cacheprovider

A crash found this way: save the input shown in the failure under ``corpus/<target>/`` and
add a regression test beside the fix.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
DATA = HERE.parent / "data"
MAX_INPUT = 1 << 20
CPU_PER_100KB = 0.1
#: One call longer than this (wall clock) is a hang: the process is ended with its tracebacks.
HANG_S = 60.0


def fuzz_seconds() -> float:
    return float(os.environ.get("MONBRIDGE_FUZZ_SECONDS", "15"))


def seeds(target: str, files: Iterable[Path] = ()) -> list[bytes]:
    """The seed inputs of ``target``: its corpus directory and the named files, sorted by path."""
    paths = list(files)
    directory = CORPUS / target
    if directory.is_dir():
        paths.extend(sorted(p for p in directory.rglob("*") if p.is_file()))
    out = [p.read_bytes() for p in paths]
    if not out:
        raise AssertionError(f"fuzz target {target!r} has no seeds")
    return out


@st.composite
def mutated(draw: st.DrawFn, pool: Sequence[bytes], tokens: Sequence[bytes]) -> bytes:
    """A seed from ``pool`` changed by one to six byte-level mutations, capped at 1 MB."""
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        pos = draw(st.integers(0, len(data)))
        if op == 0:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == 1:
            end = draw(st.integers(pos, min(len(data), pos + 64)))
            del data[pos:end]
        elif op == 2 and tokens:
            data[pos:pos] = draw(st.sampled_from(tokens))
        elif op == 3:
            # one range repeated: long digit runs, deep nesting, many lines, many keys
            end = draw(st.integers(pos, min(len(data), pos + 32)))
            piece = bytes(data[pos:end]) or draw(st.sampled_from(tokens or [b"9"]))
            times = draw(st.sampled_from([2, 10, 100, 1000, 10_000, 100_000]))
            times = max(1, min(times, (MAX_INPUT - len(data)) // max(1, len(piece))))
            data[pos:pos] = piece * times
        elif op == 4:
            other = draw(st.sampled_from(pool))
            start = draw(st.integers(0, len(other)))
            data[pos:pos] = other[start : start + draw(st.integers(0, 256))]
        else:
            if data:
                i = min(pos, len(data) - 1)
                data[i] = draw(st.integers(0, 255))
    return bytes(data[:MAX_INPUT])


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_fuzz(
    target: Callable[[bytes], object],
    pool: Sequence[bytes],
    *,
    allowed: tuple[type[BaseException], ...],
    tokens: Sequence[bytes] = (),
    seconds: float | None = None,
    max_rss_growth: int = 256 << 20,
    cpu_per_100kb: float = CPU_PER_100KB,
) -> int:
    """Fuzz ``target`` for ``seconds``; returns the number of inputs tried (at least the seeds).
    An input may take ``cpu_per_100kb`` seconds of CPU per 100 kB (that much at least): a target
    that does more than parse its input (builds and compares several outputs of it) says so with
    a bound of its own."""
    budget = fuzz_seconds() if seconds is None else seconds
    count = 0

    def timed(data: bytes) -> float:
        """CPU seconds of this thread spent on ``data``, the cyclic collector paused meanwhile (a
        full collection of the process's heap, mostly hypothesis' own objects, is not the input's
        cost; it runs at the next allocation after the call)."""
        was_enabled = gc.isenabled()
        gc.disable()
        # An input that hangs (the CPU bound is checked only once a call returns) ends the
        # process with every thread's traceback instead of the run's time limit.
        faulthandler.dump_traceback_later(HANG_S, exit=True)
        start = time.thread_time()
        try:
            target(data)
        except allowed:
            pass
        finally:
            spent = time.thread_time() - start
            faulthandler.cancel_dump_traceback_later()
            if was_enabled:
                gc.enable()
        return spent

    def one(data: bytes) -> None:
        nonlocal count
        count += 1
        spent = timed(data)
        if len(data) <= MAX_INPUT:
            limit = cpu_per_100kb * max(1.0, len(data) / 100_000)
            # Over the limit, the input is timed twice more and the least counts: a slice of CPU
            # lost to the machine's other work (cache, frequency, the other core's load) is not the
            # input's; a slow input is slow every time.
            for _ in range(2):
                if spent <= limit:
                    break
                spent = min(spent, timed(data))
            assert spent <= limit, f"{len(data)}-byte input took {spent:.3f} s of CPU (limit {limit:.3f} s): {data[:200]!r}"

    # warm-up (imports, caches) is not timed
    try:
        target(pool[0])
    except allowed:
        pass
    rss_before = _max_rss()
    # What exists now (hypothesis' own heap among it) is left out of the collector's full
    # collections, which would otherwise cost 70 to 230 ms at whichever input they fall on.
    gc.collect()
    gc.freeze()
    try:
        _run(one, pool, tokens, budget)
    finally:
        gc.unfreeze()
    growth = _max_rss() - rss_before
    assert growth <= max_rss_growth, f"peak RSS grew by {growth >> 20} MB while fuzzing (limit {max_rss_growth >> 20} MB)"
    return count


def _run(one: Callable[[bytes], None], pool: Sequence[bytes], tokens: Sequence[bytes], budget: float) -> None:
    for seed in pool:
        one(seed)
    deadline = time.monotonic() + budget
    strategy = st.one_of(mutated(pool, tokens), st.binary(max_size=4096))

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(strategy)
    def prop(data: bytes) -> None:
        one(data)

    while time.monotonic() < deadline:
        prop()


def require_extension(module: object | None, name: str) -> None:
    """A fuzz target of a C extension's loop: fails in CI (``CI=true``) when ``module`` (the
    extension, None when it is not built) is missing, is skipped elsewhere."""
    if module is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not built (setup.py's extension): its C loop is not fuzzed")
        pytest.skip(f"{name} is not built here (python setup.py build_ext --inplace)")
