"""Metrics as Elasticsearch documents, the way the OTel Collector's Elasticsearch exporter lays them out.

One document per (data stream, timestamp, attribute set), carrying every metric that shares them
(a series' attributes are its own and the batch's resource attributes; the series' wins on a
clash). The data stream is ``metrics-<dataset>-<namespace>``: the dataset and namespace of the
``datasets`` rule with the longest prefix of the metric's name, else ``dataset``/``namespace``.

Mapping modes (``mapping``):

* ``ecs``: an attribute that ECS defines (``ecs.ATTRIBUTES``, from the ECS table's ``otel``
  column: ``host.name``, ``service.name``, ``deployment.environment.name`` → ``service.environment`` ...)
  is written to its ECS field when its value has the field's type (a string for ``keyword``, an
  integer for ``long``, an IP address for ``ip``); every other attribute is a label,
  ``labels.<name>`` (dots in the name as ``_``, as ECS asks of label keys). A metric ECS defines
  (``ecs.METRICS``: ``system.cpu.utilization`` → ``host.cpu.usage`` ...) goes to its ECS field
  (a ``long`` one rounded); any other to a field of its own name, or ``metrics.<name>`` when its
  first part is an ECS field set (``host``, ``process`` ...) or one of the fields written here.
* ``otel``: attributes under ``attributes.*``, resource attributes under
  ``resource.attributes.*``, every metric under ``metrics.<name>``.

Values: gauges, counters (their cumulative values) and up-down counters as numbers; an explicit
or exponential histogram as an Elasticsearch ``histogram`` field (``values``: bucket midpoints,
the first explicit bucket ``(-inf, b0]`` at ``b0/2`` (``b0`` when not positive) and the overflow
bucket at the last bound, as the Collector does; ``counts``: the non-zero bucket counts);
a summary as its parts, ``<name>.sum``, ``<name>.count`` and ``<name>.quantile_<q>`` (``q``'s
dots as ``_``). A point that is not a finite number is skipped and counted (``non_finite``).

Each document's metric fields are typed by bulk ``dynamic_templates`` (``counter_double``,
``gauge_double``, ``histogram``, declared by ``templates``); a ``_metric_names_hash`` dimension
(of the metric fields' names) keeps two documents with the same dimensions and timestamp but other
metrics apart (without it the time-series ``_id`` would collide), as the Collector does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.api import AttributeValue, ExponentialHistogramValue, HistogramValue, MetricKind, SummaryValue
from integrations.elasticsearch.config import ElasticsearchConfig
from integrations.elasticsearch.ecs import ATTRIBUTES, METRICS, TOP_LEVEL

__all__ = ["Counts", "Mapper", "Point", "histogram_field", "stream_name"]

#: Fields every metric document has besides attributes and metrics.
RESERVED = frozenset(("@timestamp", "data_stream", "labels", "metrics", "_metric_names_hash", "attributes",
                      "resource"))
#: Most (data stream, attribute set) ids kept; beyond, all are forgotten and made again. A
#: document's key is its timestamp (ms) shifted by ``_ID_BITS`` or'ed with its id.
_ID_BITS = 21
_MAX_DIMS = 1 << _ID_BITS
#: The dynamic template (``templates.METRIC_TEMPLATES``) typing each kind's value.
_TEMPLATE = {MetricKind.COUNTER: "counter_double", MetricKind.GAUGE: "gauge_double",
             MetricKind.UP_DOWN_COUNTER: "gauge_double", MetricKind.HISTOGRAM: "histogram",
             MetricKind.EXPONENTIAL_HISTOGRAM: "histogram"}


@dataclass(slots=True)
class Point:
    name: str
    kind: MetricKind
    value: float | HistogramValue | SummaryValue | ExponentialHistogramValue
    attributes: Mapping[str, AttributeValue]
    time_ns: int
    #: The series' identity while it lives (``SeriesView.identity``), None when there is none: the
    #: mapping keeps what it made of the series' attributes by it, and does not read the
    #: ``attributes`` of a point whose key is in ``Mapper.series`` (they may be left empty).
    key: object = None


@dataclass(slots=True)
class Counts:
    """Points the mapping skipped, by reason."""

    non_finite: int = 0
    empty_histogram: int = 0
    #: Points of a batch written already in an earlier one (not collected again since).
    unchanged: int = 0


def stream_name(dataset: str, namespace: str) -> str:
    return f"metrics-{dataset}-{namespace}"


def histogram_field(v: HistogramValue | ExponentialHistogramValue) -> dict[str, list[Any]] | None:
    """An Elasticsearch ``histogram`` field's value (``values`` strictly increasing, ``counts``
    non-zero), or None when the histogram has no observations."""
    values: list[float] = []
    counts: list[int] = []
    if isinstance(v, HistogramValue):
        b = v.bounds
        for i, c in enumerate(v.bucket_counts):
            if c <= 0:
                continue
            if not b:
                x = v.sum / v.count if v.count else 0.0
            elif i == 0:
                x = b[0] / 2 if b[0] > 0 else b[0]
            elif i == len(b):
                x = b[-1]
            else:
                x = (b[i - 1] + b[i]) / 2
            values.append(x)
            counts.append(int(c))
    else:
        width = 2.0 ** -v.scale

        def mid(k: int) -> float:
            try:
                return float((2.0 ** (k * width) + 2.0 ** ((k + 1) * width)) / 2)
            except OverflowError:
                return math.inf

        for j in range(len(v.negative_counts) - 1, -1, -1):
            if v.negative_counts[j] > 0:
                values.append(-mid(v.negative_offset + j))
                counts.append(int(v.negative_counts[j]))
        if v.zero_count > 0:
            values.append(0.0)
            counts.append(int(v.zero_count))
        for j, c in enumerate(v.positive_counts):
            if c > 0:
                values.append(mid(v.positive_offset + j))
                counts.append(int(c))
        keep = [i for i, x in enumerate(values) if math.isfinite(x)]
        if len(keep) != len(values):
            values = [values[i] for i in keep]
            counts = [counts[i] for i in keep]
    if not values:
        return None
    return {"values": values, "counts": counts}


def _typed(value: AttributeValue, typ: str) -> AttributeValue | None:
    """``value`` when it has ECS type ``typ`` (as Elasticsearch would index it), else None."""
    if typ == "keyword":
        return value if isinstance(value, str) else None
    if typ == "long":
        return value if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63 else None
    if typ == "ip":
        if isinstance(value, str):
            try:
                ipaddress.ip_address(value)
                return value
            except ValueError:
                return None
    return None


class Mapper:
    """Points as bulk ``create`` operations (see the module doc); reusable, not thread-safe."""

    def __init__(self, cfg: ElasticsearchConfig, resource: Mapping[str, AttributeValue] | None = None) -> None:
        self.cfg = cfg
        self.ecs = cfg.mapping == "ecs"
        self.resource = dict(resource or {})
        self.rules = sorted(cfg.datasets, key=lambda r: len(r.prefix), reverse=True)
        self.counts = Counts()
        self._streams: dict[str, str] = {}
        self._fields: dict[str, tuple[str, str | None, str | None]] = {}
        self._info: dict[str, tuple[str, str, str | None, str | None]] = {}
        self._json: dict[str, str] = {}
        self._names: dict[str, str] = {}
        self._actions: dict[tuple[Any, ...], tuple[bytes, str]] = {}
        self._series: dict[object, int] = {}
        self._dim_ids: dict[tuple[str, tuple[tuple[str, AttributeValue], ...]], int] = {}
        self._prefix: list[str] = []
        self._index: list[str] = []
        self._single: dict[tuple[str, str, str], tuple[str, str, str]] = {}
        self._specs: dict[tuple[str, MetricKind], tuple[str, str]] = {}

    def stream(self, name: str) -> str:
        s = self._streams.get(name)
        if s is None:
            for r in self.rules:
                if name.startswith(r.prefix):
                    s = stream_name(r.dataset, r.namespace or self.cfg.namespace)
                    break
            else:
                s = stream_name(self.cfg.dataset, self.cfg.namespace)
            if len(self._streams) < 100_000:
                self._streams[name] = s
        return s

    def metric_field(self, name: str) -> tuple[str, str | None, str | None]:
        """(field, dynamic template or None when the template maps it, ECS type when ECS defines it)."""
        f = self._fields.get(name)
        if f is None:
            if not self.ecs:
                f = ("metrics." + name, "", None)
            elif name in METRICS:
                f = (METRICS[name][0], None, METRICS[name][1])
            elif name.split(".", 1)[0] in TOP_LEVEL or name.split(".", 1)[0] in RESERVED:
                f = ("metrics." + name, "", None)
            else:
                f = (name, "", None)
            if len(self._fields) < 100_000:
                self._fields[name] = f
        return f

    def dimensions(self, attrs: Mapping[str, AttributeValue]) -> dict[str, Any]:
        """The document's dimension fields for a series' attributes (the resource's merged in)."""
        merged = {**self.resource, **attrs} if self.resource else attrs
        key = tuple(sorted(merged.items()))
        d: dict[str, Any] = {}
        if self.ecs:
            for k, v in key:
                ecs = ATTRIBUTES.get(k)
                typed = _typed(v, ecs[1]) if ecs is not None else None
                if ecs is not None and typed is not None:
                    d[ecs[0]] = typed
                else:
                    d["labels." + k.replace(".", "_")] = v if isinstance(v, str) else json.dumps(v)
        else:
            for k, v in sorted(self.resource.items()):
                d["resource.attributes." + k] = v
            for k, v in sorted(attrs.items()):
                d["attributes." + k] = v
        return d

    @property
    def series(self) -> Mapping[object, int]:
        """The series (by ``Point.key``) of the last ``lines`` call: their attributes are known."""
        return self._series

    def operations(self, points: Iterable[Point]) -> list[tuple[bytes, bytes]]:
        """(action line, document line) pairs, one per document, JSON without newlines."""
        actions, docs = self.lines(points)
        return [(a.encode(), d.encode()) for a, d in zip(actions, docs, strict=True)]

    def bodies(self, points: Iterable[Point], max_documents: int, max_bytes: int,
               ) -> tuple[list[tuple[bytes, int]], int]:
        """Bulk bodies of ``points``' documents (``export.pack``'s bounds; each body encoded once)
        and how many documents alone exceed ``max_bytes``."""
        from integrations.elasticsearch.export import pack_lines

        bodies, big = pack_lines(*self.lines(points), max_documents, max_bytes)
        return bodies, len(big)

    def lines(self, points: Iterable[Point]) -> tuple[list[str], list[str]]:
        """Action lines and document lines (one each per document) as ASCII text: every part is
        JSON with non-ASCII escaped. A point is read when it comes, not kept.

        Documents are written as text from cached parts. A series (``Point.key``: the pipeline's
        identity of it) keeps, while it lives, the id of its (data stream, attribute set), whose
        text (the stream's fields and the dimensions) is made once; a document of one metric field
        takes its action line and ``_metric_names_hash`` from a cache by (stream, field, template),
        one of several from a cache by its set of fields. Per point there are a few dictionary
        look-ups and one formatted line, and no container is made for a plain number's point (a
        round's worth of them would be garbage-collector work over the whole heap): a document is
        keyed by an integer of its id and timestamp, its first field held in two dictionaries."""
        # ms << 21 | id -> the document's first (field spec, value); further fields in ``more``.
        spec_of: dict[int, tuple[str, str]] = {}
        value_of: dict[int, Any] = {}
        more: dict[int, list[tuple[str, Any, str]]] = {}
        old_series, series = self._series, {}
        keys: dict[int, tuple[Mapping[str, AttributeValue], int]] = {}
        infos, specs = self._info, self._specs
        counts = self.counts
        spec: tuple[str, str] | None = None
        for p in points:
            name = p.name
            info = infos.get(name)
            if info is None:
                info = (self.stream(name), *self.metric_field(name))
                if len(infos) < 100_000:
                    infos[name] = info
            v = p.value
            if v.__class__ is float and info[3] is None:  # a plain number: the common case, inline
                if v - v != 0.0:  # inf or nan
                    counts.non_finite += 1
                    continue
                kind = p.kind
                spec = specs.get((name, kind))
                if spec is None:
                    spec = specs[(name, kind)] = (info[1], info[2] or _TEMPLATE[kind])
                fields = None
            else:
                fields = self._values(p, info[1], info[2], info[3])
                if not fields:
                    continue
            key = p.key
            if key is not None:
                did = old_series.get(key)
                if did is None:
                    did = self._dims_id(info[0], p.attributes)
                series[key] = did
            else:
                a = p.attributes
                hit = keys.get(id(a))
                if hit is None or hit[0] is not a or self._index[hit[1]] != info[0]:
                    hit = keys[id(a)] = (a, self._dims_id(info[0], a))  # (a is held: its id is not reused)
                did = hit[1]
            gk = (p.time_ns // 1_000_000) << _ID_BITS | did
            if fields is None:
                assert spec is not None
                if gk not in spec_of:
                    spec_of[gk] = spec
                    value_of[gk] = v
                    continue
                fields = [(spec[0], v, spec[1])]
            if gk not in spec_of:
                f0 = fields[0]
                spec_of[gk] = (f0[0], f0[2])
                value_of[gk] = f0[1]
                fields = fields[1:]
            if fields:
                more.setdefault(gk, []).extend(fields)
        self._series = series
        actions: list[str] = []
        docs: list[str] = []
        prefixes, index_of = self._prefix, self._index
        single = self._single
        mask = (1 << _ID_BITS) - 1
        # Documents in a row mostly share their timestamp and (data stream, field, template): the
        # last ones' text is kept, not looked up again.
        last_ms, head = -1, ""
        last_spec: tuple[str, str] | None = None
        last_index, line = "", ("", "", "")
        for gk, spec in spec_of.items():
            did, ms, v = gk & mask, gk >> _ID_BITS, value_of[gk]
            index = index_of[did]
            if ms != last_ms:
                last_ms, head = ms, '{"@timestamp":' + str(ms)
            extra = more.get(gk)
            if extra is None:
                if spec is not last_spec or index != last_index:
                    f, tpl = spec
                    cached = single.get((index, f, tpl))
                    if cached is None:
                        action, names_hash = self._action(index, {f: v}, {f: tpl} if tpl else {})
                        cached = (action.decode(), "," + self._name_json(f) + ":",
                               ',"_metric_names_hash":"' + names_hash + '"}')
                        if len(single) < 100_000:
                            single[(index, f, tpl)] = cached
                    line, last_spec, last_index = cached, spec, index
                actions.append(line[0])
                docs.append(f"{head}{prefixes[did]}{line[1]}{repr(v) if v.__class__ is float else json.dumps(v)}"
                            f"{line[2]}")
                continue
            f, tpl = spec
            values: dict[str, Any] = {f: v}
            templates: dict[str, str] = {f: tpl} if tpl else {}
            for f2, v2, tpl2 in extra:
                values[f2] = v2
                if tpl2:
                    templates[f2] = tpl2
            action, names_hash = self._action(index, values, templates)
            parts = [head, prefixes[did]]
            for f2, v2 in values.items():
                parts += (",", self._name_json(f2), ":", repr(v2) if v2.__class__ is float else json.dumps(v2))
            parts += (',"_metric_names_hash":"', names_hash, '"}')
            actions.append(action.decode())
            docs.append("".join(parts))
        return actions, docs

    def _dims_id(self, index: str, attrs: Mapping[str, AttributeValue]) -> int:
        """The id of (data stream, attribute set); its text is ``_prefix[id]``."""
        key = (index, tuple(sorted(attrs.items())))
        did = self._dim_ids.get(key)
        if did is None:
            if len(self._dim_ids) >= _MAX_DIMS:  # forget every id (and the series holding one)
                self._dim_ids.clear()
                self._prefix.clear()
                self._index.clear()
                self._series = {}
            did = self._dim_ids[key] = len(self._prefix)
            self._prefix.append(self._stream_json(index) + self._dims_json(key[1]))
            self._index.append(index)
        return did

    def _stream_json(self, index: str) -> str:
        j = self._json.get(index)
        if j is None:
            _, ds, ns = index.split("-", 2)
            j = self._json[index] = (',"data_stream.type":"metrics","data_stream.dataset":' + json.dumps(ds)
                                     + ',"data_stream.namespace":' + json.dumps(ns))
        return j

    def _name_json(self, name: str) -> str:
        j = self._names.get(name)
        if j is None:
            j = json.dumps(name)
            if len(self._names) < 100_000:
                self._names[name] = j
        return j

    def _dims_json(self, key: tuple[tuple[str, AttributeValue], ...]) -> str:
        """The dimension fields of an attribute set as JSON members (each with its leading comma)."""
        return "".join("," + json.dumps(k) + ":" + json.dumps(v) for k, v in self.dimensions(dict(key)).items())

    def _action(self, index: str, values: dict[str, Any], templates: dict[str, str]) -> tuple[bytes, str]:
        """The ``create`` line and the ``_metric_names_hash`` of a document with these metric fields."""
        sig = (index, tuple(values), tuple(templates.items()))
        hit = self._actions.get(sig)
        if hit is None:
            names = sorted(values)
            names_hash = hashlib.blake2b("\n".join(names).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
            action: dict[str, Any] = {"_index": index}
            if templates:
                action["dynamic_templates"] = templates
            hit = (_dumps({"create": action}), names_hash)
            if len(self._actions) < 10_000:
                self._actions[sig] = hit
        return hit

    def _values(self, p: Point, base: str, tpl: str | None, ecs_type: str | None) -> list[tuple[str, Any, str]]:
        """(field, value, dynamic template; '' when the template maps the field) of one point
        (``base``, ``tpl``, ``ecs_type``: its ``metric_field``)."""
        v = p.value
        if ecs_type is not None and not isinstance(v, (int, float)):
            base, tpl, ecs_type = "metrics." + p.name, "", None  # ECS defines the metric as a number
        if isinstance(v, (HistogramValue, ExponentialHistogramValue)):
            h = histogram_field(v)
            if h is None:
                self.counts.empty_histogram += 1
                return []
            return [(base, h, "histogram")]
        if isinstance(v, SummaryValue):
            out = [(base + ".sum", v.sum, "counter_double"), (base + ".count", float(v.count), "counter_double")]
            out += [(f"{base}.quantile_" + f"{q:g}".replace(".", "_"), x, "gauge_double") for q, x in v.quantiles]
            good = [(f, x, t) for f, x, t in out if math.isfinite(x)]
            self.counts.non_finite += len(out) - len(good)
            return good
        x = float(v)
        if not math.isfinite(x):
            self.counts.non_finite += 1
            return []
        if ecs_type is not None:
            return [(base, round(x) if ecs_type == "long" else x, "")]
        return [(base, x, tpl if tpl else _TEMPLATE[p.kind])]




def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
