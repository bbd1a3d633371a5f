"""Fuzz target ``outbox_queue``: an alert outbox whose queue directory is hostile (truncated,
corrupted records, records that are not notifications, repeats of a key, an ack file pointing
anywhere), loaded as a restart loads it. Loading documents no error for the files' contents: a
record that does not check out, or is not a notification, is skipped and counted. So nothing may
escape, every key is pending once, the outbox on disk (``read_outbox``) holds what is pending,
and the queue holds nothing else (what was done with is behind its ack position).

An input is laid out as ``test_fuzz_remote_write_queue``'s: the ack file, then two segments."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from bridge.alerting.notify import Notification
from bridge.alerting.outbox import QUEUE, Outbox, read_outbox
from bridge.api import Alert, AlertState
from tests.fuzz.harness import run_fuzz, seeds
from tests.fuzz.test_fuzz_remote_write_queue import TOKENS, _ack, _record, layout, write_layout

pytestmark = pytest.mark.fuzz

_dirs = itertools.count()


def _note(key: str, group: str) -> bytes:
    a = Alert(f"id-{key}", "A", "critical", AlertState.FIRING, {"alertname": "A", "k": key}, {}, None, 1e9, None, key)
    return json.dumps(Notification("monitoring.alerts.webhook", key, group, {"k": key}, [a], "", 1e9).to_json()).encode()


def generated_seeds() -> list[bytes]:
    records = [_record(_note(f"k{i}", f"g{i % 3}"), 1) for i in range(8)]
    one, two = b"".join(records[:4]), b"".join(records[4:])
    return [
        layout(None, one, two),
        layout(_ack(1, len(records[0])), one, two),
        layout(_ack(2, 0), one, two),
        layout(None, one + records[0], two),  # a key twice
        layout(None, one[:-5], two),  # a torn last record
        layout(None, _record(b"{not json", 1) + _record(b'{"key": 1}', 1) + one, two),
        layout(None, _record(b"[]", 1) + _record(b"null", 1) + _record(b'"x"', 1), two),
    ]


def load_outbox(data: bytes, base: Path) -> None:
    root = base / f"o{next(_dirs)}"
    shard = root / QUEUE / "shard-0"
    shard.mkdir(parents=True)
    try:
        write_layout(data, shard)
        outbox = Outbox(root)
        keys = [n.key for n in outbox.pending()]
        assert len(keys) == len(set(keys)), keys
        assert sorted(n.key for n in read_outbox(root)) == sorted(keys)
        assert outbox._queue is not None and outbox._queue.pending_samples == len(keys)
        outbox._queue.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_fuzz_outbox_queue(tmp_path: Path) -> None:
    pool = seeds("outbox_queue") + generated_seeds()
    # The harness' default bound on RSS growth: the log lines of every input (several per damaged
    # record) are kept by pytest's log capture for the whole run; one input costs ~10 MB at most.
    tried = run_fuzz(lambda data: load_outbox(data, tmp_path), pool, allowed=(), tokens=TOKENS)
    assert tried > len(pool)
