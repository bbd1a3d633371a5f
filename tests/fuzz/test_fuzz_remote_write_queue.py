"""Fuzz target ``remote_write_queue``: a remote-write queue directory whose files are hostile
(truncated, corrupted, or written to claim 4 GB records), opened and read back as the senders
read it (``diskqueue``). Opening and reading document no error for the files' contents: a
record that does not check out is skipped and counted. So nothing may escape, and once every
batch is read and acknowledged no sample may be left pending (a sender would wait for it forever).

An input is a queue directory: its first byte says how long the ``ack`` file is (bit 7: no ack
file); after the ack file, three bytes say where the rest is split into two segment files."""

from __future__ import annotations

import itertools
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from bridge.delivery import DiskQueue, DropCounts
from integrations.prometheus.remote_write import encode_labels, encode_sample
from integrations.prometheus.textparse import parse
from tests.fuzz.harness import DATA, run_fuzz, seeds

pytestmark = pytest.mark.fuzz

ACK = struct.Struct("<QQI")
TOKENS = [
    b"\x00" * 12, b"\xff\xff\xff\xff", b"\x00\x00\x00\x40", b"\x01\x00\x00\x00", b"\xff\xff\xff\xff\x01\x00\x00\x00",
    struct.pack("<QQ", 1, 0), struct.pack("<QQ", 2**64 - 1, 2**64 - 1), struct.pack("<I", 1 << 30),
]
_dirs = itertools.count()


def _record(payload: bytes, samples: int) -> bytes:
    head = struct.pack("<II", len(payload), samples)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _ack(seq: int, offset: int) -> bytes:
    data = struct.pack("<QQ", seq, offset)
    return data + struct.pack("<I", zlib.crc32(data))


def layout(ack: bytes | None, first: bytes, second: bytes = b"") -> bytes:
    """The input for a queue with these files (the inverse of ``open_queue``'s reading)."""
    assert ack is None or len(ack) < 64
    return bytes([0x80 if ack is None else len(ack)]) + (ack or b"") + len(first).to_bytes(3, "little") + first + second


def generated_seeds() -> list[bytes]:
    """Queues as the remote writer fills them: samples of node_exporter's exposition, encoded."""
    samples = [(encode_labels([("__name__", name), *labels]), value, 1_700_000_000_000)
               for fam in parse((DATA / "node_exporter_1.5.prom").read_bytes()) for name, labels, value, _, _ in fam.samples]
    records = [_record(b"".join(encode_sample(*s) for s in samples[i:i + 50]), len(samples[i:i + 50]))
               for i in range(0, len(samples), 50)]
    one, two = b"".join(records[:4]), b"".join(records[4:8])
    return [
        layout(None, one, two),
        layout(_ack(1, len(records[0])), one, two),
        layout(_ack(2, 0), one, two),
        layout(_ack(1, 7), one, two),  # an ack position inside a record
        layout(None, one[:-5], two),  # a torn last record
        layout(None, struct.pack("<III", 0xFFFFFFFF, 1, 0) + one),  # a record claiming 4 GB
    ]


def write_layout(data: bytes, shard: Path) -> None:
    """Write ``data`` (laid out as ``layout`` makes it) as the ack file and two segments of ``shard``."""
    ack_len = data[0] if data else 0x80
    rest = data[1:]
    if not ack_len & 0x80:
        (shard / "ack").write_bytes(rest[:ack_len])
        rest = rest[ack_len:]
    split = int.from_bytes(rest[:3], "little")
    rest = rest[3:]
    (shard / "0000000000000001.seg").write_bytes(rest[:split])
    (shard / "0000000000000002.seg").write_bytes(rest[split:])


def open_queue(data: bytes, base: Path) -> None:
    """Write ``data`` as a queue directory under ``base``, open it, read and acknowledge every batch."""
    root = base / f"q{next(_dirs)}"
    shard = root / "shard-0"
    shard.mkdir(parents=True)
    try:
        write_layout(data, shard)
        drops: list[DropCounts] = []
        queue = DiskQueue(root, 1, 1 << 20, on_drop=lambda counts, reason: drops.append(counts))
        queue.open()
        q = queue.shards[0]
        for _ in range(len(data) + 2):  # every batch holds a record of 13 bytes at least
            batch = q.read_batch(500)
            if batch is None and q.pending_samples and q.segments:
                continue  # a corrupt segment was dropped: the next one is read
            if batch is None:
                break
            assert batch.payloads and batch.samples >= 1
            q.ack(batch)
        else:
            raise AssertionError("reading the queue did not come to an end")
        assert q.pending_samples == 0, f"{q.pending_samples} samples pending that no read returns"
        queue.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_fuzz_remote_write_queue(tmp_path: Path) -> None:
    pool = seeds("remote_write_queue") + generated_seeds()
    tried = run_fuzz(lambda data: open_queue(data, tmp_path), pool, allowed=(), tokens=TOKENS, max_rss_growth=128 << 20)
    assert tried > len(pool)
