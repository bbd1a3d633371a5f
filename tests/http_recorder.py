"""A real HTTP server on 127.0.0.1 (``http.server`` in a thread) that records every request and
answers from a script: the receiving end of webhooks and of the notifiers' REST calls.

``HttpRecorder(handler)``: ``handler(request) -> (status, body_obj_or_bytes, headers)`` decides
each answer (default: 200 with ``{}``); ``.requests`` holds ``Recorded`` entries (method, path,
query, headers with lower-case names, raw body, decoded JSON or form); ``.wait_for(pred)``
waits for one. ``.down = True`` answers 503 to everything (a receiver that is down).
``ssl_context`` (a server context) makes it answer HTTPS.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.body.decode())


Answer = tuple[int, Any, dict[str, str]]


class HttpRecorder:
    def __init__(self, handler: Callable[[Recorded], Answer] | None = None, port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.requests: list[Recorded] = []
        self.handler = handler or (lambda r: (200, {}, {}))
        self.down = False
        self._cond = threading.Condition()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                u = urllib.parse.urlsplit(self.path)
                r = Recorded(self.command, u.path, urllib.parse.parse_qs(u.query),
                             {k.lower(): v for k, v in self.headers.items()}, body)
                if rec.down:
                    status, out, headers = 503, {"error": "down"}, {}
                else:
                    with rec._cond:
                        rec.requests.append(r)
                        rec._cond.notify_all()
                    try:
                        status, out, headers = rec.handler(r)
                    except Exception as e:  # noqa: BLE001 - reported to the client and the test
                        status, out, headers = 500, {"error": repr(e)}, {}
                data = out if isinstance(out, bytes) else json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"{'https' if ssl_context is not None else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(self, pred: Callable[[Recorded], bool] = lambda r: True, timeout: float = 15.0,
                 count: int = 1) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [r for r in self.requests if pred(r)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"{count} matching request(s) expected within {timeout:.0f} s; got {len(hits)} "
                                f"of {[(r.method, r.path) for r in self.requests]}", pytrace=False)
                self._cond.wait(min(left, 0.1))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
