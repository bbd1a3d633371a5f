"""Fuzzing the guard of state-changing requests (bridge.server.RequestGuard) with hostile header
blocks (Host, Origin, Sec-Fetch-Site, Content-Type): it answers a reason or None and raises
nothing, so a malformed header is a 403, never a 500.

Seeds: ``corpus/request_guard/`` (``*-500`` are headers that once made the guard raise)."""

from __future__ import annotations

import pytest

from bridge.config import ServerConfig
from bridge.server import REFUSAL_REASONS, RequestGuard
from tests.fuzz.harness import CORPUS, run_fuzz, seeds

TARGET = "request_guard"
GUARD = RequestGuard(ServerConfig(listen="0.0.0.0:9464", allowed_hosts=["monbridge.monitoring.svc", "*.example.org"],
                                  allowed_origins=["https://grafana.example.org"]))
TOKENS = [b"Host: ", b"Origin: ", b"Sec-Fetch-Site: ", b"Content-Type: ", b"\r\n", b"[", b"]", b":", b"%", b"//",
          b"http://", b"https://", b"null", b"same-origin", b"cross-site", b"application/json", b"text/plain", b";",
          b"99999", b"::1", b"127.0.0.1", b"localhost", b".example.org"]


def guard_headers(data: bytes) -> tuple[str, str] | None:
    """The guard's verdict on a header block (``Name: value`` lines), as an HTTP parser decodes it."""
    headers: dict[str, str] = {}
    for line in data.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(": ")
        if sep:
            headers.setdefault(name.lower(), value)
    reason = GUARD.check("POST /-/reload", "http", headers.get("host", ""), headers.get("origin"),
                         headers.get("sec-fetch-site", ""), headers.get("content-type"), False, "192.0.2.1")
    assert reason is None or (reason[0] in REFUSAL_REASONS and isinstance(reason[1], str))
    return reason


@pytest.mark.fuzz
def test_fuzz_request_guard() -> None:
    run_fuzz(guard_headers, seeds(TARGET), allowed=(), tokens=TOKENS)


def test_corpus_verdicts() -> None:
    verdicts = {p.name: guard_headers(p.read_bytes()) for p in sorted((CORPUS / TARGET).iterdir())}
    # Refused only for its client, outside the loopback networks, without server.auth.
    assert verdicts["same-origin-json"][0] == "credentials"
    for name in ("cross-site-text-plain", "port-out-of-range-500", "ipv6-bad-port-500", "superscript-port-500"):
        assert verdicts[name][0] == "host", name
    assert verdicts["zone-null-origin"][0] == "origin" and "Origin null" in verdicts["zone-null-origin"][1]
