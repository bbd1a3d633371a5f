"""monitoring.integration.grafana against a stand-in following Grafana's documented HTTP API
(tests/grafana_standin.py, an aiohttp app; no Grafana server runs here): provisioning (folder,
overwrite, versions), alert transitions as annotations, and hostile or broken answers (5xx
retried, 4xx permanent, an oversized answer refused unread, non-JSON, the token never shown)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from aiohttp.test_utils import TestServer

from bridge.api import Alert, AlertState, ExportStatus
from bridge.ledger import LEDGER
from integrations.grafana.catalog import FAMILIES
from integrations.grafana.dashboards import dashboards
from integrations.grafana.plugin import GrafanaIntegration, annotation_tags
from tests.grafana_standin import GrafanaStandIn

TOKEN = "glsa_test_token"


@pytest.fixture
async def grafana():
    standin = GrafanaStandIn(TOKEN)
    server = TestServer(standin.app, host="127.0.0.1")
    await server.start_server()
    standin.url = str(server.make_url("")).rstrip("/")
    yield standin
    await server.close()


async def _plugin(grafana, **config):
    p = GrafanaIntegration()
    await p.initialize({"url": grafana.url, "token": TOKEN, "backoff_initial": 0.01, "backoff_max": 0.01, **config})
    return p


async def _metrics(p):
    return {(m.name, tuple(sorted(m.attributes.items()))): m.value for m in await p.import_metrics()}


async def _export(p):
    return await p.export(None, 10)  # the batch is not read: metrics are not sent to Grafana


async def _until_provisioned(p, rounds=50):
    for _ in range(rounds):
        r = await _export(p)
        if r.ok:
            return r
        await asyncio.sleep(0.02)
    raise AssertionError(f"not provisioned: {r}")


async def test_provisioning_creates_the_folder_and_every_dashboard_once_then_only_what_changed(grafana):
    p = await _plugin(grafana, folder={"uid": "mb", "title": "monbridge dashboards"})
    r = await _export(p)
    assert r.ok, r.reason
    assert grafana.folders["mb"]["title"] == "monbridge dashboards"
    expected = dashboards()
    assert set(grafana.dashboards) == {d["uid"] for d in expected.values()}
    for doc in expected.values():
        stored = grafana.dashboards[doc["uid"]]
        assert stored["folderUid"] == "mb" and stored["dashboard"]["version"] == 1
        assert {k: v for k, v in stored["dashboard"].items() if k not in ("id", "version")} == doc
    assert all(h["overwrite"] is True and h["message"].startswith("monbridge ") for h in grafana.history)
    saves = len(grafana.history)
    assert (await _export(p)).ok and len(grafana.history) == saves  # done: no request at all
    await p.shutdown()

    # A restart: everything is read again, nothing saved (no new version in Grafana's history).
    p = await _plugin(grafana, folder={"uid": "mb"})
    assert (await _export(p)).ok and len(grafana.history) == saves
    assert (await _metrics(p))[("monbridge.grafana.dashboards", (("result", "unchanged"),))] == len(FAMILIES)
    await p.shutdown()

    # Changed in Grafana: replaced (the next version) with overwrite, kept without.
    grafana.dashboards["monbridge-host"]["dashboard"]["title"] = "edited by hand"
    p = await _plugin(grafana, folder={"uid": "mb"}, dashboards={"overwrite": False})
    assert (await _export(p)).ok and len(grafana.history) == saves
    assert grafana.dashboards["monbridge-host"]["dashboard"]["title"] == "edited by hand"
    assert (await _metrics(p))[("monbridge.grafana.dashboards", (("result", "kept"),))] == 1
    await p.shutdown()
    p = await _plugin(grafana, folder={"uid": "mb"}, dashboards={"families": ["host"]})
    assert (await _export(p)).ok
    assert len(grafana.history) == saves + 1 and grafana.history[-1]["dashboard"]["version"] == 1
    stored = grafana.dashboards["monbridge-host"]["dashboard"]
    assert stored["title"] == "monbridge / Host" and stored["version"] == 2
    await p.shutdown()


async def test_a_5xx_is_retried_after_the_backoff_and_a_4xx_stops_provisioning(grafana, caplog):
    grafana.faults += [("GET /api/folders/", 503, {"message": "down"}, {"Retry-After": "0"}),
                       ("POST /api/dashboards/db", 502, b"<html>bad gateway</html>", {})]
    p = await _plugin(grafana, dashboards={"families": ["host"]})
    r = await _export(p)
    assert r.status is ExportStatus.RETRYABLE and "HTTP 503" in r.reason and r.retry_after == 0
    r = await _until_provisioned(p)
    assert grafana.requests.count(("POST", "/api/dashboards/db")) == 2 and "monbridge-host" in grafana.dashboards
    m = await _metrics(p)
    assert m[("monbridge.grafana.requests", (("endpoint", "folders"), ("result", "retryable")))] == 1
    assert m[("monbridge.grafana.requests", (("endpoint", "dashboards"), ("result", "retryable")))] == 1
    await p.shutdown()

    grafana.faults.append(("GET /api/folders/", 403, {"message": f"Permission denied for Bearer {TOKEN}"}, {}))
    p = await _plugin(grafana)
    with caplog.at_level(logging.WARNING, "monbridge.grafana"):
        r = await _export(p)
    assert r.status is ExportStatus.PERMANENT and "HTTP 403" in r.reason and "Permission denied" in r.reason
    assert TOKEN not in r.reason and "<secret>" in r.reason and TOKEN not in caplog.text
    n = len(grafana.requests)
    assert (await _export(p)) == r and len(grafana.requests) == n  # not tried again
    await p.shutdown()


async def test_an_oversized_or_broken_answer_is_refused_without_being_read_whole(grafana):
    big = b'{"uid": "monbridge", "pad": "' + b"x" * (8 << 20) + b'"}'
    grafana.faults.append(("GET /api/folders/", 200, big, {}))
    p = await _plugin(grafana, max_response_bytes=4096)
    r = await _export(p)
    assert r.status is ExportStatus.PERMANENT and "larger than max_response_bytes (4096)" in r.reason
    await p.shutdown()
    grafana.faults.append(("GET /api/folders/", 200, b"not json {", {}))
    p = await _plugin(grafana)
    r = await _export(p)
    assert r.status is ExportStatus.PERMANENT and "not JSON" in r.reason
    await p.shutdown()
    grafana.faults.append(("GET /api/dashboards/uid/", 200, {"no": "dashboard"}, {}))
    p = await _plugin(grafana, dashboards={"families": ["host"]})
    r = await _export(p)
    assert r.status is ExportStatus.PERMANENT and "no dashboard object" in r.reason
    await p.shutdown()
    # A peer that never answers: the request's own timeout, retryable.
    grafana.faults.clear()
    p = await _plugin(grafana, url="http://127.0.0.1:9", request_timeout=1)  # nothing listens on port 9
    r = await _export(p)
    assert r.status is ExportStatus.RETRYABLE and "GET /api/folders/monbridge" in r.reason
    await p.shutdown()


def _alert(fp, state=AlertState.FIRING, **labels):
    return Alert(id=fp, name="DiskFull", severity="critical", state=state, labels={"alertname": "DiskFull", **labels},
                 annotations={"summary": "disk / is 97% full"}, value=97.0, starts_at=time.time() - 60, fingerprint=fp)


async def test_alert_transitions_become_annotation_regions_tagged_from_labels(grafana, tmp_path):
    state = tmp_path / "grafana.json"
    p = await _plugin(grafana, annotations={"tags": ["monbridge", "prod"], "dashboard_uid": "monbridge-host",
                                            "state_path": str(state)})
    a = _alert("fp1", instance="db1:9100", mount="/")
    await p.export_alerts([a])
    (ann,) = grafana.annotations.values()
    assert ann["tags"] == ["monbridge", "prod", "alertname:DiskFull", "severity:critical", "state:firing",
                           "instance:db1:9100", "mount:/"]
    assert ann["time"] == int(a.starts_at * 1000) and ann["dashboardUID"] == "monbridge-host"
    assert ann["text"] == "[firing] DiskFull (critical) (value 97): disk / is 97% full"
    await p.export_alerts([a])  # nothing changed: no request
    assert grafana.requests.count(("POST", "/api/annotations")) == 1 and not any(m == "PATCH" for m, _ in grafana.requests)

    a.state = AlertState.ACKNOWLEDGED
    await p.export_alerts([a])
    assert "state:acknowledged" in ann["tags"] and ann["text"].startswith("[acknowledged]")
    assert ann["timeEnd"] == ann["time"]  # still open
    await p.shutdown()

    # A restart in between: the state file still knows the annotation, so the resolution ends it.
    p = await _plugin(grafana, annotations={"state_path": str(state)})
    assert (await _metrics(p))[("monbridge.grafana.annotations_open", ())] == 1
    before = time.time()
    await p.export_alerts([])
    assert ann["timeEnd"] >= int(before * 1000) > ann["time"] and "state:resolved" in ann["tags"]
    assert "state:acknowledged" not in ann["tags"] and ann["text"] == "[resolved] DiskFull"
    assert len(grafana.annotations) == 1
    m = await _metrics(p)
    assert m[("monbridge.grafana.annotations", (("operation", "end"), ("result", "success")))] == 1
    assert m[("monbridge.grafana.annotations_open", ())] == 0
    assert json.loads(state.read_text()) == {}
    # An alert handed over as resolved ends at its own end time.
    b = _alert("fp2")
    await p.export_alerts([b])
    b.state, b.ends_at = AlertState.RESOLVED, time.time() - 5
    await p.export_alerts([b])
    assert grafana.annotations[max(grafana.annotations)]["timeEnd"] == int(b.ends_at * 1000)
    await p.shutdown()


async def test_annotations_retry_a_5xx_without_duplicates_and_drop_a_4xx_counted(grafana, caplog):
    grafana.faults.append(("POST /api/annotations", 500, {"message": "db locked"}, {}))
    p = await _plugin(grafana)
    a, b = _alert("fp1"), _alert("fp2", mount="/var")
    await p.export_alerts([a, b])
    assert grafana.annotations == {}  # the first failed: the round stops, retried after the backoff
    await asyncio.sleep(0.05)
    await p.export_alerts([a, b])
    assert len(grafana.annotations) == 2
    await p.export_alerts([a, b])
    assert len(grafana.annotations) == 2  # no duplicates

    grafana.faults.append(("POST /api/annotations", 400, {"message": "bad tags"}, {}))
    ledger_before = LEDGER.total("grafana_annotations", "permanent")
    c = _alert("fp3")
    with caplog.at_level(logging.WARNING, "monbridge.grafana"):
        await p.export_alerts([a, b, c])
        await p.export_alerts([a, b, c])
    assert len(grafana.annotations) == 2  # dropped, not retried
    m = await _metrics(p)
    assert m[("monbridge.grafana.annotations_dropped", (("reason", "permanent"),))] == 1
    assert LEDGER.total("grafana_annotations", "permanent") - ledger_before == 1  # in monbridge_dropped_total too
    assert m[("monbridge.grafana.annotations", (("operation", "create"), ("result", "permanent")))] == 1
    assert "HTTP 400" in caplog.text and "bad tags" in caplog.text
    # An annotation deleted in Grafana: its end is refused (404), dropped, the alert forgotten.
    del grafana.annotations[min(grafana.annotations)]
    await p.export_alerts([b, c])
    await p.export_alerts([])
    m = await _metrics(p)
    assert m[("monbridge.grafana.annotations_dropped", (("reason", "permanent"),))] == 2
    assert m[("monbridge.grafana.annotations_open", ())] == 0
    await p.shutdown()


async def test_at_most_max_alerts_are_followed_and_the_rest_counted_once(grafana):
    p = await _plugin(grafana, annotations={"max_alerts": 2}, max_requests_per_round=10)
    alerts = [_alert(f"fp{i}") for i in range(5)]
    await p.export_alerts(alerts)
    await p.export_alerts(alerts)
    assert len(grafana.annotations) == 2
    assert (await _metrics(p))[("monbridge.grafana.annotations_dropped", (("reason", "max_alerts"),))] == 3
    await p.shutdown()


def test_tags_are_bounded_and_unique():
    a = _alert("x", **{f"k{i}": "v" * 500 for i in range(80)})
    tags = annotation_tags(a, ["monbridge", "monbridge"])
    assert len(tags) == 50 and len(set(tags)) == 50 and max(map(len, tags)) == 100


def test_the_config_names_what_is_wrong():
    from pydantic import ValidationError

    from integrations.grafana.config import GrafanaConfig

    with pytest.raises(ValidationError, match="unknown family nope"):
        GrafanaConfig.model_validate({"url": "http://g", "dashboards": {"families": ["host", "nope"]}})
    with pytest.raises(ValidationError, match="uid is 1 to 40"):
        GrafanaConfig.model_validate({"url": "http://g", "folder": {"uid": "a/b"}})
    with pytest.raises(ValidationError, match="http:// or https://"):
        GrafanaConfig.model_validate({"url": "ftp://g"})
    cfg = GrafanaConfig.model_validate({"url": "http://g", "token": "s3cret-token"})
    assert "s3cret-token" not in repr(cfg) and "s3cret-token" not in cfg.model_dump_json()
