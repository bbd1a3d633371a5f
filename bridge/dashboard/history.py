"""Recent history of every pipeline series in memory, for charts without an outside database.

Every ``resolution`` seconds the sampler takes the pipeline's batch and writes one row: each
numeric series' value (a histogram's or summary's ``_count`` and ``_sum``) into slot ``row %
slots`` of that series' ring, an ``array('d')`` of ``slots = window / resolution`` doubles; a
series absent from a row gets NaN there. The rows' times are one more shared ring. A series
absent for a whole window is forgotten.

Cost per series: the ring (``8 * slots`` bytes plus the array's 64-byte header) and its entry
in the index (the key tuple and the dict slot, about 160 bytes; the key's label tuple is the
pipeline's own, shared). With the defaults (1 h at 15 s: 240 slots) that is 2,304 bytes a
series as counted, 9.6 bytes a sample (2,138 measured with tracemalloc); ``bytes_per_series`` gives
the figure for a configuration, and the default ``max_bytes`` (16 MiB) holds 7,281 series. The total
is bounded by ``max_bytes``: a new series that would pass it is not kept, and is counted in
``monbridge_dashboard_history_series_refused_total`` (logged once a minute).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.api import HistogramValue, Metric, MetricKind, SummaryValue
from bridge.ledger import count_loss
from bridge.tasks import gc_paused

__all__ = ["History", "HistorySeries", "Key", "bytes_per_series"]

log = logging.getLogger("monbridge.dashboard.history")

#: (sample name, label pairs sorted by name) as Prometheus exposes the series.
Key = tuple[str, tuple[tuple[str, str], ...]]
NAN = math.nan
#: A key's tuple (56 bytes) and its share of the index dict (an entry and spare room).
_INDEX_BYTES_PER_SERIES = 56 + 104
_REFUSAL_LOG_EVERY_S = 60.0


def bytes_per_series(slots: int) -> int:
    """What one series costs in the history with ``slots`` slots (its ring and index entry)."""
    return sys.getsizeof(array("d", bytes(8 * slots))) + _INDEX_BYTES_PER_SERIES


@dataclass(frozen=True, slots=True)
class HistorySeries:
    """One series of a query's answer: its key and values on the answer's time grid (NaN: none)."""

    key: Key
    kind: MetricKind
    values: array[float]


def _key(point: Any) -> Key:
    """The key of a batch's series (``bridge.pipeline.SeriesPoint``), from its Prometheus view."""
    view = point.prom
    return (view.name, view.labels)


class History:
    """The rings of every series (thread-safe: the sampler writes in a worker thread)."""

    def __init__(self, window: float, resolution: float, max_bytes: int) -> None:
        if resolution <= 0 or window < 2 * resolution:
            raise ValueError(f"history: the window ({window}s) must hold at least two rows of {resolution}s")
        self.window = window
        self.resolution = resolution
        self.slots = int(window // resolution)
        self.max_bytes = max_bytes
        self.series_bytes = bytes_per_series(self.slots)
        self.times = array("d", [NAN]) * self.slots
        self.rows = 0  # rows written so far; the next goes to slot rows % slots
        self._rings: dict[Key, array[float]] = {}
        self._kinds: dict[Key, MetricKind] = {}
        self._lock = threading.Lock()
        self.refused = 0
        self._refusal_logged = -_REFUSAL_LOG_EVERY_S
        self._empty = array("d", [NAN]) * self.slots
        # family name -> (its series, their keys) as of the last row (``sample``)
        self._keys: dict[str, tuple[tuple[object, ...], list[Key]]] = {}

    # ------------------------------------------------------------------ writing

    @property
    def series_count(self) -> int:
        return len(self._rings)

    @property
    def bytes(self) -> int:
        """The memory the history holds: each series' ring and index entry, and the time ring."""
        return len(self._rings) * self.series_bytes + sys.getsizeof(self.times)

    def sample(self, families: Iterable[object], now: float) -> None:
        """Write one row at ``now`` from a batch's families (``bridge.pipeline.FamilySnapshot``).

        A family's keys are made once (from each series' Prometheus view) and kept until its
        series change: they are the same for the same series, and reading the label set back
        from a series' text costs more than the rest of the row. The kept keys cost a pointer
        and a key tuple per series, held until the next row, for at most twice the series the
        rings can hold (``max_bytes``). The row holds a key per series
        until it is written: the cyclic GC, which would walk every live object again each time
        the row grows past a generation's threshold, waits for the end (nothing here makes a
        cycle)."""
        families = list(families)
        with gc_paused(sum(len(fam.refs) for fam in families)):  # type: ignore[attr-defined]
            self._sample(families, now)

    def _sample(self, families: list[object], now: float) -> None:
        row: list[tuple[Key, MetricKind, float]] = []
        append = row.append
        kept = self._keys
        fresh: dict[str, tuple[tuple[object, ...], list[Key]]] = {}
        counter = MetricKind.COUNTER
        # Keys are kept for as many series as twice the rings can hold, the families first in
        # order: what they cost stays within a share of max_bytes however many series there are.
        room = 2 * (self.max_bytes // self.series_bytes)
        for fam in families:
            kind: MetricKind = fam.kind  # type: ignore[attr-defined]
            name: str = fam.name  # type: ignore[attr-defined]
            refs: tuple[object, ...] = fam.refs  # type: ignore[attr-defined]
            got = kept.get(name)
            if got is not None and got[0] == refs:  # the same series (compared by identity)
                keys = got[1]
            else:  # the keys of the series it had, the others' made
                known = dict(zip(got[0], got[1], strict=True)) if got is not None else {}
                keys = [known.get(s) or _key(p) for s, p in zip(refs, fam.series, strict=True)]  # type: ignore[attr-defined]
            if len(refs) <= room:
                fresh[name] = (refs, keys)
                room -= len(refs)
            for key, value in zip(keys, fam.values, strict=True):  # type: ignore[attr-defined]
                cls = value.__class__
                if cls is float or cls is int:
                    append((key, kind, float(value)))
                elif isinstance(value, (HistogramValue, SummaryValue)):
                    append(((key[0] + "_count", key[1]), counter, float(value.count)))
                    append(((key[0] + "_sum", key[1]), counter, float(value.sum)))
                elif isinstance(value, (int, float)):
                    append((key, kind, float(value)))
        self._keys = fresh
        self.write_row(row, now)

    def write_row(self, row: Sequence[tuple[Key, MetricKind, float]], now: float) -> None:
        """Write one row: (key, kind, value) of each series present at ``now``."""
        with self._lock:
            slot = self.rows % self.slots
            rings = self._rings
            for ring in rings.values():
                ring[slot] = NAN
            refused = 0
            budget = self.max_bytes - self.bytes
            for key, kind, value in row:
                found = rings.get(key)
                if found is None:
                    if budget < self.series_bytes:
                        refused += 1
                        continue
                    budget -= self.series_bytes
                    found = rings[key] = array("d", self._empty)
                    self._kinds[key] = kind
                found[slot] = value
            self.times[slot] = now
            self.rows += 1
            if self.rows % self.slots == 0:
                self._forget_gone()
        if refused:
            self.refused += refused
            count_loss("dashboard_history", "memory_limit", refused)
            mono = time.monotonic()
            if mono - self._refusal_logged >= _REFUSAL_LOG_EVERY_S:
                self._refusal_logged = mono
                log.warning("dashboard history: %d new series not kept: %d series use its %d bytes "
                            "(dashboard.history.max_bytes; counted in monbridge_dashboard_history_series_refused_total)",
                            refused, len(self._rings), self.max_bytes)

    def _forget_gone(self) -> None:
        gone = [k for k, ring in self._rings.items() if all(v != v for v in ring)]
        for k in gone:
            del self._rings[k]
            del self._kinds[k]

    def self_metrics(self) -> list[Metric]:
        G, C = MetricKind.GAUGE, MetricKind.COUNTER
        return [
            Metric("monbridge.dashboard.history.series", G, len(self._rings), "",
                   "series held in the dashboard's recent history"),
            Metric("monbridge.dashboard.history.memory", G, self.bytes, "By",
                   "memory held by the dashboard's recent history (rings and index)"),
            Metric("monbridge.dashboard.history.memory_limit", G, self.max_bytes, "By",
                   "dashboard.history.max_bytes"),
            Metric("monbridge.dashboard.history.series_refused", C, self.refused, "",
                   "new series the dashboard's history did not keep because it was full"),
        ]

    # ------------------------------------------------------------------ reading

    @property
    def default_range(self) -> float:
        """The window an answer covers when its request names none: an hour, or the history's window."""
        return min(3600.0, self.window)

    def grid(self, start: float, end: float, step: float) -> tuple[list[float], list[int]]:
        """The rows an answer from ``start`` to ``end`` every ``step`` seconds is made of: their
        times and slots, oldest first (one row a step: the last row at or before each step's end)."""
        with self._lock:
            return self._grid(start, end, step)

    def _grid(self, start: float, end: float, step: float) -> tuple[list[float], list[int]]:
        n = min(self.rows, self.slots)
        first = self.rows - n
        slots = [(first + i) % self.slots for i in range(n)]
        times = [self.times[s] for s in slots]
        out_t: list[float] = []
        out_s: list[int] = []
        last_t = -math.inf
        for t, s in zip(times, slots, strict=True):
            if t < start or t > end:
                continue
            if out_t and t - out_t[-1] < step - self.resolution / 2:
                continue
            if t <= last_t:
                continue
            last_t = t
            out_t.append(t)
            out_s.append(s)
        return out_t, out_s

    def keys(self) -> list[tuple[Key, MetricKind]]:
        with self._lock:
            return list(self._kinds.items())

    def values(self, keys: Sequence[Key], slots: Sequence[int]) -> list[HistorySeries]:
        """The values of ``keys`` (those still held) at ``slots``."""
        out = []
        with self._lock:
            rings, kinds = self._rings, self._kinds
            contiguous = _as_slices(slots, self.slots)
            for key in keys:
                ring = rings.get(key)
                if ring is None:
                    continue
                if contiguous is not None:
                    vals = array("d")
                    for a, b, k in contiguous:
                        vals += ring[a:b:k]
                else:
                    vals = array("d", [ring[s] for s in slots])
                out.append(HistorySeries(key, kinds[key], vals))
        return out


def _as_slices(slots: Sequence[int], size: int) -> list[tuple[int, int, int]] | None:
    """``slots`` as at most two ``(start, stop, step)`` slices of a ring of ``size`` when they are
    evenly spaced (the common case), else None."""
    if len(slots) < 2:
        return [(s, s + 1, 1) for s in slots]
    k = (slots[1] - slots[0]) % size
    if k == 0 or any((b - a) % size != k for a, b in zip(slots, slots[1:], strict=False)):
        return None
    out: list[tuple[int, int, int]] = []
    i = 0
    while i < len(slots):
        j = i
        while j + 1 < len(slots) and slots[j + 1] == slots[j] + k:
            j += 1
        out.append((slots[i], slots[j] + 1, k))
        i = j + 1
    return out if len(out) <= 3 else None
