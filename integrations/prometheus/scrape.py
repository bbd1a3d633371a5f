"""Scraping Prometheus targets, as Prometheus scrapes them, into the pipeline's Metric type.

One ``TargetScraper`` per target keeps what a target's series resolve to (target labels
merged, ``metric_relabel_configs`` applied, the sample's role in its family) keyed on the
exact series text of the exposition, so a repeated scrape of an unchanged target costs a dict
lookup and a float per sample: this is the hot path measured in ``benchmarks/bench_scrape_rw.py``.

What Prometheus 2.42 does, this does:

* content negotiation (OpenMetrics first, then text 0.0.4), gzip, ``X-Prometheus-Scrape-Timeout-Seconds``;
* ``job`` and ``instance`` target labels; with ``honor_labels: false`` a scraped label that
  collides with a target label is kept as ``exported_<name>``, with ``true`` the scraped one wins;
* ``metric_relabel_configs`` on every sample, then the label limits and ``sample_limit``, each
  of which fails the whole scrape (``up`` = 0) as Prometheus does;
* the synthetic series ``up``, ``scrape_duration_seconds``, ``scrape_samples_scraped``,
  ``scrape_samples_post_metric_relabeling``, ``scrape_series_added``;
* ``body_size_limit`` on the decompressed body, read in chunks: a larger (or endless) body fails the scrape;
* a parse error fails the scrape with its line number in the log; whatever fails one target's
  scrape (even an error nobody foresaw) fails it alone: other targets are untouched;
* duplicate series within one scrape: the first is kept, the rest counted.

Counters, gauges, histograms and summaries keep their type: a histogram's ``_bucket`` /
``_sum`` / ``_count`` / ``_created`` samples become one pre-aggregated ``HistogramValue`` (its
``le`` texts kept, as Prometheus 2 keeps them), a summary's quantiles one ``SummaryValue``,
``_created`` a start time. A family that does not assemble (no ``+Inf`` bucket, counts that go
down) is imported sample by sample as gauges, as Prometheus stores it, never guessed at.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.api import HistogramValue, Metric, MetricKind, SummaryValue
from bridge.helpers import gc_paused
from integrations.prometheus.config import DEFAULT_BODY_SIZE_LIMIT
from integrations.prometheus.relabel import Relabeler
from integrations.prometheus.textparse import ParsedFamily, ParseError, TextParser, go_float

__all__ = ["ACCEPT_HEADER", "DEFAULT_BODY_SIZE_LIMIT", "ScrapeLimits", "ScrapeResult", "Target", "TargetScraper", "instance_of"]

log = logging.getLogger("monbridge.prometheus.scrape")

#: What Prometheus 2.42 sends: OpenMetrics preferred, then the text format.
ACCEPT_HEADER = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                 "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
# Bodies above this size are parsed in a worker thread, so the event loop stays responsive: the
# parser is linear, and at most this much text costs a few milliseconds of loop time.
_LARGE_BODY = 32 * 1024
_READ_CHUNK = 256 * 1024
_BYTES_PER_SERIES = 64  # a rough size of one series' line, to tell a large body

G, C = MetricKind.GAUGE, MetricKind.COUNTER


def instance_of(url: str) -> str:
    """``host:port`` of a target URL, the port filled in from the scheme as Prometheus does."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{host}:{port}"


@dataclass(frozen=True)
class Target:
    """One scrape target: its URL and its target labels (``job``, ``instance`` and any others)."""

    url: str
    labels: Mapping[str, str]
    source: str = "static"  # where it was configured: "static", or the file_sd group

    @property
    def job(self) -> str:
        return self.labels.get("job", "")

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.url, tuple(sorted(self.labels.items()))


@dataclass(frozen=True)
class ScrapeLimits:
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0
    body_size_limit: int = DEFAULT_BODY_SIZE_LIMIT  # decompressed bytes; 0 = no limit


class ScrapeFailed(Exception):
    """The scrape as a whole failed (``up`` = 0); ``reason`` is the label of the failure counter."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class ScrapeResult:
    target: Target
    metrics: list[Metric]
    up: bool
    duration: float
    samples_scraped: int = 0
    samples_post_relabel: int = 0
    series_added: int = 0
    duplicates: int = 0
    error: str | None = None
    failure: str | None = None  # reason label of a failed scrape


class _Ident:
    """One final series of a target (name and labels after relabeling); hashed by identity, so
    the per-scrape duplicate check costs no tuple hashing."""

    __slots__ = ("name", "key")

    def __init__(self, name: str, key: tuple[tuple[str, str], ...]) -> None:
        self.name = name
        self.key = key


# Roles of a sample in its family.
_VALUE, _CREATED, _BUCKET, _SUM, _COUNT, _QUANTILE = range(6)


@dataclass(slots=True)
class _Resolved:
    """What one series text of the exposition resolves to, cached per target."""

    ftype: str  # the family's type and name when resolved (a change of either resolves again)
    fname: str
    kind: MetricKind  # of a plain sample: COUNTER for a counter's value, else GAUGE
    name: str  # final sample name
    attrs: dict[str, str]  # final labels without __name__ (and without le/quantile for bucket/quantile roles)
    ident: _Ident  # the final series (with le/quantile)
    group: _Ident | None  # histogram/summary/counter group (final base name + attrs without le/quantile)
    role: int
    arg: str = ""  # le or quantile text
    argf: float = 0.0
    metric: Metric | None = None  # a plain sample's Metric, reused scrape after scrape


@dataclass
class _Group:
    kind: MetricKind
    name: str
    attrs: dict[str, str]
    help: str
    ts: int | None = None
    value: float | None = None
    created: float | None = None
    sum: float | None = None
    count: float | None = None
    parts: list[tuple[str, float, float]] = field(default_factory=list)  # (le/quantile text, as float, value)
    raw: list[tuple[_Resolved, float]] = field(default_factory=list)  # the samples as they came


class TargetScraper:
    """Scrapes one target and converts what it exposes; keeps per-target caches between scrapes."""

    def __init__(self, target: Target, *, limits: ScrapeLimits = ScrapeLimits(), relabeler: Relabeler | None = None,
                 honor_labels: bool = False, honor_timestamps: bool = True) -> None:
        self.target = target
        self.limits = limits
        self.relabeler = relabeler
        self.honor_labels = honor_labels
        self.honor_timestamps = honor_timestamps
        self.parser = TextParser()
        self._converting = threading.Lock()  # a conversion still running in a thread when the next starts
        self._resolved: dict[str, _Resolved | None] = {}
        self._idents: dict[tuple[str, tuple[tuple[str, str], ...]], _Ident] = {}
        self._previous: set[_Ident] = set()
        self._pairs: dict[tuple[str, str], tuple[str, str]] = {}
        # The target's labels, to add to a series' own (None: one is an le or a quantile, which
        # decide a series' role in its family: the general path then sees them)
        self._target_items: tuple[tuple[str, str], ...] | None = None if {"le", "quantile"} & target.labels.keys() \
            else tuple((k, v) for k, v in target.labels.items() if v != "")
        self._limited = bool(limits.label_limit or limits.label_name_length_limit or limits.label_value_length_limit)
        self.last_error: str | None = None

    # ------------------------------------------------------------------ fetching

    async def scrape(self, session: Any, timeout: float) -> ScrapeResult:
        """One scrape: fetch, parse, convert. Never raises for the target's faults (they are the result)."""
        import aiohttp

        start_ns = time.time_ns()
        t0 = time.perf_counter()
        headers = {"Accept": ACCEPT_HEADER, "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}",
                   "Accept-Encoding": "gzip"}
        try:
            async with asyncio.timeout(timeout):
                async with session.get(self.target.url, headers=headers) as resp:
                    if resp.status != 200:
                        why = f"server returned HTTP status {resp.status} {resp.reason or ''}".rstrip()
                        raise ScrapeFailed("http_status", why)
                    body = await self._read_body(resp)
                    ctype = resp.headers.get("Content-Type", "")
            openmetrics = ctype.startswith("application/openmetrics-text")
            if len(body) <= _LARGE_BODY and self._converting.acquire(blocking=False):
                try:
                    metrics, stats = self._convert(body, openmetrics, start_ns)
                finally:
                    self._converting.release()
            else:
                metrics, stats = await asyncio.to_thread(self.convert, body, openmetrics, start_ns)
        except ScrapeFailed as e:
            return self._failed(e.reason, str(e), t0)
        except ParseError as e:
            return self._failed("parse", f"parse error at {e}", t0)
        except TimeoutError:
            return self._failed("timeout", f"scrape timed out after {timeout:g}s", t0)
        except aiohttp.ClientError as e:
            return self._failed("http", f"{type(e).__name__}: {e}", t0)
        except OSError as e:
            return self._failed("http", f"{type(e).__name__}: {e}", t0)
        except Exception as e:  # noqa: BLE001 - whatever one target makes go wrong fails its scrape alone
            return self._failed("error", f"{type(e).__name__}: {e}", t0, e)
        duration = time.perf_counter() - t0
        if self.last_error is not None:
            log.info("scrape of %s (job %s) recovered", self.target.url, self.target.job)
            self.last_error = None
        return ScrapeResult(self.target, metrics, True, duration, *stats)

    async def _read_body(self, resp: Any) -> bytearray:
        """The response body, decompressed, read in chunks and refused past ``body_size_limit``
        (before more than one chunk beyond it is held, however large or endless the body)."""
        limit = self.limits.body_size_limit
        body = bytearray()
        while chunk := await resp.content.read(_READ_CHUNK):
            body += chunk
            # A compressed body decompresses as fast as it is read, and a read of data already
            # buffered returns without suspending: without this, a gzip bomb's whole
            # body_size_limit would be inflated in one turn of the event loop.
            await asyncio.sleep(0)
            if limit and len(body) > limit:
                raise ScrapeFailed("body_size_limit", f"body_size_limit exceeded: the response body (decompressed) "
                                                      f"is larger than {limit} bytes")
        return body

    def _failed(self, reason: str, message: str, t0: float, exc: BaseException | None = None) -> ScrapeResult:
        if message != self.last_error:
            log.warning("scrape of %s (job %s) failed: %s; up=0 for this target", self.target.url, self.target.job, message,
                        exc_info=exc)
        self.last_error = message
        self._previous = set()
        return ScrapeResult(self.target, [], False, time.perf_counter() - t0, error=message, failure=reason)

    # ------------------------------------------------------------------ converting

    def convert(self, body: bytes | bytearray | str, openmetrics: bool,
                start_ns: int) -> tuple[list[Metric], tuple[int, int, int, int]]:
        """Parse ``body`` and return (metrics, (scraped, post-relabel, series added, duplicates)).
        Raises ParseError or ScrapeFailed (limits) for a failed scrape. The Metric objects are
        this target's own and are updated by its next convert: record them before that. One
        conversion of a target at a time (a thread may still run one when the next scrape comes)."""
        with self._converting:
            return self._convert(body, openmetrics, start_ns)

    def _convert(self, body: bytes | bytearray | str, openmetrics: bool,
                 start_ns: int) -> tuple[list[Metric], tuple[int, int, int, int]]:
        # A large body makes a container per series (its parse, its Metric, the first time its
        # labels): the cyclic collector would walk the growing heap over and over meanwhile.
        with gc_paused(len(body) // _BYTES_PER_SERIES):
            return self._convert_body(body, openmetrics, start_ns)

    def _convert_body(self, body: bytes | bytearray | str, openmetrics: bool,
                      start_ns: int) -> tuple[list[Metric], tuple[int, int, int, int]]:
        families = self.parser.parse(body, openmetrics)
        scrape_ms = start_ns // 1_000_000
        default_ns = scrape_ms * 1_000_000
        honor_ts = self.honor_timestamps
        resolved = self._resolved
        resolve = self._resolve
        seen: set[_Ident] = set()
        seen_add = seen.add
        out: list[Metric] = []
        add = out.append
        scraped = post = dups = 0
        groups: dict[_Ident, _Group] = {}
        sample_limit = self.limits.sample_limit
        for fam in families:
            ftype, fname = fam.type, fam.name
            for name, labels, value, ts_ms, key in fam.samples:
                scraped += 1
                r = resolved.get(key, _MISSING)
                if r is _MISSING or (r is not None and (r.ftype != ftype or r.fname != fname)):
                    # New series text, or its family's metadata changed since it was resolved.
                    r = resolved[key] = resolve(fam, name, labels)
                if r is None:
                    continue  # dropped by metric_relabel_configs
                ident = r.ident
                if ident in seen:
                    dups += 1
                    continue
                seen_add(ident)
                post += 1
                t = ts_ms * 1_000_000 if (ts_ms is not None and honor_ts) else default_ns
                role = r.role
                grp = r.group
                if grp is None or (role == _VALUE and not openmetrics):
                    # A plain sample (text-format counters have no _created in their family).
                    # One Metric per series, updated in place: allocating one per sample per scrape
                    # cost more than the rest of the conversion (benchmarks/bench_scrape_rw.py).
                    m = r.metric
                    if m is None:
                        m = r.metric = Metric(r.name, r.kind, value, "", fam.help, r.attrs, t)
                    else:
                        m.value = value
                        m.timestamp_ns = t
                        if m.description != fam.help:
                            m.description = fam.help
                    add(m)
                    continue
                if role == _CREATED:
                    # Prometheus 2 stores _created as a series of its own; it is also the start time.
                    add(Metric(r.name, G, value, "", fam.help, r.attrs, t))
                g = groups.get(grp)
                if g is None:
                    kind = MetricKind.HISTOGRAM if ftype == "histogram" else (
                        MetricKind.SUMMARY if ftype == "summary" else C)
                    g = groups[grp] = _Group(kind, grp.name, r.attrs, fam.help, t)
                if role == _CREATED:
                    g.created = value
                    continue
                g.raw.append((r, value))
                if role == _VALUE:
                    g.value = value
                elif role == _SUM:
                    g.sum = value
                elif role == _COUNT:
                    g.count = value
                else:
                    g.parts.append((r.arg, r.argf, value))
        if sample_limit and post > sample_limit:
            raise ScrapeFailed("sample_limit", f"sample_limit exceeded: {post} samples after relabeling, limit {sample_limit}")
        for g in groups.values():
            self._assemble(g, add)
        added = len(seen - self._previous) if self._previous else len(seen)
        self._previous = seen
        if len(resolved) > 4 * max(scraped, 1000):  # series come and go: keep the cache to what is current
            self._resolved = {k: v for k, v in resolved.items() if v is None or v.ident in seen}
        return out, (scraped, post, added, dups)

    def _assemble(self, g: _Group, add: Any) -> None:
        help_ = g.help
        start_ns = int(g.created * 1e9) if g.created is not None and math.isfinite(g.created) else None
        if g.kind is C:
            if g.value is not None:  # else only a _created sample, already kept as a series
                add(Metric(g.name, C, g.value, "", help_, g.attrs, g.ts, start_ns))
            return
        if g.kind is MetricKind.HISTOGRAM:
            h = _histogram(g)
            if h is None:
                self._raw(g, add, help_)
                return
            add(Metric(g.name, MetricKind.HISTOGRAM, h, "", help_, g.attrs, g.ts, start_ns))
            return
        if g.sum is None or g.count is None or not g.parts:
            self._raw(g, add, help_)
            return
        parts = sorted(g.parts, key=lambda p: p[1])
        sv = SummaryValue(tuple((q, v) for _, q, v in parts), g.sum, g.count, tuple(t for t, _, _ in parts))
        add(Metric(g.name, MetricKind.SUMMARY, sv, "", help_, g.attrs, g.ts, start_ns))

    @staticmethod
    def _raw(g: _Group, add: Any, help_: str) -> None:
        for r, value in g.raw:
            # Only a family that does not assemble needs its parts' own label sets.
            attrs = {**r.attrs, _ARG_LABEL[r.role]: r.arg} if r.role in _ARG_LABEL else r.attrs
            add(Metric(r.name, G, value, "", help_, attrs, g.ts))

    def _resolve(self, fam: ParsedFamily, name: str, labels: tuple[tuple[str, str], ...]) -> _Resolved | None:
        """Final name and labels of one scraped series, and its role in its family."""
        ftype = fam.type
        if ftype not in _AGGREGATE_SHAPES and self.relabeler is None and self._target_items is not None \
                and not self._limited:
            # As most series are (a first scrape is all new series): no relabeling, no limits, not part of
            # a histogram or summary; none of its labels empty or one of the target's. What the general
            # path below makes of it, with less done to find out.
            target = self.target.labels
            for k, v in labels:
                if not v or k in target:
                    break
            else:
                base = fam.name
                if ftype != "counter" or name == base or name == base + "_total":
                    pairs = self._shared(sorted(labels + self._target_items))
                    ident = self._ident(name, pairs)
                    if ftype == "counter":  # its value, grouped with its _created (OpenMetrics)
                        return _Resolved(ftype, base, C, name, dict(pairs), ident, ident, _VALUE)
                    return _Resolved(ftype, base, G, name, dict(pairs), ident, None, _VALUE)
        items: tuple[tuple[str, str], ...] | None = None
        if self.relabeler is None and self._target_items is not None:
            merged = dict(labels)
            if merged.keys().isdisjoint(self.target.labels) and "" not in merged.values():
                # As most series are: their own pairs and the target's, none dropped or renamed.
                items = labels + self._target_items
            else:
                merged = self._merge_target_labels(labels)
        else:
            merged = self._merge_target_labels(labels)
        if self.relabeler is not None:
            merged["__name__"] = name
            relabeled = self.relabeler.apply(merged)
            if relabeled is None:
                return None
            merged = dict(relabeled)
            final_name = merged.pop("__name__", "")
            if not final_name:
                return None  # relabeling removed the name: Prometheus drops such a sample
        else:
            final_name = name
        if self._limited:
            self._check_label_limits(final_name, merged if items is None else dict(items))
        ftype, base = fam.type, fam.name
        role, arg, argf, group_name = _VALUE, "", 0.0, None
        shape = _AGGREGATE_SHAPES.get(ftype)
        if shape is not None and final_name.startswith(base):
            part_suffix, part_role = shape
            suffix = final_name[len(base):]
            part_label = _ARG_LABEL[part_role]
            if suffix == part_suffix and part_label in merged:
                role, arg = part_role, merged[part_label]
            else:
                role = _SUFFIX_ROLES.get(suffix, -1)
            group_name = base
        elif ftype == "counter":
            if final_name == base + "_created":
                role, group_name = _CREATED, base + "_total"
            elif final_name in (base, base + "_total"):
                group_name = final_name
        kind = C if ftype == "counter" and role == _VALUE and group_name is not None else G
        if role in (_BUCKET, _QUANTILE):
            try:
                argf = go_float(arg)  # the le or quantile, read as Prometheus reads numbers
            except ValueError:
                role = -1
        if role == -1:
            role, group_name, kind = _VALUE, None, G  # not part of the family's shape: a plain gauge sample
        # Sorted (the pipeline then keeps one tuple for the series' key and its given order), and
        # with the (name, value) pairs the target's other series hold where they are equal.
        pairs = self._shared(sorted(merged.items() if items is None else items))
        if role in (_BUCKET, _QUANTILE):
            arg_label = _ARG_LABEL[role]
            group_pairs = tuple([p for p in pairs if p[0] != arg_label])
        else:
            group_pairs = pairs
        attrs = dict(group_pairs)
        ident = self._ident(final_name, pairs)
        if group_name is None:
            group = None
        elif group_name == final_name and group_pairs is pairs:
            group = ident  # a counter's value: its group is the series itself
        else:
            group = self._ident(group_name, group_pairs)
        return _Resolved(ftype, fam.name, kind, final_name, attrs, ident, group, role, arg, argf)

    def _shared(self, items: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """``items`` with each pair replaced by the equal one another of the target's series holds
        (most recur: job, instance, code="200"). Bounded: emptied when it outgrows the target's series."""
        pairs = self._pairs
        if len(pairs) > 4 * len(self._resolved) + 1024:
            pairs.clear()
        return tuple(map(pairs.setdefault, items, items))

    def _ident(self, name: str, key: tuple[tuple[str, str], ...]) -> _Ident:
        k = (name, key)
        ident = self._idents.get(k)
        if ident is None:
            if len(self._idents) > 200_000:
                self._idents.clear()
            ident = self._idents[k] = _Ident(name, key)
        return ident

    def _merge_target_labels(self, labels: tuple[tuple[str, str], ...]) -> dict[str, str]:
        merged = dict(labels)
        target = self.target.labels
        if merged.keys().isdisjoint(target):  # no collision (as with most series): the target's labels added
            merged.update(target)
            return {k: v for k, v in merged.items() if v != ""} if "" in merged.values() else merged
        for k, v in target.items():
            if self.honor_labels:
                if k not in merged:
                    merged[k] = v
            else:
                if k in merged:
                    ek = "exported_" + k
                    while ek in merged:
                        ek = "exported_" + ek
                    merged[ek] = merged[k]
                merged[k] = v
        return {k: v for k, v in merged.items() if v != ""}

    def _check_label_limits(self, name: str, labels: Mapping[str, str]) -> None:
        lim = self.limits
        if lim.label_limit and len(labels) + 1 > lim.label_limit:
            raise ScrapeFailed("label_limit",
                               f"label_limit exceeded by {name}: {len(labels) + 1} labels, limit {lim.label_limit}")
        if lim.label_name_length_limit:
            for k in labels:
                if len(k) > lim.label_name_length_limit:
                    raise ScrapeFailed("label_limit", f"label_name_length_limit exceeded by {name}: label name "
                                                      f"{k[:40]!r} is {len(k)} long, limit {lim.label_name_length_limit}")
        if lim.label_value_length_limit:
            for k, v in labels.items():
                if len(v) > lim.label_value_length_limit:
                    raise ScrapeFailed("label_limit", f"label_value_length_limit exceeded by {name}: the value of {k} "
                                                      f"is {len(v)} long, limit {lim.label_value_length_limit}")

    # ------------------------------------------------------------------ the report series

    def report(self, result: ScrapeResult, start_ns: int) -> list[Metric]:
        """``up`` and the other series Prometheus adds to every scrape, with the target's labels."""
        attrs = {k: v for k, v in self.target.labels.items() if v != ""}
        t = (start_ns // 1_000_000) * 1_000_000
        return [
            Metric("up", G, 1.0 if result.up else 0.0, "", "1 if the last scrape of the target succeeded", attrs, t),
            Metric("scrape_duration_seconds", G, result.duration, "", "Duration of the scrape", attrs, t),
            Metric("scrape_samples_scraped", G, float(result.samples_scraped), "", "Samples the target exposed", attrs, t),
            Metric("scrape_samples_post_metric_relabeling", G, float(result.samples_post_relabel), "",
                   "Samples remaining after metric relabeling", attrs, t),
            Metric("scrape_series_added", G, float(result.series_added), "", "Series new in this scrape", attrs, t),
        ]


_MISSING: Any = object()
_SUFFIX_ROLES = {"_sum": _SUM, "_count": _COUNT, "_created": _CREATED}
_ARG_LABEL = {_BUCKET: "le", _QUANTILE: "quantile"}
#: The sample that holds a part of each aggregate family: (its suffix, its role); the part's label is _ARG_LABEL's.
_AGGREGATE_SHAPES = {"histogram": ("_bucket", _BUCKET), "summary": ("", _QUANTILE)}


def _histogram(g: _Group) -> HistogramValue | None:
    """The group's buckets as a HistogramValue, or None when they do not make one."""
    if not g.parts or g.sum is None or g.count is None:
        return None
    parts = sorted(g.parts, key=lambda p: p[1])
    if parts[-1][1] != math.inf or any(a[1] == b[1] for a, b in zip(parts, parts[1:], strict=False)):
        return None
    counts: list[int] = []
    prev = 0.0
    for _, _, c in parts:
        if not (c >= prev) or c == math.inf or c != int(c):  # an infinite count is no count (int() cannot take it)
            return None
        counts.append(int(c - prev))
        prev = c
    if g.count != prev:
        return None  # _count must equal the +Inf bucket for the histogram to be one
    return HistogramValue(tuple(p[1] for p in parts[:-1]), tuple(counts), g.sum, int(prev),
                          le_labels=tuple(p[0] for p in parts))


def filter_shard(targets: Sequence[Target], index: int, count: int) -> list[Target]:
    """The targets of shard ``index`` of ``count`` (hashmod of the target address, as Prometheus' ``hashmod``)."""
    from integrations.prometheus.sharding import shard_of

    return [t for t in targets if shard_of(t.labels.get("instance") or instance_of(t.url), count) == index]
