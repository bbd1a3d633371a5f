"""The log redactor: secrets and their derived forms never reach a log line; a peer's response
body is logged only as a bounded excerpt with credentials masked."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from bridge.logs import EXCERPT_CHARS, peer_excerpt, redact_text, secret_values

TOKEN = "jira-api-t0ken/+="
PASSWORD = "sn0w pa55:w0rd"


@pytest.fixture
def secrets():
    secret_values.set([TOKEN, PASSWORD])
    yield
    secret_values.set([])


def b64(text: str, alphabet=base64.b64encode) -> str:
    return alphabet(text.encode()).decode()


@pytest.mark.parametrize("form", [
    TOKEN,
    b64(f"bot@example.org:{TOKEN}"),                                     # Jira: Basic email:token
    b64(f"monbridge:{PASSWORD}"),                                        # ServiceNow: Basic user:password
    b64(f"x:{PASSWORD}", base64.urlsafe_b64encode).rstrip("="),          # URL alphabet, unpadded
    b64(f'{{"user": "someone", "password": "{PASSWORD}"}}'),             # inside a base64 document
    urllib.parse.quote(TOKEN, safe=""),
    urllib.parse.quote_plus(PASSWORD),
    json.dumps(TOKEN)[1:-1],
])
def test_secrets_and_their_derived_forms_are_redacted(secrets, form):
    line = redact_text(f'peer said: {{"echo": "{form}", "status": 401}}')
    assert form not in line and "<secret>" in line
    assert line.startswith('peer said: {"echo": "') and line.endswith('", "status": 401}')


def test_text_without_secrets_is_left_alone(secrets):
    text = "monitoring configuration: dXNlcjpvdGhlcg== and user:other and 12345678"
    assert redact_text(text) == text


def test_peer_excerpt_is_bounded_on_one_line_and_masks_credentials():
    body = (b'{"headers": {"Authorization": "Basic Zm9vOmJhcg==", "X-Api-Key": "k3y-value"},\n'
            b'  "cookie": "sid=abc", "msg": "Bearer abcdef.ghijk"}' + b" pad" * 5000)
    text = peer_excerpt(body)
    assert text.startswith('{"headers": {"Authorization": "Basic <secret>", "X-Api-Key": "<secret>"}, "cookie": '
                           '"<secret>", "msg": "Bearer <secret>"}')
    assert "\n" not in text and len(text) == EXCERPT_CHARS + 3 and text.endswith("...")
    assert peer_excerpt(b"") == "(empty body)"
    assert peer_excerpt("not found") == "not found"


async def test_remote_write_logs_an_excerpt_of_a_4xx_body(free_port, caplog):
    from aiohttp import web

    from integrations.prometheus.remote_write import RemoteWriteConfig, RemoteWriter, encode_labels

    async def echo(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=400, text=f"bad request; you sent Authorization: {request.headers['Authorization']}"
                                             + "\n" + "y" * 10_000)

    app = web.Application()
    app.router.add_post("/api/v1/write", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    cfg = RemoteWriteConfig.model_validate({"url": f"http://127.0.0.1:{port}/api/v1/write", "name": "test",
                                            "basic_auth": {"username": "u", "password": "rw-passw0rd"},
                                            "queue": {"batch_send_deadline": 0.05}})
    w = RemoteWriter(cfg)
    await w.start()
    try:
        w.append([(encode_labels([("__name__", "up"), ("job", "a")]), 1.0, 1000)])
        assert await w.flush(5)
    finally:
        await w.stop(1)
        await runner.cleanup()
    (line,) = [r.getMessage() for r in caplog.records if "HTTP 400" in r.getMessage()]
    assert "you sent Authorization: Basic <secret> yyy" in line
    assert b64("u:rw-passw0rd") not in caplog.text and "y" * 300 not in line


def test_peer_excerpt_redacts_before_white_space_or_its_cut_move_a_secret_into_view(secrets):
    # Far into the body, past the excerpt's characters: squeezing the white space brings it forward.
    assert peer_excerpt(" " * 790 + f"x {TOKEN} rest") == "x <secret> rest"
    # Cut at EXCERPT_BYTES in the middle of a secret: what is left of it is not shown.
    from bridge.logs import EXCERPT_BYTES

    cut = peer_excerpt(" " * (EXCERPT_BYTES - 6) + f"x {TOKEN} rest")
    assert cut == "x" and TOKEN[:4] not in cut
