"""The official Elasticsearch client (async, on aiohttp), built from the integration's config.

Answers are bounded and parsed off the event loop, through the client's own extension points (a
node class and its serializers): an answer larger than ``max_response_bytes`` (its
``Content-Length``, or what arrives, decompressed, when there is none) is refused while it is
read — the request fails with ``ResponseTooLarge`` (a ``ValueError``: the transport passes it
on as it is, marking no node dead); a body of ``OFF_LOOP_BYTES`` or more is parsed in a worker thread, and the
serializers hand the client what it gave (a smaller one is parsed where the client parses it,
on the loop: that costs less than the thread hop).

A bulk answer in which every item succeeded (``"errors":false``, every item the same, as
Elasticsearch writes them with the export's ``filter_path``: ``{"create":{"status":201}}``) is
read by ``bulk_fast_path`` without parsing each item: one item is parsed and the list holds it
once per item (the value equals what the JSON parser gives; its items are one object, not to be
changed). Parsing thousands of items made two dictionaries each, a round's worth of them
garbage-collector work over the whole heap.

The client's own retries are off (``max_retries=0``): retries follow the shared delivery rules
(``bridge.delivery``) in the exporter, and a search that fails fails that search's round. The
secrets (API key, password, bearer token) go to the client only; ``describe`` names the
cluster without them. The transport's own log of every request (INFO) is kept to warnings: the
exporter and the searches log what a person needs, rate-limited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
from typing import Any

from integrations.elasticsearch.config import ElasticsearchConfig

__all__ = ["OFF_LOOP_BYTES", "ResponseTooLarge", "answer_serializers", "bulk_fast_path", "describe", "make_client",
           "parse_answer", "too_large"]

#: Bodies at least this large are parsed in a worker thread.
OFF_LOOP_BYTES = 64 << 10
#: The mimetypes whose answers ``bulk_fast_path`` reads (JSON, and Elasticsearch's compatibility JSON).
_JSON = frozenset(("application/json", "application/vnd.elasticsearch+json"))
#: A bulk answer's head up to its items, with ``errors`` false: ``errors``, ``took`` and
#: ``ingest_took`` (numbers) in any order, JSON's whitespace between the tokens.
_BULK_HEAD = re.compile(rb'[ \t\n\r]*\{[ \t\n\r]*(?:"(?:errors|took|ingest_took)"[ \t\n\r]*:[ \t\n\r]*'
                        rb'(?:false|[0-9]{1,19})[ \t\n\r]*,[ \t\n\r]*){1,3}"items"[ \t\n\r]*:[ \t\n\r]*\[')
_WS = b" \t\n\r"  # JSON's whitespace


class ResponseTooLarge(ValueError):
    """An answer larger than the client's ``max_response_bytes``."""


def too_large(e: BaseException) -> ResponseTooLarge | None:
    """The ``ResponseTooLarge`` that is ``e`` or behind it (its cause or context, a few deep)."""
    seen: BaseException | None = e
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, ResponseTooLarge):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def bulk_fast_path(raw: bytes) -> dict[str, Any] | None:
    """What the JSON parser makes of a bulk answer whose ``errors`` is false and whose items are
    all the same text (one dictionary, parsed once, ``len(items)`` times in the list), or None
    when ``raw`` is not such an answer (then it is parsed as any other). Whitespace between items
    may differ from the first item on. No number, string or nesting is read but the first item's
    and the head's, which the JSON parser reads."""
    head = _BULK_HEAD.match(raw)
    if head is None:
        return None
    body = raw.rstrip(_WS)
    if not body.endswith(b"}"):
        return None
    body = body[:-1].rstrip(_WS)
    if not body.endswith(b"]") or len(body) <= head.end():
        return None
    try:
        value = json.loads(raw[:head.end()] + b"]}")  # the head: its members as the parser takes them
    except ValueError:  # e.g. a number with a leading zero
        return None
    if not isinstance(value, dict) or value.get("errors") is not False:
        return None
    middle = body[head.end():-1]
    if not middle.strip(_WS):
        return value  # no items
    # An item of a filtered answer has no comma: every part is an item, and a part that is not
    # (a comma in a string, an item of several members) makes the parts differ or not parse.
    parts = middle.split(b",")
    first = parts[0].strip(_WS)
    rest = set(parts[1:])
    if len(rest) > 1 or (rest and next(iter(rest)).strip(_WS) != first):
        return None
    try:
        item = json.loads(first.decode("utf-8", "surrogatepass"))  # as the whole is (its head is ASCII)
    except (ValueError, RecursionError):
        return None
    if not isinstance(item, dict):
        return None
    value["items"] = [item] * len(parts)  # the same text each: the same value each
    return value


class _Parsed(bytes):
    """A response body parsed in a worker thread, with what parsing gave (a value or an error)."""

    value: Any = None
    error: BaseException | None = None


def parse_answer(raw: bytes, mimetype: str | None, serializers: dict[str, Any]) -> _Parsed:
    """``raw`` with what the serializer of ``mimetype`` (JSON when none) makes of it: its value,
    or the ``SerializationError`` the client raises where it asks for the value (also for a
    document nested deeper than the parser recurses, or a mimetype the client does not know)."""
    from elastic_transport import SerializationError

    out = _Parsed(raw)
    try:
        key = (mimetype or "application/json").partition(";")[0].strip().lower()
        ser = serializers.get(key) or serializers.get(key.partition("/")[0] + "/*")
        if ser is None:
            raise SerializationError(f"Unknown mimetype, not able to deserialize: {(mimetype or '')[:80]!r}")
        fast = bulk_fast_path(raw) if key in _JSON else None
        out.value = ser.inner.loads(raw) if fast is None else fast
    except SerializationError as e:
        out.error = e
    except Exception as e:  # noqa: BLE001 - RecursionError, MemoryError-free parser errors: a bad answer
        out.error = SerializationError(f"Unable to deserialize: {type(e).__name__}", errors=(e,))
    return out


def answer_serializers() -> dict[str, Any]:
    """The client's serializers by mimetype, taking bodies ``parse_answer`` parsed."""
    return _bounded_classes(1 << 20)[1]


def _bounded_classes(max_bytes: int) -> tuple[type, dict[str, Any]]:
    """A node class whose answers are bounded and parsed off the loop, and the serializers that
    take what it parsed (every mimetype the client knows)."""
    import aiohttp
    from elastic_transport import AiohttpHttpNode, Serializer, TextSerializer
    from elastic_transport._node import NodeApiResponse, _http_aiohttp
    from elasticsearch.serializer import DEFAULT_SERIALIZERS

    class BoundedResponse(aiohttp.ClientResponse):
        async def read(self) -> bytes:
            if self._body is None:
                length = self.content_length
                if length is not None and length > max_bytes:
                    self.close()
                    raise ResponseTooLarge(f"an answer of {length} bytes (Content-Length); at most {max_bytes} "
                                           "are read (max_response_bytes)")
                buf = bytearray()
                try:
                    while chunk := await self.content.readany():
                        buf += chunk
                        if len(buf) > max_bytes:
                            raise ResponseTooLarge(f"an answer of more than {max_bytes} bytes (max_response_bytes)")
                except BaseException:
                    self.close()
                    raise
                self._body = bytes(buf)
            return await super().read()

    class OffLoop(Serializer):
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.mimetype = inner.mimetype  # type: ignore[misc]

        def loads(self, data: bytes) -> Any:
            if isinstance(data, _Parsed):
                if data.error is not None:
                    raise data.error
                return data.value
            fast = bulk_fast_path(data) if self.mimetype in _JSON else None
            return self.inner.loads(data) if fast is None else fast

        def dumps(self, data: Any) -> bytes:
            return bytes(self.inner.dumps(data))

    serializers = {m: OffLoop(s) for m, s in {TextSerializer.mimetype: TextSerializer(), **DEFAULT_SERIALIZERS}.items()}

    class BoundedNode(AiohttpHttpNode):
        def _create_aiohttp_session(self) -> None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self.session = aiohttp.ClientSession(
                headers=self.headers, skip_auto_headers=("accept", "accept-encoding", "user-agent"),
                auto_decompress=True, cookie_jar=aiohttp.DummyCookieJar(), response_class=BoundedResponse,
                connector=aiohttp.TCPConnector(
                    limit_per_host=self._connections_per_node, use_dns_cache=True,
                    enable_cleanup_closed=getattr(_http_aiohttp, "_NEEDS_CLEANUP_CLOSED", False),
                    ssl=self._ssl_context or False))

        async def perform_request(self, method: str, target: str, *args: Any,  # type: ignore[override]
                                  **kwargs: Any) -> Any:
            resp = await super().perform_request(method, target, *args, **kwargs)
            if method == "HEAD" or len(resp.body) < OFF_LOOP_BYTES:
                return resp
            parsed = await asyncio.to_thread(parse_answer, resp.body, resp.meta.mimetype, serializers)
            return NodeApiResponse(resp.meta, parsed)

    return BoundedNode, serializers


def make_client(cfg: ElasticsearchConfig) -> Any:
    """An ``AsyncElasticsearch`` for ``cfg`` (the import is here: validating a config loads no client)."""
    from elasticsearch import AsyncElasticsearch

    logging.getLogger("elastic_transport.transport").setLevel(logging.WARNING)
    node_class, serializers = _bounded_classes(cfg.max_response_bytes)
    kwargs: dict[str, Any] = {"request_timeout": cfg.request_timeout, "max_retries": 0, "retry_on_timeout": False,
                              "node_class": node_class, "serializers": serializers}
    if cfg.cloud_id is not None:
        kwargs["cloud_id"] = cfg.cloud_id
    else:
        kwargs["hosts"] = list(cfg.hosts or ())
    if cfg.api_key is not None:
        kwargs["api_key"] = cfg.api_key.get_secret_value()
    elif cfg.basic_auth is not None:
        kwargs["basic_auth"] = (cfg.basic_auth.username, cfg.basic_auth.password.get_secret_value())
    elif cfg.bearer_token is not None:
        kwargs["bearer_auth"] = cfg.bearer_token.get_secret_value()
    if cfg.tls is not None:
        if cfg.tls.ca_file is not None:
            kwargs["ca_certs"] = cfg.tls.ca_file
        if cfg.tls.ca_fingerprint is not None:
            kwargs["ssl_assert_fingerprint"] = cfg.tls.ca_fingerprint.replace(":", "").lower()
        if not cfg.tls.verify:
            kwargs["verify_certs"] = False
    return AsyncElasticsearch(**kwargs)


def describe(cfg: ElasticsearchConfig) -> str:
    """The cluster as logs and errors name it: host URLs without credentials, or the cloud id's name."""
    if cfg.cloud_id is not None:
        return f"cloud {cfg.cloud_id.split(':', 1)[0]}"
    out = []
    for h in cfg.hosts or ():
        u = urllib.parse.urlsplit(h)
        netloc = u.hostname or ""
        if u.port:
            netloc += f":{u.port}"
        out.append(f"{u.scheme}://{netloc}{u.path.rstrip('/')}")
    return ", ".join(out)
