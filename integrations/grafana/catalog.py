"""The metrics each plugin family declares, read from the plugins' source: every ``Metric(...)``
and ``MetricSpec(...)`` (the collectors' declarative tables) whose name is a string literal gives
a metric's name, kind, unit and description, as the plugin reports it. The source is read as
text (``ast``), never imported, so a plugin family's dashboard needs none of its dependencies.

A family (``FAMILIES``) names the modules that report its metrics; a metric whose kind cannot be
read (not ``MetricKind.X`` nor a name bound to one in its module) is a ``CatalogError`` naming the
file and line, so a plugin that changes how it declares its metrics is noticed, not left out.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.api import MetricKind
from bridge.prometheus import family_name

__all__ = ["FAMILIES", "OTHER", "CatalogError", "Family", "MetricInfo", "catalog", "declared_names", "from_exposition",
           "scan_source"]


class CatalogError(Exception):
    """A metric declaration that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Family:
    """A plugin family: one dashboard. ``modules`` are the modules (or packages, every module in
    them) whose declarations are its metrics."""

    key: str
    title: str
    description: str
    modules: tuple[str, ...]
    plugin_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MetricInfo:
    name: str  # the OTel name the plugin reports (a native name for imported families)
    kind: MetricKind
    unit: str
    description: str
    where: str  # file:line of the declaration
    native: bool = False

    @property
    def prom_name(self) -> str:
        """The family's name on ``/metrics`` (``bridge.prometheus.family_name``)."""
        return family_name(self)  # type: ignore[arg-type]  # duck-typed: name, unit, kind, native


FAMILIES: tuple[Family, ...] = (
    Family("host", "Host", "CPU, memory, paging, disks, filesystems, network, load and processes of the host "
           "(and of the processes monbridge watches)", ("collectors.system", "collectors.process"),
           ("monitoring.metrics.system", "monitoring.metrics.process")),
    Family("monbridge", "monbridge", "monbridge itself: plugins' health, runs and restarts, export sinks, the "
           "pipeline's series, refused HTTP requests and config reloads",
           ("bridge.supervisor", "bridge.server", "bridge.runtime"), ()),
    Family("prometheus", "Prometheus bridge", "Scrapes (up, durations, samples), targets, service discovery "
           "and Pushgateway pushes of the Prometheus integration", ("integrations.prometheus",),
           ("monitoring.integration.prometheus",)),
    Family("alerting", "Alerting", "The alert engine: notifications by outcome, refused alerting API requests",
           ("bridge.alerting",), ()),
    Family("otlp", "OTLP", "OTLP receive: requests and points", ("integrations.otlp", "integrations.otlp_receive"),
           ("monitoring.integration.otlp",)),
    Family("datadog", "Datadog", "DogStatsD and the Datadog intake: datagrams, points, contexts, refusals",
           ("integrations.datadog",), ("monitoring.integration.datadog",)),
    Family("elasticsearch", "Elasticsearch", "Elasticsearch searches: cluster and query health, durations, "
           "failures", ("integrations.elasticsearch",), ("monitoring.integration.elasticsearch",)),
    Family("nagios", "Nagios", "Nagios checks (states, durations, latencies, perfdata) and NSCA results sent",
           ("integrations.nagios",), ("monitoring.metrics.nagios", "monitoring.integration.nagios")),
    Family("grafana", "Grafana", "The Grafana integration: requests, dashboards provisioned, alert annotations",
           ("integrations.grafana.plugin",), ("monitoring.integration.grafana",)),
)

#: The metrics a running monbridge exposes that no family declares (``from_exposition``).
OTHER = Family("other", "Other metrics", "Metrics a running monbridge exposes that no plugin declares in its "
               "source (third-party plugins, OTel API instruments, imported series)", (), ())

#: Call names whose first arguments are (name, kind, value, unit, description) and
#: (name, kind, unit, description).
_POSITIONS = {"Metric": {"kind": 1, "unit": 3, "description": 4}, "MetricSpec": {"kind": 1, "unit": 2, "description": 3}}

#: Names the Prometheus integration reports as Prometheus does (not translated from OTel names).
_NATIVE = frozenset(("up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                     "scrape_series_added"))


def _source_files(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise CatalogError(f"module {module} not found")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: every module in it
        return sorted(p for d in spec.submodule_search_locations for p in Path(d).rglob("*.py"))
    return [origin]


def _bindings(tree: ast.AST) -> Iterator[tuple[str, ast.expr]]:
    """(name, value) of every assignment to a name in a module, tuples unpacked
    (``G, C = MetricKind.GAUGE, MetricKind.COUNTER`` binds G and C)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            pairs: Iterable[tuple[ast.expr, ast.expr]] = [(target, node.value)]
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs = zip(target.elts, node.value.elts, strict=False)
            for t, v in pairs:
                if isinstance(t, ast.Name):
                    yield t.id, v


def _kind_names(tree: ast.AST) -> dict[str, str]:
    """Names bound to ``MetricKind.X`` anywhere in a module (``_C = MetricKind.COUNTER``)."""
    return {name: k for name, v in _bindings(tree) if (k := _kind_attr(v)) is not None}


def _string_names(tree: ast.AST) -> dict[str, list[str]]:
    """The string literals bound to each name anywhere in a module (``up, dur = ("a.up", "a.duration")``
    binds ``up`` to "a.up"; a name bound in two branches has both)."""
    out: dict[str, list[str]] = {}
    for name, v in _bindings(tree):
        if _text(v):
            out.setdefault(name, []).append(_text(v))
    return out


def _kind_attr(v: ast.expr) -> str | None:
    if isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name) and v.value.id == "MetricKind":
        return v.attr
    return None


def _arg(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _text(node: ast.expr | None) -> str:
    """A string literal's text, an implicit concatenation's too; '' for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return ""


def scan_source(text: str, filename: str) -> Iterator[MetricInfo]:
    """The metrics declared in one module's source ``text``."""
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as e:
        raise CatalogError(f"{filename}:{e.lineno}: {e.msg}") from None
    kinds = _kind_names(tree)
    strings = _string_names(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.id if isinstance(node.func, ast.Name) else node.func.attr if isinstance(
            node.func, ast.Attribute) else ""
        pos = _POSITIONS.get(func)
        if pos is None or not node.args:
            continue
        first = node.args[0]
        names = [_text(first)] if _text(first) else strings.get(first.id, []) if isinstance(first, ast.Name) else []
        where = f"{filename}:{node.lineno}"
        kind_node = _arg(node, pos["kind"], "kind")
        kind = _kind_attr(kind_node) if kind_node is not None else None
        if kind is None and isinstance(kind_node, ast.Name):
            kind = kinds.get(kind_node.id)
        for name in names:
            if kind is None or kind not in MetricKind.__members__:
                raise CatalogError(f"{where}: metric {name!r}: its kind is not MetricKind.<KIND> nor a name bound to one")
            yield MetricInfo(name, MetricKind[kind], _text(_arg(node, pos["unit"], "unit")),
                             _text(_arg(node, pos["description"], "description")), where, name in _NATIVE)


@functools.lru_cache(maxsize=256)
def _scan_file(path: Path, mtime_ns: int) -> tuple[MetricInfo, ...]:
    return tuple(scan_source(path.read_text(encoding="utf-8"), str(path)))


def catalog(family: Family) -> list[MetricInfo]:
    """The metrics of ``family``, one per name (the first declaration), in declaration order."""
    seen: dict[str, MetricInfo] = {}
    for module in family.modules:
        for path in _source_files(module):
            for m in _scan_file(path, path.stat().st_mtime_ns):
                if m.name in seen and seen[m.name].kind is not m.kind:
                    raise CatalogError(f"{m.where}: metric {m.name!r} is a {m.kind.value} here and a "
                                       f"{seen[m.name].kind.value} at {seen[m.name].where}")
                seen.setdefault(m.name, m)
    return list(seen.values())


_TEXT_KINDS = {"counter": MetricKind.COUNTER, "gauge": MetricKind.GAUGE, "histogram": MetricKind.HISTOGRAM,
               "summary": MetricKind.SUMMARY, "untyped": MetricKind.GAUGE, "unknown": MetricKind.GAUGE}


def declared_names() -> set[str]:
    """The sample names (a counter's with ``_total``) of every metric the families declare."""
    out: set[str] = set()
    for f in FAMILIES:
        for m in catalog(f):
            out.add(m.prom_name + ("_total" if m.kind is MetricKind.COUNTER and not m.native else ""))
    return out


def from_exposition(body: bytes, where: str, limit: int = 500) -> list[MetricInfo]:
    """The families of a Prometheus text exposition (a running monbridge's ``/metrics``) that no
    family declares, as metrics with the names they are exposed with; at most ``limit`` (a
    ``CatalogError`` names ``where`` when there are more, or when the body does not parse)."""
    from integrations.prometheus.textparse import ParseError, parse

    try:
        families = parse(body)
    except ParseError as e:
        raise CatalogError(f"{where}: {e}") from None
    known = declared_names() | {"target_info"}
    out = [MetricInfo(f.name, _TEXT_KINDS.get(f.type, MetricKind.GAUGE), "", f.help, where, native=True)
           for f in families if f.name not in known]
    if len(out) > limit:
        raise CatalogError(f"{where}: {len(out)} families no plugin declares, more than the {limit} a dashboard takes")
    return out
