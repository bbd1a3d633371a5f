"""``monbridge grafana dashboards``: the Grafana dashboards of monbridge's plugin families as
Grafana JSON models, one file per family (``monbridge-<family>.json``) in ``--out``, or all of them
as one JSON array on stdout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.group()
def grafana() -> None:
    """Grafana: dashboards for monbridge's metrics."""


@grafana.command()
@click.option("--out", "out", type=click.Path(file_okay=False), help="write one file per dashboard in this directory "
              "(created when missing) [default: all dashboards as one JSON array on stdout]")
@click.option("--family", "families", multiple=True, help="only this plugin family (repeatable): "
              "host, monbridge, prometheus, alerting, otlp, datadog, elasticsearch, nagios, grafana")
@click.option("--metrics-url", help="also a dashboard of the metrics a running monbridge exposes here (its /metrics "
              "URL) that no plugin declares: third-party plugins, OTel API instruments, imported series")
def dashboards(out: str | None, families: tuple[str, ...], metrics_url: str | None) -> None:
    """Generate Grafana dashboards (JSON model) for a Prometheus data source: one per plugin family,
    a panel per metric the family's plugins declare, templated on job, instance and host.name."""
    from integrations.grafana.catalog import FAMILIES, OTHER, CatalogError, from_exposition
    from integrations.grafana.dashboards import build, dashboard_json, uid

    known = {f.key: f for f in FAMILIES}
    unknown = [k for k in families if k not in known]
    if unknown:
        raise click.BadParameter(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                                 f"expected one of {', '.join(known)}", param_hint="--family")
    chosen = [known[k] for k in families] if families else list(known.values())
    try:
        docs = [(uid(f), build(f)) for f in chosen]
        if metrics_url is not None:
            other = from_exposition(_fetch(metrics_url), metrics_url)
            if other:
                docs.append((uid(OTHER), build(OTHER, other)))
    except CatalogError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if out is None:
        click.echo(json.dumps([d for _, d in docs], indent=2, sort_keys=True))
        return
    directory = Path(out)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, doc in docs:
            (directory / f"{name}.json").write_text(dashboard_json(doc), encoding="utf-8")
    except OSError as e:
        click.echo(f"error: --out {out}: {e.strerror or e}", err=True)
        sys.exit(1)
    click.echo(f"{len(docs)} dashboard{'s' if len(docs) != 1 else ''} written to {directory}")


#: The largest /metrics body read for --metrics-url.
MAX_METRICS_BYTES = 64 << 20


def _fetch(url: str) -> bytes:
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"{url!r} is not an http:// or https:// URL", param_hint="--metrics-url")
    req = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - the scheme is checked above
            body: bytes = r.read(MAX_METRICS_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        click.echo(f"error: --metrics-url {url}: {getattr(e, 'reason', None) or e}", err=True)
        sys.exit(1)
    if len(body) > MAX_METRICS_BYTES:
        click.echo(f"error: --metrics-url {url}: more than {MAX_METRICS_BYTES} bytes", err=True)
        sys.exit(1)
    return body
