"""The DogStatsD server's socket readers (the C ones where the extension is built: the default,
a pump thread emptying the socket into a ring (``_dsdfast.Queue``), and ``_dsdfast.recv`` with
``reader_queue_bytes: 0``; one ``recvmmsg`` a batch through ctypes, where libc has it; one ``recv_into`` a datagram
elsewhere) on real sockets: bursts filling whole batches, datagrams cut,
blank or bad among good ones, over UDP and a Unix socket; what was sent = taken + dropped, and the
values aggregated are the same for both."""

from __future__ import annotations

from collections import Counter

import pytest
from test_dogstatsd import dogstatsd, short_socket_path, udp_sender, uds_sender

from integrations.datadog import dsd_server

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("reader", ["c-queue", "c", "recvmmsg", "recv_into"])
def test_every_reader_takes_and_counts_every_datagram(tmp_path, monkeypatch, reader):
    queue = {"reader_queue_bytes": 0} if reader != "c-queue" else {}
    if reader.startswith("c"):
        assert dsd_server._dsdfast is not None, "integrations.datadog._dsdfast is not built (the reader used by default)"
    else:
        monkeypatch.setattr(dsd_server, "_dsdfast", None)
    if reader == "recvmmsg":
        assert dsd_server._RECVMMSG is not None  # (Linux: the Python reader used by default)
    elif reader == "recv_into":
        monkeypatch.setattr(dsd_server, "_RECVMMSG", None)
    path = short_socket_path(tmp_path)
    with dogstatsd(tmp_path, buffer_size=512, listen_uds=path, **queue) as r:
        assert all((x.queue is not None) == (reader == "c-queue") for x in r.server._readers)
        sent = 0
        for send in (udp_sender(r), uds_sender(path)):
            for i in range(300):  # more than a batch at once
                send(b"burst.count:1|c|#k:v\nburst.gauge:%d|g\nburst.timer:%d|ms|@0.5" % (i, i % 7))
            send(b"\n".join(b"cut:%d|c" % i for i in range(100)))  # longer than buffer_size
            send(b"\r\n\n")  # blank
            send(b"")  # empty
            send(b"burst.count:2|c|#k:v\nbad:1|zz\nburst.count:x|c|#k:v")
            sent += 304
        r.wait_datagrams(sent)
        c = r.counts()
        assert c["dropped"] == Counter({"truncated": 2, "empty": 4, "bad_type": 2, "bad_value": 2})
        assert c["messages"]["metric"] == 2 * (300 * 3 + 1)
        series = r.flush()
        assert series[("burst.count", (("k", "v"),))].value == 2 * (300 + 2)
        assert series[("burst.gauge", ())].value == 299.0
        assert series[("burst.timer.count", ())].value == 2 * 300 * 2.0
        assert series[("burst.timer.max", ())].value == 6.0
        assert not any(n == "cut" for n, _ in series)
