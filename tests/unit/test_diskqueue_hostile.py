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


def _ack_of(path) -> tuple[int, int]:
    data = (path / "shard-0" / "ack").read_bytes()
    assert len(data) == 20 and zlib.crc32(data[:16]) == struct.unpack("<I", data[16:])[0]
    return struct.unpack("<QQ", data[:16])


def test_the_ack_is_rewritten_in_place_and_survives_a_reopen(tmp_path):
    """The ack file is written in place (one pwrite): a longer file left there is cut to the ack,
    and a queue opened again (after a crash: no close) goes on after the last acknowledged batch."""
    filled(tmp_path)
    (tmp_path / "shard-0" / "ack").write_bytes(b"\0" * 4096)  # damaged, longer than an ack
    q = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)
    q.open()  # (the damaged ack is not trusted: everything is sent again)
    batch = q.shards[0].read_batch(3)
    assert batch is not None and batch.payloads == [payload(0)]
    q.shards[0].ack(batch)
    acked = _ack_of(tmp_path)
    assert acked == q.shards[0].ack_pos and acked[1] > 0
    again = DiskQueue(tmp_path, shards=1, max_bytes=1 << 20)  # q is never closed, as after kill -9
    again.open()
    assert drain(again) == [payload(i) for i in range(1, 6)]
    q.close()
    again.close()


def test_an_ack_file_that_is_a_symlink_or_a_fifo_is_not_written_through(tmp_path, caplog):
    """A symlink where the ack goes is not followed (its target is untouched) and a FIFO does not
    block the writer: the batch is delivered all the same, the failure logged."""
    import os

    for kind in ("symlink", "fifo"):
        d = tmp_path / kind
        d.mkdir()
        filled(d)
        ack = d / "shard-0" / "ack"
        ack.unlink(missing_ok=True)
        victim = tmp_path / f"victim-{kind}"
        victim.write_bytes(b"keep")
        if kind == "symlink":
            ack.symlink_to(victim)
        else:
            os.mkfifo(ack)
        q = DiskQueue(d, shards=1, max_bytes=1 << 20)
        q.open()
        assert drain(q) == [payload(i) for i in range(6)]
        assert victim.read_bytes() == b"keep"
        assert q.pending_samples == 0
        q.close()
    assert caplog.text.count("cannot write the ack file") >= 2
