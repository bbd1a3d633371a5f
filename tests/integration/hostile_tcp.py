"""A hostile server on a loopback TCP socket, one thread a connection, for the database
collectors' tests: it speaks just enough of a protocol to keep a client waiting.

Modes (``HostileTcp(mode, protocol)``):

* ``silent``: accepts, reads what comes, never answers;
* ``garbage``: answers every read (and greets, for a protocol whose server speaks first) with
  random bytes (seeded);
* ``drip``: starts a reply whose header announces a long message (16 MiB), then sends one byte
  of it every 0.2 s, for ever;
* ``close_mid``: starts a valid reply, then closes the connection halfway through it.

``protocol`` is ``postgresql`` (the client speaks first; the reply is an authentication
message), ``mysql`` (the server greets first) or ``redis`` (the client speaks first; the reply a
bulk string). ``connections`` counts what was accepted.
"""

from __future__ import annotations

import random
import socket
import threading

MODES = ("silent", "garbage", "drip", "close_mid")
_LONG = 16 << 20

#: protocol -> (the server speaks first, the start of a long reply, a valid reply cut short)
PROTOCOLS: dict[str, tuple[bool, bytes, bytes]] = {
    # 'S' ParameterStatus of 16 MiB; AuthenticationOk ('R', length 8, 0) cut after 6 of its 9 bytes
    "postgresql": (False, b"S" + (_LONG).to_bytes(4, "big"), b"R\x00\x00\x00\x08\x00"),
    # a greeting packet of 16 MiB - 1 (length, sequence 0); a greeting of 80 bytes cut after 10
    "mysql": (True, (0xFFFFFF).to_bytes(3, "little") + b"\x00\x0a5.5.5-",
              (80).to_bytes(3, "little") + b"\x00\x0a5.5.5-10."),
    "redis": (False, b"$%d\r\n" % _LONG, b"$100\r\nabcdef"),
}


class HostileTcp:
    def __init__(self, mode: str, protocol: str, seed: int = 7) -> None:
        assert mode in MODES and protocol in PROTOCOLS, (mode, protocol)
        self.mode, self.protocol = mode, protocol
        self.connections = 0
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name=f"hostile-{protocol}-{mode}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        for c in list(self._conns):
            try:
                c.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _recv(self, conn: socket.socket) -> bytes | None:
        """What the client sent next (b"" when nothing came within 0.2 s); None when it closed."""
        conn.settimeout(0.2)
        try:
            data = conn.recv(65536)
        except TimeoutError:
            return b""
        except OSError:
            return None
        return data or None

    def _serve(self, conn: socket.socket) -> None:
        server_first, long_start, cut = PROTOCOLS[self.protocol]
        try:
            if not server_first:  # wait for the client's first message
                while not self._stop.is_set():
                    got = self._recv(conn)
                    if got is None:
                        return
                    if got:
                        break
            if self.mode == "close_mid":
                conn.sendall(cut)
                return
            if self.mode == "drip":
                conn.sendall(long_start)
                while not self._stop.wait(0.2):
                    conn.sendall(b"a")
                return
            while not self._stop.is_set():
                if self.mode == "garbage":
                    conn.sendall(self._rng.randbytes(self._rng.randint(1, 4096)))
                if self._recv(conn) is None:
                    return
        except OSError:
            return
        finally:
            try:
                conn.close()
            except OSError:
                pass
