"""The PostgreSQL collector against a peer whose bytes freeze asyncpg's parser (a message of type
0 with a length above 2 GiB makes its compiled read loop spin holding the interpreter, so no
timeout can end it): the collector's guard refuses the frame, the target is down with the
reason, and the event loop keeps running. Run in a child process, so that a regression hangs
that process (ended by the test) and not the test run. Also the guard's frame check on its own;
test_db_postgresql.py reads real servers, all through the guard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collectors.pgguard import MAX_MESSAGE_BYTES, check_frame

ROOT = Path(__file__).resolve().parents[2]

#: The first bytes a peer sent when asyncpg froze (found by a random-bytes peer).
FREEZING = bytes.fromhex("00d21d8c6e879922b2a37c3c804579b9")

CHILD = textwrap.dedent("""
    import asyncio, json, socket, sys, threading, time
    from collectors.postgresql import PostgresqlCollector

    payload = bytes.fromhex(sys.argv[1])
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8); port = s.getsockname()[1]

    def serve():
        while True:
            c, _ = s.accept()
            c.settimeout(1)
            try:
                c.recv(65536)
                c.sendall(payload)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()

    async def main():
        beats = []

        async def beat():
            while True:
                beats.append(time.monotonic())
                await asyncio.sleep(0.05)

        b = asyncio.ensure_future(beat())
        c = PostgresqlCollector()
        await c.initialize({"dsn": f"postgresql://u@127.0.0.1:{port}/d", "password": "secret-pw",
                            "connect_timeout": 2, "query_timeout": 2})
        ups = []
        for _ in range(3):
            ms = await c.collect_metrics()
            ups += [m.value for m in ms if m.name == "postgresql.up"]
        await c.shutdown()
        b.cancel()
        beats.append(time.monotonic())
        gaps = [y - x for x, y in zip(beats, beats[1:])]
        print(json.dumps({"ups": ups, "reason": c.targets[0].reason, "max_gap": max(gaps), "beats": len(beats)}))

    asyncio.run(main())
""")


def test_a_frame_asyncpg_would_spin_on_is_refused_and_the_loop_goes_on():
    out = subprocess.run([sys.executable, "-c", CHILD, FREEZING.hex()], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ups"] == [0.0, 0.0, 0.0]
    assert "type 0x00" in got["reason"] and "127.0.0.1" in got["reason"], got["reason"]
    assert got["max_gap"] < 5.0, got  # a liveness bound: the loop was never held
    assert "secret-pw" not in out.stdout + out.stderr


@pytest.mark.parametrize(("head", "refused"), [
    (b"R\x00\x00\x00\x08", None),
    (b"D\x00\x00\x00\x04", None),
    (b"\x00\xd2\x1d\x8c\x6e", "type 0x00"),
    (b"R\x80\x00\x00\x00", "length 2147483648"),
    (b"R\x00\x00\x00\x03", "length 3"),
    (b"Z" + (MAX_MESSAGE_BYTES + 5).to_bytes(4, "big"), f"length {MAX_MESSAGE_BYTES + 5}"),
    (b"x\x00\x00\x00\x08", "type 0x78"),
])
def test_the_frame_check(head, refused):
    why = check_frame(head)
    assert (why is None) if refused is None else (refused in why), why
