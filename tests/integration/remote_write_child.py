"""A remote-write client process for the kill -9 test.

``append URL QUEUE BASE_MS``: appends numbered samples (value = number, timestamp = BASE_MS + number)
for SERIES series until killed, printing ``<number> <queued samples>`` after each append returns.
``drain URL QUEUE``: opens the same queue, waits until it is delivered, prints ``delivered <n>``.
"""

from __future__ import annotations

import asyncio
import sys

from bridge.logs import setup_logging
from integrations.prometheus.remote_write import RemoteWriteConfig, RemoteWriter, encode_labels

SERIES = 10


def writer(url: str, queue: str) -> RemoteWriter:
    return RemoteWriter(RemoteWriteConfig.model_validate({
        "url": url, "name": "child",
        "queue": {"path": queue, "shards": 2, "max_samples_per_send": 100, "batch_send_deadline": 0.05,
                  "min_backoff": 0.01, "max_backoff": 0.2},
    }))


async def append(url: str, queue: str, base_ms: int) -> None:
    w = writer(url, queue)
    await w.start()
    labels = [encode_labels([("__name__", "rw_kill_test"), ("series", str(s))]) for s in range(SERIES)]
    seq = 0
    while True:
        seq += 1
        accepted = w.append([(lab, float(seq), base_ms + seq) for lab in labels])
        assert accepted == SERIES, accepted
        print(seq, w._queue.pending_samples, flush=True)
        await asyncio.sleep(0.001)


async def drain(url: str, queue: str) -> int:
    w = writer(url, queue)
    await w.start()
    delivered = await w.flush(30)
    sent = w.samples_sent
    await w.stop(1)
    print("delivered" if delivered else "NOT delivered", sent, flush=True)
    return 0 if delivered else 1


def main(argv: list[str]) -> int:
    setup_logging("info")
    if argv[0] == "append":
        asyncio.run(append(argv[1], argv[2], int(argv[3])))
        return 0
    return asyncio.run(drain(argv[1], argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
