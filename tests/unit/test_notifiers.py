"""The notifiers against real servers on 127.0.0.1.

Email: aiosmtpd, a real SMTP server, with STARTTLS (a self-signed certificate) and login.
Jira Cloud, ServiceNow and Twilio cannot run here, so local HTTP servers stand in for them and
the tests check each request against the shape those APIs document: method, path, auth,
content type and body fields (Jira REST v3 issue/comment/transitions/properties and
search/jql; ServiceNow's Table API on the incident table; Twilio's Messages resource).
"""

from __future__ import annotations

import asyncio
import base64
import email
import ssl

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from bridge.alerting.dispatch import notification_key
from bridge.alerting.notify import DeliveryError, Notification, PermanentDeliveryError
from bridge.alerting.tickets import group_fingerprint
from bridge.api import Alert, AlertState
from integrations.alertmanager import AlertmanagerNotifier, am_alerts
from integrations.email import EmailNotifier
from integrations.jira import JiraNotifier
from integrations.servicenow import ServiceNowNotifier
from integrations.sms import TwilioSmsNotifier
from tests.http_recorder import HttpRecorder
from tests.tls_cert import self_signed
from tests.unit.alerting_helpers import EngineUnderTest

SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-t0ken"
JIRA_TOKEN = "jira-api-t0ken"
SNOW_PASSWORD = "sn0w-passw0rd"
SMTP_PASSWORD = "smtp-s3cret"


def note(status="firing", key="k1", notifier="monitoring.alerts.x") -> Notification:
    a = Alert("a1", "HighCPU", "critical", AlertState.FIRING if status == "firing" else AlertState.RESOLVED,
              {"alertname": "HighCPU", "severity": "critical", "host": "h1"}, {"summary": "CPU busy on h1"}, 0.97,
              1_767_323_045.0, None if status == "firing" else 1_767_323_645.0, "f00dfeedf00dfeed")
    return Notification(notifier, key, '{}:{alertname="HighCPU"}', {"alertname": "HighCPU"}, [a],
                        "http://monbridge:9464", 1_767_323_046.0)


def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def make(cls, config, tmp_path=None):
    p = cls()
    await p.initialize(config)
    if tmp_path is not None and hasattr(p, "attach"):
        t = EngineUnderTest(tmp_path)
        p.attach(type("Ctx", (), {"engine": t.engine})())
    return p


# --------------------------------------------------------------------------- email


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((session, envelope))
        return "250 OK"


def smtp_auth(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"monbridge" and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


async def test_email_over_starttls_with_login(tmp_path, free_port):
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    port = free_port()
    server = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                        authenticator=smtp_auth, auth_require_tls=True)
    server.start()
    try:
        n = await make(EmailNotifier, {"smtp": f"127.0.0.1:{port}", "from": "monbridge@example.org",
                                       "to": ["oncall@example.org", "lead@example.org"], "starttls": True,
                                       "username": "monbridge", "password": SMTP_PASSWORD, "ca_file": str(cert)})
        await n.send(note())
        bad = await make(EmailNotifier, {"smtp": f"127.0.0.1:{port}", "from": "monbridge@example.org",
                                         "to": ["oncall@example.org"], "username": "monbridge",
                                         "password": "wrong-password", "ca_file": str(cert)})
        with pytest.raises(PermanentDeliveryError, match="authentication failed") as e:
            await bad.send(note())
        assert "wrong-password" not in str(e.value)
    finally:
        server.stop()
    [(session, envelope)] = inbox.messages
    assert session.ssl is not None  # the message came over the STARTTLS-upgraded connection
    assert envelope.mail_from == "monbridge@example.org"
    assert envelope.rcpt_tos == ["oncall@example.org", "lead@example.org"]
    msg = email.message_from_bytes(envelope.content)
    assert msg["Subject"] == "[FIRING:1] HighCPU"
    assert msg["Message-ID"] == "<k1@monbridge>"
    assert msg.get_content_type() == "multipart/alternative"
    text, html = (p.get_payload(decode=True).decode() for p in msg.get_payload())
    assert "[FIRING] HighCPU (critical) since 2026-01-02T03:04:05.000Z" in text and "summary: CPU busy on h1" in text
    assert "<td>HighCPU</td>" in html and "<b>summary</b>: CPU busy on h1" in html


async def test_email_to_a_closed_port_is_retried(free_port):
    n = await make(EmailNotifier, {"smtp": f"127.0.0.1:{free_port()}", "from": "a@b.c", "to": ["d@e.f"],
                                   "starttls": False, "timeout": 2})
    with pytest.raises(DeliveryError, match="SMTP 127.0.0.1"):
        await n.send(note())


# --------------------------------------------------------------------------- Twilio


async def test_twilio_messages_request_shape():
    hook = HttpRecorder(lambda r: (201, {"sid": "SM" + "0" * 32, "status": "queued"}, {}))
    try:
        n = await make(TwilioSmsNotifier, {"account_sid": SID, "auth_token": TWILIO_TOKEN, "from": "+15005550006",
                                           "to": ["+15551234567", "+15557654321"], "base_url": hook.url})
        await n.send(note())
        await n.shutdown()
    finally:
        hook.stop()
    assert len(hook.requests) == 2
    for r, to in zip(hook.requests, ["+15551234567", "+15557654321"], strict=True):
        assert (r.method, r.path) == ("POST", f"/2010-04-01/Accounts/{SID}/Messages.json")
        assert r.headers["authorization"] == basic(SID, TWILIO_TOKEN)
        assert r.headers["content-type"] == "application/x-www-form-urlencoded"
        assert r.form() == {"To": [to], "From": ["+15005550006"],
                            "Body": ["[FIRING:1] HighCPU\nHighCPU firing: CPU busy on h1"]}


async def test_twilio_config_errors_name_the_field():
    with pytest.raises(Exception, match="\\nto\\n.*not an E.164 number") as e:
        TwilioSmsNotifier.parse_config({"account_sid": SID, "auth_token": TWILIO_TOKEN, "from": "+15005550006",
                                        "to": ["555-1234"]})
    assert TWILIO_TOKEN not in str(e.value)


# --------------------------------------------------------------------------- Jira


class FakeJira:
    """Answers as Jira Cloud's REST API v3 does, for the calls the notifier makes."""

    def __init__(self):
        self.issues = {}
        self.properties = {}
        self.status = {}  # issue key -> status category key (new, indeterminate, done)

    def __call__(self, r):
        if (r.method, r.path) == ("POST", "/rest/api/3/search/jql"):
            jql = r.json()["jql"]
            label = jql.split('labels = "')[1].split('"')[0]
            open_only = "statusCategory != Done" in jql
            hits = [{"id": "1", "key": k} for k, f in self.issues.items()
                    if label in f["labels"] and not (open_only and self.status.get(k) == "done")]
            return 200, {"issues": hits}, {}
        if (r.method, r.path) == ("POST", "/rest/api/3/issue"):
            key = f"OPS-{len(self.issues) + 1}"
            self.issues[key] = r.json()["fields"]
            return 201, {"id": "10001", "key": key, "self": f"http://jira/rest/api/3/issue/{key}"}, {}
        if r.path.endswith("/properties/monbridge"):
            key = r.path.split("/")[5]
            if r.method == "PUT":
                self.properties[key] = r.json()
                return 200, {}, {}
            if key in self.properties:
                return 200, {"key": "monbridge", "value": self.properties[key]}, {}
            return 404, {"errorMessages": ["property not found"]}, {}
        if r.path.endswith("/comment"):
            return 201, {"id": "100"}, {}
        if r.path.endswith("/transitions") and r.method == "GET":
            return 200, {"transitions": [{"id": "21", "name": "In Progress"}, {"id": "31", "name": "Done"}]}, {}
        if r.path.endswith("/transitions"):
            return 204, b"", {}
        if r.method == "GET" and r.path.startswith("/rest/api/3/issue/") and r.path.count("/") == 5:
            key = r.path.rsplit("/", 1)[1]
            category = self.status.get(key, "new")
            names = {"new": "To Do", "indeterminate": "In Progress", "done": "Done"}
            return 200, {"id": "10001", "key": key, "fields": {"status": {
                "name": names[category], "statusCategory": {"id": 3, "key": category, "name": names[category]}}}}, {}
        return 404, {"errorMessages": [f"no {r.method} {r.path}"]}, {}


async def test_jira_one_issue_per_group_comment_transition_idempotent(tmp_path):
    jira = FakeJira()
    srv = HttpRecorder(jira)
    cfg = {"url": srv.url, "email": "bot@example.org", "api_token": JIRA_TOKEN, "project": "OPS"}
    try:
        n = await make(JiraNotifier, cfg, tmp_path)
        await n.send(note(key="k1"))
        await n.send(note(key="k2"))  # a repeat of the group: a comment on the same issue
        # After a restart (state file gone too), the issue is found again by its label, and a
        # notification the issue's property records as applied is not applied again.
        (tmp_path / "jira.json").unlink()
        again = await make(JiraNotifier, cfg, tmp_path / "other")
        await again.send(note(key="k2"))
        await again.send(note("resolved", key="k3"))
        await n.shutdown()
        await again.shutdown()
    finally:
        srv.stop()
    calls = [(r.method, r.path) for r in srv.requests]
    assert calls == [
        ("POST", "/rest/api/3/search/jql"), ("POST", "/rest/api/3/issue"),
        ("PUT", "/rest/api/3/issue/OPS-1/properties/monbridge"),
        ("GET", "/rest/api/3/issue/OPS-1/properties/monbridge"), ("POST", "/rest/api/3/issue/OPS-1/comment"),
        ("PUT", "/rest/api/3/issue/OPS-1/properties/monbridge"),
        ("POST", "/rest/api/3/search/jql"), ("GET", "/rest/api/3/issue/OPS-1/properties/monbridge"),
        ("POST", "/rest/api/3/search/jql"), ("GET", "/rest/api/3/issue/OPS-1/properties/monbridge"),
        ("POST", "/rest/api/3/issue/OPS-1/comment"), ("GET", "/rest/api/3/issue/OPS-1/transitions"),
        ("POST", "/rest/api/3/issue/OPS-1/transitions"), ("PUT", "/rest/api/3/issue/OPS-1/properties/monbridge"),
    ]
    for r in srv.requests:
        assert r.headers["authorization"] == basic("bot@example.org", JIRA_TOKEN)
    created = srv.requests[1].json()["fields"]
    assert created["project"] == {"key": "OPS"} and created["issuetype"] == {"name": "Task"}
    assert created["summary"] == "[FIRING:1] HighCPU"
    fp = jira.properties["OPS-1"]["fingerprint"]
    assert created["labels"] == ["monbridge", f"monbridge-{fp}"]
    assert created["description"]["type"] == "doc" and created["description"]["version"] == 1
    assert created["description"]["content"][0] == {"type": "paragraph",
                                                    "content": [{"type": "text", "text": "[FIRING:1] HighCPU"}]}
    assert srv.requests[0].json() == {"jql": f'project = "OPS" AND labels = "monbridge-{fp}" AND statusCategory != Done',
                                      "fields": ["status"], "maxResults": 1}
    assert srv.requests[4].json()["body"]["type"] == "doc"
    assert srv.requests[12].json() == {"transition": {"id": "31"}}
    assert jira.properties["OPS-1"]["last_notification"] == "k3"


@pytest.mark.parametrize(("on_close", "expected"), [(None, AlertState.ACKNOWLEDGED),
                                                    ("resolve", AlertState.RESOLVED)])
async def test_jira_issue_closed_in_jira_acknowledges_or_resolves_its_alerts(tmp_path, on_close, expected):
    jira = FakeJira()
    srv = HttpRecorder(jira)
    cfg = {"url": srv.url, "email": "bot@example.org", "api_token": JIRA_TOKEN, "project": "OPS",
           "poll_interval": 3600, **({"on_close": on_close} if on_close else {})}
    t = EngineUnderTest(tmp_path)
    try:
        n = await make(JiraNotifier, cfg)
        n.attach(type("Ctx", (), {"engine": t.engine})())
        alert = t.engine.fire(Alert("", "HighCPU", "critical", labels={"host": "h1"}), "test")
        other = t.engine.fire(Alert("", "DiskFull", "warning", labels={"host": "h2"}), "test")
        first = note(key="k1")
        first.alerts[0].id = alert.id
        await n.send(first)
        [key] = jira.issues
        jira.status[key] = "indeterminate"  # in progress: not closed, nothing happens
        await n.poll()
        assert t.engine.store.get(alert.id).state is AlertState.FIRING
        jira.status[key] = "done"  # closed in Jira, by whichever transition
        await n.poll()
        assert t.engine.store.get(alert.id).state is expected
        assert t.engine.store.transitions(alert.id)[-1].by == f"jira:{key}"
        assert t.engine.store.get(other.id).state is AlertState.FIRING  # not carried by the issue
        await n.poll()  # once done, the issue is no longer read back
        # The group fires again: the closed issue is not found (statusCategory != Done), a new one opens.
        again = note(key="k2")
        again.alerts[0].id = alert.id
        await n.send(again)
        assert len(jira.issues) == 2
    finally:
        await n.shutdown()
        srv.stop()
        await t.engine.stop()
    reads = [r for r in srv.requests if r.method == "GET" and r.path == f"/rest/api/3/issue/{key}"]
    assert len(reads) == 2 and all(r.query["fields"] == ["status"] for r in reads)
    for r in srv.requests:
        assert r.headers["authorization"] == basic("bot@example.org", JIRA_TOKEN)


def test_jira_on_close_takes_acknowledge_or_resolve():
    assert JiraNotifier.config_model.model_validate(
        {"url": "https://x.atlassian.net", "email": "e", "api_token": "t", "project": "OPS"}).on_close == "acknowledge"
    with pytest.raises(ValueError, match="on_close"):
        JiraNotifier.config_model.model_validate({"url": "https://x.atlassian.net", "email": "e", "api_token": "t",
                                                  "project": "OPS", "on_close": "close"})


# --------------------------------------------------------------------------- ServiceNow


class FakeServiceNow:
    def __init__(self):
        self.incidents = {}

    def __call__(self, r):
        if r.path == "/api/now/table/incident" and r.method == "GET":
            fp = r.query["sysparm_query"][0].split("correlation_id=")[1].split("^")[0]
            hits = [{"sys_id": s, "number": i["number"], "state": i["state"]} for s, i in self.incidents.items()
                    if i["correlation_id"] == fp and i["state"] not in ("6", "7")]
            return 200, {"result": hits}, {}
        if r.path == "/api/now/table/incident" and r.method == "POST":
            sys_id = f"{len(self.incidents) + 1:032x}"
            self.incidents[sys_id] = {**r.json(), "number": f"INC00{len(self.incidents) + 1}", "state": "1"}
            return 201, {"result": {"sys_id": sys_id, **self.incidents[sys_id]}}, {}
        sys_id = r.path.rsplit("/", 1)[1]
        if r.method == "PATCH":
            self.incidents[sys_id].update(r.json())
            return 200, {"result": {"sys_id": sys_id, **self.incidents[sys_id]}}, {}
        return 200, {"result": {"state": self.incidents[sys_id]["state"], "number": self.incidents[sys_id]["number"]}}, {}


async def test_servicenow_incident_lifecycle_and_two_way_ack(tmp_path):
    snow = FakeServiceNow()
    srv = HttpRecorder(snow)
    cfg = {"instance": srv.url, "username": "monbridge", "password": SNOW_PASSWORD, "assignment_group": "Network",
           "poll_interval": 3600}
    t = EngineUnderTest(tmp_path)
    try:
        n = await make(ServiceNowNotifier, cfg)
        n.attach(type("Ctx", (), {"engine": t.engine})())
        alert = t.engine.fire(Alert("", "HighCPU", "critical", labels={"host": "h1"}), "test")
        first = note(key="k1")
        first.alerts[0].id = alert.id
        await n.send(first)
        await n.send(first)  # the same notification again: nothing
        second = note(key="k2")
        second.alerts[0].id = alert.id
        await n.send(second)
        [sys_id] = snow.incidents
        assert snow.incidents[sys_id]["correlation_id"] == group_fingerprint("monitoring.alerts.servicenow", first.group_key)
        # Closed in ServiceNow: the alert is acknowledged in monbridge.
        snow.incidents[sys_id]["state"] = "7"
        await n.poll()
        assert t.engine.store.get(alert.id).state is AlertState.ACKNOWLEDGED
        assert t.engine.store.transitions(alert.id)[-1].by == "servicenow:INC001"
        await n.shutdown()
    finally:
        srv.stop()
        await t.engine.stop()
    calls = [(r.method, r.path) for r in srv.requests]
    assert calls == [("GET", "/api/now/table/incident"), ("POST", "/api/now/table/incident"),
                     ("PATCH", f"/api/now/table/incident/{sys_id}"), ("GET", f"/api/now/table/incident/{sys_id}")]
    for r in srv.requests:
        assert r.headers["authorization"] == basic("monbridge", SNOW_PASSWORD)
        assert r.headers["accept"] == "application/json"
    assert srv.requests[0].query["sysparm_query"][0].endswith("^active=true")
    created = srv.requests[1].json()
    assert set(created) == {"short_description", "description", "correlation_id", "correlation_display", "urgency",
                            "impact", "assignment_group"}
    assert created["urgency"] == "1" and created["correlation_display"] == "monbridge"
    assert "work_notes" in srv.requests[2].json()


async def test_servicenow_resolves_the_incident(tmp_path):
    snow = FakeServiceNow()
    srv = HttpRecorder(snow)
    try:
        n = await make(ServiceNowNotifier, {"instance": srv.url, "username": "u", "password": SNOW_PASSWORD})
        await n.send(note(key="k1"))
        await n.send(note("resolved", key="k2"))
        await n.send(note("resolved", key="k3"))  # nothing open any more: nothing to do
        await n.shutdown()
    finally:
        srv.stop()
    [inc] = snow.incidents.values()
    assert inc["state"] == "6" and inc["close_code"] == "Solved (Permanently)" and inc["close_notes"]
    assert [r.method for r in srv.requests] == ["GET", "POST", "PATCH", "GET"]


# --------------------------------------------------------------------------- secrets and keys


async def test_errors_never_carry_secrets():
    srv = HttpRecorder(lambda r: (401, {"errorMessages": ["bad token"]}, {}))
    try:
        n = await make(JiraNotifier, {"url": srv.url, "email": "bot@example.org", "api_token": JIRA_TOKEN,
                                      "project": "OPS"})
        with pytest.raises(PermanentDeliveryError) as e:
            await n.send(note())
    finally:
        await n.shutdown()
        srv.stop()
    assert "HTTP 401" in str(e.value) and JIRA_TOKEN not in str(e.value)
    assert srv.requests[0].headers["authorization"] == basic("bot@example.org", JIRA_TOKEN)


def test_notification_keys_are_stable_and_distinct():
    k = notification_key("n|g", 1, {"a"}, set())
    assert k == notification_key("n|g", 1, {"a"}, set())
    assert len({k, notification_key("n|g", 2, {"a"}, set()), notification_key("n|g", 1, {"a", "b"}, set())}) == 3


def test_alertmanager_labels_are_made_valid():
    n = note()
    n.alerts[0].labels["cpu.mode"] = "user"
    [doc] = am_alerts(n)
    assert doc["labels"]["cpu_mode"] == "user" and "endsAt" not in doc
    assert doc["startsAt"] == "2026-01-02T03:04:05.000Z" and doc["generatorURL"] == "http://monbridge:9464"
    assert AlertmanagerNotifier.parse_config({"url": "http://127.0.0.1:9093/"}).url == "http://127.0.0.1:9093"


async def test_retry_after_is_honoured_by_the_error():
    srv = HttpRecorder(lambda r: (429, {"message": "slow down"}, {"Retry-After": "7"}))
    try:
        n = await make(TwilioSmsNotifier, {"account_sid": SID, "auth_token": TWILIO_TOKEN, "from": "+15005550006",
                                           "to": ["+15551234567"], "base_url": srv.url})
        with pytest.raises(DeliveryError) as e:
            await n.send(note())
        await n.shutdown()
    finally:
        srv.stop()
    assert e.value.retry_after == 7.0


ECHOES = {
    "the token in its message": lambda r: (400, {"errorMessages": [f"token {JIRA_TOKEN} is not valid here"]}, {}),
    # the request's headers (Authorization: Basic base64(email:token)) and 100 KB more
    "the request headers": lambda r: (401, {"encoded": r.headers["authorization"][6:], "request_headers": r.headers,
                                            "padding": "x" * 100_000}, {}),
}


@pytest.mark.parametrize("echo", ECHOES)
async def test_a_receiver_echoing_the_token_does_not_leak_it(tmp_path, caplog, echo):
    """Through a real Runtime: the token a receiver echoes back, as it is or base64-encoded in
    the Basic credentials, reaches neither the log, nor the plugin API, nor the outcome recorded
    on the alert; of the answer's body only a bounded excerpt is logged."""
    import logging

    import aiohttp

    from bridge.config import parse_config
    from bridge.logs import TextFormatter, secret_values
    from bridge.registry import PluginRegistry
    from bridge.runtime import Runtime

    srv = HttpRecorder(ECHOES[echo])
    text = f"""
server: {{listen: "127.0.0.1:0"}}
alerting: {{state_dir: "{tmp_path}"}}
plugins:
  - plugin_id: monitoring.alerts.grouping
    config: {{group_wait: 0}}
  - plugin_id: monitoring.alerts.jira
    config: {{url: "{srv.url}", email: bot@example.org, api_token: "${{JIRA_TOKEN}}", project: OPS}}
"""
    reg = PluginRegistry().discover()
    rt = Runtime(parse_config(text, "t.yaml", reg, env={"JIRA_TOKEN": JIRA_TOKEN}), reg)
    caplog.set_level(logging.INFO)
    await rt.start()
    try:
        rt.alerts.fire(Alert("", "HighCPU", "critical", labels={"host": "h1"}), "test")
        for _ in range(50):
            if rt.alerts.outbox.failed_total:
                break
            await asyncio.sleep(0.05)
        host, port = rt.server.bound
        async with aiohttp.ClientSession() as s, s.get(f"http://{host}:{port}/api/v1/plugins") as r:
            plugins = await r.text()
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        formatted = TextFormatter().format(refused[0]) if refused else ""
    finally:
        await rt.stop()
        srv.stop()
        secret_values.set([])
    assert rt.alerts.outbox.failed_total == 1  # a 4xx is not retried
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert len(refused) == 1 and len(refused[0].getMessage()) < 1000
    encoded = basic("bot@example.org", JIRA_TOKEN)[6:]
    assert srv.requests[0].headers["authorization"] == f"Basic {encoded}"
    for leak in (JIRA_TOKEN, encoded):
        assert leak not in logged and leak not in formatted and leak not in plugins
    if echo == "the request headers":
        assert '"encoded": "<secret>"' in logged and '"authorization": "Basic <secret>"' in logged
        assert "x" * 300 not in logged
    else:
        assert "<secret> is not valid here" in logged
    assert '"api_token": "<secret>"' in plugins


async def test_twilio_retry_after_a_partial_failure_messages_only_the_rest(tmp_path):
    """The second recipient fails once; the retry (here after a restart) does not message the first again."""
    answers = iter([(201, {"sid": "SM1"}, {}), (503, {"message": "busy"}, {}), (201, {"sid": "SM2"}, {})])
    srv = HttpRecorder(lambda r: next(answers))
    cfg = {"account_sid": SID, "auth_token": TWILIO_TOKEN, "from": "+15005550006",
           "to": ["+15551234567", "+15557654321"], "base_url": srv.url}
    try:
        n = await make(TwilioSmsNotifier, cfg, tmp_path)
        with pytest.raises(DeliveryError, match="HTTP 503"):
            await n.send(note())
        await n.shutdown()
        again = await make(TwilioSmsNotifier, cfg, tmp_path)
        await again.send(note())
        await again.shutdown()
    finally:
        srv.stop()
    assert [r.form()["To"] for r in srv.requests] == [["+15551234567"], ["+15557654321"], ["+15557654321"]]
