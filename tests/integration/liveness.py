"""What the hostile-input tests check of the whole agent while a peer misbehaves: ``/metrics``
keeps answering and another plugin keeps its schedule.

``steady_collector(tmp_path)`` is the other plugin: the textfile collector on a directory of one
file, every ``STEADY_INTERVAL`` s (a collection may take ``ANSWER_BOUND_S``). ``Liveness(mb)``
scrapes the agent's ``/metrics`` every ``period`` s in a thread (as Prometheus would) while the test feeds the hostile input; each
scrape's outcome and time are kept, with the collector's successful runs
(``monbridge_plugin_runs_total{result="success"}``) and the time of its last one
(``monbridge_plugin_last_success_timestamp_seconds``) read from it. ``check()`` asserts that every
scrape answered 200 within ``ANSWER_BOUND_S`` (a liveness bound, far above what an answer takes:
not a performance assertion) and that the collector ran at least half the rounds its interval
gives over the watch, none of them further apart than ``ANSWER_BOUND_S``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import http_get

STEADY = "monitoring.metrics.textfile"
STEADY_INTERVAL = 0.5
#: The longest a scrape of /metrics, or the gap between two rounds of the steady collector, may take.
ANSWER_BOUND_S = 5.0


def steady_collector(tmp_path: Path) -> dict[str, Any]:
    """The plugin entry of the collector that must keep its schedule."""
    d = tmp_path / "steady"
    d.mkdir(exist_ok=True)
    (d / "steady.prom").write_text("steady_value 1\n")
    # a collection may take up to the liveness bound: on a loaded machine, a tight timeout would
    # measure the machine, not the agent
    return {"plugin_id": STEADY, "config": {"directory": str(d), "collection_interval": STEADY_INTERVAL,
                                            "timeout": ANSWER_BOUND_S}}


def sample(text: str, name: str, *labels: str) -> float | None:
    """The value of the first line of ``name`` holding every one of ``labels`` (``k="v"``)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(lb in line for lb in labels):
            return float(line.rsplit(" ", 1)[1])
        if not labels and line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def total(text: str, name: str, *labels: str) -> float:
    """The sum of the samples of ``name`` holding every one of ``labels``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and all(lb in line for lb in labels))


@dataclass
class Scrape:
    at: float
    seconds: float
    status: int | None
    error: str | None = None
    runs: float | None = None
    last_success: float | None = None


@dataclass
class Liveness:
    """Scrapes ``mb``'s /metrics every ``period`` s from ``start()`` to ``stop()`` (or as a context manager)."""

    mb: Any
    plugin_id: str = STEADY
    period: float = 0.25
    scrapes: list[Scrape] = field(default_factory=list)
    last_text: str = ""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)

    def __enter__(self) -> Liveness:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        pid = f'plugin_id="{self.plugin_id}"'
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                # the client waits far longer than the bound, so that a slow answer is seen as slow, not lost
                status, _, body = http_get(self.mb.url + "/metrics", timeout=6 * ANSWER_BOUND_S)
            except OSError as e:
                self.scrapes.append(Scrape(t0, time.monotonic() - t0, None, f"{type(e).__name__}: {e}"))
            else:
                text = body.decode(errors="replace")
                self.last_text = text
                self.scrapes.append(Scrape(t0, time.monotonic() - t0, status, None,
                                           sample(text, "monbridge_plugin_runs_total", pid, 'result="success"'),
                                           sample(text, "monbridge_plugin_last_success_timestamp_seconds", pid)))
            self._stop.wait(max(0.0, self.period - (time.monotonic() - t0)))

    def check(self, interval: float = STEADY_INTERVAL) -> None:
        scrapes = list(self.scrapes)
        assert len(scrapes) >= 10, f"only {len(scrapes)} scrapes of /metrics over the watch"
        failed = [s for s in scrapes if s.status != 200]
        assert not failed, f"{len(failed)} of {len(scrapes)} scrapes of /metrics failed, e.g. {failed[:3]}"
        slow = [s for s in scrapes if s.seconds >= ANSWER_BOUND_S]
        assert not slow, f"{len(slow)} of {len(scrapes)} scrapes of /metrics took {ANSWER_BOUND_S} s or more: {slow[:3]}"
        runs = [s.runs for s in scrapes if s.runs is not None]
        assert runs, f"{self.plugin_id} never reported a run"
        watched = scrapes[-1].at - scrapes[0].at
        rounds = runs[-1] - runs[0]
        assert rounds >= 0.5 * watched / interval, (
            f"{self.plugin_id} ran {rounds:g} rounds in {watched:.1f} s at an interval of {interval} s")
        stamps = sorted({s.last_success for s in scrapes if s.last_success is not None})
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert gaps and max(gaps) < ANSWER_BOUND_S, f"{self.plugin_id}'s runs stalled: gaps {gaps}"
