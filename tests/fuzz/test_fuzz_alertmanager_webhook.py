"""Fuzzing the Alertmanager webhook receiver: whatever body ``POST /api/v1/alerts/alertmanager``
gets, the route's reading of it (``decode_json`` with ``WEBHOOK_LIMITS`` and
``webhook_from_request``) returns the alerts or raises ``BodyError`` (a 400 or 413 naming the
field or the limit), and the alerts it returns are taken by the alert store, in bounded time and
memory.

Seeds: Alertmanager webhook payloads (version 4) in ``corpus/alertmanager_webhook/``.
"""

from __future__ import annotations

import pytest

from bridge.alerting.http import WEBHOOK_LIMITS, webhook_from_request
from bridge.alerting.model import fingerprint
from bridge.alerting.store import AlertStore
from bridge.api import AlertState
from bridge.httpbody import BodyError, decode_json
from tests.fuzz.harness import CORPUS, run_fuzz, seeds

TOKENS = [b"[", b"]", b"{", b"}", b'"', b"\\", b"\\u0000", b"\\ud800", b",", b":", b"null", b"true", b"false",
          b"NaN", b"-Infinity", b"1e999", b"-0", b"1" * 30, b'"version":"4"', b'"alerts":[', b'"status":"firing"',
          b'"status":"resolved"', b'"labels":{', b'"annotations":', b'"startsAt":', b'"endsAt":',
          b'"0001-01-01T00:00:00Z"', b'"2026-01-02T03:04:05.123456789Z"', b'"9999-12-31T23:59:59Z"',
          b'"2026-01-02T03:04:05+25:00"', b'"fingerprint":', b'"receiver":', b"\xef\xbb\xbf", b"\xff"]


def receive(data: bytes) -> None:
    """What the route does with a body: read it, then apply each alert to a store (in memory)."""
    hook = decode_json(data, WEBHOOK_LIMITS, webhook_from_request)
    store = AlertStore(None)
    for a in hook.alerts:
        if a.state is AlertState.RESOLVED:
            known = store.by_fingerprint(a.fingerprint or fingerprint(a.labels))
            if known is not None:
                store.transition(known.id, AlertState.RESOLVED, hook.receiver, a.ends_at)
        else:
            store.fire(a, hook.receiver)
    store.trim()


@pytest.mark.fuzz
def test_fuzz_alertmanager_webhook() -> None:
    pool = seeds("alertmanager_webhook")
    for path in sorted((CORPUS / "alertmanager_webhook").glob("[!c]*.json")):
        receive(path.read_bytes())  # the examples (not the crash-* inputs) are taken
    assert run_fuzz(receive, pool, allowed=(BodyError,), tokens=TOKENS) >= len(pool)


def test_corpus_crashes_are_refused_as_body_errors() -> None:
    """The inputs the fuzzer found (``crash-*``) are refused with a BodyError."""
    for path in sorted((CORPUS / "alertmanager_webhook").glob("crash-*")):
        with pytest.raises(BodyError):
            receive(path.read_bytes())
