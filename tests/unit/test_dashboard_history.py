"""The dashboard's recent history (rings of array('d')) and its data query: bounds, rate, aggregation, memory."""

from __future__ import annotations

import base64
import gc
import json
import math
import struct
import tracemalloc

import pytest

from bridge.api import MetricKind
from bridge.dashboard.history import History, bytes_per_series
from bridge.dashboard.host import _encode
from bridge.dashboard.query import MAX_POINTS, MAX_RANGE_S, QueryError, evaluate, parse_duration, parse_query, parse_window
from bridge.ledger import LEDGER

C, G = MetricKind.COUNTER, MetricKind.GAUGE
T0 = 1_700_000_000.0


def key(name, **labels):
    return (name, tuple(sorted(labels.items())))


def filled(rows=10, slots_window=150.0, resolution=15.0):
    h = History(slots_window, resolution, 1 << 20)
    for i in range(rows):
        row = [(key("req_total", code="200"), C, 10.0 * i), (key("req_total", code="500"), C, float(i)),
               (key("temp", room="a"), G, 20.0 + i)]
        if i % 2 == 0:
            row.append((key("flaky", x="1"), G, float(i)))
        h.write_row(row, T0 + 15 * i)
    return h


def query(h, **params):
    """The answer as the API writes it (JSON, null for no value)."""
    params = {k: str(v) for k, v in params.items()}
    return json.loads(_encode(evaluate(h, parse_query(params, T0 + 10_000, h.resolution))))["data"]


def test_rows_wrap_around_the_ring_and_keep_the_last_window():
    h = filled(rows=25)  # 10 slots: rows 15..24 remain
    out = query(h, metric="temp", **{"from": T0, "to": T0 + 1000, "step": 15})
    assert out["timestamps"] == [T0 + 15 * i for i in range(15, 25)]
    assert out["series"] == [{"name": "temp", "labels": {"room": "a"}, "values": [20.0 + i for i in range(15, 25)]}]


def test_a_series_absent_from_a_row_has_null_there_and_is_forgotten_after_a_whole_window():
    h = filled(rows=6)
    out = query(h, metric="flaky", **{"from": T0, "to": T0 + 100, "step": 15})
    assert out["series"][0]["values"] == [0.0, None, 2.0, None, 4.0, None]
    for i in range(6, 21):  # flaky stops reporting: after a window of rows without it, it is gone
        h.write_row([(key("temp", room="a"), G, 1.0)], T0 + 15 * i)
    assert key("flaky", x="1") not in dict(h.keys())
    assert key("temp", room="a") in dict(h.keys())


def test_step_takes_every_nth_row_and_rate_is_per_second_with_counter_resets():
    h = History(3600, 15, 1 << 20)
    values = [0, 30, 60, 90, 6, 36]  # a reset after 90
    for i, v in enumerate(values):
        h.write_row([(key("c_total"), C, float(v))], T0 + 15 * i)
    out = query(h, metric="c_total", rate="true", **{"from": T0 + 15, "to": T0 + 75, "step": 15})
    assert out["timestamps"] == [T0 + 15 * i for i in range(1, 6)]
    assert out["series"][0]["values"] == [2.0, 2.0, 2.0, 6 / 15, 2.0]
    out = query(h, metric="c_total", **{"from": T0, "to": T0 + 75, "step": 30})
    assert out["timestamps"] == [T0, T0 + 30, T0 + 60]
    assert out["series"][0]["values"] == [0.0, 60.0, 6.0]


def test_f64_encoding_carries_the_same_values_as_doubles_and_json_has_null_for_nan_and_infinities():
    h = History(3600, 15, 1 << 20)
    for i, v in enumerate([1.5, math.inf, -math.inf, 0.1]):
        h.write_row([(key("g", a="NaN"), G, v)] + ([(key("g", a="b"), G, 2.0)] if i == 1 else []), T0 + 15 * i)
    window = {"from": T0, "to": T0 + 45, "step": 15}
    plain = query(h, metric="g", **window)
    assert [(s["labels"], s["values"]) for s in plain["series"]] == [
        ({"a": "NaN"}, [1.5, None, None, 0.1]), ({"a": "b"}, [None, 2.0, None, None])]
    f64 = query(h, metric="g", encoding="f64", **window)
    assert f64["encoding"] == "f64" and f64["timestamps"] == plain["timestamps"]
    decoded = [list(struct.unpack("<4d", base64.b64decode(s["values"]))) for s in f64["series"]]
    assert decoded[0][0] == 1.5 and decoded[0][1:3] == [math.inf, -math.inf] and decoded[0][3] == 0.1
    assert math.isnan(decoded[1][0]) and decoded[1][1] == 2.0


def test_the_json_writer_gives_every_value_exactly_whether_values_repeat_or_not():
    from array import array
    repeated = [array("d", [1.0, 0.1, math.nan, 1.0, math.inf, 0.1, -math.inf, 2.5e-300] * 4) for _ in range(3)]
    distinct = [array("d", [i + j / 7 for j in range(40)] + [math.nan, -math.inf]) for i in range(3)]
    for arrays in (repeated, distinct, repeated + distinct, distinct + repeated):
        doc = json.loads(_encode({"series": [{"values": a} for a in arrays], "x": math.nan}))["data"]
        assert doc["x"] is None
        assert [s["values"] for s in doc["series"]] == [
            [v if math.isfinite(v) else None for v in a] for a in arrays]


def test_a_rate_over_a_window_without_rows_has_no_points():
    h = filled(rows=3)
    out = query(h, metric="req_total", rate="true", **{"from": 0, "to": 100, "step": 15})
    assert out["timestamps"] == [] and [s["values"] for s in out["series"]] == [[], []]


def test_aggregate_by_labels_and_selectors_with_matchers():
    h = filled(rows=3)
    window = {"from": T0, "to": T0 + 30, "step": 15}
    out = query(h, metric="req_total", aggregate="sum", **window)
    assert [s["values"] for s in out["series"]] == [[0.0, 11.0, 22.0]]
    out = query(h, metric="req_total", aggregate="max", by="code", **window)
    assert [(s["labels"], s["values"]) for s in out["series"]] == [
        ({"code": "200"}, [0.0, 10.0, 20.0]), ({"code": "500"}, [0.0, 1.0, 2.0])]
    out = query(h, metric='req_total{code=~"5.."}', **window)
    assert [s["labels"] for s in out["series"]] == [{"code": "500"}]
    out = query(h, metric="req_total", aggregate="count", **window)
    assert out["series"][0]["values"] == [2.0, 2.0, 2.0]
    out = query(h, metric="req_total", limit=1, **window)
    assert len(out["series"]) == 1 and out["truncated"] is True


def test_memory_is_bounded_refusals_are_counted_and_the_figure_per_series_is_what_it_costs():
    per = bytes_per_series(240)
    h = History(3600, 15, 10 * per + 240 * 8 + 200)
    before = LEDGER.total("dashboard_history", "memory_limit")
    h.write_row([(key("m", i=str(i)), G, 1.0) for i in range(25)], T0)
    assert h.series_count == 10 and h.refused == 15
    assert LEDGER.total("dashboard_history", "memory_limit") - before == 15  # in monbridge_dropped_total too
    assert h.bytes <= h.max_bytes
    metrics = {m.name: m.value for m in h.self_metrics()}
    assert metrics["monbridge.dashboard.history.series_refused"] == 15
    assert metrics["monbridge.dashboard.history.memory"] == h.bytes

    # Measured: what 2,000 series take beyond their keys (which the pipeline's series hold anyway).
    keys = [key("m", i=str(i), job="j") for i in range(2000)]
    big = History(3600, 15, 1 << 30)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    big.write_row([(k, G, 1.0) for k in keys], T0)
    measured = (tracemalloc.get_traced_memory()[0] - before) / 2000
    tracemalloc.stop()
    assert 240 * 8 < measured <= per * 1.1, (measured, per)


def test_every_bound_of_the_query_names_its_parameter():
    def refused(**params):
        with pytest.raises(QueryError) as e:
            parse_query({k: str(v) for k, v in params.items()}, T0, 15.0, "up")
        return str(e.value)

    assert refused(step="5").startswith("step: 5.0s is less than the history's resolution")
    assert refused(**{"from": 0, "to": 11_000 * 20}, step=15).startswith("step:")
    assert refused(**{"from": 0, "to": MAX_RANGE_S + 1}, step=MAX_RANGE_S).startswith("from:")
    assert refused(**{"from": T0, "to": T0 - 1}).startswith("from:")
    assert refused(**{"from": "nan"}).startswith("from:")
    assert refused(to="-5").startswith("to:")
    assert refused(step="1fortnight").startswith("step:")
    assert refused(step="0s").startswith("step:")
    assert refused(metric="{}").startswith("metric:")
    assert refused(metric='{a=~".*"}').startswith("metric:")
    assert refused(aggregate="median").startswith("aggregate:")
    assert refused(by="a,b-c").startswith("by:")
    assert refused(by=",".join(f"l{i}" for i in range(40))).startswith("by:")
    assert refused(limit="0").startswith("limit:")
    assert refused(limit="x").startswith("limit:")
    assert refused(rate="maybe").startswith("rate:")
    assert refused(encoding="xml").startswith("encoding:")
    assert refused(metric="a" * 5000).startswith("metric:")
    assert refused(**{f"p{i}": "1" for i in range(70)}).startswith("query:")
    assert parse_duration("1m30s", "step") == 90.0 and parse_duration("0.5", "step") == 0.5
    w = parse_window({}, T0, 15.0)
    assert (w.start, w.end) == (T0 - 3600, T0) and w.step >= 15.0
    w = parse_window({"from": str(T0 - 15 * MAX_POINTS), "to": str(T0), "step": "15s"}, T0, 15.0)
    assert (w.end - w.start) / w.step == MAX_POINTS
    assert not math.isnan(w.step)


def test_durations_are_read_in_one_pass():
    """A duration is read one anchored unit after another: a value of thousands of digits after a
    unit (which a search from every position took quadratic time over: 140 ms for 3 KB, found by
    the query's fuzz target) is refused like any other bad duration."""
    from bridge.dashboard.query import QueryError, parse_duration

    assert parse_duration("1m30s", "step") == 90.0 and parse_duration("90ms", "step") == 0.09
    assert parse_duration("2w1d", "step") == 15 * 86400.0 and parse_duration("1.5m", "step") == 90.0
    for bad in ("15s" + "9" * 4000, "9" * 4000 + "x", "1m30", "15x", "s", "1.m"):
        with pytest.raises(QueryError, match="step: expected seconds or a duration"):
            parse_duration(bad, "step")


def test_sampling_a_batch_keeps_each_family_keys_only_while_its_series_are_the_same():
    """``sample`` reuses a family's keys while its series are the same ones: rows written from
    batches whose series come, go and change value are the rows made from each series' view."""
    from bridge.api import HistogramValue, Metric
    from bridge.pipeline import Pipeline

    def expected(families):
        row = []
        for fam in families:
            for p in fam.series:
                view = p.prom
                if isinstance(p.value, HistogramValue):
                    row += [((view.name + "_count", view.labels), C, float(p.value.count)),
                            ((view.name + "_sum", view.labels), C, float(p.value.sum))]
                else:
                    row.append(((view.name, view.labels), fam.kind, float(p.value)))
        return row

    pipeline = Pipeline()
    h = History(3600, 15, 1 << 20)
    written = []
    h.write_row = lambda row, now: written.append(list(row))  # type: ignore[method-assign]
    for i, checks in enumerate([["a", "b"], ["a", "b"], ["a", "b", "c"], ["b", "c"], ["b", "c"], ["a\"x", "b"]]):
        metrics = [Metric("nagios.check.state", G, float(i + n), "", "", {"nagios.check": c, "env": "p"})
                   for n, c in enumerate(checks)]
        metrics.append(Metric("q.latency", MetricKind.HISTOGRAM, HistogramValue((1.0,), (i, 1), 1.5 * i, i + 1), "s",
                              "", {"queue.name": checks[0]}))
        pipeline.record("src", metrics)  # the series it no longer reports are gone
        families = pipeline.batch().families()
        h.sample(families, T0 + 15 * i)
        assert len(written[-1]) == len(checks) + 2
        assert written[-1] == expected(families), i
    assert ("nagios_check_state", (("env", "p"), ("nagios_check", 'a"x'))) in [k for k, _, _ in written[-1]]
