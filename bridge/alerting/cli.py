"""``monbridge alerts``: list, acknowledge, resolve and silence alerts of a running monbridge.

The commands talk to the server's API (``--url``), with the server's authentication: a bearer
token (``--bearer-token`` or ``MONBRIDGE_BEARER_TOKEN``) or basic auth (``--basic-auth
USER:PASSWORD`` or ``MONBRIDGE_BASIC_AUTH``), and ``--ca-file`` for a server with its own CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

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


@click.group()
@click.option("--url", envvar="MONBRIDGE_URL", default="http://127.0.0.1:9464", show_default=True,
              help="the running monbridge's server (env MONBRIDGE_URL)")
@click.option("--bearer-token", envvar="MONBRIDGE_BEARER_TOKEN", help="bearer token (env MONBRIDGE_BEARER_TOKEN)")
@click.option("--basic-auth", envvar="MONBRIDGE_BASIC_AUTH", help="USER:PASSWORD (env MONBRIDGE_BASIC_AUTH)")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="CA bundle to verify an https server")
@click.pass_context
def alerts(ctx: click.Context, url: str, bearer_token: str | None, basic_auth: str | None, ca_file: str | None) -> None:
    """List, acknowledge, resolve and silence the alerts of a running monbridge."""
    ctx.obj = _Api(url, bearer_token, basic_auth, ca_file)


@alerts.command(name="list")
@click.option("--state", type=click.Choice(["active", "firing", "acknowledged", "resolved", "all"]), default="active",
              show_default=True, help="which alerts: active (firing and acknowledged), one state, or all")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.pass_obj
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
@click.pass_obj
def ack(api: _Api, alert_id: str) -> None:
    """Acknowledge ALERT_ID."""
    _transition(api, alert_id, "ack")


@alerts.command()
@click.argument("alert_id")
@click.pass_obj
def resolve(api: _Api, alert_id: str) -> None:
    """Resolve ALERT_ID."""
    _transition(api, alert_id, "resolve")


@alerts.command()
@click.option("--alert-id", help="only this alert's transitions")
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def history(api: _Api, alert_id: str | None, limit: int) -> None:
    """Transitions, oldest first."""
    q = f"?limit={limit}" + (f"&alert_id={alert_id}" if alert_id else "")
    for t in api.call("GET", "/api/v1/alerts/history" + q):
        click.echo(f"{_when(t['at'])}  {t['alert_id']:<20} {t['name']:<24} {t['from'] or 'new':>12} -> {t['to']:<13} "
                   f"by {t['by'] or '?'}")


@alerts.command()
@click.argument("matchers", nargs=-1)
@click.option("--duration", default="1h", show_default=True, help="how long: 90s, 30m, 2h, 1d")
@click.option("--comment", default="", help="why")
@click.option("--author", default="cli", show_default=True)
@click.option("--list", "list_", is_flag=True, help="list silences instead")
@click.option("--expire", metavar="SILENCE_ID", help="expire this silence instead")
@click.pass_obj
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


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    t = text.strip()
    try:
        if t and t[-1] in units:
            v = float(t[:-1]) * units[t[-1]]
        else:
            v = float(t)
    except ValueError:
        raise click.BadParameter("expected a duration such as 90s, 30m, 2h, 1d", param_hint="--duration") from None
    if v <= 0:
        raise click.BadParameter("must be positive", param_hint="--duration")
    return v
