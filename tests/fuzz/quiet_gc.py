"""The cyclic garbage collector kept out of fuzz targets' CPU time.

A fuzzing process holds a large heap of hypothesis' own data; a full collection of it took 70 to
230 ms, charged by the harness' CPU bound to whichever input happened to trigger it (one byte
long or not). ``quiet_gc`` freezes what exists when fuzzing starts and runs each call of the
target with the collector off, so the bound measures the target alone."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def quiet_gc(target: Callable[[bytes], object]) -> Iterator[Callable[[bytes], object]]:
    """``target`` wrapped to run with the collector off, for use while the block runs."""

    def run(data: bytes) -> object:
        gc.disable()
        try:
            return target(data)
        finally:
            gc.enable()

    gc.collect()
    gc.freeze()
    try:
        yield run
    finally:
        gc.unfreeze()
