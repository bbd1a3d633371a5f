"""Metrics that cron jobs and scripts write to ``*.prom`` files, read as node_exporter's textfile
collector (1.5) reads them.

* ``directory`` is a directory, or a glob naming several (``/var/lib/monbridge/textfile/*``);
  every regular file in it whose name ends in ``.prom`` is read each collection, in name order.
  Writers replace a file atomically (write ``x.prom.$$``, then rename it to ``x.prom``), so a
  half-written file is never seen.
* Each file is Prometheus text format 0.0.4, parsed by the Prometheus bridge's parser
  (``integrations.prometheus.textparse``, the grammar of Prometheus' own scrape parser) and
  converted as a scrape is: histograms and summaries keep their type, names and labels are kept
  as written. A family without ``# HELP`` is described as ``Metric read from <file>``.
* A file that cannot be read or parsed, or that has a sample with a timestamp (which
  node_exporter refuses), is reported (logged with ``<file>:<line>``, counted in
  ``monbridge_textfile_errors_total`` by reason) and contributes nothing: its last good content
  is not kept, so a broken file never looks fresh. ``node_textfile_scrape_error`` is 1 in that
  collection (and when the directory cannot be read), 0 otherwise.
* ``node_textfile_mtime_seconds{file="<path>"}`` is the modification time (whole seconds) of each
  file read successfully, so an alert can tell a cron job that stopped writing.
* The same series in two files: the first file's (in name order) is kept, the other is counted
  (reason ``duplicate``) and logged, as Prometheus' registry refuses it.

Bounds (a file is written by whoever can write the directory): at most ``max_files`` files a
collection (the rest are skipped and counted), at most ``max_file_bytes`` a file (a larger one
is an error), only regular files (a FIFO named ``x.prom`` would block a reader forever). The
files are read and parsed in a worker thread, off the event loop.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from bridge.api import (
    CollectorConfig,
    Metric,
    MetricCollectorPlugin,
    MetricKind,
    PluginConfig,
    PluginError,
    PluginMetadata,
    PluginType,
    validate_plugin_id,
)
from bridge.ledger import count_loss
from collectors.system import MetricSpec, Point, metrics_from_table

if TYPE_CHECKING:
    from integrations.prometheus.scrape import TargetScraper

__all__ = ["PLUGIN_ID", "TEXTFILE_METRICS", "TextfileCollector", "TextfileConfig", "TextfileError", "read_textfile"]

PLUGIN_ID = validate_plugin_id("monitoring.metrics.textfile", PluginType.METRIC_COLLECTOR)

log = logging.getLogger("monbridge.collectors.textfile")

_READ_CHUNK = 1 << 16


class TextfileConfig(CollectorConfig):
    directory: str = Field(
        min_length=1,
        description="the directory of *.prom files, or a glob naming several directories",
    )
    max_files: int = Field(default=1000, ge=1, description="most *.prom files read a collection; the rest are skipped")
    max_file_bytes: int = Field(
        default=4 << 20, ge=1, description="largest file read; a larger one is an error and contributes nothing",
    )


class TextfileError(Exception):
    """A file that contributes nothing this collection: ``reason`` labels the error counter,
    ``line`` is the 1-based line of the offending text (0 when the file as a whole is at fault)."""

    def __init__(self, reason: str, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.line = line


def read_textfile(path: str, max_bytes: int) -> tuple[bytes, float]:
    """The bytes of the regular file ``path`` (at most ``max_bytes``) and its mtime in seconds.

    Opened without blocking (a FIFO or a device is refused before any read) and without following
    a symlink to something other than a regular file; TextfileError for whatever is wrong."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise TextfileError("read", f"cannot open: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TextfileError("not_regular", "not a regular file")
        if st.st_size > max_bytes:
            raise TextfileError("too_large", f"{st.st_size} bytes, more than max_file_bytes ({max_bytes})")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(_READ_CHUNK, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:  # it grew since the fstat
                raise TextfileError("too_large", f"more than max_file_bytes ({max_bytes})")
        # Stat'ed again once read: the content goes with this mtime (node_exporter stats after parsing,
        # so that a failure does not appear fresh; the parse comes next, and a failed one drops both).
        return b"".join(chunks), os.fstat(fd).st_mtime
    except OSError as e:
        raise TextfileError("read", f"cannot read: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _line_of(text: bytes, key: str) -> int:
    """The 1-based line where the series text ``key`` starts a sample line (1 when not found)."""
    needle = key.encode("utf-8", "surrogateescape")
    at = 0
    while (at := text.find(needle, at)) >= 0:
        if at == 0 or text[at - 1:at] in (b"\n", b" ", b"\t"):
            return text.count(b"\n", 0, at) + 1
        at += 1
    return 1


def convert_textfile(scraper: TargetScraper, body: bytes, now_ns: int) -> list[Metric]:
    """The Metrics of one file's ``body``, converted by ``scraper`` (the file's own, which keeps
    its caches between collections). TextfileError names the line of a parse error or of a sample
    with a timestamp."""
    from integrations.prometheus.scrape import ScrapeFailed
    from integrations.prometheus.textparse import ParseError

    try:
        families = scraper.parser.parse(body)
    except ParseError as e:
        raise TextfileError("parse", e.message, e.line) from None
    for fam in families:
        for sample in fam.samples:
            if sample[3] is not None:
                raise TextfileError("timestamp", f"sample {sample[4][:80]!r} has a timestamp, which textfiles may not"
                                                 " carry (the whole file is skipped)", _line_of(body, sample[4]))
    try:
        # The parser's template makes this second parse of the same body a comparison.
        metrics, _ = scraper.convert(body, False, now_ns)
    except ParseError as e:  # not reached: the same body parsed above
        raise TextfileError("parse", e.message, e.line) from None
    except ScrapeFailed as e:
        raise TextfileError(e.reason, str(e)) from None
    return metrics


# --------------------------------------------------------------------------- one collection


@dataclass(slots=True)
class TextfileRound:
    """What one collection read: the files' metrics, their mtimes and what went wrong."""

    metrics: list[Metric] = field(default_factory=list)
    mtimes: dict[str, float] = field(default_factory=dict)  # path -> mtime of the files read
    errored: bool = False
    errors: Counter[str] = field(default_factory=Counter)  # reason -> count, this collection


def _mtimes(r: TextfileRound) -> Iterator[Point]:
    for path in sorted(r.mtimes):
        yield {"file": path}, float(int(r.mtimes[path]))


def _scrape_error(r: TextfileRound) -> Iterator[Point]:
    yield {}, 1.0 if r.errored else 0.0


_G = MetricKind.GAUGE

TEXTFILE_METRICS: tuple[MetricSpec[TextfileRound], ...] = (
    MetricSpec("node_textfile_mtime_seconds", _G, "", "Unixtime mtime of textfiles successfully read.", _mtimes),
    MetricSpec("node_textfile_scrape_error", _G, "", "1 if there was an error opening or reading a file, 0 otherwise",
               _scrape_error),
)

ERRORS_METRIC = "monbridge_textfile_errors_total"


class TextfileCollector(MetricCollectorPlugin):
    """node_exporter's textfile collector (see the module docstring)."""

    config_model: ClassVar[type[PluginConfig]] = TextfileConfig
    #: The files' names are Prometheus names, recorded as written (``job:rate5m``, ``x_count`` gauges).
    imports_prometheus_names: ClassVar[bool] = True

    def __init__(self) -> None:
        self._config: TextfileConfig | None = None
        self._scrapers: dict[str, TargetScraper] = {}
        self._errors: Counter[str] = Counter()  # reason -> count since initialize
        self._last_error: dict[str, str] = {}  # path -> the last error logged for it
        self._lock = threading.Lock()  # one collection at a time (a timed-out one may still run in its thread)

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(
            id=PLUGIN_ID,
            name="Textfile metrics",
            version="0.1.0",
            author="monbridge",
            description="Prometheus text files written by cron jobs and scripts, as node_exporter's textfile collector",
            plugin_type=PluginType.METRIC_COLLECTOR,
        )

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self._config = self.parse_config(config)
        self._scrapers = {}
        self._errors = Counter()
        self._last_error = {}

    async def start(self) -> None:
        """Nothing to start: the supervisor schedules the collections."""

    async def stop(self) -> None:
        """Nothing runs between collections."""

    async def shutdown(self) -> None:
        self._scrapers = {}

    async def collect_metrics(self) -> Sequence[Metric]:
        if self._config is None:
            raise PluginError(f"{PLUGIN_ID}: collect_metrics called before initialize")
        import asyncio
        import time

        cfg = self._config
        now_ns = time.time_ns()
        r = await asyncio.to_thread(self.read_round, cfg, now_ns)
        out = r.metrics
        out.extend(metrics_from_table(TEXTFILE_METRICS, r, self._row_failed))
        for reason in sorted(self._errors):
            out.append(Metric(ERRORS_METRIC, MetricKind.COUNTER, float(self._errors[reason]), "",
                              "Textfiles (or series of them) that contributed nothing, by reason", {"reason": reason}))
        return out

    def _row_failed(self, name: str, exc: BaseException) -> None:
        log.warning("textfile: metric %s not built: %s: %s", name, type(exc).__name__, exc)

    # ----------------------------------------------------------------- reading (worker thread)

    def _files(self, cfg: TextfileConfig, r: TextfileRound) -> list[str]:
        directories = sorted(glob.glob(cfg.directory)) if glob.has_magic(cfg.directory) else []
        files: list[str] = []
        for directory in directories or [cfg.directory]:
            try:
                with os.scandir(directory) as it:
                    names = sorted(e.name for e in it if e.name.endswith(".prom"))
            except OSError as e:
                self._failed(r, directory, TextfileError("directory", f"cannot read the directory: {e.strerror or e}"))
                continue
            files.extend(os.path.join(directory, n) for n in names)
        if len(files) > cfg.max_files:
            skipped = files[cfg.max_files:]
            r.errored = True
            r.errors["too_many_files"] += len(skipped)
            self._note(cfg.directory, f"{len(files)} *.prom files, more than max_files ({cfg.max_files}): "
                                      f"{len(skipped)} skipped, from {skipped[0]}")
            files = files[:cfg.max_files]
        return files

    def read_round(self, cfg: TextfileConfig, now_ns: int) -> TextfileRound:
        """Read every file once (blocking: run it in a worker thread)."""
        from integrations.prometheus.scrape import Target, TargetScraper

        with self._lock:
            r = TextfileRound()
            files = self._files(cfg, r)
            scrapers: dict[str, TargetScraper] = {}
            read: list[tuple[str, list[Metric]]] = []
            for path in files:
                scraper = self._scrapers.get(path) or TargetScraper(Target(path, {}))
                scrapers[path] = scraper
                try:
                    body, mtime = read_textfile(path, cfg.max_file_bytes)
                    metrics = convert_textfile(scraper, body, now_ns)
                except TextfileError as e:
                    self._failed(r, path, e)
                    continue
                except Exception as e:  # noqa: BLE001 - one file's fault stays with that file
                    self._failed(r, path, TextfileError("error", f"{type(e).__name__}: {e}"))
                    continue
                if self._last_error.pop(path, None) is not None:
                    log.info("textfile %s: read again", path)
                r.mtimes[path] = mtime
                read.append((path, metrics))
            self._merge(read, r)
            self._scrapers = scrapers  # files that went are forgotten
            if len(self._last_error) > 4 * cfg.max_files:
                self._last_error.clear()
            for reason, n in r.errors.items():
                self._errors[reason] += n
                count_loss("textfile", reason, n)
            return r

    def _merge(self, read: list[tuple[str, list[Metric]]], r: TextfileRound) -> None:
        """The files' metrics into ``r``, each described; a series already read from an earlier
        file is skipped, counted and logged. Only the names that more than one file has are
        checked series by series (most files have names of their own)."""
        first_file: dict[str, str] = {}
        shared: set[str] = set()
        for path, metrics in read:
            for name in {m.name for m in metrics}:
                if first_file.setdefault(name, path) != path:
                    shared.add(name)
        seen: dict[tuple[str, tuple[tuple[str, Any], ...]], str] = {}
        out = r.metrics
        for path, metrics in read:
            help_ = f"Metric read from {path}"
            for m in metrics:
                if not m.description:
                    m.description = help_
                if m.name in shared:
                    first = seen.setdefault((m.name, tuple(sorted(m.attributes.items()))), path)
                    if first != path:
                        r.errors["duplicate"] += 1
                        self._note(path, f"series {m.name}{dict(m.attributes)} was read from {first} already: skipped")
                        continue
                out.append(m)

    def _failed(self, r: TextfileRound, path: str, e: TextfileError) -> None:
        r.errored = True
        r.errors[e.reason] += 1
        where = f"{path}:{e.line}" if e.line else path
        self._note(path, f"{e}; the file contributes nothing", where)

    def _note(self, path: str, message: str, where: str | None = None) -> None:
        """Log ``message`` about ``path``: a warning when it differs from the last one logged for the path."""
        text = f"textfile {where or path}: {message}"
        level = logging.DEBUG if self._last_error.get(path) == text else logging.WARNING
        self._last_error[path] = text
        log.log(level, "%s", text)
