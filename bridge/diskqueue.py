"""The durable queue of every network sink (``bridge.delivery`` exports it): per-shard append-only
segments of framed records, bounded in bytes, on disk (surviving restarts and ``kill -9``) or in
memory. Remote write queues its encoded samples here; the alert outbox its notifications.

Layout of a queue directory::

    shard-0/0000000000000001.seg   segments; the number is global across shards, so it orders them by age
    shard-0/ack                    how far this shard is delivered (segment, offset, crc32), rewritten in place
    shard-1/...

A record is ``<u32 length><u32 samples><u32 crc32><payload>``, little-endian; ``samples`` is the
number of items the record holds (remote write: samples; the outbox: 1 notification), the crc
covers the first two header fields and the payload, and ``samples`` is at least 1, so a
zero-filled or half-written tail never passes for a record. Records are written with one ``write``
call per append (``append_many`` writes several at once): once it returns they are in the
operating system's cache and survive ``kill -9`` (with ``fsync`` they also survive a power loss).
Opening a queue reads every unacknowledged record; the first one that does not check out (a torn
last record after a crash) ends its segment: the file is truncated there and the loss is counted.
Opening reads a segment in bounded chunks, whatever length its headers claim; an ack position that
is not on a record boundary of its segment is not trusted (the segment is sent again from its
start). A record that no longer checks out when it is read for sending (the file changed under the
queue) drops the rest of its segment, counted with the reason ``corrupt_record``: a damaged queue
file costs its records, never a crash, a hang or unbounded memory.

The ack file is written after a batch is delivered, before any segment it covers is deleted, in
place: one 20-byte ``pwrite`` at offset 0 of a descriptor kept open (with ``fsync``, followed by
one). A killed process cannot tear a write call, so a crash at any point leaves either the old or
the new position; a power loss that tore it would fail its checksum, and the shard's undeleted
segments would be sent again. Records are delivered at least once, and in the normal path exactly
once. (Measured: a temporary file renamed over the ack, as it was written before, cost ~150 µs of
CPU on ext4 per delivered request, a tenth of remote write's CPU; the ``pwrite`` costs ~2 µs.) A consumer that
finishes records out of order (the outbox's lanes) acknowledges with ``ack_to`` the longest prefix
it is done with, and keeps its own record of the others (the outbox's journal).

When ``max_bytes`` would be exceeded the oldest segments (of any shard) are dropped, delivered or
not; ``on_drop`` is told what was lost and why, so that the owner counts and logs it.

Payloads are opaque here. A batch never spans two segments, which keeps "the batch was dropped
while in flight" simple.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.config import open_regular, read_regular_file

__all__ = ["MAX_SHARDS", "Batch", "DiskQueue", "DropCounts", "Position", "ShardQueue", "segment_size_for"]

log = logging.getLogger("monbridge.delivery.queue")

_HEADER = struct.Struct("<III")
_HEAD2 = struct.Struct("<II")
_ACK = struct.Struct("<QQI")
_ACK_POS = struct.Struct("<QQ")
_READ_CHUNK = 4 << 20
_MIN_READ = 64 << 10
_SEG_SUFFIX = ".seg"
MIN_SEGMENT_BYTES = 4096
MAX_SEGMENT_BYTES = 16 << 20
MAX_RECORD_BYTES = 1 << 30
MAX_SHARDS = 64  # the most shard directories a queue has; others found on disk are not read

Position = tuple[int, int]  # (segment number, byte offset): everything before it is delivered


def segment_size_for(max_bytes: int, shards: int) -> int:
    """Segments small enough that dropping the oldest one frees a fraction of the bound, large
    enough that files stay few: max_bytes / (8 × shards), between 4 KiB and 16 MiB."""
    return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, max_bytes // (8 * max(1, shards))))


@dataclass(slots=True)
class DropCounts:
    samples: int = 0
    records: int = 0
    bytes: int = 0


@dataclass(slots=True)
class Batch:
    """Records read from one segment, to be acknowledged with ``ShardQueue.ack`` once delivered."""

    payloads: list[bytes]
    samples: int
    start: Position
    end: Position

    def ends(self) -> list[Position]:
        """Where each record of the batch ends (the position to acknowledge once it is done)."""
        out: list[Position] = []
        seq, off = self.start
        for payload in self.payloads:
            off += _HEADER.size + len(payload)
            out.append((seq, off))
        return out


class _Segment:
    """One segment: a file (disk queue) or a bytearray (memory queue)."""

    __slots__ = ("seq", "path", "buf", "size", "samples", "fd")

    def __init__(self, seq: int, path: Path | None) -> None:
        self.seq = seq
        self.path = path
        self.buf: bytearray | None = bytearray() if path is None else None
        self.size = 0  # bytes of valid records
        self.samples = 0  # samples in those records
        self.fd: int | None = None  # write descriptor while this is a shard's head

    def read(self, offset: int, n: int) -> bytes:
        if self.buf is not None:
            return bytes(self.buf[offset:offset + n])
        assert self.path is not None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, n, offset)
        finally:
            os.close(fd)

    def count(self, start: int, end: int) -> int:
        """The samples of the records between offsets ``start`` and ``end`` (record boundaries),
        from their headers."""
        n = 0
        while start < end:
            data = self.read(start, min(end - start, _READ_CHUNK))
            pos = 0
            while pos + _HEADER.size <= len(data):
                length, samples, _crc = _HEADER.unpack_from(data, pos)
                n += samples
                pos += _HEADER.size + length
            if pos == 0:
                break  # the file no longer holds it
            start += pos
        return n

    def write(self, data: bytes, fsync: bool) -> None:
        if self.buf is not None:
            self.buf += data
            self.size += len(data)
            return
        if self.fd is None:
            assert self.path is not None
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if fsync:
                _fsync_dir(self.path.parent)  # the new file's name must survive a power loss too
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            if fsync:
                os.fsync(self.fd)
        except OSError:
            # Keep the framing: cut whatever part of the record made it to the file.
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                pass
            raise
        self.size += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def delete(self) -> None:
        self.close()
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


def _open_ack(path: Path, fsync: bool) -> int:
    """A descriptor to write ``path`` (a shard's ack file) in place: created if missing, never
    through a symlink, never anything but a regular file (a FIFO there must not block the writer),
    cut to the ack's size (so nothing of an older, longer file stays after it)."""
    fd, st = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW)
    try:
        if st.st_size != _ACK.size:
            os.ftruncate(fd, _ACK.size)
        if st.st_size == 0 and fsync:
            _fsync_dir(path.parent)  # the new file's name must survive a power loss too
    except BaseException:
        os.close(fd)
        raise
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _frame(payload: bytes, samples: int) -> bytes:
    head = _HEAD2.pack(len(payload), samples)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


class ShardQueue:
    """One shard's records in order: appended at the head segment, read and acknowledged from the
    ack position. All methods take the queue's lock; appends may come from any thread."""

    def __init__(self, queue: DiskQueue, index: int, directory: Path | None) -> None:
        self.queue = queue
        self.index = index
        self.dir = directory
        self.segments: list[_Segment] = []
        self.head: _Segment | None = None  # the segment appends go to (None: create one on the next append)
        self.ack_pos: Position = (0, 0)
        self.acked_in_ack_segment = 0  # samples before ack_pos in its segment
        self.pending_samples = 0
        self._ack_fd: int | None = None  # the ack file, open for writing once first written

    # ------------------------------------------------------------------ opening

    def _open(self) -> DropCounts:
        """Read this shard's directory: the ack position, and every segment's valid records."""
        torn = DropCounts()
        if self.dir is None:
            return torn
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ack_pos = self._read_ack()
        for path in sorted(self.dir.glob("*" + _SEG_SUFFIX)):
            try:
                seq = int(path.stem)
            except ValueError:
                continue
            if not path.is_file():  # a directory, a FIFO ...: not a segment this queue wrote
                log.warning("%s %s: %s is not a regular file; it is ignored", self.queue.label, self.dir, path.name)
                continue
            seg = _Segment(seq, path)
            if seq < self.ack_pos[0]:
                seg.delete()  # delivered; the crash came before its deletion
                continue
            torn_here = self._scan(seg)
            torn.samples += torn_here.samples
            torn.records += torn_here.records
            torn.bytes += torn_here.bytes
            self.segments.append(seg)
            self.queue.next_seq = max(self.queue.next_seq, seq + 1)
        self.queue.next_seq = max(self.queue.next_seq, self.ack_pos[0] + 1)
        self.pending_samples = sum(s.samples for s in self.segments) - self.acked_in_ack_segment
        return torn

    def _read_ack(self) -> Position:
        assert self.dir is not None
        try:
            # Not through a symlink, and a FIFO there must not block the opening of the queue.
            _, data = read_regular_file(self.dir / "ack", _ACK.size, nofollow=True)
        except FileNotFoundError:
            return (0, 0)
        except OSError as e:
            data = b""
            log.warning("%s %s: cannot read the ack file: %s", self.queue.label, self.dir, e)
        if len(data) == _ACK.size:
            seq, offset, crc = _ACK.unpack(data)
            if zlib.crc32(data[:16]) == crc:
                return (seq, offset)
        log.warning("%s %s: unreadable ack file; its undeleted segments are sent again", self.queue.label, self.dir)
        return (0, 0)

    def _scan(self, seg: _Segment) -> DropCounts:
        """Check ``seg``'s records, reading the file in chunks of at most _READ_CHUNK bytes;
        truncate it at the first bad one (a torn write)."""
        assert seg.path is not None
        off = 0
        torn = DropCounts()
        ack_seq, ack_off = self.ack_pos
        on_boundary = seg.seq != ack_seq or ack_off == 0
        with open(seg.path, "r+b") as f:
            file_size = os.fstat(f.fileno()).st_size
            while off < file_size:
                length = samples = 0
                ok = False
                end = off
                head = os.pread(f.fileno(), _HEADER.size, off)
                if len(head) == _HEADER.size:
                    length, samples, crc = _HEADER.unpack(head)
                    end = off + _HEADER.size + length
                    ok = samples >= 1 and 0 < length <= MAX_RECORD_BYTES and end <= file_size
                    if ok:
                        crc_now = zlib.crc32(head[:8])
                        pos = off + _HEADER.size
                        while pos < end:
                            chunk = os.pread(f.fileno(), min(_READ_CHUNK, end - pos), pos)
                            if not chunk:
                                break
                            crc_now = zlib.crc32(chunk, crc_now)
                            pos += len(chunk)
                        ok = pos == end and crc_now == crc
                if not ok:
                    # A sample takes more than 8 bytes, so a larger count is not a header at all.
                    plausible = 0 < samples and samples * 8 < length <= MAX_RECORD_BYTES
                    torn = DropCounts(samples=samples if plausible else 0, records=1, bytes=file_size - off)
                    log.warning("%s %s: segment %s ends in a torn record at byte %d (%d bytes, "
                                "%d samples), written when the process was killed; it is skipped",
                                self.queue.label, self.dir, seg.path.name, off, torn.bytes, torn.samples)
                    f.truncate(off)
                    break
                if seg.seq == ack_seq and end <= ack_off:
                    self.acked_in_ack_segment += samples
                    on_boundary = on_boundary or end == ack_off
                seg.samples += samples
                off = end
        seg.size = off
        if not on_boundary:
            log.warning("%s %s: the ack position (byte %d of segment %s) is not on a record boundary; the "
                        "segment is sent again from its start", self.queue.label, self.dir, ack_off, seg.path.name)
            self.ack_pos = (ack_seq, 0)
            self.acked_in_ack_segment = 0
        return torn

    # ------------------------------------------------------------------ writing

    def append(self, payload: bytes, samples: int) -> bool:
        """Append one record; False when it alone is larger than max_bytes (it is not written).
        Raises OSError when the disk refuses it; nothing is half-written then."""
        return self.append_many([(payload, samples)]) is not None

    def append_many(self, records: list[tuple[bytes, int]]) -> list[Position] | None:
        """Append ``records`` (payload, samples) in order, with one write (and one fsync) per
        segment they go to; return where each ends. None when they are together larger than
        max_bytes (nothing is written). Raises OSError when the disk refuses them; nothing is
        half-written then (records before the failed segment's write stay appended)."""
        frames = [_frame(payload, samples) for payload, samples in records]
        q = self.queue
        if sum(map(len, frames)) > q.max_bytes:
            return None
        ends: list[Position] = []
        with q.lock:
            q.make_room(sum(map(len, frames)))
            i = 0
            while i < len(frames):
                head = self.head
                if head is not None and head.size >= q.segment_bytes:
                    self._seal()
                    head = None
                if head is None:
                    path = None if self.dir is None else self.dir / f"{q.next_seq:016d}{_SEG_SUFFIX}"
                    head = self.head = _Segment(q.next_seq, path)
                    q.next_seq += 1
                    self.segments.append(head)
                # Records up to the segment size go into this segment (at least one).
                j, size = i + 1, head.size + len(frames[i])
                while j < len(frames) and size + len(frames[j]) <= q.segment_bytes:
                    size += len(frames[j])
                    j += 1
                before = head.size
                try:
                    head.write(b"".join(frames[i:j]), q.fsync)
                except OSError:
                    if before == 0 and head.size == 0:
                        self.segments.remove(head)
                        self.head = None
                        head.delete()
                    raise
                off = before
                for k in range(i, j):
                    off += len(frames[k])
                    ends.append((head.seq, off))
                    head.samples += records[k][1]
                    self.pending_samples += records[k][1]
                q.total_bytes += head.size - before
                i = j
        return ends

    def _seal(self) -> None:
        """Stop appending to the head segment (and delete it if it is already delivered)."""
        head = self.head
        self.head = None
        if head is not None:
            head.close()
            self._advance()

    # ------------------------------------------------------------------ reading and acknowledging

    def _advance(self) -> None:
        """Move the ack position past delivered sealed segments, deleting them."""
        while self.segments:
            first = self.segments[0]
            if first.seq > self.ack_pos[0]:
                self.ack_pos = (first.seq, 0)
                self.acked_in_ack_segment = 0
            if first is self.head or self.ack_pos[1] < first.size:
                return
            self.segments.pop(0)
            self.queue.total_bytes -= first.size
            first.delete()
            self.ack_pos = (first.seq + 1, 0)
            self.acked_in_ack_segment = 0

    def end_position(self) -> Position:
        """Where the next append goes: everything before it has been appended."""
        with self.queue.lock:
            if self.segments:
                last = self.segments[-1]
                return (last.seq, last.size) if last is self.head else (last.seq + 1, 0)
            return self.ack_pos

    def delivered_position(self) -> Position:
        with self.queue.lock:
            self._advance()
            return self.ack_pos

    def read_batch(self, max_samples: int, start: Position | None = None) -> Batch | None:
        """The next records to send from the ack position (or from ``start``, a position returned
        by an earlier batch or append, to read on without acknowledging): whole records, at most
        ``max_samples`` samples (at least one record), all from one segment. None when there is
        nothing to send."""
        with self.queue.lock:
            self._advance()
            if start is None or start < self.ack_pos:
                start = self.ack_pos
            later = [seg for seg in self.segments  # the first segment with records from ``start`` on (not an empty one)
                     if (seg.seq > start[0] and seg.size > 0) or (seg.seq == start[0] and start[1] < seg.size)]
            if not later:
                return None
            seg = later[0]
            off = start[1] if seg.seq == start[0] else 0
            size = seg.size
        if off >= size:
            return None
        # Records are only appended behind ``size``, and a segment dropped for room meanwhile is
        # either read whole (it is opened once per read) or not found: reading outside the lock is safe.
        payloads: list[bytes] = []
        samples = pos = 0
        corrupt = False
        try:
            # What ``max_samples`` takes at this segment's bytes a sample (a quarter more), not a
            # whole 4 MiB chunk for every batch: at 500k series the rest of a segment is megabytes,
            # and reading it again for each batch cost 0.4 us a sample (8 % of a round).
            want = max(_MIN_READ, (max_samples * seg.size // max(1, seg.samples)) * 5 // 4)
            data = seg.read(off, min(size - off, _READ_CHUNK, want))
            while off + pos < size and pos + _HEADER.size <= len(data):
                length, n, crc = _HEADER.unpack_from(data, pos)
                end = pos + _HEADER.size + length
                if n < 1 or length < 1 or off + end > size:  # the file changed since it was checked
                    corrupt = True
                    break
                if payloads and samples + n > max_samples:
                    break
                if end > len(data):
                    if payloads:
                        break
                    data = seg.read(off, _HEADER.size + length)  # one record larger than a read (bounded by size)
                    if len(data) < end:
                        corrupt = True
                        break
                payload = data[pos + _HEADER.size:end]
                if zlib.crc32(payload, zlib.crc32(data[pos:pos + 8])) != crc:
                    corrupt = True
                    break
                payloads.append(payload)
                samples += n
                pos = end
                if samples >= max_samples:
                    break
            else:
                corrupt = not payloads and off < size  # a record the file no longer holds
        except FileNotFoundError:
            return None  # dropped: the next call starts at the next segment
        if corrupt and not payloads:
            self._drop_corrupt(seg, off)
            return None
        if not payloads:
            return None
        return Batch(payloads, samples, (seg.seq, off), (seg.seq, off + pos))

    def _drop_corrupt(self, seg: _Segment, off: int) -> None:
        """The record at ``off`` of ``seg`` no longer checks out: drop the segment's undelivered rest."""
        with self.queue.lock:
            if not self.segments or self.segments[0] is not seg:
                return  # dropped meanwhile, or read ahead of the ack position (dropped when the ack gets there)
            dropped = self.drop_oldest_segment()
        log.warning("%s %s: segment %s no longer checks out at byte %d (the file changed); its "
                    "%d undelivered samples are dropped", self.queue.label, self.dir,
                    seg.path.name if seg.path else seg.seq, off, dropped.samples)
        self.queue.on_drop(dropped, "corrupt_record")

    def ack(self, batch: Batch) -> None:
        """``batch`` is delivered (or given up): persist the new position and delete what it frees.
        A batch whose segment was dropped for room while in flight changes nothing."""
        with self.queue.lock:
            if self.ack_pos != batch.start:
                return
            self.ack_pos = batch.end
            self.acked_in_ack_segment += batch.samples
            self.pending_samples -= batch.samples
            try:
                self._write_ack()
            except OSError as e:
                # Delivered all the same; after a restart the batch is sent again (at least once).
                log.warning("%s %s: cannot write the ack file: %s", self.queue.label, self.dir, e)
            self._advance()

    def ack_to(self, target: Position) -> None:
        """Everything before ``target`` (the end of a record, as ``append_many`` or ``Batch.ends``
        returned it) is done with: persist the new position and delete what it frees. A target at
        or before the ack position, or in a segment dropped meanwhile, changes nothing."""
        with self.queue.lock:
            if target <= self.ack_pos or not any(seg.seq == target[0] and target[1] <= seg.size for seg in self.segments):
                return
            acked = 0
            for seg in self.segments:
                if seg.seq > target[0]:
                    break
                if seg.seq < self.ack_pos[0]:
                    continue
                start = self.ack_pos[1] if seg.seq == self.ack_pos[0] else 0
                end = target[1] if seg.seq == target[0] else seg.size
                counted = seg.count(start, end)
                acked += counted
                if seg.seq == target[0]:
                    before = self.acked_in_ack_segment if seg.seq == self.ack_pos[0] else 0
                    self.acked_in_ack_segment = before + counted
            self.ack_pos = target
            self.pending_samples -= acked
            # Segments wholly before the target are done with: _advance deletes those it reaches.
            while self.segments and self.segments[0].seq < target[0] and self.segments[0] is not self.head:
                first = self.segments.pop(0)
                self.queue.total_bytes -= first.size
                first.delete()
            try:
                self._write_ack()
            except OSError as e:
                log.warning("%s %s: cannot write the ack file: %s", self.queue.label, self.dir, e)
            self._advance()

    def _write_ack(self) -> None:
        if self.dir is None:
            return
        seq, offset = self.ack_pos
        data = _ACK_POS.pack(seq, offset)
        data += struct.pack("<I", zlib.crc32(data))
        fd = self._ack_fd
        if fd is None:
            fd = self._ack_fd = _open_ack(self.dir / "ack", self.queue.fsync)
        try:
            if os.pwrite(fd, data, 0) != len(data):
                raise OSError(f"short write to {self.dir / 'ack'}")
            if self.queue.fsync:
                os.fsync(fd)
        except OSError:
            self._close_ack()  # opened again on the next write
            raise

    def _close_ack(self) -> None:
        if self._ack_fd is not None:
            fd, self._ack_fd = self._ack_fd, None
            os.close(fd)

    # ------------------------------------------------------------------ dropping for room

    def drop_oldest_segment(self) -> DropCounts:
        """Drop this shard's oldest segment, delivered or not (the caller holds the lock)."""
        seg = self.segments[0]
        if seg is self.head:
            self.head = None
            seg.close()
        unacked = seg.samples - (self.acked_in_ack_segment if seg.seq == self.ack_pos[0] else 0)
        dropped = DropCounts(samples=unacked, records=0, bytes=seg.size)
        self.segments.pop(0)
        self.queue.total_bytes -= seg.size
        self.pending_samples -= unacked
        seg.delete()
        self.ack_pos = (self.segments[0].seq if self.segments else seg.seq + 1, 0)
        self.acked_in_ack_segment = 0
        try:
            self._write_ack()
        except OSError:
            pass  # the segment is gone either way; a stale ack only names a missing segment
        return dropped

    def close(self) -> None:
        with self.queue.lock:
            for seg in self.segments:
                seg.close()
            self.head = None
            self._close_ack()


def _shard_index(name: str) -> int | None:
    """The index of a directory named ``shard-<n>``; None for any other name and beyond MAX_SHARDS."""
    digits = name.removeprefix("shard-")
    if digits == name or not (digits.isascii() and digits.isdigit()) or len(digits) > 3:
        return None
    i = int(digits)
    return i if i < MAX_SHARDS else None


class DiskQueue:
    """The shards' queues under one bound of ``max_bytes``; ``path`` None keeps them in memory."""

    def __init__(self, path: str | os.PathLike[str] | None, shards: int, max_bytes: int, fsync: bool = False,
                 on_drop: Callable[[DropCounts, str], None] | None = None, label: str = "remote-write queue") -> None:
        self.path = Path(path) if path is not None else None
        self.label = label  # what the queue is, in log lines
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.lock = threading.RLock()
        self.next_seq = 1
        self.total_bytes = 0
        self.on_drop = on_drop or (lambda counts, reason: None)
        self.shards: list[ShardQueue] = []
        self._configured_shards = shards
        self.segment_bytes = segment_size_for(max_bytes, shards)

    def open(self) -> DropCounts:
        """Open (or create) the queue; returns what was lost to torn records. When the directory
        holds undelivered data for a different number of shards, that number is kept until it is
        delivered: a series must not change shards while it has a backlog."""
        torn = DropCounts()
        n = self._configured_shards
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            existing = sorted(i for i in (_shard_index(p.name) for p in self.path.glob("shard-*")) if i is not None)
            on_disk = (max(existing) + 1) if existing else 0
            if on_disk and on_disk != n and any(any(self.path.glob(f"shard-{i}/*{_SEG_SUFFIX}")) for i in existing):
                log.warning("%s %s holds data for %d shards; %d shards are configured and take effect "
                            "once that data is delivered and the writer restarts", self.label, self.path, on_disk, n)
                n = on_disk
            elif on_disk > n:
                for i in existing:
                    if i >= n:
                        d = self.path / f"shard-{i}"
                        for f in d.iterdir():
                            f.unlink()
                        d.rmdir()
        for i in range(n):
            shard = ShardQueue(self, i, None if self.path is None else self.path / f"shard-{i}")
            t = shard._open()
            torn.samples += t.samples
            torn.records += t.records
            torn.bytes += t.bytes
            self.shards.append(shard)
        self.total_bytes = sum(seg.size for s in self.shards for seg in s.segments)
        self.segment_bytes = segment_size_for(self.max_bytes, n)
        if self.total_bytes > self.max_bytes:
            with self.lock:
                self.make_room(0)
        return torn

    @property
    def pending_samples(self) -> int:
        return sum(s.pending_samples for s in self.shards)

    def make_room(self, n: int) -> None:
        """Drop the oldest segments (of any shard) until ``n`` more bytes fit under max_bytes."""
        dropped = DropCounts()
        while self.total_bytes + n > self.max_bytes:
            candidates = [s for s in self.shards if s.segments]
            if not candidates:
                break
            oldest = min(candidates, key=lambda s: s.segments[0].seq)
            d = oldest.drop_oldest_segment()
            dropped.samples += d.samples
            dropped.bytes += d.bytes
            dropped.records += 1
        if dropped.records:
            self.on_drop(dropped, "max_bytes")

    def close(self) -> None:
        for s in self.shards:
            s.close()
