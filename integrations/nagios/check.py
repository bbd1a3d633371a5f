"""``monbridge check``: monbridge as a Nagios plugin, so a Nagios, Icinga or Naemon can check
anything a running monbridge collects or bridges.

* ``monbridge check metric --metric NAME [--match K=V ...] [--aggregate avg|min|max|sum|count]
  [-w RANGE] [-c RANGE]`` reads the server's ``/metrics``, takes the series of NAME (an OTel name,
  ``system.cpu.utilization``, found under its Prometheus name ``system_cpu_utilization_ratio``, or
  a Prometheus name) whose attributes match, aggregates their values and compares the result with
  the Nagios ranges: CRITICAL if ``-c`` raises an alert, else WARNING if ``-w`` does, else OK.
* ``monbridge check alerts [--severity S] [--match K=V ...] [--state active|firing] [-w] [-c]``
  reads ``/api/v1/alerts``: without ranges the state is the worst severity among the matching
  alerts (critical: CRITICAL, any other: WARNING, none: OK); with ranges, they apply to the count.

Each prints one line ``MONBRIDGE STATE - text | perfdata`` and exits with the state's code (0 OK,
1 WARNING, 2 CRITICAL, 3 UNKNOWN). Anything that keeps the check from giving an answer (the
server unreachable, an HTTP error, a body it cannot read, a bad option) is UNKNOWN. The server's
authentication is the ``alerts`` CLI's: ``--bearer-token`` (``MONBRIDGE_BEARER_TOKEN``),
``--basic-auth USER:PASSWORD`` (``MONBRIDGE_BASIC_AUTH``), ``--ca-file``; ``--url`` (``MONBRIDGE_URL``).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import click

from integrations.nagios.output import State
from integrations.nagios.perfdata import PerfItem, format_perfdata
from integrations.nagios.ranges import Range, RangeError, format_number, parse_range

__all__ = ["check", "main"]

#: The most of a response the check reads (a /metrics of a large agent fits).
MAX_BODY = 256 << 20
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_UNIT_WORDS = ("seconds", "milliseconds", "microseconds", "nanoseconds", "bytes", "kibibytes", "mebibytes",
               "gibibytes", "tibibytes", "kilobytes", "megabytes", "gigabytes", "terabytes", "percent", "ratio",
               "hours", "minutes", "days", "meters", "volts", "amperes", "joules", "watts", "grams", "celsius", "hertz")
_SUFFIXES = frozenset({"total", "value", *_UNIT_WORDS, *(f"{w}_total" for w in _UNIT_WORDS)})
_UOM_OF_SUFFIX = {"seconds": "s", "bytes": "B", "percent": "%"}


class CheckFailed(Exception):
    """The check cannot answer: UNKNOWN with this text."""


def emit(state: State, text: str, perfdata: Sequence[PerfItem] = ()) -> NoReturn:
    """Print the plugin line and exit with the state's code."""
    perf = format_perfdata(list(perfdata))
    text = " ".join(text.split("|"))  # a '|' in the text would start the perfdata
    click.echo(f"MONBRIDGE {state.name} - {text}" + (f" | {perf}" if perf else ""))
    sys.exit(int(state))


class _NagiosGroup(click.Group):
    """A group whose usage errors are UNKNOWN (exit 3), as a Nagios plugin's must be: click's own
    exit status for them, 2, would read as CRITICAL."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            emit(State.UNKNOWN, f"usage: {e.format_message()}")
        except CheckFailed as e:
            emit(State.UNKNOWN, str(e))


class _Server:
    """The monbridge server's HTTP API, with its authentication."""

    def __init__(self, url: str, bearer_token: str | None, basic_auth: str | None, ca_file: str | None,
                 timeout: float) -> None:
        self.url = url.rstrip("/")
        self.headers = {"User-Agent": "monbridge-check", "X-Monbridge-User": "check"}
        if bearer_token:
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        elif basic_auth:
            if ":" not in basic_auth:
                raise CheckFailed("--basic-auth: expected USER:PASSWORD")
            self.headers["Authorization"] = "Basic " + base64.b64encode(basic_auth.encode()).decode()
        try:
            self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
        except (OSError, ssl.SSLError) as e:
            raise CheckFailed(f"--ca-file {ca_file}: {e}") from None
        self.timeout = timeout

    def get(self, path: str, accept: str) -> bytes:
        req = urllib.request.Request(self.url + path, headers={**self.headers, "Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ctx) as resp:
                body: bytes = resp.read(MAX_BODY + 1)
        except urllib.error.HTTPError as e:
            excerpt = e.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            raise CheckFailed(f"GET {path} from {self.url}: HTTP {e.code} {excerpt}") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise CheckFailed(f"cannot reach monbridge at {self.url}: {reason}") from None
        if len(body) > MAX_BODY:
            raise CheckFailed(f"GET {path} from {self.url}: response larger than {MAX_BODY} bytes")
        return body


def _server_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--url", envvar="MONBRIDGE_URL", default="http://127.0.0.1:9464", show_default=True,
                     help="the monbridge server (env MONBRIDGE_URL)"),
        click.option("--bearer-token", envvar="MONBRIDGE_BEARER_TOKEN", help="bearer token (env MONBRIDGE_BEARER_TOKEN)"),
        click.option("--basic-auth", envvar="MONBRIDGE_BASIC_AUTH", help="USER:PASSWORD (env MONBRIDGE_BASIC_AUTH)"),
        click.option("--ca-file", type=click.Path(dir_okay=False), help="CA bundle to verify an https server"),
        click.option("--timeout", "-t", type=click.FloatRange(min=0.1, max=3600), default=10.0, show_default=True,
                     help="seconds to wait for the server"),
        click.option("--warning", "-w", "warning", help="Nagios range: WARNING when it alerts (10, 10:, ~:10, 10:20, @10:20)"),
        click.option("--critical", "-c", "critical", help="Nagios range: CRITICAL when it alerts"),
        click.option("--match", "matches", multiple=True, metavar="K=V", help="only series (alerts) whose attribute "
                     "(label) K is V; K!=V: is not V (repeatable)"),
    ]):
        f = opt(f)
    return f


def _ranges(warning: str | None, critical: str | None) -> tuple[Range | None, Range | None]:
    try:
        return (parse_range(warning) if warning else None, parse_range(critical) if critical else None)
    except RangeError as e:
        raise CheckFailed(f"-w/-c: {e}") from None


def _matchers(matches: Sequence[str], key: Callable[[str], str]) -> list[tuple[str, str, bool]]:
    out = []
    for m in matches:
        neg = "!=" in m
        k, sep, v = m.partition("!=" if neg else "=")
        if not k.strip() or not sep:
            raise CheckFailed(f"--match {m!r}: expected K=V or K!=V")
        out.append((key(k.strip()), v, neg))
    return out


def _state(value: float, warn: Range | None, crit: Range | None) -> State:
    if crit is not None and crit.alerts(value):
        return State.CRITICAL
    if warn is not None and warn.alerts(value):
        return State.WARNING
    return State.OK


def prometheus_metric_name(name: str) -> str:
    """An OTel metric name with the characters Prometheus names cannot hold replaced, as ``/metrics`` does."""
    return re.sub(r"__+", "_", _INVALID_NAME.sub("_", name)).strip("_")


def prometheus_label_name(key: str) -> str:
    name = re.sub(r"__+", "_", _INVALID_LABEL.sub("_", key))
    return name if name and not name[0].isdigit() else "key_" + name


@click.group(cls=_NagiosGroup)
def check() -> None:
    """Monbridge as a Nagios plugin: check a metric or the alerts of a running monbridge.

    Prints MONBRIDGE STATE - text | perfdata and exits 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    """


@check.command()
@click.option("--metric", "-m", required=True, help="OTel name (system.cpu.utilization) or Prometheus name")
@click.option("--aggregate", "-a", type=click.Choice(["avg", "min", "max", "sum", "count"]), default="avg",
              show_default=True, help="how the matching series' values become one")
@_server_options
def metric(metric: str, aggregate: str, url: str, bearer_token: str | None, basic_auth: str | None,
           ca_file: str | None, timeout: float, warning: str | None, critical: str | None,
           matches: tuple[str, ...]) -> None:
    """One metric of a running monbridge, aggregated over the series that match, against -w/-c."""
    from integrations.prometheus.textparse import ParseError, TextParser

    warn, crit = _ranges(warning, critical)
    matchers = _matchers(matches, prometheus_label_name)
    server = _Server(url, bearer_token, basic_auth, ca_file, timeout)
    body = server.get("/metrics", "text/plain;version=0.0.4")
    try:
        families = TextParser().parse(body)
    except ParseError as e:
        raise CheckFailed(f"/metrics of {server.url} cannot be read: {e}") from None
    base = prometheus_metric_name(metric)
    chosen = [f for f in families if f.name == base] or [
        f for f in families if f.name.startswith(base + "_") and f.name[len(base) + 1:] in _SUFFIXES]
    if not chosen:
        raise CheckFailed(f"no metric {metric!r} at {server.url} (looked for {base} and {base}_<unit>)")
    fam = chosen[0]
    values = []
    for name, labels, value, _ts, _key in fam.samples:
        if name not in (fam.name, fam.name + "_total"):
            continue  # buckets, counts and sums of histograms and summaries
        d = dict(labels)
        if all((d.get(k) == v) != neg for k, v, neg in matchers):
            values.append(value)
    where = (" matching " + ",".join(matches)) if matches else ""
    if not values:
        raise CheckFailed(f"no series of {fam.name}{where} at {server.url}")
    aggregates: dict[str, Callable[[list[float]], float]] = {
        "avg": lambda v: sum(v) / len(v), "min": min, "max": max, "sum": sum, "count": lambda v: float(len(v))}
    result = float(aggregates[aggregate](values))
    suffix = fam.name.rsplit("_", 1)[-1] if fam.type != "counter" else fam.name.removesuffix("_total").rsplit("_", 1)[-1]
    uom = "c" if fam.type == "counter" else _UOM_OF_SUFFIX.get(suffix, "")
    state = _state(result, warn, crit)
    text = f"{metric} {aggregate} {format_number(result)} ({len(values)} series{where})"
    emit(state, text, [PerfItem(metric, result, uom, warn, crit)])


@check.command()
@click.option("--severity", "-s", help="only alerts of this severity")
@click.option("--state", "alert_state", type=click.Choice(["active", "firing"]), default="active", show_default=True,
              help="active: firing and acknowledged alerts; firing: not acknowledged ones only")
@_server_options
def alerts(severity: str | None, alert_state: str, url: str, bearer_token: str | None, basic_auth: str | None,
           ca_file: str | None, timeout: float, warning: str | None, critical: str | None,
           matches: tuple[str, ...]) -> None:
    """The alerts of a running monbridge: the worst severity among those that match, or their
    count against -w/-c."""
    warn, crit = _ranges(warning, critical)
    matchers = _matchers(matches, lambda k: k)
    server = _Server(url, bearer_token, basic_auth, ca_file, timeout)
    body = server.get(f"/api/v1/alerts?state={urllib.parse.quote(alert_state)}", "application/json")
    try:
        doc = json.loads(body)
        listed = doc["data"]
        alerts_ = [a for a in listed if isinstance(a, dict) and isinstance(a.get("labels"), dict)]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckFailed(f"/api/v1/alerts of {server.url} cannot be read: {type(e).__name__}: {e}") from None
    chosen = [a for a in alerts_ if (severity is None or a.get("severity") == severity)
              and all((str(a["labels"].get(k)) == v) != neg for k, v, neg in matchers)]
    by_sev: dict[str, int] = {}
    for a in chosen:
        by_sev[str(a.get("severity") or "none")] = by_sev.get(str(a.get("severity") or "none"), 0) + 1
    n = len(chosen)
    if warn is not None or crit is not None:
        state = _state(float(n), warn, crit)
    elif not chosen:
        state = State.OK
    else:
        state = State.CRITICAL if "critical" in by_sev else State.WARNING
    names = ", ".join(f"{a.get('name', '?')} ({a.get('severity') or 'none'})" for a in chosen[:5])
    more = f" and {n - 5} more" if n > 5 else ""
    text = f"{n} {alert_state} alert{'s' if n != 1 else ''}" + (f": {names}{more}" if n else "")
    perf = [PerfItem("alerts", float(n), "", warn, crit, 0.0),
            *(PerfItem(sev, float(k), "", None, None, 0.0) for sev, k in sorted(by_sev.items()))]
    emit(state, text, perf)


def main() -> None:  # pragma: no cover - ``python -m integrations.nagios.check``
    check(prog_name="monbridge check")


if __name__ == "__main__":  # pragma: no cover
    main()
