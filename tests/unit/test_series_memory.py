"""Per-series state kept once: label pairs and names shared across series, attributes made from
the kept pairs, big batches built without the cyclic collector, label encodings of every size."""

from __future__ import annotations

import gc

from bridge.api import Metric, MetricKind
from bridge.pipeline import Pipeline
from bridge.tasks import GC_PAUSE_MIN, gc_paused
from integrations.prometheus.remote_write import encode_labels
from integrations.prometheus.scrape import Target, TargetScraper
from integrations.prometheus.textparse import TextParser
from tests.unit.test_prometheus_view import decode_labels

G = MetricKind.GAUGE


def test_series_of_a_family_share_equal_label_pairs_and_keep_the_given_order():
    p = Pipeline(cardinality_limit=100)
    p.record("s", [Metric("m", G, float(i), attributes={"path": f"/p{i}", "code": "200", "job": "j"})
                   for i in range(3)])
    a, b, c = (s.identity for s in p.batch().families()[0].series)
    assert a.key == (("code", "200"), ("job", "j"), ("path", "/p0"))
    assert a.key[0] is b.key[0] is c.key[0] and a.key[1] is b.key[1] is c.key[1]
    assert a.key[2] is not b.key[2]
    assert list(a.attributes) == ["path", "code", "job"]  # the order the source gave
    assert a.attributes == {"path": "/p0", "code": "200", "job": "j"}
    # the same series found again under its given order, a new order found and remembered
    assert p.record("s", [Metric("m", G, 9.0, attributes={"job": "j", "code": "200", "path": "/p0"})]) == 1
    snap = p.batch().families()[0]
    assert len(snap.series) == 1 and snap.series[0].value == 9.0
    assert list(snap.series[0].attributes) == ["path", "code", "job"]


def test_sorted_attributes_are_one_tuple_for_key_and_alias():
    p = Pipeline()
    p.record("s", [Metric("m", G, 1.0, attributes={"a": "1", "b": "2"})])
    s = p.batch().families()[0].series[0].identity
    assert s.aliases == () or s.aliases[0] is s.key
    assert list(s.attributes) == ["a", "b"]


def test_over_limit_path_keeps_attributes_in_order():
    p = Pipeline(cardinality_limit=2)
    p.record("s", [Metric("m", G, 1.0, attributes={"z": "1"}), Metric("m", G, 1.0, attributes={"z": "2"})])
    p.record("s", [Metric("m", G, 1.0, attributes={"z": "3", "a": "x"})])  # the others expire: slots free
    s = p.batch().families()[0].series[0].identity
    assert s.attributes == {"z": "3", "a": "x"} and list(s.attributes) == ["z", "a"]


def test_scraped_series_share_pairs_and_label_names():
    body = "".join(f'req_total{{path="/p{i}",code="200"}} {i}\n' for i in range(3)).encode()
    sc = TargetScraper(Target("http://t/metrics", {"job": "j", "instance": "t:1"}))
    metrics, _ = sc.convert(body, False, 1_000_000_000)
    attrs = [m.attributes for m in metrics]
    assert [list(a) for a in attrs] == [["code", "instance", "job", "path"]] * 3  # sorted
    keys = [sc._resolved[k].ident.key for k in sc._resolved]
    assert keys[0][0] is keys[1][0] is keys[2][0]  # code="200", once
    fams = TextParser().parse(body)
    names = [labels[0][0] for _, labels, _, _, _ in fams[0].samples]
    assert names[0] is names[1] is names[2]


def test_gc_paused_for_large_batches_only_and_restored():
    assert gc.isenabled()
    with gc_paused(GC_PAUSE_MIN - 1):
        assert gc.isenabled()
    with gc_paused(GC_PAUSE_MIN):
        assert not gc.isenabled()
        with gc_paused(GC_PAUSE_MIN):  # nested: the outer one restores
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with gc_paused(GC_PAUSE_MIN):
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()


def test_encode_labels_every_length_and_repeated_pairs():
    long = "v" * 200
    for labels in ([("__name__", "up"), ("job", "a")], [("__name__", "m"), ("k", long)], [("n" * 130, "x")],
                   [("a", "é" * 70)]):
        data = encode_labels(labels)
        assert decode_labels(data) == dict(labels)
        assert encode_labels(reversed(labels)) == data  # sorted, and the same bytes from the cache
    assert encode_labels([("a", ""), ("b", "1")]) == encode_labels([("b", "1")])
