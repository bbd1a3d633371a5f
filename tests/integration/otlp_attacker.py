"""Hostile OTLP peers. Clients, run as a child process (so that attacking never delays the measuring
process): ``python otlp_attacker.py HTTP_PORT GRPC_PORT SECONDS PAUSE [ATTACK ...]`` (PAUSE: seconds
between two requests of one attack, 0 for as fast as they are answered).

Every attack runs in its own threads for SECONDS, then one JSON line reports what each got back
(HTTP statuses, gRPC status codes, how many held connections the receiver closed):

  http_slowloris  connections sending a request's headers (then its body) one line a second
  http_idle       connections that send nothing
  grpc_slowloris  connections sending HTTP/2's client preface a byte a second
  grpc_idle       connections that send nothing
  http_bomb       a gzip body of 64 MiB of zeros (64 KB on the wire)
  http_length     ``Content-Length: 10^12``, then a few bytes
  http_garbage    random bytes as protobuf, as fast as answered
  grpc_garbage    random bytes as the Export message, as fast as answered
  grpc_bomb       a gzip-compressed 64 MiB message
  http_nested     attribute values nested 40 deep (as deep as protobuf decodes) and 1000 deep
                  (protobuf; JSON 100,000 deep), and one of 512 KiB

``PushBackend`` is the other side: an OTLP push backend that answers, fails, stalls or holds.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

ATTACKS = ("http_slowloris", "http_idle", "grpc_slowloris", "grpc_idle", "http_bomb", "http_length",
           "http_garbage", "grpc_garbage", "grpc_bomb", "http_nested")
HELD = 20  # connections per holding attack
PROTOBUF = "application/x-protobuf"
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class Attacker:
    def __init__(self, http_port: int, grpc_port: int, seconds: float, pause: float = 0.0) -> None:
        self.http_port, self.grpc_port = http_port, grpc_port
        self.pause = pause  # between two requests of one attack (0: as fast as answered)
        self.until = time.monotonic() + seconds
        self.results: dict[str, Counter[str]] = {a: Counter() for a in ATTACKS}
        self.lock = threading.Lock()

    def note(self, attack: str, what: str) -> None:
        with self.lock:
            self.results[attack][what] += 1

    def running(self) -> bool:
        return time.monotonic() < self.until

    # ------------------------------------------------------------ holding connections

    def hold(self, attack: str, port: int, pieces: Callable[[], list[bytes]], period: float) -> None:
        """HELD connections, each sending its next piece every ``period`` s; notes each one the
        receiver closed (``closed``) and those still open at the end (``open``)."""
        socks = []
        for _ in range(HELD):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.setblocking(False)
            socks.append([s, pieces()])
        while self.running() and socks:
            for entry in list(socks):
                s, rest = entry
                try:
                    try:
                        if s.recv(65536) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    if rest:
                        try:
                            s.send(rest.pop(0))
                        except BlockingIOError:
                            pass
                except OSError:  # closed by the receiver
                    self.note(attack, "closed")
                    s.close()
                    socks.remove(entry)
            time.sleep(period)
        for s, _ in socks:
            self.note(attack, "open")
            s.close()

    def http_slowloris(self) -> None:
        def pieces() -> list[bytes]:
            head = [b"POST /v1/metrics HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n",
                    b"Content-Type: application/x-protobuf\r\n", b"Content-Length: 100000\r\n", b"\r\n"]
            return head + [b"\x0a"] * 10_000  # then the body, a byte at a time
        self.hold("http_slowloris", self.http_port, pieces, 1.0)

    def http_idle(self) -> None:
        self.hold("http_idle", self.http_port, list, 1.0)

    def grpc_slowloris(self) -> None:
        preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        self.hold("grpc_slowloris", self.grpc_port, lambda: [preface[i:i + 1] for i in range(len(preface))], 1.0)

    def grpc_idle(self) -> None:
        self.hold("grpc_idle", self.grpc_port, list, 1.0)

    # ------------------------------------------------------------ HTTP requests

    def post(self, attack: str, body: bytes, headers: dict[str, str]) -> None:
        """One request; notes its status (and the points a 200 rejected) or the error."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10)
        try:
            conn.request("POST", "/v1/metrics", body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            what = str(resp.status)
            if resp.status == 200 and headers.get("Content-Type") == "application/x-protobuf":
                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

                rejected = ExportMetricsServiceResponse.FromString(data).partial_success.rejected_data_points
                what += f" rejected={rejected}"
            self.note(attack, what)
        except OSError as e:
            self.note(attack, type(e).__name__)
        finally:
            conn.close()
        time.sleep(self.pause)

    def http_bomb(self) -> None:
        body = gzip.compress(bytes(64 << 20), compresslevel=9)
        while self.running():
            self.post("http_bomb", body, {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"})

    def http_length(self) -> None:
        while self.running():
            try:
                with socket.create_connection(("127.0.0.1", self.http_port), timeout=10) as s:
                    s.sendall(b"POST /v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              b"Content-Type: application/x-protobuf\r\nContent-Length: 1000000000000\r\n\r\n"
                              + os.urandom(1024))
                    answer = s.recv(4096)
                    self.note("http_length", answer.split(b" ", 2)[1].decode() if answer else "closed")
            except OSError as e:
                self.note("http_length", type(e).__name__)
            time.sleep(self.pause)

    def http_garbage(self) -> None:
        while self.running():
            self.post("http_garbage", os.urandom(4096), {"Content-Type": PROTOBUF})

    def http_nested(self) -> None:
        deep_pb, nested_pb, huge_pb = nested_request(40), nested_request(1000), nested_request(0, huge=1 << 19)
        nested_json = b'{"resourceMetrics":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        while self.running():
            self.post("http_nested", deep_pb, {"Content-Type": PROTOBUF})
            self.post("http_nested", nested_pb, {"Content-Type": PROTOBUF})
            self.post("http_nested", huge_pb, {"Content-Type": PROTOBUF})
            self.post("http_nested", nested_json, {"Content-Type": "application/json"})

    # ------------------------------------------------------------ gRPC requests

    def grpc_call(self, attack: str, body: Any, compression: Any = None, pause: float = 0.0) -> None:
        import grpc  # type: ignore[import-untyped]

        with grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            call = channel.unary_unary(EXPORT)  # raw bytes in and out
            while self.running():
                try:
                    call(body() if callable(body) else body, timeout=10, compression=compression)
                    self.note(attack, "OK")
                except grpc.RpcError as e:
                    self.note(attack, e.code().name)
                time.sleep(max(pause, self.pause))

    def grpc_garbage(self) -> None:
        self.grpc_call("grpc_garbage", lambda: os.urandom(4096))

    def grpc_bomb(self) -> None:
        import grpc

        self.grpc_call("grpc_bomb", bytes(64 << 20), grpc.Compression.Gzip, pause=0.2)  # compressing costs us


class PushBackend:
    """An OTLP/HTTP push backend on loopback (threads of the calling process) that answers as its
    ``kind`` says, read at each request: ``ok`` (200), ``503`` (at once), ``slow`` (503 after 30 s)
    or ``black_hole`` (accepts connections, never reads or answers). ``arrivals`` logs when each
    request was read (``time.monotonic()``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.arrivals: list[float] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)
            if self.kind != "black_hole":
                threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            while not self.stopped.is_set() and self.kind != "black_hole":
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                headers, _, rest = head.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in headers.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.arrivals.append(time.monotonic())
                if self.kind == "ok":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")
                    continue
                if self.kind == "slow":
                    self.stopped.wait(30)
                if self.kind != "black_hole":
                    conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            return

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()
        for c in self.held:
            c.close()


def nested_request(depth: int, huge: int = 0) -> bytes:
    """An export request of one gauge point whose attribute is a list nested ``depth`` deep, or a
    string of ``huge`` characters."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportMetricsServiceRequest()
    point = req.resource_metrics.add().scope_metrics.add().metrics.add(name="hostile").gauge.data_points.add()
    point.as_double = 1.0
    if huge:
        point.attributes.append(KeyValue(key="huge", value=AnyValue(string_value="x" * huge)))
        return req.SerializeToString()
    # Built as bytes: the protobuf library refuses to serialize past its own recursion limit.
    inner = AnyValue(string_value="bottom").SerializeToString()
    for _ in range(depth):
        inner = _field(5, _field(1, inner))  # AnyValue{array_value: ArrayValue{values: [inner]}}
    kv = _field(1, b"deep") + _field(2, inner)
    point_bytes = point.SerializeToString() + _field(7, kv)  # NumberDataPoint.attributes = 7
    gauge = _field(1, point_bytes)  # Gauge.data_points = 1
    metric = _field(1, b"hostile") + _field(5, gauge)  # Metric.name = 1, Metric.gauge = 5
    scope_metrics = _field(2, metric)  # ScopeMetrics.metrics = 2
    resource_metrics = _field(2, scope_metrics)  # ResourceMetrics.scope_metrics = 2
    return _field(1, resource_metrics)  # ExportMetricsServiceRequest.resource_metrics = 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def main() -> None:
    http_port, grpc_port, seconds, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    names = sys.argv[5:] or list(ATTACKS)
    attacker = Attacker(http_port, grpc_port, seconds, pause)
    threads = [threading.Thread(target=getattr(attacker, n), name=n, daemon=True) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    print(json.dumps({a: dict(c) for a, c in attacker.results.items() if a in names}), flush=True)


if __name__ == "__main__":
    main()
