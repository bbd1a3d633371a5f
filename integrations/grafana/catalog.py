"""The metrics each plugin family declares, read from the plugins' source: every ``Metric(...)``
and ``MetricSpec(...)`` (the collectors' declarative tables) whose name is a string literal gives
a metric's name, kind, unit and description, as the plugin reports it. The source is read as
text (``ast``), never imported, so a plugin family's dashboard needs none of its dependencies.

A name (or description) may also be an f-string over what the family's source fixes elsewhere:

* a parameter of the function declaring it, given a literal at a call in the family's modules
  (``cloud_metrics(prefix, api)`` declares ``f"{prefix}_up"``; ``cloud_metrics("aws_cloudwatch", ...)``
  gives ``aws_cloudwatch_up``), once per call;
* an attribute of ``self`` or ``cls`` in a class's method, given a literal by that class or a
  subclass in the family's modules (``DbCollector`` declares ``f"{self.system}.up"``;
  ``PostgresqlCollector(DbCollector)`` sets ``system = "postgresql"``), once per such class.

Any other f-string is a name known only at run time (a series a collector imports) and is not a
declaration. A family whose plugins import Prometheus names (a class sets
``imports_prometheus_names = True``) reports its undotted names as they are, as the pipeline
keeps them (``native``).

A family (``FAMILIES``) names the modules that report its metrics; a metric whose kind cannot be
read (not ``MetricKind.X`` nor a name bound to one in its module) is a ``CatalogError`` naming the
file and line, so a plugin that changes how it declares its metrics is noticed, not left out.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
from collections.abc import Iterable, Iterator, Sequence
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
           "pipeline's series, refused HTTP requests, config reloads and the web dashboard's history",
           ("bridge.supervisor", "bridge.server", "bridge.runtime", "bridge.dashboard"), ()),
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
    # One dashboard per database server, as the servers' exporters ship theirs.
    Family("postgresql", "PostgreSQL", "PostgreSQL servers: up, connections, transactions, rows, blocks, sizes, "
           "locks, checkpoints, replication, WAL and top statements", ("collectors.postgresql", "collectors.db"),
           ("monitoring.metrics.postgresql",)),
    Family("mysql", "MySQL", "MySQL and MariaDB servers: up, connections, queries and commands, traffic, the "
           "InnoDB buffer pool and row locks, replication, schema sizes", ("collectors.mysql", "collectors.db"),
           ("monitoring.metrics.mysql",)),
    Family("redis", "Redis", "Redis servers: up, clients, memory, commands, keyspace, persistence, replication "
           "and the slow log", ("collectors.redis", "collectors.db"), ("monitoring.metrics.redis",)),
    Family("textfile", "Textfile", "The textfile collector: the files' modification times and read errors (the "
           "series the files hold are the \"other\" dashboard's)", ("collectors.textfile",),
           ("monitoring.metrics.textfile",)),
    Family("cloudwatch", "AWS CloudWatch", "The CloudWatch collector's calls: up, GetMetricData requests, errors "
           "by reason, queries without data", ("collectors.cloudwatch", "collectors.cloud"),
           ("monitoring.metrics.cloudwatch",)),
    Family("gcp", "Google Cloud Monitoring", "The Cloud Monitoring collector's calls: up, ListTimeSeries requests, "
           "errors by reason, queries without data", ("collectors.gcp", "collectors.cloud"),
           ("monitoring.metrics.gcp",)),
    Family("azure", "Azure Monitor", "The Azure Monitor collector's calls: up, metrics batch requests, errors by "
           "reason, queries without data", ("collectors.azure", "collectors.cloud"), ("monitoring.metrics.azure",)),
)

#: The metrics a running monbridge exposes that no family declares (``from_exposition``).
OTHER = Family("other", "Other metrics", "Metrics a running monbridge exposes that no plugin declares in its "
               "source (third-party plugins, OTel API instruments, imported series)", (), ())

#: Call names whose first arguments are (name, kind, value, unit, description) and
#: (name, kind, unit, description).
_POSITIONS = {"Metric": {"kind": 1, "unit": 3, "description": 4}, "MetricSpec": {"kind": 1, "unit": 2, "description": 3}}


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
        if isinstance(node, ast.AnnAssign) and node.value is not None and isinstance(node.target, ast.Name):
            yield node.target.id, node.value
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


@dataclass(frozen=True, slots=True)
class _Template:
    """A declaration whose name is an f-string over a function's parameters (``function``) or
    over ``self``/``cls`` attributes in a method of class ``cls``."""

    name: ast.JoinedStr
    kind: str | None
    unit: ast.expr | None
    description: ast.expr | None
    where: str
    function: tuple[str, tuple[str, ...], bool] | None  # (name, parameters but self, a method)
    cls: str | None


@dataclass(frozen=True, slots=True)
class _Scan:
    """What one module declares: its literal metrics, its templates and what may fill them in."""

    metrics: tuple[MetricInfo, ...]
    templates: tuple[_Template, ...]
    calls: tuple[_Call, ...]
    classes: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], ...]  # name, bases, string attributes
    prometheus_names: bool  # a class sets imports_prometheus_names = True


#: A call: the name called, its literal arguments (None for others), its literal keywords, and
#: whether it is an attribute's (``obj.f(...)``, the only way a method is called).
_Call = tuple[str, tuple[str | None, ...], tuple[tuple[str, str], ...], bool]


def _call_name(node: ast.Call) -> str:
    f = node.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _placeholder(node: ast.expr) -> str | None:
    """The key of an f-string placeholder a template can be filled in with: a name, or ``self.x``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
        return f"self.{node.attr}"
    return None


def _render(node: ast.expr | None, env: dict[str, str]) -> str | None:
    """A string literal's text, or an f-string's with its placeholders from ``env``; None when
    a placeholder is not there (or is formatted)."""
    if not isinstance(node, ast.JoinedStr):
        return _text(node)
    out = []
    for part in node.values:
        if isinstance(part, ast.FormattedValue):
            key = _placeholder(part.value)
            if key is None or key not in env or part.format_spec is not None or part.conversion != -1:
                return None
            out.append(env[key])
        else:
            out.append(_text(part))
    return "".join(out)


def _context(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> tuple[tuple[str, tuple[str, ...], bool] | None,
                                                                     str | None]:
    """The function (name, parameters) ``node`` is directly in (None in a class body or at module
    level), and the class it is in (None outside any)."""
    function: tuple[str, tuple[str, ...], bool] | None = None
    p = parents.get(node)
    while p is not None:
        if isinstance(p, ast.ClassDef):
            return function, p.name
        if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) and function is None:
            a = p.args
            params = tuple(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs))
            static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in p.decorator_list)
            method = isinstance(parents.get(p), ast.ClassDef)
            if method and not static:
                params = params[1:]  # self or cls: a call (obj.f("x")) does not pass it
            function = (p.name, params, method)
        p = parents.get(p)
    return function, None


def _class_info(node: ast.ClassDef) -> tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], bool]:
    """(name, bases, string attributes) of a class, and whether it sets imports_prometheus_names = True."""
    attrs, names = [], False
    for stmt in node.body:
        for name, value in _bindings(ast.Module(body=[stmt], type_ignores=[])) if isinstance(
                stmt, (ast.Assign, ast.AnnAssign)) else ():
            if _text(value):
                attrs.append((name, _text(value)))
            names |= name == "imports_prometheus_names" and isinstance(value, ast.Constant) and value.value is True
    bases = tuple(b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                  if isinstance(b, (ast.Name, ast.Attribute)))
    return (node.name, bases, tuple(attrs)), names


def _info(name: str, kind: str | None, unit: str, description: str, where: str) -> MetricInfo:
    if kind is None or kind not in MetricKind.__members__:
        raise CatalogError(f"{where}: metric {name!r}: its kind is not MetricKind.<KIND> nor a name bound to one")
    return MetricInfo(name, MetricKind[kind], unit, description, where)


def _scan(text: str, filename: str) -> _Scan:
    try:
        tree = ast.parse(text, filename)
    except SyntaxError as e:
        raise CatalogError(f"{filename}:{e.lineno}: {e.msg}") from None
    kinds, strings = _kind_names(tree), _string_names(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    metrics: list[MetricInfo] = []
    templates: list[_Template] = []
    calls: list[_Call] = []
    classes = []
    prometheus_names = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            cls, names = _class_info(node)
            classes.append(cls)
            prometheus_names |= names
        if not isinstance(node, ast.Call):
            continue
        func = _call_name(node)
        calls.append((func, tuple(_text(a) or None for a in node.args),
                      tuple((kw.arg, _text(kw.value)) for kw in node.keywords if kw.arg and _text(kw.value)),
                      isinstance(node.func, ast.Attribute)))
        pos = _POSITIONS.get(func)
        if pos is None or not node.args:
            continue
        first = node.args[0]
        where = f"{filename}:{node.lineno}"
        kind_node = _arg(node, pos["kind"], "kind")
        kind = _kind_attr(kind_node) if kind_node is not None else None
        if kind is None and isinstance(kind_node, ast.Name):
            kind = kinds.get(kind_node.id)
        unit, description = _arg(node, pos["unit"], "unit"), _arg(node, pos["description"], "description")
        if isinstance(first, ast.JoinedStr):
            function, cls_name = _context(node, parents)
            templates.append(_Template(first, kind, unit, description, where, function, cls_name))
            continue
        names_ = [_text(first)] if _text(first) else strings.get(first.id, []) if isinstance(first, ast.Name) else []
        metrics += [_info(name, kind, _text(unit), _text(description), where) for name in names_]
    return _Scan(tuple(metrics), tuple(templates), tuple(calls), tuple(classes), prometheus_names)


def _filled(scans: Sequence[_Scan]) -> Iterator[MetricInfo]:
    """The templates of ``scans`` filled in with what ``scans`` give them (see the module docstring)."""
    calls = [c for s in scans for c in s.calls]
    classes = {name: (bases, dict(attrs)) for s in scans for name, bases, attrs in s.classes}

    def lineage(name: str) -> list[str]:  # a class and its bases among ``classes``, nearest first
        out: list[str] = []
        todo = [name]
        while todo and len(out) < 100:
            c = todo.pop(0)
            if c in classes and c not in out:
                out.append(c)
                todo += classes[c][0]
        return out

    for s in scans:
        for t in s.templates:
            envs: list[dict[str, str]] = []
            if t.function is not None:
                fname, params, method = t.function
                for func, args, keywords, attribute in calls:
                    if func == fname and (attribute or not method):
                        env = {p: a for p, a in zip(params, args, strict=False) if a is not None}
                        envs.append({**env, **dict(keywords)})
            if t.cls is not None:
                for c in classes:
                    line = lineage(c)
                    if t.cls in line:  # a subclass's attributes override its bases'
                        env = {}
                        for k in reversed(line):
                            env.update({f"self.{a}": v for a, v in classes[k][1].items()})
                        envs.append(env)
            names: set[str] = set()
            for env in envs:
                name = _render(t.name, env)
                if name and name not in names:  # a subclass of a subclass gives its base's name again
                    names.add(name)
                    yield _info(name, t.kind, _render(t.unit, env) or "", _render(t.description, env) or "", t.where)


def scan_source(text: str, filename: str) -> Iterator[MetricInfo]:
    """The metrics declared in one module's source ``text`` (its templates filled in by itself)."""
    scan = _scan(text, filename)
    yield from scan.metrics
    yield from _filled([scan])


@functools.lru_cache(maxsize=256)
def _scan_file(path: Path, mtime_ns: int) -> _Scan:
    return _scan(path.read_text(encoding="utf-8"), str(path))


def catalog(family: Family) -> list[MetricInfo]:
    """The metrics of ``family``, one per name (the first declaration), in declaration order."""
    scans = [_scan_file(path, path.stat().st_mtime_ns) for module in family.modules for path in _source_files(module)]
    native = any(s.prometheus_names for s in scans)
    seen: dict[str, MetricInfo] = {}
    for m in [m for s in scans for m in s.metrics] + list(_filled(scans)):
        if native and "." not in m.name and not m.native:  # kept as they are, as the pipeline keeps them
            m = dataclasses.replace(m, native=True)
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
