"""One HTTP request of a notifier (aiohttp), with its outcome as a delivery error when it failed.

408, 429 and 5xx answers and connection errors are retried (``DeliveryError``, with the
``Retry-After`` the receiver sent); other 4xx are ``PermanentDeliveryError``. Messages never
carry request headers (they hold credentials); of an error answer's body only a bounded, redacted
excerpt is read and kept (``bridge.logs.peer_excerpt``), as a peer may echo the headers back.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.alerting.notify import DeliveryError, Notification, Notifier, http_delivery_error
from bridge.logs import EXCERPT_BYTES

if TYPE_CHECKING:
    import aiohttp

__all__ = ["HttpClient", "HttpNotifier", "PreviewClient"]

#: Request headers whose values a preview shows; any other header's value may be a credential.
_SHOWN_HEADERS = frozenset({"accept", "content-type", "idempotency-key", "user-agent", "x-monbridge-group-key"})
#: How much of a request body a preview shows.
PREVIEW_BODY_CHARS = 4000


class HttpClient:
    """A lazily created aiohttp session with a timeout and optional CA file."""

    def __init__(self, timeout: float, ca_file: Path | None = None) -> None:
        self.timeout = timeout
        self.ca_file = ca_file
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    async def request(self, what: str, method: str, url: str, *, json_body: Any = None,
                      form: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                      basic_auth: tuple[str, str] | None = None,
                      params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """Send; return (status, decoded JSON body or text) for a 2xx answer, else raise a delivery error."""
        import aiohttp  # here, not at import: a config naming a notifier is validated without it

        headers = dict(headers or {})
        if basic_auth is not None:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.request(method, url, json=json_body, data=form, headers=headers,
                                             params=params, ssl=self._ssl()) as resp:
                if resp.status >= 300:
                    head = (await resp.content.read(EXCERPT_BYTES)).decode("utf-8", "replace")
                    raise http_delivery_error(f"{what} ({method} {_path(url)})", resp.status, head,
                                              resp.headers.get("Retry-After"))
                text = await resp.text()
                try:
                    body: Any = json.loads(text) if text.strip() else None
                except ValueError:
                    body = text
                return resp.status, body
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise DeliveryError(f"{what} ({method} {_path(url)}): {type(e).__name__}: {e}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _path(url: str) -> str:
    """``url`` without query string and credentials (for messages)."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    netloc = u.hostname or ""
    if u.port:
        netloc += f":{u.port}"
    return urlunsplit((u.scheme, netloc, u.path, "", ""))


class PreviewClient(HttpClient):
    """Takes a notifier's requests instead of sending them and answers each ``200 {}``; ``lines()``
    shows them (method, URL, headers, body), credentials as ``<secret>``."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.requests: list[tuple[str, str, dict[str, str], Mapping[str, str] | None, Any, Any]] = []

    async def request(self, what: str, method: str, url: str, *, json_body: Any = None,
                      form: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                      basic_auth: tuple[str, str] | None = None,
                      params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        shown = {k: (v if k.lower() in _SHOWN_HEADERS else "<secret>") for k, v in (headers or {}).items()}
        if basic_auth is not None:
            shown["Authorization"] = "Basic <secret>"
        self.requests.append((method, url, shown, params, json_body, form))
        return 200, {}

    def lines(self) -> list[str]:
        from urllib.parse import urlencode

        out = []
        for method, url, headers, params, json_body, form in self.requests:
            out.append(f"{method} {_path(url)}{'?' + urlencode(params) if params else ''}")
            out += [f"  {k}: {v}" for k, v in headers.items()]
            if json_body is not None:
                body = json.dumps(json_body, indent=2, ensure_ascii=False)
                out.append("  Content-Type: application/json")
            elif form is not None:
                body = urlencode(form)
                out.append("  Content-Type: application/x-www-form-urlencoded")
            else:
                continue
            if len(body) > PREVIEW_BODY_CHARS:
                body = body[:PREVIEW_BODY_CHARS] + f"... ({len(body)} characters in all)"
            out += ["", *(f"  {line}" for line in body.splitlines()), ""]
        return out


class HttpNotifier(Notifier):
    """A notifier that talks HTTP: ``self.client`` is made from the config's ``timeout`` and closed at shutdown."""

    client: HttpClient

    async def setup(self) -> None:
        self.client = HttpClient(self.config.timeout)

    async def preview(self, notification: Notification) -> list[str]:
        """The requests ``send(notification)`` would make (``bridge.api.NotificationPreviewHook``),
        none sent: each is answered ``200 {}``, so a request that needs a real answer's content
        (a created ticket's key) ends the preview there."""
        client, self.client = self.client, PreviewClient()
        stopped = False
        try:
            await self.send(notification)
        except Exception:  # noqa: BLE001 - a request needing a real answer: the preview ends there
            stopped = True
        finally:
            recorded, self.client = self.client, client
        assert isinstance(recorded, PreviewClient)
        if not recorded.requests:
            return ["no request: the notifier would send nothing for this notification"]
        lines = [f"would send {len(recorded.requests)} request{'s' if len(recorded.requests) != 1 else ''}:",
                 *recorded.lines()]
        if stopped:
            lines.append("(the requests after these depend on the receiver's answers: not shown)")
        return lines

    async def shutdown(self) -> None:
        await self.client.close()
