"""Fuzzing what Elasticsearch answers a bulk request, and the names and attributes the export maps.

Whatever JSON comes back as a ``_bulk`` answer, the export's reading of it (``_items``) raises
nothing and accounts for every operation once: accepted, queued again (429/5xx items) or dropped
(counted by a bounded reason). And any text as a metric name, attribute key or value maps to
documents whose lines are JSON without a newline (the NDJSON body stays one operation per two
lines). Nothing may escape (``allowed=()``).

Seeds: answers in ``corpus/elastic_bulk_answer/`` (every item created; 429, 400 and 409 items;
shapes Elasticsearch never sends).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bridge.api import MetricKind
from integrations.elasticsearch.config import ElasticsearchConfig
from integrations.elasticsearch.export import ElasticExporter
from integrations.elasticsearch.mapping import Mapper, Point
from tests.fuzz.harness import run_fuzz, seeds

TOKENS = [b'"status":429', b'"status":400', b'"status":409', b'"status":201', b'"items":[', b'{"create":{',
          b'"error":{"type":"', b'"reason":"', b"null", b"[]", b"{}", b"1e999", b"-1", b"\\ud800"]
CFG = ElasticsearchConfig.model_validate({"hosts": ["http://127.0.0.1:9"]})
OPS = 3
BODY = b"".join(b'{"create":{"_index":"m"}}\n{"a":%d}\n' % i for i in range(OPS))


def read(data: bytes) -> None:
    exporter = ElasticExporter(CFG, None)
    try:
        answer: Any = json.loads(data)
    except (ValueError, RecursionError):
        answer = data.decode("utf-8", "replace")  # what a client that did not parse it would hold
    ok, retry, dropped = exporter._items(BODY, answer, OPS if len(data) % 2 else None)  # the count given or counted
    assert ok + len(retry) // 4 + dropped == OPS
    assert len(exporter.dropped) <= 33 and all(len(k) <= 64 for k in exporter.dropped)
    text = data.decode("utf-8", "surrogateescape")
    for mode in ("ecs", "otel"):
        mapper = Mapper(CFG.model_copy(update={"mapping": mode}), {text[:20]: text})
        pts = [Point(text[:40] or "x", MetricKind.GAUGE, float(len(data)), {text[:10]: text, "k": text[5:]}, 1),
               Point("y", MetricKind.COUNTER, 1.0, {"host.name": text, "host.ip": text[:15]}, 1)]
        for action, doc in mapper.operations(pts):
            assert b"\n" not in action and b"\n" not in doc
            json.loads(action)
            json.loads(doc)


@pytest.mark.fuzz
def test_fuzz_elastic_bulk_answer() -> None:
    log = logging.getLogger("monbridge.elasticsearch.export")
    pool = seeds("elastic_bulk_answer")
    log.disabled = True  # dropped documents are logged: not for every input
    try:
        assert run_fuzz(read, pool, allowed=(), tokens=TOKENS) >= len(pool)
    finally:
        log.disabled = False


@pytest.mark.parametrize("n_ops", [None, OPS])
def test_mixed_answer_accounts_every_item(caplog, n_ops) -> None:
    from tests.fuzz.harness import CORPUS

    exporter = ElasticExporter(CFG, None)
    answer = json.loads((CORPUS / "elastic_bulk_answer" / "mixed.json").read_bytes())
    ok, retry, dropped = exporter._items(BODY, answer, n_ops)
    assert (ok, len(retry) // 4, dropped) == (1, 1, 1) and exporter.duplicates == 1
    assert retry == [b'{"create":{"_index":"m"}}', b"\n", b'{"a":0}', b"\n"]
    assert exporter.dropped == {"document_parsing_exception": 1}
    assert "failed to parse field [a] of type [double]" in caplog.text


def test_answer_of_created_items_counts_every_operation_delivered() -> None:
    from tests.fuzz.harness import CORPUS

    answer = json.loads((CORPUS / "elastic_bulk_answer" / "all_created.json").read_bytes())
    assert answer["errors"] is False and len(answer["items"]) == OPS
    for n_ops in (None, OPS):  # counted in the body, or the queue record's count
        exporter = ElasticExporter(CFG, None)
        assert exporter._items(BODY, answer, n_ops) == (OPS, [], 0)
        assert exporter.dropped == {} and exporter.duplicates == 0
    exporter = ElasticExporter(CFG, None)
    assert exporter._items(BODY, answer, OPS + 1) == (0, [], OPS + 1)  # items not one per operation
    assert exporter.dropped == {"bad_answer": OPS + 1}
