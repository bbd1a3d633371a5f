"""``monbridge alerts``: list, acknowledge, resolve and silence alerts of a running monbridge.

The commands talk to the server's API (``--url``), with the server's authentication: a bearer
token (``--bearer-token`` or ``MONBRIDGE_BEARER_TOKEN``) or basic auth (``--basic-auth
USER:PASSWORD`` or ``MONBRIDGE_BASIC_AUTH``), and ``--ca-file`` for a server with its own CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import click

__all__ = ["alerts"]

EXIT_FAILED = 1


class _Api:
    def __init__(self, url: str, bearer_token: str | None, basic_auth: str | None, ca_file: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Accept": "application/json", "X-Monbridge-User": "cli"}
        if bearer_token:
            self.headers["Authorization"] = f"Bearer {bearer_token}"
        elif basic_auth:
            if ":" not in basic_auth:
                raise click.BadParameter("expected USER:PASSWORD", param_hint="--basic-auth")
            self.headers["Authorization"] = "Basic " + base64.b64encode(basic_auth.encode()).decode()
        self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ctx) as resp:
                doc = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                msg = json.loads(raw).get("error") or raw.decode(errors="replace")
            except ValueError:
                msg = raw.decode(errors="replace").strip()
            click.echo(f"error: {method} {path}: HTTP {e.code}: {msg}", err=True)
            sys.exit(EXIT_FAILED)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            click.echo(f"error: cannot reach monbridge at {self.url} (--url): {reason}", err=True)
            sys.exit(EXIT_FAILED)
        return doc.get("data")


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class _Connection:
    """The connection settings: the group's (``monbridge alerts --url U list``), each overridden by
    the same option after the subcommand (``monbridge alerts list --url U``)."""

    def __init__(self, **settings: str | None) -> None:
        self.settings = settings

    def api(self) -> _Api:
        return _Api(**self.settings)  # type: ignore[arg-type]


_F = TypeVar("_F", bound=Callable[..., Any])

_URL_HELP = "the running monbridge's server (env MONBRIDGE_URL)"
_TOKEN_HELP = "bearer token (env MONBRIDGE_BEARER_TOKEN)"
_BASIC_HELP = "USER:PASSWORD (env MONBRIDGE_BASIC_AUTH)"
_CA_HELP = "CA bundle to verify an https server"


def _override(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None and param.name is not None:
        ctx.ensure_object(_Connection).settings[param.name] = value


def _pass_api(f: _F) -> _F:
    """Give the command its ``_Api`` (first argument) and take the connection options after it too."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        return f(click.get_current_context().ensure_object(_Connection).api(), *args, **kwargs)

    for name, help_ in (("--ca-file", _CA_HELP), ("--basic-auth", _BASIC_HELP), ("--bearer-token", _TOKEN_HELP),
                        ("--url", _URL_HELP)):
        kind = click.Path(exists=True, dir_okay=False) if name == "--ca-file" else None
        command = click.option(name, type=kind, expose_value=False, callback=_override, is_eager=False,
                               help=help_ + " [default: the one before the subcommand]")(command)
    return command  # type: ignore[return-value]


@click.group()
@click.option("--url", envvar="MONBRIDGE_URL", default="http://127.0.0.1:9464", show_default=True, help=_URL_HELP)
@click.option("--bearer-token", envvar="MONBRIDGE_BEARER_TOKEN", help=_TOKEN_HELP)
@click.option("--basic-auth", envvar="MONBRIDGE_BASIC_AUTH", help=_BASIC_HELP)
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help=_CA_HELP)
@click.pass_context
def alerts(ctx: click.Context, url: str, bearer_token: str | None, basic_auth: str | None, ca_file: str | None) -> None:
    """List, acknowledge, resolve and silence the alerts of a running monbridge.

    The connection options (--url, --bearer-token, --basic-auth, --ca-file) go before or after
    the subcommand: monbridge alerts ack ID --url http://host:9464.
    """
    ctx.obj = _Connection(url=url, bearer_token=bearer_token, basic_auth=basic_auth, ca_file=ca_file)


@alerts.command(name="list")
@click.option("--state", type=click.Choice(["active", "firing", "acknowledged", "resolved", "all"]), default="active",
              show_default=True, help="which alerts: active (firing and acknowledged), one state, or all")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@_pass_api
def list_cmd(api: _Api, state: str | None, as_json: bool) -> None:
    """Current alerts: id, state, name, severity, since, labels."""
    data = api.call("GET", f"/api/v1/alerts?state={state}")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{'ID':<20} {'STATE':<13} {'NAME':<24} {'SEVERITY':<9} {'SINCE':<20} LABELS")
    for a in data:
        labels = ",".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "severity"))
        muted = f"  (muted: {a['muted_by']})" if a.get("muted_by") else ""
        click.echo(f"{a['id']:<20} {a['state']:<13} {a['name']:<24} {a['severity']:<9} {_when(a['starts_at']):<20} "
                   f"{labels}{muted}")


def _transition(api: _Api, alert_id: str, action: str) -> None:
    a = api.call("POST", f"/api/v1/alerts/{alert_id}/{action}")
    click.echo(f"{a['id']} {a['name']}: {a['state']}")


@alerts.command()
@click.argument("alert_id")
@_pass_api
def ack(api: _Api, alert_id: str) -> None:
    """Acknowledge ALERT_ID."""
    _transition(api, alert_id, "ack")


@alerts.command()
@click.argument("alert_id")
@_pass_api
def resolve(api: _Api, alert_id: str) -> None:
    """Resolve ALERT_ID."""
    _transition(api, alert_id, "resolve")


@alerts.command()
@click.option("--alert-id", help="only this alert's transitions")
@click.option("--limit", type=int, default=50, show_default=True)
@_pass_api
def history(api: _Api, alert_id: str | None, limit: int) -> None:
    """Transitions, oldest first."""
    q = f"?limit={limit}" + (f"&alert_id={alert_id}" if alert_id else "")
    for t in api.call("GET", "/api/v1/alerts/history" + q):
        click.echo(f"{_when(t['at'])}  {t['alert_id']:<20} {t['name']:<24} {t['from'] or 'new':>12} -> {t['to']:<13} "
                   f"by {t['by'] or '?'}")


@alerts.command()
@click.argument("matchers", nargs=-1)
@click.option("--duration", default="1h", show_default=True, help="how long, with its unit: 90s, 30m, 1h30m, 2d, 1w")
@click.option("--comment", default="", help="why")
@click.option("--author", default="cli", show_default=True)
@click.option("--list", "list_", is_flag=True, help="list silences instead")
@click.option("--expire", metavar="SILENCE_ID", help="expire this silence instead")
@_pass_api
def silence(api: _Api, matchers: tuple[str, ...], duration: str, comment: str, author: str, list_: bool,
            expire: str | None) -> None:
    """Silence alerts matching MATCHERS (alertname=HighCPU 'severity=~"warn.*"'); --list, --expire ID."""
    if list_:
        for s in api.call("GET", "/api/v1/silences"):
            ms = ",".join(_matcher_text(m) for m in s["matchers"])
            click.echo(f"{s['id']}  {s['status']['state']:<8} until {s['endsAt']}  {ms}  {s['comment']}")
        return
    if expire:
        s = api.call("DELETE", f"/api/v1/silences/{expire}")
        click.echo(f"{s['id']} expired")
        return
    if not matchers:
        raise click.UsageError("give at least one matcher, e.g. alertname=HighCPU")
    seconds = _duration(duration)
    s = api.call("POST", "/api/v1/silences", {"matchers": list(matchers), "duration": seconds,
                                              "comment": comment, "createdBy": author})
    click.echo(f"{s['silenceID']}")


def _matcher_text(m: dict[str, Any]) -> str:
    op = ("=~" if m["isEqual"] else "!~") if m["isRegex"] else ("=" if m["isEqual"] else "!=")
    return f'{m["name"]}{op}"{m["value"]}"'


#: Prometheus' (and amtool's) durations: units from largest to smallest, each at most once
#: (90s, 30m, 1h30m, 2d, 1w, 1y, 500ms); a number needs its unit.
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DURATION_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)


def _duration(text: str) -> float:
    t = text.strip()
    m = _DURATION.fullmatch(t)
    if not t or m is None:
        raise click.BadParameter(f"{text!r}: expected a duration with its unit, as amtool's: 90s, 30m, 1h30m, 2d, 1w "
                                 "(units y, w, d, h, m, s, ms)", param_hint="--duration")
    v = sum(int(n) * unit for n, unit in zip(m.groups(), _DURATION_UNITS, strict=True) if n)
    if v <= 0:
        raise click.BadParameter("must be positive", param_hint="--duration")
    return v
