"""Reading request bodies of the HTTP API: bounded in size (on the wire and decompressed), with
``Content-Encoding`` handled, and JSON bounded in nesting depth.

Every JSON-accepting route reads its body with :func:`read_json` (or :func:`read_body` and
:func:`parse_json`); what they refuse is a :class:`BodyError` carrying the HTTP status (400,
413, 415), a short ``reason`` for counting, and a message that names the limit::

    try:
        doc = await read_json(request, BodyLimits(max_bytes=1 << 20))
    except BodyError as e:
        return e.response({"status": "error", "error": e.message})

aiohttp's server decompresses ``gzip``, ``deflate``, ``br`` and ``zstd`` bodies itself, in
bounded pieces as they arrive; this module counts the compressed bytes it reports and the
decompressed bytes it hands over, and stops reading at the first limit passed. A server run
without aiohttp's decompression gets ``gzip`` and ``deflate`` decompressed here, equally
bounded; a body read as sent (``decode=False``) may also be ``zstd``, which :func:`inflate`
decompresses (through cramjam) into a buffer that grows fourfold up to the limit, never past
it. Parsing and conversion run in a worker thread for bodies over ``THREAD_ABOVE`` bytes.
"""

from __future__ import annotations

import asyncio
import json
import json.scanner
import math
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["BodyError", "BodyLimits", "THREAD_ABOVE", "decode_json", "inflate", "nesting_exceeds", "parse_json", "read_up_to",
           "read_body", "read_json", "receive_body"]

T = TypeVar("T")

#: Bodies larger than this are parsed (and converted) in a worker thread, not on the event loop.
THREAD_ABOVE = 64 * 1024
MAX_MESSAGE = 500
_SELF_DECODED = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
#: The encodings :func:`inflate` decompresses (a body read with ``decode=False`` may have them).
INFLATED = (*_SELF_DECODED, "zstd")
#: The first buffer a zstd body is decompressed into, at least.
_ZSTD_FIRST = 1 << 16


class BodyError(ValueError):
    """A request body refused: ``status`` (400, 413 or 415), ``reason`` (for counting), ``message``;
    ``unread`` when the body was not read to its end (answer with ``Connection: close``)."""

    def __init__(self, status: int, reason: str, message: str, unread: bool = False) -> None:
        if len(message) > MAX_MESSAGE:  # it may quote the request (a field's name)
            message = message[:MAX_MESSAGE] + "..."
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.unread = unread

    def response(self, body: Any) -> web.Response:
        """A JSON answer ``body`` with this error's status (closing the connection when ``unread``)."""
        resp = web.json_response(body, status=self.status)
        if self.unread:
            resp.force_close()
        return resp


@dataclass(frozen=True)
class BodyLimits:
    """``max_bytes`` of body after decompression, ``max_wire_bytes`` as sent (default: ``max_bytes``),
    JSON nested at most ``max_depth`` levels."""

    max_bytes: int = 1 << 20
    max_wire_bytes: int | None = None
    max_depth: int = 32

    @property
    def wire(self) -> int:
        return self.max_wire_bytes if self.max_wire_bytes is not None else self.max_bytes


def _too_large(what: str, limit: int) -> BodyError:
    return BodyError(413, "too_large", f"body: {what} is larger than the limit of {limit} bytes", unread=True)


async def read_body(request: web.BaseRequest, limits: BodyLimits, decode: bool = True) -> bytes:
    """The request's body, decompressed, within ``limits`` (else BodyError). With ``decode=False``
    a body the server left compressed (``auto_decompress=False``) is returned as sent, within
    ``limits.wire``, for :func:`inflate` to decompress off the event loop."""
    length = request.content_length
    if length is not None and length > limits.wire:
        raise _too_large(f"Content-Length {length}", limits.wire)
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    stream = request.content
    # aiohttp's parser sets total_compressed_bytes when it decompressed the body itself.
    decoded_by_server = coding not in ("", "identity") and getattr(stream, "total_compressed_bytes", None) is not None
    decompressor = None
    if coding not in ("", "identity") and not decoded_by_server:
        if coding not in (_SELF_DECODED if decode else INFLATED):
            raise BodyError(415, "unsupported_encoding",
                            f"Content-Encoding {coding[:40]!r} is not supported "
                            f"({'gzip, deflate' if decode else 'gzip, deflate, zstd'} or identity)", unread=True)
        if decode:
            decompressor = zlib.decompressobj(_SELF_DECODED[coding])
    parts: list[bytes] = []
    wire = size = 0
    try:
        while True:
            chunk = await stream.readany()
            if not chunk:
                break
            if decompressor is not None:
                wire += len(chunk)
                if wire > limits.wire:
                    raise _too_large("the encoded body", limits.wire)
                data = chunk
                while data:
                    piece = decompressor.decompress(data, limits.max_bytes - size + 1)
                    size += len(piece)
                    if size > limits.max_bytes:
                        raise _too_large("the decoded body", limits.max_bytes)
                    parts.append(piece)
                    data = decompressor.unconsumed_tail
                continue
            size += len(chunk)
            wire = getattr(stream, "total_compressed_bytes", None) or size
            if wire > limits.wire:
                raise _too_large("the encoded body" if decoded_by_server else "the body", limits.wire)
            if size > limits.max_bytes:
                raise _too_large("the decoded body" if decoded_by_server else "the body", limits.max_bytes)
            parts.append(chunk)
        if decompressor is not None:
            tail = decompressor.flush(limits.max_bytes - size + 1)
            if len(tail) + size > limits.max_bytes:
                raise _too_large("the decoded body", limits.max_bytes)
            parts.append(tail)
            if not decompressor.eof:
                raise zlib.error("incomplete stream")
    except (web.RequestPayloadError, HttpProcessingError, zlib.error) as e:
        if coding not in ("", "identity"):
            raise BodyError(400, "bad_encoding", f"body: not valid {coding} data (Content-Encoding: {coding})",
                            unread=True) from None
        detail = " ".join(str(e).split())[:200]
        raise BodyError(400, "bad_encoding", f"body: cannot be read: {detail}", unread=True) from None
    return b"".join(parts)


async def receive_body(request: web.BaseRequest, limits: BodyLimits, read_timeout: float, where: str) -> bytes:
    """The request's body as sent (:func:`read_body` with ``decode=False``, for :func:`inflate`),
    received within ``read_timeout`` seconds. A BodyError names the config key of what was passed,
    under ``where`` (``where.max_request_bytes`` or ``where.max_decompressed_bytes``, 413;
    ``where.read_timeout``, 408 ``read_timeout``); a client gone before its body is 400 ``disconnected``."""
    try:
        async with asyncio.timeout(read_timeout):
            return await read_body(request, limits, decode=False)
    except BodyError as e:
        which = ("max_decompressed_bytes" if f"limit of {limits.max_bytes} " in e.message
                 and f"limit of {limits.wire} " not in e.message else "max_request_bytes")
        raise BodyError(e.status, e.reason, e.message.replace("the limit of", f"the limit ({where}.{which}) of"),
                        e.unread) from None
    except TimeoutError:
        raise BodyError(408, "read_timeout", f"the body was not received within {where}.read_timeout "
                                             f"({read_timeout:g} s)", unread=True) from None
    except ConnectionError:
        raise BodyError(400, "disconnected", "the client closed the connection before its body was received",
                        unread=True) from None


async def read_up_to(content: Any, limit: int) -> bytes:
    """A peer's answer from ``content`` (an aiohttp ``StreamReader``) to its end, or its first
    ``limit`` bytes: the stream's ``read(n)`` gives what has arrived so far, which for an answer
    that comes in several pieces is only a part of it."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def inflate(data: bytes, coding: str, limits: BodyLimits) -> bytes:
    """A body read with ``read_body(..., decode=False)`` decompressed per its ``Content-Encoding``
    (``coding``), within ``limits.max_bytes`` (BodyError as ``read_body`` raises). Safe in a worker
    thread, where a bomb's decompression belongs (zlib runs without the GIL)."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return data
    if coding == "zstd":
        return _unzstd(data, limits.max_bytes)
    wbits = _SELF_DECODED.get(coding)
    if wbits is None:
        raise BodyError(415, "unsupported_encoding",
                        f"Content-Encoding {coding[:40]!r} is not supported (gzip, deflate, zstd or identity)")
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(data, limits.max_bytes + 1)
        if len(out) > limits.max_bytes:
            raise _too_large("the decoded body", limits.max_bytes)
        if not decompressor.eof:
            raise zlib.error("incomplete stream")
    except zlib.error:
        raise BodyError(400, "bad_encoding", f"body: not valid {coding} data (Content-Encoding: {coding})") from None
    return out


def _unzstd(data: bytes, limit: int) -> bytes:
    """``data`` (zstd frames) decompressed, at most ``limit`` bytes (else BodyError 413). cramjam
    writes into a buffer it is given and fails when the output does not fit: the buffer starts
    small (a few times the input) and grows fourfold up to ``limit + 1`` bytes, so a bomb costs
    about 1.3 times ``limit`` of decompression and never more memory than the limit."""
    import cramjam

    size = min(limit + 1, max(_ZSTD_FIRST, 4 * len(data)))
    while True:
        buf = bytearray(size)
        try:
            n = cramjam.zstd.decompress_into(data, buf)
        except cramjam.DecompressionError as e:
            if "failed to write whole buffer" not in str(e):
                raise BodyError(400, "bad_encoding", "body: not valid zstd data (Content-Encoding: zstd)") from None
            if size > limit:
                raise _too_large("the decoded body", limit) from None
            del buf  # (before the larger one is made: never both at once)
            size = min(limit + 1, size * 4)
            continue
        if n > limit:
            raise _too_large("the decoded body", limit)
        return bytes(memoryview(buf)[:n])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:40]} is out of range")
    return value


#: translate: ``{`` as ``[``, ``}`` as ``]`` (nesting is all that counts here); every other byte deleted.
_AS_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_exceeds(data: bytes, max_depth: int) -> bool:
    """Whether the JSON text ``data`` nests arrays and objects deeper than ``max_depth``, found in
    linear time with bytes operations only (no containers built): strings are cut out (escapes
    first), the brackets left are reduced one level per pass by removing every ``[]``."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    outside = b"".join(data.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    brackets = outside.translate(_AS_BRACKETS, _NOT_BRACKETS)
    for _ in range(max_depth):
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            # Unbalanced (not JSON; the parser says where): deep only if it leaves that much open.
            return brackets.count(b"[") > max_depth
        brackets = inner
    return bool(brackets)


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)
_SCAN = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]
_WS = re.compile(r"[ \t\n\r]*")
#: Containers this many levels deep or deeper are parsed by one call of json's C scanner; the
#: levels above (a webhook's object and its ``alerts`` list) are walked here, element by element.
_PIECE_DEPTH = 2


def _loads_in_pieces(text: str) -> Any:
    """``json.loads(text)`` (same result, same errors), but never one long call of the C scanner:
    the top levels are walked in Python, so a worker thread parsing a large body lets go of the
    GIL between elements (every few milliseconds) instead of holding it for the whole body,
    which would stall the event loop as long (about 190 ms for 10,000 alerts)."""

    def ws(i: int) -> int:
        return _WS.match(text, i).end()  # type: ignore[union-attr, unused-ignore]

    def scan(i: int) -> tuple[Any, int]:
        try:
            return _SCAN(text, i)
        except StopIteration as stop:
            raise json.JSONDecodeError("Expecting value", text, stop.value) from None

    def value(i: int, depth: int) -> tuple[Any, int]:
        i = ws(i)
        if depth >= _PIECE_DEPTH or i >= len(text) or text[i] not in "[{":
            return scan(i)
        close = "}" if text[i] == "{" else "]"
        obj: Any = {} if close == "}" else []
        i = ws(i + 1)
        if text.startswith(close, i):
            return obj, i + 1
        while True:
            if close == "}":
                if not text.startswith('"', i):
                    raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
                key, i = scan(i)
                i = ws(i)
                if not text.startswith(":", i):
                    raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
                obj[key], i = value(i + 1, depth + 1)
            else:
                item, i = value(i, depth + 1)
                obj.append(item)
            i = ws(i)
            if text.startswith(close, i):
                return obj, i + 1
            if not text.startswith(",", i):
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = ws(i + 1)

    doc, end = value(0, 0)
    end = ws(end)
    if end != len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return doc


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(data: bytes, max_depth: int = 32, where: str = "body") -> Any:
    """``data`` as JSON (no NaN, Infinity or numbers out of a float's range, at most ``max_depth``
    levels); else BodyError."""
    if nesting_exceeds(data, max_depth):
        raise BodyError(400, "too_deep", f"{where}: JSON nested deeper than the limit of {max_depth} levels")
    try:
        if len(data) > THREAD_ABOVE:
            doc = _loads_in_pieces(data.decode(json.detect_encoding(data), "surrogatepass"))
        else:
            doc = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)
    except ValueError as e:
        raise BodyError(400, "bad_json", f"{where}: not valid JSON: {str(e)[:200]}") from None
    if _SURROGATE_ESCAPE.search(data) is not None:
        # JSON may escape half of a surrogate pair alone; such a string is no Unicode text and
        # fails wherever it is encoded later (a fingerprint, a file, a notification).
        try:
            json.dumps(doc, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BodyError(400, "bad_json", f"{where}: a string holds an unpaired surrogate (\\ud800-\\udfff)") from None
    return doc


def decode_json(data: bytes, limits: BodyLimits, convert: Callable[[Any], T] | None = None) -> Any:
    """A read body as :func:`read_json` takes it: parsed, then passed through ``convert`` when given."""
    doc = parse_json(data, limits.max_depth)
    return convert(doc) if convert is not None else doc


async def read_json(request: web.BaseRequest, limits: BodyLimits, convert: Callable[[Any], T] | None = None) -> Any:
    """The request's JSON body (BodyError as :func:`read_body` and :func:`parse_json`), passed
    through ``convert`` when given; both in a worker thread when the body is large."""
    data = await read_body(request, limits)
    if len(data) > THREAD_ABOVE:
        return await asyncio.to_thread(decode_json, data, limits, convert)
    return decode_json(data, limits, convert)
