"""A remote-write queue directory damaged or written by someone else: its records are skipped and
counted, never a crash, a hang, a wrong pending count or a huge allocation."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

from bridge.delivery import DiskQueue, DropCounts


def payload(i: int) -> bytes:
    return b"sample-%04d" % i + b"." * 40


def filled(path, n: int = 6, samples: int = 2) -> None:
    q = DiskQueue(path, shards=1, max_bytes=1 << 20)
    q.open()
    for i in range(n):
        assert q.shards[0].append(payload(i), samples)
    q.close()


def drain(q: DiskQueue) -> list[bytes]:
    out: list[bytes] = []
    shard = q.shards[0]
    for _ in range(100):
        batch = shard.read_batch(3)
        if batch is None:
            if shard.pending_samples and shard.segments:
                continue
            return out
        out.extend(batch.payloads)
        shard.ack(batch)
    raise AssertionError("the queue never came to an end")


def write_ack(path, seq: int, offset: int) -> None:
    data = struct.pack("<QQ", seq, offset)
    (path / "shard-0" / "ack").write_bytes(data + struct.pack("<I", zlib.crc32(data)))


def test_an_ack_position_inside_a_record_resends_the_segment(tmp_path, caplog):
    filled(tmp_path)
    (seg,) = tmp_path.glob("shard-0/*.seg")
    write_ack(tmp_path, int(seg.stem), 7)  # a valid checksum, but no record ends at byte 7
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()
    assert q.pending_samples == 12
    assert drain(q) == [payload(i) for i in range(6)]
    assert q.pending_samples == 0
    assert "not on a record boundary" in caplog.text


def _open_with_drops(path) -> tuple[DiskQueue, list[tuple[DropCounts, str]]]:
    drops: list[tuple[DropCounts, str]] = []
    q = DiskQueue(path, shards=1, max_bytes=1 << 20, on_drop=lambda counts, reason: drops.append((counts, reason)))
    q.open()
    return q, drops


def test_a_record_changed_after_opening_is_dropped_and_counted(tmp_path, caplog):
    filled(tmp_path)
    q, drops = _open_with_drops(tmp_path)
    (seg,) = tmp_path.glob("shard-0/*.seg")
    with open(seg, "r+b") as f:  # the file changes under the open queue: a payload byte flips
        f.seek(12 + 3)
        f.write(b"X")
    assert drain(q) == []
    assert [(d.samples, reason) for d, reason in drops] == [(12, "corrupt_record")]
    assert q.pending_samples == 0
    assert "no longer checks out" in caplog.text


def test_a_length_claiming_4_gb_allocates_nothing_of_it(tmp_path):
    filled(tmp_path)
    q, drops = _open_with_drops(tmp_path)
    (seg,) = tmp_path.glob("shard-0/*.seg")
    with open(seg, "r+b") as f:
        f.write(struct.pack("<I", 0xFFFFFFFF))
    tracemalloc.start()
    try:
        assert drain(q) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated reading a record that claims 4 GB"
    assert [reason for _, reason in drops] == ["corrupt_record"] and q.pending_samples == 0


def test_strange_shard_directories_are_ignored(tmp_path):
    filled(tmp_path, n=2)
    for name in ("shard-\u00b2", "shard-1000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "0000000000000009.seg").write_bytes(b"x")
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()
    assert len(q.shards) == 1
    assert drain(q) == [payload(0), payload(1)]


def test_a_segment_that_is_no_file_is_ignored(tmp_path):
    filled(tmp_path, n=2)
    (tmp_path / "shard-0" / "0000000000000009.seg").mkdir()
    (tmp_path / "shard-0" / "ack").unlink(missing_ok=True)
    (tmp_path / "shard-0" / "ack").mkdir()
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()
    assert drain(q) == [payload(0), payload(1)]
