"""Public plugin API: the loss ledger, where every place that drops data counts it, in one self-metric family.

``monbridge_dropped_total{component, reason, plugin}`` counts what was dropped — series, samples,
documents, results, notifications, messages: each ``component``'s own unit, which its ``reason``
names — by the part that dropped it (``pipeline``, ``exposition``, ``scrape``, ``remote_write``,
``otlp_export``, ``notification``, ``datadog_export``, ``dogstatsd``, ``elasticsearch_export``,
``nagios_export``, …) and the plugin it dropped it for (``plugin`` is empty for the agent's own
parts). ``GET /api/v1/plugins`` shows each plugin's part (``dropped``).

A part counts with ``count_loss(component, reason, n)`` where it drops, or keeps its drop counts
in a ``loss_counter(component)`` (a ``collections.Counter`` whose increments reach the ledger), so
that a part's own ``monbridge_<part>_dropped_total`` families and this one never disagree. The
plugin is the one whose call is running (``current_plugin``, set by the supervisor around every
call into a plugin and inherited by the tasks and threads the plugin starts), unless given.
Parts log their drops themselves; ``count_loss`` with ``detail`` logs for one that does not, at
most once a minute per component, reason and plugin.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["LEDGER", "LossLedger", "acting_for", "count_loss", "current_plugin", "loss_counter"]

log = logging.getLogger("monbridge.ledger")

#: The plugin whose call is running (``None``: the agent's own work).
current_plugin: ContextVar[str | None] = ContextVar("monbridge_current_plugin", default=None)

_LOG_EVERY_S = 60.0
#: Keys (component, reason, plugin) kept; past that many (reasons made of hostile input) further
#: ones share one key per component (``reason="other"``).
_MAX_KEYS = 4096

Key = tuple[str, str, str]


class LossLedger:
    """Counts of what was dropped, by (component, reason, plugin); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, float] = {}
        self._logged: dict[Key, float] = {}

    def count(self, component: str, reason: str, n: float = 1, *, plugin: str | None = None,
              detail: str | None = None) -> None:
        """Count ``n`` items ``component`` dropped for ``reason``; log ``detail`` (at most once a
        minute a key) when given."""
        if n <= 0:
            return
        who = plugin if plugin is not None else current_plugin.get() or ""
        key = (component, reason, who)
        with self._lock:
            if key not in self._counts and len(self._counts) >= _MAX_KEYS:
                key = (component, "other", who)
            self._counts[key] = self._counts.get(key, 0) + n
            if detail is None:
                return
            now = time.monotonic()
            last = self._logged.get(key)
            if last is not None and now - last < _LOG_EVERY_S:
                return
            self._logged[key] = now
        log.warning("%s dropped %g%s (%s): %s; counted in monbridge_dropped_total, logged at most once a minute",
                    component, n, f" for plugin {who}" if who else "", reason, detail)

    def counts(self) -> dict[Key, float]:
        with self._lock:
            return dict(self._counts)

    def of_plugin(self, plugin: str) -> dict[str, dict[str, float]]:
        """``plugin``'s counts: {component: {reason: n}}."""
        out: dict[str, dict[str, float]] = {}
        for (component, reason, who), n in sorted(self.counts().items()):
            if who == plugin:
                out.setdefault(component, {})[reason] = n
        return out

    def total(self, component: str, reason: str | None = None, plugin: str | None = None) -> float:
        """The sum of the counts that match (``None``: any)."""
        return sum(n for (c, r, p), n in self.counts().items()
                   if c == component and reason in (None, r) and plugin in (None, p))


#: The process's ledger (every part counts into it; the supervisor reports it).
LEDGER = LossLedger()


def count_loss(component: str, reason: str, n: float = 1, *, plugin: str | None = None,
               detail: str | None = None) -> None:
    """Count in the process's ledger (``LossLedger.count``)."""
    LEDGER.count(component, reason, n, plugin=plugin, detail=detail)


class _LossCounter(Counter[str]):
    """A ``Counter`` of drops by reason whose every increment is also counted in the ledger."""

    def __init__(self, component: str, plugin: str | None = None) -> None:
        super().__init__()
        self.component = component
        # The plugin it was made for: increments from threads, which do not inherit current_plugin.
        self.plugin = plugin if plugin is not None else current_plugin.get()

    def __setitem__(self, key: Any, n: int) -> None:
        delta = n - self.get(key, 0)
        super().__setitem__(key, n)
        if delta > 0:  # a key (name, reason) counts under its last part
            LEDGER.count(self.component, str(key[-1] if isinstance(key, tuple) else key), delta,
                         plugin=current_plugin.get() or self.plugin)

    def update(self, other: Any = None, /, **kw: int) -> None:
        counts = other if isinstance(other, Mapping) else Counter(other or ())
        for reason, n in (dict(counts) | kw).items():
            self[reason] += n

    def __reduce__(self) -> Any:  # a copy (Counter(c), copy) is a plain Counter
        return Counter, (dict(self),)


def loss_counter(component: str, plugin: str | None = None) -> Counter[Any]:
    """A ``Counter`` for a part's drops by reason (``c[reason] += n``, or ``c[(name, reason)]``)
    that counts each increment in the ledger too, for ``component`` and the running plugin (else
    ``plugin``, else the one running when it was made)."""
    return _LossCounter(component, plugin)


@contextmanager
def acting_for(plugin: str | None) -> Iterator[None]:
    """Run the block as ``plugin``'s (``current_plugin``): what it drops, and what the tasks and
    counters it makes drop, is counted for it."""
    token = current_plugin.set(plugin)
    try:
        yield
    finally:
        current_plugin.reset(token)
