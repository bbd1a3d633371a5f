"""``gc_outside(target)``: ``target`` with the cyclic garbage collector paused while it runs.

The harness bounds the CPU time of each call of a target; a full collection of the process's
heap (mostly hypothesis' own objects) costs about 100 ms here and lands on whichever input
happens to allocate when it falls due. Paused during the call, the collection runs at the next
allocation after it, outside the timed call; the input's own garbage is collected then too.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def gc_outside(target: Callable[[bytes], T]) -> Callable[[bytes], T]:
    def run(data: bytes) -> T:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return target(data)
        finally:
            if was_enabled:
                gc.enable()

    return run
