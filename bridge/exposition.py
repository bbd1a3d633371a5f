"""Prometheus text 0.0.4 and OpenMetrics 1.0 rendering of the pipeline's cache.

Written by hand because it is the hot path of every scrape: each series' name-and-labels
string is built once and kept on the series, each family's rendered text is kept until the
family changes, and a render only formats values. ``benchmarks/bench_render.py`` measures it
against opentelemetry-exporter-prometheus and a prometheus_client custom collector on the same
data. Names follow the OpenTelemetry → Prometheus compatibility rules: ``.`` and other invalid
characters become ``_``, the unit becomes a suffix (``By`` → ``bytes``, ``s`` → ``seconds``,
``1`` → ``ratio`` for gauges, ``{packets}`` dropped), monotonic sums end in ``_total``, and the
resource is ``target_info``. A name that would end in a suffix Prometheus reserves for another
type (``_count``, ``_sum``, ``_bucket``, ``_created``; ``_total`` outside counters) gets
``_value`` added. Exponential histograms, which the text formats cannot carry, are exposed as
explicit-bucket histograms with their own bucket boundaries (``as_histogram``).

Names that clash (imported families keep their names, so two may claim one; see ``render``) are
resolved the same way in both formats, so that a scraper of either gets the same series: a family
claims its name and its type's sample names as OpenMetrics has them (a counter ``x``: ``x``,
``x_total``, ``x_created``; a histogram or summary: ``x``, ``x_count``, ``x_sum``, ``x_bucket``,
``x_created``; anything else ``x``), and families claim in name order. A counter whose claims
clash but whose sample name is free (node_exporter's ``go_memstats_alloc_bytes_total`` beside the
gauge ``go_memstats_alloc_bytes``) keeps its samples and is declared ``unknown`` under its sample
name in OpenMetrics (a counter in the text format), as is an imported counter holding a negative or
NaN value, which OpenMetrics does not allow; any other family that clashes is left out of both
formats, reported to the caller (``Clash``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from bridge.api import ExponentialHistogramValue, HistogramValue, MetricKind, PrometheusView, SummaryValue

try:  # a plain family's sample lines in C (set up by bridge.pipeline; the loop below is its twin)
    from bridge import _pipefast
except ImportError:  # pragma: no cover - a build without a C compiler
    _pipefast = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from bridge.pipeline import Family, FamilySnapshot, Series

__all__ = [
    "CONTENT_TYPE_OPENMETRICS",
    "CONTENT_TYPE_TEXT",
    "Clash",
    "PromFamily",
    "as_histogram",
    "choose_format",
    "family_name",
    "le_texts",
    "prometheus_labels",
    "quantile_texts",
    "prometheus_label_name",
    "prometheus_name",
    "prom_family",
    "render",
    "series_view",
]

CONTENT_TYPE_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_PLAIN = frozenset((int, float))
_PROM = attrgetter("prom")
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_MULTI_UNDERSCORE = re.compile(r"__+")

_UNIT_WORDS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes",
    "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes",
    "TBy": "terabytes", "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts",
    "g": "grams", "Cel": "celsius", "Hz": "hertz", "%": "percent",
}
_RESERVED_SUFFIXES = ("_count", "_sum", "_bucket", "_created")
_PER_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}


def prometheus_unit(unit: str, kind: MetricKind) -> str:
    """The Prometheus unit word for an OTel (UCUM) unit, or ``""`` when there is none."""
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()
    if not unit:
        return ""
    if unit == "1":
        return "ratio" if kind is MetricKind.GAUGE else ""
    if "/" in unit:
        num, _, per = unit.partition("/")
        a = _UNIT_WORDS.get(num, num) if num else ""
        b = _PER_WORDS.get(per, per)
        word = f"{a}_per_{b}" if a else f"per_{b}"
    else:
        word = _UNIT_WORDS.get(unit, unit)
    return _MULTI_UNDERSCORE.sub("_", _INVALID_LABEL.sub("_", word)).strip("_")


def prometheus_name(name: str, unit: str, kind: MetricKind) -> str:
    """The Prometheus family name (without ``_total``) of an OTel metric."""
    base = _MULTI_UNDERSCORE.sub("_", _INVALID_NAME.sub("_", name)).strip("_")
    if not base or base[0].isdigit():
        base = "_" + base
    word = prometheus_unit(unit, kind)
    if word and not base.endswith("_" + word) and base != word:
        base = f"{base}_{word}"
    if kind is MetricKind.COUNTER and base.endswith("_total"):
        base = base[: -len("_total")]
    if (kind not in _HISTOGRAMS and base.endswith(_RESERVED_SUFFIXES)) or (
            kind is not MetricKind.COUNTER and base.endswith("_total")):
        # Prometheus keeps _count/_sum/_bucket for histograms and summaries, _created for their
        # and counters' creation times, _total for counters (promtool rejects them elsewhere),
        # so a gauge such as system.process.count is exposed as system_process_count_value.
        base += "_value"
    return base


_HISTOGRAMS = (MetricKind.HISTOGRAM, MetricKind.EXPONENTIAL_HISTOGRAM)


def _exp_bound(scale: int, index: int) -> float:
    """``base ** index`` of an exponential histogram of ``scale`` (``base = 2 ** 2 ** -scale``)."""
    try:
        return float(2.0 ** math.ldexp(index, -scale))
    except OverflowError:
        return math.inf


def as_histogram(v: ExponentialHistogramValue) -> HistogramValue:
    """An exponential histogram as an explicit-bucket one with the same boundaries: a bucket per
    populated exponential bucket (upper bound ``-base ** i`` for negative ones, ``base ** (i + 1)``
    for positive ones), the zero bucket's upper bound ``zero_threshold`` when it has values, then
    ``+Inf``. The counts at each boundary are exact; nothing is interpolated."""
    pairs: list[tuple[float, int]] = []
    # Empty buckets are left out: the cumulative count at their boundary is the one before.
    offset, counts = v.negative_offset, v.negative_counts
    for j in range(len(counts) - 1, -1, -1):
        if counts[j]:
            pairs.append((-_exp_bound(v.scale, offset + j), counts[j]))
    if v.zero_count:
        pairs.append((v.zero_threshold, v.zero_count))
    offset, counts = v.positive_offset, v.positive_counts
    for i, c in enumerate(counts):
        if c:
            pairs.append((_exp_bound(v.scale, offset + i + 1), c))
    bounds: list[float] = []
    buckets: list[int] = []
    for le, c in pairs:
        if le == math.inf:
            break
        if bounds and le <= bounds[-1]:  # boundaries that meet at the float's precision: one bucket
            buckets[-1] += c
            continue
        bounds.append(le)
        buckets.append(c)
    buckets.append(max(v.count - sum(buckets), 0))
    total = v.sum if v.sum is not None else math.nan
    return HistogramValue(tuple(bounds), tuple(buckets), total, v.count, v.min, v.max)


def family_name(fam: Family | FamilySnapshot) -> str:
    """The Prometheus family name of a pipeline family: an imported (native) family's own name,
    else the OTel name translated (``prometheus_name``)."""
    return fam.name if fam.native else prometheus_name(fam.name, fam.unit, fam.kind)


def prometheus_label_name(key: str) -> str:
    name = _MULTI_UNDERSCORE.sub("_", _INVALID_LABEL.sub("_", key))
    if not name or name[0].isdigit():
        name = "key_" + name
    return name


_LABEL_NAMES: dict[str, str] = {}
_LABEL_NAMES_MAX = 4096


def _label_name(key: str) -> str:
    """``prometheus_label_name`` memoized: attribute keys are few, series are many."""
    ln = _LABEL_NAMES.get(key)
    if ln is None:
        if len(_LABEL_NAMES) >= _LABEL_NAMES_MAX:
            _LABEL_NAMES.clear()
        ln = _LABEL_NAMES[key] = prometheus_label_name(key)
    return ln


def _escape_label_value(s: str) -> str:
    if "\\" in s or '"' in s or "\n" in s:
        s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return s


def _escape_help(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n")


def prometheus_labels(attributes: Mapping[str, Any]) -> dict[str, str]:
    """An attribute set as Prometheus labels (unescaped): names sanitized, bools lower-case, and
    keys that collide after sanitizing joined with ``;`` as the compatibility rules say."""
    merged: dict[str, str] = {}
    for k, v in attributes.items():
        ln = _LABEL_NAMES.get(k) or _label_name(k)
        sv = v if v.__class__ is str else (str(v).lower() if isinstance(v, bool) else str(v))
        merged[ln] = f"{merged[ln]};{sv}" if ln in merged else sv
    return merged


def _labels(attributes: Mapping[str, Any]) -> str:
    """``{a="1",b="2"}`` for an attribute set (see ``prometheus_labels``), or ``""``."""
    if not attributes:
        return ""
    merged = prometheus_labels(attributes)
    return "{" + ",".join([f'{k}="{v}"' if "\\" not in v and '"' not in v and "\n" not in v
                           else f'{k}="{_escape_label_value(v)}"' for k, v in sorted(merged.items())]) + "}"


def _fmt(v: Any) -> str:
    if v.__class__ is int:
        return str(v)
    f = float(v)
    if f != f:
        return "NaN"
    if f == math.inf:
        return "+Inf"
    if f == -math.inf:
        return "-Inf"
    return repr(f)


def _fmt_le(b: float) -> str:
    """An ``le`` or ``quantile`` text: ``+Inf`` and ``-Inf`` as the formats spell them (repr says ``-inf``)."""
    return "+Inf" if b == math.inf else "-Inf" if b == -math.inf else repr(float(b))


def le_texts(h: HistogramValue) -> Sequence[str]:
    """The ``le`` label values of a histogram's buckets, ``+Inf`` last: as an imported histogram's
    source wrote them, else formatted here."""
    return h.le_labels or [_fmt_le(b) for b in (*h.bounds, math.inf)]


def quantile_texts(v: SummaryValue) -> Sequence[str]:
    """The ``quantile`` label values of a summary (see ``le_texts``)."""
    return v.quantile_labels or [_fmt_le(q) for q, _ in v.quantiles]


# --------------------------------------------------------------------------- the Prometheus view of a series


class PromFamily:
    """What the Prometheus view of a family's series needs of the family: its sample name (a
    non-imported counter's ends in ``_total``), kind, and the ``le``/``quantile`` texts its
    series share (by bounds)."""

    __slots__ = ("sample", "kind", "texts")

    def __init__(self, fam: Family | FamilySnapshot) -> None:
        base = family_name(fam)
        self.sample = base + "_total" if fam.kind is MetricKind.COUNTER and not fam.native else base
        self.kind = fam.kind
        self.texts: dict[tuple[float, ...], tuple[str, ...]] = {}

    def le_of(self, v: Any) -> tuple[str, ...]:
        """The ``le`` texts of a histogram value or the ``quantile`` texts of a summary value."""
        if isinstance(v, HistogramValue):
            if v.le_labels is not None:
                return v.le_labels
            key = v.bounds
        elif isinstance(v, SummaryValue):
            if v.quantile_labels is not None:
                return v.quantile_labels
            key = tuple(q for q, _ in v.quantiles)
        else:
            return ()
        texts = self.texts.get(key)
        if texts is None:
            if len(self.texts) >= 64:
                self.texts.clear()
            texts = self.texts[key] = tuple(le_texts(v) if isinstance(v, HistogramValue) else quantile_texts(v))
        return texts


def prom_family(fam: Family | FamilySnapshot) -> PromFamily:
    """The family's ``PromFamily``, computed once per family."""
    pf: PromFamily | None = getattr(fam, "prom_family", None)
    if pf is None:
        pf = fam.render_cache.get("prom")
        if pf is None:
            pf = fam.render_cache["prom"] = PromFamily(fam)
    return pf


def _label_pairs(s: Series) -> tuple[tuple[str, str], ...]:
    """The series' Prometheus label set, sorted; the series' own key when they are the same."""
    pairs = tuple(sorted(prometheus_labels(s.attributes).items()))
    return s.key if pairs == s.key else pairs


def _label_text(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join([f'{k}="{v}"' if "\\" not in v and '"' not in v and "\n" not in v
                           else f'{k}="{_escape_label_value(v)}"' for k, v in pairs]) + "}"


_LABEL_IN_TEXT = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


def _unescape(v: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), v) if "\\" in v else v


def _labels_of(s: Series, text: str) -> tuple[tuple[str, str], ...]:
    """The label set a series' kept text (``name{labels} `` or ``{labels}``) holds: the series'
    own attribute key when that is what it holds (attribute names that are label names, string
    values), else read back from the text, where it was written once."""
    key = s.key
    converted = False
    for k, v in key:
        if _LABEL_NAMES.get(k) != k or (v.__class__ is not str and v.__class__ is not int):
            break
        converted = converted or v.__class__ is int
    else:
        # names that are label names, values that are strings or ints (written as str() writes them)
        return tuple([(k, v if v.__class__ is str else str(v)) for k, v in key]) if converted else key
    brace = text.find("{")
    if brace < 0:
        return ()
    return tuple((m.group(1), _unescape(m.group(2))) for m in _LABEL_IN_TEXT.finditer(text, brace))


def _histogram_view(pf: PromFamily, s: Series, value: Any) -> tuple[str, tuple[str, ...]]:
    """A histogram's or summary's kept view: its ``{labels}`` text and ``le``/``quantile`` texts
    (made again only when its buckets or quantiles change)."""
    c = s.prom
    le = pf.le_of(value)
    if c.__class__ is not tuple or c[1] != le:
        c = s.prom = (_label_text(_label_pairs(s)), le)
    return c  # type: ignore[no-any-return]


def _prefix(pf: PromFamily, s: Series) -> str:
    """A plain series' kept view: the ``name{labels} `` text ``/metrics`` writes."""
    c = s.prom
    if c.__class__ is not str:
        c = s.prom = f"{pf.sample}{_label_text(_label_pairs(s))} "
    return c


def series_view(pf: PromFamily, s: Series, value: Any) -> PrometheusView:
    """The Prometheus view of series ``s`` (of the family ``pf``) holding ``value``.

    It is computed once and kept on the series (``s.prom``) as the text the renderer writes and
    nothing more, so a series costs no more than that text: ``name{labels} `` for a plain series;
    its ``{labels}`` and ``le``/``quantile`` texts for a histogram or summary. The label set is the
    series' own attribute key when that is what the text holds, else read back from the text."""
    kind = pf.kind
    if kind is MetricKind.EXPONENTIAL_HISTOGRAM:
        value = as_histogram(value)  # the explicit buckets /metrics shows
    if kind in _HISTOGRAMS or kind is MetricKind.SUMMARY:
        text, le = _histogram_view(pf, s, value)
        return PrometheusView(pf.sample, _labels_of(s, text), le)
    return PrometheusView(pf.sample, _labels_of(s, _prefix(pf, s)))


def _family_header(fam: FamilySnapshot, openmetrics: bool, unknown: bool = False) -> tuple[str, str]:
    """(sample base name, header text) of a family; ``unknown``: a counter declared ``unknown``
    under its sample name in OpenMetrics (its OpenMetrics family name is another's)."""
    kind = fam.kind
    if unknown and openmetrics:
        sample = meta_name = prom_family(fam).sample
        ptype = "unknown"
    elif fam.native:
        # An imported family keeps its name; a counter's samples are named as they came.
        sample = meta_name = fam.name
        ptype = {MetricKind.COUNTER: "counter", MetricKind.HISTOGRAM: "histogram",
                 MetricKind.SUMMARY: "summary"}.get(kind, "gauge")
        if kind is MetricKind.COUNTER and openmetrics:
            if fam.name.endswith("_total"):
                meta_name = fam.name[: -len("_total")]
            else:
                ptype = "unknown"  # an OpenMetrics counter's samples must end in _total
    else:
        base = prometheus_name(fam.name, fam.unit, kind)
        if kind is MetricKind.COUNTER:
            ptype, sample = "counter", base + "_total"
            meta_name = base if openmetrics else sample
        elif kind in _HISTOGRAMS:
            ptype, sample, meta_name = "histogram", base, base
        elif kind is MetricKind.SUMMARY:
            ptype, sample, meta_name = "summary", base, base
        else:
            ptype, sample, meta_name = "gauge", base, base
    # promtool lints a family without help text; the OTel name stands in for a missing description.
    lines = [f"# HELP {meta_name} {_escape_help(fam.description or fam.name)}\n"]
    lines.append(f"# TYPE {meta_name} {ptype}\n")
    if openmetrics:
        word = prometheus_unit(fam.unit, fam.kind)
        if word and meta_name.endswith("_" + word):
            lines.append(f"# UNIT {meta_name} {word}\n")
    return sample, "".join(lines)


def _render_family(fam: FamilySnapshot, openmetrics: bool, unknown: bool = False) -> str:
    sample, header = _family_header(fam, openmetrics, unknown)
    out = [header]
    append = out.append
    pf = fam.prom_family
    pairs = zip(fam.refs, fam.values, strict=True)
    if fam.kind is MetricKind.HISTOGRAM:
        for s, v in pairs:
            out.append(_render_histogram(sample, _histogram_view(pf, s, v), v, openmetrics))
        return "".join(out)
    if fam.kind is MetricKind.EXPONENTIAL_HISTOGRAM:
        for s, v in pairs:
            h = as_histogram(v)
            out.append(_render_histogram(sample, _histogram_view(pf, s, h), h, openmetrics))
        return "".join(out)
    if fam.kind is MetricKind.SUMMARY:
        for s, v in pairs:
            out.append(_render_summary(sample, _histogram_view(pf, s, v), v))
        return "".join(out)
    refs, values = fam.refs, fam.values
    if _pipefast is not None:
        lines = _pipefast.plain_lines(refs, values)
        if lines is not None:  # every series' text kept and every value an int or finite float
            append(lines)
            return "".join(out)
    # Written in bulk, one pass per column: the series' kept ``name{labels} `` texts, the
    # values' texts (repr, the shortest text that reads back as the same float, for ints and
    # finite floats, which is what nearly every family holds), a newline each.
    prefixes = list(map(_PROM, refs))
    if None in prefixes:  # series new since the last render: their text is made once, here
        prefixes = [p if p is not None else _prefix(pf, s) for p, s in zip(prefixes, refs, strict=True)]
    texts = map(repr, values) if _plain_finite(values) else map(_fmt, values)
    append("".join(chain.from_iterable(zip(prefixes, texts, repeat("\n")))))
    return "".join(out)


def _plain_finite(values: Sequence[Any]) -> bool:
    """Whether every value is an int or a finite float (not NaN): a bool, a subclass or another
    number type, an infinity or NaN needs ``_fmt``. The sum is finite exactly when every term
    is (or it overflowed, which only sends the values to ``_fmt``)."""
    if not set(map(type, values)) <= _PLAIN:
        return False
    try:
        total = sum(values)
    except OverflowError:  # an int beyond a float's range, added to a float
        return False
    return bool(total - total == 0)


def _render_histogram(base: str, view: tuple[str, tuple[str, ...]], h: HistogramValue, openmetrics: bool) -> str:
    """A histogram series' lines. OpenMetrics forbids ``_sum`` beside negative buckets (a sum of
    negative observations is no counter) and ``_count`` without ``_sum``: such a series has buckets only."""
    labels, les = view
    inner = labels[1:-1]
    sep = "," if inner else ""
    lines = []
    cum = 0
    for le, count in zip(les, h.bucket_counts, strict=False):
        cum += count
        lines.append(f'{base}_bucket{{{inner}{sep}le="{le}"}} {cum}\n')
    if openmetrics and h.bounds and h.bounds[0] < 0:
        return "".join(lines)
    lines.append(f"{base}_sum{labels} {_fmt(h.sum)}\n")
    lines.append(f"{base}_count{labels} {h.count}\n")
    return "".join(lines)


def _render_summary(base: str, view: tuple[str, tuple[str, ...]], v: SummaryValue) -> str:
    labels, qs = view
    inner = labels[1:-1]
    sep = "," if inner else ""
    lines = [f'{base}{{{inner}{sep}quantile="{q}"}} {_fmt(x)}\n'
             for q, (_, x) in zip(qs, v.quantiles, strict=False)]
    lines.append(f"{base}_sum{labels} {_fmt(v.sum)}\n")
    lines.append(f"{base}_count{labels} {_fmt(v.count)}\n")
    return "".join(lines)


def _target_info(resource_attributes: Mapping[str, Any], openmetrics: bool) -> str:
    if not resource_attributes:
        return ""
    if openmetrics:
        head = "# HELP target Target metadata\n# TYPE target info\n"
    else:
        head = "# HELP target_info Target metadata\n# TYPE target_info gauge\n"
    return f"{head}target_info{_labels(resource_attributes)} 1\n"


@dataclass(frozen=True)
class Clash:
    """A family ``render`` could not show as it is: ``name`` (its Prometheus name) claims a name
    ``other`` (an earlier family's) claimed. ``dropped``: left out of both formats, ``series``
    series; else declared ``unknown`` in OpenMetrics (a counter whose samples are kept). ``source``:
    the plugin whose series it holds (of its first series)."""

    name: str
    other: str
    dropped: bool
    series: int
    source: str


_SUFFIXES = {MetricKind.COUNTER: ("", "_total", "_created"), MetricKind.HISTOGRAM: _RESERVED_SUFFIXES + ("",),
             MetricKind.EXPONENTIAL_HISTOGRAM: _RESERVED_SUFFIXES + ("",), MetricKind.SUMMARY: _RESERVED_SUFFIXES + ("",)}


def _claims(fam: Family | FamilySnapshot) -> tuple[tuple[str, ...], str | None]:
    """(the names a family claims, as OpenMetrics has them; the one name a counter falls back to)."""
    c: tuple[tuple[str, ...], str | None] | None = fam.render_cache.get("claims")
    if c is None:
        sample = prom_family(fam).sample
        if fam.kind is MetricKind.COUNTER and not sample.endswith("_total"):
            c = (sample,), None  # an imported counter without _total: "unknown" in OpenMetrics already
        else:
            base = sample[: -len("_total")] if fam.kind is MetricKind.COUNTER else sample
            c = tuple(base + x for x in _SUFFIXES.get(fam.kind, ("",))), (
                sample if fam.kind is MetricKind.COUNTER else None)
        fam.render_cache["claims"] = c
    return c


def _resolve(fam: Family | FamilySnapshot, taken: dict[str, str], on_clash: Callable[[Clash], None] | None
             ) -> bool | None:
    """Claim ``fam``'s names in ``taken`` (name → claimer): False when they were free, True when
    it falls back to ``unknown`` (see the module's docstring), None when it is left out."""
    names, fallback = _claims(fam)
    other = next((taken[n] for n in names if n in taken), None)
    if other is None:
        mine = names
        unknown: bool | None = False
    elif fallback is not None and fallback not in taken:
        mine, unknown = (fallback,), True
    else:
        mine, unknown = (), None
    owner = prom_family(fam).sample
    for n in mine:
        taken[n] = owner
    if other is not None and on_clash is not None:
        refs = getattr(fam, "refs", None)  # a snapshot's series, else the live family's
        series = refs if refs is not None else list(getattr(fam, "series", {}).values())
        source = series[0].source.partition("#")[0] if series else ""
        on_clash(Clash(owner, other, unknown is None, len(series), source))
    return unknown


def _counter_values_admitted(fam: Family | FamilySnapshot) -> bool:
    """Whether OpenMetrics admits a counter family's values (none NaN or negative), once a version."""
    c = fam.render_cache.get("admitted")
    if c is None or c[0] != fam.version:
        refs = getattr(fam, "values", None)
        values = refs if refs is not None else [s.value for s in getattr(fam, "series", {}).values()]
        c = fam.render_cache["admitted"] = (fam.version, all(v >= 0 for v in values))  # NaN >= 0 is False
    return bool(c[1])


def render(families: Iterable[Family | FamilySnapshot], resource_attributes: Mapping[str, Any] | None = None,
           openmetrics: bool = False, on_clash: Callable[[Clash], None] | None = None) -> bytes:
    """Render families (a batch's, from ``Pipeline.batch().families()``, or live ones from
    ``Pipeline.families()``) as one exposition body.

    Names that clash are resolved as the module's docstring says, the same in both formats:
    ``on_clash`` is called with each family that could not be shown as it is (the caller counts
    and logs what was left out).
    """
    parts = [_target_info(resource_attributes or {}, openmetrics)]
    taken: dict[str, str] = dict.fromkeys(("target", "target_info"), "target_info") if parts[0] else {}
    for fam in families:
        if parts[0] and prom_family(fam).sample == "target_info":
            unknown: bool | None = False  # pushed targets' target_info series: merged below
        else:
            unknown = _resolve(fam, taken, on_clash)
            if unknown is None:
                continue
            if not unknown and fam.kind is MetricKind.COUNTER and not _counter_values_admitted(fam):
                unknown = True  # OpenMetrics has no negative or NaN counter: its samples as they are
        key = (openmetrics, fam.version, unknown)
        cached = fam.render_cache.get(openmetrics)
        if cached is not None and cached[0] == key and cached[2] is not None:
            name, text = cached[1], cached[2]
            if not cached[3]:
                fam.render_cache[openmetrics] = (key, name, text, True)
        else:
            name = family_name(fam)
            snap = fam.snapshot() if hasattr(fam, "snapshot") else fam
            text = _render_family(snap, openmetrics, True) if unknown else _render_family(snap, openmetrics)
            # The text is kept for the next render while that pays: a family whose last text
            # was asked for again (a second scraper, scrapes more frequent than collections),
            # or that is asked for again unchanged now. One whose value changes between every
            # two renders does not hold a second copy of its series (~80 bytes a series).
            again = cached is not None and cached[0] == key
            keep = cached is None or again or cached[3]
            fam.render_cache[openmetrics] = (key, name, text if keep else None, again)
        if name == "target_info" and parts[0]:
            # Pushed targets' target_info series (OTLP receive), under the one family header.
            parts[0] += "".join(line for line in text.splitlines(True) if not line.startswith("#"))
            continue
        parts.append(text)
    if openmetrics:
        parts.append("# EOF\n")
    return "".join(parts).encode()


def choose_format(accept: str | None) -> tuple[bool, str]:
    """(openmetrics?, content type) for an ``Accept`` header, as Prometheus negotiates."""
    if accept:
        for part in accept.split(","):
            media = part.split(";")[0].strip()
            if media == "application/openmetrics-text":
                return True, CONTENT_TYPE_OPENMETRICS
    return False, CONTENT_TYPE_TEXT
