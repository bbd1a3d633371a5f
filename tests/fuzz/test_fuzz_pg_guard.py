"""Fuzz target ``pg_guard``: what a PostgreSQL server sends through the collector's frame guard
(``collectors.pgguard.PgGuard._check``, run on a stream of the input's bytes).

Nothing escapes: a frame the guard refuses ends the stream with the reason in ``error``. What
the guard forwards is whole frames (a type PostgreSQL sends, a length within the bounds), in the
input's order, up to the first refused one; a frame cut by the stream's end is forwarded as far
as it came, as asyncpg would have read it."""

from __future__ import annotations

import asyncio

import pytest

from collectors.pgguard import MAX_MESSAGE_BYTES, PgGuard, check_frame
from tests.fuzz.harness import run_fuzz, seeds

pytestmark = pytest.mark.fuzz

TOKENS = [b"R\x00\x00\x00\x08\x00\x00\x00\x00", b"Z\x00\x00\x00\x05I", b"\x00\x00\x00\x04", b"\xff\xff\xff\xff",
          b"D\x00\x00\x00\x0a\x00\x01\x00\x00\x00\x00", b"E\x00\x00\x00\x04"]


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> None:
        self.data += b

    async def drain(self) -> None:
        pass


async def _through(data: bytes) -> tuple[bytes, str | None]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    guard = PgGuard("127.0.0.1", 5432, None, 1.0)
    sink = _Sink()
    await guard._check(reader, sink, "peer")  # type: ignore[arg-type]
    return bytes(sink.data), guard.error


def through(data: bytes) -> None:
    out, error = asyncio.run(_through(data))
    assert data.startswith(out)
    # Walk what was forwarded: whole, allowed frames, and at most one cut at the end.
    i = 0
    while i + 5 <= len(out):
        assert check_frame(out[i:i + 5]) is None
        i += int.from_bytes(out[i + 1:i + 5], "big") + 1
    if error is not None:  # refused at the next frame of the input
        assert i == len(out) and check_frame(data[i:i + 5]) is not None
    assert len(out) <= len(data) and MAX_MESSAGE_BYTES > 0


def test_fuzz_pg_guard() -> None:
    pool = seeds("pg_guard") + [b"R\x00\x00\x00\x08\x00\x00\x00\x00Z\x00\x00\x00\x05I", b"S\x00\x00\x00\x10abc\x00def\x00"]
    tried = run_fuzz(through, pool, allowed=(), tokens=TOKENS)
    assert tried > len(pool)


def test_the_frame_asyncpg_spins_on_is_refused_and_nothing_of_it_forwarded() -> None:
    out, error = asyncio.run(_through(bytes.fromhex("00d21d8c6e879922b2")))
    assert out == b"" and error is not None and "type 0x00" in error
